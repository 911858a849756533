//! Cutting resampled segments into fixed-length windows, labelling each window by majority with a
//! purity threshold, and the in-memory [`WindowSet`] that the store, splits and batches work on.
//!
//! Labelling rule (documented policy): a window takes the most frequent class among its samples
//! when that class covers at least `label_purity` of *all* its samples (unlabelled samples count
//! in the denominator). A window whose samples are all unlabelled is unlabelled (`-1`). Any other
//! window is *impure*: by default ([`ImpurePolicy::Unlabel`]) it is kept for pretraining with label
//! `-1`; with [`ImpurePolicy::Drop`] it is dropped. Either way it is counted in the summary.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::resample::{config_err, Segment};

/// What happens to a window that fails the purity threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImpurePolicy {
    /// Keep it with label `-1` (usable for pretraining).
    #[default]
    Unlabel,
    /// Drop it.
    Drop,
}

/// Windowing settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Window length in seconds (must be a whole number of samples at the target rate).
    pub window_secs: f64,
    /// Step between window starts in seconds (whole number of samples; `< window_secs` overlaps).
    pub hop_secs: f64,
    /// Fraction of a window's samples the majority class must cover, in (0, 1].
    pub label_purity: f64,
    /// What to do with windows failing the purity threshold.
    pub impure: ImpurePolicy,
    /// Whether windows without a label are kept (for pretraining) or dropped.
    pub keep_unlabelled: bool,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            window_secs: 10.0,
            hop_secs: 10.0,
            label_purity: 0.8,
            impure: ImpurePolicy::Unlabel,
            keep_unlabelled: true,
        }
    }
}

impl WindowConfig {
    /// Checks the fields that do not depend on the rate; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if !(self.window_secs.is_finite() && self.window_secs > 0.0) {
            return Err(config_err(
                "window_secs",
                format!("must be a finite duration > 0 s, got {}", self.window_secs),
            ));
        }
        if !(self.hop_secs.is_finite() && self.hop_secs > 0.0) {
            return Err(config_err(
                "hop_secs",
                format!("must be a finite duration > 0 s, got {}", self.hop_secs),
            ));
        }
        if !(self.label_purity > 0.0 && self.label_purity <= 1.0) {
            return Err(config_err(
                "label_purity",
                format!("must lie in (0, 1], got {}", self.label_purity),
            ));
        }
        Ok(())
    }

    /// `(window, hop)` in samples at `rate_hz`; both must be whole numbers of samples, at least 1.
    pub fn samples(&self, rate_hz: f64) -> Result<(usize, usize)> {
        self.validate()?;
        let whole = |field: &str, secs: f64| -> Result<usize> {
            let x = secs * rate_hz;
            let r = x.round();
            if (x - r).abs() > 1e-6 * x.max(1.0) || r < 1.0 {
                return Err(config_err(
                    field,
                    format!(
                        "{secs} s at {rate_hz} Hz is {x} samples; it must be a whole number >= 1"
                    ),
                ));
            }
            Ok(r as usize)
        };
        Ok((
            whole("window_secs", self.window_secs)?,
            whole("hop_secs", self.hop_secs)?,
        ))
    }
}

/// The label decision for one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowLabel {
    /// A class that passed the purity threshold.
    Class(i32),
    /// All samples unlabelled.
    Unlabelled,
    /// Mixed labels below the purity threshold.
    Impure,
}

/// Decides the label of a window from its per-sample labels (see the module docs). Ties between
/// classes go to the smaller class index.
pub fn window_label(labels: &[i32], purity: f64) -> WindowLabel {
    let Some(&first) = labels.first() else {
        return WindowLabel::Unlabelled;
    };
    if labels.iter().all(|&l| l == first) {
        return if first < 0 {
            WindowLabel::Unlabelled
        } else {
            WindowLabel::Class(first)
        };
    }
    let mut counts: std::collections::BTreeMap<i32, usize> = std::collections::BTreeMap::new();
    for &l in labels.iter().filter(|&&l| l >= 0) {
        *counts.entry(l).or_default() += 1;
    }
    let mut best: Option<(i32, usize)> = None;
    for (&l, &c) in &counts {
        if best.is_none_or(|(_, bc)| c > bc) {
            best = Some((l, c));
        }
    }
    match best {
        None => WindowLabel::Unlabelled,
        Some((l, c)) if c as f64 >= purity * labels.len() as f64 - 1e-9 => WindowLabel::Class(l),
        Some(_) => WindowLabel::Impure,
    }
}

/// Counts from cutting windows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// Windows kept.
    pub kept: usize,
    /// Impure windows kept with label `-1` ([`ImpurePolicy::Unlabel`]).
    pub impure_unlabelled: usize,
    /// Impure windows dropped ([`ImpurePolicy::Drop`]).
    pub impure_dropped: usize,
    /// Unlabelled windows dropped (`keep_unlabelled = false`).
    pub unlabelled_dropped: usize,
    /// Segments shorter than one window (no window could be cut).
    pub short_segments: usize,
    /// Samples in those segments.
    pub short_segment_samples: usize,
    /// Samples at the ends of segments that no window covers.
    pub tail_samples: usize,
}

impl WindowStats {
    /// Adds another set of counts.
    pub fn add(&mut self, o: &WindowStats) {
        self.kept += o.kept;
        self.impure_unlabelled += o.impure_unlabelled;
        self.impure_dropped += o.impure_dropped;
        self.unlabelled_dropped += o.unlabelled_dropped;
        self.short_segments += o.short_segments;
        self.short_segment_samples += o.short_segment_samples;
        self.tail_samples += o.tail_samples;
    }
}

/// One window cut from a segment: where it starts and its label (`-1` = unlabelled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowCut {
    /// Offset of the first sample in the segment.
    pub offset: usize,
    /// Class index or `-1`.
    pub label: i64,
}

/// Cuts `seg` into windows of `window` samples every `hop` samples and labels them.
pub fn cut_windows(
    seg: &Segment,
    window: usize,
    hop: usize,
    cfg: &WindowConfig,
) -> (Vec<WindowCut>, WindowStats) {
    let mut stats = WindowStats::default();
    let n = seg.len();
    if window == 0 || hop == 0 || n < window {
        stats.short_segments = 1;
        stats.short_segment_samples = n;
        return (Vec::new(), stats);
    }
    let count = (n - window) / hop + 1;
    stats.tail_samples = n - ((count - 1) * hop + window);
    let mut cuts = Vec::with_capacity(count);
    for w in 0..count {
        let offset = w * hop;
        let label = match window_label(&seg.labels[offset..offset + window], cfg.label_purity) {
            WindowLabel::Class(c) => i64::from(c),
            WindowLabel::Unlabelled => {
                if !cfg.keep_unlabelled {
                    stats.unlabelled_dropped += 1;
                    continue;
                }
                -1
            }
            WindowLabel::Impure => match cfg.impure {
                ImpurePolicy::Drop => {
                    stats.impure_dropped += 1;
                    continue;
                }
                ImpurePolicy::Unlabel if !cfg.keep_unlabelled => {
                    stats.impure_unlabelled += 1;
                    stats.unlabelled_dropped += 1;
                    continue;
                }
                ImpurePolicy::Unlabel => {
                    stats.impure_unlabelled += 1;
                    -1
                }
            },
        };
        cuts.push(WindowCut { offset, label });
    }
    stats.kept = cuts.len();
    (cuts, stats)
}

/// Windows in memory, the layout of the HDF5 store: `x` is `(N, C, L)` row-major f32.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSet {
    /// Dataset name.
    pub dataset: String,
    /// Sample rate of the windows in Hz.
    pub sample_rate_hz: f64,
    /// Channels per window (`C`).
    pub channels: usize,
    /// Samples per window (`L`).
    pub window_len: usize,
    /// Channel names (`C` of them).
    pub channel_names: Vec<String>,
    /// Class names; `y` indexes into them.
    pub class_names: Vec<String>,
    /// `(file name, sha256 hex)` of the raw source files.
    pub source_checksums: Vec<(String, String)>,
    /// Samples, `(N, C, L)` row-major.
    pub x: Vec<f32>,
    /// Labels, `-1` = unlabelled.
    pub y: Vec<i64>,
    /// Subject id of each window.
    pub subject: Vec<i64>,
    /// Start time of each window in seconds (the recording's time origin).
    pub start_time_s: Vec<f64>,
}

impl WindowSet {
    /// An empty set with the given layout.
    pub fn empty(
        dataset: impl Into<String>,
        sample_rate_hz: f64,
        channel_names: Vec<String>,
        window_len: usize,
        class_names: Vec<String>,
    ) -> Self {
        Self {
            dataset: dataset.into(),
            sample_rate_hz,
            channels: channel_names.len(),
            window_len,
            channel_names,
            class_names,
            source_checksums: Vec::new(),
            x: Vec::new(),
            y: Vec::new(),
            subject: Vec::new(),
            start_time_s: Vec::new(),
        }
    }

    /// Number of windows `N`.
    pub fn num_windows(&self) -> usize {
        self.y.len()
    }

    /// Elements per window (`C * L`).
    pub fn window_size(&self) -> usize {
        self.channels * self.window_len
    }

    /// Window `i` as `(C, L)` row-major. Panics when `i >= N` (like slice indexing).
    pub fn window(&self, i: usize) -> &[f32] {
        let s = self.window_size();
        &self.x[i * s..(i + 1) * s]
    }

    /// Checks that all arrays agree with `N`, `C` and `L` and labels are in range.
    pub fn validate(&self) -> Result<()> {
        let n = self.y.len();
        let bad = |field: &str, msg: String| Err(config_err(field, msg));
        if self.channel_names.len() != self.channels {
            return bad(
                "channel_names",
                format!(
                    "{} names for {} channels",
                    self.channel_names.len(),
                    self.channels
                ),
            );
        }
        if self.x.len() != n * self.window_size() {
            return bad(
                "x",
                format!(
                    "{} values, expected N*C*L = {}*{}*{}",
                    self.x.len(),
                    n,
                    self.channels,
                    self.window_len
                ),
            );
        }
        if self.subject.len() != n {
            return bad(
                "subject",
                format!("{} entries for {} windows", self.subject.len(), n),
            );
        }
        if self.start_time_s.len() != n {
            return bad(
                "start_time_s",
                format!("{} entries for {} windows", self.start_time_s.len(), n),
            );
        }
        let k = self.class_names.len() as i64;
        if let Some((i, &l)) = self.y.iter().enumerate().find(|(_, &l)| l < -1 || l >= k) {
            return bad("y", format!("label {l} of window {i} outside -1..{k}"));
        }
        Ok(())
    }

    /// The windows at `indices` (in that order) as a new set.
    pub fn subset(&self, indices: &[usize]) -> Result<WindowSet> {
        let n = self.num_windows();
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            return Err(config_err(
                "indices",
                format!("index {i} out of range for {n} windows"),
            ));
        }
        let mut out = WindowSet {
            x: Vec::with_capacity(indices.len() * self.window_size()),
            y: Vec::with_capacity(indices.len()),
            subject: Vec::with_capacity(indices.len()),
            start_time_s: Vec::with_capacity(indices.len()),
            ..WindowSet::empty(
                self.dataset.clone(),
                self.sample_rate_hz,
                self.channel_names.clone(),
                self.window_len,
                self.class_names.clone(),
            )
        };
        out.source_checksums = self.source_checksums.clone();
        for &i in indices {
            out.x.extend_from_slice(self.window(i));
            out.y.push(self.y[i]);
            out.subject.push(self.subject[i]);
            out.start_time_s.push(self.start_time_s[i]);
        }
        Ok(out)
    }
}
