//! Elementwise f32 kernels that run in SIMD lanes: SiLU after an affine transform, and its
//! gradient, for the fused norms of f32 tensors.
//!
//! The scalar path computed SiLU in f64 through the C library's `exp`, one call per element
//! (16 % of a U-Net evaluation, measured). Here `exp` is a branch-free polynomial in f32
//! (Cody-Waite range reduction and a degree-7 Taylor polynomial on `|r| <= ln 2 / 2`, relative
//! error below 1e-7 before rounding), so the loops vectorise; `pulp` compiles them for the best
//! instruction set the CPU has (AVX2 or AVX-512, detected at run time) with a safe API. No
//! fused multiply-add is used, so every instruction set computes the same IEEE operations in the
//! same order (the same bits by construction; not run on an AVX2-only machine).
//!
//! The f64 paths (the gradient checks) keep the C library's `exp`.

use pulp::{Arch, Simd, WithSimd};

/// `exp(x)` in f32 without a library call: `2^n * p(r)` with `x = n ln 2 + r`. Inputs are
/// clamped to `[-87, 88]` (results from about 1.6e-38 to 1.65e38; `exp` leaves that range only
/// towards 0 or infinity, which the callers' formulas treat the same); NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (no `round` call, which
    // has no SSE2 instruction and would stop the loop from vectorising).
    const ROUND: f32 = 12_582_912.0;
    // `clamp` keeps NaN, and NaN then flows through `r` and `p` into the result.
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `t`'s bits are those of 1.5 * 2^23 plus `n` in the low mantissa bits, so `2^n` is built
    // with integer lanes only (a float-to-int conversion saturates, which does not vectorise).
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    p * scale
}

/// `a * sigmoid(a)` with [`exp_f32`].
#[inline(always)]
pub fn silu_f32(a: f32) -> f32 {
    a / (1.0 + exp_f32(-a))
}

/// The derivative of SiLU at `a`: `s (1 + a (1 - s))` with `s = sigmoid(a)`.
#[inline(always)]
pub fn silu_grad_f32(a: f32) -> f32 {
    let s = 1.0 / (1.0 + exp_f32(-a));
    s * (1.0 + a * (1.0 - s))
}

struct SiluAffine<'a> {
    dst: &'a mut [f32],
    src: &'a [f32],
    scale: f32,
    shift: f32,
}

impl WithSimd for SiluAffine<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let (scale, shift) = (self.scale, self.shift);
        for (o, &v) in self.dst.iter_mut().zip(self.src) {
            *o = silu_f32(v * scale + shift);
        }
    }
}

struct SiluAffineGrad<'a> {
    dst: &'a mut [f32],
    grad: &'a [f32],
    src: &'a [f32],
    scale: f32,
    shift: f32,
}

impl WithSimd for SiluAffineGrad<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let (scale, shift) = (self.scale, self.shift);
        for ((o, &g), &v) in self.dst.iter_mut().zip(self.grad).zip(self.src) {
            *o = g * silu_grad_f32(v * scale + shift);
        }
    }
}

/// `dst[i] = silu(src[i] * scale + shift)` over the common length of `dst` and `src`.
pub fn silu_affine(dst: &mut [f32], src: &[f32], scale: f32, shift: f32) {
    Arch::new().dispatch(SiluAffine {
        dst,
        src,
        scale,
        shift,
    });
}

/// `dst[i] = grad[i] * silu'(src[i] * scale + shift)`: the gradient through SiLU with respect
/// to its input, the affine transform's output (over the common length of the slices).
pub fn silu_affine_grad(dst: &mut [f32], grad: &[f32], src: &[f32], scale: f32, shift: f32) {
    Arch::new().dispatch(SiluAffineGrad {
        dst,
        grad,
        src,
        scale,
        shift,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error of `exp_f32` against f64 `exp`, over a dense grid of the clamped range.
    #[test]
    fn exp_matches_the_library_within_two_ulps() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        // f32 has 2^-24 = 6.0e-8 relative spacing at worst; allow two units.
        assert!(worst < 2.4e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn exp_edges_are_finite_or_nan_as_they_should_be() {
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0).to_bits(), 1.0f32.to_bits());
        assert!(exp_f32(1e30).is_finite() && exp_f32(1e30) > 1e38);
        assert!(exp_f32(-1e30) >= 0.0 && exp_f32(-1e30) < 2e-38);
        assert!(exp_f32(f32::INFINITY).is_finite());
    }

    #[test]
    fn silu_and_its_gradient_match_f64_references() {
        let src: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) * 0.031).collect();
        let grad: Vec<f32> = (0..1001).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let (scale, shift) = (1.7f32, -0.3f32);
        let mut y = vec![0.0f32; src.len()];
        let mut dy = vec![0.0f32; src.len()];
        silu_affine(&mut y, &src, scale, shift);
        silu_affine_grad(&mut dy, &grad, &src, scale, shift);
        for i in 0..src.len() {
            let a = (src[i] * scale + shift) as f64;
            let s = 1.0 / (1.0 + (-a).exp());
            let (want_y, want_dy) = (a * s, grad[i] as f64 * s * (1.0 + a * (1.0 - s)));
            assert!(
                (y[i] as f64 - want_y).abs() <= 3e-7 * want_y.abs().max(1e-3),
                "silu({a}) = {} want {want_y}",
                y[i]
            );
            assert!(
                // `1 + a (1 - s)` cancels near a = -1.28, so the error is relative to the
                // size of its terms, not of the result.
                (dy[i] as f64 - want_dy).abs() <= 3e-7 * grad[i] as f64 * (1.0 + a.abs()),
                "silu'({a}) = {} want {want_dy}",
                dy[i]
            );
        }
        // NaN goes through as NaN, never as a number.
        let mut one = [0.0f32];
        silu_affine(&mut one, &[f32::NAN], 1.0, 0.0);
        assert!(one[0].is_nan());
    }
}
