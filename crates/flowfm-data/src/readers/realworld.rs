//! RealWorld 2016 reader (Sztyler & Stuckenschmidt): `proband<N>/data/acc_<activity>_csv.zip`,
//! holding one `acc_<activity>[_<k>]_<position>.csv` per body position (some archives nest one
//! zip per session), columns `id,attr_time,attr_x,attr_y,attr_z` (ms, m/s^2), about 50 Hz.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::checksum::{self, ChecksumPolicy, Manifest};
use super::text::{self, Lines};
use super::{
    add_skip, file_name, is_data_dir, list_files, merge_skips, FileOut, TimeAxis, TimeStep,
    STANDARD_GRAVITY,
};
use crate::error::{DataError, Result};
use crate::plausible;
use crate::recording::{RawDataset, Recording};

/// The 8 RealWorld activities (class index order).
pub const REALWORLD_CLASSES: [&str; 8] = [
    "climbingdown",
    "climbingup",
    "jumping",
    "lying",
    "running",
    "sitting",
    "standing",
    "walking",
];

const REALWORLD_RATE_HZ: f64 = 50.0;
/// Archives nested deeper than this are rejected (guards against zip bombs made of zips).
const MAX_ZIP_DEPTH: usize = 3;

/// Options of [`read_realworld`].
#[derive(Clone, Debug)]
pub struct RealWorldOptions {
    /// Body position: chest, forearm, head, shin, thigh, upperarm or waist. Default `forearm`
    /// (the position closest to the wrist).
    pub position: String,
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
}

impl Default for RealWorldOptions {
    fn default() -> Self {
        Self {
            position: "forearm".into(),
            checksums: ChecksumPolicy::Verify,
        }
    }
}

/// Reads the accelerometer of one body position from RealWorld 2016 at `dir` (the folder holding
/// the `proband<N>` folders).
///
/// One [`Recording`] per CSV of that position (one per activity session), labelled with the
/// archive's activity, values divided by 9.80665 to give g, `proband<N>` -> subject `N`.
/// Repeated timestamps are skipped and counted; timestamps going backwards are an error.
pub fn read_realworld(dir: &Path, opts: &RealWorldOptions) -> Result<RawDataset> {
    const POSITIONS: [&str; 7] = [
        "chest", "forearm", "head", "shin", "thigh", "upperarm", "waist",
    ];
    let position = opts.position.to_ascii_lowercase();
    if !POSITIONS.contains(&position.as_str()) {
        return Err(DataError::Config {
            field: "position".into(),
            msg: format!("`{}` is not one of {}", opts.position, POSITIONS.join(", ")),
        });
    }
    let mut probands: Vec<(i64, PathBuf)> = Vec::new();
    let mut listing_skips = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let name = file_name(&path);
        if let Some(n) = name
            .strip_prefix("proband")
            .and_then(|s| s.parse::<i64>().ok())
        {
            if is_data_dir(&path, &mut listing_skips) {
                probands.push((n, path));
            }
        }
    }
    probands.sort();
    let mut jobs: Vec<(i64, PathBuf, usize)> = Vec::new();
    for (n, p) in &probands {
        let data = p.join("data");
        let folder = if data.is_dir() { data } else { p.clone() };
        for z in list_files(
            &folder,
            |f| f.starts_with("acc_") && f.ends_with("_csv.zip"),
            &mut listing_skips,
        )? {
            let name = file_name(&z);
            let act = name
                .strip_prefix("acc_")
                .and_then(|s| s.strip_suffix("_csv.zip"))
                .unwrap_or("");
            let class = REALWORLD_CLASSES
                .iter()
                .position(|c| *c == act)
                .ok_or_else(|| {
                    DataError::format(&z, format!("`{act}` is not a RealWorld activity"))
                })?;
            jobs.push((*n, z, class));
        }
    }
    if jobs.is_empty() {
        return Err(DataError::format(
            dir,
            "no proband<N>/data/acc_<activity>_csv.zip archives",
        ));
    }
    let manifest = if opts.checksums == ChecksumPolicy::Verify {
        Manifest::find(dir, 2)?
    } else {
        None
    };
    let per_zip: Vec<FileOut<Vec<Recording>>> = jobs
        .par_iter()
        .map(|(subject, path, class)| {
            let raw = text::read_bytes(path)?;
            let sum = checksum::check(opts.checksums, manifest.as_ref(), &[], path, &raw)?;
            let mut recs = Vec::new();
            let mut skips = Vec::new();
            let suffix = format!("_{position}.csv");
            walk_zip(path, &file_name(path), raw, 0, &mut |entry, bytes| {
                if !entry.ends_with(&suffix) {
                    return Ok(());
                }
                let label = format!("{}!{entry}", path.display());
                let (rec, repeated) =
                    parse_csv(Path::new(&label), entry, &bytes, *subject, *class as i32)?;
                add_skip(
                    &mut skips,
                    "RealWorld sample with a repeated timestamp",
                    repeated,
                );
                recs.push(rec);
                Ok(())
            })?;
            Ok((recs, sum, skips))
        })
        .collect::<Result<_>>()?;
    let mut recordings = Vec::new();
    let mut sums = Vec::new();
    let mut skips = vec![listing_skips];
    for (r, s, k) in per_zip {
        recordings.extend(r);
        sums.extend(s);
        skips.push(k);
    }
    if recordings.is_empty() {
        return Err(DataError::format(
            dir,
            format!("no `*_{position}.csv` entries in the archives"),
        ));
    }
    Ok(RawDataset {
        name: format!("realworld2016_{position}"),
        class_names: REALWORLD_CLASSES.iter().map(|s| s.to_string()).collect(),
        recordings,
        source_checksums: sums,
        skipped: merge_skips(skips),
    })
}

/// Calls `visit(entry name, bytes)` for every non-zip entry, descending into nested zips.
fn walk_zip(
    path: &Path,
    label: &str,
    bytes: Vec<u8>,
    depth: usize,
    visit: &mut dyn FnMut(&str, Vec<u8>) -> Result<()>,
) -> Result<()> {
    if depth > MAX_ZIP_DEPTH {
        return Err(DataError::format(
            path,
            format!("{label}: zip archives nested too deep"),
        ));
    }
    let bad =
        |e: &dyn std::fmt::Display| DataError::format(path, format!("{label}: corrupt zip: {e}"));
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| bad(&e))?;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(|e| bad(&e))?;
        if file.is_dir() {
            continue;
        }
        let name = file.name().rsplit('/').next().unwrap_or("").to_string();
        let mut content =
            Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0).min(1 << 28));
        file.read_to_end(&mut content).map_err(|e| bad(&e))?;
        drop(file);
        if name.ends_with(".zip") {
            walk_zip(path, &format!("{label}!{name}"), content, depth + 1, visit)?;
        } else {
            visit(&name, content)?;
        }
    }
    Ok(())
}

/// Parses one `id,attr_time,attr_x,attr_y,attr_z` CSV; returns the recording and the number of
/// rows skipped for a repeated timestamp.
fn parse_csv(
    path: &Path,
    entry: &str,
    data: &[u8],
    subject: i64,
    class: i32,
) -> Result<(Recording, usize)> {
    let mut lines = Lines::new(data);
    let (_, header) = lines
        .next()
        .ok_or_else(|| DataError::format(path, "empty CSV (no header)"))?;
    let names: Vec<&[u8]> = text::split_on(text::trim(header), b',')
        .map(|f| text::trim(f).strip_prefix(b"\"").unwrap_or(text::trim(f)))
        .map(|f| f.strip_suffix(b"\"").unwrap_or(f))
        .collect();
    let col = |want: &str| {
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(want.as_bytes()))
            .ok_or_else(|| DataError::parse(path, 1, format!("header has no `{want}` column")))
    };
    let (ct, cx, cy, cz) = (
        col("attr_time")?,
        col("attr_x")?,
        col("attr_y")?,
        col("attr_z")?,
    );
    let ncol = names.len();
    let mut signals: Vec<Vec<f32>> = vec![Vec::new(); 3];
    let mut axis = TimeAxis::new(REALWORLD_RATE_HZ);
    let mut repeated = 0;
    let mut fields: Vec<&[u8]> = Vec::with_capacity(ncol);
    for (line_no, line) in lines {
        let line = text::trim(line);
        if line.is_empty() {
            continue;
        }
        fields.clear();
        fields.extend(text::split_on(line, b','));
        if fields.len() != ncol {
            return Err(DataError::parse(
                path,
                line_no,
                format!("expected {ncol} columns, found {}", fields.len()),
            ));
        }
        let t = text::finite_f64(path, line_no, fields[ct], "attr_time")?;
        let v = [
            text::finite_f64(path, line_no, fields[cx], "attr_x")?,
            text::finite_f64(path, line_no, fields[cy], "attr_y")?,
            text::finite_f64(path, line_no, fields[cz], "attr_z")?,
        ];
        match axis.push(t / 1000.0) {
            TimeStep::Ok => {}
            TimeStep::Repeated => {
                repeated += 1;
                continue;
            }
            TimeStep::Backwards => {
                return Err(DataError::parse(
                    path,
                    line_no,
                    format!("attr_time {t} goes backwards"),
                ))
            }
        }
        for k in 0..3 {
            signals[k].push((v[k] / STANDARD_GRAVITY) as f32);
        }
    }
    let n = signals[0].len();
    if n == 0 {
        return Err(DataError::format(path, "no samples"));
    }
    let (start_time_s, timestamps_s) = axis.finish();
    let rec = Recording {
        subject_id: subject,
        subject_name: format!("proband{subject}"),
        session: format!("proband{subject}/{entry}"),
        sample_rate_hz: REALWORLD_RATE_HZ,
        timestamps_s,
        start_time_s,
        channel_names: vec!["acc_x".into(), "acc_y".into(), "acc_z".into()],
        signals,
        labels: vec![class; n],
    };
    plausible::check_timing(&rec, path, Some("ms"))?;
    Ok((rec, repeated))
}
