//! Activations used by the models (all candle primitives, verified by the gradient checks).

use candle_core::{Result, Tensor};

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}

/// `x * sigmoid(x)` (SiLU / swish).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}

/// GELU with the exact erf formulation.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// `1 / (1 + exp(-x))`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::sigmoid(x)
}

/// Hyperbolic tangent.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    x.tanh()
}
