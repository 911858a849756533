//! Opportunity reader: `dataset/S<1-4>-<ADL1..5|Drill>.dat`, 250 space-separated columns at
//! 30 Hz; the right-wrist (RWR) body-worn accelerometer in milli-g and the locomotion track.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::checksum::{self, ChecksumPolicy, Manifest};
use super::text::{self, Lines};
use super::{add_skip, file_name, list_files, merge_skips, stem, FileOut, TimeAxis, TimeStep};
use crate::error::{DataError, Result};
use crate::plausible;
use crate::recording::{RawDataset, Recording, SkipReport};

/// Locomotion classes `(label id, name)`; label 0 (null) is unlabelled (-1).
pub const OPPORTUNITY_LOCOMOTION_CLASSES: [(i64, &str); 4] =
    [(1, "stand"), (2, "walk"), (4, "sit"), (5, "lie")];

/// Published sha256 of the original `.dat` files (from the dataset's LFS pointers).
const KNOWN_SHA256: &[(&str, &str)] = &[
    (
        "dataset/S1-ADL1.dat",
        "2b247432acbe4d3970f052c1e3e7ff8d2fc98ba5c49f95e2a0d63a32c553aab8",
    ),
    (
        "dataset/S1-ADL2.dat",
        "cb7951936acb4637e27b3c8c95480341354a93ba90a5cce232526279d2f127ba",
    ),
    (
        "dataset/S1-ADL3.dat",
        "118378e10af6bf042a65f7d14234993b9e1229ef12b4dc75afff1a79760f7132",
    ),
    (
        "dataset/S1-ADL4.dat",
        "283cf48e4114b4fb05a7def13c29b5497a0e02947ca5855d831fc68b72eec1c8",
    ),
    (
        "dataset/S1-ADL5.dat",
        "8519f3a4c09ee10c67215aef53520152355ddadf0d70b5b708998478b0c53a1c",
    ),
    (
        "dataset/S1-Drill.dat",
        "26b5e4d9f40243cc64471592bf86a5a282b0bde864b1efcdd5699d5a7f00bf42",
    ),
    (
        "dataset/S2-ADL1.dat",
        "38d76a30b49b6fff3dcc77cec676a19de5c252ed14c10b7400b4666997fa7f1f",
    ),
    (
        "dataset/S2-ADL2.dat",
        "b30f15e8a1927cd19427e2b1028bc787df06810466fd548523fc6a11e2d01aed",
    ),
    (
        "dataset/S2-ADL3.dat",
        "64eca28aa6cefc38e6362510f95d2a770d3a4e6c8b2326fd6608d7c10707240e",
    ),
    (
        "dataset/S2-ADL4.dat",
        "25cd0d6eb7e0fd9a9786d213ffdac131f06a5279e24d78ff50b1621a3fa205d1",
    ),
    (
        "dataset/S2-ADL5.dat",
        "2300842180e2640aa9512d602c0a7ba6ee1a4ef1999889b34bceb110dc5c5c0d",
    ),
    (
        "dataset/S2-Drill.dat",
        "98e7ed170e860457198fd1346f4b284d7ae5983e5de78d3924273ec47fa8e78f",
    ),
    (
        "dataset/S3-ADL1.dat",
        "1b15fc4766ba9a79f8ec97c15bb4cb128e7a2fd2c08f8dcb60dec65ca543e699",
    ),
    (
        "dataset/S3-ADL2.dat",
        "a61b0418486f07114719d30ea6bf119e530f233d36d8eee7da542946b0358f4a",
    ),
    (
        "dataset/S3-ADL3.dat",
        "ad976087c3c428f75d5a83df82640935323b3923eb8256466c99e7d2c556590a",
    ),
    (
        "dataset/S3-ADL4.dat",
        "e2502620983c38ecb78b21ca232516decc64753ad476ea242d3cbebcba20e637",
    ),
    (
        "dataset/S3-ADL5.dat",
        "8c66c65e561c4b2a8fb36d40cbca36cee246d6fad6072b097fcb3ee0ed8620fa",
    ),
    (
        "dataset/S3-Drill.dat",
        "3f5c13d4e52ea96f218040480e68bdf279818e7ea99d7dba7a78c12f2e21f7f1",
    ),
    (
        "dataset/S4-ADL1.dat",
        "9a9a6fedd1889f9210ff3ecc0d9ee9da602bd11a3a86f629ac06273a9b8bb98a",
    ),
    (
        "dataset/S4-ADL2.dat",
        "022be538306b443096667f37909d2a4a6f69222ddd2381a63160efc6ef146a04",
    ),
    (
        "dataset/S4-ADL3.dat",
        "f81f5d19cf3f76e531e2af5aab2333f6a776d82202869c740ee7791c1095fd7f",
    ),
    (
        "dataset/S4-ADL4.dat",
        "d2f5bd0e2f770ef8cbc0e1b11cab1ea9fe537d1bef3586dc92c395fd47b1426d",
    ),
    (
        "dataset/S4-ADL5.dat",
        "1ace7199f8a5285691a58326ded0a2932ea56d8f43da537ff23db0ad359e7ef6",
    ),
    (
        "dataset/S4-Drill.dat",
        "9076c861d9b5ad94345abf61659064f8e7b94e73d29518ab30e156a30555a3bd",
    ),
];

const OPP_RATE_HZ: f64 = 30.0;
const OPP_COLUMNS: usize = 250;
/// 0-based columns: time (ms), RWR accelerometer x/y/z (milli-g), locomotion label.
const TIME_COL: usize = 0;
const RWR_ACC: [usize; 3] = [22, 23, 24];
const LOCOMOTION_COL: usize = 243;

/// Options of [`read_opportunity`].
#[derive(Clone, Debug)]
pub struct OpportunityOptions {
    /// Also read the `Drill` sessions (scripted repetitions). Default true.
    pub include_drill: bool,
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
}

impl Default for OpportunityOptions {
    fn default() -> Self {
        Self {
            include_drill: true,
            checksums: ChecksumPolicy::Verify,
        }
    }
}

/// Reads Opportunity from `dir` (holding `OpportunityUCIDataset/`, `dataset/`, or the `.dat`
/// files).
///
/// One [`Recording`] per session file (`S2-ADL3` -> subject 2), one channel per RWR axis in g
/// (milli-g / 1000). Rows with `NaN` on the RWR accelerometer are skipped and counted (the
/// recording then carries explicit `timestamps_s` from the millisecond column).
pub fn read_opportunity(dir: &Path, opts: &OpportunityOptions) -> Result<RawDataset> {
    let folder: PathBuf = [
        dir.join("OpportunityUCIDataset").join("dataset"),
        dir.join("dataset"),
        dir.to_path_buf(),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .ok_or_else(|| DataError::format(dir, "Opportunity folder not found"))?;
    let mut listing_skips = Vec::new();
    let files = list_files(
        &folder,
        |n| {
            let s = stem(n);
            n.starts_with('S')
                && (n.ends_with(".dat") || n.ends_with(".dat.gz"))
                && (opts.include_drill || !s.ends_with("Drill"))
        },
        &mut listing_skips,
    )?;
    if files.is_empty() {
        return Err(DataError::format(&folder, "no S<N>-<session>.dat files"));
    }
    let manifest = if opts.checksums == ChecksumPolicy::Verify {
        Manifest::find(&folder, 3)?
    } else {
        None
    };
    let per_file: Vec<FileOut<Recording>> = files
        .par_iter()
        .map(|path| {
            let raw = text::read_bytes(path)?;
            let sum = checksum::check(opts.checksums, manifest.as_ref(), KNOWN_SHA256, path, &raw)?;
            let data = text::maybe_gunzip(path, raw)?;
            let (rec, skips) = parse_file(path, &data)?;
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
        name: "opportunity_rwr_locomotion".into(),
        class_names: OPPORTUNITY_LOCOMOTION_CLASSES
            .iter()
            .map(|(_, n)| n.to_string())
            .collect(),
        recordings,
        source_checksums: sums,
        skipped: merge_skips(skips),
    })
}

fn parse_file(path: &Path, data: &[u8]) -> Result<(Recording, Vec<SkipReport>)> {
    let name = file_name(path);
    let session = stem(&name).to_string();
    let subject_id: i64 = session
        .strip_prefix('S')
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| DataError::format(path, "file name is not S<N>-<session>.dat"))?;
    let mut signals: Vec<Vec<f32>> = vec![Vec::new(); 3];
    let mut labels = Vec::new();
    let mut axis = TimeAxis::new(OPP_RATE_HZ);
    let mut nan_rows = 0usize;
    let mut fields: [&[u8]; OPP_COLUMNS] = [&[]; OPP_COLUMNS];
    for (line_no, line) in Lines::new(data) {
        let line = text::trim(line);
        if line.is_empty() {
            continue;
        }
        let n = text::collect_fields(text::split_ws(line), &mut fields);
        if n != OPP_COLUMNS {
            return Err(DataError::parse(
                path,
                line_no,
                format!("expected {OPP_COLUMNS} columns, found {n}"),
            ));
        }
        let t_ms = text::finite_f64(path, line_no, fields[TIME_COL], "time (ms)")?;
        let loco = text::int_field(path, line_no, fields[LOCOMOTION_COL], "locomotion label")?;
        let label = if loco == 0 {
            -1
        } else {
            OPPORTUNITY_LOCOMOTION_CLASSES
                .iter()
                .position(|(id, _)| *id == loco)
                .ok_or_else(|| {
                    DataError::parse(path, line_no, format!("unknown locomotion label {loco}"))
                })? as i32
        };
        let mut v = [0f64; 3];
        let has_nan = text::columns_allowing_nan(path, line_no, &fields, &RWR_ACC, &mut v)?;
        if has_nan {
            nan_rows += 1;
            continue;
        }
        if axis.push(t_ms / 1000.0) != TimeStep::Ok {
            return Err(DataError::parse(
                path,
                line_no,
                format!("time {t_ms} ms does not increase"),
            ));
        }
        for k in 0..3 {
            signals[k].push((v[k] / 1000.0) as f32);
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
    let mut skips = Vec::new();
    add_skip(
        &mut skips,
        "Opportunity row with NaN on the RWR accelerometer",
        nan_rows,
    );
    let rec = Recording {
        subject_id,
        subject_name: format!("S{subject_id}"),
        session,
        sample_rate_hz: OPP_RATE_HZ,
        timestamps_s,
        start_time_s,
        channel_names: vec!["acc_x".into(), "acc_y".into(), "acc_z".into()],
        signals,
        labels,
    };
    plausible::check_timing(&rec, path, Some("ms"))?;
    Ok((rec, skips))
}
