//! flowfm-core: the vocabulary every flowfm crate shares.
//!
//! - [`traits`]: the [`Encoder`], [`VelocityField`] and [`Denoiser`] traits that objectives and
//!   samplers see networks through (so they can be tested against analytic fields);
//! - [`conditioning`]: what a generator is conditioned on (a representation `z`, or nothing);
//! - [`time`]: flow time (`f64` in [0, 1], noise at 0, data at 1) and diffusion steps (integers,
//!   data at 0, noise at `T`), kept apart by type;
//! - [`paths`] and [`schedule`]: probability paths and noise schedules (pure math, f64);
//! - [`rng`] and [`init`]: seeded randomness and seeded weight initialisation (candle's CPU random
//!   ops cannot be seeded, so nothing in flowfm uses them);
//! - [`interp`]: the natural cubic spline shared by augmentation and the multi-task transforms;
//! - [`device`]: the CPU or a CUDA GPU (`cpu`, `cuda:N`), opened with a clear error;
//! - [`tolerance`]: the one helper every float comparison goes through;
//! - [`hash`]: FNV-1a, the stable non-cryptographic hash of seed labels and short fingerprints;
//! - [`fs`]: the crate's only file-touching code, one helper: atomic replacement of a file
//!   (temp file beside it, fsync, rename) and clean-up of the temp files a killed process leaves.
//!   Everything else in core is pure.

pub mod conditioning;
pub mod device;
pub mod error;
pub mod fs;
pub mod hash;
pub mod init;
pub mod interp;
pub mod paths;
pub mod rng;
pub mod schedule;
pub mod testing;
pub mod time;
pub mod tolerance;
pub mod traits;

pub use conditioning::Conditioning;
pub use error::CoreError;
pub use paths::{sample_path, LinearPath, PathSample, PathScheduler, SchedulerCoefficients};
pub use rng::SeededRng;
pub use schedule::{BetaSchedule, NoiseSchedule, NoiseScheduleConfig};
pub use time::{DiffusionStep, DiffusionSteps, FlowTime, FlowTimes};
pub use tolerance::Tolerance;
pub use traits::{Denoiser, Encoder, ForwardMode, VelocityField};
