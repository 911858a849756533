//! The geometry of a 1-D convolution (padding, stride, dilation, groups), shared by the im2col
//! path (`conv`) and the sliding-window path (`sliding`).

use candle_core::Result;

/// How a convolution pads its input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PaddingMode {
    /// Zeros outside the signal.
    #[default]
    Zeros,
    /// The signal wraps around (PyTorch's `padding_mode="circular"`).
    Circular,
}

/// Geometry of a 1-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dSpec {
    /// Step between output positions.
    pub stride: usize,
    /// Samples of padding on each side.
    pub padding: usize,
    /// What the padding holds.
    pub padding_mode: PaddingMode,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Number of channel groups (`C_in` for a depthwise convolution).
    pub groups: usize,
}

impl Default for Conv1dSpec {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            padding_mode: PaddingMode::Zeros,
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv1dSpec {
    /// Output length for an input of `len` samples and a kernel of `kernel` taps.
    pub fn out_len(&self, len: usize, kernel: usize) -> Result<usize> {
        if self.stride == 0 || self.dilation == 0 || self.groups == 0 || kernel == 0 {
            candle_core::bail!("conv1d: stride, dilation, groups and kernel must be > 0 ({self:?}, kernel {kernel})");
        }
        if self.padding_mode == PaddingMode::Circular && self.padding > len {
            candle_core::bail!(
                "conv1d: circular padding {} exceeds the input length {len}",
                self.padding
            );
        }
        let span = self.dilation * (kernel - 1) + 1;
        let padded = len + 2 * self.padding;
        if padded < span {
            candle_core::bail!("conv1d: input of {len} samples (padded {padded}) is shorter than the kernel span {span}");
        }
        Ok((padded - span) / self.stride + 1)
    }
}
