//! A pre-activation residual block with batch norm, `x + conv2(act(bn2(conv1(act(bn1(x))))))`,
//! trained as one op.
//!
//! Composed from one op per layer, candle's backward pass gives every intermediate tensor its
//! own gradient accumulator: a zero-filled tensor plus an addition, both on one thread (candle's
//! elementwise ops), for the normalised input, both convolution outputs, the second norm's
//! output and the residual sum. On two cores the other core waits while they run; in a HARNet10
//! training step they were about half of the time one worker spent waiting for the other
//! (`perf`, docs/benchmarks.md). As one op the block has one input and one output: the
//! intermediates are kept inside it for its backward pass, their gradients are passed from one
//! kernel to the next without accumulators, and the residual is added inside the second
//! convolution. The kernels are the separate ops' (the fused norm, the sliding convolution) in
//! the same order, so values and gradients are bit for bit those of the composed block
//! (tested in f32 and f64).
//!
//! Only where the separate ops would take the same kernels: on the CPU with flowfm's own
//! kernels, both convolutions `C -> C` without bias where the sliding path applies. Elsewhere
//! [`batch_norm_block_train`] returns `None` and the caller composes the block.

use crate::contiguous_slice;
use crate::conv::Conv1d;
use crate::fused_norm::{Activation, FusedNorm, StatsSlot};
use crate::norm::BatchNorm1d;
use crate::sliding::{self, Elem, Geo};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::sync::Mutex;

/// The block's intermediates from its forward pass: the first norm's output `a1`, the first
/// convolution's output `h1` and the second norm's output `a2`.
struct Saved<T> {
    a1: Vec<T>,
    h1: Vec<T>,
    a2: Vec<T>,
}

enum Stash {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

/// The element types the block runs on, with their place in [`Stash`].
trait BlockElem: Elem {
    fn stash(saved: Saved<Self>) -> Stash;
    fn unstash(stash: &Stash) -> Option<&Saved<Self>>;
}

impl BlockElem for f32 {
    fn stash(saved: Saved<Self>) -> Stash {
        Stash::F32(saved)
    }
    fn unstash(stash: &Stash) -> Option<&Saved<Self>> {
        match stash {
            Stash::F32(s) => Some(s),
            Stash::F64(_) => None,
        }
    }
}

impl BlockElem for f64 {
    fn stash(saved: Saved<Self>) -> Stash {
        Stash::F64(saved)
    }
    fn unstash(stash: &Stash) -> Option<&Saved<Self>> {
        match stash {
            Stash::F64(s) => Some(s),
            Stash::F32(_) => None,
        }
    }
}

/// The op `(x, [w1, w2] flattened, [gamma1, beta1, gamma2, beta2]) -> y`.
struct BnBlock {
    geo: Geo,
    norm1: FusedNorm,
    norm2: FusedNorm,
    saved: Mutex<Option<Stash>>,
}

/// The parameters split out of the op's packed arguments: `(w1, w2, gamma1, beta1, gamma2,
/// beta2)`.
type Parts<'a, T> = (&'a [T], &'a [T], &'a [T], &'a [T], &'a [T], &'a [T]);

impl BnBlock {
    fn split<'a, T>(&self, w: &'a [T], n: &'a [T]) -> Parts<'a, T> {
        let c = self.geo.c_in;
        let (w1, w2) = w.split_at(c * c * self.geo.kernel);
        let (g1, rest) = n.split_at(c);
        let (b1, rest) = rest.split_at(c);
        let (g2, b2) = rest.split_at(c);
        (w1, w2, g1, b1, g2, b2)
    }

    fn forward<T: BlockElem>(&self, x: &[T], w: &[T], n: &[T]) -> Vec<T> {
        let (w1, w2, g1, b1, g2, b2) = self.split(w, n);
        let a1 = self.norm1.forward(x, g1, b1);
        let h1 = sliding::forward(&self.geo, &a1, w1, None, None, None);
        let a2 = self.norm2.forward(&h1, g2, b2);
        let y = sliding::forward(&self.geo, &a2, w2, None, None, Some(x));
        if let Ok(mut saved) = self.saved.lock() {
            *saved = Some(T::stash(Saved { a1, h1, a2 }));
        }
        y
    }

    /// `(dx, [dw1, dw2], [dgamma1, dbeta1, dgamma2, dbeta2])` for the output gradient `gy`.
    fn backward<T: BlockElem>(
        &self,
        x: &[T],
        w: &[T],
        n: &[T],
        gy: &[T],
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let (w1, w2, g1, b1, g2, b2) = self.split(w, n);
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("residual block: poisoned".into()))?;
        let Some(s) = saved.as_ref().and_then(T::unstash) else {
            candle_core::bail!("residual block: backward pass without its forward pass");
        };
        let g = &self.geo;
        let d_a2 = sliding::input_grad(g, gy, w2);
        let d_w2 = sliding::weight_grad(g, &s.a2, gy);
        let (d_h1, d_g2, d_b2) = self.norm2.backward(&s.h1, g2, b2, &d_a2);
        drop(d_a2);
        let d_a1 = sliding::input_grad(g, &d_h1, w1);
        let d_w1 = sliding::weight_grad(g, &s.a1, &d_h1);
        drop(d_h1);
        let (mut dx, d_g1, d_b1) = self.norm1.backward(x, g1, b1, &d_a1);
        // The residual's gradient and the norm's, added as the composed block's accumulator
        // adds them (the residual's arrives first: `0 + gy + dx1`).
        dx.par_chunks_mut(4096)
            .zip(gy.par_chunks(4096))
            .for_each(|(d, r)| {
                for (d, &r) in d.iter_mut().zip(r) {
                    *d = r + *d;
                }
            });
        let mut dw = d_w1;
        dw.extend_from_slice(&d_w2);
        let dn = [d_g1, d_b1, d_g2, d_b2].concat();
        Ok((dx, dw, dn))
    }

    fn backward_tensors<T: BlockElem>(
        &self,
        x: &Tensor,
        w: &Tensor,
        n: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let (dx, dw, dn) = crate::fused_norm::with_slice::<T, _>(x, |xv| {
            crate::fused_norm::with_slice::<T, _>(w, |wv| {
                crate::fused_norm::with_slice::<T, _>(n, |nv| {
                    crate::fused_norm::with_slice::<T, _>(&grad, |gv| self.backward(xv, wv, nv, gv))
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Tensor::from_vec(dx, x.shape(), dev)?,
            Tensor::from_vec(dw, w.shape(), dev)?,
            Tensor::from_vec(dn, n.shape(), dev)?,
        ))
    }
}

impl CustomOp3 for BnBlock {
    fn name(&self) -> &'static str {
        "flowfm-bn-residual-block"
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
        let out = match s1.dtype() {
            DType::F32 => f32::to_cpu_storage_owned(self.forward(
                contiguous_slice::<f32>(self.name(), s1, l1)?,
                contiguous_slice::<f32>(self.name(), s2, l2)?,
                contiguous_slice::<f32>(self.name(), s3, l3)?,
            )),
            DType::F64 => f64::to_cpu_storage_owned(self.forward(
                contiguous_slice::<f64>(self.name(), s1, l1)?,
                contiguous_slice::<f64>(self.name(), s2, l2)?,
                contiguous_slice::<f64>(self.name(), s3, l3)?,
            )),
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", self.name()),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        n: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, dn) = match x.dtype() {
            DType::F32 => self.backward_tensors::<f32>(x, w, n, grad)?,
            DType::F64 => self.backward_tensors::<f64>(x, w, n, grad)?,
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", self.name()),
        };
        Ok((Some(dx), Some(dw), Some(dn)))
    }
}

/// The training-mode block `x + conv2(act(bn2(conv1(act(bn1(x))))))` as one op, with both batch
/// norms' running statistics updated as their own training forward passes would; `None` where
/// the op does not apply (then compose the block from the layers: the same values, one op per
/// layer). Applies on the CPU with flowfm's own kernels, for an `f32` or `f64` input of more than
/// one value per channel, both convolutions `C -> C` without bias, with the same geometry, on the
/// sliding path ([`crate::sliding::applies`]) and keeping the length.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`; returns the same shape
pub fn batch_norm_block_train(
    x: &Tensor,
    (bn1, conv1): (&BatchNorm1d, &Conv1d),
    (bn2, conv2): (&BatchNorm1d, &Conv1d),
    activation: Activation,
) -> Result<Option<Tensor>> {
    let (b, c, l) = x.dims3()?;
    let spec = conv1.spec();
    let applies = crate::uses_own_kernels(x.device())
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && b * l >= 2
        && conv1.bias().is_none()
        && conv2.bias().is_none()
        && spec == conv2.spec()
        && conv1.weight().dims() == conv2.weight().dims()
        && conv1.weight().dims3()?.0 == c
        && conv1.weight().dims3()?.1 == c
        && bn1.running_mean().dims() == [c]
        && bn2.running_mean().dims() == [c];
    if !applies {
        return Ok(None);
    }
    let kernel = conv1.weight().dims3()?.2;
    if !sliding::applies(spec, b, l, kernel) || spec.out_len(l, kernel)? != l {
        return Ok(None);
    }
    let geo = Geo::checked("batch_norm_block_train", x, conv1.weight(), spec)?;
    let (gamma1, beta1, eps1) = bn1.parts();
    let (gamma2, beta2, eps2) = bn2.parts();
    let (norm1, slot1): (FusedNorm, StatsSlot) = FusedNorm::batch_norm((b, c, l), eps1, activation);
    let (norm2, slot2) = FusedNorm::batch_norm((b, c, l), eps2, activation);
    let dt = x.dtype();
    let w = Tensor::cat(
        &[
            conv1.weight().to_dtype(dt)?.flatten_all()?,
            conv2.weight().to_dtype(dt)?.flatten_all()?,
        ],
        0,
    )?;
    let n = Tensor::cat(
        &[
            gamma1.to_dtype(dt)?,
            beta1.to_dtype(dt)?,
            gamma2.to_dtype(dt)?,
            beta2.to_dtype(dt)?,
        ],
        0,
    )?;
    let op = BnBlock {
        geo,
        norm1,
        norm2,
        saved: Mutex::new(None),
    };
    let y = x.contiguous()?.apply_op3(&w, &n, op)?;
    for (bn, slot) in [(bn1, slot1), (bn2, slot2)] {
        let stats = slot
            .lock()
            .map_err(|_| candle_core::Error::Msg("residual block: poisoned".into()))?
            .take();
        bn.record_batch(stats, b * l)?;
    }
    Ok(Some(y))
}
