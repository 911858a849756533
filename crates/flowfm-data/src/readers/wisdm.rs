//! WISDM 2019 reader (UCI 507): `raw/<device>/<sensor>/data_<subject>_<sensor>_<device>.txt[.gz]`,
//! one `subject,activity,timestamp_ns,x,y,z;` sample per line, parsed by a hand-written byte
//! parser, files in parallel.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::checksum::{self, ChecksumPolicy, Manifest};
use super::text::{self, Lines};
use super::{add_skip, file_name, list_files, merge_skips, stem, FileOut, STANDARD_GRAVITY};
use crate::error::{DataError, Result};
use crate::plausible;
use crate::recording::{RawDataset, Recording, SkipReport};

/// Activity names in code order `A`..`S` (without `N`), as in `activity_key.txt`.
pub const WISDM_ACTIVITIES: [&str; 18] = [
    "walking",
    "jogging",
    "stairs",
    "sitting",
    "standing",
    "typing",
    "teeth",
    "soup",
    "chips",
    "pasta",
    "drinking",
    "sandwich",
    "kicking",
    "catch",
    "dribbling",
    "writing",
    "clapping",
    "folding",
];

/// Activity codes in class order.
const CODES: &[u8; 18] = b"ABCDEFGHIJKLMOPQRS";

/// Nominal sample rate of WISDM 2019 (the streams are irregular; see `timestamps_s`).
const WISDM_RATE_HZ: f64 = 20.0;

/// How far a block's rate may be from the nominal 20 Hz. 7 of the 824 watch-accelerometer blocks
/// of the published files run at about 100 Hz (median step, measured on every block), so the
/// reader accepts up to 6x; unit mistakes (1000x and more) remain errors.
const WISDM_MAX_RATE_FACTOR: f64 = 6.0;

/// Which device's files to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WisdmDevice {
    /// The smartwatch (wrist).
    #[default]
    Watch,
    /// The smartphone (trouser pocket).
    Phone,
}

/// Which sensor's files to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WisdmSensor {
    /// Accelerometer, m/s^2 in the files, converted to g.
    #[default]
    Accel,
    /// Gyroscope, rad/s.
    Gyro,
}

/// Options of [`read_wisdm`].
#[derive(Clone, Debug, Default)]
pub struct WisdmOptions {
    /// Device (default watch).
    pub device: WisdmDevice,
    /// Sensor (default accelerometer).
    pub sensor: WisdmSensor,
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
}

impl WisdmOptions {
    fn device_name(&self) -> &'static str {
        match self.device {
            WisdmDevice::Watch => "watch",
            WisdmDevice::Phone => "phone",
        }
    }
    fn sensor_name(&self) -> &'static str {
        match self.sensor {
            WisdmSensor::Accel => "accel",
            WisdmSensor::Gyro => "gyro",
        }
    }
}

/// Reads WISDM 2019 from `dir`: the dataset root (holding `wisdm-dataset/` or `raw/`) or the
/// folder of `data_*` files itself.
///
/// One [`Recording`] per (subject, contiguous activity block), labelled with the block's activity
/// and carrying explicit `timestamps_s` (device uptime, ns / 1e9). Accelerometer values are
/// divided by 9.80665 to give g. A sample whose timestamp repeats the previous one is dropped and
/// counted; a timestamp going backwards within a block is an error.
pub fn read_wisdm(dir: &Path, opts: &WisdmOptions) -> Result<RawDataset> {
    let (dev, sen) = (opts.device_name(), opts.sensor_name());
    let folder = locate(dir, dev, sen)?;
    let suffix = format!("_{sen}_{dev}.txt");
    let mut listing_skips = Vec::new();
    let files = list_files(
        &folder,
        |n| {
            n.starts_with("data_") && (n.ends_with(&suffix) || n.ends_with(&format!("{suffix}.gz")))
        },
        &mut listing_skips,
    )?;
    if files.is_empty() {
        return Err(DataError::format(
            &folder,
            format!("no data_<subject>{suffix}[.gz] files"),
        ));
    }
    let manifest = if opts.checksums == ChecksumPolicy::Verify {
        Manifest::find(&folder, 5)?
    } else {
        None
    };
    let scale = match opts.sensor {
        WisdmSensor::Accel => 1.0 / STANDARD_GRAVITY,
        WisdmSensor::Gyro => 1.0,
    };
    let prefix = match opts.sensor {
        WisdmSensor::Accel => "acc",
        WisdmSensor::Gyro => "gyro",
    };
    let per_file: Vec<FileOut<Vec<Recording>>> = files
        .par_iter()
        .map(|path| {
            let raw = text::read_bytes(path)?;
            let sum = checksum::check(opts.checksums, manifest.as_ref(), &[], path, &raw)?;
            let data = text::maybe_gunzip(path, raw)?;
            let (recs, skips) = parse_file(path, &data, scale, prefix)?;
            Ok((recs, sum, skips))
        })
        .collect::<Result<_>>()?;
    let mut recordings = Vec::new();
    let mut sums = Vec::new();
    let mut skips = vec![listing_skips];
    for (r, s, k) in per_file {
        recordings.extend(r);
        sums.extend(s);
        skips.push(k);
    }
    Ok(RawDataset {
        name: format!("wisdm2019_{dev}_{sen}"),
        class_names: WISDM_ACTIVITIES.iter().map(|s| s.to_string()).collect(),
        recordings,
        source_checksums: sums,
        skipped: merge_skips(skips),
    })
}

/// The folder holding the `data_*` files.
fn locate(dir: &Path, dev: &str, sen: &str) -> Result<PathBuf> {
    let candidates = [
        dir.join("wisdm-dataset").join("raw").join(dev).join(sen),
        dir.join("raw").join(dev).join(sen),
        dir.join(dev).join(sen),
        dir.to_path_buf(),
    ];
    for c in &candidates {
        if c.is_dir() {
            let has = std::fs::read_dir(c)
                .map_err(|e| DataError::io(c, e))?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("data_"));
            if has {
                return Ok(c.clone());
            }
        }
    }
    if !dir.is_dir() {
        return Err(DataError::format(dir, "WISDM folder not found"));
    }
    Err(DataError::format(
        dir,
        format!("no WISDM data_* files for {dev}/{sen} here or under raw/{dev}/{sen}"),
    ))
}

/// A block of samples of one activity being assembled.
struct Block {
    code: u8,
    x: Vec<f32>,
    y: Vec<f32>,
    z: Vec<f32>,
    t: Vec<f64>,
}

impl Block {
    fn new(code: u8, cap: usize) -> Self {
        Self {
            code,
            x: Vec::with_capacity(cap),
            y: Vec::with_capacity(cap),
            z: Vec::with_capacity(cap),
            t: Vec::with_capacity(cap),
        }
    }
}

/// Parses one file into per-activity-block recordings.
fn parse_file(
    path: &Path,
    data: &[u8],
    scale: f64,
    prefix: &str,
) -> Result<(Vec<Recording>, Vec<SkipReport>)> {
    let fname = file_name(path);
    let session_base = stem(&fname).to_string();
    let mut blocks: Vec<Block> = Vec::new();
    let mut subject: Option<i64> = None;
    let mut repeated = 0usize;
    let mut last_ts: i64 = 0;
    let mut fields: [&[u8]; 6] = [&[]; 6];
    for (line_no, raw_line) in Lines::new(data) {
        let mut line = text::trim(raw_line);
        if line.is_empty() {
            continue;
        }
        if let [head @ .., b';'] = line {
            line = head;
        }
        let n = text::collect_fields(text::split_on(line, b','), &mut fields);
        if n != 6 {
            return Err(DataError::parse(
                path,
                line_no,
                format!("expected 6 comma-separated fields `subject,activity,timestamp,x,y,z;`, found {n}"),
            ));
        }
        let subj = text::int_field(path, line_no, fields[0], "subject")?;
        match subject {
            None => subject = Some(subj),
            Some(s) if s != subj => {
                return Err(DataError::parse(
                    path,
                    line_no,
                    format!("subject {subj} differs from the file's subject {s}"),
                ))
            }
            _ => {}
        }
        let code = match text::trim(fields[1]) {
            [c] if CODES.contains(c) => *c,
            other => {
                return Err(DataError::parse(
                    path,
                    line_no,
                    format!(
                        "unknown activity code `{}` (expected A-S without N)",
                        text::show(other)
                    ),
                ))
            }
        };
        let ts = text::int_field(path, line_no, fields[2], "timestamp")?;
        let x = text::finite_f64(path, line_no, fields[3], "x")?;
        let y = text::finite_f64(path, line_no, fields[4], "y")?;
        let z = text::finite_f64(path, line_no, fields[5], "z")?;
        let new_block = blocks.last().is_none_or(|b| b.code != code);
        if new_block {
            blocks.push(Block::new(code, 4096));
        } else if ts == last_ts {
            repeated += 1;
            continue;
        } else if ts < last_ts {
            return Err(DataError::parse(
                path,
                line_no,
                format!(
                    "timestamp {ts} goes backwards (previous {last_ts}) within an activity block"
                ),
            ));
        }
        last_ts = ts;
        if let Some(b) = blocks.last_mut() {
            b.x.push((x * scale) as f32);
            b.y.push((y * scale) as f32);
            b.z.push((z * scale) as f32);
            b.t.push(ts as f64 * 1e-9);
        }
    }
    let Some(subject) = subject else {
        return Err(DataError::format(path, "no samples (empty file)"));
    };
    let mut seen = [0usize; 256];
    let mut recordings = Vec::with_capacity(blocks.len());
    for b in blocks {
        let class = CODES.iter().position(|&c| c == b.code).unwrap_or(0) as i32;
        seen[usize::from(b.code)] += 1;
        let k = seen[usize::from(b.code)];
        let session = if k == 1 {
            format!("{session_base}:{}", char::from(b.code))
        } else {
            format!("{session_base}:{}#{k}", char::from(b.code))
        };
        let n = b.t.len();
        let rec = Recording {
            subject_id: subject,
            subject_name: subject.to_string(),
            session,
            sample_rate_hz: WISDM_RATE_HZ,
            start_time_s: b.t[0],
            timestamps_s: Some(b.t),
            channel_names: ["x", "y", "z"]
                .iter()
                .map(|a| format!("{prefix}_{a}"))
                .collect(),
            signals: vec![b.x, b.y, b.z],
            labels: vec![class; n],
        };
        plausible::check_timing_within(&rec, path, Some("ns"), WISDM_MAX_RATE_FACTOR)?;
        recordings.push(rec);
    }
    let mut skips = Vec::new();
    add_skip(
        &mut skips,
        "WISDM sample with a repeated timestamp",
        repeated,
    );
    Ok((recordings, skips))
}
