//! What the op tests share: the convolution geometries that every convolution path (the CPU
//! kernels in `gradcheck_ops.rs`, the portable path in `portable_path.rs`) is checked over, and
//! the seeded inputs and bit patterns of the bit-for-bit comparisons (`prepared_conv.rs`,
//! `residual_block.rs`).
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use flowfm_core::SeededRng;
use flowfm_ops::{Conv1dSpec, PaddingMode};

/// A tensor of `dims` drawn from a standard normal, in `dtype`.
pub fn randn(rng: &mut SeededRng, dims: &[usize], dtype: DType) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// The bit patterns of an f32 or f64 tensor's values.
pub fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F32 => t
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(|v| u64::from(v.to_bits()))
            .collect(),
        _ => t
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(f64::to_bits)
            .collect(),
    }
}

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
