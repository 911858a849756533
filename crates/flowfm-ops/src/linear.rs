//! Linear layers on inputs of any rank (the last dimension is the feature dimension).
//!
//! The input is made contiguous and flattened to 2-D before one matrix product, which sidesteps
//! candle 0.11.1's wrong gradients for batched matmul with a broadcast right side and a
//! transposed left side (a `Linear` applied to a transposed 3-D view).

use crate::conv::{torch_default_bias_init, torch_default_weight_init};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `y = x W^T + b` over the last dimension.
///
/// # Shapes
/// - `x`: `(..., in)`
/// - `weight`: `(out, in)`; `bias`: `(out,)`
/// - returns `(..., out)`
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let Some((&d_in, lead)) = dims.split_last() else {
        candle_core::bail!("linear: input must have at least one dimension");
    };
    let (d_out, w_in) = weight.dims2()?;
    if w_in != d_in {
        candle_core::bail!("linear: input has {d_in} features, weight expects {w_in}");
    }
    let rows: usize = lead.iter().product();
    let x2 = x.contiguous()?.reshape((rows, d_in))?;
    let mut y = x2.matmul(&weight.t()?)?;
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    let mut out_dims = lead.to_vec();
    out_dims.push(d_out);
    y.reshape(out_dims)
}

/// A linear layer with PyTorch's default initialisation; parameters `weight` `(out, in)`, `bias`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A new layer drawn from the seeded `vb`.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints(
            (out_features, in_features),
            "weight",
            torch_default_weight_init(),
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(out_features, "bias", torch_default_bias_init(in_features))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// A layer from existing tensors.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The weight `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    /// # Shapes
    /// - `x`: `(..., in)`; returns `(..., out)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, self.bias.as_ref())
    }
}
