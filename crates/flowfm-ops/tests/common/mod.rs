//! What the op tests share: the convolution geometries that every convolution path (the CPU
//! kernels in `gradcheck_ops.rs`, the portable path in `portable_path.rs`) is checked over.

use flowfm_ops::{Conv1dSpec, PaddingMode};

/// One convolution to check: batch, input channels, length, output channels, kernel size and
/// the geometry.
pub struct ConvCase {
    pub batch: usize,
    pub c_in: usize,
    pub len: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub spec: Conv1dSpec,
}

/// Odd lengths, strides 1/2/5, kernels 1/3/5, zero and circular padding, dilation 2, groups 2,
/// 3 and 4 (depthwise), batch sizes 1 and more, and a HARNet10-like layer.
pub fn conv_cases() -> Vec<ConvCase> {
    // (batch, c_in, len, c_out, kernel, stride, padding, mode, dilation, groups)
    [
        (1, 2, 7, 3, 1, 1, 0, PaddingMode::Zeros, 1, 1),
        (2, 3, 9, 2, 1, 2, 0, PaddingMode::Zeros, 1, 1),
        (2, 2, 11, 3, 3, 1, 1, PaddingMode::Zeros, 1, 1),
        (3, 2, 10, 2, 3, 2, 1, PaddingMode::Circular, 1, 1),
        (1, 3, 13, 2, 5, 1, 2, PaddingMode::Circular, 1, 1),
        (2, 2, 16, 3, 5, 5, 2, PaddingMode::Zeros, 1, 1),
        (2, 2, 15, 2, 3, 1, 2, PaddingMode::Circular, 2, 1),
        (2, 4, 9, 4, 3, 1, 1, PaddingMode::Zeros, 1, 2),
        (2, 4, 12, 4, 5, 2, 2, PaddingMode::Circular, 1, 4),
        (1, 3, 8, 6, 3, 1, 0, PaddingMode::Zeros, 1, 3),
        // A HARNet10-like layer (stride 1, circular, one group: the CPU's sliding path).
        (2, 4, 24, 4, 5, 1, 2, PaddingMode::Circular, 1, 1),
    ]
    .into_iter()
    .map(
        |(batch, c_in, len, c_out, kernel, stride, padding, padding_mode, dilation, groups)| {
            ConvCase {
                batch,
                c_in,
                len,
                c_out,
                kernel,
                spec: Conv1dSpec {
                    stride,
                    padding,
                    padding_mode,
                    dilation,
                    groups,
                },
            }
        },
    )
    .collect()
}
