//! The `flowfm generate` job: reconstructs windows from their own representations or samples new
//! ones from a fitted [`RepresentationGaussian`], records NFE and wall time per window, and writes
//! an HDF5 window store atomically.

use super::models::TrainedModels;
use super::sampler::SamplerSpec;
use crate::encode::encode_windows;
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Tensor};
use flowfm_core::SeededRng;
use flowfm_data::store::write_store;
use flowfm_data::window::WindowSet;
use flowfm_eval::generative::gaussian::{CovarianceKind, RepresentationGaussian};
use flowfm_eval::{reconstruction_error, Windows};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Value of the store's `preprocessing_version` attribute for generated windows.
pub const GENERATED_STORE_VERSION: i64 = 1;

/// What to condition generation on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum GenerateMode {
    /// Rebuild each given window from its own representation.
    Reconstruct,
    /// Fit a Gaussian to the given windows' representations (the training pool) and generate
    /// `count` windows conditioned on draws from it.
    Sample {
        /// Windows to generate.
        count: usize,
        /// Covariance of the fitted Gaussian.
        covariance: CovarianceKind,
    },
}

/// One `flowfm generate` job.
#[derive(Clone, Debug)]
pub struct GenerateJob {
    /// Solver or sampler.
    pub sampler: SamplerSpec,
    /// Windows per network call.
    pub batch_size: usize,
    /// Seed of the noise and of the drawn representations.
    pub seed: u64,
    /// Reconstruction or sampling.
    pub mode: GenerateMode,
    /// The HDF5 store to write (atomically).
    pub output: PathBuf,
}

/// Reconstruction quality of a reconstruct job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionSummary {
    /// Mean squared error over all values.
    pub mse: f64,
    /// Root of `mse`.
    pub rmse: f64,
    /// Mean per-window correlation.
    pub corr_mean: f64,
}

/// What a generation job did; also stored as JSON in the output store's `config` attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateSummary {
    /// `flowfm` or `diffusion`.
    pub method: String,
    /// Sampler label.
    pub sampler: String,
    /// The mode.
    pub mode: GenerateMode,
    /// Seed.
    pub seed: u64,
    /// Windows per network call.
    pub batch_size: usize,
    /// Windows written.
    pub windows: usize,
    /// Network evaluations per window.
    pub nfe_per_window: usize,
    /// Wall seconds of sampling.
    pub total_secs: f64,
    /// Milliseconds of sampling per window.
    pub ms_per_window: f64,
    /// Encoder checkpoint.
    pub encoder: String,
    /// Generator checkpoint.
    pub generator: String,
    /// Source dataset of the conditioning windows.
    pub source_dataset: String,
    /// Reconstruction error (reconstruct mode).
    pub reconstruction: Option<ReconstructionSummary>,
    /// The store written.
    pub output: String,
}

/// Encodes every window of `ws` in batches of `batch_size` (without copying the whole set into
/// one tensor first).
///
/// # Shapes
/// - returns `(N, repr_dim)`
pub fn encode_window_set(
    models: &TrainedModels,
    ws: &WindowSet,
    batch_size: usize,
) -> Result<Tensor> {
    models.check_windows(ws)?;
    let all: Vec<usize> = (0..ws.num_windows()).collect();
    let z = encode_windows(&models.encoder, ws, &all, batch_size, &models.device)?;
    let d = models.encoder.config().repr_dim();
    Ok(Tensor::from_vec(z, (all.len(), d), &models.device)?)
}

/// Runs a generation job: conditions on `windows` (the windows to reconstruct, or the pool
/// whose representations the Gaussian is fitted to), generates, and writes the store.
///
/// The store's `dataset` attribute is `<source>/generated/<method>/<sampler>`; in reconstruct
/// mode every generated window keeps its source window's label, subject and start time, in
/// sample mode labels and subjects are -1. The `config` attribute holds the
/// [`GenerateSummary`] as JSON, the `fingerprint` an FNV-1a hash of it.
pub fn run_generation(
    models: &TrainedModels,
    windows: &WindowSet,
    job: &GenerateJob,
) -> Result<GenerateSummary> {
    models.check_windows(windows)?;
    job.sampler
        .validate(models.kind(), models.schedule.num_steps())?;
    ensure!(job.batch_size >= 1, "batch_size: must be at least 1");
    let z_real = encode_window_set(models, windows, job.batch_size)?;
    let z = match &job.mode {
        GenerateMode::Reconstruct => z_real,
        GenerateMode::Sample { count, covariance } => {
            ensure!(*count >= 1, "count: must be at least 1");
            let g = RepresentationGaussian::fit(&z_real, *covariance)?;
            let mut rng = SeededRng::new(job.seed).derive("representations");
            g.sample(*count, &mut rng, &models.device)?
        }
    };
    let gen = models.sample(&z, &job.sampler, job.batch_size, job.seed)?;
    let x: Vec<f32> = gen.x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let n = gen.x.dims()[0];
    let reconstruction = match job.mode {
        GenerateMode::Reconstruct => {
            let real = Windows::new(&windows.x, n, windows.channels, windows.window_len)?;
            let fake = Windows::new(&x, n, windows.channels, windows.window_len)?;
            let r = reconstruction_error(&real, &fake)?;
            Some(ReconstructionSummary {
                mse: r.mse,
                rmse: r.rmse,
                corr_mean: r.corr_mean,
            })
        }
        GenerateMode::Sample { .. } => None,
    };
    let method = models.kind().method_name();
    let mut out = WindowSet::empty(
        format!("{}/generated/{method}/{}", windows.dataset, gen.sampler),
        windows.sample_rate_hz,
        windows.channel_names.clone(),
        windows.window_len,
        Vec::new(),
    );
    out.x = x;
    match job.mode {
        GenerateMode::Reconstruct => {
            out.class_names = windows.class_names.clone();
            out.y = windows.y.clone();
            out.subject = windows.subject.clone();
            out.start_time_s = windows.start_time_s.clone();
        }
        GenerateMode::Sample { .. } => {
            out.y = vec![-1; n];
            out.subject = vec![-1; n];
            out.start_time_s = vec![0.0; n];
        }
    }
    let summary = GenerateSummary {
        method: method.to_string(),
        sampler: gen.sampler.clone(),
        mode: job.mode.clone(),
        seed: job.seed,
        batch_size: job.batch_size,
        windows: n,
        nfe_per_window: gen.nfe_per_window,
        total_secs: gen.total_secs,
        ms_per_window: gen.ms_per_window,
        encoder: models.encoder_path.display().to_string(),
        generator: models.generator_path.display().to_string(),
        source_dataset: windows.dataset.clone(),
        reconstruction,
        output: job.output.display().to_string(),
    };
    let json = serde_json::to_string(&summary)?;
    write_store(
        &job.output,
        &out,
        GENERATED_STORE_VERSION,
        &flowfm_core::hash::fnv1a64_hex(json.as_bytes()),
        &json,
    )
    .with_context(|| format!("writing generated windows to {}", job.output.display()))?;
    Ok(summary)
}
