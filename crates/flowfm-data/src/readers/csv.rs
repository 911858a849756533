//! Generic delimited-text reader so a user can bring any recording: a [`CsvSpec`] maps columns
//! to channels (by name or index), says where time comes from (a column in a given unit, or a
//! fixed rate), which units the values are in, and optionally which column holds labels.

use std::collections::BTreeSet;
use std::path::Path;

use super::checksum::{self, ChecksumPolicy, Manifest};
use super::text::{self, Lines};
use super::{add_skip, file_name, TimeAxis, TimeStep, STANDARD_GRAVITY};
use crate::error::{DataError, Result};
use crate::plausible;
use crate::recording::{RawDataset, Recording};

/// A column, by 0-based index or by header name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnRef {
    /// 0-based column index.
    Index(usize),
    /// Header name (requires `has_header`).
    Name(String),
}

/// Unit of a time column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// Seconds (any origin).
    Seconds,
    /// Milliseconds.
    Milliseconds,
    /// Microseconds.
    Microseconds,
    /// Nanoseconds.
    Nanoseconds,
    /// `YYYY-MM-DD HH:MM:SS[.fff]` date-times.
    DateTime,
}

/// Where sample times come from.
#[derive(Clone, Debug, PartialEq)]
pub enum TimeSpec {
    /// Regular sampling at a fixed rate, starting at 0.
    FixedRate {
        /// Sample rate in Hz.
        rate_hz: f64,
    },
    /// A time column; the recording is regular if the times are, else it carries timestamps.
    Column {
        /// The column.
        column: ColumnRef,
        /// Its unit.
        unit: TimeUnit,
        /// The nominal sample rate in Hz.
        nominal_rate_hz: f64,
    },
}

/// Physical unit of the channel values in the file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Units {
    /// Already in g.
    G,
    /// Milli-g (divided by 1000).
    MilliG,
    /// m/s^2 (divided by 9.80665).
    MetersPerSecond2,
    /// rad/s (kept).
    RadPerSecond,
    /// deg/s (converted to rad/s).
    DegPerSecond,
    /// Any other linear scale: value * factor.
    Scale(f64),
}

impl Units {
    fn factor(self) -> f64 {
        match self {
            Units::G | Units::RadPerSecond => 1.0,
            Units::MilliG => 1e-3,
            Units::MetersPerSecond2 => 1.0 / STANDARD_GRAVITY,
            Units::DegPerSecond => std::f64::consts::PI / 180.0,
            Units::Scale(f) => f,
        }
    }
}

/// How to read a delimited text file into one [`Recording`].
#[derive(Clone, Debug)]
pub struct CsvSpec {
    /// Field separator (`b','`, `b';'`, `b'\t'`...). Double quotes are honoured.
    pub delimiter: u8,
    /// Whether the first line is a header.
    pub has_header: bool,
    /// Channel columns, in output order.
    pub channels: Vec<ColumnRef>,
    /// Output channel names; default: the header names, or `ch<k>`.
    pub channel_names: Option<Vec<String>>,
    /// Units: one for all channels, or one per channel.
    pub units: Vec<Units>,
    /// Time source.
    pub time: TimeSpec,
    /// Optional label column (strings; empty or `NaN` = unlabelled).
    pub label_column: Option<ColumnRef>,
    /// Dataset name for the [`RawDataset`].
    pub dataset_name: String,
    /// Subject id of the recording.
    pub subject_id: i64,
    /// Subject name of the recording.
    pub subject_name: String,
    /// Checksum handling.
    pub checksums: ChecksumPolicy,
}

impl CsvSpec {
    /// A spec for `x,y,z` columns in g at a fixed rate, with a header.
    pub fn xyz_fixed_rate(rate_hz: f64) -> Self {
        Self {
            delimiter: b',',
            has_header: true,
            channels: ["x", "y", "z"].map(|s| ColumnRef::Name(s.into())).to_vec(),
            channel_names: Some(["acc_x", "acc_y", "acc_z"].map(String::from).to_vec()),
            units: vec![Units::G],
            time: TimeSpec::FixedRate { rate_hz },
            label_column: None,
            dataset_name: "csv".into(),
            subject_id: 0,
            subject_name: "subject0".into(),
            checksums: ChecksumPolicy::RecordOnly,
        }
    }

    fn validate(&self) -> Result<()> {
        let cfg = |field: &str, msg: String| DataError::Config {
            field: field.into(),
            msg,
        };
        if self.channels.is_empty() {
            return Err(cfg(
                "channels",
                "at least one channel column is needed".into(),
            ));
        }
        if self.units.len() != 1 && self.units.len() != self.channels.len() {
            return Err(cfg(
                "units",
                format!(
                    "give 1 or {} units, not {}",
                    self.channels.len(),
                    self.units.len()
                ),
            ));
        }
        if let Some(n) = &self.channel_names {
            if n.len() != self.channels.len() {
                return Err(cfg(
                    "channel_names",
                    format!("{} names for {} channels", n.len(), self.channels.len()),
                ));
            }
        }
        let rate = match &self.time {
            TimeSpec::FixedRate { rate_hz } => *rate_hz,
            TimeSpec::Column {
                nominal_rate_hz, ..
            } => *nominal_rate_hz,
        };
        if !(rate.is_finite() && rate > 0.0) {
            return Err(cfg("rate_hz", format!("must be positive, got {rate}")));
        }
        if self.delimiter == b'"' || self.delimiter == b'\n' {
            return Err(cfg("delimiter", "cannot be a quote or a newline".into()));
        }
        Ok(())
    }
}

/// Reads one delimited text file (optionally gzip-compressed) according to `spec`.
///
/// Every row must have the header's number of fields (or the first row's, without header);
/// channel values must be finite; time values must increase (a repeated time is skipped and
/// counted). Class names are the sorted distinct labels.
pub fn read_csv(path: &Path, spec: &CsvSpec) -> Result<RawDataset> {
    spec.validate()?;
    let raw = text::read_bytes(path)?;
    let manifest = match (spec.checksums, path.parent()) {
        (ChecksumPolicy::Verify, Some(dir)) => Manifest::find(dir, 2)?,
        _ => None,
    };
    let sum = checksum::check(spec.checksums, manifest.as_ref(), &[], path, &raw)?;
    let data = text::maybe_gunzip(path, raw)?;
    let mut lines = Lines::new(&data).peekable();
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    if spec.has_header {
        let (no, h) = lines
            .next()
            .ok_or_else(|| DataError::format(path, "empty file (no header)"))?;
        if !text::split_csv(text::trim(h), spec.delimiter, &mut fields) {
            return Err(DataError::parse(path, no, "unterminated quote in header"));
        }
        header = fields
            .iter()
            .map(|f| String::from_utf8_lossy(text::trim(f)).into_owned())
            .collect();
    }
    let resolve = |c: &ColumnRef, what: &str| -> Result<usize> {
        match c {
            ColumnRef::Index(i) => Ok(*i),
            ColumnRef::Name(n) => header.iter().position(|h| h == n).ok_or_else(|| {
                DataError::parse(
                    path,
                    1,
                    format!("{what}: no column named `{n}` in the header"),
                )
            }),
        }
    };
    let chan_cols: Vec<usize> = spec
        .channels
        .iter()
        .map(|c| resolve(c, "channel"))
        .collect::<Result<_>>()?;
    let (time_col, unit, rate) = match &spec.time {
        TimeSpec::FixedRate { rate_hz } => (None, TimeUnit::Seconds, *rate_hz),
        TimeSpec::Column {
            column,
            unit,
            nominal_rate_hz,
        } => (Some(resolve(column, "time")?), *unit, *nominal_rate_hz),
    };
    let label_col = spec
        .label_column
        .as_ref()
        .map(|c| resolve(c, "label"))
        .transpose()?;
    let factors: Vec<f64> = (0..chan_cols.len())
        .map(|k| spec.units[if spec.units.len() == 1 { 0 } else { k }].factor())
        .collect();
    let mut ncol = if spec.has_header {
        Some(header.len())
    } else {
        None
    };
    let mut signals: Vec<Vec<f32>> = vec![Vec::new(); chan_cols.len()];
    let mut raw_labels: Vec<Option<String>> = Vec::new();
    let mut axis = TimeAxis::new(rate);
    let mut repeated = 0usize;
    for (line_no, line) in lines {
        let line = text::trim(line);
        if line.is_empty() {
            continue;
        }
        if !text::split_csv(line, spec.delimiter, &mut fields) {
            return Err(DataError::parse(path, line_no, "unterminated quote"));
        }
        let n = *ncol.get_or_insert(fields.len());
        if fields.len() != n {
            return Err(DataError::parse(
                path,
                line_no,
                format!("expected {n} fields, found {}", fields.len()),
            ));
        }
        let max_col = chan_cols
            .iter()
            .chain(time_col.iter())
            .chain(label_col.iter())
            .max();
        if let Some(&m) = max_col {
            if m >= n {
                return Err(DataError::parse(
                    path,
                    line_no,
                    format!("column {m} does not exist ({n} fields)"),
                ));
            }
        }
        if let Some(tc) = time_col {
            let f = &fields[tc];
            let t = match unit {
                TimeUnit::DateTime => text::parse_datetime(f).ok_or_else(|| {
                    DataError::parse(
                        path,
                        line_no,
                        format!("time `{}` is not a date-time", text::show(f)),
                    )
                })?,
                other => {
                    let scale = match other {
                        TimeUnit::Milliseconds => 1e-3,
                        TimeUnit::Microseconds => 1e-6,
                        TimeUnit::Nanoseconds => 1e-9,
                        _ => 1.0,
                    };
                    text::finite_f64(path, line_no, f, "time")? * scale
                }
            };
            match axis.push(t) {
                TimeStep::Ok => {}
                TimeStep::Repeated => {
                    repeated += 1;
                    continue;
                }
                TimeStep::Backwards => {
                    return Err(DataError::parse(path, line_no, "time goes backwards"));
                }
            }
        }
        for (k, &c) in chan_cols.iter().enumerate() {
            let v = text::finite_f64(path, line_no, &fields[c], &format!("channel {}", k + 1))?;
            signals[k].push((v * factors[k]) as f32);
        }
        if let Some(lc) = label_col {
            let l = text::trim(&fields[lc]);
            raw_labels.push(if l.is_empty() || l.eq_ignore_ascii_case(b"nan") {
                None
            } else {
                Some(String::from_utf8_lossy(l).into_owned())
            });
        }
    }
    let n = signals[0].len();
    if n == 0 {
        return Err(DataError::format(path, "no samples"));
    }
    let class_names: Vec<String> = raw_labels
        .iter()
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let labels: Vec<i32> = if label_col.is_some() {
        raw_labels
            .iter()
            .map(|l| match l {
                Some(s) => class_names.binary_search(s).map(|i| i as i32).unwrap_or(-1),
                None => -1,
            })
            .collect()
    } else {
        vec![-1; n]
    };
    let (start_time_s, timestamps_s) = if time_col.is_some() {
        axis.finish()
    } else {
        (0.0, None)
    };
    let channel_names = match &spec.channel_names {
        Some(n) => n.clone(),
        None => chan_cols
            .iter()
            .enumerate()
            .map(|(k, &c)| header.get(c).cloned().unwrap_or_else(|| format!("ch{k}")))
            .collect(),
    };
    let mut skipped = Vec::new();
    add_skip(&mut skipped, "CSV row with a repeated time", repeated);
    let rec = Recording {
        subject_id: spec.subject_id,
        subject_name: spec.subject_name.clone(),
        session: file_name(path),
        sample_rate_hz: rate,
        timestamps_s,
        start_time_s,
        channel_names,
        signals,
        labels,
    };
    let unit = match &spec.time {
        TimeSpec::Column { unit, .. } => match unit {
            TimeUnit::Seconds | TimeUnit::DateTime => Some("s"),
            TimeUnit::Milliseconds => Some("ms"),
            TimeUnit::Microseconds => Some("us"),
            TimeUnit::Nanoseconds => Some("ns"),
        },
        _ => None,
    };
    plausible::check_timing(&rec, path, unit)?;
    Ok(RawDataset {
        name: spec.dataset_name.clone(),
        class_names,
        recordings: vec![rec],
        source_checksums: sum.into_iter().collect(),
        skipped,
    })
}
