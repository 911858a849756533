//! flowfm-ops: the differentiable 1-D tensor operations flowfm's models train with, with
//! gradients that are correct on the CPU, and the finite-difference checker that proves it.
//!
//! candle 0.11.1 computes wrong gradients on the CPU for several ops (conv1d weight gradients with
//! the non-contiguous kernels that backprop produces, conv1d input gradients for 1x1 kernels, and
//! nearest upsampling, which overwrites instead of accumulating). This crate supplies its own
//! kernels where candle is wrong (im2col as a custom op with its own backward, a blur-downsample op)
//! and composes candle's correct primitives elsewhere. Every op is covered by [`gradcheck`] tests
//! in f64. On non-CPU devices the ops forward to candle's kernels, which are not affected.
//!
//! Modules: [`conv`] (conv1d, `Conv1d`), [`sliding`] (stride-1 convolution without im2col), [`resample`] (nearest upsampling, anti-aliased
//! downsampling), [`linear`] (linear on inputs of any rank), [`norm`] (group norm, batch norm),
//! [`activation`], [`lanes`] (SiLU in f32 SIMD lanes), [`pool`] (global pooling, channel concatenation), [`optim`] (AdamW, gradient
//! clipping, warm-up + cosine schedule, EMA), [`gradcheck`].

pub mod activation;
pub mod conv;
pub mod fused_norm;
pub mod gradcheck;
pub mod lanes;
pub mod linear;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod resample;
pub mod sliding;
pub mod spec;

pub use conv::{conv1d, conv1d_bias, conv1d_im2col, Conv1d, Conv1dConfig, Conv1dSpec, PaddingMode};
pub use linear::{linear, Linear};
pub use norm::{batch_norm_train, group_norm, BatchNorm1d, BatchNormConfig, GroupNorm};
pub use pool::{cat_channels, global_avg_pool1d, global_max_pool1d};
pub use resample::{blur_downsample1d, upsample_nearest1d, BlurDownsample};
pub use sliding::conv1d_sliding;

use candle_core::{CpuStorage, Device, Layout, Result, WithDType};

/// Whether flowfm's own kernels are used on `device` (the CPU); elsewhere candle's kernels are
/// correct and are used instead.
pub fn uses_own_kernels(device: &Device) -> bool {
    device.is_cpu()
}

/// The contiguous slice of a CPU storage of element type `T`, or an error naming the op.
pub(crate) fn contiguous_slice<'a, T: WithDType>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}
