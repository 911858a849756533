//! PAMAP2 reader: `Protocol/subject1NN.dat` (and optionally `Optional/`), 54 whitespace-separated
//! columns at 100 Hz; the hand IMU's +-16 g accelerometer (m/s^2 -> g) and gyroscope (rad/s).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::checksum::{self, ChecksumPolicy, Manifest};
use super::text::{self, Lines};
use super::{
    add_skip, file_name, list_files, merge_skips, stem, FileOut, TimeAxis, TimeStep,
    STANDARD_GRAVITY,
};
use crate::error::{DataError, Result};
use crate::plausible;
use crate::recording::{RawDataset, Recording, SkipReport};

/// `(activity id, name)` of the PAMAP2 protocol and optional activities; class index = position.
/// Activity 0 ("other", transient) is not a class: those samples are unlabelled (-1).
pub const PAMAP2_ACTIVITIES: [(i64, &str); 18] = [
    (1, "lying"),
    (2, "sitting"),
    (3, "standing"),
    (4, "walking"),
    (5, "running"),
    (6, "cycling"),
    (7, "nordic_walking"),
    (9, "watching_tv"),
    (10, "computer_work"),
    (11, "car_driving"),
    (12, "ascending_stairs"),
    (13, "descending_stairs"),
    (16, "vacuum_cleaning"),
    (17, "ironing"),
    (18, "folding_laundry"),
    (19, "house_cleaning"),
    (20, "playing_soccer"),
    (24, "rope_jumping"),
];

/// Published sha256 of the original `.dat` files (from the dataset's LFS pointers).
const KNOWN_SHA256: &[(&str, &str)] = &[
    (
        "Optional/subject101.dat",
        "a8b71371406001ae563acad1d7d946ceacd0afeb51b97bfb9a9cbad95c78e52c",
    ),
    (
        "Optional/subject105.dat",
        "a7c4ccd8d7e8fe21abad8c111229649ec10ca9b353cc29fcc4986c2243301adc",
    ),
    (
        "Optional/subject106.dat",
        "50882fc519f01e8fe200a5a4373daff443e88624d7e8a2d31d759569823fb491",
    ),
    (
        "Optional/subject108.dat",
        "e871b2e5692867f8655b69b769e866927739aa288b9da5cc9a15dc930f154336",
    ),
    (
        "Optional/subject109.dat",
        "a6a8f7521d63fe80bd7f203c5ee1256a2bc8b3772f028ae767256ec1d6a93930",
    ),
    (
        "Protocol/subject101.dat",
        "80b3fffd089c236ae88098df3b906b8d3c67a858023fe4f75045d78612147266",
    ),
    (
        "Protocol/subject102.dat",
        "468f3c6ba3e6e961f383783665265afbcddbbd33a3a84bba0386b7d0d4e3c632",
    ),
    (
        "Protocol/subject103.dat",
        "5be64631d085e3efc700728395516da3512ff9de17dab30d253508441a98d3f0",
    ),
    (
        "Protocol/subject104.dat",
        "7eb272213cbfe11d9e466a2163b6c9c2ed8d2542fc6f08283fd1bf222cac8994",
    ),
    (
        "Protocol/subject105.dat",
        "7837cfede57fe45ec20d553c6c2b0c498ab324daae23bfd202c0ffea9f71a7f6",
    ),
    (
        "Protocol/subject106.dat",
        "0da1dda3fa56d75d6413fc9198949d3ebc2102d77574cb5fe0739674687609f2",
    ),
    (
        "Protocol/subject107.dat",
        "a02195e9599eb249f79103912d27eb4f62d8a0f59e4763b0dd8250fee5f3f020",
    ),
    (
        "Protocol/subject108.dat",
        "81ce6b21b9c1e01dc02099c4f9387699547b08b28b387d09a56e0cb0a8af22fc",
    ),
    (
        "Protocol/subject109.dat",
        "5109d5cd8334769566b4ae602adf3e5f4bb7b9ee8ca678f0c481d333114b07c7",
    ),
];

const PAMAP2_RATE_HZ: f64 = 100.0;
const PAMAP2_COLUMNS: usize = 54;
/// 0-based columns of the hand IMU: +-16 g accelerometer x/y/z, gyroscope x/y/z.
const HAND_ACC16: [usize; 3] = [4, 5, 6];
const HAND_GYRO: [usize; 3] = [10, 11, 12];

/// Options of [`read_pamap2`].
#[derive(Clone, Debug)]
pub struct Pamap2Options {
    /// Also read `Optional/` sessions. Default false (the benchmark uses `Protocol/`).
    pub include_optional: bool,
    /// Also return the hand gyroscope (rad/s). Default true.
    pub include_gyro: bool,
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
}

impl Default for Pamap2Options {
    fn default() -> Self {
        Self {
            include_optional: false,
            include_gyro: true,
            checksums: ChecksumPolicy::Verify,
        }
    }
}

/// Reads PAMAP2 from `dir` (holding `PAMAP2_Dataset/`, `Protocol/`, or the `.dat` files).
///
/// One [`Recording`] per file, subject `subject1NN` -> id `1NN`. Rows with `NaN` in a used hand
/// IMU column (dropped wireless packets) are skipped and counted; the recording then carries
/// explicit `timestamps_s` (from column 1) so the gap is kept. Activity 0 is unlabelled; an
/// activity id outside the published list is an error.
pub fn read_pamap2(dir: &Path, opts: &Pamap2Options) -> Result<RawDataset> {
    let base = if dir.join("PAMAP2_Dataset").is_dir() {
        dir.join("PAMAP2_Dataset")
    } else {
        dir.to_path_buf()
    };
    let is_dat =
        |n: &str| n.starts_with("subject") && (n.ends_with(".dat") || n.ends_with(".dat.gz"));
    let mut files: Vec<PathBuf> = Vec::new();
    let protocol = base.join("Protocol");
    let mut listing_skips = Vec::new();
    if protocol.is_dir() {
        files.extend(list_files(&protocol, is_dat, &mut listing_skips)?);
        let optional = base.join("Optional");
        if opts.include_optional && optional.is_dir() {
            files.extend(list_files(&optional, is_dat, &mut listing_skips)?);
        }
    } else if base.is_dir() {
        files.extend(list_files(&base, is_dat, &mut listing_skips)?);
    }
    if files.is_empty() {
        return Err(DataError::format(
            dir,
            "no PAMAP2 subject1NN.dat files (looked in Protocol/)",
        ));
    }
    let manifest = if opts.checksums == ChecksumPolicy::Verify {
        Manifest::find(&base, 3)?
    } else {
        None
    };
    let per_file: Vec<FileOut<Recording>> = files
        .par_iter()
        .map(|path| {
            let raw = text::read_bytes(path)?;
            let sum = checksum::check(opts.checksums, manifest.as_ref(), KNOWN_SHA256, path, &raw)?;
            let data = text::maybe_gunzip(path, raw)?;
            let (rec, skips) = parse_file(path, &data, opts.include_gyro)?;
            Ok((rec, sum, skips))
        })
        .collect::<Result<_>>()?;
    let mut recordings = Vec::new();
    let mut sums = Vec::new();
    let mut skips = vec![listing_skips];
    for (r, s, k) in per_file {
        recordings.push(r);
        sums.extend(s);
        skips.push(k);
    }
    Ok(RawDataset {
        name: "pamap2".into(),
        class_names: PAMAP2_ACTIVITIES
            .iter()
            .map(|(_, n)| n.to_string())
            .collect(),
        recordings,
        source_checksums: sums,
        skipped: merge_skips(skips),
    })
}

fn parse_file(path: &Path, data: &[u8], gyro: bool) -> Result<(Recording, Vec<SkipReport>)> {
    let name = file_name(path);
    let subject_name = stem(&name).to_string();
    let subject_id: i64 = subject_name
        .strip_prefix("subject")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| DataError::format(path, "file name is not subject<NNN>.dat"))?;
    let used: Vec<usize> = if gyro {
        HAND_ACC16.iter().chain(HAND_GYRO.iter()).copied().collect()
    } else {
        HAND_ACC16.to_vec()
    };
    let mut signals: Vec<Vec<f32>> = used
        .iter()
        .map(|_| Vec::with_capacity(data.len() / 350))
        .collect();
    let mut labels = Vec::with_capacity(data.len() / 350);
    let mut axis = TimeAxis::new(PAMAP2_RATE_HZ);
    let mut nan_rows = 0usize;
    let mut fields: [&[u8]; PAMAP2_COLUMNS] = [&[]; PAMAP2_COLUMNS];
    let mut values = [0f64; 6];
    for (line_no, line) in Lines::new(data) {
        let line = text::trim(line);
        if line.is_empty() {
            continue;
        }
        let n = text::collect_fields(text::split_ws(line), &mut fields);
        if n != PAMAP2_COLUMNS {
            return Err(DataError::parse(
                path,
                line_no,
                format!("expected {PAMAP2_COLUMNS} columns, found {n}"),
            ));
        }
        let t = text::finite_f64(path, line_no, fields[0], "timestamp")?;
        let act = text::int_field(path, line_no, fields[1], "activity id")?;
        let label = if act == 0 {
            -1
        } else {
            PAMAP2_ACTIVITIES
                .iter()
                .position(|(id, _)| *id == act)
                .ok_or_else(|| {
                    DataError::parse(path, line_no, format!("unknown activity id {act}"))
                })? as i32
        };
        let has_nan =
            text::columns_allowing_nan(path, line_no, &fields, &used, &mut values[..used.len()])?;
        if has_nan {
            nan_rows += 1;
            continue;
        }
        match axis.push(t) {
            TimeStep::Ok => {}
            TimeStep::Repeated | TimeStep::Backwards => {
                return Err(DataError::parse(
                    path,
                    line_no,
                    format!(
                        "timestamp {t} does not increase (previous {})",
                        axis.previous()
                    ),
                ))
            }
        }
        for (k, s) in signals.iter_mut().enumerate() {
            let v = if k < 3 {
                values[k] / STANDARD_GRAVITY
            } else {
                values[k]
            };
            s.push(v as f32);
        }
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(DataError::format(
            path,
            "no usable samples (empty file or all rows NaN)",
        ));
    }
    let (start_time_s, timestamps_s) = axis.finish();
    let mut channel_names: Vec<String> = ["acc_x", "acc_y", "acc_z"].map(String::from).to_vec();
    if gyro {
        channel_names.extend(["gyro_x", "gyro_y", "gyro_z"].map(String::from));
    }
    let mut skips = Vec::new();
    add_skip(&mut skips, "PAMAP2 row with NaN in the hand IMU", nan_rows);
    let rec = Recording {
        subject_id,
        subject_name,
        session: name,
        sample_rate_hz: PAMAP2_RATE_HZ,
        timestamps_s,
        start_time_s,
        channel_names,
        signals,
        labels,
    };
    plausible::check_timing(&rec, path, Some("s"))?;
    Ok((rec, skips))
}
