//! Shared by the fuzz targets: a scratch directory per fuzzing process, emptied for every input,
//! and the bounded preparation run on whatever a reader accepts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flowfm_data::{prepare, PrepareConfig, RawDataset};

/// An empty scratch directory for this process (removed and recreated on every call).
pub fn scratch() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT
        .get_or_init(|| std::env::temp_dir().join(format!("flowfm-fuzz-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).expect("creating the scratch directory");
    root.clone()
}

/// Writes `bytes` to `dir/rel`, creating the folders on the way.
pub fn put(dir: &Path, rel: &str, bytes: &[u8]) {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("creating a fixture folder");
    }
    std::fs::write(&p, bytes).expect("writing a fixture file");
}

/// Runs `prepare` on an accepted dataset with a small memory bound: it must return, never panic
/// or allocate without bound (libFuzzer's `-rss_limit_mb` catches the latter).
#[allow(dead_code)] // every target includes this module; `store_open` has no dataset to prepare
pub fn prepare_bounded(raw: &RawDataset) {
    let mut cfg = PrepareConfig::default();
    cfg.resample.max_memory_mib = 64;
    let _ = prepare(raw, &cfg);
}
