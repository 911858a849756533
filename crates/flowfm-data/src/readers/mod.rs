//! Readers for raw wearable datasets in their original published formats, producing
//! [`RawDataset`]s of [`Recording`]s in g (accelerometer) and rad/s (gyroscope).
//!
//! One function per format ([`read_wisdm`], [`read_adl`], [`read_hapt`], [`read_pamap2`],
//! [`read_opportunity`], [`read_realworld`], [`read_capture24`], [`read_uea_ts`], [`read_csv`]),
//! each with an options struct whose `Default` is the published layout, plus [`DatasetKind`] and
//! [`read_dataset`] to pick one by name. Every reader:
//!
//! - reads gzip-compressed files transparently (`.gz` added to the name, or gzip magic bytes);
//! - hashes every source file and verifies it where the checksum is known ([`ChecksumPolicy`]);
//! - turns bad input into a [`DataError`](crate::DataError) naming file and line, never a panic;
//!   rows the dataset is known to contain and that cannot be used (PAMAP2/Opportunity `NaN`
//!   rows, WISDM repeated timestamps) are skipped and counted in [`RawDataset::skipped`].
//!
//! Subject ids are derived from the names the datasets use, so they are stable whichever files
//! are present: WISDM `1600` -> 1600; ADL `f3` -> 3, `m4` -> 104; HAPT `user07` -> 7; PAMAP2
//! `subject105` -> 105; Opportunity `S2` -> 2; RealWorld `proband11` -> 11; Capture-24 `P012` -> 12.

mod adl;
mod capture24;
mod checksum;
mod csv;
pub(crate) mod csv_folder;
pub(crate) mod csv_rows;
mod hapt;
mod opportunity;
mod pamap2;
pub mod pickle;
mod realworld;
pub(crate) mod text;
mod uea;
mod wisdm;

use std::path::{Path, PathBuf};

pub use adl::{read_adl, AdlOptions, ADL_CLASSES, SSL_WEARABLES_ADL_CLASSES};
pub use capture24::{read_capture24, Capture24Options};
pub use checksum::{sha256_hex, ChecksumPolicy};
pub use csv::{read_csv, ColumnRef, CsvSpec, TimeSpec, TimeUnit, Units};
pub use csv_folder::{
    parse_time_unit, parse_units, read_csv_folder, subject_ids, CsvColumn, CsvFolderSpec,
};
pub use hapt::{read_hapt, HaptOptions, HAPT_CLASSES};
pub use opportunity::{read_opportunity, OpportunityOptions, OPPORTUNITY_LOCOMOTION_CLASSES};
pub use pamap2::{read_pamap2, Pamap2Options, PAMAP2_ACTIVITIES};
pub use realworld::{read_realworld, RealWorldOptions, REALWORLD_CLASSES};
pub use uea::{read_uea_ts, UeaOptions};
pub use wisdm::{read_wisdm, WisdmDevice, WisdmOptions, WisdmSensor, WISDM_ACTIVITIES};

use crate::error::{DataError, Result};
use crate::recording::{RawDataset, Recording, SkipReport};

/// Standard gravity in m/s^2 (divides m/s^2 to give g).
pub const STANDARD_GRAVITY: f64 = 9.80665;

/// The raw dataset formats flowfm reads (the generic CSV reader needs a [`CsvSpec`] and is not
/// listed here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// WISDM 2019 smartphone and smartwatch activity (UCI 507).
    Wisdm2019,
    /// ADL / HMP wrist accelerometer (UCI 283).
    AdlHmp,
    /// UCI HAPT raw signals (UCI 341).
    UciHapt,
    /// PAMAP2 physical activity monitoring, hand IMU.
    Pamap2,
    /// Opportunity, right-wrist accelerometer with locomotion labels.
    Opportunity,
    /// RealWorld 2016 (Sztyler & Stuckenschmidt), one body position.
    RealWorld2016,
    /// Capture-24 free-living wrist accelerometry.
    Capture24,
    /// One file of the UEA/UCR `.ts` time-series format.
    UeaTs,
}

impl DatasetKind {
    /// Every kind, in a fixed order.
    pub const ALL: [DatasetKind; 8] = [
        DatasetKind::Wisdm2019,
        DatasetKind::AdlHmp,
        DatasetKind::UciHapt,
        DatasetKind::Pamap2,
        DatasetKind::Opportunity,
        DatasetKind::RealWorld2016,
        DatasetKind::Capture24,
        DatasetKind::UeaTs,
    ];

    /// The short name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Wisdm2019 => "wisdm2019",
            DatasetKind::AdlHmp => "adl_hmp",
            DatasetKind::UciHapt => "uci_hapt",
            DatasetKind::Pamap2 => "pamap2",
            DatasetKind::Opportunity => "opportunity",
            DatasetKind::RealWorld2016 => "realworld2016",
            DatasetKind::Capture24 => "capture24",
            DatasetKind::UeaTs => "uea_ts",
        }
    }

    /// Parses a short name (case-insensitive; `-` and `_` are interchangeable).
    pub fn parse(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .ok_or_else(|| DataError::Config {
                field: "dataset".into(),
                msg: format!(
                    "unknown dataset `{s}`; expected one of {}",
                    Self::ALL.map(|k| k.name()).join(", ")
                ),
            })
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Reads a dataset of `kind` at `path` (a folder, or a `.ts` file for [`DatasetKind::UeaTs`])
/// with the default options of its reader.
pub fn read_dataset(kind: DatasetKind, path: &Path) -> Result<RawDataset> {
    match kind {
        DatasetKind::Wisdm2019 => read_wisdm(path, &WisdmOptions::default()),
        DatasetKind::AdlHmp => read_adl(path, &AdlOptions::default()),
        DatasetKind::UciHapt => read_hapt(path, &HaptOptions::default()),
        DatasetKind::Pamap2 => read_pamap2(path, &Pamap2Options::default()),
        DatasetKind::Opportunity => read_opportunity(path, &OpportunityOptions::default()),
        DatasetKind::RealWorld2016 => read_realworld(path, &RealWorldOptions::default()),
        DatasetKind::Capture24 => read_capture24(path, &Capture24Options::default()),
        DatasetKind::UeaTs => read_uea_ts(path, &UeaOptions::default()),
    }
}

/// Keeps only the classes named in `keep` (case-insensitive), re-indexed in the order given.
///
/// Samples of other classes become unlabelled (`-1`); recordings left with no labelled sample are
/// dropped and counted in [`RawDataset::skipped`]. An unknown class name is an error. Use it for
/// the 5-class SSL-Wearables ADL subset: `restrict_classes(&adl, &SSL_WEARABLES_ADL_CLASSES)`.
pub fn restrict_classes<S: AsRef<str>>(ds: &RawDataset, keep: &[S]) -> Result<RawDataset> {
    let mut map = vec![-1i32; ds.class_names.len()];
    let mut names = Vec::with_capacity(keep.len());
    for (new, k) in keep.iter().enumerate() {
        let k = k.as_ref();
        let old = ds
            .class_names
            .iter()
            .position(|c| c.eq_ignore_ascii_case(k))
            .ok_or_else(|| DataError::Config {
                field: "classes".into(),
                msg: format!(
                    "`{k}` is not a class of {} (classes: {})",
                    ds.name,
                    ds.class_names.join(", ")
                ),
            })?;
        if map[old] >= 0 {
            return Err(DataError::Config {
                field: "classes".into(),
                msg: format!("`{k}` is listed twice"),
            });
        }
        map[old] = new as i32;
        names.push(ds.class_names[old].clone());
    }
    let mut recordings = Vec::new();
    let mut dropped = 0;
    for rec in &ds.recordings {
        let labels: Vec<i32> = rec
            .labels
            .iter()
            .map(|&l| {
                usize::try_from(l)
                    .ok()
                    .and_then(|i| map.get(i).copied())
                    .unwrap_or(-1)
            })
            .collect();
        if labels.iter().all(|&l| l < 0) {
            dropped += 1;
            continue;
        }
        recordings.push(Recording {
            labels,
            ..rec.clone()
        });
    }
    let mut skipped = ds.skipped.clone();
    add_skip(
        &mut skipped,
        "recordings without any sample of the kept classes (restrict_classes)",
        dropped,
    );
    Ok(RawDataset {
        name: ds.name.clone(),
        class_names: names,
        recordings,
        source_checksums: ds.source_checksums.clone(),
        skipped,
    })
}

/// What a reader returns per source file: its recording(s), the `(name, sha256)` to record, and
/// the rows it skipped.
pub(crate) type FileOut<R> = (R, Option<(String, String)>, Vec<SkipReport>);

/// Adds `count` to the report with `reason` (merging equal reasons, ignoring zero counts).
pub(crate) fn add_skip(skips: &mut Vec<SkipReport>, reason: &str, count: usize) {
    if count == 0 {
        return;
    }
    if let Some(s) = skips.iter_mut().find(|s| s.reason == reason) {
        s.count += count;
    } else {
        skips.push(SkipReport {
            reason: reason.to_string(),
            count,
        });
    }
}

/// Merges per-file skip reports.
pub(crate) fn merge_skips(all: impl IntoIterator<Item = Vec<SkipReport>>) -> Vec<SkipReport> {
    let mut out = Vec::new();
    for v in all {
        for s in v {
            add_skip(&mut out, &s.reason, s.count);
        }
    }
    out
}

/// Files directly in `dir` whose name `keep` accepts (sorted by name). Symlinks are followed. An
/// entry with an accepted name that is not a readable regular file (a dangling symlink, a symlink
/// loop, a directory, a fifo) is not read but counted in `skipped`, naming it, so nothing named
/// like data disappears silently.
pub(crate) fn list_files(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
    skipped: &mut Vec<SkipReport>,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep(&name) {
            continue;
        }
        // `metadata` follows symlinks: a symlink to a regular file is read like one.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => out.push(path),
            Ok(m) if m.is_dir() => add_skip(
                skipped,
                &format!("directory named like a data file: {}", path.display()),
                1,
            ),
            Ok(_) => add_skip(
                skipped,
                &format!(
                    "not a regular file (fifo, socket or device) named like a data file: {}",
                    path.display()
                ),
                1,
            ),
            Err(e) => {
                let is_link = std::fs::symlink_metadata(&path)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(false);
                let what = if is_link {
                    "symlink that cannot be followed (dangling or a loop)"
                } else {
                    "unreadable entry"
                };
                add_skip(
                    skipped,
                    &format!("{what} named like a data file: {} ({e})", path.display()),
                    1,
                );
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Counts `path` in `skipped` when it is named like a data folder but is not one (a dangling
/// symlink, a loop, a file); returns whether it is a readable folder (symlinks are followed).
pub(crate) fn is_data_dir(path: &Path, skipped: &mut Vec<SkipReport>) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            add_skip(
                skipped,
                &format!("file named like a data folder: {}", path.display()),
                1,
            );
            false
        }
        Err(e) => {
            add_skip(
                skipped,
                &format!(
                    "entry named like a data folder that cannot be read (dangling symlink or \
                     loop?): {} ({e})",
                    path.display()
                ),
                1,
            );
            false
        }
    }
}

/// The file name of `path` as a string (for sessions and messages).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `name` with a trailing `.gz` and then `.txt`/`.dat`/`.csv` removed.
pub(crate) fn stem(name: &str) -> &str {
    let name = name.strip_suffix(".gz").unwrap_or(name);
    for ext in [".txt", ".dat", ".csv", ".ts"] {
        if let Some(s) = name.strip_suffix(ext) {
            return s;
        }
    }
    name
}

/// Builds a recording's time axis from per-sample timestamps: regular (`timestamps_s = None`)
/// while every sample lies within half a period of `t0 + i / rate`, otherwise explicit
/// timestamps (reconstructing the earlier, regular part), so long regular streams cost no memory.
#[derive(Clone, Debug)]
pub(crate) struct TimeAxis {
    rate_hz: f64,
    t0: f64,
    prev: f64,
    n: usize,
    explicit: Option<Vec<f64>>,
}

/// How a new timestamp relates to the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeStep {
    /// Strictly later: accepted.
    Ok,
    /// Equal to the previous one: not accepted.
    Repeated,
    /// Earlier than the previous one: not accepted.
    Backwards,
}

impl TimeAxis {
    pub(crate) fn new(rate_hz: f64) -> Self {
        Self {
            rate_hz,
            t0: 0.0,
            prev: f64::NEG_INFINITY,
            n: 0,
            explicit: None,
        }
    }

    pub(crate) fn previous(&self) -> f64 {
        self.prev
    }

    /// Offers timestamp `t` (seconds) for the next sample.
    pub(crate) fn push(&mut self, t: f64) -> TimeStep {
        if self.n > 0 {
            match t.total_cmp(&self.prev) {
                std::cmp::Ordering::Equal => return TimeStep::Repeated,
                std::cmp::Ordering::Less => return TimeStep::Backwards,
                std::cmp::Ordering::Greater => {}
            }
        } else {
            self.t0 = t;
        }
        if self.explicit.is_none() {
            let expected = self.t0 + self.n as f64 / self.rate_hz;
            if (t - expected).abs() > 0.5 / self.rate_hz {
                let mut ts: Vec<f64> = (0..self.n)
                    .map(|i| self.t0 + i as f64 / self.rate_hz)
                    .collect();
                ts.reserve(1024);
                self.explicit = Some(ts);
            }
        }
        if let Some(ts) = &mut self.explicit {
            ts.push(t);
        }
        self.prev = t;
        self.n += 1;
        TimeStep::Ok
    }

    /// `(start_time_s, timestamps_s)`.
    pub(crate) fn finish(self) -> (f64, Option<Vec<f64>>) {
        (self.t0, self.explicit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_axis_stays_regular_for_a_steady_clock_and_switches_on_a_gap() {
        let mut a = TimeAxis::new(100.0);
        for i in 0..10 {
            assert_eq!(a.push(5.0 + i as f64 * 0.01), TimeStep::Ok);
        }
        let (t0, ts) = a.clone().finish();
        assert!((t0 - 5.0).abs() < 1e-12);
        assert!(ts.is_none());
        assert_eq!(a.push(5.5), TimeStep::Ok);
        assert_eq!(a.push(5.5), TimeStep::Repeated);
        assert_eq!(a.push(5.4), TimeStep::Backwards);
        let (_, ts) = a.finish();
        let ts = ts.expect("a gap makes the axis explicit");
        assert_eq!(ts.len(), 11);
        assert!((ts[9] - 5.09).abs() < 1e-9 && (ts[10] - 5.5).abs() < 1e-12);
    }

    #[test]
    fn dataset_kind_names_round_trip_and_unknown_names_fail() {
        for k in DatasetKind::ALL {
            assert_eq!(DatasetKind::parse(k.name()).unwrap(), k);
        }
        assert_eq!(DatasetKind::parse("ADL-HMP").unwrap(), DatasetKind::AdlHmp);
        assert!(DatasetKind::parse("mnist").is_err());
    }
}
