//! ADL / HMP reader (UCI 283): `HMP_Dataset/<Activity>/Accelerometer-<time>-<hmp>-<volunteer>.txt`,
//! three coded integers 0..63 per line at 32 Hz, decoded with `g = -1.5 + 3 v / 63`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::checksum::{self, ChecksumPolicy, Manifest};
use super::text::{self, Lines};
use super::{file_name, is_data_dir, list_files};
use crate::error::{DataError, Result};
use crate::recording::{RawDataset, Recording};

/// The 14 motion primitives, in the order of the dataset manual (class index order).
pub const ADL_CLASSES: [&str; 14] = [
    "brush_teeth",
    "climb_stairs",
    "comb_hair",
    "descend_stairs",
    "drink_glass",
    "eat_meat",
    "eat_soup",
    "getup_bed",
    "liedown_bed",
    "pour_water",
    "sitdown_chair",
    "standup_chair",
    "use_telephone",
    "walk",
];

/// The five classes of the SSL-Wearables ADL benchmark (pass to
/// [`restrict_classes`](super::restrict_classes)).
pub const SSL_WEARABLES_ADL_CLASSES: [&str; 5] = [
    "climb_stairs",
    "drink_glass",
    "pour_water",
    "walk",
    "getup_bed",
];

const ADL_RATE_HZ: f64 = 32.0;

/// Options of [`read_adl`].
#[derive(Clone, Debug, Default)]
pub struct AdlOptions {
    /// Also read the `*_MODEL` folders. Off by default: those trials are excerpts of the
    /// recordings in the ordinary folders (138 of the 140 files occur verbatim inside a trial of
    /// the same activity and volunteer), so including them would duplicate data.
    pub include_model_trials: bool,
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
}

/// Reads ADL/HMP from `dir` (the folder holding `HMP_Dataset/`, or `HMP_Dataset` itself).
///
/// One [`Recording`] per file, labelled with its folder's activity; subject `f<N>` gets id `N`,
/// `m<N>` gets id `100 + N`. Each line must hold exactly three integers in 0..=63.
pub fn read_adl(dir: &Path, opts: &AdlOptions) -> Result<RawDataset> {
    let root = if dir.join("HMP_Dataset").is_dir() {
        dir.join("HMP_Dataset")
    } else {
        dir.to_path_buf()
    };
    let mut jobs: Vec<(PathBuf, usize)> = Vec::new();
    let mut listing_skips = Vec::new();
    let entries = std::fs::read_dir(&root).map_err(|e| DataError::io(&root, e))?;
    let mut folders: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(&root, e))?.path();
        if path.is_dir() {
            folders.push(path);
        } else if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            // A symlink that does not lead to a folder (plain files beside the folders, such as
            // the dataset's README, are not data and are not counted).
            is_data_dir(&path, &mut listing_skips);
        }
    }
    folders.sort();
    for folder in folders {
        let name = file_name(&folder).to_ascii_lowercase();
        let (base, is_model) = match name.strip_suffix("_model") {
            Some(b) => (b.to_string(), true),
            None => (name.clone(), false),
        };
        if is_model && !opts.include_model_trials {
            continue;
        }
        let Some(class) = ADL_CLASSES.iter().position(|c| *c == base) else {
            return Err(DataError::format(
                &folder,
                format!("`{name}` is not one of the 14 ADL activities"),
            ));
        };
        for f in list_files(
            &folder,
            |n| n.starts_with("Accelerometer-") && n.ends_with(".txt"),
            &mut listing_skips,
        )? {
            jobs.push((f, class));
        }
    }
    if jobs.is_empty() {
        return Err(DataError::format(
            &root,
            "no Accelerometer-*.txt files in activity folders",
        ));
    }
    let manifest = if opts.checksums == ChecksumPolicy::Verify {
        Manifest::find(&root, 3)?
    } else {
        None
    };
    let per_file: Vec<(Recording, Option<(String, String)>)> = jobs
        .par_iter()
        .map(|(path, class)| {
            let raw = text::read_bytes(path)?;
            let sum = checksum::check(opts.checksums, manifest.as_ref(), &[], path, &raw)?;
            let data = text::maybe_gunzip(path, raw)?;
            Ok((parse_file(path, &data, *class as i32)?, sum))
        })
        .collect::<Result<_>>()?;
    let (recordings, sums): (Vec<_>, Vec<_>) = per_file.into_iter().unzip();
    Ok(RawDataset {
        name: "adl_hmp".into(),
        class_names: ADL_CLASSES.iter().map(|s| s.to_string()).collect(),
        recordings,
        source_checksums: sums.into_iter().flatten().collect(),
        skipped: listing_skips,
    })
}

/// `(id, name)` of the volunteer in a file name `...-<hmp>-<g><N>[_k].txt`.
fn volunteer(path: &Path) -> Result<(i64, String)> {
    let name = file_name(path);
    let stem = name.strip_suffix(".txt").unwrap_or(&name);
    let last = stem.rsplit('-').next().unwrap_or("");
    let vol = last.split('_').next().unwrap_or("");
    let bad = || {
        DataError::format(
            path,
            format!("file name does not end in -<f|m><number>.txt (found `{last}`)"),
        )
    };
    let (g, num) = vol.split_at_checked(1).ok_or_else(bad)?;
    let n: i64 = num.parse().map_err(|_| bad())?;
    match g {
        "f" => Ok((n, vol.to_string())),
        "m" => Ok((100 + n, vol.to_string())),
        _ => Err(bad()),
    }
}

fn parse_file(path: &Path, data: &[u8], class: i32) -> Result<Recording> {
    let (subject_id, subject_name) = volunteer(path)?;
    let mut ch: [Vec<f32>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut fields: [&[u8]; 3] = [&[]; 3];
    for (line_no, line) in Lines::new(data) {
        let line = text::trim(line);
        if line.is_empty() {
            continue;
        }
        let n = text::collect_fields(text::split_ws(line), &mut fields);
        if n != 3 {
            return Err(DataError::parse(
                path,
                line_no,
                format!("expected 3 space-separated coded values, found {n}"),
            ));
        }
        for (c, f) in fields.iter().enumerate() {
            let v = text::int_field(path, line_no, f, "coded acceleration")?;
            if !(0..=63).contains(&v) {
                return Err(DataError::parse(
                    path,
                    line_no,
                    format!("coded value {v} outside 0..=63"),
                ));
            }
            ch[c].push((-1.5 + 3.0 * v as f64 / 63.0) as f32);
        }
    }
    if ch[0].is_empty() {
        return Err(DataError::format(path, "no samples (empty file)"));
    }
    let n = ch[0].len();
    let [x, y, z] = ch;
    Ok(Recording {
        subject_id,
        subject_name,
        session: file_name(path),
        sample_rate_hz: ADL_RATE_HZ,
        timestamps_s: None,
        start_time_s: 0.0,
        channel_names: vec!["acc_x".into(), "acc_y".into(), "acc_z".into()],
        signals: vec![x, y, z],
        labels: vec![class; n],
    })
}
