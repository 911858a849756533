//! Noise schedules of discrete diffusion (DDPM, Ho et al. 2020; cosine schedule of Nichol &
//! Dhariwal 2021): betas, alphas, `alpha_bar` and the posterior coefficients, all in f64.
//!
//! Step `k` runs over `0..T` with data at `k = 0`: step index `k` is Ho et al.'s `t = k + 1`, so
//! `alpha_bar[k] = prod_{i <= k} (1 - beta[i])` and the "previous" `alpha_bar` of step 0 is 1.
//!
//! The forward process is `x_k = sqrt(alpha_bar[k]) x_0 + sqrt(1 - alpha_bar[k]) eps`; the posterior
//! `q(x_{k-1} | x_k, x_0)` has mean `coef_x0[k] x_0 + coef_xk[k] x_k` and variance
//! `beta_tilde[k] = beta[k] (1 - alpha_bar[k-1]) / (1 - alpha_bar[k])`.

use crate::error::CoreError;
use crate::time::DiffusionSteps;
use candle_core::{Result, Tensor};

/// How the betas of a schedule are laid out over the steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BetaSchedule {
    /// Ho et al. 2020: betas evenly spaced from `beta_start` to `beta_end` (1e-4 .. 0.02).
    Linear {
        /// First beta.
        beta_start: f64,
        /// Last beta.
        beta_end: f64,
    },
    /// Square roots of the betas evenly spaced (latent-diffusion "scaled linear"):
    /// `beta[k] = (sqrt(beta_start) + k / (T - 1) (sqrt(beta_end) - sqrt(beta_start)))^2`.
    ScaledLinear {
        /// First beta.
        beta_start: f64,
        /// Last beta.
        beta_end: f64,
    },
    /// Nichol & Dhariwal 2021: `alpha_bar(u) = f(u) / f(0)`, `f(u) = cos^2(pi/2 (u + s) / (1 + s))`
    /// with `u = k / T`, and `beta[k] = min(1 - alpha_bar((k+1)/T) / alpha_bar(k/T), max_beta)`.
    Cosine {
        /// Offset `s` (0.008 in the paper).
        s: f64,
        /// Upper clip of the betas (0.999 in the paper).
        max_beta: f64,
    },
}

impl BetaSchedule {
    /// The linear schedule of Ho et al. 2020 (1e-4 .. 0.02).
    pub const LINEAR_DDPM: BetaSchedule = BetaSchedule::Linear {
        beta_start: 1e-4,
        beta_end: 0.02,
    };
    /// The cosine schedule of Nichol & Dhariwal 2021 (`s = 0.008`, `max_beta = 0.999`).
    pub const COSINE: BetaSchedule = BetaSchedule::Cosine {
        s: 0.008,
        max_beta: 0.999,
    };

    /// The `num_steps` betas of this schedule (validated).
    pub fn betas(&self, num_steps: usize) -> std::result::Result<Vec<f64>, CoreError> {
        if num_steps == 0 {
            return Err(invalid("num_steps", "must be at least 1".into()));
        }
        let betas = match *self {
            BetaSchedule::Linear {
                beta_start,
                beta_end,
            } => {
                check_beta_range(beta_start, beta_end)?;
                linspace(beta_start, beta_end, num_steps)
            }
            BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            } => {
                check_beta_range(beta_start, beta_end)?;
                linspace(beta_start.sqrt(), beta_end.sqrt(), num_steps)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::Cosine { s, max_beta } => {
                if !(s.is_finite() && s > 0.0) {
                    return Err(invalid(
                        "cosine_s",
                        format!("must be finite and > 0, got {s}"),
                    ));
                }
                if !(max_beta > 0.0 && max_beta < 1.0) {
                    return Err(invalid(
                        "max_beta",
                        format!("must be in (0, 1), got {max_beta}"),
                    ));
                }
                let f = |u: f64| {
                    (((u + s) / (1.0 + s)) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                let t = num_steps as f64;
                (0..num_steps)
                    .map(|k| {
                        let ratio = f((k + 1) as f64 / t) / f(k as f64 / t);
                        (1.0 - ratio).min(max_beta)
                    })
                    .collect()
            }
        };
        Ok(betas)
    }
}

fn invalid(name: &'static str, reason: String) -> CoreError {
    CoreError::InvalidParameter { name, reason }
}

fn check_beta_range(beta_start: f64, beta_end: f64) -> std::result::Result<(), CoreError> {
    if !(beta_start.is_finite() && beta_start > 0.0 && beta_start < 1.0) {
        return Err(invalid(
            "beta_start",
            format!("must be in (0, 1), got {beta_start}"),
        ));
    }
    if !(beta_end.is_finite() && beta_end > 0.0 && beta_end < 1.0) {
        return Err(invalid(
            "beta_end",
            format!("must be in (0, 1), got {beta_end}"),
        ));
    }
    if beta_end < beta_start {
        return Err(invalid(
            "beta_end",
            format!("must be >= beta_start ({beta_start}), got {beta_end}"),
        ));
    }
    Ok(())
}

/// `n` evenly spaced values from `a` to `b` inclusive (`[a]` when `n == 1`).
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    (0..n).map(|i| a + step * i as f64).collect()
}

/// The configuration of a noise schedule: number of steps `T` and the beta layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseScheduleConfig {
    /// Number of diffusion steps `T` (1000 by default).
    pub num_steps: usize,
    /// Beta layout (linear 1e-4 .. 0.02 by default).
    pub betas: BetaSchedule,
}

impl Default for NoiseScheduleConfig {
    fn default() -> Self {
        Self {
            num_steps: 1000,
            betas: BetaSchedule::LINEAR_DDPM,
        }
    }
}

/// A validated DDPM noise schedule with every per-step coefficient precomputed in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas: Vec<f64>,
    alpha_bar: Vec<f64>,
    alpha_bar_prev: Vec<f64>,
    beta_tilde: Vec<f64>,
    coef_x0: Vec<f64>,
    coef_xk: Vec<f64>,
}

impl NoiseSchedule {
    /// The schedule of `cfg` (bad `T` or betas give `CoreError::InvalidParameter` naming the field).
    pub fn new(cfg: &NoiseScheduleConfig) -> std::result::Result<Self, CoreError> {
        Self::from_betas(cfg.betas.betas(cfg.num_steps)?)
    }

    /// The default DDPM schedule: `T = 1000`, linear betas 1e-4 .. 0.02.
    pub fn ddpm_linear() -> Self {
        // Constant, valid betas: no validation path is needed.
        let betas = linspace(1e-4, 0.02, 1000);
        Self::build(betas)
    }

    /// A schedule from explicit betas, each finite and in (0, 1).
    pub fn from_betas(betas: Vec<f64>) -> std::result::Result<Self, CoreError> {
        if betas.is_empty() {
            return Err(invalid("num_steps", "must be at least 1".into()));
        }
        if let Some((k, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(b.is_finite() && **b > 0.0 && **b < 1.0))
        {
            return Err(invalid(
                "betas",
                format!("beta[{k}] = {b} is not in (0, 1)"),
            ));
        }
        Ok(Self::build(betas))
    }

    fn build(betas: Vec<f64>) -> Self {
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alpha_bar = Vec::with_capacity(betas.len());
        let mut acc = 1.0;
        for a in &alphas {
            acc *= a;
            alpha_bar.push(acc);
        }
        let alpha_bar_prev: Vec<f64> = std::iter::once(1.0)
            .chain(alpha_bar.iter().copied().take(betas.len() - 1))
            .collect();
        let n = betas.len();
        let mut beta_tilde = Vec::with_capacity(n);
        let mut coef_x0 = Vec::with_capacity(n);
        let mut coef_xk = Vec::with_capacity(n);
        for k in 0..n {
            let one_minus = 1.0 - alpha_bar[k];
            beta_tilde.push(betas[k] * (1.0 - alpha_bar_prev[k]) / one_minus);
            coef_x0.push(betas[k] * alpha_bar_prev[k].sqrt() / one_minus);
            coef_xk.push((1.0 - alpha_bar_prev[k]) * alphas[k].sqrt() / one_minus);
        }
        Self {
            betas,
            alphas,
            alpha_bar,
            alpha_bar_prev,
            beta_tilde,
            coef_x0,
            coef_xk,
        }
    }

    /// Number of steps `T`.
    pub fn num_steps(&self) -> usize {
        self.betas.len()
    }

    /// `beta[k]` for every step.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// `alpha[k] = 1 - beta[k]`.
    pub fn alphas(&self) -> &[f64] {
        &self.alphas
    }

    /// `alpha_bar[k] = prod_{i <= k} alpha[i]`.
    pub fn alpha_bar(&self) -> &[f64] {
        &self.alpha_bar
    }

    /// `alpha_bar[k - 1]`, with 1 for step 0.
    pub fn alpha_bar_prev(&self) -> &[f64] {
        &self.alpha_bar_prev
    }

    /// Posterior variance `beta_tilde[k] = beta[k] (1 - alpha_bar[k-1]) / (1 - alpha_bar[k])`
    /// (0 at step 0).
    pub fn posterior_variance(&self) -> &[f64] {
        &self.beta_tilde
    }

    /// Posterior-mean coefficient of `x_0`: `beta[k] sqrt(alpha_bar[k-1]) / (1 - alpha_bar[k])`.
    pub fn posterior_coef_x0(&self) -> &[f64] {
        &self.coef_x0
    }

    /// Posterior-mean coefficient of `x_k`:
    /// `(1 - alpha_bar[k-1]) sqrt(alpha[k]) / (1 - alpha_bar[k])`.
    pub fn posterior_coef_xk(&self) -> &[f64] {
        &self.coef_xk
    }

    /// Checks that `k` was made for a schedule of this length.
    pub fn check_steps(&self, k: &DiffusionSteps) -> std::result::Result<(), CoreError> {
        if k.num_steps() != self.num_steps() {
            return Err(invalid(
                "num_steps",
                format!(
                    "diffusion steps were made for T = {}, the schedule has T = {}",
                    k.num_steps(),
                    self.num_steps()
                ),
            ));
        }
        Ok(())
    }

    /// The forward process `x_k = sqrt(alpha_bar[k]) x_0 + sqrt(1 - alpha_bar[k]) eps`, per sample.
    ///
    /// # Shapes
    /// - `x_0`, `eps`: `(batch, ...)`, same shape
    /// - `k`: `batch` steps
    /// - returns the shape of `x_0`
    pub fn q_sample(&self, x_0: &Tensor, eps: &Tensor, k: &DiffusionSteps) -> Result<Tensor> {
        self.check_steps(k)?;
        let a: Vec<f64> = k
            .steps()
            .iter()
            .map(|&s| self.alpha_bar[s].sqrt())
            .collect();
        let b: Vec<f64> = k
            .steps()
            .iter()
            .map(|&s| (1.0 - self.alpha_bar[s]).sqrt())
            .collect();
        let a = per_sample(&a, x_0)?;
        let b = per_sample(&b, x_0)?;
        x_0.broadcast_mul(&a)?.add(&eps.broadcast_mul(&b)?)
    }
}

/// Per-sample coefficients `(batch,)` as a tensor of shape `(batch, 1, ..., 1)` that broadcasts
/// against `like` (same dtype and device).
///
/// # Shapes
/// - `values`: `batch` numbers
/// - `like`: `(batch, ...)`
/// - returns `(batch, 1, ..., 1)` with the rank of `like`
pub fn per_sample(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let dims = like.dims();
    if dims.first() != Some(&values.len()) {
        candle_core::bail!(
            "{} per-sample coefficients for a tensor of shape {:?}",
            values.len(),
            like.shape()
        );
    }
    let mut shape = vec![1usize; dims.len()];
    shape[0] = values.len();
    Tensor::from_slice(values, shape, like.device())?.to_dtype(like.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tolerance::Tolerance;
    use candle_core::{DType, Device};

    #[test]
    fn linear_schedule_spans_its_endpoints() {
        let s = NoiseSchedule::ddpm_linear();
        assert_eq!(s.num_steps(), 1000);
        let tol = Tolerance::F64;
        assert!(tol.close(s.betas()[0], 1e-4));
        assert!(tol.close(s.betas()[999], 0.02));
        assert!(tol.close(s.alpha_bar()[0], 1.0 - 1e-4));
        assert!(tol.close(s.alpha_bar_prev()[0], 1.0));
        assert!(tol.close(s.alpha_bar_prev()[5], s.alpha_bar()[4]));
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let bad = |cfg: NoiseScheduleConfig| match NoiseSchedule::new(&cfg) {
            Err(CoreError::InvalidParameter { name, .. }) => name,
            other => panic!("expected InvalidParameter, got {other:?}"),
        };
        let lin = |a, b| BetaSchedule::Linear {
            beta_start: a,
            beta_end: b,
        };
        assert_eq!(
            bad(NoiseScheduleConfig {
                num_steps: 0,
                betas: BetaSchedule::LINEAR_DDPM
            }),
            "num_steps"
        );
        assert_eq!(
            bad(NoiseScheduleConfig {
                num_steps: 10,
                betas: lin(0.0, 0.02)
            }),
            "beta_start"
        );
        assert_eq!(
            bad(NoiseScheduleConfig {
                num_steps: 10,
                betas: lin(1e-4, 1.0)
            }),
            "beta_end"
        );
        assert_eq!(
            bad(NoiseScheduleConfig {
                num_steps: 10,
                betas: lin(0.02, 1e-4)
            }),
            "beta_end"
        );
        assert_eq!(
            bad(NoiseScheduleConfig {
                num_steps: 10,
                betas: lin(f64::NAN, 0.02)
            }),
            "beta_start"
        );
        assert_eq!(
            bad(NoiseScheduleConfig {
                num_steps: 10,
                betas: BetaSchedule::Cosine {
                    s: 0.008,
                    max_beta: 1.0
                }
            }),
            "max_beta"
        );
        assert_eq!(
            bad(NoiseScheduleConfig {
                num_steps: 10,
                betas: BetaSchedule::Cosine {
                    s: -1.0,
                    max_beta: 0.5
                }
            }),
            "cosine_s"
        );
        assert!(matches!(
            NoiseSchedule::from_betas(vec![0.1, 1.0]),
            Err(CoreError::InvalidParameter { name: "betas", .. })
        ));
    }

    #[test]
    fn posterior_matches_its_definition_and_vanishes_at_step_zero() {
        let s = NoiseSchedule::new(&NoiseScheduleConfig {
            num_steps: 50,
            betas: BetaSchedule::COSINE,
        })
        .unwrap();
        let tol = Tolerance::new(1e-12, 1e-15);
        assert!(tol.close(s.posterior_variance()[0], 0.0));
        assert!(tol.close(s.posterior_coef_x0()[0], 1.0));
        assert!(tol.close(s.posterior_coef_xk()[0], 0.0));
        // The posterior mean with x_0 = (x_k - sqrt(1 - abar) eps) / sqrt(abar) equals Ho et al.'s
        // eq. 11, 1/sqrt(alpha) (x_k - beta / sqrt(1 - abar) eps), for any x_k and eps.
        for k in [1usize, 17, 49] {
            let (xk, eps) = (0.7, -1.3);
            let ab = s.alpha_bar()[k];
            let x0 = (xk - (1.0 - ab).sqrt() * eps) / ab.sqrt();
            let mean = s.posterior_coef_x0()[k] * x0 + s.posterior_coef_xk()[k] * xk;
            let eq11 = (xk - s.betas()[k] / (1.0 - ab).sqrt() * eps) / s.alphas()[k].sqrt();
            assert!(tol.close(mean, eq11), "k {k}: {mean} vs {eq11}");
        }
    }

    #[test]
    fn q_sample_mixes_data_and_noise_per_sample() {
        let s = NoiseSchedule::from_betas(vec![0.5, 0.5]).unwrap();
        let x0 = Tensor::new(&[[[1.0f64, 2.0]], [[1.0, 2.0]]], &Device::Cpu).unwrap();
        let eps = Tensor::new(&[[[4.0f64, 0.0]], [[4.0, 0.0]]], &Device::Cpu).unwrap();
        let k = DiffusionSteps::new(vec![0, 1], 2).unwrap();
        let xk = s.q_sample(&x0, &eps, &k).unwrap();
        // abar = 0.5 then 0.25: sqrt weights (0.7071, 0.7071) and (0.5, 0.8660).
        let h = 0.5f64.sqrt();
        let e = [h * 1.0 + h * 4.0, h * 2.0, 0.5 + 0.75f64.sqrt() * 4.0, 1.0];
        Tolerance::F64.assert_close(&crate::tolerance::tensor_to_f64(&xk).unwrap(), &e);
        assert_eq!(xk.dtype(), DType::F64);
        let wrong_t = DiffusionSteps::new(vec![0, 1], 3).unwrap();
        assert!(s.q_sample(&x0, &eps, &wrong_t).is_err());
    }
}
