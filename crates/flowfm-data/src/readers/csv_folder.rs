//! A folder of delimited text recordings (any study's CSV export) read through a small spec,
//! [`CsvFolderSpec`], given as TOML or built from command-line flags: which columns are channels
//! and in which units, where time comes from, and where each recording's label and subject come
//! from (a column, a labels table, a file-name pattern, or the folder name).
//!
//! The output is a [`RawDataset`] exactly as the built-in readers produce it, so `prepare` works
//! unchanged. Bad input is an error naming the file and line; every row or file left out is
//! counted in [`RawDataset::skipped`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};

use super::csv::{TimeUnit, Units};
use super::csv_rows::{unit_factor, Col, Delim, Fields, Layout, LayoutSpec, LineReader};
use super::text;
use super::{add_skip, sha256_hex, TimeStep};
use crate::error::{DataError, Result};
use crate::recording::{RawDataset, Recording};

/// A column of a CSV file: a 0-based index (`3`) or a header name (`"acc_x"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CsvColumn {
    /// 0-based column index.
    Index(usize),
    /// Header name (matched exactly, else ignoring ASCII case).
    Name(String),
}

impl CsvColumn {
    /// Parses a flag value: digits are an index, anything else a name.
    pub fn parse(s: &str) -> Self {
        match s.trim().parse::<usize>() {
            Ok(i) => CsvColumn::Index(i),
            Err(_) => CsvColumn::Name(s.trim().to_string()),
        }
    }

    fn to_col(&self) -> Col {
        match self {
            CsvColumn::Index(i) => Col::Index(*i),
            CsvColumn::Name(n) => Col::Name(n.clone()),
        }
    }
}

fn default_name() -> String {
    "csv".into()
}
fn default_delimiter() -> String {
    ",".into()
}
fn default_true() -> bool {
    true
}
fn default_extensions() -> Vec<String> {
    ["csv", "tsv", "txt"].map(String::from).to_vec()
}
fn default_units() -> Vec<String> {
    vec!["g".into()]
}
fn default_time_unit() -> String {
    "s".into()
}

/// `units = "g"` or `units = ["g", "g", "g", "deg/s", ...]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// How to read a folder (or a single file) of delimited text recordings. Deserialises from TOML
/// (unknown keys are errors); every field is public so a command line can build one from flags.
///
/// ```toml
/// name = "phone_study"            # dataset name (default "csv")
/// delimiter = ";"                 # ",", ";", "\t" (or "tab"), "whitespace"; default ","
/// header = true                   # first line names the columns (default true)
/// extensions = ["csv"]            # files read (".gz" variants too); default csv, tsv, txt
/// channels = ["acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"]   # names or 0-based indices
/// channel_names = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]  # optional
/// units = ["m/s^2", "m/s^2", "m/s^2", "deg/s", "deg/s", "deg/s"]  # or one for all; default "g"
/// rate_hz = 50.0                  # the fixed rate, or the nominal rate of a time column
/// time_column = "t"               # optional; without it samples are 1 / rate_hz apart from 0
/// time_unit = "ms"                # s, ms, us, ns, datetime (YYYY-MM-DD HH:MM:SS[.fff])
/// # at most one label source:
/// label_column = "activity"       # per-sample labels (empty or NaN = unlabelled)
/// labels_table = "labels.csv"     # header with `file`, `label` and/or `subject` columns
/// file_pattern = "{subject}/{label}_{*}.csv"  # matched against the end of the relative path
/// # at most one subject source: subject_column, the table's `subject`, `{subject}` in the
/// # pattern, or subject_from_folder = true (the file's folder); none: every file is subject "0".
/// classes = ["walk", "sit"]       # optional class order; other labels are then errors
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvFolderSpec {
    /// Dataset name in the store.
    #[serde(default = "default_name")]
    pub name: String,
    /// `","`, `";"`, `"\t"` / `"tab"`, `"whitespace"` (runs of spaces and tabs), or any one
    /// ASCII character.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Whether the first line of every file is a header.
    #[serde(default = "default_true")]
    pub header: bool,
    /// File extensions read (case-insensitive, without the dot; `.gz` variants are read too).
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
    /// Channel columns in output order (at least one; gyroscope and others pass through).
    pub channels: Vec<CsvColumn>,
    /// Output channel names (default: the names given in `channels`, else the header's, else
    /// `ch<k>`).
    #[serde(default)]
    pub channel_names: Option<Vec<String>>,
    /// One unit for all channels or one per channel: `g`, `mg` (milli-g), `m/s^2`, `rad/s`,
    /// `deg/s`. Accelerations become g, angular rates rad/s.
    #[serde(default = "default_units", deserialize_with = "one_or_many")]
    pub units: Vec<String>,
    /// Sample rate in Hz: the fixed rate without a time column, the nominal rate with one.
    pub rate_hz: f64,
    /// Time column; without it the samples are regular at `rate_hz` from time 0.
    #[serde(default)]
    pub time_column: Option<CsvColumn>,
    /// Unit of the time column: `s`, `ms`, `us`, `ns` or `datetime`.
    #[serde(default = "default_time_unit")]
    pub time_unit: String,
    /// Per-sample label column.
    #[serde(default)]
    pub label_column: Option<CsvColumn>,
    /// A CSV table with a header naming a `file` column and a `label` and/or `subject` column;
    /// `file` is a path relative to the data folder or a file name. A relative table path is
    /// resolved against the data folder.
    #[serde(default)]
    pub labels_table: Option<PathBuf>,
    /// A pattern matched against the last components of each file's path relative to the data
    /// folder (`.gz` removed): `{label}`, `{subject}` and `{*}` (anything) between literal text,
    /// e.g. `{subject}_{label}.csv` or `{label}/{*}-{subject}.txt`. Named placeholders never
    /// contain `/` or the character that follows them in the pattern.
    #[serde(default)]
    pub file_pattern: Option<String>,
    /// Per-sample subject column (a file may hold several subjects; each run is a recording).
    #[serde(default)]
    pub subject_column: Option<CsvColumn>,
    /// The subject is the name of the folder holding the file.
    #[serde(default)]
    pub subject_from_folder: bool,
    /// Class names in index order; without it the sorted distinct labels.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
}

/// Where labels come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LabelSource {
    None,
    Column,
    Table,
    Pattern,
}

/// Where subjects come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubjectSource {
    None,
    Column,
    Table,
    Pattern,
    Folder,
}

/// A [`CsvFolderSpec`] checked and resolved.
#[derive(Clone, Debug)]
pub(crate) struct CompiledSpec {
    pub(crate) layout: LayoutSpec,
    pub(crate) rate_hz: f64,
    channel_names: Option<Vec<String>>,
    extensions: Vec<String>,
    label: LabelSource,
    subject: SubjectSource,
    pattern: Option<Pattern>,
}

fn cfg_err(field: &str, msg: impl Into<String>) -> DataError {
    DataError::Config {
        field: field.into(),
        msg: msg.into(),
    }
}

/// Parses a unit name.
pub fn parse_units(s: &str) -> Result<Units> {
    let norm: String = s
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Ok(match norm.as_str() {
        "g" => Units::G,
        "mg" | "milli-g" | "millig" | "milli_g" => Units::MilliG,
        "m/s^2" | "m/s2" | "m/s²" | "ms-2" | "m/s/s" => Units::MetersPerSecond2,
        "rad/s" => Units::RadPerSecond,
        "deg/s" | "°/s" | "dps" => Units::DegPerSecond,
        _ => {
            return Err(cfg_err(
                "units",
                format!("unknown unit `{s}`; expected g, mg, m/s^2, rad/s or deg/s"),
            ))
        }
    })
}

/// Parses a time unit name.
pub fn parse_time_unit(s: &str) -> Result<TimeUnit> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "seconds" => TimeUnit::Seconds,
        "ms" | "milliseconds" => TimeUnit::Milliseconds,
        "us" | "µs" | "microseconds" => TimeUnit::Microseconds,
        "ns" | "nanoseconds" => TimeUnit::Nanoseconds,
        "datetime" | "date-time" | "date_time" => TimeUnit::DateTime,
        _ => {
            return Err(cfg_err(
                "time_unit",
                format!("unknown time unit `{s}`; expected s, ms, us, ns or datetime"),
            ))
        }
    })
}

fn parse_delimiter(s: &str) -> Result<Delim> {
    Ok(match s {
        "tab" | "\\t" | "\t" => Delim::Byte(b'\t'),
        "whitespace" | "space" | " " => Delim::Whitespace,
        _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
            Delim::Byte(s.as_bytes()[0])
        }
        _ => {
            return Err(cfg_err(
                "delimiter",
                format!("`{s}` is not one ASCII character, `tab` or `whitespace`"),
            ))
        }
    })
}

impl CsvFolderSpec {
    /// A spec with the given channel columns at a fixed `rate_hz`, everything else at its
    /// default (comma-separated with a header, values in g, no labels, subject "0").
    pub fn new(channels: Vec<CsvColumn>, rate_hz: f64) -> Self {
        Self {
            name: default_name(),
            delimiter: default_delimiter(),
            header: true,
            extensions: default_extensions(),
            channels,
            channel_names: None,
            units: default_units(),
            rate_hz,
            time_column: None,
            time_unit: default_time_unit(),
            label_column: None,
            labels_table: None,
            file_pattern: None,
            subject_column: None,
            subject_from_folder: false,
            classes: None,
        }
    }

    /// Parses a TOML spec; errors name the key (and TOML's line and column).
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let spec: Self = toml::from_str(s).map_err(|e| cfg_err("csv spec", e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads and parses a TOML spec file; errors name the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let spec: Self = toml::from_str(&s).map_err(|e| DataError::format(path, e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.compile().map(|_| ())
    }

    /// A stable rendering of the whole spec (part of the dataset's fingerprint).
    pub fn canonical(&self) -> String {
        format!("{self:?}")
    }

    pub(crate) fn compile(&self) -> Result<CompiledSpec> {
        if self.name.trim().is_empty() {
            return Err(cfg_err("name", "must not be empty"));
        }
        let delim = parse_delimiter(&self.delimiter)?;
        if self.channels.is_empty() {
            return Err(cfg_err("channels", "at least one channel column is needed"));
        }
        let uses_names = self
            .channels
            .iter()
            .chain(self.time_column.iter())
            .chain(self.label_column.iter())
            .chain(self.subject_column.iter())
            .any(|c| matches!(c, CsvColumn::Name(_)));
        if uses_names && !self.header {
            return Err(cfg_err(
                "header",
                "columns are named but `header = false`; use 0-based indices",
            ));
        }
        let units: Vec<Units> = self
            .units
            .iter()
            .map(|u| parse_units(u))
            .collect::<Result<_>>()?;
        if units.len() != 1 && units.len() != self.channels.len() {
            return Err(cfg_err(
                "units",
                format!(
                    "give 1 or {} units (one per channel), not {}",
                    self.channels.len(),
                    units.len()
                ),
            ));
        }
        let factors = (0..self.channels.len())
            .map(|k| unit_factor(units[if units.len() == 1 { 0 } else { k }]))
            .collect();
        if let Some(n) = &self.channel_names {
            if n.len() != self.channels.len() {
                return Err(cfg_err(
                    "channel_names",
                    format!("{} names for {} channels", n.len(), self.channels.len()),
                ));
            }
        }
        if !(crate::plausible::MIN_RATE_HZ..=crate::plausible::MAX_RATE_HZ).contains(&self.rate_hz)
        {
            return Err(cfg_err(
                "rate_hz",
                format!(
                    "{} Hz is outside the plausible {} Hz - {} Hz of wearable sensors",
                    self.rate_hz,
                    crate::plausible::MIN_RATE_HZ,
                    crate::plausible::MAX_RATE_HZ
                ),
            ));
        }
        let time_unit = parse_time_unit(&self.time_unit)?;
        if self.extensions.is_empty() {
            return Err(cfg_err("extensions", "must list at least one extension"));
        }
        let pattern = self
            .file_pattern
            .as_deref()
            .map(Pattern::parse)
            .transpose()?;
        let pat_has = |v: Var| pattern.as_ref().is_some_and(|p| p.has(v));
        let label_sources: Vec<(&str, LabelSource)> = [
            (
                self.label_column.is_some(),
                "label_column",
                LabelSource::Column,
            ),
            (
                self.labels_table.is_some(),
                "labels_table",
                LabelSource::Table,
            ),
            (pat_has(Var::Label), "file_pattern", LabelSource::Pattern),
        ]
        .into_iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, n, s)| (n, s))
        .collect();
        if label_sources.len() > 1 {
            return Err(cfg_err(
                "labels",
                format!(
                    "give at most one label source, not {}",
                    label_sources
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
        }
        let subject_sources: Vec<(&str, SubjectSource)> = [
            (
                self.subject_column.is_some(),
                "subject_column",
                SubjectSource::Column,
            ),
            (
                pat_has(Var::Subject),
                "file_pattern",
                SubjectSource::Pattern,
            ),
            (
                self.subject_from_folder,
                "subject_from_folder",
                SubjectSource::Folder,
            ),
        ]
        .into_iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, n, s)| (n, s))
        .collect();
        if subject_sources.len() > 1 {
            return Err(cfg_err(
                "subject",
                format!(
                    "give at most one subject source, not {}",
                    subject_sources
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
        }
        if let Some(c) = &self.classes {
            let set: BTreeSet<&String> = c.iter().collect();
            if set.len() != c.len() || c.is_empty() {
                return Err(cfg_err(
                    "classes",
                    "must list at least one class, each once",
                ));
            }
        }
        let channel_names = self.channel_names.clone().or_else(|| {
            self.channels
                .iter()
                .all(|c| matches!(c, CsvColumn::Name(_)))
                .then(|| {
                    self.channels
                        .iter()
                        .map(|c| match c {
                            CsvColumn::Name(n) => n.clone(),
                            CsvColumn::Index(i) => format!("ch{i}"),
                        })
                        .collect()
                })
        });
        Ok(CompiledSpec {
            layout: LayoutSpec {
                delim,
                has_header: self.header,
                channels: self.channels.iter().map(CsvColumn::to_col).collect(),
                factors,
                time: self.time_column.as_ref().map(|c| (c.to_col(), time_unit)),
                label: self.label_column.as_ref().map(CsvColumn::to_col),
                subject: self.subject_column.as_ref().map(CsvColumn::to_col),
            },
            rate_hz: self.rate_hz,
            channel_names,
            extensions: self
                .extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            label: label_sources.first().map_or(LabelSource::None, |(_, s)| *s),
            subject: subject_sources
                .first()
                .map_or(SubjectSource::None, |(_, s)| *s),
            pattern,
        })
    }
}

impl CompiledSpec {
    /// The time column's unit as the plausibility checks name it (`None` without a column).
    pub(crate) fn time_unit_name(&self) -> Option<&'static str> {
        self.layout.time.as_ref().map(|(_, u)| match u {
            TimeUnit::Seconds | TimeUnit::DateTime => "s",
            TimeUnit::Milliseconds => "ms",
            TimeUnit::Microseconds => "us",
            TimeUnit::Nanoseconds => "ns",
        })
    }

    /// Channel names when the spec decides them (else they come from the header).
    pub(crate) fn channel_names(&self, layout: &Layout) -> Vec<String> {
        self.channel_names
            .clone()
            .unwrap_or_else(|| layout.channel_names())
    }
}

// ---------------------------------------------------------------- file-name patterns

/// A named placeholder of a file pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Label,
    Subject,
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Lit(String),
    Var(Var),
}

/// A parsed `file_pattern`.
#[derive(Clone, Debug)]
struct Pattern {
    toks: Vec<Tok>,
    /// Path components it spans (1 + number of `/`).
    components: usize,
}

impl Pattern {
    fn parse(s: &str) -> Result<Self> {
        let mut toks = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest.find('}').ok_or_else(|| {
                        cfg_err("file_pattern", format!("unclosed `{{` in `{s}`"))
                    })?;
                    let var = match &rest[1..end] {
                        "label" => Var::Label,
                        "subject" => Var::Subject,
                        "*" => Var::Any,
                        other => {
                            return Err(cfg_err(
                                "file_pattern",
                                format!(
                                    "unknown placeholder `{{{other}}}`; use {{label}}, {{subject}} or {{*}}"
                                ),
                            ))
                        }
                    };
                    if matches!(toks.last(), Some(Tok::Var(_))) {
                        return Err(cfg_err(
                            "file_pattern",
                            format!("placeholders must be separated by text in `{s}`"),
                        ));
                    }
                    if var != Var::Any && toks.contains(&Tok::Var(var)) {
                        return Err(cfg_err(
                            "file_pattern",
                            format!("a placeholder appears twice in `{s}`"),
                        ));
                    }
                    toks.push(Tok::Var(var));
                    rest = &rest[end + 1..];
                }
                Some(i) => {
                    toks.push(Tok::Lit(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    toks.push(Tok::Lit(rest.to_string()));
                    rest = "";
                }
            }
        }
        if toks.is_empty() {
            return Err(cfg_err("file_pattern", "is empty"));
        }
        Ok(Self {
            components: s.matches('/').count() + 1,
            toks,
        })
    }

    fn has(&self, v: Var) -> bool {
        self.toks.contains(&Tok::Var(v))
    }

    /// Matches the last components of `rel` (a `/`-separated path with `.gz` removed); returns
    /// `(label, subject)` captures.
    fn matches(&self, rel: &str) -> Option<(Option<String>, Option<String>)> {
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.len() < self.components {
            return None;
        }
        let tail = parts[parts.len() - self.components..].join("/");
        let mut caps = Vec::new();
        if !match_from(&self.toks, &tail, &mut caps) {
            return None;
        }
        let get = |v: Var| caps.iter().find(|(k, _)| *k == v).map(|(_, s)| s.clone());
        Some((get(Var::Label), get(Var::Subject)))
    }
}

/// Backtracking match of `toks` against all of `s`.
fn match_from(toks: &[Tok], s: &str, caps: &mut Vec<(Var, String)>) -> bool {
    match toks.split_first() {
        None => s.is_empty(),
        Some((Tok::Lit(l), rest)) => s
            .strip_prefix(l.as_str())
            .is_some_and(|r| match_from(rest, r, caps)),
        Some((Tok::Var(v), rest)) => {
            let stop = match rest.first() {
                Some(Tok::Lit(l)) => l.chars().next(),
                _ => None,
            };
            // The longest run a named placeholder may take: no `/`, not the next literal's first
            // character. `{*}` may take anything except `/`.
            let limit = s
                .char_indices()
                .find(|&(_, c)| c == '/' || (*v != Var::Any && Some(c) == stop))
                .map_or(s.len(), |(i, _)| i);
            let mut ends: Vec<usize> = s[..limit]
                .char_indices()
                .map(|(i, _)| i)
                .skip(1)
                .chain(std::iter::once(limit))
                .filter(|&e| e > 0)
                .collect();
            if *v == Var::Any {
                ends.reverse();
            }
            for e in ends {
                let n = caps.len();
                caps.push((*v, s[..e].to_string()));
                if match_from(rest, &s[e..], caps) {
                    return true;
                }
                caps.truncate(n);
            }
            false
        }
    }
}

// ---------------------------------------------------------------- files and labels table

/// One data file to read, with what the table, pattern or folder says about it.
#[derive(Clone, Debug)]
struct Job {
    path: PathBuf,
    rel: String,
    label: Option<String>,
    subject: Option<String>,
}

fn rel_path(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        super::file_name(path)
    } else {
        parts.join("/")
    }
}

/// All files under `dir`, recursively, sorted by path.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e)))
        .collect::<Result<_>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

fn has_extension(name: &str, exts: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    let base = lower.strip_suffix(".gz").unwrap_or(&lower);
    exts.iter().any(|e| {
        base.strip_suffix(e.as_str())
            .is_some_and(|b| b.ends_with('.'))
    })
}

/// A row of the labels table.
struct TableRow {
    line: usize,
    file: String,
    label: Option<String>,
    subject: Option<String>,
}

/// Reads the labels table: a header with `file` and `label` and/or `subject` columns, separated
/// by the first of tab, `;` or `,` found in the header.
fn read_table(path: &Path) -> Result<(Vec<TableRow>, bool, bool, Option<String>)> {
    let mut lines = LineReader::open(path, true)?;
    let mut buf = Vec::new();
    let Some(hno) = lines.next_line(&mut buf)? else {
        return Err(DataError::format(path, "empty labels table (no header)"));
    };
    let sep = [b'\t', b';', b',']
        .into_iter()
        .find(|s| buf.contains(s))
        .unwrap_or(b',');
    let mut f = Fields::default();
    let header_line = text::trim(&buf).to_vec();
    if !f.split(&header_line, Delim::Byte(sep)) {
        return Err(DataError::parse(path, hno, "unterminated quote in header"));
    }
    let names: Vec<String> = (0..f.len())
        .map(|i| String::from_utf8_lossy(f.get(&header_line, i)).to_ascii_lowercase())
        .collect();
    let col = |n: &str| names.iter().position(|h| h == n);
    let file_col = col("file").ok_or_else(|| {
        DataError::parse(
            path,
            hno,
            format!("header has no `file` column ({})", names.join(", ")),
        )
    })?;
    let (label_col, subject_col) = (col("label"), col("subject"));
    if label_col.is_none() && subject_col.is_none() {
        return Err(DataError::parse(
            path,
            hno,
            "header needs a `label` and/or a `subject` column",
        ));
    }
    let mut rows = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    while let Some(no) = lines.next_line(&mut buf)? {
        let line = text::trim(&buf);
        if line.is_empty() {
            continue;
        }
        if !f.split(line, Delim::Byte(sep)) {
            return Err(DataError::parse(path, no, "unterminated quote"));
        }
        if f.len() != names.len() {
            return Err(DataError::parse(
                path,
                no,
                format!("expected {} fields, found {}", names.len(), f.len()),
            ));
        }
        let get = |c: Option<usize>| {
            c.map(|c| String::from_utf8_lossy(f.get(line, c)).into_owned())
                .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("nan"))
        };
        let file = get(Some(file_col))
            .ok_or_else(|| DataError::parse(path, no, "empty `file` field"))?
            .replace('\\', "/");
        if let Some(first) = seen.insert(file.clone(), no) {
            return Err(DataError::parse(
                path,
                no,
                format!("`{file}` is listed twice (first on line {first})"),
            ));
        }
        let subject = get(subject_col);
        if subject_col.is_some() && subject.is_none() {
            return Err(DataError::parse(path, no, "empty `subject` field"));
        }
        rows.push(TableRow {
            line: no,
            file,
            label: get(label_col),
            subject,
        });
    }
    Ok((
        rows,
        label_col.is_some(),
        subject_col.is_some(),
        lines.sha256_hex(),
    ))
}

/// The files to read and what each is labelled with; skipped files are counted in `skipped`.
fn plan(
    path: &Path,
    spec: &CsvFolderSpec,
    c: &mut CompiledSpec,
    skipped: &mut Vec<crate::recording::SkipReport>,
    sums: &mut Vec<(String, String)>,
) -> Result<(PathBuf, Vec<Job>)> {
    let (root, mut files) = if path.is_file() {
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (root, vec![path.to_path_buf()])
    } else if path.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files)?;
        (path.to_path_buf(), files)
    } else {
        return Err(DataError::format(path, "no such file or folder"));
    };
    let table_path = spec.labels_table.as_ref().map(|t| {
        if t.is_absolute() {
            t.clone()
        } else {
            root.join(t)
        }
    });
    let table_canon = table_path.as_ref().and_then(|t| t.canonicalize().ok());
    let mut other_ext = 0usize;
    files.retain(|f| {
        if table_canon.is_some() && f.canonicalize().ok() == table_canon {
            return false;
        }
        let keep = has_extension(&super::file_name(f), &c.extensions);
        other_ext += usize::from(!keep);
        keep
    });
    add_skip(
        skipped,
        "files without a listed extension (csv spec `extensions`)",
        other_ext,
    );
    let mut jobs: Vec<Job> = files
        .into_iter()
        .map(|p| Job {
            rel: rel_path(&root, &p),
            path: p,
            label: None,
            subject: None,
        })
        .collect();
    if let Some(pattern) = &c.pattern {
        let n = jobs.len();
        let mut kept = Vec::with_capacity(n);
        for mut j in jobs {
            let rel = j.rel.strip_suffix(".gz").unwrap_or(&j.rel).to_string();
            if let Some((label, subject)) = pattern.matches(&rel) {
                j.label = label;
                j.subject = subject;
                kept.push(j);
            }
        }
        add_skip(
            skipped,
            "files not matching the csv spec's file_pattern",
            n - kept.len(),
        );
        jobs = kept;
    }
    if c.subject == SubjectSource::Folder {
        for j in &mut jobs {
            let parts: Vec<&str> = j.rel.split('/').collect();
            if parts.len() < 2 {
                return Err(DataError::format(
                    &j.path,
                    "subject_from_folder: the file is not inside a subject folder",
                ));
            }
            j.subject = Some(parts[parts.len() - 2].to_string());
        }
    }
    if let Some(tp) = &table_path {
        let (rows, has_label, has_subject, sha) = read_table(tp)?;
        if let Some(sha) = sha {
            sums.push((format!("<labels table> {}", rel_path(&root, tp)), sha));
        }
        if has_subject && c.subject != SubjectSource::None {
            return Err(cfg_err(
                "subject",
                format!(
                    "{} has a `subject` column and another subject source is given",
                    tp.display()
                ),
            ));
        }
        if has_subject {
            c.subject = SubjectSource::Table;
        }
        if !has_label {
            c.label = LabelSource::None;
        }
        let mut by_rel: HashMap<String, usize> = HashMap::new();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, j) in jobs.iter().enumerate() {
            let stripped = j.rel.strip_suffix(".gz").unwrap_or(&j.rel);
            by_rel.insert(j.rel.clone(), i);
            by_rel.entry(stripped.to_string()).or_insert(i);
            let name = stripped.rsplit('/').next().unwrap_or(stripped).to_string();
            by_name.entry(name).or_default().push(i);
        }
        let mut assigned: Vec<Option<usize>> = vec![None; jobs.len()];
        for row in &rows {
            let key = row.file.strip_suffix(".gz").unwrap_or(&row.file);
            let idx = match by_rel.get(&row.file).or_else(|| by_rel.get(key)) {
                Some(&i) => i,
                None => match by_name.get(key).map(Vec::as_slice) {
                    Some([i]) => *i,
                    Some(many) if many.len() > 1 => {
                        return Err(DataError::parse(
                            tp,
                            row.line,
                            format!(
                            "`{}` names {} files ({}); give the path relative to the data folder",
                            row.file,
                            many.len(),
                            many.iter()
                                .map(|&i| jobs[i].rel.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        ))
                    }
                    _ => {
                        return Err(DataError::parse(
                            tp,
                            row.line,
                            format!(
                                "`{}` is not among the data files under {}",
                                row.file,
                                root.display()
                            ),
                        ))
                    }
                },
            };
            if let Some(prev) = assigned[idx] {
                return Err(DataError::parse(
                    tp,
                    row.line,
                    format!("`{}` names the same file as line {prev}", row.file),
                ));
            }
            assigned[idx] = Some(row.line);
            if has_label {
                jobs[idx].label = row.label.clone();
            }
            if has_subject {
                jobs[idx].subject = row.subject.clone();
            }
        }
        let n = jobs.len();
        jobs = jobs
            .into_iter()
            .zip(&assigned)
            .filter(|(_, a)| a.is_some())
            .map(|(j, _)| j)
            .collect();
        add_skip(
            skipped,
            "files not listed in the labels table",
            n - jobs.len(),
        );
    }
    if jobs.is_empty() {
        return Err(DataError::format(
            path,
            format!(
                "no data files to read (extensions {}{}{})",
                c.extensions.join(", "),
                if c.pattern.is_some() {
                    ", matching file_pattern"
                } else {
                    ""
                },
                if table_path.is_some() {
                    ", listed in the labels table"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok((root, jobs))
}

// ---------------------------------------------------------------- parsing

/// A time column counts as regular (no per-sample timestamps kept) only while every sample lies
/// within this fraction of a period of `t0 + i / rate_hz`. Tighter than the built-in readers' half
/// period on purpose: a user's clock with real jitter keeps its exact times, so resampling sees
/// when each sample was taken, while a clean integer-millisecond clock stays cheap.
pub(crate) const REGULAR_TOLERANCE_PERIODS: f64 = 0.01;

/// The times of one recording: kept exactly, and dropped at the end when they are regular.
struct ExactAxis {
    rate_hz: f64,
    times: Vec<f64>,
    regular: bool,
}

impl ExactAxis {
    fn new(rate_hz: f64) -> Self {
        Self {
            rate_hz,
            times: Vec::with_capacity(4096),
            regular: true,
        }
    }

    fn previous(&self) -> f64 {
        self.times.last().copied().unwrap_or(f64::NEG_INFINITY)
    }

    fn push(&mut self, t: f64) -> TimeStep {
        if let Some(&prev) = self.times.last() {
            match t.total_cmp(&prev) {
                std::cmp::Ordering::Equal => return TimeStep::Repeated,
                std::cmp::Ordering::Less => return TimeStep::Backwards,
                std::cmp::Ordering::Greater => {}
            }
        }
        if self.regular {
            if let Some(&t0) = self.times.first() {
                let expected = t0 + self.times.len() as f64 / self.rate_hz;
                if (t - expected).abs() > REGULAR_TOLERANCE_PERIODS / self.rate_hz {
                    self.regular = false;
                }
            }
        }
        self.times.push(t);
        TimeStep::Ok
    }

    /// `(start_time_s, timestamps_s)`.
    fn finish(self) -> (f64, Option<Vec<f64>>) {
        let t0 = self.times.first().copied().unwrap_or(0.0);
        (t0, (!self.regular).then_some(self.times))
    }
}

/// One run of samples of one subject in a file.
struct Part {
    subject: Option<String>,
    signals: Vec<Vec<f32>>,
    labels: Vec<i32>,
    axis: ExactAxis,
}

/// What one file yields.
struct FileOut {
    parts: Vec<Part>,
    /// Local label names with the line of their first occurrence.
    label_names: Vec<(String, usize)>,
    channel_names: Vec<String>,
    sha256: Option<String>,
    repeated: usize,
}

fn parse_file(job: &Job, c: &CompiledSpec) -> Result<FileOut> {
    let path = job.path.as_path();
    let mut lines = LineReader::open(path, true)?;
    let mut layout = Layout::read(&mut lines, &c.layout)?;
    let nch = layout.chan_cols.len();
    let mut buf = Vec::new();
    let mut fields = Fields::default();
    let mut values = vec![0f32; nch];
    let mut parts: Vec<Part> = Vec::new();
    let mut label_names: Vec<(String, usize)> = Vec::new();
    let mut label_index: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut last_label: (Vec<u8>, i32) = (Vec::new(), -1);
    let mut repeated = 0usize;
    let mut file_label: Option<i32> = None;
    let new_part = |subject: Option<String>| Part {
        subject,
        signals: vec![Vec::with_capacity(4096); nch],
        labels: Vec::with_capacity(4096),
        axis: ExactAxis::new(c.rate_hz),
    };
    while let Some(no) = lines.next_line(&mut buf)? {
        let line = text::trim(&buf);
        let Some(row) = layout.parse(path, no, line, &mut fields, &mut values)? else {
            continue;
        };
        if let Some(sc) = layout.subject_col {
            let s = fields.get(line, sc);
            if s.is_empty() {
                return Err(DataError::parse(path, no, "empty subject field"));
            }
            let same = parts
                .last()
                .is_some_and(|p| p.subject.as_deref().map(str::as_bytes) == Some(s));
            if !same {
                parts.push(new_part(Some(String::from_utf8_lossy(s).into_owned())));
            }
        } else if parts.is_empty() {
            parts.push(new_part(job.subject.clone()));
        }
        let Some(part) = parts.last_mut() else {
            continue;
        };
        if let Some(t) = row.time_s {
            match part.axis.push(t) {
                TimeStep::Ok => {}
                TimeStep::Repeated => {
                    repeated += 1;
                    continue;
                }
                TimeStep::Backwards => {
                    return Err(DataError::parse(
                        path,
                        no,
                        format!(
                            "time goes backwards ({t} s after {} s)",
                            part.axis.previous()
                        ),
                    ));
                }
            }
        }
        for (s, &v) in part.signals.iter_mut().zip(&values) {
            s.push(v);
        }
        let mut intern = |l: &[u8], line: usize| -> i32 {
            if let Some(&i) = label_index.get(l) {
                return i;
            }
            let i = label_names.len() as i32;
            label_names.push((String::from_utf8_lossy(l).into_owned(), line));
            label_index.insert(l.to_vec(), i);
            i
        };
        let label = match layout.label_col {
            Some(lc) => {
                let l = fields.get(line, lc);
                if l.is_empty() || l.eq_ignore_ascii_case(b"nan") {
                    -1
                } else if l == last_label.0.as_slice() {
                    last_label.1
                } else {
                    let i = intern(l, no);
                    last_label = (l.to_vec(), i);
                    i
                }
            }
            None => match (&job.label, file_label) {
                (None, _) => -1,
                (Some(_), Some(i)) => i,
                (Some(l), None) => {
                    let i = intern(l.as_bytes(), no);
                    file_label = Some(i);
                    i
                }
            },
        };
        part.labels.push(label);
    }
    if parts.iter().all(|p| p.labels.is_empty()) {
        return Err(DataError::format(path, "no samples"));
    }
    Ok(FileOut {
        parts,
        label_names,
        channel_names: c.channel_names(&layout),
        sha256: lines.sha256_hex(),
        repeated,
    })
}

/// Numeric ids for subject names: the names themselves when all are integers; else their
/// trailing numbers when those are present and distinct (`P012` -> 12, `user7` -> 7); else the
/// rank in sorted order.
pub fn subject_ids(names: &BTreeSet<String>) -> BTreeMap<String, i64> {
    let ints: Option<Vec<i64>> = names.iter().map(|n| n.trim().parse().ok()).collect();
    if let Some(ids) = ints {
        return names.iter().cloned().zip(ids).collect();
    }
    let trailing = |n: &str| -> Option<i64> {
        let digits: String = n
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits.parse().ok()
    };
    if let Some(ids) = names
        .iter()
        .map(|n| trailing(n))
        .collect::<Option<Vec<i64>>>()
    {
        if ids.iter().collect::<BTreeSet<_>>().len() == ids.len() {
            return names.iter().cloned().zip(ids).collect();
        }
    }
    names
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, n)| (n, i as i64))
        .collect()
}

/// Reads every recording under `path` (a file, or a folder walked recursively; `.gz` files are
/// decompressed) as `spec` says.
///
/// One [`Recording`] per file (per run of one subject when there is a subject column), with the
/// spec's nominal rate and, when the time column strays more than 1 % of a period from the
/// nominal grid anywhere, every sample's exact timestamp. A row whose
/// time repeats the previous one is skipped and counted; time going backwards, a malformed or
/// non-finite field, or a label outside `classes` is an error naming file and line. Files left out
/// (other extensions, not matching `file_pattern`, not in the labels table) are counted in
/// [`RawDataset::skipped`]; a labels table row naming a missing file is an error naming that row.
/// Class names are `classes` or the sorted distinct labels; subject ids follow [`subject_ids`].
/// `source_checksums` holds every file's sha256 (by path relative to the folder), one entry
/// `<labels table> NAME` for the labels table and one `<csv spec>` for the spec, so a store's
/// fingerprint changes with any of them.
pub fn read_csv_folder(path: &Path, spec: &CsvFolderSpec) -> Result<RawDataset> {
    let mut c = spec.compile()?;
    let mut skipped = Vec::new();
    let mut table_sums = Vec::new();
    let (_root, jobs) = plan(path, spec, &mut c, &mut skipped, &mut table_sums)?;
    let outs: Vec<FileOut> = jobs
        .par_iter()
        .map(|j| parse_file(j, &c))
        .collect::<Result<_>>()?;

    // Classes: the spec's, or the sorted distinct labels of all files.
    let class_names: Vec<String> = match &spec.classes {
        Some(cl) => cl.clone(),
        None => outs
            .iter()
            .flat_map(|o| o.label_names.iter().map(|(n, _)| n.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let class_of: HashMap<&str, i32> = class_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as i32))
        .collect();
    let mut maps: Vec<Vec<i32>> = Vec::with_capacity(outs.len());
    for (j, o) in jobs.iter().zip(&outs) {
        let mut m = Vec::with_capacity(o.label_names.len());
        for (name, line) in &o.label_names {
            match class_of.get(name.as_str()) {
                Some(&i) => m.push(i),
                None => {
                    return Err(DataError::parse(
                        &j.path,
                        *line,
                        format!(
                            "label `{name}` is not one of the spec's classes ({})",
                            class_names.join(", ")
                        ),
                    ))
                }
            }
        }
        maps.push(m);
    }

    let subject_name = |j: &Job, p: &Part| -> String {
        p.subject
            .clone()
            .or_else(|| j.subject.clone())
            .unwrap_or_else(|| "0".to_string())
    };
    let names: BTreeSet<String> = jobs
        .iter()
        .zip(&outs)
        .flat_map(|(j, o)| o.parts.iter().map(move |p| subject_name(j, p)))
        .collect();
    let ids = subject_ids(&names);

    let mut recordings = Vec::new();
    let mut sums = Vec::new();
    let mut repeated = 0;
    for ((j, o), map) in jobs.iter().zip(outs).zip(maps) {
        repeated += o.repeated;
        if let Some(s) = o.sha256 {
            sums.push((j.rel.clone(), s));
        }
        let several = o.parts.len() > 1;
        for (k, p) in o.parts.into_iter().enumerate() {
            if p.labels.is_empty() {
                continue;
            }
            let name = subject_name(j, &p);
            let (start_time_s, timestamps_s) = if c.layout.time.is_some() {
                p.axis.finish()
            } else {
                (0.0, None)
            };
            let labels = p
                .labels
                .iter()
                .map(|&l| usize::try_from(l).map_or(-1, |l| map[l]))
                .collect();
            recordings.push(Recording {
                subject_id: ids[&name],
                subject_name: name,
                session: if several {
                    format!("{}#{}", j.rel, k + 1)
                } else {
                    j.rel.clone()
                },
                sample_rate_hz: c.rate_hz,
                timestamps_s,
                start_time_s,
                channel_names: o.channel_names.clone(),
                signals: p.signals,
                labels,
            });
            if let Some(rec) = recordings.last() {
                crate::plausible::check_timing(rec, &j.path, c.time_unit_name())?;
            }
        }
    }
    sums.extend(table_sums);
    sums.push((
        "<csv spec>".to_string(),
        sha256_hex(spec.canonical().as_bytes()),
    ));
    add_skip(&mut skipped, "CSV row with a repeated time", repeated);
    Ok(RawDataset {
        name: spec.name.clone(),
        class_names,
        recordings,
        source_checksums: sums,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, rel: &str) -> Option<(Option<String>, Option<String>)> {
        Pattern::parse(p).unwrap().matches(rel)
    }

    #[test]
    fn patterns_capture_label_and_subject_and_reject_others() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            caps("{subject}_{label}.csv", "a/s1_walk_fast.csv"),
            Some((s("walk_fast"), s("s1")))
        );
        assert_eq!(
            caps(
                "{label}/Accelerometer-{*}-{subject}.txt",
                "HMP/Climb_stairs/Accelerometer-2011-03-24-10-24-39-climb_stairs-f1.txt"
            ),
            Some((s("Climb_stairs"), s("f1")))
        );
        assert_eq!(
            caps("{subject}/{*}.csv", "p07/day1.csv"),
            Some((None, s("p07")))
        );
        assert_eq!(caps("{subject}_{label}.csv", "walk.csv"), None);
        assert_eq!(caps("{subject}/{label}.csv", "x.csv"), None);
        assert!(Pattern::parse("{who}.csv").is_err());
        assert!(Pattern::parse("{label}{subject}.csv").is_err());
    }

    #[test]
    fn subject_ids_use_integers_then_trailing_numbers_then_ranks() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let ids = subject_ids(&set(&["1600", "1601"]));
        assert_eq!(ids["1601"], 1601);
        let ids = subject_ids(&set(&["P012", "P003"]));
        assert_eq!((ids["P003"], ids["P012"]), (3, 12));
        let ids = subject_ids(&set(&["f1", "m1", "m2"]));
        assert_eq!((ids["f1"], ids["m1"], ids["m2"]), (0, 1, 2));
    }

    #[test]
    fn spec_rejects_two_label_sources_and_names_without_header() {
        let mut s = CsvFolderSpec::new(vec![CsvColumn::Index(0)], 50.0);
        s.label_column = Some(CsvColumn::Index(1));
        s.file_pattern = Some("{label}.csv".into());
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("label_column and file_pattern"), "{e}");
        let mut s = CsvFolderSpec::new(vec![CsvColumn::Name("x".into())], 50.0);
        s.header = false;
        assert!(s.validate().unwrap_err().to_string().contains("header"));
    }
}
