//! Fused normalisation kernels with hand-written backward passes: batch norm (statistics per
//! channel over batch and time) and group norm (statistics per sample and channel group), each
//! with its per-channel affine transform, as one candle `CustomOp3(x, gamma, beta)`.
//!
//! Composed from candle primitives, the backward of a normalisation reduces broadcast gradients
//! with `sum_keepdim` over dimensions 0 and 2, which candle 0.11 runs on a slow strided path
//! (about 40 % of a HARNet training step, measured). Here statistics and gradients are computed in
//! f64 accumulators, in parallel over statistic groups and rows. The composed versions in `norm`
//! remain the reference the tests compare against.

use crate::contiguous_slice;
use candle_core::{
    CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Which rows share statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// Batch norm: one statistic per channel, over batch and samples.
    PerChannel,
    /// Group norm: one statistic per sample and group of `C / groups` channels.
    Groups(usize),
}

/// Where the statistics come from.
#[derive(Clone, Debug)]
pub enum Statistics {
    /// Computed from the input (training batch norm, group norm).
    FromInput,
    /// Given per channel (evaluation batch norm: running mean and variance).
    Fixed {
        /// Mean per channel.
        mean: Arc<Vec<f64>>,
        /// Variance per channel.
        var: Arc<Vec<f64>>,
    },
}

/// The activation applied to the normalised, affine-transformed values inside the op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// None.
    #[default]
    Identity,
    /// `max(a, 0)`.
    Relu,
    /// `a * sigmoid(a)`.
    Silu,
}

impl Activation {
    fn apply(self, a: f64) -> f64 {
        match self {
            Activation::Identity => a,
            Activation::Relu => a.max(0.0),
            Activation::Silu => a / (1.0 + (-a).exp()),
        }
    }

    /// The derivative at the pre-activation `a`.
    fn derivative(self, a: f64) -> f64 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-a).exp());
                s * (1.0 + a * (1.0 - s))
            }
        }
    }
}

/// The per-row elementwise passes of the fused norms, by element type: f64 computes in f64
/// through the C library's `exp` (the gradient checks' path); f32 computes in f32 and runs SiLU
/// in SIMD lanes ([`crate::lanes`]).
pub(crate) trait RowKernel: WithDType {
    /// `dst = act(src * scale + shift)`.
    fn affine_act(act: Activation, dst: &mut [Self], src: &[Self], scale: f64, shift: f64);
    /// `dst = grad * act'(src * scale + shift)`.
    fn act_grad(
        act: Activation,
        dst: &mut [Self],
        grad: &[Self],
        src: &[Self],
        scale: f64,
        shift: f64,
    );
}

impl RowKernel for f64 {
    fn affine_act(act: Activation, dst: &mut [f64], src: &[f64], scale: f64, shift: f64) {
        match act {
            Activation::Identity => {
                for (o, v) in dst.iter_mut().zip(src) {
                    *o = v * scale + shift;
                }
            }
            act => {
                for (o, v) in dst.iter_mut().zip(src) {
                    *o = act.apply(v * scale + shift);
                }
            }
        }
    }

    fn act_grad(
        act: Activation,
        dst: &mut [f64],
        grad: &[f64],
        src: &[f64],
        scale: f64,
        shift: f64,
    ) {
        for ((o, g), v) in dst.iter_mut().zip(grad).zip(src) {
            *o = g * act.derivative(v * scale + shift);
        }
    }
}

impl RowKernel for f32 {
    fn affine_act(act: Activation, dst: &mut [f32], src: &[f32], scale: f64, shift: f64) {
        match act {
            Activation::Silu => {
                crate::lanes::silu_affine(dst, src, scale as f32, shift as f32);
            }
            // In f64 and rounded once, as before the SIMD SiLU: computing these in f32 measured
            // no clear gain and changed HARNet10's training trajectories in the last bits
            // (enough to move a short, seed-sensitive pretext-task test below its bar). ReLU on
            // its own loop, without the per-element match, so that it vectorises; the same
            // values.
            Activation::Relu => {
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = (v as f64 * scale + shift).max(0.0) as f32;
                }
            }
            act => {
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = act.apply(v as f64 * scale + shift) as f32;
                }
            }
        }
    }

    fn act_grad(
        act: Activation,
        dst: &mut [f32],
        grad: &[f32],
        src: &[f32],
        scale: f64,
        shift: f64,
    ) {
        match act {
            Activation::Silu => {
                crate::lanes::silu_affine_grad(dst, grad, src, scale as f32, shift as f32);
            }
            // In f64, as before (see `affine_act`); ReLU without the per-element match, the
            // same values (`g * 0` keeps the sign of a zero as `g * derivative` did).
            Activation::Relu => {
                for ((o, &g), &v) in dst.iter_mut().zip(grad).zip(src) {
                    *o = if v as f64 * scale + shift > 0.0 {
                        g
                    } else {
                        g * 0.0
                    };
                }
            }
            act => {
                for ((o, &g), &v) in dst.iter_mut().zip(grad).zip(src) {
                    *o = (g as f64 * act.derivative(v as f64 * scale + shift)) as f32;
                }
            }
        }
    }
}

/// `(mean, biased variance)` per statistic group.
pub type BatchStats = (Vec<f64>, Vec<f64>);

/// Batch statistics computed by a forward pass: `(mean, biased variance)` per statistic group.
pub type StatsSlot = Arc<Mutex<Option<(Vec<f64>, Vec<f64>)>>>;

#[derive(Clone, Debug)]
struct Geometry {
    b: usize,
    c: usize,
    l: usize,
    grouping: Grouping,
}

impl Geometry {
    fn groups(&self) -> usize {
        match self.grouping {
            Grouping::PerChannel => self.c,
            Grouping::Groups(g) => self.b * g,
        }
    }

    /// Rows `b * C + c` of statistic group `s`.
    fn rows(&self, s: usize) -> Vec<usize> {
        match self.grouping {
            Grouping::PerChannel => (0..self.b).map(|b| b * self.c + s).collect(),
            Grouping::Groups(g) => {
                let cg = self.c / g;
                let (b, grp) = (s / g, s % g);
                (0..cg).map(|k| b * self.c + grp * cg + k).collect()
            }
        }
    }

    /// Statistic group of row `r`.
    fn group_of(&self, r: usize) -> usize {
        let (b, c) = (r / self.c, r % self.c);
        match self.grouping {
            Grouping::PerChannel => c,
            Grouping::Groups(g) => b * g + c / (self.c / g),
        }
    }

    /// Values per statistic group.
    fn count(&self) -> usize {
        match self.grouping {
            Grouping::PerChannel => self.b * self.l,
            Grouping::Groups(g) => (self.c / g) * self.l,
        }
    }
}

/// Independent accumulators of [`lane_sum`] and [`lane_sum2`].
const LANES: usize = 8;

/// `sum f(v)` over `xs` in f64 with [`LANES`] independent accumulators (one long chain of
/// additions is latency bound), in a fixed order: the result does not depend on threads.
fn lane_sum<T: Copy>(xs: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f64>() + tail
}

/// The two sums `(sum f(a, b).0, sum f(a, b).1)` over the pairs of `a` and `b`, as
/// [`lane_sum`].
fn lane_sum2<T: Copy>(a: &[T], b: &[T], f: impl Fn(T, T) -> (f64, f64)) -> (f64, f64) {
    let mut acc0 = [0.0f64; LANES];
    let mut acc1 = [0.0f64; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            let (u, v) = f(xa[i], xb[i]);
            acc0[i] += u;
            acc1[i] += v;
        }
    }
    let (mut t0, mut t1) = (0.0, 0.0);
    for (&u, &v) in ca.remainder().iter().zip(cb.remainder()) {
        let (p, q) = f(u, v);
        t0 += p;
        t1 += q;
    }
    (acc0.iter().sum::<f64>() + t0, acc1.iter().sum::<f64>() + t1)
}

/// Per statistic group `(mean, biased variance)` of `x`.
fn statistics<T: WithDType>(geo: &Geometry, x: &[T]) -> (Vec<f64>, Vec<f64>) {
    let n = geo.count() as f64;
    (0..geo.groups())
        .into_par_iter()
        .map(|s| {
            let rows = geo.rows(s);
            let mut sum = 0.0;
            for &r in &rows {
                sum += lane_sum(&x[r * geo.l..(r + 1) * geo.l], |v| v.to_f64());
            }
            let mean = sum / n;
            let mut sq = 0.0;
            for &r in &rows {
                sq += lane_sum(&x[r * geo.l..(r + 1) * geo.l], |v| {
                    (v.to_f64() - mean).powi(2)
                });
            }
            (mean, sq / n)
        })
        .unzip()
}

pub(crate) struct FusedNorm {
    geo: Geometry,
    stats: Statistics,
    eps: f64,
    activation: Activation,
    slot: Option<StatsSlot>,
    /// `(mean, inverse standard deviation)` per statistic group from the forward pass, so the
    /// backward pass need not recompute them from `x` (two passes over the input).
    cache: Mutex<Option<(Vec<f64>, Vec<f64>)>>,
    /// Whether `gamma` and `beta` are given per row `(batch, channels)` (a per-sample modulation
    /// such as FiLM folded in) instead of per channel.
    per_row: bool,
}

impl FusedNorm {
    /// A norm over `(b, c, l)` with statistics from the input and `activation` (`per_row`: the
    /// affine parameters are given per sample and channel), and the slot its forward pass
    /// leaves the batch statistics in (for batch norm's running averages).
    pub(crate) fn from_input(
        (b, c, l): (usize, usize, usize),
        grouping: Grouping,
        per_row: bool,
        eps: f64,
        activation: Activation,
    ) -> (Self, StatsSlot) {
        let slot: StatsSlot = Arc::new(Mutex::new(None));
        let op = FusedNorm {
            geo: Geometry { b, c, l, grouping },
            stats: Statistics::FromInput,
            eps,
            activation,
            slot: Some(slot.clone()),
            cache: Mutex::new(None),
            per_row,
        };
        (op, slot)
    }

    /// Index into `gamma` / `beta` of row `r = b * C + c`.
    fn affine_index(&self, r: usize) -> usize {
        if self.per_row {
            r
        } else {
            r % self.geo.c
        }
    }

    /// Mean and inverse standard deviation per statistic group.
    fn moments<T: WithDType>(&self, x: &[T]) -> (Vec<f64>, Vec<f64>, Option<BatchStats>) {
        match &self.stats {
            Statistics::FromInput => {
                let (mean, var) = statistics(&self.geo, x);
                let inv = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
                (mean.clone(), inv, Some((mean, var)))
            }
            Statistics::Fixed { mean, var } => {
                let inv = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
                (mean.to_vec(), inv, None)
            }
        }
    }

    pub(crate) fn forward<T: RowKernel>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let geo = &self.geo;
        let (mean, inv, batch_stats) = self.moments(x);
        if let Ok(mut c) = self.cache.lock() {
            *c = Some((mean.clone(), inv.clone()));
        }
        if let (Some(slot), Some(st)) = (&self.slot, batch_stats) {
            if let Ok(mut s) = slot.lock() {
                *s = Some(st);
            }
        }
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(geo.l).enumerate().for_each(|(r, dst)| {
            let s = geo.group_of(r);
            let c = self.affine_index(r);
            let scale = inv[s] * gamma[c].to_f64();
            let shift = beta[c].to_f64() - mean[s] * scale;
            T::affine_act(
                self.activation,
                dst,
                &x[r * geo.l..(r + 1) * geo.l],
                scale,
                shift,
            );
        });
        y
    }

    /// `(dx, dgamma, dbeta)`.
    pub(crate) fn backward<T: RowKernel>(
        &self,
        x: &[T],
        gamma: &[T],
        beta: &[T],
        g: &[T],
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let geo = &self.geo;
        let cached = self.cache.lock().ok().and_then(|mut c| c.take());
        let (mean, inv) = match cached {
            Some(m) => m,
            None => {
                let (mean, inv, _) = self.moments(x);
                (mean, inv)
            }
        };
        let l = geo.l;
        // Through the activation: the gradient with respect to its input `a = gamma x_hat + beta`.
        let gated: Vec<T>;
        let g = match self.activation {
            Activation::Identity => g,
            act => {
                let mut out = vec![T::zero(); g.len()];
                out.par_chunks_mut(l).enumerate().for_each(|(r, dst)| {
                    let s = geo.group_of(r);
                    let c = self.affine_index(r);
                    let scale = inv[s] * gamma[c].to_f64();
                    let shift = beta[c].to_f64() - mean[s] * scale;
                    let src = r * l..(r + 1) * l;
                    T::act_grad(act, dst, &g[src.clone()], &x[src], scale, shift);
                });
                gated = out;
                &gated
            }
        };
        // Per row: `(sum g, sum g * x_hat)`, one pass over `g` and `x`. Per channel (or per row)
        // these give dbeta and dgamma; per statistic group, weighted by each row's gamma, the sums
        // of dx_hat and dx_hat * x_hat that the input gradient needs.
        let row_sums: Vec<(f64, f64)> = (0..geo.b * geo.c)
            .into_par_iter()
            .map(|r| {
                let s = geo.group_of(r);
                let m = mean[s];
                let (sg, sgx) =
                    lane_sum2(&g[r * l..(r + 1) * l], &x[r * l..(r + 1) * l], |gv, xv| {
                        let gv = gv.to_f64();
                        (gv, gv * (xv.to_f64() - m))
                    });
                (sg, sgx * inv[s])
            })
            .collect();
        let (dgamma, dbeta): (Vec<f64>, Vec<f64>) = if self.per_row {
            row_sums.iter().map(|&(db, dg)| (dg, db)).unzip()
        } else {
            (0..geo.c)
                .map(|c| {
                    (0..geo.b).fold((0.0, 0.0), |(dg, db), b| {
                        let (sb, sg) = row_sums[b * geo.c + c];
                        (dg + sg, db + sb)
                    })
                })
                .unzip()
        };
        let from_input = matches!(self.stats, Statistics::FromInput);
        // Per statistic group: sums of dx_hat and dx_hat * x_hat (only needed when the statistics
        // depend on the input).
        let sums: Vec<(f64, f64)> = if from_input {
            (0..geo.groups())
                .map(|s| {
                    geo.rows(s).into_iter().fold((0.0, 0.0), |(sg, sgx), r| {
                        let gam = gamma[self.affine_index(r)].to_f64();
                        let (rb, rg) = row_sums[r];
                        (sg + gam * rb, sgx + gam * rg)
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let n = geo.count() as f64;
        let mut dx = vec![T::zero(); x.len()];
        dx.par_chunks_mut(l).enumerate().for_each(|(r, dst)| {
            let s = geo.group_of(r);
            let gam = gamma[self.affine_index(r)].to_f64();
            let src = r * l..(r + 1) * l;
            // dx = inv (gam g - S0 / n - x_hat S1 / n) with x_hat = (x - mean) inv, as
            // `a g + b x + c` per row (in f64, rounded once; a loop that vectorises).
            let (a, b, c) = if from_input {
                let (s0, s1) = (sums[s].0 / n, sums[s].1 / n);
                let b = -inv[s] * inv[s] * s1;
                (inv[s] * gam, b, -inv[s] * s0 - b * mean[s])
            } else {
                (inv[s] * gam, 0.0, 0.0)
            };
            for ((o, gv), xv) in dst.iter_mut().zip(&g[src.clone()]).zip(&x[src]) {
                *o = T::from_f64(a * gv.to_f64() + b * xv.to_f64() + c);
            }
        });
        let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect();
        (dx, cast(dgamma), cast(dbeta))
    }

    fn backward_tensors<T: RowKernel>(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let (dx, dg, db) = with_slice::<T, _>(x, |xv| {
            with_slice::<T, _>(gamma, |gv| {
                with_slice::<T, _>(beta, |bv| {
                    with_slice::<T, _>(&grad, |dv| Ok(self.backward(xv, gv, bv, dv)))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Tensor::from_vec(dx, x.shape(), dev)?,
            Tensor::from_vec(dg, gamma.shape(), dev)?,
            Tensor::from_vec(db, gamma.shape(), dev)?,
        ))
    }
}

/// Runs `f` on the contiguous CPU data of `t` without copying it (a contiguous copy is made
/// first if `t` is strided).
pub(crate) fn with_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("with_slice: the tensor is not on the CPU");
    };
    f(contiguous_slice::<T>("with_slice", cpu, layout)?)
}

/// [`FusedNorm::forward`] as a function, for `dispatch!`.
fn norm_forward<T: RowKernel>(op: &FusedNorm, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
    op.forward(x, gamma, beta)
}

impl CustomOp3 for FusedNorm {
    fn name(&self) -> &'static str {
        "flowfm-fused-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = l1.shape().clone();
        let out = dispatch!(
            self.name(),
            norm_forward,
            [(s1, l1), (s2, l2), (s3, l3)],
            self
        );
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dg, db) = match x.dtype() {
            DType::F32 => self.backward_tensors::<f32>(x, gamma, beta, grad)?,
            DType::F64 => self.backward_tensors::<f64>(x, gamma, beta, grad)?,
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", self.name()),
        };
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

/// Normalises `x` and applies `gamma * x_hat + beta` per channel in one op.
///
/// Returns the output and, for statistics computed from the input, the `(mean, biased variance)`
/// per statistic group (channels for batch norm; `batch * groups` for group norm).
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`; `gamma`, `beta`: `(channels,)`
/// - returns the shape of `x`
pub fn fused_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    grouping: Grouping,
    stats: Statistics,
    eps: f64,
) -> Result<(Tensor, Option<BatchStats>)> {
    fused_norm_act(x, gamma, beta, grouping, stats, eps, Activation::Identity)
}

/// [`fused_norm`] followed by `activation`, in the same op: `act(gamma * x_hat + beta)`, with the
/// activation's backward folded into the norm's (no separate activation node, no intermediate
/// tensor). `gamma` and `beta` may also be given per sample and channel, which folds a per-sample
/// modulation (FiLM: `(gamma x_hat + beta) * scale + shift`) into the same op.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`; `gamma`, `beta`: both `(channels,)` or both
///   `(batch, channels)`
/// - returns the shape of `x`
pub fn fused_norm_act(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    grouping: Grouping,
    stats: Statistics,
    eps: f64,
    activation: Activation,
) -> Result<(Tensor, Option<BatchStats>)> {
    let mut op = checked_op(x, gamma, beta, grouping, stats, eps, activation)?;
    let slot: StatsSlot = Arc::new(Mutex::new(None));
    op.slot = Some(slot.clone());
    let gamma = gamma.to_dtype(x.dtype())?.contiguous()?;
    let beta = beta.to_dtype(x.dtype())?.contiguous()?;
    let y = x.contiguous()?.apply_op3(&gamma, &beta, op)?;
    let stats = slot
        .lock()
        .map_err(|_| candle_core::Error::Msg("fused_norm: poisoned".into()))?
        .take();
    Ok((y, stats))
}

/// The fused op for these arguments, after checking their shapes.
fn checked_op(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    grouping: Grouping,
    stats: Statistics,
    eps: f64,
    activation: Activation,
) -> Result<FusedNorm> {
    let (b, c, l) = x.dims3()?;
    let per_row = gamma.dims() == [b, c];
    if !(gamma.dims() == [c] || per_row) || beta.dims() != gamma.dims() {
        candle_core::bail!(
            "fused_norm: gamma {:?} and beta {:?} must both be ({c},) or both ({b}, {c})",
            gamma.dims(),
            beta.dims()
        );
    }
    if let Grouping::Groups(g) = grouping {
        if g == 0 || c % g != 0 {
            candle_core::bail!("fused_norm: {c} channels are not divisible into {g} groups");
        }
    }
    if let Statistics::Fixed { mean, var } = &stats {
        if mean.len() != c || var.len() != c || grouping != Grouping::PerChannel {
            candle_core::bail!(
                "fused_norm: fixed statistics are per channel ({c}) and only for batch norm"
            );
        }
    }
    Ok(FusedNorm {
        geo: Geometry { b, c, l, grouping },
        stats,
        eps,
        activation,
        slot: None,
        cache: Mutex::new(None),
        per_row,
    })
}

/// A normalisation and its activation reduced to one affine transform per row, for an
/// evaluation-only consumer that applies them while it copies its input (the sliding
/// convolution's input buffer: [`crate::sliding::conv1d_sliding_prepared`]) instead of writing
/// the normalised tensor first. Row `r = b * C + c` of the norm's output is
/// `act(x_row * scale[r] + shift[r])`, computed by the same row kernel as [`fused_norm_act`]
/// with the same `scale` and `shift`, so the values are bit for bit the fused op's.
#[derive(Clone, Debug)]
pub struct RowAffine {
    scale: Vec<f64>,
    shift: Vec<f64>,
    activation: Activation,
    /// `(batch, channels)` of the tensor the transform was computed for.
    rows: (usize, usize),
}

impl RowAffine {
    /// `(batch, channels)` of the tensor it belongs to.
    pub fn rows(&self) -> (usize, usize) {
        self.rows
    }

    /// `dst = act(src * scale[r] + shift[r])` for row `r`.
    pub(crate) fn apply_row<T: RowKernel>(&self, r: usize, dst: &mut [T], src: &[T]) {
        T::affine_act(self.activation, dst, src, self.scale[r], self.shift[r]);
    }

    /// The transform applied to all of `x` `(batch, channels, samples)`: the tensor
    /// [`fused_norm_act`] would have returned (no autograd; for fallbacks and tests).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, l) = x.dims3()?;
        if (b, c) != self.rows {
            candle_core::bail!(
                "RowAffine: computed for {:?} rows, applied to {:?}",
                self.rows,
                x.dims()
            );
        }
        fn rows<T: RowKernel>(p: &RowAffine, x: &[T], l: usize) -> Vec<T> {
            let mut y = vec![T::zero(); x.len()];
            if l > 0 {
                y.par_chunks_mut(l)
                    .zip(x.par_chunks(l))
                    .enumerate()
                    .for_each(|(r, (dst, src))| p.apply_row(r, dst, src));
            }
            y
        }
        let x = x.detach();
        let y = match x.dtype() {
            DType::F32 => with_slice::<f32, _>(&x, |s| Ok(rows(self, s, l)))?,
            DType::F64 => {
                let v = with_slice::<f64, _>(&x, |s| Ok(rows(self, s, l)))?;
                return Tensor::from_vec(v, (b, c, l), x.device());
            }
            dt => candle_core::bail!("RowAffine: unsupported dtype {dt:?}"),
        };
        Tensor::from_vec(y, (b, c, l), x.device())
    }
}

/// The per-row transform of `fused_norm_act(x, gamma, beta, grouping, stats, eps, activation)`
/// (statistics computed from `x` where `stats` says so), without applying it: see
/// [`RowAffine`]. Evaluation only (nothing is recorded for a backward pass; batch statistics
/// are not returned).
///
/// # Shapes
/// - as [`fused_norm_act`]
pub fn norm_row_affine(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    grouping: Grouping,
    stats: Statistics,
    eps: f64,
    activation: Activation,
) -> Result<RowAffine> {
    let op = checked_op(x, gamma, beta, grouping, stats, eps, activation)?;
    let (b, c, _) = x.dims3()?;
    // The affine parameters as the fused op reads them: in `x`'s dtype, then widened.
    let as_f64 = |t: &Tensor| -> Result<Vec<f64>> {
        t.to_dtype(x.dtype())?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()
    };
    let (gamma, beta) = (as_f64(gamma)?, as_f64(beta)?);
    let (mean, inv, _) = match x.dtype() {
        DType::F32 => with_slice::<f32, _>(x, |s| Ok(op.moments(s)))?,
        DType::F64 => with_slice::<f64, _>(x, |s| Ok(op.moments(s)))?,
        dt => candle_core::bail!("norm_row_affine: unsupported dtype {dt:?}"),
    };
    let (scale, shift) = (0..b * c)
        .map(|r| {
            let (s, k) = (op.geo.group_of(r), op.affine_index(r));
            let scale = inv[s] * gamma[k];
            (scale, beta[k] - mean[s] * scale)
        })
        .unzip();
    Ok(RowAffine {
        scale,
        shift,
        activation,
        rows: (b, c),
    })
}
