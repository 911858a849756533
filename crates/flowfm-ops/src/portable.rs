//! The portable path: convolution and blur downsampling composed only of candle primitives that
//! every backend implements (`pad_with_zeros`, `narrow`, `cat`, `stack`, `reshape`, `transpose`,
//! 2-D `matmul`, scalar `affine`, `add`). It is what the ops run on a CUDA device, where our CPU
//! kernels do not exist, and it deliberately avoids candle's `conv1d`, whose backward on the CPU
//! is wrong (see the crate docs) and has never been checked here on a GPU. Every primitive it uses
//! has a backward that the CPU gradient checks exercise, so the same f64 checks run unchanged
//! on a GPU (`tests/portable_path.rs`).
//!
//! Convolution: the padded input is cut into `kernel` shifted (and, for a stride, subsampled)
//! views, one per tap; stacked they are the im2col matrix `(C_in/g * K, B * L_out)`, and one 2-D
//! product with the weight `(C_out/g, C_in/g * K)` per group gives the output, exactly the
//! arithmetic of the CPU im2col path.

use crate::spec::{Conv1dSpec, PaddingMode};
use candle_core::{Result, Tensor};

/// `x` padded by `padding` samples on both sides (zeros, or the signal wrapped around), plus
/// `extra_right` zeros at the end that no tap ever reads (they let a strided view be cut as a
/// reshape).
fn pad(x: &Tensor, padding: usize, mode: PaddingMode, extra_right: usize) -> Result<Tensor> {
    let l = x.dim(2)?;
    let padded = match mode {
        PaddingMode::Zeros => return x.pad_with_zeros(2, padding, padding + extra_right),
        PaddingMode::Circular if padding == 0 => x.clone(),
        PaddingMode::Circular => {
            if padding > l {
                candle_core::bail!("circular padding {padding} exceeds the input length {l}");
            }
            Tensor::cat(
                &[
                    &x.narrow(2, l - padding, padding)?,
                    x,
                    &x.narrow(2, 0, padding)?,
                ],
                2,
            )?
        }
    };
    if extra_right == 0 {
        Ok(padded)
    } else {
        padded.pad_with_zeros(2, 0, extra_right)
    }
}

/// Tap `k` of a padded `(B, C, P)` input: samples `k * dilation + j * stride`, `j < out_len`,
/// as a `(B, C, out_len)` tensor.
fn tap(
    padded: &Tensor,
    k: usize,
    dilation: usize,
    stride: usize,
    out_len: usize,
) -> Result<Tensor> {
    let view = padded.narrow(2, k * dilation, out_len * stride)?;
    if stride == 1 {
        return Ok(view);
    }
    let (b, c, _) = view.dims3()?;
    view.contiguous()?
        .reshape((b, c, out_len, stride))?
        .narrow(3, 0, 1)?
        .squeeze(3)
}

/// Every tap of `x` for a kernel of `kernel` taps under `spec` (padding applied), and the output
/// length.
fn taps(x: &Tensor, kernel: usize, spec: &Conv1dSpec) -> Result<(Vec<Tensor>, usize)> {
    let l = x.dim(2)?;
    let out_len = spec.out_len(l, kernel)?;
    // The last tap reads up to dilation * (K - 1) + out_len * stride - 1, which is at most
    // l + 2 * padding + stride - 2: stride - 1 zeros at the end cover it.
    let padded = pad(x, spec.padding, spec.padding_mode, spec.stride - 1)?;
    let views = (0..kernel)
        .map(|k| tap(&padded, k, spec.dilation, spec.stride, out_len))
        .collect::<Result<Vec<_>>>()?;
    Ok((views, out_len))
}

/// Convolution (cross-correlation, as PyTorch's `conv1d`) with an optional bias, from candle
/// primitives only; any stride, dilation, groups, zero or circular padding.
///
/// # Shapes
/// - `x`: `(batch, c_in, samples)`
/// - `weight`: `(c_out, c_in / groups, kernel)`; `bias`: `(c_out,)`
/// - returns `(batch, c_out, out_len)`
pub fn conv1d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    spec: &Conv1dSpec,
) -> Result<Tensor> {
    let (b, c_in, _) = x.dims3()?;
    let (c_out, c_in_g, k) = weight.dims3()?;
    let g = spec.groups;
    crate::spec::check_groups(c_in, weight, g)?;
    let c_out_g = c_out / g;
    let (views, out_len) = taps(x, k, spec)?;
    // (B, C_in, K, L_out): row ci * K + k of the im2col matrix, as the weight is laid out.
    let cols = Tensor::stack(&views, 2)?;
    let mut outs = Vec::with_capacity(g);
    for gi in 0..g {
        let cols_g = cols
            .narrow(1, gi * c_in_g, c_in_g)?
            .reshape((b, c_in_g * k, out_len))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((c_in_g * k, b * out_len))?;
        let w_g = weight
            .narrow(0, gi * c_out_g, c_out_g)?
            .reshape((c_out_g, c_in_g * k))?;
        outs.push(
            w_g.matmul(&cols_g)?
                .reshape((c_out_g, b, out_len))?
                .transpose(0, 1)?,
        );
    }
    let y = if g == 1 {
        outs.pop().expect("one group").contiguous()?
    } else {
        Tensor::cat(&outs, 1)?
    };
    match bias {
        None => Ok(y),
        Some(bias) => {
            if bias.dims() != [c_out] {
                candle_core::bail!(
                    "conv1d: bias {:?} does not match {c_out} output channels",
                    bias.dims()
                );
            }
            y.broadcast_add(&bias.to_dtype(y.dtype())?.reshape((1, c_out, 1))?)
        }
    }
}

/// The same fixed `kernel` applied to every channel (zero padding), from candle primitives:
/// `y = sum_k kernel[k] * tap_k`.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`; returns `(batch, channels, out_len)`
pub fn blur_downsample1d(
    x: &Tensor,
    kernel: &[f64],
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let spec = Conv1dSpec {
        stride,
        padding,
        ..Default::default()
    };
    let (views, _) = taps(x, kernel.len(), &spec)?;
    let mut acc: Option<Tensor> = None;
    for (view, &h) in views.iter().zip(kernel) {
        let term = view.affine(h, 0.0)?;
        acc = Some(match acc {
            None => term,
            Some(a) => a.add(&term)?,
        });
    }
    acc.ok_or_else(|| candle_core::Error::Msg("blur_downsample1d: empty kernel".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::reference;
    use candle_core::{DType, Device};

    #[test]
    fn portable_conv_equals_the_definition_on_awkward_geometries() {
        let mut rng = flowfm_core::SeededRng::new(5);
        // (b, c_in, l, c_out, k, stride, padding, mode, dilation, groups)
        let cases = [
            (2, 3, 11, 4, 3, 1, 1, PaddingMode::Zeros, 1, 1),
            (1, 2, 10, 3, 5, 3, 2, PaddingMode::Circular, 1, 1),
            (2, 4, 13, 6, 3, 2, 2, PaddingMode::Circular, 2, 2),
            (3, 1, 7, 2, 1, 1, 0, PaddingMode::Zeros, 1, 1),
            (2, 4, 9, 4, 4, 4, 0, PaddingMode::Zeros, 1, 4),
        ];
        for (b, c_in, l, c_out, k, stride, padding, padding_mode, dilation, groups) in cases {
            let spec = Conv1dSpec {
                stride,
                padding,
                padding_mode,
                dilation,
                groups,
            };
            let x = rng.normal_vec(b * c_in * l);
            let w = rng.normal_vec(c_out * (c_in / groups) * k);
            let xt = Tensor::from_vec(x.clone(), (b, c_in, l), &Device::Cpu).unwrap();
            let wt = Tensor::from_vec(w.clone(), (c_out, c_in / groups, k), &Device::Cpu).unwrap();
            let got: Vec<f64> = conv1d(&xt, &wt, None, &spec)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = reference(&x, (b, c_in, l), &w, (c_out, c_in / groups, k), &spec);
            assert_eq!(got.len(), want.len(), "{spec:?}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-12, "{spec:?} element {i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn portable_blur_equals_a_depthwise_convolution_with_the_same_kernel() {
        let mut rng = flowfm_core::SeededRng::new(6);
        let x = rng
            .normal_tensor((2, 3, 17), DType::F64, &Device::Cpu)
            .unwrap();
        let kernel = [0.25, 0.5, 0.25];
        let got = blur_downsample1d(&x, &kernel, 2, 1).unwrap();
        let w = Tensor::new(&kernel, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 3))
            .unwrap()
            .repeat((3, 1, 1))
            .unwrap();
        let spec = Conv1dSpec {
            stride: 2,
            padding: 1,
            groups: 3,
            ..Default::default()
        };
        let want = conv1d(&x, &w, None, &spec).unwrap();
        let diff: f64 = got
            .sub(&want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(got.dims(), [2, 3, 9]);
        assert!(diff < 1e-15, "{diff}");
    }
}
