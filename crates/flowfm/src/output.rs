//! Writing output files of every job: the parent folder is created, and the content replaces the
//! file atomically through flowfm-core's one helper (`flowfm_core::fs`), so an interrupted write
//! never leaves a partial file and an error leaves no temporary file behind.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `bytes` to `path` atomically, creating its parent folder first.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    flowfm_core::fs::write_atomic(path, bytes)?;
    Ok(())
}
