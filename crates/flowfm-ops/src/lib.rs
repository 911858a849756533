//! flowfm-ops: the differentiable 1-D tensor operations flowfm's models train with, with
//! gradients that are correct on the CPU, and the finite-difference checker that proves it.
//!
//! candle 0.11.1 computes wrong gradients on the CPU for several ops (conv1d weight gradients with
//! the non-contiguous kernels that backprop produces, conv1d input gradients for 1x1 kernels, and
//! nearest upsampling, which overwrites instead of accumulating). This crate supplies its own
//! kernels where candle is wrong (im2col as a custom op with its own backward, a blur-downsample op)
//! and composes candle's correct primitives elsewhere. Every op is covered by [`gradcheck`] tests
//! in f64. On non-CPU devices (a CUDA GPU) every op takes its portable path instead: a
//! composition of candle primitives that every backend implements ([`portable`] for convolution
//! and blur; composed norms, activations and AdamW), never candle's own `conv1d`.
//! [`with_portable_ops`] forces that path on the CPU, so its forward values and gradients are
//! tested on every machine (`tests/portable_path.rs`), and on a GPU when one is present.
//!
//! Modules: [`conv`] (conv1d, `Conv1d`), [`block`] (a batch-norm residual block trained as one op), [`portable`] (the device-independent compositions), [`sliding`] (stride-1 convolution without im2col), [`resample`] (nearest upsampling, anti-aliased
//! downsampling), [`linear`] (linear on inputs of any rank), [`norm`] (group norm, batch norm),
//! [`activation`], [`lanes`] (SiLU in f32 SIMD lanes), [`pool`] (global pooling, channel concatenation), [`optim`] (AdamW, gradient
//! clipping, warm-up + cosine schedule, EMA), [`gradcheck`].

/// Runs `$f::<T>($extra.., slices..)` on the contiguous data of the given CPU storages for `T`
/// f32 or f64 (the first storage's type), and returns the result as storage; any other type is
/// an error naming the op `$name`. What every custom op's `cpu_fwd` does.
macro_rules! dispatch {
    ($name:expr, $f:ident, [$(($s:expr, $l:expr)),+] $(, $extra:expr)*) => {
        match ($(candle_core::backend::BackendStorage::dtype($s),)+).0 {
            candle_core::DType::F32 => <f32 as candle_core::WithDType>::to_cpu_storage_owned($f::<f32>(
                $($extra,)* $($crate::contiguous_slice::<f32>($name, $s, $l)?,)+
            )),
            candle_core::DType::F64 => <f64 as candle_core::WithDType>::to_cpu_storage_owned($f::<f64>(
                $($extra,)* $($crate::contiguous_slice::<f64>($name, $s, $l)?,)+
            )),
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", $name),
        }
    };
}

pub mod activation;
pub mod block;
pub mod conv;
pub mod fused_norm;
pub mod gradcheck;
pub mod lanes;
pub mod linear;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod portable;
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
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Set while [`with_portable_ops`] runs on this thread.
    static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether flowfm's own CPU kernels are used for tensors on `device`: on the CPU, unless the
/// portable path is forced on this thread ([`with_portable_ops`]). Elsewhere (a CUDA device)
/// every op runs as its portable composition of candle primitives, whose gradients the tests
/// check against finite differences on the CPU and, when one is present, on the GPU.
pub fn uses_own_kernels(device: &Device) -> bool {
    device.is_cpu() && !portable_forced()
}

/// Whether [`with_portable_ops`] is in force on this thread.
pub fn portable_forced() -> bool {
    PORTABLE.with(std::cell::Cell::get)
}

/// Runs `f` with every op of this crate taking its portable path (the one a GPU runs: candle
/// primitives only, no CPU kernel of ours) even on the CPU, and restores the previous setting
/// afterwards, also when `f` panics. [`on_worker`] carries the setting to the pool worker it
/// hands `f` to. This is how the tests compare, on any machine, the computation a GPU does with
/// the one the CPU does, and check its gradients.
pub fn with_portable_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PORTABLE.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(PORTABLE.with(|p| p.replace(true)));
    f()
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
///
/// While `f` runs, the pool's other workers stay awake looking for its work ([`keep_busy`])
/// instead of falling asleep between its parallel loops and waiting to be woken for the next
/// (the scheduler's wake-ups were most of what two threads lost on a training step;
/// docs/benchmarks.md).
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let forced = portable_forced();
    let done = AtomicBool::new(false);
    let done = &done;
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| keep_busy(done, owner));
        }
        let out = if forced { with_portable_ops(f) } else { f() };
        done.store(true, Ordering::Release);
        out
    })
}

/// Runs the pool's pending work on this worker until `done`, spinning briefly between
/// attempts (what OpenMP runtimes do between parallel regions). Returns at once on the thread
/// that runs the caller's work (`owner`): picked up there while it waits inside a parallel
/// loop, it would otherwise spin until that very work finished.
fn keep_busy(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner {
        return;
    }
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle = 0,
            Some(rayon::Yield::Idle) => {
                idle = idle.saturating_add(1);
                if idle % 1024 == 0 {
                    // Long idle stretches (a serial part of the caller's work): let the
                    // operating system run something else on this core if it has to.
                    std::thread::yield_now();
                } else {
                    for _ in 0..32 {
                        std::hint::spin_loop();
                    }
                }
            }
            None => return,
        }
    }
}

/// Windows per chunk of [`eval_in_chunks`]: a fixed number, so that results do not depend on the
/// number of threads.
pub const EVAL_CHUNK: usize = 16;

/// An evaluation over a batch of `batch` independent windows, as chunks of [`EVAL_CHUNK`]
/// windows evaluated concurrently on the pool (`f(start, len)` evaluates rows
/// `start..start + len`), their outputs concatenated along dimension 0 in order.
///
/// Inside one network evaluation every op is a short parallel loop, and on two cores the
/// second thread spends part of each waiting to be woken and spinning at its end (an evaluation
/// of the U-Net took 1.4x less time on 2 threads than on 1, PyTorch's 1.7x;
/// docs/benchmarks.md). Chunks keep every thread busy with a window of its own; the ops inside
/// still split their loops, which idle threads steal. Only for computations whose rows do not
/// interact (evaluation-mode norms, no batch statistics); with at most one chunk, `f` runs on
/// the whole batch. Call it on a pool worker ([`on_worker`]).
pub fn eval_in_chunks(
    batch: usize,
    f: impl Fn(usize, usize) -> candle_core::Result<candle_core::Tensor> + Sync,
) -> candle_core::Result<candle_core::Tensor> {
    use rayon::prelude::*;
    if batch <= EVAL_CHUNK {
        return f(0, batch);
    }
    let parts = (0..batch)
        .step_by(EVAL_CHUNK)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| f(start, EVAL_CHUNK.min(batch - start)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    candle_core::Tensor::cat(&parts, 0)
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
    fn chunks_cover_the_batch_in_order_and_errors_come_through() {
        use candle_core::{Device, Tensor};
        let rows = |start: usize, len: usize| {
            let v: Vec<f32> = (start..start + len).map(|i| i as f32).collect();
            Tensor::from_vec(v, (len, 1), &Device::Cpu)
        };
        for batch in [
            1,
            super::EVAL_CHUNK,
            super::EVAL_CHUNK + 1,
            3 * super::EVAL_CHUNK + 5,
        ] {
            let calls = std::sync::atomic::AtomicUsize::new(0);
            let out = super::on_worker(|| {
                super::eval_in_chunks(batch, |s, n| {
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    assert!(n <= super::EVAL_CHUNK && n > 0);
                    rows(s, n)
                })
            })
            .unwrap();
            let got: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
            let want: Vec<f32> = (0..batch).map(|i| i as f32).collect();
            assert!(got == want, "batch {batch}");
            assert_eq!(calls.into_inner(), batch.div_ceil(super::EVAL_CHUNK));
        }
        let err = super::eval_in_chunks(40, |s, n| {
            if s == 16 {
                candle_core::bail!("chunk at {s} failed")
            }
            rows(s, n)
        })
        .unwrap_err();
        assert!(err.to_string().contains("chunk at 16 failed"), "{err}");
    }

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
