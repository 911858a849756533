//! 1-D convolution (stride 1, no dilation, one group) as `K` matrix products with shifted views
//! of the input, so the im2col matrix is never written.
//!
//! The input is copied once into a padded, channels-first buffer `X` of `C_in` rows of `B * Lp`
//! values (`Lp = L + 2 * padding`; the padding holds zeros or the wrapped signal; row `c` holds
//! channel `c` of sample 0, then of sample 1, ...). Every row segment is a contiguous copy, so
//! building `X` is a `memcpy`, not a transposition. Shifting every row left by `k` positions,
//! `X_k = X[:, k .. k + N]` with `N = B * Lp - K + 1`, is a plain strided view. Then
//!
//! - forward: `Y (C_out, N) = sum_k W_k (C_out, C_in) @ X_k`, with `W_k[o, c] = w[o, c, k]`;
//!   position `b * Lp + l` is output `l` of sample `b` (the `K - 1` positions that straddle two
//!   samples are computed and dropped);
//! - weight gradient: `dW (C_out, K C_in) = G (C_out, N) @ cols (N, K C_in)`, where `G` holds
//!   the output gradient at the positions of real outputs and zeros at the straddling ones, and
//!   `cols` is the im2col matrix as a strided view of a channels-last copy of the input (row `p`
//!   is the `K C_in` values from position `p` on). Both factors run along the positions, the
//!   product's depth, so one has to be transposed: the input, once (the `transpose` crate). Until
//!   session 15 every tap was its own product `G @ X_k^T`, and the matrix kernels transposed the
//!   channels-first input into their packed layout once per tap and tile, as much time as the
//!   products;
//! - input gradient: `dX (C_in, B * Lp) = sum_k W_k^T @ G'_k`, where `G'` is `G` shifted right by
//!   `K - 1` zeros and `G'_k` its view starting at `K - 1 - k`; then the padding is dropped (or,
//!   for circular padding, added onto the samples it wrapped from).
//!
//! Positions are contiguous in every operand, so the matrix kernels pack their operands from
//! contiguous runs. (Until session 9 the input was laid out channels-last with one product over
//! a `(N, K C_in)` sliding view: its copy was a transposition, 11-13 % of a U-Net evaluation, and
//! packing the view gathered values `C_in` apart; docs/benchmarks.md.)
//!
//! Every product goes through `faer` (safe strided views over the same kind of AVX-512 kernels as
//! candle's matmul), split into tiles whose sizes depend only on the shapes, each tile computed
//! on one thread: the result does not depend on the number of threads. The straddling positions
//! cost `(K - 1) / (L + 1 - ...)` extra work, so [`applies`] keeps this layout for lengths where
//! they are at most 10 % of the positions. Shorter sequences (HARNet10's lengths 15 and 3) take
//! one product with an explicit im2col matrix of the real outputs, `(C_in K, B L_out)`, built
//! inside the op from the same padded copy; until session 15 they went through candle's matmul
//! on an unfold op, with a graph node, a gradient accumulator and a copy for each of the
//! unfold, the product and the transposition back.

use crate::contiguous_slice;
use crate::fused_norm::{RowAffine, RowKernel};
use crate::spec::{Conv1dSpec, PaddingMode};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

/// The element types the sliding convolution runs on (f32 and f64).
pub(crate) trait Elem: WithDType + faer::traits::ComplexField + RowKernel {
    /// This thread's free scratch buffers of this type (see [`Scratch`]).
    fn free_buffers() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>>;
}

thread_local! {
    static FREE_F32: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static FREE_F64: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

impl Elem for f32 {
    fn free_buffers() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>> {
        &FREE_F32
    }
}
impl Elem for f64 {
    fn free_buffers() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>> {
        &FREE_F64
    }
}

/// Free buffers kept per thread and element type; more are dropped when returned.
const KEEP_FREE: usize = 4;

/// A working buffer of `len` values that is returned to its thread's free list when dropped,
/// so the intermediates of the next convolution reuse its memory instead of asking the
/// allocator for fresh, zero-filled megabytes (the zero-filling alone was 7 % of a U-Net
/// evaluation's CPU time; docs/benchmarks.md). **Its contents are unspecified**: every user
/// writes all of it (the products below with `Accum::Replace`, the copies including their
/// zero rows) before reading. The free list is borrowed only inside `take` and `drop`, so a
/// thread that picks up other rayon work while a buffer is out cannot find it borrowed.
struct Scratch<T: Elem> {
    buf: Vec<T>,
}

impl<T: Elem> Scratch<T> {
    fn take(len: usize) -> Self {
        let mut buf = T::free_buffers()
            .with(|free| {
                let mut free = free.borrow_mut();
                // The smallest free buffer that is large enough, else the largest one.
                let pick = free
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.capacity() >= len)
                    .min_by_key(|(_, b)| b.capacity())
                    .or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
                    .map(|(i, _)| i);
                pick.map(|i| free.swap_remove(i))
            })
            .unwrap_or_default();
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, T::zero());
        }
        Self { buf }
    }
}

impl<T: Elem> Drop for Scratch<T> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // A thread being torn down has no free list any more; the buffer is then just freed.
        let _ = T::free_buffers().try_with(|free| {
            if let Ok(mut free) = free.try_borrow_mut() {
                if free.len() < KEEP_FREE {
                    free.push(buf);
                }
            }
        });
    }
}

impl<T: Elem> std::ops::Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf
    }
}

impl<T: Elem> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf
    }
}

/// Geometry of a stride-1 convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geo {
    batch: usize,
    pub(crate) c_in: usize,
    len: usize,
    pub(crate) c_out: usize,
    pub(crate) kernel: usize,
    pad: usize,
    circular: bool,
    /// Whether the products run over an explicit im2col matrix of the real output positions
    /// ([`im2col_rows`]) instead of shifted views of the whole padded batch: where more than
    /// 10 % of the shifted views' positions would straddle two windows (short sequences; see
    /// [`applies`]).
    gather: bool,
}

impl Geo {
    /// The geometry of `conv(x, weight)` under `spec`, or an error naming `op` where the sliding
    /// path cannot compute it (stride, dilation or groups other than 1, mismatched channels, not
    /// on the CPU, no output).
    pub(crate) fn checked(
        op: &str,
        x: &Tensor,
        weight: &Tensor,
        spec: &Conv1dSpec,
    ) -> Result<Self> {
        if !x.device().is_cpu() {
            candle_core::bail!("{op}: CPU only");
        }
        Self::with_input(op, x.dims3()?, weight, spec)
    }

    /// [`Geo::checked`] for an input of `(batch, c_in, len)` on the CPU.
    pub(crate) fn with_input(
        op: &str,
        (batch, c_in, len): (usize, usize, usize),
        weight: &Tensor,
        spec: &Conv1dSpec,
    ) -> Result<Self> {
        let (c_out, c_in_w, kernel) = weight.dims3()?;
        if spec.stride != 1 || spec.dilation != 1 || spec.groups != 1 || c_in_w != c_in {
            candle_core::bail!(
                "{op}: needs stride 1, dilation 1, one group and matching channels ({spec:?}, input {:?}, weight {:?})",
                [batch, c_in, len],
                weight.dims()
            );
        }
        spec.out_len(len, kernel)?;
        let circular = spec.padding_mode == PaddingMode::Circular;
        if circular && spec.padding > len {
            candle_core::bail!(
                "{op}: circular padding {} is longer than the {len} samples it wraps",
                spec.padding
            );
        }
        Ok(Self {
            batch,
            c_in,
            len,
            c_out,
            kernel,
            pad: spec.padding,
            circular,
            gather: !applies(spec, batch, len, kernel),
        })
    }

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

/// Whether the ops of this module compute `spec` on `(batch, _, len)` inputs at all: stride 1,
/// no dilation, one group, an output, and circular padding no longer than the signal. Where
/// [`applies`] does not hold as well, they run over an explicit im2col matrix of the real
/// output positions (short sequences: HARNet10's lengths 15 and 3).
pub fn handles(spec: &Conv1dSpec, len: usize, kernel: usize) -> bool {
    spec.stride == 1
        && spec.dilation == 1
        && spec.groups == 1
        && spec.out_len(len, kernel).is_ok()
        && !(spec.padding_mode == PaddingMode::Circular && spec.padding > len)
}

/// `m` split into tiles of `width` columns (the last one narrower), each with its first column.
fn column_tiles<T>(m: MatMut<'_, T>, width: usize) -> Vec<(usize, MatMut<'_, T>)> {
    let mut tiles = Vec::with_capacity(m.ncols().div_ceil(width));
    let mut rest = m;
    let mut c0 = 0;
    while rest.ncols() > 0 {
        let w = width.min(rest.ncols());
        let (tile, tail) = rest.split_at_col_mut(w);
        tiles.push((c0, tile));
        c0 += w;
        rest = tail;
    }
    tiles
}

/// `dst = sum_k lhs_k @ rhs_k` (the taps added in order), in column tiles of a width fixed by
/// the shapes, one tile per task.
fn par_matmul_taps<T: Elem>(dst: MatMut<'_, T>, taps: &[(MatRef<'_, T>, MatRef<'_, T>)]) {
    let n = dst.ncols();
    // Sixteen tiles (fewer for short rows): small enough that two threads finish together,
    // and the tile's share of the positions costs no extra packing (the weights are read in
    // place). One deep product (an im2col matrix, `K C_in` rows) is split more finely: a
    // tile of 128 columns is already a long product.
    let width = if taps.len() == 1 && taps[0].0.ncols() >= 1024 {
        n.div_ceil(8).next_multiple_of(64).max(128)
    } else {
        n.div_ceil(16).next_multiple_of(16).max(256)
    };
    column_tiles(dst, width)
        .into_par_iter()
        .for_each(|(c0, mut tile)| {
            let w = tile.ncols();
            for (i, (lhs, rhs)) in taps.iter().enumerate() {
                let accum = if i == 0 { Accum::Replace } else { Accum::Add };
                matmul(
                    tile.as_mut(),
                    accum,
                    *lhs,
                    rhs.subcols(c0, w),
                    T::one(),
                    Par::Seq,
                );
            }
        });
}

/// The padded, channels-first copy of `x` `(B, C, L)` with the batch inside each channel's row:
/// `C` rows of `B * Lp` values (row `c` holds sample 0's padded channel `c`, then sample 1's, ...),
/// so that a shift by `k` positions is a plain strided view.
///
/// With `prep`, every row goes through its norm-and-activation transform on the way
/// ([`RowAffine`]), and the padding is taken from the transformed values.
fn channels_first<T: Elem>(g: &Geo, x: &[T], prep: Option<&RowAffine>) -> Scratch<T> {
    let (c, l, lp, pad) = (g.c_in, g.len, g.lp(), g.pad);
    let mut out = Scratch::take(c * g.batch * lp);
    out.par_chunks_mut(lp).enumerate().for_each(|(r, dst)| {
        let (ci, b) = (r / g.batch, r % g.batch);
        let src = &x[(b * c + ci) * l..][..l];
        let (head, rest) = dst.split_at_mut(pad);
        let (body, tail) = rest.split_at_mut(l);
        match prep {
            None => body.copy_from_slice(src),
            Some(p) => p.apply_row(b * c + ci, body, src),
        }
        for (q, v) in head.iter_mut().enumerate() {
            *v = g.source(q).map_or(T::zero(), |i| body[i]);
        }
        for (q, v) in tail.iter_mut().enumerate() {
            *v = g.source(pad + l + q).map_or(T::zero(), |i| body[i]);
        }
    });
    out
}

/// The weights `w (C_out, C_in, K)` as `K` matrices, tap after tap: `W_k (C_out, C_in)`, or
/// `W_k^T (C_in, C_out)` when `transpose`.
fn per_tap<T: Elem>(g: &Geo, w: &[T], transpose: bool) -> Vec<T> {
    let (c, o, k) = (g.c_in, g.c_out, g.kernel);
    let (rows, cols) = if transpose { (c, o) } else { (o, c) };
    let mut taps = vec![T::zero(); k * rows * cols];
    for (r, row) in taps.chunks_exact_mut(cols).enumerate() {
        let (ki, i) = (r / rows, r % rows);
        for (j, v) in row.iter_mut().enumerate() {
            let (oi, ci) = if transpose { (j, i) } else { (i, j) };
            *v = w[(oi * c + ci) * k + ki];
        }
    }
    taps
}

/// The im2col matrix of the real output positions, `(C_in K, B L_out)`, from the padded
/// channels-first copy: row `c K + k` holds, sample after sample, the `L_out` values of channel
/// `c` from padded position `k` on. Its rows are ordered as the weights' `(C_in, K)`, so `w` is
/// its `(C_out, C_in K)` left factor as stored.
fn im2col_rows<T: Elem>(g: &Geo, xcf: &[T]) -> Scratch<T> {
    let (k, lp, lo) = (g.kernel, g.lp(), g.out_len());
    let (bl, nn) = (g.batch * lp, g.batch * lo);
    let mut cols = Scratch::take(g.c_in * k * nn);
    cols.par_chunks_mut(nn).enumerate().for_each(|(r, row)| {
        let (ci, ki) = (r / k, r % k);
        for (b, dst) in row.chunks_exact_mut(lo).enumerate() {
            dst.copy_from_slice(&xcf[ci * bl + b * lp + ki..][..lo]);
        }
    });
    cols
}

/// `y (B, C_out, L_out)` from the product's `(C_out, row_len)` layout, where sample `b`'s
/// outputs start at column `b * stride`, plus `bias` and `residual` when given.
fn batch_major<T: Elem>(
    g: &Geo,
    yt: &[T],
    (row_len, stride): (usize, usize),
    bias: Option<&[T]>,
    residual: Option<&[T]>,
) -> Vec<T> {
    let (o, lo) = (g.c_out, g.out_len());
    let mut y = vec![T::zero(); g.batch * o * lo];
    y.par_chunks_mut(lo).enumerate().for_each(|(r, dst)| {
        let (b, oi) = (r / o, r % o);
        let src = &yt[oi * row_len + b * stride..][..lo];
        match bias {
            Some(bv) => {
                let add = bv[oi];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = s + add;
                }
            }
            None => dst.copy_from_slice(src),
        }
        if let Some(res) = residual {
            for (d, &v) in dst.iter_mut().zip(&res[r * lo..(r + 1) * lo]) {
                *d += v;
            }
        }
    });
    y
}

/// The output gradient `(B, C_out, L_out)` as `C_out` rows of `row_len` positions: `lead` zeros,
/// then sample after sample `L_out` values followed by zeros up to `stride` (`Lp` for the
/// shifted views, `L_out` for the im2col matrix; the last sample cut off at `row_len`).
fn gradient_rows<T: Elem>(
    g: &Geo,
    grad: &[T],
    lead: usize,
    row_len: usize,
    stride: usize,
) -> Scratch<T> {
    let (o, lo) = (g.c_out, g.out_len());
    let mut rows = Scratch::take(o * row_len);
    rows.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(oi, row)| {
            let (head, body) = row.split_at_mut(lead);
            head.fill(T::zero());
            for (b, sample) in body.chunks_mut(stride).enumerate() {
                let (real, rest) = sample.split_at_mut(lo.min(sample.len()));
                real.copy_from_slice(&grad[(b * o + oi) * lo..][..real.len()]);
                rest.fill(T::zero());
            }
        });
    rows
}

/// Output length from which [`forward`] computes one product per sample straight into the
/// output instead of one product over all positions followed by a copy.
const DIRECT_MIN_LEN: usize = 256;

/// The convolution of `x` (after `prep`, when given), plus `bias`, plus `residual` `(B, C_out,
/// L_out)` when given (added last, as `residual + conv` would be).
pub(crate) fn forward<T: Elem>(
    g: &Geo,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    prep: Option<&RowAffine>,
    residual: Option<&[T]>,
) -> Vec<T> {
    let (c, o, k, lp, lo, n) = (
        g.c_in,
        g.c_out,
        g.kernel,
        g.lp(),
        g.out_len(),
        g.positions(),
    );
    let bl = g.batch * lp;
    let xcf = channels_first(g, x, prep);
    if g.gather {
        // One product with the im2col matrix of the real outputs: `Y (C_out, B L_out) =
        // w (C_out, C_in K) @ cols`.
        let nn = g.batch * lo;
        let cols = im2col_rows(g, &xcf);
        drop(xcf);
        let mut yt = Scratch::take(o * nn);
        par_matmul_taps(
            MatMut::from_row_major_slice_mut(&mut yt, o, nn),
            &[(
                MatRef::from_row_major_slice(w, o, c * k),
                MatRef::from_row_major_slice(&cols, c * k, nn),
            )],
        );
        return batch_major(g, &yt, (nn, lo), bias, residual);
    }
    let wk = per_tap(g, w, false);
    // Tap k reads X shifted left by k positions: X[:, k .. k + N], a view with row stride B Lp.
    let taps: Vec<_> = (0..k)
        .map(|ki| {
            (
                MatRef::from_row_major_slice(&wk[ki * o * c..(ki + 1) * o * c], o, c),
                MatRef::from_row_major_slice_with_stride(&xcf[ki..], c, n, bl),
            )
        })
        .collect();
    if lo >= DIRECT_MIN_LEN {
        // Long windows: one product per sample, written straight into its block of `y`, which
        // starts out holding the bias (no intermediate, no copy, no zero-filling).
        let mut y = Vec::with_capacity(g.batch * o * lo);
        for r in 0..g.batch * o {
            let v = bias.map_or(T::zero(), |bv| bv[r % o]);
            y.extend(std::iter::repeat_n(v, lo));
        }
        y.par_chunks_mut(o * lo).enumerate().for_each(|(b, yb)| {
            let mut dst = MatMut::from_row_major_slice_mut(yb, o, lo);
            for (lhs, rhs) in &taps {
                matmul(
                    dst.as_mut(),
                    Accum::Add,
                    *lhs,
                    rhs.subcols(b * lp, lo),
                    T::one(),
                    Par::Seq,
                );
            }
            if let Some(res) = residual {
                for (d, &r) in yb.iter_mut().zip(&res[b * o * lo..(b + 1) * o * lo]) {
                    *d += r;
                }
            }
        });
        return y;
    }
    let mut yt = Scratch::take(o * n);
    par_matmul_taps(MatMut::from_row_major_slice_mut(&mut yt, o, n), &taps);
    batch_major(g, &yt, (n, lp), bias, residual)
}

/// The padded, channels-last copy of `x` `(B, C, L)`: `B * Lp` rows of `C` values (row
/// `b * Lp + q` holds padded position `q` of sample `b`), so that the im2col matrix of the
/// convolution is a plain strided view of it: row `p` of `(N, K C)` is the `K C` values from
/// row `p` on. Each sample is one cache-blocked transposition (the `transpose` crate), the
/// padding rows are copies of the rows they wrap from (or zeros).
fn channels_last<T: Elem>(g: &Geo, x: &[T]) -> Scratch<T> {
    let (c, l, lp, pad) = (g.c_in, g.len, g.lp(), g.pad);
    let mut out = Scratch::take(g.batch * lp * c);
    out.par_chunks_mut(lp * c).enumerate().for_each(|(b, dst)| {
        let (head, rest) = dst.split_at_mut(pad * c);
        let (body, tail) = rest.split_at_mut(l * c);
        transpose::transpose(&x[b * c * l..(b + 1) * c * l], body, l, c);
        for (q, row) in head.chunks_exact_mut(c).enumerate() {
            match g.source(q) {
                Some(i) => row.copy_from_slice(&body[i * c..(i + 1) * c]),
                None => row.fill(T::zero()),
            }
        }
        for (q, row) in tail.chunks_exact_mut(c).enumerate() {
            match g.source(pad + l + q) {
                Some(i) => row.copy_from_slice(&body[i * c..(i + 1) * c]),
                None => row.fill(T::zero()),
            }
        }
    });
    out
}

/// `dw (C_out, C_in, K)` from the input and the output gradient.
///
/// All taps in one product per tile: `dW (C_out, K C_in) = G (C_out, N) @ cols (N, K C_in)`,
/// where `cols` is the im2col matrix as a sliding view of the channels-last input (row `p` is
/// the `K C_in` values from position `p` on; [`channels_last`]) and `G` holds the output
/// gradient at the positions of real outputs and zeros at the straddling ones. Both operands
/// run along the positions, the product's depth, so one of them has to be transposed: here the
/// input, once. (Until session 15 every tap was its own product with the channels-first input,
/// and the matrix kernels transposed the input into their packed layout once per tap and tile,
/// as much time as the products themselves; docs/benchmarks.md.)
pub(crate) fn weight_grad<T: Elem>(g: &Geo, x: &[T], grad: &[T]) -> Vec<T> {
    weight_grad_with(g, x, &OutGrad::new(g, grad))
}

/// [`input_grad`] and [`weight_grad`] from one layout of the output gradient.
pub(crate) fn conv_grads<T: Elem>(g: &Geo, x: &[T], grad: &[T], w: &[T]) -> (Vec<T>, Vec<T>) {
    let og = OutGrad::new(g, grad);
    (input_grad_with(g, &og, w), weight_grad_with(g, x, &og))
}

/// The output gradient `(B, C_out, L_out)` laid out for both gradient products: for the
/// shifted views, `C_out` rows of `K - 1` zeros followed by the samples at stride `Lp` (the
/// input gradient reads it shifted by each tap, the weight gradient from position `K - 1` on,
/// zero at the straddling positions); for the im2col matrix, `(C_out, B L_out)`.
pub(crate) struct OutGrad<T: Elem> {
    rows: Scratch<T>,
    row_len: usize,
}

impl<T: Elem> OutGrad<T> {
    pub(crate) fn new(g: &Geo, grad: &[T]) -> Self {
        if g.gather {
            let lo = g.out_len();
            let row_len = g.batch * lo;
            Self {
                rows: gradient_rows(g, grad, 0, row_len, lo),
                row_len,
            }
        } else {
            let row_len = g.batch * g.lp() + g.kernel - 1;
            Self {
                rows: gradient_rows(g, grad, g.kernel - 1, row_len, g.lp()),
                row_len,
            }
        }
    }
}

fn weight_grad_with<T: Elem>(g: &Geo, x: &[T], og: &OutGrad<T>) -> Vec<T> {
    if g.gather {
        return weight_grad_gathered(g, x, og);
    }
    let (c, o, k, n) = (g.c_in, g.c_out, g.kernel, g.positions());
    let kc = k * c;
    let xcl = channels_last(g, x);
    let cols = MatRef::from_row_major_slice_with_stride(&xcl[..], n, kc, c);
    // The gradient as (C_out, N), zero at the straddling positions.
    let lhs = MatRef::from_row_major_slice_with_stride(&og.rows[k - 1..], o, n, og.row_len);
    // The sum over positions is split into a fixed number of chunks (by the shapes alone) whose
    // partial products are added in order, and the columns into fixed tiles.
    let chunks = (n / 2048).clamp(1, 16);
    let chunk_len = n.div_ceil(chunks);
    // Multiples of 64 rows (four AVX-512 vectors) fill the matrix kernel's widest tile.
    let width = kc.div_ceil(4).next_multiple_of(64).max(64);
    let mut partial = Scratch::take(chunks * o * kc);
    let mut tasks = Vec::new();
    for (s, buf) in partial.chunks_exact_mut(o * kc).enumerate() {
        let tiles = column_tiles(MatMut::from_row_major_slice_mut(buf, o, kc), width);
        tasks.extend(tiles.into_iter().map(|(c0, tile)| (s, c0, tile)));
    }
    tasks.into_par_iter().for_each(|(s, c0, tile)| {
        let start = s * chunk_len;
        let len = chunk_len.min(n - start);
        let wd = tile.ncols();
        matmul(
            tile,
            Accum::Replace,
            lhs.subcols(start, len),
            cols.subrows(start, len).subcols(c0, wd),
            T::one(),
            Par::Seq,
        );
    });
    // partial[s] is (C_out, K, C_in); dw is (C_out, C_in, K).
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

/// [`weight_grad`] over the im2col matrix of the real outputs: `dw (C_out, C_in K) = G (C_out,
/// B L_out) @ cols^T`, in column tiles of a width fixed by the shapes.
fn weight_grad_gathered<T: Elem>(g: &Geo, x: &[T], og: &OutGrad<T>) -> Vec<T> {
    let (c, o, k, lo) = (g.c_in, g.c_out, g.kernel, g.out_len());
    let (ck, nn) = (c * k, g.batch * lo);
    let xcf = channels_first(g, x, None);
    let cols = im2col_rows(g, &xcf);
    drop(xcf);
    let cols = MatRef::from_row_major_slice(&cols, ck, nn);
    let lhs = MatRef::from_row_major_slice(&og.rows, o, nn);
    let width = ck.div_ceil(8).next_multiple_of(64).max(64);
    let mut dw = vec![T::zero(); o * ck];
    column_tiles(MatMut::from_row_major_slice_mut(&mut dw, o, ck), width)
        .into_par_iter()
        .for_each(|(c0, tile)| {
            let wd = tile.ncols();
            matmul(
                tile,
                Accum::Replace,
                lhs,
                cols.subrows(c0, wd).transpose(),
                T::one(),
                Par::Seq,
            );
        });
    dw
}

/// `dx (B, C_in, L)` from the output gradient and the weights.
pub(crate) fn input_grad<T: Elem>(g: &Geo, grad: &[T], w: &[T]) -> Vec<T> {
    input_grad_with(g, &OutGrad::new(g, grad), w)
}

fn input_grad_with<T: Elem>(g: &Geo, og: &OutGrad<T>, w: &[T]) -> Vec<T> {
    let (c, o, k, lp) = (g.c_in, g.c_out, g.kernel, g.lp());
    let bl = g.batch * lp;
    if g.gather {
        // `dcols (C_in K, B L_out) = w^T @ G`, then each column added back where im2col read it.
        let nn = g.batch * g.out_len();
        let lo = g.out_len();
        let mut dcols = Scratch::take(c * k * nn);
        par_matmul_taps(
            MatMut::from_row_major_slice_mut(&mut dcols, c * k, nn),
            &[(
                MatRef::from_row_major_slice(w, o, c * k).transpose(),
                MatRef::from_row_major_slice(&og.rows, o, nn),
            )],
        );
        let mut dxp = Scratch::take(c * bl);
        dxp.par_chunks_mut(bl).enumerate().for_each(|(ci, row)| {
            row.fill(T::zero());
            for ki in 0..k {
                let src = &dcols[(ci * k + ki) * nn..][..nn];
                for (b, part) in src.chunks_exact(lo).enumerate() {
                    for (d, &v) in row[b * lp + ki..][..lo].iter_mut().zip(part) {
                        *d += v;
                    }
                }
            }
        });
        return unpad(g, &dxp);
    }
    // The gradient as (C_out, B Lp + K - 1), shifted right by K - 1: position `K - 1 + b Lp + l`
    // holds output `l` of sample `b`; every other position is zero.
    let (gp, gl) = (&og.rows, og.row_len);
    let wt = per_tap(g, w, true);
    // dX_padded (C_in, B Lp) = sum_k W_k^T @ G'[:, K - 1 - k .. K - 1 - k + B Lp].
    let taps: Vec<_> = (0..k)
        .map(|ki| {
            (
                MatRef::from_row_major_slice(&wt[ki * c * o..(ki + 1) * c * o], c, o),
                MatRef::from_row_major_slice_with_stride(&gp[k - 1 - ki..], o, bl, gl),
            )
        })
        .collect();
    let mut dxp = Scratch::take(c * bl);
    par_matmul_taps(MatMut::from_row_major_slice_mut(&mut dxp, c, bl), &taps);
    unpad(g, &dxp)
}

/// `dx (B, C_in, L)` from the gradient of the padded channels-first copy `(C_in, B Lp)`: the
/// padding dropped or, for circular padding, added onto the samples it wrapped from.
fn unpad<T: Elem>(g: &Geo, dxp: &[T]) -> Vec<T> {
    let (c, l, lp, pad) = (g.c_in, g.len, g.lp(), g.pad);
    let bl = g.batch * lp;
    let mut dx = vec![T::zero(); g.batch * c * l];
    dx.par_chunks_mut(l).enumerate().for_each(|(r, dst)| {
        let (b, ci) = (r / c, r % c);
        let src = &dxp[ci * bl + b * lp..][..lp];
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
pub(crate) fn bias_grad<T: Elem>(g: &Geo, grad: &[T]) -> Vec<T> {
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

fn forward_nobias<T: Elem>(g: &Geo, x: &[T], w: &[T]) -> Vec<T> {
    forward(g, x, w, None, None, None)
}

fn forward_bias<T: Elem>(g: &Geo, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
    forward(g, x, w, Some(b), None, None)
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
    /// The gradients of the input and the weights; `None` for one that no gradient can flow into
    /// (not a variable and not computed from one: a batch of data, frozen weights), which
    /// candle's backward pass then skips.
    fn grads(
        self: &Arc<Self>,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = x
            .track_op()
            .then(|| grad.apply_op2_no_bwd(&w.contiguous()?, &InputGrad(self.clone())))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| grad.apply_op2_no_bwd(&x.contiguous()?, &WeightGrad(self.clone())))
            .transpose()?;
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
        self.0.grads(x, w, grad)
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
        Ok((dx, dw, Some(db)))
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
/// [`crate::conv1d`] and [`crate::conv1d_bias`] use it on the CPU where it [`handles`] the
/// geometry.
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
    let geo = Arc::new(Geo::checked("conv1d_sliding", x, weight, spec)?);
    let c_out = geo.c_out;
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

/// An error naming `op` if any of `tensors` is part of an autograd graph (the evaluation-only
/// ops have no backward pass).
pub(crate) fn refuse_graphs<const N: usize>(op: &str, tensors: [Option<&Tensor>; N]) -> Result<()> {
    if tensors.into_iter().flatten().any(Tensor::track_op) {
        candle_core::bail!("{op}: evaluation only, but an argument is part of an autograd graph");
    }
    Ok(())
}

/// The evaluation-only convolution of [`conv1d_sliding_prepared`]: `(x, w)`, with the bias, the
/// residual and the input transform carried by the op.
struct SlideConvPrepared {
    geo: Arc<Geo>,
    prep: Option<Arc<RowAffine>>,
    bias: Option<Tensor>,
    residual: Option<Tensor>,
}

/// `f` on the CPU values of `t` as `T`, or on `None` ([`crate::fused_norm::with_slice`]).
fn held_slice<T: WithDType, R>(
    t: Option<&Tensor>,
    f: impl FnOnce(Option<&[T]>) -> Result<R>,
) -> Result<R> {
    match t {
        None => f(None),
        Some(t) => crate::fused_norm::with_slice(t, |s| f(Some(s))),
    }
}

impl SlideConvPrepared {
    fn run<T: Elem>(&self, x: &[T], w: &[T]) -> Result<Vec<T>> {
        held_slice::<T, _>(self.bias.as_ref(), |bias| {
            held_slice::<T, _>(self.residual.as_ref(), |residual| {
                Ok(forward(
                    &self.geo,
                    x,
                    w,
                    bias,
                    self.prep.as_deref(),
                    residual,
                ))
            })
        })
    }
}

impl CustomOp2 for SlideConvPrepared {
    fn name(&self) -> &'static str {
        "flowfm-slide-conv1d-prepared"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let out = match s1.dtype() {
            DType::F32 => f32::to_cpu_storage_owned(self.run::<f32>(
                contiguous_slice(name, s1, l1)?,
                contiguous_slice(name, s2, l2)?,
            )?),
            DType::F64 => f64::to_cpu_storage_owned(self.run::<f64>(
                contiguous_slice(name, s1, l1)?,
                contiguous_slice(name, s2, l2)?,
            )?),
            dt => candle_core::bail!("{name}: unsupported dtype {dt:?}"),
        };
        Ok((out, self.geo.out_shape()))
    }
}

/// `residual + conv1d(prep(x), weight) + bias` in one pass for **evaluation** (no autograd: an
/// error if any argument is part of a graph): the norm and activation that precede the
/// convolution (`prep`, from [`crate::fused_norm::norm_row_affine`]) are applied while the input
/// is copied into the convolution's padded buffer, and the residual is added into the output,
/// so neither the normalised tensor nor the sum is written as a tensor of its own. The values
/// are bit for bit those of the separate ops (`fused_norm_act`, [`conv1d_sliding`], then
/// `residual + y`). For the shapes it [`handles`]; [`crate::conv::conv1d_prepared`] falls back
/// to the separate ops elsewhere.
///
/// # Shapes
/// - `x`: `(batch, c_in, samples)`; `prep` computed for `(batch, c_in)`
/// - `weight`: `(c_out, c_in, kernel)`; `bias`: `(c_out,)`
/// - `residual`: `(batch, c_out, out_len)`
/// - returns `(batch, c_out, out_len)`
pub fn conv1d_sliding_prepared(
    x: &Tensor,
    prep: Option<&RowAffine>,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    spec: &Conv1dSpec,
) -> Result<Tensor> {
    let geo = Geo::checked("conv1d_sliding_prepared", x, weight, spec)?;
    refuse_graphs(
        "conv1d_sliding_prepared",
        [Some(x), Some(weight), bias, residual],
    )?;
    let (batch, c_in, c_out, out_len) = (geo.batch, geo.c_in, geo.c_out, geo.out_len());
    if let Some(p) = prep {
        if p.rows() != (batch, c_in) {
            candle_core::bail!(
                "conv1d_sliding_prepared: the input transform is for {:?} rows, the input {:?}",
                p.rows(),
                x.dims()
            );
        }
    }
    if let Some(b) = bias {
        if b.dims() != [c_out] {
            candle_core::bail!(
                "conv1d_sliding_prepared: bias {:?} does not match {c_out} output channels",
                b.dims()
            );
        }
    }
    if let Some(r) = residual {
        if r.dims() != [batch, c_out, out_len] {
            candle_core::bail!(
                "conv1d_sliding_prepared: residual {:?} is not the output's shape ({batch}, {c_out}, {out_len})",
                r.dims()
            );
        }
    }
    let dt = x.dtype();
    let held = |t: Option<&Tensor>| -> Result<Option<Tensor>> {
        t.map(|t| t.to_dtype(dt)?.contiguous()).transpose()
    };
    let op = SlideConvPrepared {
        geo: Arc::new(geo),
        prep: prep.map(|p| Arc::new(p.clone())),
        bias: held(bias)?,
        residual: held(residual)?,
    };
    x.contiguous()?
        .apply_op2_no_bwd(&weight.to_dtype(dt)?.contiguous()?, &op)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) (no RNG needed for a bit-equality check).
    fn values(n: usize, salt: u64) -> Vec<f64> {
        (0..n as u64)
            .map(|i| {
                let h = (i ^ salt)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .rotate_left(17);
                (h >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    fn all_three(g: &Geo, x: &[f64], w: &[f64], b: &[f64], gy: &[f64]) -> [Vec<f64>; 3] {
        [
            forward(g, x, w, Some(b), None, None),
            weight_grad(g, x, gy),
            input_grad(g, gy, w),
        ]
    }

    /// Reused buffers hold whatever the last user left; every value the kernels read must have
    /// been written first. Poisoning this thread's free list with NaN-filled, oversized buffers
    /// must not change a single bit of the results (the free list is per thread, and the
    /// buffers are taken on the calling thread).
    #[test]
    fn reused_scratch_buffers_do_not_leak_into_results() {
        let geos = [
            (2, 3, 17, 4, 3, 1, false),
            (3, 2, 20, 5, 5, 2, true),
            (2, 4, 12, 3, 1, 0, false),
            (1, 3, 9, 2, 3, 4, true),
            (4, 5, 11, 6, 5, 0, false),
            (2, 3, 300, 4, 5, 2, true),
        ];
        // Both layouts compute every geometry; each is checked on each.
        for ((batch, c_in, len, c_out, kernel, pad, circular), gather) in
            geos.into_iter().flat_map(|geo| [(geo, false), (geo, true)])
        {
            let g = Geo {
                batch,
                c_in,
                len,
                c_out,
                kernel,
                pad,
                circular,
                gather,
            };
            let x = values(batch * c_in * len, 1);
            let w = values(c_out * c_in * kernel, 2);
            let b = values(c_out, 3);
            let gy = values(batch * c_out * g.out_len(), 4);
            f64::free_buffers().with(|f| f.borrow_mut().clear());
            let clean = all_three(&g, &x, &w, &b, &gy);
            for size in [1usize, 64, 100_000] {
                f64::free_buffers().with(|f| {
                    let mut f = f.borrow_mut();
                    f.clear();
                    for _ in 0..KEEP_FREE {
                        f.push(vec![f64::NAN; size]);
                    }
                });
                let poisoned = all_three(&g, &x, &w, &b, &gy);
                for (a, p) in clean.iter().zip(&poisoned) {
                    assert!(a.iter().all(|v| v.is_finite()), "{g:?}");
                    let same = a.iter().zip(p).all(|(u, v)| u.to_bits() == v.to_bits());
                    assert!(
                        same,
                        "{g:?}: poisoned scratch size {size} changed the result"
                    );
                }
            }
        }
        // The free list stays bounded.
        f64::free_buffers().with(|f| assert!(f.borrow().len() <= KEEP_FREE));
    }
}
