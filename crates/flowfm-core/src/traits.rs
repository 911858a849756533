//! The traits through which objectives and samplers see networks.
//!
//! Objectives and samplers never depend on `flowfm-models`: they take `&dyn VelocityField` (or a
//! closure, see the blanket impls), so they are tested against analytic fields.

use crate::conditioning::Conditioning;
use crate::time::{DiffusionSteps, FlowTimes};
use candle_core::{Result, Tensor};

/// Whether a forward pass trains (batch statistics, updated running stats) or evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardMode {
    /// Training: batch norm uses and updates batch statistics.
    Train,
    /// Evaluation: batch norm uses running statistics; nothing is updated.
    Eval,
}

/// A representation encoder.
pub trait Encoder {
    /// Dimension `d` of the representation.
    fn repr_dim(&self) -> usize;

    /// Encodes windows into representations.
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`
    /// - returns `(batch, d)`
    fn encode(&self, x: &Tensor, mode: ForwardMode) -> Result<Tensor>;
}

/// A conditional velocity field `v(x_t, t | cond)` for flow matching (t = 0 noise, t = 1 data).
pub trait VelocityField {
    /// The velocity at `x_t`.
    ///
    /// # Shapes
    /// - `x_t`: `(batch, channels, samples)`
    /// - `t`: `(batch,)`
    /// - returns the shape of `x_t`
    fn velocity(&self, x_t: &Tensor, t: &FlowTimes, cond: &Conditioning) -> Result<Tensor>;
}

/// A conditional noise predictor `eps(x_k, k | cond)` for DDPM/DDIM (k = 0 data).
pub trait Denoiser {
    /// The predicted noise at `x_k`.
    ///
    /// # Shapes
    /// - `x_k`: `(batch, channels, samples)`
    /// - `k`: `batch` steps
    /// - returns the shape of `x_k`
    fn predict_noise(
        &self,
        x_k: &Tensor,
        k: &DiffusionSteps,
        cond: &Conditioning,
    ) -> Result<Tensor>;
}

impl<F> VelocityField for F
where
    F: Fn(&Tensor, &FlowTimes, &Conditioning) -> Result<Tensor>,
{
    fn velocity(&self, x_t: &Tensor, t: &FlowTimes, cond: &Conditioning) -> Result<Tensor> {
        self(x_t, t, cond)
    }
}

impl<F> Denoiser for F
where
    F: Fn(&Tensor, &DiffusionSteps, &Conditioning) -> Result<Tensor>,
{
    fn predict_noise(
        &self,
        x_k: &Tensor,
        k: &DiffusionSteps,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        self(x_k, k, cond)
    }
}
