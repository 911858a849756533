//! The geometry of a 1-D convolution (padding, stride, dilation, groups), shared by the im2col
//! path (`conv`), the sliding-window path (`sliding`) and the portable path (`portable`), with
//! the channel/group check all of them make and (in tests) the direct-loop reference they are
//! compared with.

use candle_core::{Result, Tensor};

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

/// An error unless `c_in` input channels and a weight `(c_out, c_in / groups, kernel)` fit `groups`.
pub(crate) fn check_groups(c_in: usize, weight: &Tensor, g: usize) -> Result<()> {
    let (c_out, c_in_g, _) = weight.dims3()?;
    if g == 0 || c_in % g != 0 || c_out % g != 0 || c_in / g != c_in_g {
        candle_core::bail!(
            "conv1d: input channels {c_in}, weight {:?} and groups {g} do not fit together",
            weight.dims()
        );
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Direct-loop reference convolution, written independently of every path it checks (the
    /// im2col and sliding paths in `conv`, the portable path).
    pub(crate) fn reference(
        x: &[f64],
        (b, c_in, l): (usize, usize, usize),
        w: &[f64],
        (c_out, c_in_g, k): (usize, usize, usize),
        s: &Conv1dSpec,
    ) -> Vec<f64> {
        let l_out = s.out_len(l, k).unwrap();
        let co_g = c_out / s.groups;
        let mut y = vec![0.0; b * c_out * l_out];
        for bi in 0..b {
            for co in 0..c_out {
                let grp = co / co_g;
                for o in 0..l_out {
                    let mut acc = 0.0;
                    for ci in 0..c_in_g {
                        let cin = grp * c_in_g + ci;
                        for kk in 0..k {
                            let p = (o * s.stride + kk * s.dilation) as i64 - s.padding as i64;
                            let v = if p >= 0 && p < l as i64 {
                                x[(bi * c_in + cin) * l + p as usize]
                            } else if s.padding_mode == PaddingMode::Circular {
                                x[(bi * c_in + cin) * l + p.rem_euclid(l as i64) as usize]
                            } else {
                                0.0
                            };
                            acc += v * w[(co * c_in_g + ci) * k + kk];
                        }
                    }
                    y[(bi * c_out + co) * l_out + o] = acc;
                }
            }
        }
        y
    }
}
