//! Streaming one long recording (days at 100 Hz) in bounded memory: read a CSV (or gzip) file
//! line by line, convert units, resample to the target rate with the same anti-aliasing as
//! [`prepare`](crate::prepare) (filter state carried across chunks), and yield fixed-length
//! windows `(C, L)` with their start and end times in batches.
//!
//! Every stage holds only what its next output needs: the time gridder one previous sample, the
//! resampler the kernel's support (plus a compaction slack), the windower one window plus one hop.
//! Nothing grows with the recording's length ([`RecordingStream::peak_buffered_samples`]).
//!
//! The result equals `read_csv_folder` + `prepare` on the same file (same segments, windows,
//! start times and labels; values within float rounding), with two documented differences where
//! the time column is irregular: `prepare` grids a segment whose median rate exceeds 1.05 times
//! the nominal rate at that median rate, whereas the stream always grids at the nominal `rate_hz`
//! (the median of a segment is not known until its end; give the true rate); and samples before
//! the clock's first deviation of more than 1 % of a period are placed exactly on the grid.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::readers::csv_folder::REGULAR_TOLERANCE_PERIODS;
use crate::readers::csv_rows::{Fields, Layout, LineReader, PlainLines};
use crate::readers::text;
use crate::readers::CsvFolderSpec;
use crate::resample::{LowpassKernel, ResampleConfig};
use crate::taps::{self, Taps};
use crate::window::{window_label, ImpurePolicy, WindowConfig, WindowLabel, WindowStats};

/// Resampled samples dropped from a buffer's front only once this many have been consumed (so
/// compaction is amortised).
const COMPACT_SAMPLES: usize = 8192;

/// Settings of a [`RecordingStream`].
#[derive(Clone, Debug, PartialEq)]
pub struct StreamConfig {
    /// Resampling, as for `prepare`.
    pub resample: ResampleConfig,
    /// Window length, hop and labelling, as for `prepare`.
    pub window: WindowConfig,
    /// Windows per batch (the last batch may be shorter).
    pub batch_windows: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            resample: ResampleConfig::default(),
            window: WindowConfig::default(),
            batch_windows: 256,
        }
    }
}

/// A batch of consecutive windows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowBatch {
    /// Samples, `(N, C, L)` row-major, in g / rad/s at the target rate.
    pub x: Vec<f32>,
    /// Time of each window's first sample in seconds (the recording's time origin).
    pub start_time_s: Vec<f64>,
    /// End of each window in seconds: start + `L / rate` (exclusive).
    pub end_time_s: Vec<f64>,
    /// Window label (majority with the purity rule of `prepare`) as an index into
    /// [`RecordingStream::class_names`]; `-1` unlabelled or impure.
    pub y: Vec<i64>,
    /// Channels `C`.
    pub channels: usize,
    /// Samples per window `L`.
    pub window_len: usize,
}

impl WindowBatch {
    /// Number of windows `N`.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether the batch holds no window.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Window `i` as `(C, L)` row-major. Panics when `i >= N` (like slice indexing).
    pub fn window(&self, i: usize) -> &[f32] {
        let s = self.channels * self.window_len;
        &self.x[i * s..(i + 1) * s]
    }
}

/// What a stream has read and cut so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// Lines read (header included).
    pub lines: usize,
    /// Samples accepted.
    pub samples: usize,
    /// Rows skipped because their time repeated the previous one.
    pub repeated_times: usize,
    /// Gaps longer than the limit, where the recording was split.
    pub gaps: usize,
    /// Total duration of those gaps in seconds.
    pub gap_s: f64,
    /// Contiguous segments started.
    pub segments: usize,
    /// Windowing counts (kept, impure, short segments, tails), as `prepare` reports them.
    pub windowing: WindowStats,
}

// ---------------------------------------------------------------- resampler

/// One phase of a rational-ratio kernel: the offset of its first tap and its normalised weights.
type PhaseTaps = (isize, Vec<f64>);

/// [`crate::resample`]'s band-limited rate conversion, fed sample by sample: output `j` is
/// computed, with the same weights in the same order, once every input it needs has arrived
/// (with a rational ratio, four outputs at a time, once the fourth's inputs are there); the
/// remaining outputs (whose kernel the end cuts) when the segment ends.
struct StreamResampler {
    channels: usize,
    /// f64 per buffered input frame ([`taps::stride`]: the channels padded to whole vectors).
    stride: usize,
    taps: Taps,
    passthrough: bool,
    fs_in: f64,
    fs_out: f64,
    step: f64,
    hw: f64,
    kernel: LowpassKernel,
    /// `(p, q, per-phase (offset of the first tap, normalised weights))`.
    phases: Option<(usize, usize, Vec<PhaseTaps>)>,
    /// Input frames, interleaved and widened to f64 once (exactly) on arrival: sample `i` of
    /// channel `c` at `(i - base) * stride + c`, padding lanes zero.
    buf: Vec<f64>,
    labels: Vec<i32>,
    /// Absolute index of `buf[..][0]`.
    base: usize,
    /// Inputs received in this segment.
    n_in: usize,
    /// Next output index.
    j: usize,
    /// Inputs the next output (or group of four) needs before it can be computed, cached so
    /// that most pushes skip [`StreamResampler::drain`].
    need: f64,
    weights: Vec<f64>,
    out: Vec<f32>,
    /// Four outputs' channels, output after output.
    out4: Vec<f32>,
    peak: usize,
}

/// Number of grid points at `rate` covering `[0, duration_s]` (as in [`crate::resample`]).
fn grid_len(duration_s: f64, rate: f64) -> usize {
    (duration_s * rate + 1e-9).floor() as usize + 1
}

/// `step` as `p / q` with a small denominator (as in [`crate::resample`]).
fn rational(step: f64) -> Option<(usize, usize)> {
    (1..=1000usize).find_map(|q| {
        let p = step * q as f64;
        let pr = p.round();
        ((p - pr).abs() <= 1e-9 * p.max(1.0) && pr >= 1.0).then_some((pr as usize, q))
    })
}

impl StreamResampler {
    fn new(channels: usize, fs_in: f64, cfg: &ResampleConfig) -> Self {
        let fs_out = cfg.target_rate_hz;
        let step = fs_in / fs_out;
        let passthrough = (fs_in - fs_out).abs() <= 1e-9 * fs_out;
        let ratio = rational(step);
        let mut kernel = LowpassKernel::design(fs_in, fs_out, cfg);
        if ratio.is_none() {
            kernel.tabulate();
        }
        let hw = kernel.half_width();
        let phases = ratio.map(|(p, q)| {
            let table = (0..q)
                .map(|r| {
                    let frac = r as f64 / q as f64;
                    let lo = (frac - hw).ceil() as isize;
                    let hi = (frac + hw).floor() as isize;
                    let mut w: Vec<f64> =
                        (lo..=hi).map(|k| kernel.exact(frac - k as f64)).collect();
                    let sum: f64 = w.iter().sum();
                    w.iter_mut().for_each(|x| *x /= sum);
                    (lo, w)
                })
                .collect();
            (p, q, table)
        });
        Self {
            channels,
            stride: taps::stride(channels),
            taps: Taps::new(),
            passthrough,
            fs_in,
            fs_out,
            step,
            hw,
            kernel,
            phases,
            buf: Vec::new(),
            labels: Vec::new(),
            base: 0,
            n_in: 0,
            j: 0,
            need: 0.0,
            weights: Vec::new(),
            out: vec![0.0; channels],
            out4: vec![0.0; 4 * channels],
            peak: 0,
        }
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.labels.clear();
        self.base = 0;
        self.n_in = 0;
        self.j = 0;
        self.need = 0.0;
    }

    fn buffered(&self) -> usize {
        self.labels.len()
    }

    /// Adds one input sample and emits every output that is now complete.
    fn push(&mut self, v: &[f32], label: i32, emit: &mut impl FnMut(&[f32], i32)) {
        if self.passthrough {
            emit(v, label);
            return;
        }
        if self.stride == 4 && self.channels <= 4 {
            // The usual case (up to four channels) as one fixed-size append.
            let mut frame = [0.0; 4];
            for (f, &x) in frame.iter_mut().zip(&v[..self.channels]) {
                *f = f64::from(x);
            }
            self.buf.extend_from_slice(&frame);
        } else {
            let at = self.buf.len();
            self.buf.resize(at + self.stride, 0.0);
            for (b, &x) in self.buf[at..].iter_mut().zip(&v[..self.channels]) {
                *b = f64::from(x);
            }
        }
        self.labels.push(label);
        self.n_in += 1;
        self.peak = self.peak.max(self.labels.len());
        if self.n_in as f64 >= self.need {
            self.drain(false, emit);
        }
    }

    /// Emits the outputs left at the end of a segment and resets.
    fn finish(&mut self, emit: &mut impl FnMut(&[f32], i32)) {
        if !self.passthrough && self.n_in > 0 {
            self.drain(true, emit);
        }
        self.reset();
    }

    /// Highest input index output `j` may touch (before the end clamps it).
    fn needed_hi(&self, j: usize) -> f64 {
        match &self.phases {
            Some((p, q, _)) => {
                let jp = j * p;
                self.needed_hi_at(jp / q, jp % q)
            }
            None => (j as f64 * self.step + self.hw).floor(),
        }
    }

    /// [`StreamResampler::needed_hi`] of the output at input position `base + r / q` (a
    /// rational ratio).
    fn needed_hi_at(&self, base: usize, r: usize) -> f64 {
        let Some((_, q, table)) = &self.phases else {
            return f64::NAN;
        };
        let (lo_off, w) = &table[r];
        let interior_hi = base as f64 + *lo_off as f64 + w.len() as f64 - 1.0;
        let u = base as f64 + r as f64 / *q as f64;
        interior_hi.max((u + self.hw).floor())
    }

    /// `(floor(i p / q), i p mod q)` for the four outputs `i = j..j + 4` of a rational ratio:
    /// one division, then steps of `p`.
    fn positions_of_four(&self, j: usize) -> [(usize, usize); 4] {
        let Some((p, q, _)) = &self.phases else {
            return [(0, 0); 4];
        };
        let (p, q) = (*p, *q);
        let jp = j * p;
        let mut at = (jp / q, jp % q);
        let mut out = [(0, 0); 4];
        for o in &mut out {
            *o = at;
            at.1 += p % q;
            at.0 += p / q + at.1 / q;
            at.1 %= q;
        }
        out
    }

    fn drain(&mut self, at_end: bool, emit: &mut impl FnMut(&[f32], i32)) {
        let n_in = self.n_in;
        let n_out = if at_end {
            grid_len((n_in - 1) as f64 / self.fs_in, self.fs_out)
        } else {
            0
        };
        loop {
            let j = self.j;
            if at_end {
                if j >= n_out {
                    break;
                }
            } else if self.phases.is_some() {
                // Wait for the inputs of four outputs, and compute them together when all four
                // are interior (else the first alone).
                let at = self.positions_of_four(j);
                self.need = at
                    .iter()
                    .map(|&(b, r)| self.needed_hi_at(b, r))
                    .fold(f64::NEG_INFINITY, f64::max)
                    + 1.0;
                if self.need > n_in as f64 {
                    break;
                }
                if let Some(labels) = self.compute_four(at, n_in) {
                    for (o, label_at) in labels.into_iter().enumerate() {
                        let l = self.labels[label_at.min(n_in - 1) - self.base];
                        let c = self.channels;
                        emit(&self.out4[o * c..(o + 1) * c], l);
                    }
                    self.j += 4;
                    continue;
                }
            } else {
                self.need = self.needed_hi(j) + 1.0;
                if self.need > n_in as f64 {
                    break;
                }
            }
            let label_at = self.compute(j, n_in);
            let l = self.labels[label_at.min(n_in - 1) - self.base];
            emit(&self.out, l);
            self.j += 1;
        }
        // Drop inputs no later output can touch.
        let keep_from = ((self.j as f64 * self.step - self.hw).floor() - 2.0).max(0.0) as usize;
        if keep_from > self.base + COMPACT_SAMPLES {
            let d = keep_from - self.base;
            self.buf.drain(..d * self.stride);
            self.labels.drain(..d);
            self.base = keep_from;
        }
    }

    /// Computes output `j` into `self.out` exactly as `resample::convert_rate` does; returns the
    /// absolute input index whose label it takes.
    fn compute(&mut self, j: usize, n_in: usize) -> usize {
        let last = (n_in - 1) as f64;
        let hw = self.hw;
        let base = self.base;
        let mut lo_w: Option<(usize, usize)> = None; // (lo, phase index) for an interior output
        let mut u = 0.0;
        let label_at;
        match &self.phases {
            Some((p, q, table)) => {
                let jp = j * p;
                let (b, r) = (jp / q, jp % q);
                let (lo_off, w) = &table[r];
                let lo = b as isize + lo_off;
                label_at = b + usize::from(2 * r >= *q);
                if lo >= 0 && (lo as usize) + w.len() <= n_in {
                    lo_w = Some((lo as usize, r));
                } else {
                    u = (b as f64 + r as f64 / *q as f64).min(last);
                }
            }
            None => {
                u = (j as f64 * self.step).min(last);
                label_at = u.round() as usize;
            }
        }
        let (lo, weights): (usize, &[f64]) = match (lo_w, &self.phases) {
            (Some((lo, r)), Some((_, _, table))) => (lo, &table[r].1),
            _ => {
                let lo = (u - hw).ceil().max(0.0) as usize;
                let hi = ((u + hw).floor().min(last)) as usize;
                self.weights.clear();
                let kernel = &self.kernel;
                self.weights
                    .extend((lo..=hi).map(|k| kernel.eval(u - k as f64)));
                let sum: f64 = self.weights.iter().sum();
                let inv = if sum.abs() > 1e-12 { 1.0 / sum } else { 0.0 };
                self.weights.iter_mut().for_each(|w| *w *= inv);
                (lo, &self.weights)
            }
        };
        let s = self.stride;
        let frames = &self.buf[(lo - base) * s..(lo - base + weights.len()) * s];
        self.taps.one(weights, frames, s, &mut self.out);
        label_at
    }

    /// Computes the four outputs at input positions `at` (`(base, r)`: [`StreamResampler::positions_of_four`])
    /// into `self.out4` when all four are interior outputs of a rational ratio whose inputs have
    /// arrived (each exactly as [`StreamResampler::compute`]
    /// computes it); returns the absolute input indices whose labels they take, or `None`.
    fn compute_four(&mut self, at: [(usize, usize); 4], n_in: usize) -> Option<[usize; 4]> {
        let (_, q, table) = self.phases.as_ref()?;
        let (s, base) = (self.stride, self.base);
        let mut label_at = [0usize; 4];
        let mut weights: [&[f64]; 4] = [&[]; 4];
        let mut frames: [&[f64]; 4] = [&[]; 4];
        for (o, &(b, r)) in at.iter().enumerate() {
            let (lo_off, w) = &table[r];
            let lo = b as isize + lo_off;
            if lo < 0 || (lo as usize) + w.len() > n_in {
                return None;
            }
            let lo = lo as usize;
            label_at[o] = b + usize::from(2 * r >= *q);
            weights[o] = w;
            frames[o] = &self.buf[(lo - base) * s..(lo - base + w.len()) * s];
        }
        self.taps.four(weights, frames, s, &mut self.out4);
        Some(label_at)
    }
}

// ---------------------------------------------------------------- windower

/// Cuts one segment's resampled samples into windows as [`crate::window::cut_windows`] does.
struct Windower {
    channels: usize,
    len: usize,
    hop: usize,
    rate_hz: f64,
    cfg: WindowConfig,
    buf: Vec<Vec<f32>>,
    labels: Vec<i32>,
    base: usize,
    n: usize,
    next: usize,
    seg_t0: f64,
    peak: usize,
    /// Most windows ever pending in the batch.
    batch_peak: usize,
}

impl Windower {
    fn buffered(&self) -> usize {
        self.labels.len()
    }

    fn start(&mut self, t0: f64) {
        self.buf.iter_mut().for_each(Vec::clear);
        self.labels.clear();
        self.base = 0;
        self.n = 0;
        self.next = 0;
        self.seg_t0 = t0;
    }

    fn push(&mut self, v: &[f32], label: i32, batch: &mut WindowBatch, stats: &mut WindowStats) {
        for (b, &x) in self.buf.iter_mut().zip(v) {
            b.push(x);
        }
        self.labels.push(label);
        self.n += 1;
        self.peak = self.peak.max(self.labels.len());
        while self.next + self.len <= self.n {
            let off = self.next - self.base;
            let label = match window_label(&self.labels[off..off + self.len], self.cfg.label_purity)
            {
                WindowLabel::Class(c) => Some(i64::from(c)),
                WindowLabel::Unlabelled => {
                    if self.cfg.keep_unlabelled {
                        Some(-1)
                    } else {
                        stats.unlabelled_dropped += 1;
                        None
                    }
                }
                WindowLabel::Impure => match self.cfg.impure {
                    ImpurePolicy::Drop => {
                        stats.impure_dropped += 1;
                        None
                    }
                    ImpurePolicy::Unlabel => {
                        stats.impure_unlabelled += 1;
                        if self.cfg.keep_unlabelled {
                            Some(-1)
                        } else {
                            stats.unlabelled_dropped += 1;
                            None
                        }
                    }
                },
            };
            if let Some(y) = label {
                for c in 0..self.channels {
                    batch.x.extend_from_slice(&self.buf[c][off..off + self.len]);
                }
                let start = self.seg_t0 + self.next as f64 / self.rate_hz;
                batch.start_time_s.push(start);
                batch
                    .end_time_s
                    .push(start + self.len as f64 / self.rate_hz);
                batch.y.push(y);
                self.batch_peak = self.batch_peak.max(batch.len());
                stats.kept += 1;
            }
            self.next += self.hop;
        }
        let consumed = self.next.min(self.n) - self.base;
        if consumed >= self.len.max(COMPACT_SAMPLES) {
            for b in &mut self.buf {
                b.drain(..consumed);
            }
            self.labels.drain(..consumed);
            self.base += consumed;
        }
    }

    fn finish(&mut self, stats: &mut WindowStats) {
        if self.n == 0 {
            return;
        }
        if self.n < self.len {
            stats.short_segments += 1;
            stats.short_segment_samples += self.n;
        } else {
            let count = (self.n - self.len) / self.hop + 1;
            stats.tail_samples += self.n - ((count - 1) * self.hop + self.len);
        }
        self.start(0.0);
    }
}

// ---------------------------------------------------------------- the stream

/// Time handling of the current recording: regular while every sample lies within 1 % of a period
/// of `t0 + i / rate` (its time is then taken as exactly that), explicit from the first one that
/// does not. (The CSV folder reader keeps the exact times of that regular prefix instead; the two
/// differ by at most 1 % of a period there.)
struct Clock {
    has_column: bool,
    rate_hz: f64,
    t0: f64,
    n: usize,
    prev_raw: f64,
    explicit: bool,
}

/// The gridder of the current segment: linear interpolation of explicit times onto
/// `seg_t0 + k / rate` (as `resample`'s `grid_linear`), a pass-through while the clock is regular.
struct Gridder {
    seg_t0: f64,
    k: usize,
    prev_t: f64,
    prev_v: Vec<f32>,
    prev_l: i32,
    active: bool,
    tmp: Vec<f32>,
}

/// Streams windows from one recording; see the module docs.
pub struct RecordingStream {
    lines: LineReader,
    layout: Layout,
    path: PathBuf,
    channel_names: Vec<String>,
    classes: Classes,
    cfg: StreamConfig,
    gap_limit_s: f64,
    clock: Clock,
    grid: Gridder,
    resampler: StreamResampler,
    windower: Windower,
    batch: WindowBatch,
    stats: StreamStats,
    fields: Fields,
    values: Vec<f32>,
    /// A block of plain lines parsed straight from the reader's buffer.
    plain: PlainLines,
    /// Their classes.
    plain_labels: Vec<i32>,
    /// The last short label field of a block (its bytes as a word, its length) and its class.
    plain_key: Option<((u64, usize), i32)>,
    done: bool,
    failed: bool,
    /// The first raw times (up to [`TIMING_PROBE_STEPS`] steps), for the plausibility check of
    /// the clock; `None` once checked.
    timing_probe: Option<Vec<f64>>,
    time_unit: Option<&'static str>,
}

/// Lines [`RecordingStream::fill_plain`] parses in one block.
const PLAIN_BLOCK_LINES: usize = 128;

/// The classes met so far (or the spec's fixed list) and the label fields naming them.
struct Classes {
    names: Vec<String>,
    /// Only the spec's classes are allowed.
    fixed: bool,
    index: HashMap<Vec<u8>, i32>,
    /// The last label field and its class (labels come in long runs).
    last: (Vec<u8>, i32),
}

impl Classes {
    /// The class of label field `l` (trimmed) on line `line_no` of `path`: `-1` without one (no
    /// column, empty or `NaN`), a new class when the list is not fixed, else an error.
    fn id(&mut self, path: &Path, line_no: usize, l: Option<&[u8]>) -> Result<i32> {
        let Some(l) = l else {
            return Ok(-1);
        };
        if l.is_empty() || l.eq_ignore_ascii_case(b"nan") {
            Ok(-1)
        } else if l == self.last.0.as_slice() {
            Ok(self.last.1)
        } else if let Some(&i) = self.index.get(l) {
            self.last = (l.to_vec(), i);
            Ok(i)
        } else if self.fixed {
            Err(DataError::parse(
                path,
                line_no,
                format!(
                    "label `{}` is not one of the spec's classes ({})",
                    String::from_utf8_lossy(l),
                    self.names.join(", ")
                ),
            ))
        } else {
            let i = self.names.len() as i32;
            self.names.push(String::from_utf8_lossy(l).into_owned());
            self.index.insert(l.to_vec(), i);
            Ok(i)
        }
    }
}

/// Steps of the time column checked against the nominal rate (as the readers check theirs).
const TIMING_PROBE_STEPS: usize = 4096;

impl RecordingStream {
    /// Opens `path` (plain or gzip) with the file part of `spec` (delimiter, header, channels,
    /// units, time, `label_column`, `classes`; the folder, table, pattern and subject settings do
    /// not apply to a single recording). A gzip file is decompressed on a second thread, a few
    /// 128 KiB chunks ahead of the parsing (which stays on the caller's thread).
    pub fn open(path: &Path, spec: &CsvFolderSpec, cfg: &StreamConfig) -> Result<Self> {
        Self::open_file(path, spec, cfg, true)
    }

    /// [`RecordingStream::open`], decompressing on the thread that calls
    /// [`RecordingStream::next_batch`] instead of a thread of its own: for callers that run the
    /// stream as jobs on a thread pool, where a busy extra thread would compete with the pool's
    /// workers for the cores.
    pub fn open_inline(path: &Path, spec: &CsvFolderSpec, cfg: &StreamConfig) -> Result<Self> {
        Self::open_file(path, spec, cfg, false)
    }

    fn open_file(
        path: &Path,
        spec: &CsvFolderSpec,
        cfg: &StreamConfig,
        gunzip_thread: bool,
    ) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let lines =
            LineReader::with_options(path.to_path_buf(), Box::new(file), false, gunzip_thread)?;
        Self::with_lines(lines, spec, cfg)
    }

    /// Streams from any reader (plain or gzip bytes, gzip decompressed on a second thread as for
    /// [`RecordingStream::open`]); `name` is used in messages.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        reader: Box<dyn Read + Send>,
        spec: &CsvFolderSpec,
        cfg: &StreamConfig,
    ) -> Result<Self> {
        let lines = LineReader::with_options(name.into(), reader, false, true)?;
        Self::with_lines(lines, spec, cfg)
    }

    fn with_lines(mut lines: LineReader, spec: &CsvFolderSpec, cfg: &StreamConfig) -> Result<Self> {
        let c = spec.compile()?;
        cfg.resample.validate()?;
        let (len, hop) = cfg.window.samples(cfg.resample.target_rate_hz)?;
        if cfg.batch_windows == 0 {
            return Err(DataError::Config {
                field: "batch_windows".into(),
                msg: "must be at least 1".into(),
            });
        }
        let mut layout_spec = c.layout.clone();
        layout_spec.subject = None;
        let layout = Layout::read(&mut lines, &layout_spec)?;
        let channel_names = c.channel_names(&layout);
        let nch = channel_names.len();
        let rate_hz = c.rate_hz;
        let path = lines.path().to_path_buf();
        let class_names = spec.classes.clone().unwrap_or_default();
        let class_index = class_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_bytes().to_vec(), i as i32))
            .collect();
        Ok(Self {
            stats: StreamStats {
                lines: usize::from(spec.header),
                ..StreamStats::default()
            },
            path,
            classes: Classes {
                fixed: spec.classes.is_some(),
                names: class_names,
                index: class_index,
                last: (Vec::new(), -1),
            },
            gap_limit_s: cfg.resample.max_gap_s.max(1.5 / rate_hz),
            clock: Clock {
                has_column: layout_spec.time.is_some(),
                rate_hz,
                t0: 0.0,
                n: 0,
                prev_raw: f64::NEG_INFINITY,
                explicit: false,
            },
            grid: Gridder {
                seg_t0: 0.0,
                k: 0,
                prev_t: 0.0,
                prev_v: vec![0.0; nch],
                prev_l: -1,
                active: false,
                tmp: vec![0.0; nch],
            },
            resampler: StreamResampler::new(nch, rate_hz, &cfg.resample),
            windower: Windower {
                channels: nch,
                len,
                hop,
                rate_hz: cfg.resample.target_rate_hz,
                cfg: cfg.window.clone(),
                buf: vec![Vec::new(); nch],
                labels: Vec::new(),
                base: 0,
                n: 0,
                next: 0,
                seg_t0: 0.0,
                peak: 0,
                batch_peak: 0,
            },
            batch: WindowBatch {
                channels: nch,
                window_len: len,
                ..WindowBatch::default()
            },
            cfg: cfg.clone(),
            channel_names,
            lines,
            layout,
            fields: Fields::default(),
            values: vec![0.0; nch],
            plain: PlainLines::default(),
            plain_labels: Vec::new(),
            plain_key: None,
            done: false,
            failed: false,
            timing_probe: layout_spec.time.is_some().then(Vec::new),
            time_unit: c.time_unit_name(),
        })
    }

    /// Output channel names.
    pub fn channel_names(&self) -> &[String] {
        &self.channel_names
    }

    /// Class names the batches' `y` index: the spec's `classes`, else the labels in order of
    /// first appearance so far.
    pub fn class_names(&self) -> &[String] {
        &self.classes.names
    }

    /// Samples per window `L`.
    pub fn window_len(&self) -> usize {
        self.windower.len
    }

    /// Output sample rate in Hz.
    pub fn sample_rate_hz(&self) -> f64 {
        self.cfg.resample.target_rate_hz
    }

    /// Raw bytes consumed from the source so far (compressed bytes for a gzip file): compare with
    /// the file's size for a progress bar.
    pub fn bytes_read(&self) -> u64 {
        self.lines.bytes_read()
    }

    /// Counts so far.
    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// Samples (per channel) held right now: resampler input, windower, and the pending batch.
    pub fn buffered_samples(&self) -> usize {
        self.resampler.buffered() + self.windower.buffered() + self.batch.len() * self.windower.len
    }

    /// An upper bound on the samples (per channel) ever held at once: the sum of each buffer's
    /// peak, the pending batch's included.
    pub fn peak_buffered_samples(&self) -> usize {
        self.resampler.peak + self.windower.peak + self.windower.batch_peak * self.windower.len
    }

    /// The next batch of up to `batch_windows` windows; `None` once the recording is exhausted.
    pub fn next_batch(&mut self) -> Result<Option<WindowBatch>> {
        if self.failed {
            return Ok(None);
        }
        let r = self.fill();
        if r.is_err() {
            self.failed = true;
        }
        r?;
        if self.batch.is_empty() {
            return Ok(None);
        }
        let take = self.batch.len().min(self.cfg.batch_windows);
        Ok(Some(self.split_batch(take)))
    }

    /// The first `take` pending windows as a batch.
    fn split_batch(&mut self, take: usize) -> WindowBatch {
        let b = &mut self.batch;
        if take == b.len() {
            let empty = WindowBatch {
                channels: b.channels,
                window_len: b.window_len,
                ..WindowBatch::default()
            };
            return std::mem::replace(b, empty);
        }
        let s = b.channels * b.window_len;
        WindowBatch {
            x: b.x.drain(..take * s).collect(),
            start_time_s: b.start_time_s.drain(..take).collect(),
            end_time_s: b.end_time_s.drain(..take).collect(),
            y: b.y.drain(..take).collect(),
            channels: b.channels,
            window_len: b.window_len,
        }
    }

    /// Reads lines until a batch is full or the input ends.
    fn fill(&mut self) -> Result<()> {
        while !self.done && self.batch.len() < self.cfg.batch_windows {
            if self.fill_plain()? {
                continue;
            }
            let Some((no, line)) = self.lines.next_line_ref()? else {
                self.done = true;
                self.check_timing(self.stats.lines)?;
                self.end_segment();
                if self.stats.samples == 0 {
                    return Err(DataError::format(&self.path, "no samples"));
                }
                break;
            };
            self.stats.lines = no;
            let line = text::trim(line);
            // The one-pass parser for plain rows; any other row (or error) the general one.
            let (time_s, label_field) = match self.layout.parse_plain(line, &mut self.values) {
                Some(row) => (row.time_s, row.label.map(|(a, b)| text::trim(&line[a..b]))),
                None => {
                    let Some(row) = self.layout.parse(
                        &self.path,
                        no,
                        line,
                        &mut self.fields,
                        &mut self.values,
                    )?
                    else {
                        continue;
                    };
                    let l = self.layout.label_col.map(|lc| self.fields.get(line, lc));
                    (row.time_s, l)
                }
            };
            let label = self.classes.id(&self.path, no, label_field)?;
            self.accept(no, time_s, label)?;
        }
        Ok(())
    }

    /// Takes a block of plain lines straight from the reader's buffer (one pass finds the line
    /// ends, the separators and the numbers: [`Layout::parse_plain_lines`]), each exactly as
    /// [`RecordingStream::fill`]'s line-by-line path takes it; `false` when the next line is not
    /// one of them (or not yet whole in the buffer), for that path to read.
    fn fill_plain(&mut self) -> Result<bool> {
        let buf = self.lines.unread();
        let used = self
            .layout
            .parse_plain_lines(buf, PLAIN_BLOCK_LINES, &mut self.plain);
        if used == 0 {
            return Ok(false);
        }
        let first = self.lines.line_no() + 1;
        self.plain_labels.clear();
        // A label error is returned after the rows before it are taken, so that an earlier
        // row's error (a clock going backwards) comes first, as on the line-by-line path.
        let mut label_error = None;
        for (r, row) in self.plain.rows.iter().enumerate() {
            // Labels come in long runs: a field of one to eight bytes whose raw bytes equal the
            // last one's (one word compare) has its class.
            let key = row.label.and_then(|(a, b)| {
                let n = b - a;
                ((1..=8).contains(&n) && a + 8 <= buf.len())
                    .then(|| (text::word_at(buf, a) & text::low_bytes(n), n))
            });
            let label = match (key, self.plain_key) {
                (Some(k), Some((last, class))) if k == last => class,
                _ => {
                    let field = row.label.map(|(a, b)| text::trim(&buf[a..b]));
                    match self.classes.id(&self.path, first + r, field) {
                        Ok(class) => {
                            if let Some(k) = key {
                                self.plain_key = Some((k, class));
                            }
                            class
                        }
                        Err(e) => {
                            label_error = Some(e);
                            break;
                        }
                    }
                }
            };
            self.plain_labels.push(label);
        }
        let rows = self.plain.rows.len();
        self.lines.skip_lines(used, rows);
        let c = self.values.len();
        for r in 0..self.plain_labels.len() {
            self.stats.lines = first + r;
            self.values
                .copy_from_slice(&self.plain.values[r * c..(r + 1) * c]);
            let time_s = self.plain.rows[r].time_s;
            self.accept(first + r, time_s, self.plain_labels[r])?;
        }
        match label_error {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    /// Takes one parsed sample (values in `self.values`) through the clock and the pipeline.
    fn accept(&mut self, line_no: usize, raw_t: Option<f64>, label: i32) -> Result<()> {
        let ck = &mut self.clock;
        let t = match raw_t {
            None => ck.n as f64 / ck.rate_hz,
            Some(t) => {
                if ck.n > 0 {
                    match t.total_cmp(&ck.prev_raw) {
                        std::cmp::Ordering::Equal => {
                            self.stats.repeated_times += 1;
                            return Ok(());
                        }
                        std::cmp::Ordering::Less => {
                            return Err(DataError::parse(
                                &self.path,
                                line_no,
                                format!("time goes backwards ({t} s after {} s)", ck.prev_raw),
                            ));
                        }
                        std::cmp::Ordering::Greater => {}
                    }
                } else {
                    ck.t0 = t;
                }
                ck.prev_raw = t;
                if !ck.explicit {
                    let expected = ck.t0 + ck.n as f64 / ck.rate_hz;
                    if (t - expected).abs() > REGULAR_TOLERANCE_PERIODS / ck.rate_hz {
                        ck.explicit = true;
                    }
                }
                if ck.explicit {
                    t
                } else {
                    ck.t0 + ck.n as f64 / ck.rate_hz
                }
            }
        };
        if let (Some(t), Some(probe)) = (raw_t, self.timing_probe.as_mut()) {
            probe.push(t);
            if probe.len() > TIMING_PROBE_STEPS {
                self.check_timing(line_no)?;
            }
        }
        let ck = &mut self.clock;
        let explicit = ck.explicit && ck.has_column;
        ck.n += 1;
        self.stats.samples += 1;
        if self.grid.active && explicit && t - self.grid.prev_t > self.gap_limit_s {
            self.stats.gaps += 1;
            self.stats.gap_s += t - self.grid.prev_t;
            self.end_segment();
        }
        self.push_sample(t, label, explicit);
        Ok(())
    }

    /// Checks the probed start of the time column against the nominal rate (a unit mistake makes
    /// the implied rate 1000 times off); the error names the file and the current line.
    fn check_timing(&mut self, line_no: usize) -> Result<()> {
        let Some(times) = self.timing_probe.take() else {
            return Ok(());
        };
        let probe = crate::Recording {
            subject_id: 0,
            subject_name: String::new(),
            session: crate::readers::file_name(&self.path),
            sample_rate_hz: self.clock.rate_hz,
            timestamps_s: Some(times),
            start_time_s: 0.0,
            channel_names: Vec::new(),
            signals: Vec::new(),
            labels: Vec::new(),
        };
        match crate::plausible::timing_problem(
            &probe,
            self.time_unit,
            crate::plausible::MAX_RATE_FACTOR,
        ) {
            Some(msg) => Err(DataError::parse(&self.path, line_no, msg)),
            None => Ok(()),
        }
    }

    /// Grids one sample (time `t`, values in `self.values`) and feeds the resampler.
    fn push_sample(&mut self, t: f64, label: i32, explicit: bool) {
        let Self {
            grid,
            resampler,
            windower,
            batch,
            stats,
            values,
            clock,
            ..
        } = self;
        let fs = clock.rate_hz;
        if !grid.active {
            grid.active = true;
            grid.seg_t0 = t;
            grid.k = 0;
            stats.segments += 1;
            windower.start(t);
        }
        let mut to_windows = |v: &[f32], l: i32| windower.push(v, l, batch, &mut stats.windowing);
        if !explicit {
            // Regular clock: the sample sits on the grid.
            resampler.push(values, label, &mut to_windows);
            grid.k += 1;
        } else if grid.k == 0 {
            resampler.push(values, label, &mut to_windows);
            grid.k = 1;
        } else {
            let m = grid_len(t - grid.seg_t0, fs);
            while grid.k < m {
                let tk = grid.seg_t0 + grid.k as f64 / fs;
                if tk >= t {
                    resampler.push(values, label, &mut to_windows);
                } else {
                    let span = t - grid.prev_t;
                    let w = ((tk - grid.prev_t) / span).clamp(0.0, 1.0);
                    for ((o, &a), &b) in grid.tmp.iter_mut().zip(&grid.prev_v).zip(values.iter()) {
                        let (a, b) = (f64::from(a), f64::from(b));
                        *o = (a + w * (b - a)) as f32;
                    }
                    let l = if w < 0.5 { grid.prev_l } else { label };
                    resampler.push(&grid.tmp, l, &mut to_windows);
                }
                grid.k += 1;
            }
        }
        grid.prev_t = t;
        grid.prev_v.copy_from_slice(values);
        grid.prev_l = label;
    }

    /// Flushes the resampler and the windower at a gap or the end.
    fn end_segment(&mut self) {
        if !self.grid.active {
            return;
        }
        let Self {
            resampler,
            windower,
            batch,
            stats,
            grid,
            ..
        } = self;
        let mut to_windows = |v: &[f32], l: i32| windower.push(v, l, batch, &mut stats.windowing);
        resampler.finish(&mut to_windows);
        windower.finish(&mut stats.windowing);
        grid.active = false;
        grid.k = 0;
    }
}

impl Iterator for RecordingStream {
    type Item = Result<WindowBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}
