//! Global pooling over the time axis and concatenation along channels.

use candle_core::{Result, Tensor};

/// Mean over samples.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`; returns `(batch, channels)`
pub fn global_avg_pool1d(x: &Tensor) -> Result<Tensor> {
    x.mean(2)
}

/// Maximum over samples.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`; returns `(batch, channels)`
pub fn global_max_pool1d(x: &Tensor) -> Result<Tensor> {
    x.max(2)
}

/// Concatenates tensors along the channel axis (dimension 1).
///
/// # Shapes
/// - `xs[i]`: `(batch, c_i, samples)`; returns `(batch, sum c_i, samples)`
pub fn cat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    Tensor::cat(xs, 1)
}
