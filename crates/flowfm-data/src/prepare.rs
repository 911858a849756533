//! From a [`RawDataset`] to windows: configuration, the parallel `prepare` pipeline, its summary,
//! and fingerprint-checked reuse of a prepared HDF5 store.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::plausible::{clip_accel, first_over_range, timing_problem, AccelLimit, OverRange};
use crate::resample::{
    config_err, resample_channels, validate_recording, ResampleConfig, ResampleStats,
};
use crate::store::{write_store, WindowStore};
use crate::window::{cut_windows, ImpurePolicy, WindowConfig, WindowSet, WindowStats};
use crate::{DataError, RawDataset, Recording, SkipReport};

/// Version of the preprocessing code; bump it whenever the output for the same input changes.
/// It is part of every store's fingerprint, so stale stores are rebuilt.
pub const PREPROCESSING_VERSION: i64 = 1;

/// Everything that decides how a raw dataset becomes windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepareConfig {
    /// Resampling.
    pub resample: ResampleConfig,
    /// Windowing and labelling.
    pub window: WindowConfig,
    /// Channels to keep, by name, in this order; `None` keeps all channels, which must then be the
    /// same (same names, same order) in every recording.
    pub channels: Option<Vec<String>>,
    /// The plausibility bound on accelerometer channels (error or counted clip).
    pub accel: AccelLimit,
}

impl PrepareConfig {
    /// Checks every field; the error names it with its section (e.g. `window.hop_secs`).
    pub fn validate(&self) -> Result<()> {
        let prefix = |section: &str, e: DataError| match e {
            DataError::Config { field, msg } => DataError::Config {
                field: format!("{section}.{field}"),
                msg,
            },
            other => other,
        };
        self.resample
            .validate()
            .map_err(|e| prefix("resample", e))?;
        self.window
            .samples(self.resample.target_rate_hz)
            .map_err(|e| prefix("window", e))?;
        self.accel
            .validate()
            .map_err(|msg| config_err("accel.max_abs_g", msg))?;
        if let Some(ch) = &self.channels {
            if ch.is_empty() {
                return Err(config_err("channels", "must name at least one channel"));
            }
            for (i, a) in ch.iter().enumerate() {
                if ch[..i].contains(a) {
                    return Err(config_err("channels", format!("{a:?} is listed twice")));
                }
            }
        }
        Ok(())
    }

    /// `(window, hop)` in samples at the target rate.
    pub fn window_samples(&self) -> Result<(usize, usize)> {
        self.validate()?;
        self.window.samples(self.resample.target_rate_hz)
    }

    /// A stable, readable rendering of every field that changes the output (floats in round-trip
    /// form), used for the fingerprint and stored in the HDF5 file. The acceleration bound appears
    /// only when it clips (as an error it never changes a written store), and the memory bound of
    /// the resampler never (it changes nothing written).
    pub fn canonical(&self) -> String {
        let r = &self.resample;
        let w = &self.window;
        let impure = match w.impure {
            ImpurePolicy::Unlabel => "unlabel",
            ImpurePolicy::Drop => "drop",
        };
        let channels = match &self.channels {
            None => "all".to_string(),
            Some(c) => format!("{c:?}"),
        };
        format!(
            "resample.target_rate_hz={:?}\nresample.max_gap_s={:?}\nresample.passband_frac={:?}\n\
             resample.stopband_db={:?}\nwindow.window_secs={:?}\nwindow.hop_secs={:?}\n\
             window.label_purity={:?}\nwindow.impure={impure}\nwindow.keep_unlabelled={}\n\
             channels={channels}\n",
            r.target_rate_hz,
            r.max_gap_s,
            r.passband_frac,
            r.stopband_db,
            w.window_secs,
            w.hop_secs,
            w.label_purity,
            w.keep_unlabelled
        ) + &match self.accel.over_range {
            OverRange::Error => String::new(),
            OverRange::Clip => format!("accel.clip_at_g={:?}\n", self.accel.max_abs_g),
        }
    }
}

/// Windows of one subject in a [`PrepareSummary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectSummary {
    /// Subject id.
    pub subject_id: i64,
    /// The dataset's name for the subject.
    pub subject_name: String,
    /// Windows kept.
    pub windows: usize,
    /// Of them, windows with a class label.
    pub labelled: usize,
}

/// What `prepare` produced and what it left out, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct PrepareSummary {
    /// Dataset name.
    pub dataset: String,
    /// Output rate in Hz.
    pub sample_rate_hz: f64,
    /// Samples per window.
    pub window_len: usize,
    /// Class names.
    pub class_names: Vec<String>,
    /// Recordings read.
    pub recordings: usize,
    /// Contiguous segments after splitting at gaps.
    pub segments: usize,
    /// Per subject, ordered by id.
    pub subjects: Vec<SubjectSummary>,
    /// Windows kept per class (same order as `class_names`).
    pub windows_per_class: Vec<usize>,
    /// Windows kept with label `-1` (unlabelled or impure-unlabelled).
    pub unlabelled_windows: usize,
    /// Cleaning counts over all recordings.
    pub resample: ResampleStats,
    /// Windowing counts over all segments.
    pub windowing: WindowStats,
    /// What the reader skipped.
    pub reader_skipped: Vec<SkipReport>,
    /// Accelerometer samples clipped to `±accel.max_abs_g` (only with `over_range = clip`).
    pub clipped_accel_samples: usize,
}

impl PrepareSummary {
    /// Total windows kept.
    pub fn windows(&self) -> usize {
        self.windowing.kept
    }

    /// Subjects that have recordings but no window (all too short, dropped or unlabelled).
    pub fn empty_subjects(&self) -> Vec<&SubjectSummary> {
        self.subjects.iter().filter(|s| s.windows == 0).collect()
    }

    /// Total rows, files and samples the reader skipped, over every reason.
    pub fn reader_skipped_total(&self) -> usize {
        self.reader_skipped.iter().map(|s| s.count).sum()
    }

    /// An error when the dataset or any subject has no window, unless `allow_empty` (the CLI's
    /// `--allow-empty`): a run that produced nothing for someone must not pass silently. The
    /// error names the dataset and the subjects.
    pub fn check_nonempty(&self, allow_empty: bool) -> Result<()> {
        if allow_empty {
            return Ok(());
        }
        let empty = self.empty_subjects();
        if self.windows() > 0 && empty.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = empty
            .iter()
            .map(|s| format!("{} (id {})", s.subject_name, s.subject_id))
            .collect();
        let msg = if self.windows() == 0 {
            format!(
                "no windows at all from {} recordings of {} subjects",
                self.recordings,
                self.subjects.len()
            )
        } else {
            format!(
                "{} of {} subjects have no window: {}",
                empty.len(),
                self.subjects.len(),
                names.join(", ")
            )
        };
        Err(DataError::Recording {
            dataset: self.dataset.clone(),
            session: "(all)".into(),
            msg: format!("{msg}; see the summary for what was left out (allow with --allow-empty)"),
        })
    }
}

impl fmt::Display for PrepareSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |samples: usize| samples as f64 / self.sample_rate_hz;
        writeln!(
            f,
            "dataset {}: {} windows of {} samples at {} Hz from {} recordings ({} segments), {} subjects",
            self.dataset,
            self.windows(),
            self.window_len,
            self.sample_rate_hz,
            self.recordings,
            self.segments,
            self.subjects.len()
        )?;
        writeln!(f)?;
        let w = self
            .class_names
            .iter()
            .map(String::len)
            .chain(["(unlabelled)".len(), "class".len()])
            .max()
            .unwrap_or(5);
        writeln!(f, "{:<w$} {:>10}", "class", "windows")?;
        for (name, n) in self.class_names.iter().zip(&self.windows_per_class) {
            writeln!(f, "{name:<w$} {n:>10}")?;
        }
        writeln!(f, "{:<w$} {:>10}", "(unlabelled)", self.unlabelled_windows)?;
        writeln!(f)?;
        let sw = self
            .subjects
            .iter()
            .map(|s| s.subject_name.len())
            .chain(["subject".len()])
            .max()
            .unwrap_or(7);
        writeln!(
            f,
            "{:>8} {:<sw$} {:>10} {:>10}",
            "id", "subject", "windows", "labelled"
        )?;
        for s in &self.subjects {
            writeln!(
                f,
                "{:>8} {:<sw$} {:>10} {:>10}",
                s.subject_id, s.subject_name, s.windows, s.labelled
            )?;
        }
        writeln!(f)?;
        writeln!(f, "{:<44} {:>12}", "left out", "count")?;
        let ws = &self.windowing;
        let rs = &self.resample;
        let rows: Vec<(String, String)> = vec![
            (
                "impure windows kept as unlabelled (-1)".into(),
                ws.impure_unlabelled.to_string(),
            ),
            (
                "impure windows dropped".into(),
                ws.impure_dropped.to_string(),
            ),
            (
                "unlabelled windows dropped".into(),
                ws.unlabelled_dropped.to_string(),
            ),
            (
                "segments shorter than a window".into(),
                format!(
                    "{} ({:.1} s)",
                    ws.short_segments,
                    secs(ws.short_segment_samples)
                ),
            ),
            (
                "segment tails not covered (s)".into(),
                format!("{:.1}", secs(ws.tail_samples)),
            ),
            (
                "gaps split (total s)".into(),
                format!("{} ({:.1} s)", rs.gaps, rs.gap_s),
            ),
            (
                "source samples with NaN/inf".into(),
                rs.non_finite_samples.to_string(),
            ),
            (
                "repeated timestamps merged".into(),
                rs.duplicate_timestamps.to_string(),
            ),
            (
                "out-of-order samples sorted".into(),
                rs.out_of_order_samples.to_string(),
            ),
            (
                "accelerometer samples clipped".into(),
                self.clipped_accel_samples.to_string(),
            ),
            (
                "subjects without any window".into(),
                self.empty_subjects().len().to_string(),
            ),
        ];
        for (k, v) in rows {
            writeln!(f, "{k:<44} {v:>12}")?;
        }
        for s in &self.reader_skipped {
            writeln!(f, "{:<44} {:>12}", format!("reader: {}", s.reason), s.count)?;
        }
        Ok(())
    }
}

/// Output of one recording.
struct RecordingOut {
    x: Vec<f32>,
    y: Vec<i64>,
    start: Vec<f64>,
    segments: usize,
    resample: ResampleStats,
    windowing: WindowStats,
    clipped_accel: usize,
}

fn channel_indices(raw: &RawDataset, rec: &Recording, cfg: &PrepareConfig) -> Result<Vec<usize>> {
    let err = |msg: String| DataError::Recording {
        dataset: raw.name.clone(),
        session: rec.session.clone(),
        msg,
    };
    match &cfg.channels {
        Some(names) => names
            .iter()
            .map(|n| {
                rec.channel_names
                    .iter()
                    .position(|c| c == n)
                    .ok_or_else(|| {
                        err(format!(
                            "has no channel {n:?} (it has {:?})",
                            rec.channel_names
                        ))
                    })
            })
            .collect(),
        None => {
            let first = &raw.recordings[0].channel_names;
            if &rec.channel_names != first {
                return Err(err(format!(
                    "channels {:?} differ from the first recording's {:?}; select channels in the config",
                    rec.channel_names, first
                )));
            }
            Ok((0..rec.num_channels()).collect())
        }
    }
}

fn prepare_recording(
    raw: &RawDataset,
    rec: &Recording,
    cfg: &PrepareConfig,
    window: usize,
    hop: usize,
) -> Result<RecordingOut> {
    validate_recording(rec, &raw.name, Some(raw.class_names.len()))?;
    let ch = channel_indices(raw, rec, cfg)?;
    let err = |msg: String| DataError::Recording {
        dataset: raw.name.clone(),
        session: rec.session.clone(),
        msg,
    };
    // Readers check timing against their dataset's nominal rate, with the unit they read; here
    // only the plausible range is checked (datasets may mix rates: WISDM has 100 Hz blocks),
    // which covers recordings from anywhere else.
    if let Some(msg) = timing_problem(rec, None, f64::INFINITY) {
        return Err(err(msg));
    }
    let limit = &cfg.accel;
    let mut clipped_rec = None;
    let mut clipped_accel = 0;
    if let Some((c, i, v)) = first_over_range(rec, &ch, limit.max_abs_g) {
        match limit.over_range {
            OverRange::Error => {
                let t = match &rec.timestamps_s {
                    Some(ts) => ts[i],
                    None => rec.start_time_s + i as f64 / rec.sample_rate_hz,
                };
                return Err(err(format!(
                    "channel {} sample {i} (t = {t} s) is {v:e} g, beyond the plausible \
                     +/-{} g (m/s^2 or milli-g read as g, or an overflowing value?); raise \
                     `accel.max_abs_g` or set `accel.over_range = \"clip\"` to clip and count",
                    rec.channel_names[c], limit.max_abs_g
                )));
            }
            OverRange::Clip => {
                let mut copy = rec.clone();
                clipped_accel = clip_accel(&mut copy, &ch, limit.max_abs_g);
                clipped_rec = Some(copy);
            }
        }
    }
    let rec = clipped_rec.as_ref().unwrap_or(rec);
    let res = resample_channels(rec, &ch, &cfg.resample).map_err(|e| match e {
        DataError::Recording { session, msg, .. } => DataError::Recording {
            dataset: raw.name.clone(),
            session,
            msg,
        },
        other => other,
    })?;
    let rate = cfg.resample.target_rate_hz;
    let mut out = RecordingOut {
        x: Vec::new(),
        y: Vec::new(),
        start: Vec::new(),
        segments: res.segments.len(),
        resample: res.stats,
        windowing: WindowStats::default(),
        clipped_accel,
    };
    for seg in &res.segments {
        let (cuts, stats) = cut_windows(seg, window, hop, &cfg.window);
        out.windowing.add(&stats);
        out.x.reserve(cuts.len() * ch.len() * window);
        for cut in cuts {
            for s in &seg.signals {
                out.x.extend_from_slice(&s[cut.offset..cut.offset + window]);
            }
            out.y.push(cut.label);
            out.start.push(seg.start_time_s + cut.offset as f64 / rate);
        }
    }
    Ok(out)
}

/// Resamples and windows every recording of `raw` (in parallel over recordings; the output order
/// is the recordings' order, whatever the scheduling).
pub fn prepare(raw: &RawDataset, cfg: &PrepareConfig) -> Result<(WindowSet, PrepareSummary)> {
    let (window, hop) = cfg.window_samples()?;
    let channel_names: Vec<String> = match (&cfg.channels, raw.recordings.first()) {
        (Some(c), _) => c.clone(),
        (None, Some(r)) => r.channel_names.clone(),
        (None, None) => Vec::new(),
    };
    let outs: Vec<RecordingOut> = raw
        .recordings
        .par_iter()
        .map(|rec| prepare_recording(raw, rec, cfg, window, hop))
        .collect::<Result<_>>()?;

    let total: usize = outs.iter().map(|o| o.y.len()).sum();
    let mut ws = WindowSet::empty(
        raw.name.clone(),
        cfg.resample.target_rate_hz,
        channel_names,
        window,
        raw.class_names.clone(),
    );
    ws.source_checksums = raw.source_checksums.clone();
    ws.x.reserve_exact(total * ws.window_size());
    ws.y.reserve_exact(total);
    ws.subject.reserve_exact(total);
    ws.start_time_s.reserve_exact(total);

    let mut summary = PrepareSummary {
        dataset: raw.name.clone(),
        sample_rate_hz: cfg.resample.target_rate_hz,
        window_len: window,
        class_names: raw.class_names.clone(),
        recordings: raw.recordings.len(),
        segments: 0,
        subjects: Vec::new(),
        windows_per_class: vec![0; raw.class_names.len()],
        unlabelled_windows: 0,
        resample: ResampleStats::default(),
        windowing: WindowStats::default(),
        reader_skipped: raw.skipped.clone(),
        clipped_accel_samples: 0,
    };
    let mut subjects: BTreeMap<i64, SubjectSummary> = BTreeMap::new();
    for rec in &raw.recordings {
        subjects
            .entry(rec.subject_id)
            .or_insert_with(|| SubjectSummary {
                subject_id: rec.subject_id,
                subject_name: rec.subject_name.clone(),
                windows: 0,
                labelled: 0,
            });
    }
    for (rec, o) in raw.recordings.iter().zip(outs) {
        summary.segments += o.segments;
        summary.resample.add(&o.resample);
        summary.windowing.add(&o.windowing);
        summary.clipped_accel_samples += o.clipped_accel;
        let s = subjects
            .get_mut(&rec.subject_id)
            .ok_or_else(|| config_err("subject", "internal: subject missing"))?;
        s.windows += o.y.len();
        for &l in &o.y {
            if l >= 0 {
                s.labelled += 1;
                summary.windows_per_class[l as usize] += 1;
            } else {
                summary.unlabelled_windows += 1;
            }
        }
        ws.x.extend_from_slice(&o.x);
        ws.subject
            .extend(std::iter::repeat_n(rec.subject_id, o.y.len()));
        ws.y.extend_from_slice(&o.y);
        ws.start_time_s.extend_from_slice(&o.start);
    }
    summary.subjects = subjects.into_values().collect();
    Ok((ws, summary))
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Fingerprint of raw inputs from their names and sha256 checksums (cheap: no data is read).
/// The order of `checksums` does not matter.
pub fn checksums_fingerprint(
    dataset: &str,
    class_names: &[String],
    checksums: &[(String, String)],
) -> String {
    let mut sorted: Vec<&(String, String)> = checksums.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    h.update(format!("dataset={dataset:?}\nclasses={class_names:?}\n"));
    for (f, s) in sorted {
        h.update(format!("{f:?}={s}\n"));
    }
    hex(h.finalize())
}

/// Fingerprint of a raw dataset from its full contents (for data without source checksums, e.g.
/// synthetic recordings).
pub fn content_fingerprint(raw: &RawDataset) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "dataset={:?}\nclasses={:?}\n",
        raw.name, raw.class_names
    ));
    for r in &raw.recordings {
        h.update(format!(
            "rec {} {:?} {:?} {:?} {:?} {:?} {}\n",
            r.subject_id,
            r.subject_name,
            r.session,
            r.sample_rate_hz,
            r.start_time_s,
            r.channel_names,
            r.len()
        ));
        if let Some(ts) = &r.timestamps_s {
            for t in ts {
                h.update(t.to_le_bytes());
            }
        }
        for s in &r.signals {
            for v in s {
                h.update(v.to_le_bytes());
            }
        }
        for l in &r.labels {
            h.update(l.to_le_bytes());
        }
    }
    hex(h.finalize())
}

/// Fingerprint of a prepared store: the inputs' fingerprint, the configuration and
/// [`PREPROCESSING_VERSION`].
pub fn store_fingerprint(inputs_fingerprint: &str, cfg: &PrepareConfig) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "flowfm-data preprocessing v{PREPROCESSING_VERSION}\ninputs={inputs_fingerprint}\n"
    ));
    h.update(cfg.canonical());
    hex(h.finalize())
}

/// A store from [`prepare_or_reuse`].
#[derive(Debug)]
pub struct Prepared {
    /// The opened store.
    pub store: WindowStore,
    /// Whether the existing file was reused (its fingerprint matched).
    pub reused: bool,
    /// Why an existing file was not reused (stale fingerprint, unreadable), if there was one.
    pub replaced_because: Option<String>,
    /// The summary, when the store was (re)built.
    pub summary: Option<PrepareSummary>,
    /// Temporary files of killed writers removed from the store's directory before writing.
    pub removed_temp_files: Vec<PathBuf>,
}

/// Whether [`prepare_store`] may reuse an existing store at the path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reuse {
    /// Reuse it when its fingerprint matches (the default; [`prepare_or_reuse`]).
    #[default]
    IfCurrent,
    /// Always rebuild (the CLI's `--force`); the old store stays in place, untouched, until the
    /// new one is complete and renamed over it.
    Never,
}

/// Opens the store at `path` when its recorded fingerprint matches `inputs_fingerprint` + `cfg`;
/// otherwise calls `build` (typically: read the raw dataset and [`prepare`] it), writes the result
/// atomically to `path` and opens it. Same as [`prepare_store`] with [`Reuse::IfCurrent`].
pub fn prepare_or_reuse<F>(
    inputs_fingerprint: &str,
    cfg: &PrepareConfig,
    path: &Path,
    build: F,
) -> Result<Prepared>
where
    F: FnOnce() -> Result<(WindowSet, PrepareSummary)>,
{
    prepare_store(inputs_fingerprint, cfg, path, Reuse::IfCurrent, build)
}

/// Builds the store at `path` unless `reuse` allows a current one to be reused.
///
/// The new store is written under a temporary name in the same directory and renamed over `path`
/// only once complete: when `build` fails (a parse error), the disk fills or the process is
/// killed, the old store at `path` is still there, unchanged. Before writing, temporary files that
/// killed writers left in that directory are removed (listed in
/// [`Prepared::removed_temp_files`]). Never delete the old store before calling this.
pub fn prepare_store<F>(
    inputs_fingerprint: &str,
    cfg: &PrepareConfig,
    path: &Path,
    reuse: Reuse,
    build: F,
) -> Result<Prepared>
where
    F: FnOnce() -> Result<(WindowSet, PrepareSummary)>,
{
    cfg.validate()?;
    let fingerprint = store_fingerprint(inputs_fingerprint, cfg);
    let mut replaced_because = None;
    if reuse == Reuse::Never && path.exists() {
        replaced_because = Some("a rebuild was forced".to_string());
    } else if path.exists() {
        match WindowStore::open(path) {
            Ok(store) if store.meta.fingerprint == fingerprint => {
                return Ok(Prepared {
                    store,
                    reused: true,
                    replaced_because: None,
                    summary: None,
                    removed_temp_files: Vec::new(),
                });
            }
            Ok(store) => {
                replaced_because = Some(format!(
                    "fingerprint {} does not match the current {}",
                    store.meta.fingerprint, fingerprint
                ));
            }
            Err(e) => replaced_because = Some(format!("unreadable: {e}")),
        }
    }
    let (ws, summary) = build()?;
    let (window, _) = cfg.window_samples()?;
    if ws.window_len != window
        || (ws.sample_rate_hz - cfg.resample.target_rate_hz).abs()
            > 1e-9 * cfg.resample.target_rate_hz
    {
        return Err(config_err(
            "build",
            format!(
                "built windows of {} samples at {} Hz, but the config asks for {} samples at {} Hz",
                ws.window_len, ws.sample_rate_hz, window, cfg.resample.target_rate_hz
            ),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let removed_temp_files = flowfm_core::fs::remove_stale_temp_files(dir)?;
    write_store(
        path,
        &ws,
        PREPROCESSING_VERSION,
        &fingerprint,
        &cfg.canonical(),
    )?;
    Ok(Prepared {
        store: WindowStore::open(path)?,
        reused: false,
        replaced_because,
        summary: Some(summary),
        removed_temp_files,
    })
}
