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

/// Runs `f` on a worker thread of rayon's current pool and returns its result.
///
/// Every op of this crate splits its work with rayon. Called from a thread outside the pool
/// (the program's main thread), each of those parallel loops hands its work to the pool and
/// blocks until a woken worker finishes it: one wake-up per op, dozens per layer. Called from a
/// worker, a parallel loop starts at once on the calling thread and the other workers steal from
/// it. Wrapping a whole forward pass or training step in `on_worker` pays one hand-off instead
/// (measured in docs/benchmarks.md, "Speed against PyTorch, session 9"). On a worker already, `f` simply
/// runs. `f` must not block waiting for other work on the same pool (a channel fed by a thread
/// that itself uses rayon): with a one-thread pool that would never finish.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn on_worker_runs_on_a_pool_worker_and_inline_when_already_there() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a two-thread pool");
        // From outside any pool: moved onto a worker of the global pool.
        assert!(rayon::current_thread_index().is_none());
        assert!(super::on_worker(rayon::current_thread_index).is_some());
        // From a worker: runs right there, on the same thread, and parallel loops inside work.
        pool.install(|| {
            let here = std::thread::current().id();
            let (there, sum) = super::on_worker(|| {
                use rayon::prelude::*;
                let sum: u64 = (0..1000u64).into_par_iter().sum();
                (std::thread::current().id(), sum)
            });
            assert_eq!(here, there);
            assert_eq!(sum, 499_500);
        });
    }
}
