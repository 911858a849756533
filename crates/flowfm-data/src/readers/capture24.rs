//! Capture-24 reader: `P<NNN>.csv.gz` with header `time,x,y,z,annotation` (wrist accelerometer
//! in g at 100 Hz, free-text annotations), optionally mapped to a label scheme through
//! `annotation-label-dictionary.csv`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use rayon::prelude::*;

use super::checksum::{self, ChecksumPolicy, Manifest};
use super::text::{self, Lines};
use super::{add_skip, file_name, list_files, merge_skips, stem, TimeAxis, TimeStep};
use crate::error::{DataError, Result};
use crate::plausible;
use crate::recording::{RawDataset, Recording, SkipReport};

const CAPTURE24_RATE_HZ: f64 = 100.0;

/// Options of [`read_capture24`].
#[derive(Clone, Debug)]
pub struct Capture24Options {
    /// Column of `annotation-label-dictionary.csv` mapping annotations to classes, e.g.
    /// `"label:Walmsley2020"`. `None` (default) keeps the raw annotation strings as classes.
    pub label_scheme: Option<String>,
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
}

impl Default for Capture24Options {
    fn default() -> Self {
        Self {
            label_scheme: None,
            checksums: ChecksumPolicy::Verify,
        }
    }
}

/// Reads Capture-24 from `dir` (the folder of `P<NNN>.csv[.gz]` files).
///
/// One [`Recording`] per participant (`P012` -> subject 12); `start_time_s` is the first `time`
/// as seconds since 1970 of the local clock. Rows with an empty or `NaN` annotation are
/// unlabelled. Class names are sorted (raw annotations, or the chosen scheme's labels); an
/// annotation missing from the dictionary is an error naming file and line.
pub fn read_capture24(dir: &Path, opts: &Capture24Options) -> Result<RawDataset> {
    let mut listing_skips = Vec::new();
    let files = list_files(
        dir,
        |n| n.starts_with('P') && (n.ends_with(".csv") || n.ends_with(".csv.gz")),
        &mut listing_skips,
    )?;
    if files.is_empty() {
        return Err(DataError::format(dir, "no P<NNN>.csv[.gz] files"));
    }
    let dictionary = match &opts.label_scheme {
        Some(col) => Some(load_dictionary(
            &dir.join("annotation-label-dictionary.csv"),
            col,
        )?),
        None => None,
    };
    let manifest = if opts.checksums == ChecksumPolicy::Verify {
        Manifest::find(dir, 2)?
    } else {
        None
    };
    type PerFile = (
        Recording,
        Vec<String>,
        Option<(String, String)>,
        Vec<SkipReport>,
    );
    let per_file: Vec<PerFile> = files
        .par_iter()
        .map(|path| {
            let raw = text::read_bytes(path)?;
            let sum = checksum::check(opts.checksums, manifest.as_ref(), &[], path, &raw)?;
            let data = text::maybe_gunzip(path, raw)?;
            let (rec, names, skips) = parse_file(path, &data, dictionary.as_ref())?;
            Ok((rec, names, sum, skips))
        })
        .collect::<Result<_>>()?;
    let all: BTreeSet<String> = per_file.iter().flat_map(|p| p.1.iter().cloned()).collect();
    let class_names: Vec<String> = all.into_iter().collect();
    let mut recordings = Vec::new();
    let mut sums = Vec::new();
    let mut skips = vec![listing_skips];
    for (mut rec, local, sum, k) in per_file {
        let remap: Vec<i32> = local
            .iter()
            .map(|n| class_names.binary_search(n).map(|i| i as i32).unwrap_or(-1))
            .collect();
        for l in &mut rec.labels {
            if *l >= 0 {
                *l = remap[*l as usize];
            }
        }
        recordings.push(rec);
        sums.extend(sum);
        skips.push(k);
    }
    Ok(RawDataset {
        name: match &opts.label_scheme {
            Some(s) => format!("capture24_{}", s.trim_start_matches("label:")),
            None => "capture24".into(),
        },
        class_names,
        recordings,
        source_checksums: sums,
        skipped: merge_skips(skips),
    })
}

/// `annotation -> label` from the chosen column of the dictionary.
fn load_dictionary(path: &Path, column: &str) -> Result<HashMap<Vec<u8>, String>> {
    let raw = text::read_bytes(path)?;
    let mut lines = Lines::new(&raw);
    let mut fields = Vec::new();
    let (_, header) = lines
        .next()
        .ok_or_else(|| DataError::format(path, "empty dictionary"))?;
    text::split_csv(header, b',', &mut fields);
    let ann = fields
        .iter()
        .position(|f| f == b"annotation")
        .ok_or_else(|| DataError::parse(path, 1, "header has no `annotation` column"))?;
    let lab = fields
        .iter()
        .position(|f| f == column.as_bytes())
        .ok_or_else(|| DataError::parse(path, 1, format!("header has no `{column}` column")))?;
    let ncol = fields.len();
    let mut map = HashMap::new();
    for (line_no, line) in lines {
        if text::trim(line).is_empty() {
            continue;
        }
        if !text::split_csv(line, b',', &mut fields) || fields.len() != ncol {
            return Err(DataError::parse(
                path,
                line_no,
                format!("expected {ncol} columns (or an unterminated quote)"),
            ));
        }
        let label = String::from_utf8_lossy(&fields[lab]).trim().to_string();
        map.insert(fields[ann].clone(), label);
    }
    Ok(map)
}

/// Parses one participant file. Labels index into the returned local class list.
fn parse_file(
    path: &Path,
    data: &[u8],
    dictionary: Option<&HashMap<Vec<u8>, String>>,
) -> Result<(Recording, Vec<String>, Vec<SkipReport>)> {
    let name = file_name(path);
    let subject_name = stem(&name).to_string();
    let subject_id: i64 = subject_name
        .strip_prefix('P')
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| DataError::format(path, "file name is not P<NNN>.csv[.gz]"))?;
    let mut lines = Lines::new(data);
    let (_, header) = lines
        .next()
        .ok_or_else(|| DataError::format(path, "empty file (no header)"))?;
    let mut owned = Vec::new();
    text::split_csv(text::trim(header), b',', &mut owned);
    let expected: [&[u8]; 5] = [b"time", b"x", b"y", b"z", b"annotation"];
    if owned.len() != 5 || owned.iter().zip(expected).any(|(a, b)| a.as_slice() != b) {
        return Err(DataError::parse(
            path,
            1,
            "header is not `time,x,y,z,annotation`",
        ));
    }
    let mut signals: Vec<Vec<f32>> = (0..3)
        .map(|_| Vec::with_capacity(data.len() / 60))
        .collect();
    let mut labels: Vec<i32> = Vec::with_capacity(data.len() / 60);
    let mut axis = TimeAxis::new(CAPTURE24_RATE_HZ);
    let mut local_names: Vec<String> = Vec::new();
    let mut index: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut last: (Vec<u8>, i32) = (Vec::new(), -1);
    let mut repeated = 0usize;
    let mut fields: [&[u8]; 5] = [&[]; 5];
    for (line_no, line) in lines {
        let line = text::trim(line);
        if line.is_empty() {
            continue;
        }
        // Fast path: no quotes, split in place; otherwise unquote.
        let ann: Vec<u8>;
        let annotation: &[u8];
        let row = if line.contains(&b'"') {
            if !text::split_csv(line, b',', &mut owned) || owned.len() != 5 {
                return Err(DataError::parse(
                    path,
                    line_no,
                    "expected 5 columns `time,x,y,z,annotation` (or an unterminated quote)",
                ));
            }
            let quoted: [&[u8]; 5] = [&owned[0], &owned[1], &owned[2], &owned[3], &owned[4]];
            let row = parse_row(path, line_no, &quoted)?;
            ann = owned[4].clone();
            annotation = &ann;
            row
        } else {
            let n = text::collect_fields(text::split_on(line, b','), &mut fields);
            if n != 5 {
                return Err(DataError::parse(
                    path,
                    line_no,
                    format!("expected 5 columns `time,x,y,z,annotation`, found {n}"),
                ));
            }
            annotation = fields[4];
            parse_row(path, line_no, &fields)?
        };
        if !push_row(&mut axis, &mut signals, row, path, line_no, &mut repeated)? {
            continue;
        }
        let annotation = text::trim(annotation);
        let label = if annotation == last.0.as_slice() {
            last.1
        } else {
            let l = if annotation.is_empty() || annotation.eq_ignore_ascii_case(b"nan") {
                -1
            } else {
                let class = match dictionary {
                    Some(d) => d.get(annotation).cloned().ok_or_else(|| {
                        DataError::parse(
                            path,
                            line_no,
                            format!(
                                "annotation `{}` is not in the dictionary",
                                text::show(annotation)
                            ),
                        )
                    })?,
                    None => String::from_utf8_lossy(annotation).into_owned(),
                };
                let next = local_names.len() as i32;
                let key = class.clone().into_bytes();
                *index.entry(key).or_insert_with(|| {
                    local_names.push(class);
                    next
                })
            };
            last = (annotation.to_vec(), l);
            l
        };
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(DataError::format(path, "no samples"));
    }
    let (start_time_s, timestamps_s) = axis.finish();
    let mut skips = Vec::new();
    add_skip(
        &mut skips,
        "Capture-24 row with a repeated timestamp",
        repeated,
    );
    let rec = Recording {
        subject_id,
        subject_name,
        session: name,
        sample_rate_hz: CAPTURE24_RATE_HZ,
        timestamps_s,
        start_time_s,
        channel_names: vec!["acc_x".into(), "acc_y".into(), "acc_z".into()],
        signals,
        labels,
    };
    plausible::check_timing(&rec, path, Some("s"))?;
    Ok((rec, local_names, skips))
}

/// `(time, x, y, z)` of a row.
fn parse_row(path: &Path, line_no: usize, f: &[&[u8]; 5]) -> Result<(f64, [f64; 3])> {
    let t = text::parse_datetime(f[0]).ok_or_else(|| {
        DataError::parse(
            path,
            line_no,
            format!(
                "time `{}` is not YYYY-MM-DD HH:MM:SS[.ffffff]",
                text::show(f[0])
            ),
        )
    })?;
    Ok((
        t,
        [
            text::finite_f64(path, line_no, f[1], "x")?,
            text::finite_f64(path, line_no, f[2], "y")?,
            text::finite_f64(path, line_no, f[3], "z")?,
        ],
    ))
}

/// Appends a row; `Ok(false)` when it repeats the previous timestamp (skipped and counted).
fn push_row(
    axis: &mut TimeAxis,
    signals: &mut [Vec<f32>],
    (t, v): (f64, [f64; 3]),
    path: &Path,
    line_no: usize,
    repeated: &mut usize,
) -> Result<bool> {
    match axis.push(t) {
        TimeStep::Ok => {
            for k in 0..3 {
                signals[k].push(v[k] as f32);
            }
            Ok(true)
        }
        TimeStep::Repeated => {
            *repeated += 1;
            Ok(false)
        }
        TimeStep::Backwards => Err(DataError::parse(path, line_no, "time goes backwards")),
    }
}
