//! Anti-aliased resampling of recordings (regular or irregular, with repeated timestamps, NaNs and
//! gaps) onto a uniform grid at the target rate.
//!
//! Two stages:
//!
//! 1. *Cleaning and gridding.* Samples with a non-finite value or time are removed; irregular
//!    timestamps are sorted (stably) and repeated timestamps merged by averaging. The stream is cut
//!    into contiguous segments wherever two consecutive samples are further apart than the gap
//!    limit; nothing is ever interpolated across such a gap. Irregular segments (and regular ones
//!    with removed samples) are linearly interpolated on the time axis onto a uniform grid at the
//!    source rate.
//! 2. *Band-limited rate conversion.* Each uniform segment is converted to the target rate with a
//!    Kaiser-windowed sinc kernel evaluated at the exact output times (band-limited interpolation,
//!    J. O. Smith, "Digital Audio Resampling"), low-pass at the lower of the two Nyquist
//!    frequencies: the pass band ends at `passband_frac` of it and the stop band starts at it, so
//!    nothing above the new Nyquist frequency folds back. The kernel length follows Kaiser's design
//!    formula for the requested stop-band attenuation (J. F. Kaiser, 1974). The weights of each
//!    output sample are normalised to sum to one, so a constant (gravity) passes exactly, also at
//!    the segment edges where the kernel is truncated.
//!
//! Labels follow the nearest source sample in time.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::plausible::{MAX_RATE_HZ, MIN_RATE_HZ};
use crate::{DataError, Recording};

/// Resampling settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResampleConfig {
    /// Output sample rate in Hz.
    pub target_rate_hz: f64,
    /// Consecutive samples further apart than this (in seconds) split the recording into separate
    /// segments. A step of up to 1.5 nominal sample periods is never a gap, whatever this says.
    pub max_gap_s: f64,
    /// End of the flat pass band as a fraction of the lower Nyquist frequency (in (0, 1)); the stop
    /// band starts at the Nyquist frequency.
    pub passband_frac: f64,
    /// Stop-band attenuation of the anti-aliasing filter in dB (20..=150).
    pub stopband_db: f64,
    /// Upper bound on the memory one resampling step may allocate (output, grid and filter
    /// tables), in MiB. The need is computed before anything is allocated; a step that would need
    /// more is an error naming the recording (typically timestamps in the wrong unit). It does not
    /// change the output, so it is not part of a store's fingerprint.
    pub max_memory_mib: usize,
}

impl Default for ResampleConfig {
    fn default() -> Self {
        Self {
            target_rate_hz: 30.0,
            max_gap_s: 1.0,
            passband_frac: 0.8,
            stopband_db: 60.0,
            max_memory_mib: DEFAULT_MAX_MEMORY_MIB,
        }
    }
}

/// Default of [`ResampleConfig::max_memory_mib`]: 4 GiB, about 200 times what one week of 100 Hz
/// three-axis data needs at 30 Hz.
pub const DEFAULT_MAX_MEMORY_MIB: usize = 4096;

impl ResampleConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if !(self.target_rate_hz.is_finite() && self.target_rate_hz > 0.0) {
            return Err(config_err(
                "target_rate_hz",
                format!("must be a finite rate > 0 Hz, got {}", self.target_rate_hz),
            ));
        }
        if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&self.target_rate_hz) {
            return Err(config_err(
                "target_rate_hz",
                format!(
                    "{} Hz is outside the plausible {MIN_RATE_HZ} Hz - {MAX_RATE_HZ} Hz of wearable sensors",
                    self.target_rate_hz
                ),
            ));
        }
        if self.max_memory_mib == 0 {
            return Err(config_err("max_memory_mib", "must be at least 1 MiB"));
        }
        if !(self.max_gap_s.is_finite() && self.max_gap_s > 0.0) {
            return Err(config_err(
                "max_gap_s",
                format!("must be a finite duration > 0 s, got {}", self.max_gap_s),
            ));
        }
        if !(self.passband_frac > 0.0 && self.passband_frac < 1.0) {
            return Err(config_err(
                "passband_frac",
                format!(
                    "must lie strictly between 0 and 1, got {}",
                    self.passband_frac
                ),
            ));
        }
        if !(20.0..=150.0).contains(&self.stopband_db) {
            return Err(config_err(
                "stopband_db",
                format!("must lie in 20..=150 dB, got {}", self.stopband_db),
            ));
        }
        Ok(())
    }
}

pub(crate) fn config_err(field: &str, msg: impl Into<String>) -> DataError {
    DataError::Config {
        field: field.to_string(),
        msg: msg.into(),
    }
}

/// A contiguous stretch of a recording on the uniform output grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Time of the first sample in seconds (same origin as the recording).
    pub start_time_s: f64,
    /// Channel-major samples at the target rate: `signals[c][i]`.
    pub signals: Vec<Vec<f32>>,
    /// Per-sample labels (nearest source sample), `-1` for unlabelled.
    pub labels: Vec<i32>,
}

impl Segment {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the segment has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// What the cleaning stage found in one recording (all counts are of source samples).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResampleStats {
    /// Samples removed because a value or the timestamp was NaN or infinite.
    pub non_finite_samples: usize,
    /// Samples merged into another with exactly the same timestamp.
    pub duplicate_timestamps: usize,
    /// Samples whose timestamp was earlier than the previous one (the stream was sorted).
    pub out_of_order_samples: usize,
    /// Gaps longer than the limit, where the recording was split.
    pub gaps: usize,
    /// Total duration of those gaps in seconds.
    pub gap_s: f64,
}

impl ResampleStats {
    /// Adds another recording's counts.
    pub fn add(&mut self, o: &ResampleStats) {
        self.non_finite_samples += o.non_finite_samples;
        self.duplicate_timestamps += o.duplicate_timestamps;
        self.out_of_order_samples += o.out_of_order_samples;
        self.gaps += o.gaps;
        self.gap_s += o.gap_s;
    }
}

/// A resampled recording: its contiguous segments and what was cleaned.
#[derive(Clone, Debug, PartialEq)]
pub struct Resampled {
    /// Contiguous segments in time order.
    pub segments: Vec<Segment>,
    /// Cleaning counts.
    pub stats: ResampleStats,
}

/// Checks a recording's internal consistency: equal lengths, a valid rate and start time, labels
/// in `-1..num_classes` (when given). The error names `dataset/session`.
pub fn validate_recording(
    rec: &Recording,
    dataset: &str,
    num_classes: Option<usize>,
) -> Result<()> {
    let err = |msg: String| DataError::Recording {
        dataset: dataset.to_string(),
        session: rec.session.clone(),
        msg,
    };
    let n = rec.labels.len();
    if rec.signals.is_empty() {
        return Err(err("has no channels".into()));
    }
    if rec.channel_names.len() != rec.signals.len() {
        return Err(err(format!(
            "{} channel names for {} channels",
            rec.channel_names.len(),
            rec.signals.len()
        )));
    }
    for (c, s) in rec.signals.iter().enumerate() {
        if s.len() != n {
            return Err(err(format!(
                "channel {} ({}) has {} samples but there are {} labels",
                c,
                rec.channel_names[c],
                s.len(),
                n
            )));
        }
    }
    if let Some(ts) = &rec.timestamps_s {
        if ts.len() != n {
            return Err(err(format!("{} timestamps for {} samples", ts.len(), n)));
        }
    }
    if !(rec.sample_rate_hz.is_finite() && rec.sample_rate_hz > 0.0) {
        return Err(err(format!(
            "sample rate must be finite and > 0 Hz, got {}",
            rec.sample_rate_hz
        )));
    }
    if rec.timestamps_s.is_none() && !rec.start_time_s.is_finite() {
        return Err(err(format!(
            "start time must be finite, got {}",
            rec.start_time_s
        )));
    }
    if let Some(k) = num_classes {
        if let Some((i, &l)) = rec
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l < -1 || l >= k as i32)
        {
            return Err(err(format!(
                "label {l} at sample {i} is outside -1..{k} (dataset has {k} classes)"
            )));
        }
    }
    Ok(())
}

/// Resamples all channels of `rec` (see [`resample_channels`]).
pub fn resample_recording(rec: &Recording, cfg: &ResampleConfig) -> Result<Resampled> {
    let all: Vec<usize> = (0..rec.num_channels()).collect();
    resample_channels(rec, &all, cfg)
}

/// Resamples the channels `channels` (indices into `rec.signals`, in output order) of `rec` onto
/// a uniform grid at `cfg.target_rate_hz`, split into contiguous segments at gaps.
pub fn resample_channels(
    rec: &Recording,
    channels: &[usize],
    cfg: &ResampleConfig,
) -> Result<Resampled> {
    cfg.validate()?;
    validate_recording(rec, "", None)?;
    if let Some(&c) = channels.iter().find(|&&c| c >= rec.num_channels()) {
        return Err(DataError::Recording {
            dataset: String::new(),
            session: rec.session.clone(),
            msg: format!(
                "channel index {c} out of range ({} channels)",
                rec.num_channels()
            ),
        });
    }
    let fs_nominal = rec.sample_rate_hz;
    let gap_limit = cfg.max_gap_s.max(1.5 / fs_nominal);
    let n = rec.len();
    let finite_at = |i: usize| channels.iter().all(|&c| rec.signals[c][i].is_finite());
    let mut stats = ResampleStats::default();
    let mut segments = Vec::new();
    if n == 0 {
        return Ok(Resampled { segments, stats });
    }

    if rec.timestamps_s.is_none() && (0..n).all(finite_at) {
        // Fast path: one regular segment, no copy of the source.
        let src: Vec<&[f32]> = channels
            .iter()
            .map(|&c| rec.signals[c].as_slice())
            .collect();
        let (signals, labels) =
            convert_rate(&src, &rec.labels, fs_nominal, cfg).map_err(|msg| too_big(rec, msg))?;
        segments.push(Segment {
            start_time_s: rec.start_time_s,
            signals,
            labels,
        });
        return Ok(Resampled { segments, stats });
    }

    // General path: explicit (time, sample) pairs.
    let time_at = |i: usize| match &rec.timestamps_s {
        Some(ts) => ts[i],
        None => rec.start_time_s + i as f64 / fs_nominal,
    };
    let mut idx: Vec<usize> = (0..n)
        .filter(|&i| time_at(i).is_finite() && finite_at(i))
        .collect();
    stats.non_finite_samples = n - idx.len();
    stats.out_of_order_samples = idx
        .windows(2)
        .filter(|w| time_at(w[1]) < time_at(w[0]))
        .count();
    if stats.out_of_order_samples > 0 {
        idx.sort_by(|&a, &b| time_at(a).total_cmp(&time_at(b)));
    }

    // Merge repeated timestamps by averaging (label of the first sample of the group).
    let nc = channels.len();
    let mut times: Vec<f64> = Vec::with_capacity(idx.len());
    let mut values: Vec<Vec<f32>> = vec![Vec::with_capacity(idx.len()); nc];
    let mut labels: Vec<i32> = Vec::with_capacity(idx.len());
    let mut g = 0;
    while g < idx.len() {
        let t = time_at(idx[g]);
        let mut h = g + 1;
        while h < idx.len() && time_at(idx[h]) <= t {
            h += 1;
        }
        let count = (h - g) as f64;
        for (k, &c) in channels.iter().enumerate() {
            let s: f64 = idx[g..h]
                .iter()
                .map(|&i| f64::from(rec.signals[c][i]))
                .sum();
            values[k].push((s / count) as f32);
        }
        times.push(t);
        labels.push(rec.labels[idx[g]]);
        stats.duplicate_timestamps += h - g - 1;
        g = h;
    }

    // Split at gaps and grid each piece.
    let regular = rec.timestamps_s.is_none();
    let mut start = 0;
    for end in 1..=times.len() {
        let split = end == times.len() || times[end] - times[end - 1] > gap_limit;
        if !split {
            continue;
        }
        if end < times.len() {
            stats.gaps += 1;
            stats.gap_s += times[end] - times[end - 1];
        }
        let piece_t = &times[start..end];
        // Irregular pieces are gridded at the nominal rate unless they are clearly denser.
        let fs_grid = match median_rate(piece_t) {
            Some(m) if !regular && m > 1.05 * fs_nominal => m,
            _ => fs_nominal,
        };
        let piece_v: Vec<&[f32]> = values.iter().map(|v| &v[start..end]).collect();
        let (grid_v, grid_l) = grid_linear(piece_t, &piece_v, &labels[start..end], fs_grid, cfg)
            .map_err(|msg| too_big(rec, msg))?;
        let grid_refs: Vec<&[f32]> = grid_v.iter().map(Vec::as_slice).collect();
        let (signals, seg_labels) =
            convert_rate(&grid_refs, &grid_l, fs_grid, cfg).map_err(|msg| too_big(rec, msg))?;
        segments.push(Segment {
            start_time_s: piece_t[0],
            signals,
            labels: seg_labels,
        });
        start = end;
    }
    Ok(Resampled { segments, stats })
}

/// The error for a resampling step over the memory bound.
fn too_big(rec: &Recording, msg: String) -> DataError {
    DataError::Recording {
        dataset: String::new(),
        session: rec.session.clone(),
        msg,
    }
}

/// Checks an allocation of `bytes` (computed in f64, so it cannot overflow) against the bound.
fn check_memory(what: &str, bytes: f64, cfg: &ResampleConfig) -> std::result::Result<(), String> {
    let limit = cfg.max_memory_mib as f64 * 1024.0 * 1024.0;
    if bytes.is_finite() && bytes <= limit {
        return Ok(());
    }
    Err(format!(
        "{what} would need {:.3e} bytes, over the limit of {} MiB (`resample.max_memory_mib`); \
         are the timestamps in the right unit?",
        bytes, cfg.max_memory_mib
    ))
}

/// The rate implied by the median positive step of sorted times, if any.
fn median_rate(t: &[f64]) -> Option<f64> {
    let mut dts: Vec<f64> = t
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&d| d > 0.0)
        .collect();
    if dts.is_empty() {
        return None;
    }
    let mid = dts.len() / 2;
    let (_, m, _) = dts.select_nth_unstable_by(mid, f64::total_cmp);
    Some(1.0 / *m)
}

/// Number of grid points at `rate` covering `[0, duration_s]`.
fn grid_len(duration_s: f64, rate: f64) -> usize {
    (duration_s * rate + 1e-9).floor() as usize + 1
}

/// Linear interpolation of strictly increasing `t` onto `t[0] + k / rate`; labels of the nearest
/// sample.
fn grid_linear(
    t: &[f64],
    v: &[&[f32]],
    labels: &[i32],
    rate: f64,
    cfg: &ResampleConfig,
) -> std::result::Result<(Vec<Vec<f32>>, Vec<i32>), String> {
    let duration_s = t[t.len() - 1] - t[0];
    let points = duration_s * rate + 1.0;
    check_memory(
        &format!(
            "gridding {duration_s} s at {rate} Hz ({points:.3e} points of {} channels)",
            v.len()
        ),
        points * (4.0 * v.len() as f64 + 4.0),
        cfg,
    )?;
    let m = grid_len(duration_s, rate);
    let mut out_v: Vec<Vec<f32>> = vec![Vec::with_capacity(m); v.len()];
    let mut out_l = Vec::with_capacity(m);
    let mut j = 0;
    for k in 0..m {
        let tk = t[0] + k as f64 / rate;
        while j + 1 < t.len() && t[j + 1] < tk {
            j += 1;
        }
        if j + 1 >= t.len() {
            // At (or numerically just past) the last sample.
            for (c, ch) in v.iter().enumerate() {
                out_v[c].push(ch[t.len() - 1]);
            }
            out_l.push(labels[t.len() - 1]);
            continue;
        }
        let span = t[j + 1] - t[j];
        let w = ((tk - t[j]) / span).clamp(0.0, 1.0);
        for (c, ch) in v.iter().enumerate() {
            let a = f64::from(ch[j]);
            let b = f64::from(ch[j + 1]);
            out_v[c].push((a + w * (b - a)) as f32);
        }
        out_l.push(if w < 0.5 { labels[j] } else { labels[j + 1] });
    }
    Ok((out_v, out_l))
}

/// A symmetric Kaiser-windowed sinc low-pass kernel in units of input samples.
#[derive(Clone, Debug)]
pub struct LowpassKernel {
    /// Cutoff in cycles per input sample.
    fc: f64,
    beta: f64,
    i0_beta: f64,
    half_width: f64,
    /// Tabulated `exact` (filled by [`LowpassKernel::tabulate`]), for per-sample evaluation.
    table: Vec<f64>,
}

impl LowpassKernel {
    /// Table points per input sample (the kernel is linearly interpolated between them).
    const OVERSAMPLE: usize = 512;

    /// Designs the anti-aliasing kernel for converting `fs_in` to `fs_out` (both in Hz).
    pub fn design(fs_in: f64, fs_out: f64, cfg: &ResampleConfig) -> Self {
        let nyquist = 0.5 * fs_in.min(fs_out);
        let pass_hz = cfg.passband_frac * nyquist;
        let stop_hz = nyquist;
        let fc = 0.5 * (pass_hz + stop_hz) / fs_in; // cycles per input sample
        let dw = 2.0 * std::f64::consts::PI * (stop_hz - pass_hz) / fs_in; // rad per sample
        let a = cfg.stopband_db;
        let beta = if a > 50.0 {
            0.1102 * (a - 8.7)
        } else if a >= 21.0 {
            0.5842 * (a - 21.0).powf(0.4) + 0.07886 * (a - 21.0)
        } else {
            0.0
        };
        let taps = (a - 8.0) / (2.285 * dw);
        Self {
            fc,
            beta,
            i0_beta: bessel_i0(beta),
            half_width: (0.5 * taps).max(2.0),
            table: Vec::new(),
        }
    }

    /// Half the kernel's support in input samples.
    pub fn half_width(&self) -> f64 {
        self.half_width
    }

    /// The kernel at offset `d` (input samples), from the closed form.
    pub fn exact(&self, d: f64) -> f64 {
        let d = d.abs();
        if d >= self.half_width {
            return 0.0;
        }
        let r = d / self.half_width;
        let win = bessel_i0(self.beta * (1.0 - r * r).sqrt()) / self.i0_beta;
        2.0 * self.fc * sinc(2.0 * self.fc * d) * win
    }

    /// Fills the lookup table used by [`LowpassKernel::eval`].
    pub fn tabulate(&mut self) {
        let os = Self::OVERSAMPLE as f64;
        let n = (self.half_width * os).ceil() as usize + 2;
        self.table = (0..n).map(|k| self.exact(k as f64 / os)).collect();
    }

    /// The kernel at offset `d` (input samples), linearly interpolated from the table
    /// (falls back to the closed form before [`LowpassKernel::tabulate`]).
    pub fn eval(&self, d: f64) -> f64 {
        if self.table.is_empty() {
            return self.exact(d);
        }
        let a = d.abs() * Self::OVERSAMPLE as f64;
        let i = a as usize;
        if i + 1 >= self.table.len() {
            return 0.0;
        }
        let f = a - i as f64;
        self.table[i] + f * (self.table[i + 1] - self.table[i])
    }
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let q = 0.25 * x * x;
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut k = 1.0;
    while term > 1e-17 * sum {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

/// Converts a uniformly sampled single channel from `fs_in` to `cfg.target_rate_hz`, anti-aliased.
/// The output grid starts at the first input sample and covers the input's duration.
/// The memory it would need beyond [`ResampleConfig::max_memory_mib`] is an error.
pub fn resample_uniform(x: &[f32], fs_in: f64, cfg: &ResampleConfig) -> Result<Vec<f32>> {
    let labels = vec![-1; x.len()];
    let (mut v, _) =
        convert_rate(&[x], &labels, fs_in, cfg).map_err(|msg| DataError::Recording {
            dataset: String::new(),
            session: "resample_uniform".into(),
            msg,
        })?;
    Ok(v.pop().unwrap_or_default())
}

/// `step` as `p / q` with a small denominator, when it is one (100 -> 30 Hz gives 10 / 3).
fn rational(step: f64) -> Option<(usize, usize)> {
    (1..=1000usize).find_map(|q| {
        let p = step * q as f64;
        let pr = p.round();
        ((p - pr).abs() <= 1e-9 * p.max(1.0) && pr >= 1.0).then_some((pr as usize, q))
    })
}

/// Band-limited conversion of uniform channels from `fs_in` to the target rate.
/// The memory [`convert_rate`] allocates, in bytes: output channels and labels, plus the filter's
/// phase weights or lookup table and one row of weights.
fn conversion_bytes(n_in: usize, channels: usize, fs_in: f64, cfg: &ResampleConfig) -> f64 {
    let fs_out = cfg.target_rate_hz;
    let n_out = (n_in.saturating_sub(1)) as f64 / fs_in * fs_out + 1.0;
    let taps = 2.0 * LowpassKernel::design(fs_in, fs_out, cfg).half_width() + 2.0;
    let filter = match rational(fs_in / fs_out) {
        Some((_, q)) => q as f64 * taps,
        None => taps * 0.5 * LowpassKernel::OVERSAMPLE as f64 + 2.0,
    };
    n_out * (4.0 * channels as f64 + 4.0) + 8.0 * (filter + taps)
}

fn convert_rate(
    src: &[&[f32]],
    labels: &[i32],
    fs_in: f64,
    cfg: &ResampleConfig,
) -> std::result::Result<(Vec<Vec<f32>>, Vec<i32>), String> {
    let fs_out = cfg.target_rate_hz;
    let n_in = labels.len();
    if n_in == 0 {
        return Ok((vec![Vec::new(); src.len()], Vec::new()));
    }
    if (fs_in - fs_out).abs() <= 1e-9 * fs_out {
        return Ok((src.iter().map(|s| s.to_vec()).collect(), labels.to_vec()));
    }
    check_memory(
        &format!(
            "converting {n_in} samples of {} channels from {fs_in} Hz to {fs_out} Hz",
            src.len()
        ),
        conversion_bytes(n_in, src.len(), fs_in, cfg),
        cfg,
    )?;
    let n_out = grid_len((n_in - 1) as f64 / fs_in, fs_out);
    let step = fs_in / fs_out;
    let phases = rational(step);
    let mut kernel = LowpassKernel::design(fs_in, fs_out, cfg);
    if phases.is_none() {
        // Every output has its own phase: evaluate from a table rather than the closed form.
        kernel.tabulate();
    }
    let hw = kernel.half_width();
    let mut out: Vec<Vec<f32>> = vec![Vec::with_capacity(n_out); src.len()];
    let mut out_l = Vec::with_capacity(n_out);
    let last = (n_in - 1) as f64;
    // Normalised weights of the taps `k in lo..=hi` around position `u`.
    let weights_at = |u: f64, weights: &mut Vec<f64>| -> (usize, usize) {
        let lo = (u - hw).ceil().max(0.0) as usize;
        let hi = ((u + hw).floor().min(last)) as usize;
        weights.clear();
        weights.extend((lo..=hi).map(|k| kernel.eval(u - k as f64)));
        let sum: f64 = weights.iter().sum();
        let inv = if sum.abs() > 1e-12 { 1.0 / sum } else { 0.0 };
        weights.iter_mut().for_each(|w| *w *= inv);
        (lo, hi)
    };
    let mut emit = |lo: usize, weights: &[f64], label_at: usize| {
        for (c, s) in src.iter().enumerate() {
            let acc: f64 = weights
                .iter()
                .zip(&s[lo..lo + weights.len()])
                .map(|(&w, &x)| w * f64::from(x))
                .sum();
            out[c].push(acc as f32);
        }
        out_l.push(labels[label_at.min(n_in - 1)]);
    };
    let mut weights: Vec<f64> = Vec::with_capacity(2 * hw.ceil() as usize + 2);
    if let Some((p, q)) = phases {
        // Output j sits at input position (j p) / q: only q distinct phases, whose interior
        // weights are computed once. Outputs whose kernel is cut by an edge are done one by one.
        let phases: Vec<(isize, Vec<f64>)> = (0..q)
            .map(|r| {
                let frac = r as f64 / q as f64;
                let lo = (frac - hw).ceil() as isize;
                let hi = (frac + hw).floor() as isize;
                let mut w: Vec<f64> = (lo..=hi).map(|k| kernel.exact(frac - k as f64)).collect();
                let sum: f64 = w.iter().sum();
                w.iter_mut().for_each(|x| *x /= sum);
                (lo, w)
            })
            .collect();
        for j in 0..n_out {
            let jp = j * p;
            let (base, r) = (jp / q, jp % q);
            let (lo_off, w) = &phases[r];
            let lo = base as isize + lo_off;
            let label_at = base + usize::from(2 * r >= q);
            if lo >= 0 && (lo as usize) + w.len() <= n_in {
                emit(lo as usize, w, label_at);
            } else {
                let u = (base as f64 + r as f64 / q as f64).min(last);
                let (lo, _) = weights_at(u, &mut weights);
                emit(lo, &weights, label_at);
            }
        }
    } else {
        for j in 0..n_out {
            let u = (j as f64 * step).min(last);
            let (lo, _) = weights_at(u, &mut weights);
            emit(lo, &weights, u.round() as usize);
        }
    }
    Ok((out, out_l))
}
