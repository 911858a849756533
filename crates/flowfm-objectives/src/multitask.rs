//! The SSL-Wearables multi-task self-supervision (Yuan et al., npj Digital Medicine 2024):
//! arrow of time (reversal), permutation and time warping, each applied independently with
//! probability 0.5 and each predicted by its own binary head; the loss is the mean of the three
//! cross-entropies. Transforms follow Um et al. 2017 (permutation with a minimum segment length;
//! time warping along a smooth random speed curve through cubic-spline knots).
//!
//! The transforms are applied in the order of the published code (OxWearables/ssl-wearables,
//! `sslearning/data/data_loader.py::generate_labels`): reversal, permutation, time warp. Time
//! warping draws one speed curve per channel by default, as the published `DA_TimeWarp` does
//! (`per_axis_warp`; `false` shares one curve across the channels). Choices made here: a permuted
//! window never keeps its original segment order (its label is always truthful); speeds are
//! floored at [`MIN_SPEED`] so warped time always runs forward.

use candle_core::{DType, Result, Tensor};
use flowfm_core::{CoreError, SeededRng};

/// Floor of the random speed curve of time warping.
pub const MIN_SPEED: f64 = 0.1;

/// Settings of the three pretext tasks (defaults from Yuan et al. 2024).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultiTaskConfig {
    /// Probability of reversing a window (arrow of time).
    pub p_reverse: f64,
    /// Probability of permuting a window's segments.
    pub p_permute: f64,
    /// Probability of time-warping a window.
    pub p_time_warp: f64,
    /// Number of segments of a permutation.
    pub permute_segments: usize,
    /// Minimum segment length in samples.
    pub permute_min_segment: usize,
    /// Standard deviation of the random speed at the knots.
    pub warp_sigma: f64,
    /// Number of interior knots of the speed curve.
    pub warp_knots: usize,
    /// One speed curve per channel (the published recipe) instead of one for the whole window.
    pub per_axis_warp: bool,
}

impl Default for MultiTaskConfig {
    fn default() -> Self {
        Self {
            p_reverse: 0.5,
            p_permute: 0.5,
            p_time_warp: 0.5,
            permute_segments: 4,
            permute_min_segment: 10,
            warp_sigma: 0.2,
            warp_knots: 4,
            per_axis_warp: true,
        }
    }
}

fn invalid(name: &'static str, reason: String) -> CoreError {
    CoreError::InvalidParameter { name, reason }
}

impl MultiTaskConfig {
    /// Checks every field against windows of `samples` samples.
    pub fn validate(&self, samples: usize) -> std::result::Result<(), CoreError> {
        for (name, p) in [
            ("p_reverse", self.p_reverse),
            ("p_permute", self.p_permute),
            ("p_time_warp", self.p_time_warp),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(invalid(
                    name,
                    format!("must be a probability in [0, 1], got {p}"),
                ));
            }
        }
        if self.permute_segments < 2 {
            return Err(invalid(
                "permute_segments",
                format!("must be at least 2, got {}", self.permute_segments),
            ));
        }
        if self.permute_min_segment == 0 {
            return Err(invalid("permute_min_segment", "must be at least 1".into()));
        }
        if self.permute_segments * self.permute_min_segment > samples {
            return Err(invalid(
                "permute_min_segment",
                format!(
                    "{} segments of at least {} samples do not fit in a window of {samples}",
                    self.permute_segments, self.permute_min_segment
                ),
            ));
        }
        if !(self.warp_sigma.is_finite() && self.warp_sigma >= 0.0) {
            return Err(invalid(
                "warp_sigma",
                format!("must be finite and >= 0, got {}", self.warp_sigma),
            ));
        }
        if samples < 2 {
            return Err(invalid(
                "samples",
                format!("windows need at least 2 samples, got {samples}"),
            ));
        }
        Ok(())
    }
}

/// The 0/1 targets of the three tasks (1 = the transform was applied).
#[derive(Clone, Debug)]
pub struct MultiTaskTargets {
    /// Arrow of time: `(batch,)` u32.
    pub reversed: Tensor,
    /// Permutation: `(batch,)` u32.
    pub permuted: Tensor,
    /// Time warp: `(batch,)` u32.
    pub warped: Tensor,
}

/// A transformed batch and its targets.
#[derive(Clone, Debug)]
pub struct MultiTaskBatch {
    /// The transformed windows, `(batch, channels, samples)`, dtype and device of the input.
    pub x: Tensor,
    /// What was applied to each window.
    pub targets: MultiTaskTargets,
}

/// A window as channel rows: `window[c][i]`.
pub type Window = Vec<Vec<f64>>;

/// Reverses a window in time.
pub fn reverse(window: &[Vec<f64>]) -> Window {
    window
        .iter()
        .map(|row| row.iter().rev().copied().collect())
        .collect()
}

/// Segment lengths (each at least `min_segment`, summing to `len`) and a non-identity order.
pub fn draw_permutation(
    rng: &mut SeededRng,
    len: usize,
    segments: usize,
    min_segment: usize,
) -> std::result::Result<(Vec<usize>, Vec<usize>), CoreError> {
    if segments < 2 || min_segment == 0 || segments * min_segment > len {
        return Err(invalid(
            "permute_segments",
            format!("{segments} segments of at least {min_segment} samples in {len} samples"),
        ));
    }
    let slack = len - segments * min_segment;
    let mut cuts: Vec<usize> = (0..segments - 1).map(|_| rng.below(slack + 1)).collect();
    cuts.sort_unstable();
    let mut lengths = Vec::with_capacity(segments);
    let mut prev = 0;
    for &c in cuts.iter().chain(std::iter::once(&slack)) {
        lengths.push(min_segment + c - prev);
        prev = c;
    }
    let identity: Vec<usize> = (0..segments).collect();
    let mut order = rng.permutation(segments);
    while order == identity {
        order = rng.permutation(segments);
    }
    Ok((lengths, order))
}

/// Rearranges the segments of `lengths` (in time order) into `order`.
pub fn permute(window: &[Vec<f64>], lengths: &[usize], order: &[usize]) -> Window {
    let mut starts = Vec::with_capacity(lengths.len());
    let mut s = 0;
    for &l in lengths {
        starts.push(s);
        s += l;
    }
    window
        .iter()
        .map(|row| {
            order
                .iter()
                .flat_map(|&j| row[starts[j]..starts[j] + lengths[j]].iter().copied())
                .collect()
        })
        .collect()
}

/// The natural cubic spline through `(xs, ys)` (strictly increasing `xs`, at least 2 points)
/// evaluated at `at`; see [`flowfm_core::interp::natural_cubic_spline`].
pub use flowfm_core::interp::natural_cubic_spline;

/// The warped sample positions `tau(i)` in `[0, len - 1]` for a random speed curve: speeds
/// `1 + sigma n` at `knots + 2` evenly spaced knots, joined by a natural cubic spline, floored at
/// [`MIN_SPEED`], integrated (trapezoid) and rescaled so that `tau(0) = 0`, `tau(len-1) = len-1`.
pub fn draw_warp(rng: &mut SeededRng, len: usize, sigma: f64, knots: usize) -> Vec<f64> {
    if len < 2 {
        return vec![0.0; len];
    }
    let last = (len - 1) as f64;
    let count = knots + 2;
    let xs: Vec<f64> = (0..count)
        .map(|i| last * i as f64 / (count - 1) as f64)
        .collect();
    let ys: Vec<f64> = rng
        .normal_vec(count)
        .into_iter()
        .map(|n| 1.0 + sigma * n)
        .collect();
    let grid: Vec<f64> = (0..len).map(|i| i as f64).collect();
    // The knots are evenly spaced and strictly increasing (len >= 2), so the spline exists; a
    // failure would be a bug here, and a constant speed (no warp) is the safe answer.
    let speed: Vec<f64> = natural_cubic_spline(&xs, &ys, &grid)
        .unwrap_or_else(|_| vec![1.0; len])
        .into_iter()
        .map(|s| s.max(MIN_SPEED))
        .collect();
    let mut tau = Vec::with_capacity(len);
    tau.push(0.0);
    for i in 1..len {
        tau.push(tau[i - 1] + 0.5 * (speed[i - 1] + speed[i]));
    }
    let scale = last / tau[len - 1];
    tau.into_iter()
        .map(|t| (t * scale).clamp(0.0, last))
        .collect()
}

/// Reads every channel of `window` at the positions `tau` by linear interpolation.
pub fn resample_at(window: &[Vec<f64>], tau: &[f64]) -> Window {
    window
        .iter()
        .map(|row| {
            tau.iter()
                .map(|&t| {
                    let i = (t.floor() as usize).min(row.len().saturating_sub(2));
                    let f = t - i as f64;
                    row[i] * (1.0 - f) + row[(i + 1).min(row.len() - 1)] * f
                })
                .collect()
        })
        .collect()
}

/// Time-warps `window`: every channel along its own random speed curve when `per_axis`, else all
/// channels along one curve.
pub fn time_warp(
    rng: &mut SeededRng,
    window: &[Vec<f64>],
    sigma: f64,
    knots: usize,
    per_axis: bool,
) -> Window {
    let len = window.first().map_or(0, Vec::len);
    if per_axis {
        window
            .iter()
            .map(|row| {
                let tau = draw_warp(rng, len, sigma, knots);
                resample_at(std::slice::from_ref(row), &tau).remove(0)
            })
            .collect()
    } else {
        let tau = draw_warp(rng, len, sigma, knots);
        resample_at(window, &tau)
    }
}

/// Applies the three transforms at random to every window of a batch.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`
/// - returns `x` of the same shape and three `(batch,)` u32 target vectors
pub fn multitask_transform(
    x: &Tensor,
    rng: &mut SeededRng,
    cfg: &MultiTaskConfig,
) -> Result<MultiTaskBatch> {
    let (batch, channels, samples) = x.dims3()?;
    cfg.validate(samples)?;
    let data: Vec<Vec<Vec<f64>>> = x.to_dtype(DType::F64)?.to_vec3()?;
    let mut out = Vec::with_capacity(batch * channels * samples);
    let (mut rev, mut perm, mut warp) = (Vec::new(), Vec::new(), Vec::new());
    for window in data {
        let r_flag = rng.bernoulli(cfg.p_reverse);
        let p_flag = rng.bernoulli(cfg.p_permute);
        let w_flag = rng.bernoulli(cfg.p_time_warp);
        let mut w = window;
        if r_flag {
            w = reverse(&w);
        }
        if p_flag {
            let (lengths, order) =
                draw_permutation(rng, samples, cfg.permute_segments, cfg.permute_min_segment)?;
            w = permute(&w, &lengths, &order);
        }
        if w_flag {
            w = time_warp(rng, &w, cfg.warp_sigma, cfg.warp_knots, cfg.per_axis_warp);
        }
        out.extend(w.into_iter().flatten());
        rev.push(u32::from(r_flag));
        perm.push(u32::from(p_flag));
        warp.push(u32::from(w_flag));
    }
    let dev = x.device();
    let x = Tensor::from_vec(out, (batch, channels, samples), dev)?.to_dtype(x.dtype())?;
    Ok(MultiTaskBatch {
        x,
        targets: MultiTaskTargets {
            reversed: Tensor::from_vec(rev, batch, dev)?,
            permuted: Tensor::from_vec(perm, batch, dev)?,
            warped: Tensor::from_vec(warp, batch, dev)?,
        },
    })
}

/// The multi-task loss: the mean of the three binary cross-entropies (softmax over 2 logits).
///
/// # Shapes
/// - `reversed`, `permuted`, `warped`: logits `(batch, 2)` of the three heads
/// - returns a scalar `()`
pub fn multitask_loss(
    reversed: &Tensor,
    permuted: &Tensor,
    warped: &Tensor,
    targets: &MultiTaskTargets,
) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (name, logits, y) in [
        ("reversed", reversed, &targets.reversed),
        ("permuted", permuted, &targets.permuted),
        ("warped", warped, &targets.warped),
    ] {
        let (b, k) = logits.dims2()?;
        if k != 2 || y.dims() != [b] {
            candle_core::bail!(
                "{name} head: logits {:?} must be (batch, 2) with targets (batch,), got targets {:?}",
                logits.shape(),
                y.shape()
            );
        }
        let ce = candle_nn::loss::cross_entropy(logits, y)?;
        total = Some(match total {
            None => ce,
            Some(t) => t.add(&ce)?,
        });
    }
    match total {
        Some(t) => t.affine(1.0 / 3.0, 0.0),
        None => candle_core::bail!("no heads"),
    }
}

/// Accuracy of each head (arrow of time, permutation, time warp): the fraction of windows whose
/// larger logit is the target.
///
/// # Shapes
/// - `reversed`, `permuted`, `warped`: logits `(batch, 2)`; targets `(batch,)`
pub fn multitask_accuracy(
    reversed: &Tensor,
    permuted: &Tensor,
    warped: &Tensor,
    targets: &MultiTaskTargets,
) -> Result<[f64; 3]> {
    let mut out = [0.0; 3];
    for (slot, (name, logits, y)) in out.iter_mut().zip([
        ("reversed", reversed, &targets.reversed),
        ("permuted", permuted, &targets.permuted),
        ("warped", warped, &targets.warped),
    ]) {
        let (b, k) = logits.dims2()?;
        if k != 2 || y.dims() != [b] || b == 0 {
            candle_core::bail!(
                "{name} head: logits {:?} must be (batch >= 1, 2) with targets (batch,), got targets {:?}",
                logits.shape(),
                y.shape()
            );
        }
        let pred: Vec<u32> = logits.argmax(1)?.to_dtype(DType::U32)?.to_vec1()?;
        let truth: Vec<u32> = y.to_dtype(DType::U32)?.to_vec1()?;
        let hits = pred.iter().zip(&truth).filter(|(p, t)| p == t).count();
        *slot = hits as f64 / b as f64;
    }
    Ok(out)
}
