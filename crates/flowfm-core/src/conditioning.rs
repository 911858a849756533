//! What a generator is conditioned on.

use candle_core::{Result, Tensor};

/// The conditioning of a velocity field or denoiser.
#[derive(Clone, Debug)]
pub enum Conditioning {
    /// Unconditional (or the "null" condition of classifier-free guidance).
    None,
    /// A representation `z` of shape `(batch, dim)`, usually `Encoder::encode(x_1)`; gradients flow
    /// through it into the encoder during joint training.
    Representation(Tensor),
}

impl Conditioning {
    /// The representation, if any.
    pub fn representation(&self) -> Option<&Tensor> {
        match self {
            Conditioning::None => None,
            Conditioning::Representation(z) => Some(z),
        }
    }

    /// A copy cut from the autograd graph (for sampling and inference).
    pub fn detach(&self) -> Conditioning {
        match self {
            Conditioning::None => Conditioning::None,
            Conditioning::Representation(z) => Conditioning::Representation(z.detach()),
        }
    }

    /// Rows `start..start + len` of the batch.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Conditioning> {
        Ok(match self {
            Conditioning::None => Conditioning::None,
            Conditioning::Representation(z) => {
                Conditioning::Representation(z.narrow(0, start, len)?)
            }
        })
    }
}
