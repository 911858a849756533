//! A continuous recording as a reader produces it: channels in physical units (g, rad/s),
//! per-sample labels, and the subject it belongs to.

/// One continuous recording of one subject (one file, experiment or session).
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// Numeric subject id, unique within the dataset.
    pub subject_id: i64,
    /// The subject as the dataset names it (e.g. `"1600"`, `"f1"`, `"user03"`).
    pub subject_name: String,
    /// Where it came from (file name or experiment id), for messages and summaries.
    pub session: String,
    /// Nominal sample rate in Hz (the true rate when `timestamps_s` is `None`).
    pub sample_rate_hz: f64,
    /// Per-sample times in seconds when the stream is irregular; `None` means regular sampling at
    /// `sample_rate_hz` starting at `start_time_s`.
    pub timestamps_s: Option<Vec<f64>>,
    /// Time of the first sample in seconds (dataset-specific origin).
    pub start_time_s: f64,
    /// Channel names, e.g. `["acc_x", "acc_y", "acc_z"]`.
    pub channel_names: Vec<String>,
    /// Channel-major samples: `signals[c][i]` is channel `c` at sample `i`; accelerometer in g
    /// (gravity included), gyroscope in rad/s.
    pub signals: Vec<Vec<f32>>,
    /// Per-sample class index into [`RawDataset::class_names`], `-1` for unlabelled samples.
    pub labels: Vec<i32>,
}

impl Recording {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the recording has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of channels.
    pub fn num_channels(&self) -> usize {
        self.signals.len()
    }
}

/// Rows or files a reader skipped on purpose, counted and reported (never silently dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkipReport {
    /// Why they were skipped, e.g. `"NaN in hand accelerometer"`.
    pub reason: String,
    /// How many rows (or files) were skipped for this reason.
    pub count: usize,
}

/// A whole raw dataset as read from disk.
#[derive(Clone, Debug, PartialEq)]
pub struct RawDataset {
    /// Short name, e.g. `"wisdm2019_watch_accel"`.
    pub name: String,
    /// Class names; `Recording::labels` index into this.
    pub class_names: Vec<String>,
    /// The recordings.
    pub recordings: Vec<Recording>,
    /// `(file name, sha256 hex)` of every source file read.
    pub source_checksums: Vec<(String, String)>,
    /// What was skipped and why.
    pub skipped: Vec<SkipReport>,
}
