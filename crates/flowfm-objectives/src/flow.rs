//! Conditional flow matching (Lipman et al. 2023; rectified flow, Liu et al. 2023) on an affine
//! path, and the samplers of its training times (uniform, logit-normal of Esser et al. 2024).

use candle_core::{DType, Device, Result, Tensor};
use flowfm_core::{
    sample_path, Conditioning, CoreError, FlowTimes, PathScheduler, SeededRng, VelocityField,
};

/// How training flow times are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum TimeSampling {
    /// `t ~ U[0, 1)`.
    #[default]
    Uniform,
    /// `t = sigmoid(mean + std n)`, `n ~ N(0, 1)`: concentrates training on intermediate times.
    LogitNormal {
        /// Mean of the logit.
        mean: f64,
        /// Standard deviation of the logit (> 0).
        std: f64,
    },
}

/// Draws `batch` training flow times.
///
/// # Shapes
/// - returns `(batch,)`
pub fn sample_flow_times(
    rng: &mut SeededRng,
    batch: usize,
    sampling: TimeSampling,
    dtype: DType,
    device: &Device,
) -> Result<FlowTimes> {
    let ts: Vec<f64> = match sampling {
        TimeSampling::Uniform => rng.uniform_vec(batch, 0.0, 1.0),
        TimeSampling::LogitNormal { mean, std } => {
            if !mean.is_finite() {
                return Err(CoreError::InvalidParameter {
                    name: "logit_normal_mean",
                    reason: format!("must be finite, got {mean}"),
                }
                .into());
            }
            if !(std.is_finite() && std > 0.0) {
                return Err(CoreError::InvalidParameter {
                    name: "logit_normal_std",
                    reason: format!("must be finite and > 0, got {std}"),
                }
                .into());
            }
            rng.normal_vec(batch)
                .into_iter()
                .map(|n| 1.0 / (1.0 + (-(mean + std * n)).exp()))
                .collect()
        }
    };
    FlowTimes::from_values(&ts, dtype, device)
}

/// The conditional flow-matching loss `mean || v(x_t, t | cond) - dx_t ||^2` (a scalar).
///
/// `x_0` is the noise, `x_1` the data, `t` the per-sample times; `x_t` and the target `dx_t` come
/// from `path` (for the linear path: `x_t = (1 - t) x_0 + t x_1`, `dx_t = x_1 - x_0`). The mean is
/// over every element. Gradients reach the field's parameters and, through `cond`, the encoder
/// that produced the representation (joint training).
///
/// # Shapes
/// - `x_1`, `x_0`: `(batch, channels, samples)`
/// - `t`: `(batch,)`
/// - returns a scalar `()`
pub fn flow_matching_loss(
    field: &dyn VelocityField,
    x_1: &Tensor,
    x_0: &Tensor,
    t: &FlowTimes,
    cond: &Conditioning,
    path: &dyn PathScheduler,
) -> Result<Tensor> {
    let batch = x_1.dims().first().copied().unwrap_or(0);
    if t.batch() != batch {
        candle_core::bail!("{} flow times for a batch of {batch}", t.batch());
    }
    let s = sample_path(path, x_0, x_1, t)?;
    let v = field.velocity(&s.x_t, t, cond)?;
    if v.shape() != s.dx_t.shape() {
        candle_core::bail!(
            "velocity field returned shape {:?} for x_t of shape {:?}",
            v.shape(),
            s.x_t.shape()
        );
    }
    v.sub(&s.dx_t)?.sqr()?.mean_all()
}
