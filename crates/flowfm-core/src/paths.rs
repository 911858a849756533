//! Probability paths of flow matching (Lipman et al. 2023): a scheduler gives `alpha_t`,
//! `sigma_t` and their time derivatives (pure f64); an affine path turns them into
//! `x_t = alpha_t x_1 + sigma_t x_0` and the target velocity `dx_t = alpha'_t x_1 + sigma'_t x_0`.
//!
//! Flow time runs from `t = 0` (noise `x_0`) to `t = 1` (data `x_1`). The conditional optimal
//! transport ("CondOT", rectified, linear) path has `alpha_t = t`, `sigma_t = 1 - (1 - sigma_min) t`;
//! with `sigma_min = 0` it is `x_t = (1 - t) x_0 + t x_1` with target `x_1 - x_0`.

use crate::error::CoreError;
use crate::schedule::per_sample;
use crate::time::FlowTimes;
use candle_core::{DType, Result, Tensor};

/// The scheduler values at one flow time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulerCoefficients {
    /// Weight of the data `x_1` in `x_t`.
    pub alpha_t: f64,
    /// Weight of the noise `x_0` in `x_t`.
    pub sigma_t: f64,
    /// `d alpha_t / dt`.
    pub d_alpha_t: f64,
    /// `d sigma_t / dt`.
    pub d_sigma_t: f64,
}

/// A scheduler of an affine probability path.
pub trait PathScheduler {
    /// `alpha_t`, `sigma_t` and their derivatives at flow time `t` in [0, 1].
    fn coefficients(&self, t: f64) -> SchedulerCoefficients;
}

/// The conditional optimal-transport (linear) path with optional `sigma_min`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearPath {
    sigma_min: f64,
}

impl Default for LinearPath {
    /// The rectified path (`sigma_min = 0`).
    fn default() -> Self {
        Self { sigma_min: 0.0 }
    }
}

impl LinearPath {
    /// A linear path whose data end keeps noise of scale `sigma_min` in [0, 1).
    pub fn new(sigma_min: f64) -> std::result::Result<Self, CoreError> {
        if !(sigma_min.is_finite() && (0.0..1.0).contains(&sigma_min)) {
            return Err(CoreError::InvalidParameter {
                name: "sigma_min",
                reason: format!("must be in [0, 1), got {sigma_min}"),
            });
        }
        Ok(Self { sigma_min })
    }

    /// The noise scale kept at `t = 1`.
    pub fn sigma_min(&self) -> f64 {
        self.sigma_min
    }
}

impl PathScheduler for LinearPath {
    fn coefficients(&self, t: f64) -> SchedulerCoefficients {
        SchedulerCoefficients {
            alpha_t: t,
            sigma_t: 1.0 - (1.0 - self.sigma_min) * t,
            d_alpha_t: 1.0,
            d_sigma_t: -(1.0 - self.sigma_min),
        }
    }
}

/// A point on a path and the target velocity there.
#[derive(Clone, Debug)]
pub struct PathSample {
    /// `x_t = alpha_t x_1 + sigma_t x_0`.
    pub x_t: Tensor,
    /// `dx_t = alpha'_t x_1 + sigma'_t x_0` (the conditional velocity to regress on).
    pub dx_t: Tensor,
}

/// Samples the affine path of `scheduler` between noise `x_0` and data `x_1` at per-sample times.
///
/// Gradients flow through `x_0` and `x_1`; the times are read as numbers (no gradient).
///
/// # Shapes
/// - `x_0`, `x_1`: `(batch, channels, samples)` (any rank with batch first), same shape
/// - `t`: `(batch,)`
/// - returns `x_t` and `dx_t` of the shape of `x_1`
pub fn sample_path(
    scheduler: &dyn PathScheduler,
    x_0: &Tensor,
    x_1: &Tensor,
    t: &FlowTimes,
) -> Result<PathSample> {
    if x_0.shape() != x_1.shape() {
        candle_core::bail!(
            "noise x_0 {:?} and data x_1 {:?} differ in shape",
            x_0.shape(),
            x_1.shape()
        );
    }
    let ts = t.tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let coefs = ts
        .iter()
        .map(|&t| {
            crate::time::FlowTime::new(t)?;
            Ok(scheduler.coefficients(t))
        })
        .collect::<std::result::Result<Vec<_>, CoreError>>()?;
    let pick = |f: fn(&SchedulerCoefficients) -> f64| -> Result<Tensor> {
        per_sample(&coefs.iter().map(f).collect::<Vec<_>>(), x_1)
    };
    let x_t = x_1
        .broadcast_mul(&pick(|c| c.alpha_t)?)?
        .add(&x_0.broadcast_mul(&pick(|c| c.sigma_t)?)?)?;
    let dx_t = x_1
        .broadcast_mul(&pick(|c| c.d_alpha_t)?)?
        .add(&x_0.broadcast_mul(&pick(|c| c.d_sigma_t)?)?)?;
    Ok(PathSample { x_t, dx_t })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tolerance::{tensor_to_f64, Tolerance};
    use candle_core::Device;

    #[test]
    fn linear_path_derivatives_match_finite_differences() {
        let p = LinearPath::new(0.1).unwrap();
        let h = 1e-6;
        for t in [0.1, 0.5, 0.9] {
            let c = p.coefficients(t);
            let (lo, hi) = (p.coefficients(t - h), p.coefficients(t + h));
            let tol = Tolerance::new(1e-8, 1e-8);
            assert!(tol.close(c.d_alpha_t, (hi.alpha_t - lo.alpha_t) / (2.0 * h)));
            assert!(tol.close(c.d_sigma_t, (hi.sigma_t - lo.sigma_t) / (2.0 * h)));
        }
        let c1 = p.coefficients(1.0);
        assert!(Tolerance::F64.close(c1.sigma_t, 0.1));
        assert!(Tolerance::F64.close(p.coefficients(0.0).sigma_t, 1.0));
    }

    #[test]
    fn rectified_path_interpolates_noise_and_data() {
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[[[0.0f64, 2.0]], [[1.0, -1.0]]], &dev).unwrap();
        let x1 = Tensor::new(&[[[4.0f64, 2.0]], [[3.0, 1.0]]], &dev).unwrap();
        let t = FlowTimes::from_values(&[0.25, 1.0], DType::F64, &dev).unwrap();
        let s = sample_path(&LinearPath::default(), &x0, &x1, &t).unwrap();
        // Sample 0 at t = 1/4: 0.75 x0 + 0.25 x1; sample 1 at t = 1: x1.
        Tolerance::F64.assert_close(&tensor_to_f64(&s.x_t).unwrap(), &[1.0, 2.0, 3.0, 1.0]);
        Tolerance::F64.assert_close(&tensor_to_f64(&s.dx_t).unwrap(), &[4.0, 0.0, 2.0, 2.0]);
    }

    #[test]
    fn bad_sigma_min_and_times_are_rejected() {
        assert!(matches!(
            LinearPath::new(1.0),
            Err(CoreError::InvalidParameter {
                name: "sigma_min",
                ..
            })
        ));
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 1, 2), DType::F64, &dev).unwrap();
        let t = FlowTimes::from_tensor(Tensor::new(&[1.5f64], &dev).unwrap()).unwrap();
        assert!(sample_path(&LinearPath::default(), &x, &x, &t).is_err());
    }
}
