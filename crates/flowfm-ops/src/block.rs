//! A pre-activation residual block trained as one op: HARNet10's batch-norm block
//! `x + conv2(act(bn2(conv1(act(bn1(x))))))` ([`batch_norm_block_train`]) and the U-Net's
//! group-norm block with a FiLM-modulated second norm, biases and an identity or 1x1 skip
//! ([`group_norm_block_train`]).
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
//! kernels, every convolution of the block one that [`crate::sliding`] handles and keeping the
//! length.
//! Elsewhere both functions return `None` and the caller composes the block.

use crate::conv::Conv1d;
use crate::fused_norm::{with_slice, Activation, FusedNorm, Grouping, StatsSlot};
use crate::norm::{check_modulation, BatchNorm1d, GroupNorm};
use crate::sliding::{self, Elem, Geo};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// The block's intermediates from its forward pass, in the input's element type: the first
/// norm's output `a1`, the first convolution's output `h1` and the second norm's output `a2`.
struct Saved {
    a1: CpuStorage,
    h1: CpuStorage,
    a2: CpuStorage,
}

/// The packed argument sizes of one block: convolution weights `c_out * c_in * k`, biases
/// `c_out`, and the two norms' `gamma` (= `beta`) lengths.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    w1: usize,
    w2: usize,
    bias: Option<usize>,
    skip: Option<usize>,
    n1: usize,
    n2: usize,
}

/// The block's parameters split out of its packed arguments.
struct Params<'a, T> {
    w1: &'a [T],
    b1: Option<&'a [T]>,
    w2: &'a [T],
    b2: Option<&'a [T]>,
    ws: Option<&'a [T]>,
    bs: Option<&'a [T]>,
    g1: &'a [T],
    be1: &'a [T],
    g2: &'a [T],
    be2: &'a [T],
}

/// The op `(x, [w1, b1, w2, b2, w_skip, b_skip] flattened (biases and the skip convolution where
/// present), [gamma1, beta1, gamma2, beta2]) -> y`.
struct Block {
    /// The first convolution `C_in -> C_out`, the second `C_out -> C_out`, and the 1x1 skip
    /// convolution `C_in -> C_out` (without it the input is the residual).
    g1: Geo,
    g2: Geo,
    gs: Option<Geo>,
    sizes: Sizes,
    norm1: FusedNorm,
    norm2: FusedNorm,
    saved: Mutex<Option<Saved>>,
}

/// `take` values off the front of `rest`.
fn take<'a, T>(rest: &mut &'a [T], n: usize) -> &'a [T] {
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    head
}

impl Block {
    fn split<'a, T>(&self, w: &'a [T], n: &'a [T]) -> Params<'a, T> {
        let z = self.sizes;
        let mut w = w;
        let mut n = n;
        let w1 = take(&mut w, z.w1);
        let b1 = z.bias.map(|c| take(&mut w, c));
        let w2 = take(&mut w, z.w2);
        let b2 = z.bias.map(|c| take(&mut w, c));
        let ws = z.skip.map(|s| take(&mut w, s));
        let bs = z.skip.and(z.bias).map(|c| take(&mut w, c));
        Params {
            w1,
            b1,
            w2,
            b2,
            ws,
            bs,
            g1: take(&mut n, z.n1),
            be1: take(&mut n, z.n1),
            g2: take(&mut n, z.n2),
            be2: take(&mut n, z.n2),
        }
    }

    fn forward<T: Elem>(&self, x: &[T], w: &[T], n: &[T]) -> Vec<T> {
        let p = self.split(w, n);
        let a1 = self.norm1.forward(x, p.g1, p.be1);
        let h1 = sliding::forward(&self.g1, &a1, p.w1, p.b1, None, None);
        let a2 = self.norm2.forward(&h1, p.g2, p.be2);
        let skip = match (&self.gs, p.ws) {
            (Some(gs), Some(ws)) => Some(sliding::forward(gs, x, ws, p.bs, None, None)),
            _ => None,
        };
        let residual = skip.as_deref().unwrap_or(x);
        let y = sliding::forward(&self.g2, &a2, p.w2, p.b2, None, Some(residual));
        if let Ok(mut saved) = self.saved.lock() {
            *saved = Some(Saved {
                a1: T::to_cpu_storage_owned(a1),
                h1: T::to_cpu_storage_owned(h1),
                a2: T::to_cpu_storage_owned(a2),
            });
        }
        y
    }

    /// The gradients of the three packed arguments for the output gradient `gy`.
    fn backward<T: Elem>(
        &self,
        x: &[T],
        w: &[T],
        n: &[T],
        gy: &[T],
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let p = self.split(w, n);
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("residual block: poisoned".into()))?;
        let Some(s) = saved.as_ref() else {
            candle_core::bail!("residual block: backward pass without its forward pass");
        };
        let (a1, h1, a2) = (
            T::cpu_storage_as_slice(&s.a1)?,
            T::cpu_storage_as_slice(&s.h1)?,
            T::cpu_storage_as_slice(&s.a2)?,
        );
        let (g1, g2) = (&self.g1, &self.g2);
        let (d_a2, d_w2) = sliding::conv_grads(g2, a2, gy, p.w2);
        let d_b2 = p.b2.map(|_| sliding::bias_grad(g2, gy));
        let (d_h1, d_g2, d_be2) = self.norm2.backward(h1, p.g2, p.be2, &d_a2);
        drop(d_a2);
        let (d_a1, d_w1) = sliding::conv_grads(g1, a1, &d_h1, p.w1);
        let d_b1 = p.b1.map(|_| sliding::bias_grad(g1, &d_h1));
        drop(d_h1);
        let (mut dx, d_g1, d_be1) = self.norm1.backward(x, p.g1, p.be1, &d_a1);
        // The input's second gradient: the residual's own (`gy`), or the skip convolution's.
        // The composed block's accumulator adds the two (`0 + first + second`), in either order
        // the same sum.
        let mut skip_grads = Vec::new();
        let other = match (&self.gs, p.ws) {
            (Some(gs), Some(ws)) => {
                skip_grads.push(sliding::weight_grad(gs, x, gy));
                if p.bs.is_some() {
                    skip_grads.push(sliding::bias_grad(gs, gy));
                }
                std::borrow::Cow::Owned(sliding::input_grad(gs, gy, ws))
            }
            _ => std::borrow::Cow::Borrowed(gy),
        };
        dx.par_chunks_mut(4096)
            .zip(other.par_chunks(4096))
            .for_each(|(d, r)| {
                for (d, &r) in d.iter_mut().zip(r) {
                    *d = r + *d;
                }
            });
        let mut dw = Vec::with_capacity(w.len());
        dw.extend_from_slice(&d_w1);
        dw.extend(d_b1.into_iter().flatten());
        dw.extend_from_slice(&d_w2);
        dw.extend(d_b2.into_iter().flatten());
        dw.extend(skip_grads.into_iter().flatten());
        let dn = [d_g1, d_be1, d_g2, d_be2].concat();
        Ok((dx, dw, dn))
    }

    fn backward_tensors<T: Elem>(
        &self,
        x: &Tensor,
        w: &Tensor,
        n: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let (dx, dw, dn) = with_slice::<T, _>(x, |xv| {
            with_slice::<T, _>(w, |wv| {
                with_slice::<T, _>(n, |nv| {
                    with_slice::<T, _>(&grad, |gv| self.backward(xv, wv, nv, gv))
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

/// [`Block::forward`] as a function, for `dispatch!`.
fn block_forward<T: Elem>(op: &Block, x: &[T], w: &[T], n: &[T]) -> Vec<T> {
    op.forward(x, w, n)
}

impl CustomOp3 for Block {
    fn name(&self) -> &'static str {
        "flowfm-residual-block"
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
        let (b, _, l) = l1.shape().dims3()?;
        let shape = Shape::from((b, self.g2.c_out, l));
        let out = dispatch!(
            self.name(),
            block_forward,
            [(s1, l1), (s2, l2), (s3, l3)],
            self
        );
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

/// The geometry of `conv` on `(b, c_in, l)` if it is `c_in -> c_out` and the sliding path
/// computes it keeping the length, with a bias exactly when `bias`.
fn sliding_geo(
    x: &Tensor,
    conv: &Conv1d,
    (c_in, c_out): (usize, usize),
    bias: bool,
) -> Result<Option<Geo>> {
    let (b, _, l) = x.dims3()?;
    let (o, c, k) = conv.weight().dims3()?;
    let spec = conv.spec();
    if (o, c) != (c_out, c_in)
        || conv.bias().is_some() != bias
        || !sliding::handles(spec, l, k)
        || spec.out_len(l, k)? != l
    {
        return Ok(None);
    }
    Geo::with_input("residual block", (b, c_in, l), conv.weight(), spec).map(Some)
}

/// A norm's trained parameters, already per row where the norm is modulated.
struct NormArgs<'a> {
    op: FusedNorm,
    gamma: &'a Tensor,
    beta: &'a Tensor,
}

/// Runs the block op on `x` and returns its output.
fn run_block(
    x: &Tensor,
    (g1, conv1): (Geo, &Conv1d),
    (g2, conv2): (Geo, &Conv1d),
    skip: Option<(Geo, &Conv1d)>,
    norm1: NormArgs,
    norm2: NormArgs,
) -> Result<Tensor> {
    let dt = x.dtype();
    let flat = |t: &Tensor| t.to_dtype(dt)?.flatten_all();
    let mut w = vec![flat(conv1.weight())?];
    w.extend(conv1.bias().map(flat).transpose()?);
    w.push(flat(conv2.weight())?);
    w.extend(conv2.bias().map(flat).transpose()?);
    if let Some((_, s)) = skip {
        w.push(flat(s.weight())?);
        w.extend(s.bias().map(flat).transpose()?);
    }
    let w = Tensor::cat(&w, 0)?;
    let n = Tensor::cat(
        &[
            flat(norm1.gamma)?,
            flat(norm1.beta)?,
            flat(norm2.gamma)?,
            flat(norm2.beta)?,
        ],
        0,
    )?;
    let sizes = Sizes {
        w1: conv1.weight().elem_count(),
        w2: conv2.weight().elem_count(),
        bias: conv1.bias().map(Tensor::elem_count),
        skip: skip.map(|(_, s)| s.weight().elem_count()),
        n1: norm1.gamma.elem_count(),
        n2: norm2.gamma.elem_count(),
    };
    let op = Block {
        g1,
        g2,
        gs: skip.map(|(g, _)| g),
        sizes,
        norm1: norm1.op,
        norm2: norm2.op,
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op3(&w, &n, op)
}

/// Whether the block op can run on `x` at all: flowfm's own CPU kernels, `f32` or `f64`, more
/// than one value per statistic.
fn runs_on(x: &Tensor) -> Result<bool> {
    let (b, _, l) = x.dims3()?;
    Ok(crate::uses_own_kernels(x.device())
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && b * l >= 2)
}

/// The training-mode block `x + conv2(act(bn2(conv1(act(bn1(x))))))` as one op, with both batch
/// norms' running statistics updated as their own training forward passes would; `None` where
/// the op does not apply (then compose the block from the layers: the same values, one op per
/// layer). Applies on the CPU with flowfm's own kernels, for an `f32` or `f64` input of more than
/// one value per channel, both convolutions `C -> C` without bias, computed by
/// [`crate::sliding`] ([`crate::sliding::handles`]) and keeping the length.
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
    if !runs_on(x)? || bn1.running_mean().dims() != [c] || bn2.running_mean().dims() != [c] {
        return Ok(None);
    }
    let (Some(g1), Some(g2)) = (
        sliding_geo(x, conv1, (c, c), false)?,
        sliding_geo(x, conv2, (c, c), false)?,
    ) else {
        return Ok(None);
    };
    let (gamma1, beta1, eps1) = bn1.parts();
    let (gamma2, beta2, eps2) = bn2.parts();
    let per_channel =
        |eps| FusedNorm::from_input((b, c, l), Grouping::PerChannel, false, eps, activation);
    let (op1, slot1) = per_channel(eps1);
    let (op2, slot2) = per_channel(eps2);
    let y = run_block(
        x,
        (g1, conv1),
        (g2, conv2),
        None,
        NormArgs {
            op: op1,
            gamma: gamma1,
            beta: beta1,
        },
        NormArgs {
            op: op2,
            gamma: gamma2,
            beta: beta2,
        },
    )?;
    for (bn, slot) in [(bn1, slot1), (bn2, slot2)] {
        bn.record_batch(take_stats(&slot)?, b * l)?;
    }
    Ok(Some(y))
}

/// The batch statistics a forward pass left in `slot`.
fn take_stats(slot: &StatsSlot) -> Result<Option<crate::fused_norm::BatchStats>> {
    Ok(slot
        .lock()
        .map_err(|_| candle_core::Error::Msg("residual block: poisoned".into()))?
        .take())
}

/// The training-mode block `skip(x) + conv2(act(gn2(conv1(act(gn1(x)))) * scale + shift))` as
/// one op: group norms, the second modulated per sample (FiLM, `scale` and `shift` `(batch,
/// C_out)`, folded into its affine transform by the same candle ops as
/// [`GroupNorm::forward_modulated`]), convolutions with biases, and `skip` a 1x1 convolution
/// `C_in -> C_out` (`None`: the identity, `C_in = C_out`). `None` where the op does not apply
/// (then compose the block: the same values); see [`batch_norm_block_train`].
///
/// # Shapes
/// - `x`: `(batch, C_in, samples)`; returns `(batch, C_out, samples)`
pub fn group_norm_block_train(
    x: &Tensor,
    (gn1, conv1): (&GroupNorm, &Conv1d),
    (gn2, scale, shift, conv2): (&GroupNorm, &Tensor, &Tensor, &Conv1d),
    skip: Option<&Conv1d>,
    activation: Activation,
) -> Result<Option<Tensor>> {
    let (b, c_in, l) = x.dims3()?;
    let c_out = conv1.weight().dim(0)?;
    let bias = conv1.bias().is_some();
    if !runs_on(x)? || (skip.is_none() && c_in != c_out) {
        return Ok(None);
    }
    let (Some(g1), Some(g2)) = (
        sliding_geo(x, conv1, (c_in, c_out), bias)?,
        sliding_geo(x, conv2, (c_out, c_out), bias)?,
    ) else {
        return Ok(None);
    };
    let skip = match skip {
        None => None,
        Some(s) if s.weight().dim(2)? == 1 => match sliding_geo(x, s, (c_in, c_out), bias)? {
            Some(gs) => Some((gs, s)),
            None => return Ok(None),
        },
        Some(_) => return Ok(None),
    };
    let (gamma1, beta1, groups1, eps1) = gn1.parts();
    let (own_gamma2, _, groups2, eps2) = gn2.parts();
    if gamma1.dims() != [c_in] || own_gamma2.dims() != [c_out] {
        return Ok(None);
    }
    check_modulation("group_norm_block_train", (b, c_out), scale, shift)?;
    let (gamma2, beta2) = gn2.folded(scale, shift)?;
    let (op1, _) = FusedNorm::from_input(
        (b, c_in, l),
        Grouping::Groups(groups1),
        false,
        eps1,
        activation,
    );
    let (op2, _) = FusedNorm::from_input(
        (b, c_out, l),
        Grouping::Groups(groups2),
        true,
        eps2,
        activation,
    );
    run_block(
        x,
        (g1, conv1),
        (g2, conv2),
        skip,
        NormArgs {
            op: op1,
            gamma: gamma1,
            beta: beta1,
        },
        NormArgs {
            op: op2,
            gamma: &gamma2,
            beta: &beta2,
        },
    )
    .map(Some)
}
