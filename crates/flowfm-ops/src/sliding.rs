//! 1-D convolution (stride 1, no dilation, one group) as one matrix product with a
//! sliding-window ("Toeplitz") view of the input, so the im2col matrix is never written.
//!
//! The input is copied once into a padded, channels-last buffer `X` of `B * Lp` rows of `C_in`
//! values (`Lp = L + 2 * padding`; the padding holds zeros or the wrapped signal). Row `n` of the
//! view `V` is `X[n .. n + K]` flattened: `K * C_in` consecutive values, and consecutive rows start
//! `C_in` values apart, so `V` is a strided view of `X` (rows overlap). Then
//!
//! - forward: `Y^T (C_out, N) = W' (C_out, K C_in) @ V^T`, with `W'[o, k C_in + c] = w[o, c, k]`
//!   and `N = B * Lp - K + 1` positions; position `b * Lp + l` is output `l` of sample `b` (the
//!   `K - 1` positions that straddle two samples are computed and dropped);
//! - weight gradient: `dW' = G (C_out, N) @ V`, where `G` holds the output gradient at the
//!   positions of real outputs and zeros at the straddling ones;
//! - input gradient: a convolution of the zero-padded gradient with the flipped kernel, again one
//!   product with a sliding view (of the channels-last gradient), then the padding is folded back
//!   (added onto the samples it wrapped from for circular padding).
//!
//! Every product goes through `faer` (safe strided views over the same kind of AVX-512 kernels as
//! candle's matmul), split into tiles whose sizes depend only on the shapes, each tile computed
//! on one thread: the result does not depend on the number of threads. The straddling positions
//! cost `(K - 1) / (L + 1 - ...)` extra work, so [`applies`] keeps this path for lengths where
//! they are at most 10 % of the positions; short sequences keep the im2col path.

use crate::contiguous_slice;
use crate::spec::{Conv1dSpec, PaddingMode};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use std::sync::Arc;

/// The element types the sliding convolution runs on (f32 and f64).
pub(crate) trait Elem: WithDType + faer::traits::ComplexField {}
impl Elem for f32 {}
impl Elem for f64 {}

/// Geometry of a stride-1 convolution.
#[derive(Clone, Copy, Debug)]
struct Geo {
    batch: usize,
    c_in: usize,
    len: usize,
    c_out: usize,
    kernel: usize,
    pad: usize,
    circular: bool,
}

impl Geo {
    /// Padded length of one sample.
    fn lp(&self) -> usize {
        self.len + 2 * self.pad
    }

    /// Output length of one sample.
    fn out_len(&self) -> usize {
        self.lp() + 1 - self.kernel
    }

    /// Rows of the sliding view (every window start that stays inside the padded buffer).
    fn positions(&self) -> usize {
        self.batch * self.lp() + 1 - self.kernel
    }

    /// Input sample at padded position `q` of a sample, or `None` for a zero.
    fn source(&self, q: usize) -> Option<usize> {
        let (p, l) = (self.pad, self.len);
        if q < p {
            self.circular.then(|| q + l - p)
        } else if q < p + l {
            Some(q - p)
        } else {
            self.circular.then(|| q - p - l)
        }
    }
}

/// Whether [`conv1d_sliding`] handles `spec` and is expected to be faster than im2col for a
/// batch of `batch` windows of `len` samples: stride 1, no dilation, one group, and at most 10 %
/// of the computed positions straddling two windows.
pub fn applies(spec: &Conv1dSpec, batch: usize, len: usize, kernel: usize) -> bool {
    if spec.stride != 1 || spec.dilation != 1 || spec.groups != 1 {
        return false;
    }
    let Ok(out_len) = spec.out_len(len, kernel) else {
        return false;
    };
    let positions = batch * (len + 2 * spec.padding) + 1 - kernel;
    10 * positions <= 11 * batch * out_len
}

/// `dst = lhs @ rhs`, in column tiles of a width fixed by the shapes, one tile per task.
fn par_matmul<T: Elem>(dst: MatMut<'_, T>, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>) {
    let n = dst.ncols();
    let width = n.div_ceil(8).next_multiple_of(16).max(256);
    let mut tiles = Vec::with_capacity(n.div_ceil(width));
    let mut rest = dst;
    let mut c0 = 0;
    while rest.ncols() > 0 {
        let w = width.min(rest.ncols());
        let (tile, tail) = rest.split_at_col_mut(w);
        tiles.push((c0, tile));
        c0 += w;
        rest = tail;
    }
    tiles.into_par_iter().for_each(|(c0, tile)| {
        let w = tile.ncols();
        matmul(
            tile,
            Accum::Replace,
            lhs,
            rhs.subcols(c0, w),
            T::one(),
            Par::Seq,
        );
    });
}

/// The padded, channels-last copy of `x` `(B, C, L)`: `B * Lp` rows of `C` values.
fn channels_last<T: Elem>(g: &Geo, x: &[T]) -> Vec<T> {
    let (c, l, lp) = (g.c_in, g.len, g.lp());
    let mut out = vec![T::zero(); g.batch * lp * c];
    out.par_chunks_mut(lp * c).enumerate().for_each(|(b, dst)| {
        let src = &x[b * c * l..(b + 1) * c * l];
        for (q, row) in dst.chunks_exact_mut(c).enumerate() {
            if let Some(i) = g.source(q) {
                for (ci, o) in row.iter_mut().enumerate() {
                    *o = src[ci * l + i];
                }
            }
        }
    });
    out
}

fn forward<T: Elem>(g: &Geo, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (c, o, k, lp, lo, n) = (
        g.c_in,
        g.c_out,
        g.kernel,
        g.lp(),
        g.out_len(),
        g.positions(),
    );
    let kc = k * c;
    let xcl = channels_last(g, x);
    let mut wp = vec![T::zero(); o * kc];
    for (oi, row) in wp.chunks_exact_mut(kc).enumerate() {
        for ci in 0..c {
            for ki in 0..k {
                row[ki * c + ci] = w[(oi * c + ci) * k + ki];
            }
        }
    }
    let v = MatRef::from_row_major_slice_with_stride(&xcl, n, kc, c);
    let mut yt = vec![T::zero(); o * n];
    par_matmul(
        MatMut::from_row_major_slice_mut(&mut yt, o, n),
        MatRef::from_row_major_slice(&wp, o, kc),
        v.transpose(),
    );
    let mut y = vec![T::zero(); g.batch * o * lo];
    y.par_chunks_mut(lo).enumerate().for_each(|(r, dst)| {
        let (b, oi) = (r / o, r % o);
        let src = &yt[oi * n + b * lp..][..lo];
        match bias {
            Some(bv) => {
                let add = bv[oi];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = s + add;
                }
            }
            None => dst.copy_from_slice(src),
        }
    });
    y
}

/// `dw (C_out, C_in, K)` from the input and the output gradient.
fn weight_grad<T: Elem>(g: &Geo, x: &[T], grad: &[T]) -> Vec<T> {
    let (c, o, k, lp, lo, n) = (
        g.c_in,
        g.c_out,
        g.kernel,
        g.lp(),
        g.out_len(),
        g.positions(),
    );
    let kc = k * c;
    let xcl = channels_last(g, x);
    // The gradient as (C_out, N), zero at the straddling positions.
    let mut gt = vec![T::zero(); o * n];
    gt.par_chunks_mut(n).enumerate().for_each(|(oi, row)| {
        for b in 0..g.batch {
            row[b * lp..b * lp + lo].copy_from_slice(&grad[(b * o + oi) * lo..][..lo]);
        }
    });
    let v = MatRef::from_row_major_slice_with_stride(&xcl, n, kc, c);
    let lhs = MatRef::from_row_major_slice(&gt, o, n);
    // The sum over positions is split into a fixed number of chunks (by the shapes alone) whose
    // partial products are added in order, and the columns into fixed tiles.
    let chunks = (n / 4096).clamp(1, 8);
    let chunk_len = n.div_ceil(chunks);
    let width = kc.div_ceil(4).next_multiple_of(16).max(64);
    let mut partial = vec![T::zero(); chunks * o * kc];
    let mut tasks = Vec::new();
    for (s, buf) in partial.chunks_exact_mut(o * kc).enumerate() {
        let mut rest = MatMut::from_row_major_slice_mut(buf, o, kc);
        let mut c0 = 0;
        while rest.ncols() > 0 {
            let wd = width.min(rest.ncols());
            let (tile, tail) = rest.split_at_col_mut(wd);
            tasks.push((s, c0, tile));
            c0 += wd;
            rest = tail;
        }
    }
    tasks.into_par_iter().for_each(|(s, c0, tile)| {
        let start = s * chunk_len;
        let len = chunk_len.min(n - start);
        let wd = tile.ncols();
        matmul(
            tile,
            Accum::Replace,
            lhs.subcols(start, len),
            v.subrows(start, len).subcols(c0, wd),
            T::one(),
            Par::Seq,
        );
    });
    let mut dw = vec![T::zero(); o * c * k];
    dw.par_chunks_mut(c * k).enumerate().for_each(|(oi, row)| {
        for ci in 0..c {
            for ki in 0..k {
                let j = oi * kc + ki * c + ci;
                let mut acc = partial[j];
                for s in 1..chunks {
                    acc += partial[s * o * kc + j];
                }
                row[ci * k + ki] = acc;
            }
        }
    });
    dw
}

/// `dx (B, C_in, L)` from the output gradient and the weights.
fn input_grad<T: Elem>(g: &Geo, grad: &[T], w: &[T]) -> Vec<T> {
    let (c, o, k, l, lp, lo, pad) = (g.c_in, g.c_out, g.kernel, g.len, g.lp(), g.out_len(), g.pad);
    let rows = g.batch * lp;
    // Channels-last gradient, shifted down by K - 1 rows: row `b * Lp + l + K - 1` holds output
    // `l` of sample `b`; every other row is zero.
    let mut z = vec![T::zero(); (rows + k - 1) * o];
    let (_, body) = z.split_at_mut((k - 1) * o);
    body.par_chunks_mut(lp * o)
        .enumerate()
        .for_each(|(b, dst)| {
            for (li, row) in dst.chunks_exact_mut(o).take(lo).enumerate() {
                for (oi, v) in row.iter_mut().enumerate() {
                    *v = grad[(b * o + oi) * lo + li];
                }
            }
        });
    // W_flip^T[c, k' C_out + o] = w[o, c, K - 1 - k'].
    let ko = k * o;
    let mut wf = vec![T::zero(); c * ko];
    for (ci, row) in wf.chunks_exact_mut(ko).enumerate() {
        for kk in 0..k {
            for oi in 0..o {
                row[kk * o + oi] = w[(oi * c + ci) * k + (k - 1 - kk)];
            }
        }
    }
    let u = MatRef::from_row_major_slice_with_stride(&z, rows, ko, o);
    let mut dxt = vec![T::zero(); c * rows];
    par_matmul(
        MatMut::from_row_major_slice_mut(&mut dxt, c, rows),
        MatRef::from_row_major_slice(&wf, c, ko),
        u.transpose(),
    );
    let mut dx = vec![T::zero(); g.batch * c * l];
    dx.par_chunks_mut(l).enumerate().for_each(|(r, dst)| {
        let (b, ci) = (r / c, r % c);
        let src = &dxt[ci * rows + b * lp..][..lp];
        dst.copy_from_slice(&src[pad..pad + l]);
        if g.circular {
            for (q, &v) in src[..pad].iter().enumerate() {
                dst[q + l - pad] += v;
            }
            for (q, &v) in src[pad + l..].iter().enumerate() {
                dst[q] += v;
            }
        }
    });
    dx
}

/// `db (C_out,)`: the output gradient summed over batch and positions (in f64).
fn bias_grad<T: Elem>(g: &Geo, grad: &[T]) -> Vec<T> {
    let (o, lo) = (g.c_out, g.out_len());
    (0..o)
        .into_par_iter()
        .map(|oi| {
            let mut acc = 0.0;
            for b in 0..g.batch {
                acc += grad[(b * o + oi) * lo..][..lo]
                    .iter()
                    .map(|v| v.to_f64())
                    .sum::<f64>();
            }
            T::from_f64(acc)
        })
        .collect()
}

/// Runs `$f::<T>` on the contiguous data of the given storages, for f32 and f64.
macro_rules! dispatch {
    ($name:expr, $f:ident, [$(($s:expr, $l:expr)),+] $(, $extra:expr)*) => {
        match ($($s.dtype(),)+).0 {
            DType::F32 => f32::to_cpu_storage_owned($f::<f32>(
                $($extra,)* $(contiguous_slice::<f32>($name, $s, $l)?,)+
            )),
            DType::F64 => f64::to_cpu_storage_owned($f::<f64>(
                $($extra,)* $(contiguous_slice::<f64>($name, $s, $l)?,)+
            )),
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", $name),
        }
    };
}

fn forward_nobias<T: Elem>(g: &Geo, x: &[T], w: &[T]) -> Vec<T> {
    forward(g, x, w, None)
}

fn forward_bias<T: Elem>(g: &Geo, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
    forward(g, x, w, Some(b))
}

/// The convolution without bias: `(x, w)`.
struct SlideConv(Arc<Geo>);
/// The convolution with bias: `(x, w, bias)`.
struct SlideConvBias(Arc<Geo>);
/// `(grad, w) -> dx`.
struct InputGrad(Arc<Geo>);
/// `(grad, x) -> dw`.
struct WeightGrad(Arc<Geo>);
/// `grad -> db`.
struct BiasGrad(Arc<Geo>);

impl Geo {
    fn out_shape(&self) -> Shape {
        Shape::from((self.batch, self.c_out, self.out_len()))
    }

    /// `(dx, dw)` for the output gradient `grad`.
    fn grads(self: &Arc<Self>, x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let dx = grad.apply_op2_no_bwd(&w.contiguous()?, &InputGrad(self.clone()))?;
        let dw = grad.apply_op2_no_bwd(&x.contiguous()?, &WeightGrad(self.clone()))?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for SlideConv {
    fn name(&self) -> &'static str {
        "flowfm-slide-conv1d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g: &Geo = &self.0;
        let out = dispatch!(self.name(), forward_nobias, [(s1, l1), (s2, l2)], g);
        Ok((out, g.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.0.grads(x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for SlideConvBias {
    fn name(&self) -> &'static str {
        "flowfm-slide-conv1d-bias"
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
        let g: &Geo = &self.0;
        let out = dispatch!(self.name(), forward_bias, [(s1, l1), (s2, l2), (s3, l3)], g);
        Ok((out, g.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.0.grads(x, w, grad)?;
        let db = grad
            .contiguous()?
            .apply_op1_no_bwd(&BiasGrad(self.0.clone()))?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "flowfm-slide-conv1d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g: &Geo = &self.0;
        let out = dispatch!(self.name(), input_grad, [(s1, l1), (s2, l2)], g);
        Ok((out, Shape::from((g.batch, g.c_in, g.len))))
    }
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "flowfm-slide-conv1d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g: &Geo = &self.0;
        // `weight_grad` takes (x, grad); the op's arguments are (grad, x).
        let out = match s1.dtype() {
            DType::F32 => f32::to_cpu_storage_owned(weight_grad::<f32>(
                g,
                contiguous_slice::<f32>(self.name(), s2, l2)?,
                contiguous_slice::<f32>(self.name(), s1, l1)?,
            )),
            DType::F64 => f64::to_cpu_storage_owned(weight_grad::<f64>(
                g,
                contiguous_slice::<f64>(self.name(), s2, l2)?,
                contiguous_slice::<f64>(self.name(), s1, l1)?,
            )),
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", self.name()),
        };
        Ok((out, Shape::from((g.c_out, g.c_in, g.kernel))))
    }
}

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "flowfm-slide-conv1d-bias-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let g: &Geo = &self.0;
        let out = dispatch!(self.name(), bias_grad, [(s1, l1)], g);
        Ok((out, Shape::from(g.c_out)))
    }
}

/// 1-D convolution through a sliding-window view of the input (see the module docs), with an
/// optional bias `(c_out,)`. Only for stride 1, dilation 1 and one group (an error otherwise);
/// [`crate::conv1d`] and [`crate::conv1d_bias`] use it on the CPU where [`applies`].
///
/// # Shapes
/// - `x`: `(batch, c_in, samples)`
/// - `weight`: `(c_out, c_in, kernel)`; `bias`: `(c_out,)`
/// - returns `(batch, c_out, out_len)` with `out_len` from [`Conv1dSpec::out_len`]
pub fn conv1d_sliding(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    spec: &Conv1dSpec,
) -> Result<Tensor> {
    let (batch, c_in, len) = x.dims3()?;
    let (c_out, c_in_w, kernel) = weight.dims3()?;
    if spec.stride != 1 || spec.dilation != 1 || spec.groups != 1 || c_in_w != c_in {
        candle_core::bail!(
            "conv1d_sliding: needs stride 1, dilation 1, one group and matching channels ({spec:?}, input {:?}, weight {:?})",
            x.dims(),
            weight.dims()
        );
    }
    if !x.device().is_cpu() {
        candle_core::bail!("conv1d_sliding: CPU only");
    }
    spec.out_len(len, kernel)?;
    let geo = Arc::new(Geo {
        batch,
        c_in,
        len,
        c_out,
        kernel,
        pad: spec.padding,
        circular: spec.padding_mode == PaddingMode::Circular,
    });
    let x = x.contiguous()?;
    let weight = weight.to_dtype(x.dtype())?.contiguous()?;
    match bias {
        None => x.apply_op2(&weight, SlideConv(geo)),
        Some(b) => {
            if b.dims() != [c_out] {
                candle_core::bail!(
                    "conv1d_sliding: bias {:?} does not match {c_out} output channels",
                    b.dims()
                );
            }
            let b = b.to_dtype(x.dtype())?.contiguous()?;
            x.apply_op3(&weight, &b, SlideConvBias(geo))
        }
    }
}
