//! Reader of the UEA/UCR `.ts` time-series classification format (sktime): `@`-headers
//! (`@problemName`, `@univariate`, `@dimensions`, `@equalLength`, `@seriesLength`,
//! `@classLabel true <labels...>`), then `@data` and one case per line: dimensions separated by
//! `:`, values by `,`, the class label last.

use std::path::Path;

use super::checksum::{self, ChecksumPolicy, Manifest};
use super::text::{self, Lines};
use super::{add_skip, file_name, stem};
use crate::error::{DataError, Result};
use crate::plausible;
use crate::recording::{RawDataset, Recording};

/// Options of [`read_uea_ts`].
#[derive(Clone, Debug)]
pub struct UeaOptions {
    /// Sample rate of the series in Hz (the format does not store it). Default 1.0.
    pub sample_rate_hz: f64,
    /// Factor applied to every value to reach flowfm units (g, rad/s). Default 1.0.
    pub scale: f64,
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
}

impl Default for UeaOptions {
    fn default() -> Self {
        Self {
            sample_rate_hz: 1.0,
            scale: 1.0,
            checksums: ChecksumPolicy::Verify,
        }
    }
}

/// Reads one `.ts` file (optionally gzip-compressed).
///
/// One [`Recording`] per case. The format has no subject information, so every case is its own
/// subject (`subject_id` = 1-based case number, `subject_name` = `case<N>`). Cases with missing
/// values (`?`) are skipped and counted. Timestamped series (`@timeStamps true`) and regression
/// targets are not supported (an error).
pub fn read_uea_ts(path: &Path, opts: &UeaOptions) -> Result<RawDataset> {
    if !(opts.sample_rate_hz.is_finite() && opts.sample_rate_hz > 0.0) {
        return Err(DataError::Config {
            field: "sample_rate_hz".into(),
            msg: format!("must be positive, got {}", opts.sample_rate_hz),
        });
    }
    let raw = text::read_bytes(path)?;
    let manifest = match (opts.checksums, path.parent()) {
        (ChecksumPolicy::Verify, Some(dir)) => Manifest::find(dir, 2)?,
        _ => None,
    };
    let sum = checksum::check(opts.checksums, manifest.as_ref(), &[], path, &raw)?;
    let data = text::maybe_gunzip(path, raw)?;
    let fname = file_name(path);
    let mut problem = stem(&fname).to_string();
    let mut class_names: Option<Vec<String>> = None;
    let mut dimensions: Option<usize> = None;
    let mut series_length: Option<usize> = None;
    let mut equal_length = false;
    let mut in_data = false;
    let mut recordings = Vec::new();
    let mut skipped_missing = 0usize;
    let mut case = 0i64;
    for (line_no, line) in Lines::new(&data) {
        let line = text::trim(line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if !in_data {
            if line[0] != b'@' {
                return Err(DataError::parse(
                    path,
                    line_no,
                    "expected an @-header or @data",
                ));
            }
            let txt = String::from_utf8_lossy(line);
            let mut words = txt.split_whitespace();
            let key = words.next().unwrap_or("").to_ascii_lowercase();
            let value: Vec<&str> = words.collect();
            let flag = |v: &[&str]| -> Result<bool> {
                match v.first().map(|s| s.to_ascii_lowercase()).as_deref() {
                    Some("true") => Ok(true),
                    Some("false") => Ok(false),
                    _ => Err(DataError::parse(
                        path,
                        line_no,
                        format!("{key} needs true or false"),
                    )),
                }
            };
            let number = |v: &[&str]| -> Result<usize> {
                v.first().and_then(|s| s.parse().ok()).ok_or_else(|| {
                    DataError::parse(path, line_no, format!("{key} needs a positive integer"))
                })
            };
            match key.as_str() {
                "@problemname" => problem = value.join(" "),
                "@timestamps" => {
                    if flag(&value)? {
                        return Err(DataError::parse(
                            path,
                            line_no,
                            "timestamped .ts series are not supported",
                        ));
                    }
                }
                "@univariate" => {
                    if flag(&value)? {
                        dimensions = Some(1);
                    }
                }
                "@dimensions" => dimensions = Some(number(&value)?),
                "@equallength" => equal_length = flag(&value)?,
                "@serieslength" => series_length = Some(number(&value)?),
                "@classlabel" => {
                    if flag(&value)? {
                        if value.len() < 2 {
                            return Err(DataError::parse(
                                path,
                                line_no,
                                "@classLabel true lists no labels",
                            ));
                        }
                        class_names = Some(value[1..].iter().map(|s| s.to_string()).collect());
                    } else {
                        class_names = Some(Vec::new());
                    }
                }
                "@targetlabel" => {
                    if flag(&value)? {
                        return Err(DataError::parse(
                            path,
                            line_no,
                            "regression targets are not supported",
                        ));
                    }
                }
                "@data" => in_data = true,
                "@missing" | "@missingvalues" => {}
                _ => {
                    return Err(DataError::parse(
                        path,
                        line_no,
                        format!("unknown header `{key}`"),
                    ));
                }
            }
            continue;
        }
        let classes = class_names
            .as_ref()
            .ok_or_else(|| DataError::parse(path, line_no, "@data before @classLabel"))?;
        case += 1;
        let mut parts: Vec<&[u8]> = text::split_on(line, b':').collect();
        let label = if classes.is_empty() {
            -1
        } else {
            let lab = text::trim(parts.pop().unwrap_or(&[]));
            classes
                .iter()
                .position(|c| c.as_bytes() == lab)
                .ok_or_else(|| {
                    DataError::parse(
                        path,
                        line_no,
                        format!("class `{}` is not declared in @classLabel", text::show(lab)),
                    )
                })? as i32
        };
        if let Some(d) = dimensions {
            if parts.len() != d {
                return Err(DataError::parse(
                    path,
                    line_no,
                    format!("expected {d} dimensions, found {}", parts.len()),
                ));
            }
        }
        if parts.is_empty() {
            return Err(DataError::parse(path, line_no, "case without values"));
        }
        let mut signals: Vec<Vec<f32>> = Vec::with_capacity(parts.len());
        let mut missing = false;
        for (d, part) in parts.iter().enumerate() {
            let mut ch = Vec::new();
            for v in text::split_on(part, b',') {
                let v = text::trim(v);
                if v == b"?" {
                    missing = true;
                    break;
                }
                let x = text::finite_f64(path, line_no, v, &format!("dimension {}", d + 1))?;
                ch.push((x * opts.scale) as f32);
            }
            signals.push(ch);
        }
        if missing {
            skipped_missing += 1;
            continue;
        }
        let n = signals[0].len();
        if signals.iter().any(|c| c.len() != n) {
            return Err(DataError::parse(
                path,
                line_no,
                "dimensions of a case differ in length",
            ));
        }
        if equal_length {
            if let Some(l) = series_length {
                if n != l {
                    return Err(DataError::parse(
                        path,
                        line_no,
                        format!("series of length {n}, @seriesLength says {l}"),
                    ));
                }
            }
        }
        let rec = Recording {
            subject_id: case,
            subject_name: format!("case{case}"),
            session: format!("{fname}:{line_no}"),
            sample_rate_hz: opts.sample_rate_hz,
            timestamps_s: None,
            start_time_s: 0.0,
            channel_names: (0..signals.len()).map(|d| format!("dim_{d}")).collect(),
            signals,
            labels: vec![label; n],
        };
        plausible::check_timing(&rec, path, None)?;
        recordings.push(rec);
    }
    if !in_data {
        return Err(DataError::format(
            path,
            "no @data section (empty or truncated file)",
        ));
    }
    if recordings.is_empty() && skipped_missing == 0 {
        return Err(DataError::format(path, "no cases after @data"));
    }
    let mut skipped = Vec::new();
    add_skip(
        &mut skipped,
        "UEA case with missing values (?)",
        skipped_missing,
    );
    Ok(RawDataset {
        name: problem,
        class_names: class_names.unwrap_or_default(),
        recordings,
        source_checksums: sum.into_iter().collect(),
        skipped,
    })
}
