//! 1-D resampling: nearest upsampling by an integer factor, and anti-aliased downsampling
//! (a fixed blur kernel applied per channel with a stride), as in SSL-Wearables' ResNet and
//! Zhang, "Making Convolutional Networks Shift-Invariant Again" (ICML 2019).
//!
//! candle's `upsample_nearest1d` backward overwrites gradients instead of summing them; ours is
//! built from a broadcast (whose backward sums) and a reshape. The blur is our own op: a fixed,
//! non-trainable kernel needs no weight gradient, and a direct loop beats a grouped matmul.

use crate::contiguous_slice;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::sync::Arc;

/// Repeats every sample `factor` times.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`
/// - returns `(batch, channels, samples * factor)`
pub fn upsample_nearest1d(x: &Tensor, factor: usize) -> Result<Tensor> {
    if factor == 0 {
        candle_core::bail!("upsample_nearest1d: factor must be > 0");
    }
    let (b, c, l) = x.dims3()?;
    x.unsqueeze(3)?
        .broadcast_as((b, c, l, factor))?
        .contiguous()?
        .reshape((b, c, l * factor))
}

#[derive(Debug)]
struct BlurGeometry {
    rows: usize,
    len: usize,
    out_len: usize,
    stride: usize,
    padding: usize,
    kernel: Vec<f64>,
}

impl BlurGeometry {
    /// The outputs whose whole window lies inside the signal (`padding <= o * stride` and
    /// `o * stride + taps <= len + padding`).
    fn interior(&self) -> std::ops::Range<usize> {
        let end = (self.len + self.padding)
            .checked_sub(self.kernel.len())
            .map_or(0, |room| (room / self.stride + 1).min(self.out_len));
        let start = self.padding.div_ceil(self.stride).min(end);
        start..end
    }

    /// For output `o`: the kernel taps that fall inside the signal, and the input samples they
    /// read (`o * stride + k - padding`), as two ranges of equal length (the padding is zeros,
    /// so the taps outside contribute nothing; ranges instead of a test per tap).
    fn window(&self, o: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let start = o * self.stride;
        let k0 = self.padding.saturating_sub(start);
        let k1 = self
            .kernel
            .len()
            .min((self.len + self.padding).saturating_sub(start))
            .max(k0);
        if k1 == k0 {
            return (0..0, 0..0);
        }
        let p0 = start + k0 - self.padding;
        (k0..k1, p0..p0 + (k1 - k0))
    }

    fn forward<T: WithDType>(&self, x: &[T]) -> Vec<T> {
        let h: Vec<T> = self.kernel.iter().map(|&v| T::from_f64(v)).collect();
        let mut out = vec![T::zero(); self.rows * self.out_len];
        out.par_chunks_mut(self.out_len)
            .enumerate()
            .for_each(|(r, dst)| {
                let src = &x[r * self.len..(r + 1) * self.len];
                let inner = self.interior();
                for (o, d) in dst.iter_mut().enumerate() {
                    if inner.contains(&o) {
                        continue;
                    }
                    let (taps, samples) = self.window(o);
                    let mut acc = T::zero();
                    for (&hk, &v) in h[taps].iter().zip(&src[samples]) {
                        acc += hk * v;
                    }
                    *d = acc;
                }
                // Outputs whose window lies inside the signal: tap after tap over all of them
                // (independent sums instead of one chain per output; per output the same
                // terms in the same order, so the same values).
                let dst = &mut dst[inner.clone()];
                for (k, &hk) in h.iter().enumerate() {
                    let first = inner.start * self.stride + k - self.padding;
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d += hk * src[first + i * self.stride];
                    }
                }
            });
        out
    }

    fn backward<T: WithDType>(&self, g: &[T]) -> Vec<T> {
        let h: Vec<T> = self.kernel.iter().map(|&v| T::from_f64(v)).collect();
        let mut out = vec![T::zero(); self.rows * self.len];
        out.par_chunks_mut(self.len)
            .enumerate()
            .for_each(|(r, dst)| {
                let src = &g[r * self.out_len..(r + 1) * self.out_len];
                for (o, &go) in src.iter().enumerate() {
                    let (taps, samples) = self.window(o);
                    for (d, &hk) in dst[samples].iter_mut().zip(&h[taps]) {
                        *d += hk * go;
                    }
                }
            });
        out
    }
}

struct Blur(Arc<BlurGeometry>, Shape);
struct BlurBackward(Arc<BlurGeometry>, Shape);

fn run<F32: Fn(&[f32]) -> Vec<f32>, F64: Fn(&[f64]) -> Vec<f64>>(
    name: &str,
    storage: &CpuStorage,
    layout: &Layout,
    f32_fn: F32,
    f64_fn: F64,
) -> Result<CpuStorage> {
    Ok(match storage.dtype() {
        DType::F32 => {
            f32::to_cpu_storage_owned(f32_fn(contiguous_slice::<f32>(name, storage, layout)?))
        }
        DType::F64 => {
            f64::to_cpu_storage_owned(f64_fn(contiguous_slice::<f64>(name, storage, layout)?))
        }
        dt => candle_core::bail!("{name}: unsupported dtype {dt:?}"),
    })
}

impl CustomOp1 for Blur {
    fn name(&self) -> &'static str {
        "flowfm-blur1d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let s = run(
            self.name(),
            storage,
            layout,
            |x| self.0.forward(x),
            |x| self.0.forward(x),
        )?;
        Ok((s, self.1.clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let op = BlurBackward(self.0.clone(), arg.shape().clone());
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

impl CustomOp1 for BlurBackward {
    fn name(&self) -> &'static str {
        "flowfm-blur1d-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let s = run(
            self.name(),
            storage,
            layout,
            |g| self.0.backward(g),
            |g| self.0.backward(g),
        )?;
        Ok((s, self.1.clone()))
    }
}

/// Filters every channel with the same fixed `kernel` (zero padding) and keeps every `stride`-th
/// output: a depthwise convolution with a constant kernel.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`
/// - returns `(batch, channels, (samples + 2 * padding - kernel.len()) / stride + 1)`
pub fn blur_downsample1d(
    x: &Tensor,
    kernel: &[f64],
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (b, c, l) = x.dims3()?;
    if stride == 0 || kernel.is_empty() || l + 2 * padding < kernel.len() {
        candle_core::bail!(
            "blur_downsample1d: kernel of {} taps, stride {stride}, padding {padding} do not fit {l} samples",
            kernel.len()
        );
    }
    let out_len = (l + 2 * padding - kernel.len()) / stride + 1;
    if !crate::uses_own_kernels(x.device()) {
        return crate::portable::blur_downsample1d(x, kernel, stride, padding);
    }
    let geometry = Arc::new(BlurGeometry {
        rows: b * c,
        len: l,
        out_len,
        stride,
        padding,
        kernel: kernel.to_vec(),
    });
    x.contiguous()?
        .apply_op1(Blur(geometry, Shape::from((b, c, out_len))))
}

/// Anti-aliased downsampling by an integer `factor` with a B-spline blur of `order`
/// (order 0: box, 1: triangle, 2: quadratic, ...), as in SSL-Wearables' `Downsample`.
///
/// The kernel is a box of `factor` taps convolved with itself `order` times, normalised to sum 1;
/// the padding `order * (factor - 1) / 2` keeps the signal centred, so `order * (factor - 1)` must
/// be even.
#[derive(Clone, Debug, PartialEq)]
pub struct BlurDownsample {
    kernel: Vec<f64>,
    factor: usize,
    padding: usize,
}

impl BlurDownsample {
    /// A downsampler for `factor >= 2` and the blur `order`.
    pub fn new(factor: usize, order: usize) -> Result<Self> {
        if factor < 2 {
            candle_core::bail!("BlurDownsample: factor must be >= 2, got {factor}");
        }
        let total = order * (factor - 1);
        if total % 2 != 0 {
            candle_core::bail!(
                "BlurDownsample: order {order} * (factor {factor} - 1) must be even"
            );
        }
        let mut kernel = vec![1.0; factor];
        for _ in 0..order {
            let mut next = vec![0.0; kernel.len() + factor - 1];
            for (i, &a) in kernel.iter().enumerate() {
                for j in 0..factor {
                    next[i + j] += a;
                }
            }
            kernel = next;
        }
        let sum: f64 = kernel.iter().sum();
        kernel.iter_mut().for_each(|v| *v /= sum);
        Ok(Self {
            kernel,
            factor,
            padding: total / 2,
        })
    }

    /// The normalised blur kernel.
    pub fn kernel(&self) -> &[f64] {
        &self.kernel
    }

    /// The downsampling factor (stride).
    pub fn factor(&self) -> usize {
        self.factor
    }

    /// Zero padding on each side.
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// Output length for an input of `len` samples.
    pub fn out_len(&self, len: usize) -> usize {
        (len + 2 * self.padding).saturating_sub(self.kernel.len()) / self.factor + 1
    }

    /// # Shapes
    /// - `x`: `(batch, channels, samples)`
    /// - returns `(batch, channels, out_len(samples))`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        blur_downsample1d(x, &self.kernel, self.factor, self.padding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    #[test]
    fn ssl_wearables_blur_kernels() {
        let k2 = BlurDownsample::new(2, 2).unwrap();
        Tolerance::F64.assert_close(k2.kernel(), &[1.0 / 8.0, 3.0 / 8.0, 3.0 / 8.0, 1.0 / 8.0]);
        assert_eq!(k2.padding(), 1);
        let k5 = BlurDownsample::new(5, 1).unwrap();
        let tri: Vec<f64> = [1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0]
            .iter()
            .map(|v| v / 25.0)
            .collect();
        Tolerance::F64.assert_close(k5.kernel(), &tri);
        assert_eq!(k5.padding(), 2);
        let k3 = BlurDownsample::new(3, 1).unwrap();
        Tolerance::F64.assert_close(
            k3.kernel(),
            &[1.0 / 9.0, 2.0 / 9.0, 3.0 / 9.0, 2.0 / 9.0, 1.0 / 9.0],
        );
        assert!(BlurDownsample::new(2, 1).is_err());
        // HARNet's length chain: 300 -> 150 -> 75 -> 15 -> 3 -> 1.
        let lens = [
            (2, 2, 300, 150),
            (2, 2, 150, 75),
            (5, 1, 75, 15),
            (5, 1, 15, 3),
            (3, 1, 3, 1),
        ];
        for (f, o, l, expected) in lens {
            assert_eq!(BlurDownsample::new(f, o).unwrap().out_len(l), expected);
        }
    }

    #[test]
    fn blur_of_a_constant_is_the_constant_away_from_the_edges() {
        let x = Tensor::ones((1, 2, 20), DType::F64, &candle_core::Device::Cpu).unwrap();
        let y = BlurDownsample::new(2, 2).unwrap().forward(&x).unwrap();
        let v: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(y.dims(), &[1, 2, 10]);
        // The first output sees one zero pad: 1 - 1/8.
        assert!(Tolerance::F64.close(v[0], 7.0 / 8.0));
        Tolerance::F64.assert_close(&v[1..9], &[1.0; 8]);
    }

    #[test]
    fn blur_and_its_adjoint_match_the_definition_at_every_length() {
        // y[o] = sum_k h[k] x[o f + k - pad] with zeros outside the signal, and the backward
        // pass its adjoint, from lengths shorter than the kernel to HARNet's.
        let mut rng = flowfm_core::SeededRng::new(5);
        let dev = candle_core::Device::Cpu;
        let mut checked = 0;
        for (f, o) in [(2, 2), (5, 1), (3, 1), (4, 0), (3, 3)] {
            let down = BlurDownsample::new(f, o).unwrap();
            let (h, pad) = (down.kernel().to_vec(), down.padding() as i64);
            for len in [1, 2, 3, 4, 5, 7, 9, 15, 16, 31, 75, 300] {
                let out = down.out_len(len);
                if out == 0 {
                    continue;
                }
                let x = rng.normal_vec(2 * len);
                let g = rng.normal_vec(2 * out);
                let mut want_y = vec![0.0; 2 * out];
                let mut want_dx = vec![0.0; 2 * len];
                for r in 0..2 {
                    for oi in 0..out {
                        for (k, &hk) in h.iter().enumerate() {
                            let p = (oi * f + k) as i64 - pad;
                            if (0..len as i64).contains(&p) {
                                want_y[r * out + oi] += hk * x[r * len + p as usize];
                                want_dx[r * len + p as usize] += hk * g[r * out + oi];
                            }
                        }
                    }
                }
                let xt = candle_core::Var::from_vec(x, (1, 2, len), &dev).unwrap();
                // Geometries whose kernel does not fit the padded signal are refused.
                let Ok(y) = down.forward(xt.as_tensor()) else {
                    continue;
                };
                checked += 1;
                let got_y: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
                Tolerance::F64.assert_close(&got_y, &want_y);
                let gt = Tensor::from_vec(g, (1, 2, out), &dev).unwrap();
                let grads = (&y * &gt).unwrap().sum_all().unwrap().backward().unwrap();
                let got_dx: Vec<f64> = grads
                    .get(xt.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                Tolerance::F64.assert_close(&got_dx, &want_dx);
            }
        }
        assert!(checked >= 40, "only {checked} geometries ran");
    }

    #[test]
    fn nearest_upsampling_repeats_samples() {
        let x = Tensor::new(&[[[1.0f64, 2.0, 3.0]]], &candle_core::Device::Cpu).unwrap();
        let y: Vec<f64> = upsample_nearest1d(&x, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        Tolerance::F64.assert_close(&y, &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    }
}
