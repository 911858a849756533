//! UCI HAPT raw-signal reader (UCI 341): `RawData/acc_expXX_userYY.txt[.gz]` (g) and
//! `gyro_expXX_userYY.txt[.gz]` (rad/s) at 50 Hz, labelled from the 1-based inclusive segments of
//! `RawData/labels.txt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::checksum::{self, ChecksumPolicy, Manifest};
use super::text::{self, Lines};
use super::{add_skip, file_name, list_files, stem};
use crate::error::{DataError, Result};
use crate::recording::{RawDataset, Recording};

/// The 12 HAPT activities (ids 1..=12 map to class indices 0..=11), as in `activity_labels.txt`.
pub const HAPT_CLASSES: [&str; 12] = [
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
    "STAND_TO_SIT",
    "SIT_TO_STAND",
    "SIT_TO_LIE",
    "LIE_TO_SIT",
    "STAND_TO_LIE",
    "LIE_TO_STAND",
];

/// Sample rate of the HAPT raw signals.
pub(crate) const HAPT_RATE_HZ: f64 = 50.0;

/// Options of [`read_hapt`].
#[derive(Clone, Debug)]
pub struct HaptOptions {
    /// Also read the gyroscope (3 more channels, rad/s). Default true.
    pub include_gyro: bool,
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
}

impl Default for HaptOptions {
    fn default() -> Self {
        Self {
            include_gyro: true,
            checksums: ChecksumPolicy::Verify,
        }
    }
}

/// A labelled segment `(activity id, first, last)` with 1-based inclusive sample indices.
type Segment = (i64, usize, usize);

/// Reads UCI HAPT raw signals from `dir`: the dataset root (holding `HAPT Data Set/` or
/// `RawData/`) or the `RawData` folder itself.
///
/// One [`Recording`] per experiment; samples outside every labelled segment are `-1`. Class names
/// come from `activity_labels.txt` when present (checked against the 12 known ones).
pub fn read_hapt(dir: &Path, opts: &HaptOptions) -> Result<RawDataset> {
    let raw_dir = [
        dir.join("HAPT Data Set").join("RawData"),
        dir.join("RawData"),
        dir.to_path_buf(),
    ]
    .into_iter()
    .find(|p| p.join("labels.txt").is_file())
    .ok_or_else(|| DataError::format(dir, "no RawData/labels.txt found"))?;
    let manifest = if opts.checksums == ChecksumPolicy::Verify {
        Manifest::find(&raw_dir, 3)?
    } else {
        None
    };
    let mut sums = Vec::new();
    let labels_path = raw_dir.join("labels.txt");
    let labels_raw = text::read_bytes(&labels_path)?;
    sums.extend(checksum::check(
        opts.checksums,
        manifest.as_ref(),
        &[],
        &labels_path,
        &labels_raw,
    )?);
    let segments = parse_labels(&labels_path, &labels_raw)?;
    if let Some(parent) = raw_dir.parent() {
        let names = parent.join("activity_labels.txt");
        if names.is_file() {
            check_activity_labels(&names)?;
        }
    }
    let mut skipped = Vec::new();
    let acc_files = list_files(
        &raw_dir,
        |n| n.starts_with("acc_exp") && (n.ends_with(".txt") || n.ends_with(".txt.gz")),
        &mut skipped,
    )?;
    if acc_files.is_empty() {
        return Err(DataError::format(
            &raw_dir,
            "no acc_expXX_userYY.txt[.gz] files",
        ));
    }
    let per_exp: Vec<(Recording, Vec<(String, String)>)> = acc_files
        .par_iter()
        .map(|acc| read_experiment(acc, &segments, opts, manifest.as_ref()))
        .collect::<Result<_>>()?;
    let mut recordings = Vec::new();
    for (r, s) in per_exp {
        recordings.push(r);
        sums.extend(s);
    }
    // Segments of experiments without an accelerometer file label nothing: count them.
    let read: std::collections::BTreeSet<(i64, i64)> = acc_files
        .iter()
        .map(|p| exp_user(p))
        .collect::<Result<_>>()?;
    let orphans: usize = segments
        .iter()
        .filter(|(k, _)| !read.contains(k))
        .map(|(_, v)| v.len())
        .sum();
    add_skip(
        &mut skipped,
        "labels.txt segment of an experiment without an acc_exp file",
        orphans,
    );
    Ok(RawDataset {
        name: "uci_hapt".into(),
        class_names: HAPT_CLASSES.iter().map(|s| s.to_string()).collect(),
        recordings,
        source_checksums: sums,
        skipped,
    })
}

/// `(experiment, user)` from `acc_exp01_user01`.
fn exp_user(path: &Path) -> Result<(i64, i64)> {
    let name = file_name(path);
    let s = stem(&name);
    let bad = || DataError::format(path, "file name is not <acc|gyro>_expNN_userNN.txt[.gz]");
    let rest = s.split_once("_exp").ok_or_else(bad)?.1;
    let (e, u) = rest.split_once("_user").ok_or_else(bad)?;
    Ok((e.parse().map_err(|_| bad())?, u.parse().map_err(|_| bad())?))
}

fn read_experiment(
    acc: &Path,
    segments: &BTreeMap<(i64, i64), Vec<Segment>>,
    opts: &HaptOptions,
    manifest: Option<&Manifest>,
) -> Result<(Recording, Vec<(String, String)>)> {
    let (exp, user) = exp_user(acc)?;
    let mut sums = Vec::new();
    let mut load = |path: &Path| -> Result<[Vec<f32>; 3]> {
        let raw = text::read_bytes(path)?;
        sums.extend(checksum::check(opts.checksums, manifest, &[], path, &raw)?);
        let data = text::maybe_gunzip(path, raw)?;
        parse_triplets(path, &data)
    };
    let [ax, ay, az] = load(acc)?;
    let n = ax.len();
    let mut signals = vec![ax, ay, az];
    let mut channel_names: Vec<String> = ["acc_x", "acc_y", "acc_z"].map(String::from).to_vec();
    if opts.include_gyro {
        let gyro = gyro_path(acc);
        let g = load(&gyro)?;
        if g[0].len() != n {
            return Err(DataError::format(
                &gyro,
                format!("{} samples but the accelerometer file has {n}", g[0].len()),
            ));
        }
        signals.extend(g);
        channel_names.extend(["gyro_x", "gyro_y", "gyro_z"].map(String::from));
    }
    let mut labels = vec![-1i32; n];
    for &(act, first, last) in segments.get(&(exp, user)).map(Vec::as_slice).unwrap_or(&[]) {
        if last > n {
            return Err(DataError::format(
                acc,
                format!("labels.txt segment {first}..={last} (activity {act}) runs past the {n} samples"),
            ));
        }
        for l in &mut labels[first - 1..last] {
            if *l >= 0 {
                return Err(DataError::format(
                    acc,
                    format!("labels.txt segments overlap at {first}..={last}"),
                ));
            }
            *l = (act - 1) as i32;
        }
    }
    let rec = Recording {
        subject_id: user,
        subject_name: format!("user{user:02}"),
        session: format!("exp{exp:02}_user{user:02}"),
        sample_rate_hz: HAPT_RATE_HZ,
        timestamps_s: None,
        start_time_s: 0.0,
        channel_names,
        signals,
        labels,
    };
    Ok((rec, sums))
}

/// `gyro_...` next to `acc_...` (same compression suffix).
fn gyro_path(acc: &Path) -> PathBuf {
    let name = file_name(acc);
    let g = name.replacen("acc_", "gyro_", 1);
    acc.with_file_name(g)
}

/// Three whitespace-separated finite floats per line.
fn parse_triplets(path: &Path, data: &[u8]) -> Result<[Vec<f32>; 3]> {
    let mut ch: [Vec<f32>; 3] = [
        Vec::with_capacity(data.len() / 40),
        Vec::with_capacity(data.len() / 40),
        Vec::with_capacity(data.len() / 40),
    ];
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
                format!("expected 3 space-separated values, found {n}"),
            ));
        }
        for (c, f) in fields.iter().enumerate() {
            ch[c].push(text::finite_f64(path, line_no, f, "sample")? as f32);
        }
    }
    if ch[0].is_empty() {
        return Err(DataError::format(path, "no samples (empty file)"));
    }
    Ok(ch)
}

/// `labels.txt`: `experiment user activity start end` per line.
fn parse_labels(path: &Path, data: &[u8]) -> Result<BTreeMap<(i64, i64), Vec<Segment>>> {
    let mut out: BTreeMap<(i64, i64), Vec<Segment>> = BTreeMap::new();
    let mut fields: [&[u8]; 5] = [&[]; 5];
    for (line_no, line) in Lines::new(data) {
        let line = text::trim(line);
        if line.is_empty() {
            continue;
        }
        let n = text::collect_fields(text::split_ws(line), &mut fields);
        if n != 5 {
            return Err(DataError::parse(
                path,
                line_no,
                format!("expected 5 fields `experiment user activity start end`, found {n}"),
            ));
        }
        let v: Vec<i64> = fields
            .iter()
            .map(|f| text::int_field(path, line_no, f, "label field"))
            .collect::<Result<_>>()?;
        if v[0] < 1 || v[1] < 1 {
            return Err(DataError::parse(
                path,
                line_no,
                format!(
                    "experiment {} / user {}: ids are positive (1-based)",
                    v[0], v[1]
                ),
            ));
        }
        if !(1..=12).contains(&v[2]) {
            return Err(DataError::parse(
                path,
                line_no,
                format!("unknown activity id {} (expected 1..=12)", v[2]),
            ));
        }
        if v[3] < 1 || v[4] < v[3] {
            return Err(DataError::parse(
                path,
                line_no,
                format!("invalid segment {}..={} (1-based, inclusive)", v[3], v[4]),
            ));
        }
        out.entry((v[0], v[1]))
            .or_default()
            .push((v[2], v[3] as usize, v[4] as usize));
    }
    if out.is_empty() {
        return Err(DataError::format(path, "no label segments (empty file)"));
    }
    Ok(out)
}

/// Checks `activity_labels.txt` agrees with [`HAPT_CLASSES`].
fn check_activity_labels(path: &Path) -> Result<()> {
    let data = text::read_bytes(path)?;
    for (line_no, line) in Lines::new(&data) {
        let mut it = text::split_ws(line);
        let (Some(id), Some(name)) = (it.next(), it.next()) else {
            continue;
        };
        let id = text::int_field(path, line_no, id, "activity id")?;
        let expected = usize::try_from(id - 1)
            .ok()
            .and_then(|i| HAPT_CLASSES.get(i));
        if expected.map(|e| e.as_bytes()) != Some(name) {
            return Err(DataError::parse(
                path,
                line_no,
                format!(
                    "activity {id} `{}` is not the known HAPT label",
                    text::show(name)
                ),
            ));
        }
    }
    Ok(())
}
