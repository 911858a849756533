//! 1-D convolution with correct gradients. Stride-1, undilated, single-group convolutions on the
//! CPU go through [`crate::sliding`]'s ops (matrix products with shifted views of the input, no
//! im2col matrix, or for short sequences an im2col matrix inside the op); every other geometry
//! through im2col ("unfold") as our own differentiable op with a col2im backward, then one 2-D
//! matrix product per group.
//!
//! `y = W (C_out, C_in/g * K) @ cols (C_in/g * K, B * L_out)`, reshaped to `(B, C_out, L_out)`.
//! The unfold op implements zero and circular padding, stride and dilation, so padding never
//! needs a separate copy. candle's matmul backward for 2-D (and unbroadcast batched) operands is
//! correct; the gradient checks in `tests/` verify the composition.

use crate::contiguous_slice;
use crate::fused_norm::RowAffine;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor, WithDType};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;
use std::sync::Arc;

pub use crate::spec::{Conv1dSpec, PaddingMode};

/// The gather table of an unfold: for kernel tap `k` and output position `l`, the input sample
/// read (`-1` for a zero pad).
#[derive(Debug)]
struct Geometry {
    batch: usize,
    channels: usize,
    len: usize,
    kernel: usize,
    out_len: usize,
    table: Vec<i64>,
    /// Whether the unfolded matrix ends with a row of ones (so that a bias column appended to
    /// the weight matrix adds the bias inside the matrix product).
    ones_row: bool,
}

impl Geometry {
    fn new(
        batch: usize,
        channels: usize,
        len: usize,
        kernel: usize,
        spec: &Conv1dSpec,
    ) -> Result<Self> {
        let out_len = spec.out_len(len, kernel)?;
        let mut table = Vec::with_capacity(kernel * out_len);
        for k in 0..kernel {
            for l in 0..out_len {
                let p = (l * spec.stride + k * spec.dilation) as i64 - spec.padding as i64;
                let idx = match spec.padding_mode {
                    PaddingMode::Zeros if p < 0 || p >= len as i64 => -1,
                    PaddingMode::Zeros => p,
                    PaddingMode::Circular => p.rem_euclid(len as i64),
                };
                table.push(idx);
            }
        }
        Ok(Self {
            batch,
            channels,
            len,
            kernel,
            out_len,
            table,
            ones_row: false,
        })
    }

    /// The run of output positions of tap `k`, from its first in-signal read, whose input
    /// position is `output + offset` (the whole interior for stride 1), as
    /// `(first output, end output, offset)`; it is copied as one slice. `None` if the tap reads
    /// only padding.
    fn interior(&self, k: usize) -> Option<(usize, usize, i64)> {
        let taps = &self.table[k * self.out_len..(k + 1) * self.out_len];
        let first = taps.iter().position(|&p| p >= 0)?;
        let offset = taps[first] - first as i64;
        let mut end = first;
        while end < self.out_len && taps[end] == end as i64 + offset {
            end += 1;
        }
        Some((first, end, offset))
    }

    /// Rows of the unfolded matrix.
    fn rows(&self) -> usize {
        self.channels * self.kernel + usize::from(self.ones_row)
    }

    /// `(B, C, L)` -> `(C * K, B * L_out)` (plus a row of ones if `ones_row`).
    fn unfold<T: WithDType>(&self, x: &[T]) -> Vec<T> {
        let row = self.batch * self.out_len;
        let mut out = vec![T::zero(); self.rows() * row];
        let runs: Vec<Option<(usize, usize, i64)>> =
            (0..self.kernel).map(|k| self.interior(k)).collect();
        out.par_chunks_mut(row).enumerate().for_each(|(r, dst)| {
            if r == self.channels * self.kernel {
                dst.fill(T::one());
                return;
            }
            let (c, k) = (r / self.kernel, r % self.kernel);
            let taps = &self.table[k * self.out_len..(k + 1) * self.out_len];
            for b in 0..self.batch {
                let src = &x[(b * self.channels + c) * self.len..][..self.len];
                let d = &mut dst[b * self.out_len..(b + 1) * self.out_len];
                let (lo, hi, off) = runs[k].unwrap_or((0, 0, 0));
                if hi > lo {
                    let s0 = (lo as i64 + off) as usize;
                    d[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                }
                for (l, (o, &p)) in d.iter_mut().zip(taps).enumerate() {
                    if p >= 0 && !(lo..hi).contains(&l) {
                        *o = src[p as usize];
                    }
                }
            }
        });
        out
    }

    /// `(C * K, B * L_out)` -> `(B, C, L)`, summing every tap that read a sample (col2im); a
    /// trailing row of ones (`ones_row`) has no input and is ignored.
    fn fold<T: WithDType>(&self, cols: &[T]) -> Vec<T> {
        let row = self.batch * self.out_len;
        let mut out = vec![T::zero(); self.batch * self.channels * self.len];
        let runs: Vec<Option<(usize, usize, i64)>> =
            (0..self.kernel).map(|k| self.interior(k)).collect();
        out.par_chunks_mut(self.len)
            .enumerate()
            .for_each(|(bc, dst)| {
                let (b, c) = (bc / self.channels, bc % self.channels);
                for k in 0..self.kernel {
                    let taps = &self.table[k * self.out_len..(k + 1) * self.out_len];
                    let src =
                        &cols[(c * self.kernel + k) * row + b * self.out_len..][..self.out_len];
                    let (lo, hi, off) = runs[k].unwrap_or((0, 0, 0));
                    if hi > lo {
                        let d0 = (lo as i64 + off) as usize;
                        for (d, &g) in dst[d0..d0 + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d += g;
                        }
                    }
                    for (l, (&g, &p)) in src.iter().zip(taps).enumerate() {
                        if p >= 0 && !(lo..hi).contains(&l) {
                            dst[p as usize] += g;
                        }
                    }
                }
            });
        out
    }
}

/// im2col as a custom op: forward gathers, backward scatters (via [`Fold`]).
struct Unfold(Arc<Geometry>);

/// col2im: the adjoint of [`Unfold`].
struct Fold(Arc<Geometry>);

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "flowfm-unfold1d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let shape = Shape::from((g.rows(), g.batch * g.out_len));
        let out = match storage.dtype() {
            DType::F32 => f32::to_cpu_storage_owned(g.unfold(contiguous_slice::<f32>(
                self.name(),
                storage,
                layout,
            )?)),
            DType::F64 => f64::to_cpu_storage_owned(g.unfold(contiguous_slice::<f64>(
                self.name(),
                storage,
                layout,
            )?)),
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", self.name()),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad_res
                .contiguous()?
                .apply_op1_no_bwd(&Fold(self.0.clone()))?,
        ))
    }
}

impl CustomOp1 for Fold {
    fn name(&self) -> &'static str {
        "flowfm-fold1d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let shape = Shape::from((g.batch, g.channels, g.len));
        let out = match storage.dtype() {
            DType::F32 => f32::to_cpu_storage_owned(g.fold(contiguous_slice::<f32>(
                self.name(),
                storage,
                layout,
            )?)),
            DType::F64 => f64::to_cpu_storage_owned(g.fold(contiguous_slice::<f64>(
                self.name(),
                storage,
                layout,
            )?)),
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", self.name()),
        };
        Ok((out, shape))
    }
}

/// Unfolds `x` into convolution columns.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`
/// - returns `(channels * kernel, batch * out_len)`
pub fn unfold1d(x: &Tensor, kernel: usize, spec: &Conv1dSpec) -> Result<Tensor> {
    let (b, c, l) = x.dims3()?;
    let geometry = Arc::new(Geometry::new(b, c, l, kernel, spec)?);
    x.contiguous()?.apply_op1(Unfold(geometry))
}

/// 1-D convolution with a bias `(c_out,)`. For one group on the CPU the bias is added inside
/// the convolution op: by [`crate::conv1d_sliding`] where it handles the geometry
/// ([`crate::sliding::handles`]), else in the im2col matrix product (a bias column on the weights, a row of ones under the
/// unfolded input), so neither the forward nor the backward pass has a separate broadcast pass
/// over the output; otherwise [`conv1d`] then a broadcast add.
///
/// # Shapes
/// - `x`: `(batch, c_in, samples)`
/// - `weight`: `(c_out, c_in / groups, kernel)`; `bias`: `(c_out,)`
/// - returns `(batch, c_out, out_len)` with `out_len` from [`Conv1dSpec::out_len`]
pub fn conv1d_bias(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    spec: &Conv1dSpec,
) -> Result<Tensor> {
    let (b, c_in, l) = x.dims3()?;
    let (c_out, c_in_g, k) = weight.dims3()?;
    if bias.dims() != [c_out] {
        candle_core::bail!(
            "conv1d: bias {:?} does not match {c_out} output channels",
            bias.dims()
        );
    }
    if !crate::uses_own_kernels(x.device()) {
        return crate::portable::conv1d(x, weight, Some(bias), spec);
    }
    if spec.groups != 1 || c_in_g != c_in {
        return conv1d(x, weight, spec)?.broadcast_add(&bias.reshape((1, c_out, 1))?);
    }
    if crate::sliding::handles(spec, l, k) {
        return crate::sliding::conv1d_sliding(x, weight, Some(bias), spec);
    }
    let l_out = spec.out_len(l, k)?;
    let mut geometry = Geometry::new(b, c_in, l, k, spec)?;
    geometry.ones_row = true;
    let cols = x.contiguous()?.apply_op1(Unfold(Arc::new(geometry)))?;
    let w = Tensor::cat(
        &[
            &weight.reshape((c_out, c_in * k))?,
            &bias.to_dtype(weight.dtype())?.reshape((c_out, 1))?,
        ],
        1,
    )?;
    w.matmul(&cols)?
        .reshape((c_out, b, l_out))?
        .transpose(0, 1)?
        .contiguous()
}

/// 1-D convolution (cross-correlation, as in PyTorch) without bias.
///
/// # Shapes
/// - `x`: `(batch, c_in, samples)`
/// - `weight`: `(c_out, c_in / groups, kernel)`
/// - returns `(batch, c_out, out_len)` with `out_len` from [`Conv1dSpec::out_len`]
pub fn conv1d(x: &Tensor, weight: &Tensor, spec: &Conv1dSpec) -> Result<Tensor> {
    let (_, c_in, l) = x.dims3()?;
    crate::spec::check_groups(c_in, weight, spec.groups)?;
    let k = weight.dim(2)?;
    spec.out_len(l, k)?;
    if !crate::uses_own_kernels(x.device()) {
        return crate::portable::conv1d(x, weight, None, spec);
    }
    if crate::sliding::handles(spec, l, k) {
        return crate::sliding::conv1d_sliding(x, weight, None, spec);
    }
    conv1d_im2col(x, weight, spec)
}

/// [`conv1d`] through an explicit im2col matrix (`unfold`) and one matrix product per group, on
/// any geometry; [`conv1d`] uses it on the CPU where the sliding-window path
/// ([`crate::conv1d_sliding`]) does not apply. Kept public for comparisons and benches.
///
/// # Shapes
/// as [`conv1d`]
pub fn conv1d_im2col(x: &Tensor, weight: &Tensor, spec: &Conv1dSpec) -> Result<Tensor> {
    let (b, c_in, l) = x.dims3()?;
    let (c_out, c_in_g, k) = weight.dims3()?;
    let g = spec.groups;
    crate::spec::check_groups(c_in, weight, g)?;
    let l_out = spec.out_len(l, k)?;
    let cols = unfold1d(x, k, spec)?;
    let y = if g == 1 {
        weight.reshape((c_out, c_in * k))?.matmul(&cols)?
    } else {
        let wg = weight.reshape((g, c_out / g, c_in_g * k))?;
        let cg = cols.reshape((g, c_in_g * k, b * l_out))?;
        wg.matmul(&cg)?.reshape((c_out, b * l_out))?
    };
    y.reshape((c_out, b, l_out))?.transpose(0, 1)?.contiguous()
}

/// `residual + conv1d(prep(x), weight) + bias` for evaluation (no autograd): one pass through
/// [`crate::sliding::conv1d_sliding_prepared`] where it handles the geometry on the CPU, else
/// the same ops one after the other (`prep` applied as a tensor, the convolution, the sum). Same
/// values either way.
///
/// # Shapes
/// - `x`: `(batch, c_in, samples)`; `prep` computed for `(batch, c_in)`
/// - `weight`: `(c_out, c_in / groups, kernel)`; `bias`: `(c_out,)`
/// - `residual`: `(batch, c_out, out_len)`
/// - returns `(batch, c_out, out_len)`
pub fn conv1d_prepared(
    x: &Tensor,
    prep: Option<&RowAffine>,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    spec: &Conv1dSpec,
) -> Result<Tensor> {
    let (_, c_in, l) = x.dims3()?;
    let (_, c_in_g, k) = weight.dims3()?;
    crate::sliding::refuse_graphs("conv1d_prepared", [Some(x), Some(weight), bias, residual])?;
    if crate::uses_own_kernels(x.device())
        && spec.groups == 1
        && c_in_g == c_in
        && crate::sliding::handles(spec, l, k)
    {
        return crate::sliding::conv1d_sliding_prepared(x, prep, weight, bias, residual, spec);
    }
    let x = match prep {
        Some(p) => p.apply(x)?,
        None => x.clone(),
    };
    let y = match bias {
        None => conv1d(&x, weight, spec)?,
        Some(bv) => conv1d_bias(&x, weight, bv, spec)?,
    };
    match residual {
        None => Ok(y),
        Some(r) => r + y,
    }
}

/// Configuration of a [`Conv1d`] layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dConfig {
    /// Geometry.
    pub spec: Conv1dSpec,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl Default for Conv1dConfig {
    fn default() -> Self {
        Self {
            spec: Conv1dSpec::default(),
            bias: true,
        }
    }
}

/// PyTorch's default initialisation of conv and linear weights: Kaiming uniform with
/// `a = sqrt(5)`, i.e. bound `1 / sqrt(fan_in)`.
pub fn torch_default_weight_init() -> Init {
    Init::Kaiming {
        dist: NormalOrUniform::Uniform,
        fan: FanInOut::FanIn,
        non_linearity: NonLinearity::ExplicitGain((1.0f64 / 3.0).sqrt()),
    }
}

/// PyTorch's default bias initialisation for a layer with `fan_in` inputs.
pub fn torch_default_bias_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A 1-D convolution layer; parameters `weight` `(c_out, c_in / groups, kernel)` and `bias`.
#[derive(Clone, Debug)]
pub struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    spec: Conv1dSpec,
}

impl Conv1d {
    /// A layer with PyTorch's default initialisation (drawn from the seeded `vb`).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        cfg: Conv1dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        if cfg.spec.groups == 0
            || in_channels % cfg.spec.groups != 0
            || out_channels % cfg.spec.groups != 0
        {
            candle_core::bail!(
                "Conv1d: channels {in_channels} -> {out_channels} are not divisible by groups {}",
                cfg.spec.groups
            );
        }
        let c_in_g = in_channels / cfg.spec.groups;
        let weight = vb.get_with_hints(
            (out_channels, c_in_g, kernel),
            "weight",
            torch_default_weight_init(),
        )?;
        let bias = if cfg.bias {
            Some(vb.get_with_hints(
                out_channels,
                "bias",
                torch_default_bias_init(c_in_g * kernel),
            )?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            spec: cfg.spec,
        })
    }

    /// The weight `(c_out, c_in / groups, kernel)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The geometry.
    pub fn spec(&self) -> &Conv1dSpec {
        &self.spec
    }

    /// `residual + self(prep(x))` for evaluation, in one pass where it can be
    /// ([`conv1d_prepared`]); an error if any argument or the layer's weights are part of an
    /// autograd graph.
    ///
    /// # Shapes
    /// - `x`: `(batch, c_in, samples)`; `residual`: the output's shape
    /// - returns `(batch, c_out, out_len)`
    pub fn forward_prepared(
        &self,
        x: &Tensor,
        prep: Option<&RowAffine>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        conv1d_prepared(
            x,
            prep,
            &self.weight,
            self.bias.as_ref(),
            residual,
            &self.spec,
        )
    }
}

impl Module for Conv1d {
    /// # Shapes
    /// - `x`: `(batch, c_in, samples)`
    /// - returns `(batch, c_out, out_len)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.bias {
            None => conv1d(x, &self.weight, &self.spec),
            Some(b) => conv1d_bias(x, &self.weight, b, &self.spec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::reference;
    use candle_core::Device;
    use flowfm_core::Tolerance;

    #[test]
    fn conv1d_forward_matches_direct_loops() {
        let mut rng = flowfm_core::SeededRng::new(0);
        let cases = [
            (
                2,
                4,
                11,
                6,
                3,
                Conv1dSpec {
                    stride: 2,
                    padding: 1,
                    ..Default::default()
                },
            ),
            (
                1,
                3,
                9,
                5,
                5,
                Conv1dSpec {
                    padding: 2,
                    padding_mode: PaddingMode::Circular,
                    ..Default::default()
                },
            ),
            (
                3,
                4,
                13,
                4,
                3,
                Conv1dSpec {
                    dilation: 2,
                    padding: 2,
                    groups: 2,
                    ..Default::default()
                },
            ),
            (
                2,
                4,
                10,
                4,
                3,
                Conv1dSpec {
                    padding: 1,
                    groups: 4,
                    stride: 5,
                    ..Default::default()
                },
            ),
            (2, 3, 8, 2, 1, Conv1dSpec::default()),
        ];
        for (b, c_in, l, c_out, k, spec) in cases {
            let x = rng.normal_vec(b * c_in * l);
            let w = rng.normal_vec(c_out * c_in / spec.groups * k);
            let xt = Tensor::from_vec(x.clone(), (b, c_in, l), &Device::Cpu).unwrap();
            let wt =
                Tensor::from_vec(w.clone(), (c_out, c_in / spec.groups, k), &Device::Cpu).unwrap();
            let y = conv1d(&xt, &wt, &spec).unwrap();
            let expected = reference(&x, (b, c_in, l), &w, (c_out, c_in / spec.groups, k), &spec);
            let got: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
            Tolerance::new(1e-12, 1e-12).assert_close(&got, &expected);
        }
    }

    #[test]
    fn conv1d_bias_equals_conv1d_plus_broadcast_bias() {
        let mut rng = flowfm_core::SeededRng::new(5);
        let dev = Device::Cpu;
        let specs = [
            Conv1dSpec {
                padding: 1,
                ..Default::default()
            },
            Conv1dSpec {
                stride: 2,
                padding: 2,
                padding_mode: PaddingMode::Circular,
                dilation: 2,
                ..Default::default()
            },
            Conv1dSpec {
                padding: 1,
                groups: 2,
                ..Default::default()
            },
        ];
        for spec in specs {
            let x = rng.normal_tensor((3, 4, 13), DType::F64, &dev).unwrap();
            let w = rng
                .normal_tensor((6, 4 / spec.groups, 3), DType::F64, &dev)
                .unwrap();
            let b = rng.normal_tensor(6, DType::F64, &dev).unwrap();
            let expected = conv1d(&x, &w, &spec)
                .unwrap()
                .broadcast_add(&b.reshape((1, 6, 1)).unwrap())
                .unwrap();
            let got = conv1d_bias(&x, &w, &b, &spec).unwrap();
            Tolerance::new(1e-12, 1e-12).assert_tensors_close(&got, &expected);
        }
        let x = Tensor::zeros((1, 2, 5), DType::F64, &dev).unwrap();
        let w = Tensor::zeros((3, 2, 1), DType::F64, &dev).unwrap();
        let b = Tensor::zeros(2, DType::F64, &dev).unwrap();
        assert!(conv1d_bias(&x, &w, &b, &Conv1dSpec::default()).is_err());
    }

    /// Stride-1 geometries `(batch, c_in, len, c_out, kernel, padding, mode)` for the
    /// sliding-window path: kernels 1/3/5, padding 0, K / 2 and more than K / 2, zero and
    /// circular, batch 1 and more.
    fn sliding_cases() -> Vec<(usize, usize, usize, usize, usize, usize, PaddingMode)> {
        vec![
            (2, 4, 13, 6, 3, 1, PaddingMode::Zeros),
            (3, 3, 11, 5, 5, 2, PaddingMode::Circular),
            (1, 3, 9, 2, 5, 2, PaddingMode::Zeros),
            (2, 5, 8, 3, 1, 0, PaddingMode::Zeros),
            (2, 2, 10, 4, 3, 0, PaddingMode::Circular),
            (2, 3, 7, 3, 3, 3, PaddingMode::Zeros),
            (3, 2, 6, 2, 3, 4, PaddingMode::Circular),
            (4, 2, 5, 3, 5, 1, PaddingMode::Circular),
            // Outputs of 256 samples or more take the one-product-per-sample path.
            (2, 3, 300, 4, 5, 2, PaddingMode::Circular),
            (1, 2, 258, 3, 3, 0, PaddingMode::Zeros),
            (2, 2, 257, 2, 3, 0, PaddingMode::Zeros),
        ]
    }

    #[test]
    fn sliding_conv_matches_direct_loops_and_im2col() {
        let mut rng = flowfm_core::SeededRng::new(11);
        let dev = Device::Cpu;
        for (b, c_in, l, c_out, k, padding, padding_mode) in sliding_cases() {
            let spec = Conv1dSpec {
                padding,
                padding_mode,
                ..Default::default()
            };
            let x = rng.normal_vec(b * c_in * l);
            let w = rng.normal_vec(c_out * c_in * k);
            let bias = rng.normal_vec(c_out);
            let xt = Tensor::from_vec(x.clone(), (b, c_in, l), &dev).unwrap();
            let wt = Tensor::from_vec(w.clone(), (c_out, c_in, k), &dev).unwrap();
            let bt = Tensor::from_vec(bias.clone(), c_out, &dev).unwrap();
            let mut expected = reference(&x, (b, c_in, l), &w, (c_out, c_in, k), &spec);
            let got = crate::conv1d_sliding(&xt, &wt, None, &spec).unwrap();
            let got: Vec<f64> = got.flatten_all().unwrap().to_vec1().unwrap();
            Tolerance::new(1e-12, 1e-12).assert_close(&got, &expected);
            let old = conv1d_im2col(&xt, &wt, &spec).unwrap();
            let old: Vec<f64> = old.flatten_all().unwrap().to_vec1().unwrap();
            Tolerance::new(1e-12, 1e-12).assert_close(&got, &old);
            let l_out = spec.out_len(l, k).unwrap();
            for (i, v) in expected.iter_mut().enumerate() {
                *v += bias[(i / l_out) % c_out];
            }
            let got = crate::conv1d_sliding(&xt, &wt, Some(&bt), &spec).unwrap();
            let got: Vec<f64> = got.flatten_all().unwrap().to_vec1().unwrap();
            Tolerance::new(1e-12, 1e-12).assert_close(&got, &expected);
            // f32 agrees with f64 to single precision.
            let got32 = crate::conv1d_sliding(
                &xt.to_dtype(DType::F32).unwrap(),
                &wt.to_dtype(DType::F32).unwrap(),
                Some(&bt.to_dtype(DType::F32).unwrap()),
                &spec,
            )
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
            let got32: Vec<f64> = got32.flatten_all().unwrap().to_vec1().unwrap();
            Tolerance::new(1e-4, 1e-4).assert_close(&got32, &expected);
        }
        let x = Tensor::zeros((1, 2, 9), DType::F64, &dev).unwrap();
        let w = Tensor::zeros((3, 2, 3), DType::F64, &dev).unwrap();
        let strided = Conv1dSpec {
            stride: 2,
            ..Default::default()
        };
        assert!(crate::conv1d_sliding(&x, &w, None, &strided).is_err());
        let w1 = Tensor::zeros((3, 1, 3), DType::F64, &dev).unwrap();
        assert!(crate::conv1d_sliding(&x, &w1, None, &Conv1dSpec::default()).is_err());
    }

    #[test]
    fn conv1d_routes_the_model_shapes_to_the_sliding_path_only_where_it_applies() {
        use crate::sliding::{applies, handles};
        let same = |k: usize, mode| Conv1dSpec {
            padding: k / 2,
            padding_mode: mode,
            ..Default::default()
        };
        // HARNet10 stages at batch 64: lengths 300, 150, 75 slide; 15 and 3 take the op's own
        // im2col matrix.
        for l in [300, 150, 75] {
            assert!(applies(&same(5, PaddingMode::Circular), 64, l, 5), "{l}");
        }
        for l in [15, 3] {
            assert!(!applies(&same(5, PaddingMode::Circular), 64, l, 5), "{l}");
            assert!(handles(&same(5, PaddingMode::Circular), l, 5), "{l}");
        }
        // Circular padding longer than the signal stays with the unfold op.
        assert!(!handles(&same(5, PaddingMode::Circular), 1, 5));
        // U-Net (k = 3, zero padding) at every level, and its 1x1 skips.
        for l in [300, 150, 75] {
            assert!(applies(&same(3, PaddingMode::Zeros), 64, l, 3));
            assert!(applies(&same(1, PaddingMode::Zeros), 64, l, 1));
        }
        let strided = Conv1dSpec {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        assert!(!applies(&strided, 64, 300, 3));
        assert!(!handles(&strided, 300, 3));
        let grouped = Conv1dSpec {
            groups: 2,
            ..same(3, PaddingMode::Zeros)
        };
        assert!(!applies(&grouped, 64, 300, 3));
        assert!(!handles(&grouped, 300, 3));
    }

    #[test]
    fn sliding_conv_does_not_depend_on_the_thread_count() {
        // Large enough for several column tiles and several position chunks of the weight
        // gradient.
        let mut rng = flowfm_core::SeededRng::new(12);
        let dev = Device::Cpu;
        let spec = Conv1dSpec {
            padding: 2,
            padding_mode: PaddingMode::Circular,
            ..Default::default()
        };
        let x = rng.normal_tensor((8, 24, 1100), DType::F32, &dev).unwrap();
        let w = rng.normal_tensor((40, 24, 5), DType::F32, &dev).unwrap();
        let b = rng.normal_tensor(40, DType::F32, &dev).unwrap();
        let proj = rng.normal_tensor((8, 40, 1100), DType::F32, &dev).unwrap();
        let run = |threads: usize| -> Vec<Vec<f32>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let vars: Vec<candle_core::Var> = [&x, &w, &b]
                    .iter()
                    .map(|t| candle_core::Var::from_tensor(t).unwrap())
                    .collect();
                let y = crate::conv1d_sliding(
                    vars[0].as_tensor(),
                    vars[1].as_tensor(),
                    Some(vars[2].as_tensor()),
                    &spec,
                )
                .unwrap();
                let grads = (&y * &proj).unwrap().sum_all().unwrap().backward().unwrap();
                let mut out = vec![y.flatten_all().unwrap().to_vec1().unwrap()];
                for v in &vars {
                    let g = grads.get(v.as_tensor()).unwrap();
                    out.push(g.flatten_all().unwrap().to_vec1().unwrap());
                }
                out
            })
        };
        let one = run(1);
        let three = run(3);
        for (a, b) in one.iter().zip(&three) {
            assert!(a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }

    #[test]
    fn sliding_conv_gradients_match_im2col_at_large_shapes() {
        // Several position chunks and column tiles of the weight gradient's product, zero and
        // circular padding, in f64 against the im2col path (unfold's scatter and candle's
        // matmul backward).
        let mut rng = flowfm_core::SeededRng::new(13);
        let dev = Device::Cpu;
        for (b, c_in, l, c_out, k, padding, padding_mode) in [
            (8, 24, 1100, 40, 5, 2, PaddingMode::Circular),
            (3, 20, 3000, 7, 3, 1, PaddingMode::Zeros),
            (5, 70, 900, 16, 5, 3, PaddingMode::Circular),
            // Short sequences: the im2col matrix of the real outputs, several column tiles.
            (64, 40, 15, 48, 5, 2, PaddingMode::Circular),
            (16, 30, 3, 20, 5, 2, PaddingMode::Circular),
            (8, 24, 9, 10, 3, 1, PaddingMode::Zeros),
        ] {
            let spec = Conv1dSpec {
                padding,
                padding_mode,
                ..Default::default()
            };
            let x = rng.normal_tensor((b, c_in, l), DType::F64, &dev).unwrap();
            let w = rng
                .normal_tensor((c_out, c_in, k), DType::F64, &dev)
                .unwrap();
            let l_out = spec.out_len(l, k).unwrap();
            let proj = rng
                .normal_tensor((b, c_out, l_out), DType::F64, &dev)
                .unwrap();
            let grads = |conv: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>| -> Vec<Vec<f64>> {
                let xv = candle_core::Var::from_tensor(&x).unwrap();
                let wv = candle_core::Var::from_tensor(&w).unwrap();
                let y = conv(xv.as_tensor(), wv.as_tensor()).unwrap();
                let g = (&y * &proj).unwrap().sum_all().unwrap().backward().unwrap();
                [xv.as_tensor(), wv.as_tensor()]
                    .iter()
                    .map(|v| g.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap())
                    .collect()
            };
            let got = grads(&|x, w| crate::conv1d_sliding(x, w, None, &spec));
            let want = grads(&|x, w| conv1d_im2col(x, w, &spec));
            for (g, e) in got.iter().zip(&want) {
                Tolerance::new(1e-10, 1e-10).assert_close(g, e);
            }
        }
    }

    #[test]
    fn out_len_rejects_impossible_geometry() {
        let s = Conv1dSpec {
            padding: 4,
            padding_mode: PaddingMode::Circular,
            ..Default::default()
        };
        assert!(s.out_len(3, 3).is_err());
        assert!(Conv1dSpec::default().out_len(2, 5).is_err());
        assert_eq!(
            Conv1dSpec {
                stride: 2,
                padding: 1,
                ..Default::default()
            }
            .out_len(300, 4)
            .unwrap(),
            150
        );
    }
}
