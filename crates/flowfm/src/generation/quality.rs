//! The generation study's measurements: a grid of samplers of a flow run and a diffusion run on
//! the same real windows (NFE, ms per window, Frechet distance and MMD in a fixed reference
//! encoder's feature space and in standardised hand-crafted features, discriminative score,
//! spectral distance, reconstruction error), and the speed-up of the fastest flow setting that
//! is at least as good as DDPM-T on every distance ([`matched_speedup`]).

use super::models::TrainedModels;
use super::sampler::{GeneratorKind, SamplerSpec};
use crate::encode::{encode_tensor, load_encoder, windows_tensor};
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::SeededRng;
use flowfm_data::window::WindowSet;
use flowfm_eval::generative::gaussian::{CovarianceKind, RepresentationGaussian};
use flowfm_eval::{
    discriminative_score, frechet_distance_from_stats, mmd2_rbf, reconstruction_error,
    spectral_distance, DiscriminativeConfig, Embeddings, FeatureConfig, FeatureExtractor,
    GaussianStats, GenerationEfficiency, MmdConfig, Windows,
};
use flowfm_models::{EncoderConfig, HarNet, NormKind};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Seed of the default reference encoder of the study (a fixed, never-trained HARNet).
pub const REFERENCE_ENCODER_SEED: u64 = 0x5EED_F1D0;

/// The fixed encoder whose feature space the Frechet distance and MMD are measured in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ReferenceEncoder {
    /// A never-trained HARNet initialised from `seed`: identical for both methods and
    /// independent of either run's training, so neither method is favoured.
    Random {
        /// Architecture.
        config: EncoderConfig,
        /// Initialisation seed.
        seed: u64,
    },
    /// A trained encoder checkpoint, e.g. the SSL-Wearables multi-task run's
    /// `encoder.safetensors` (trained without any generator, so neutral between the two).
    Checkpoint(PathBuf),
}

impl ReferenceEncoder {
    /// The default reference: the architecture of `like` (so it reads the same windows) with
    /// group norm (8 groups; a never-trained batch norm has no meaningful running statistics),
    /// initialised from [`REFERENCE_ENCODER_SEED`].
    pub fn random_like(like: &EncoderConfig) -> Self {
        ReferenceEncoder::Random {
            config: like.clone().with_norm(NormKind::Group { groups: 8 }),
            seed: REFERENCE_ENCODER_SEED,
        }
    }

    /// Builds the encoder on `device`.
    pub fn build(&self, device: &Device) -> Result<HarNet> {
        match self {
            ReferenceEncoder::Random { config, seed } => {
                let vm = VarMap::new();
                Ok(HarNet::new(
                    config.clone(),
                    seeded_var_builder(&vm, *seed, DType::F32, device),
                )?)
            }
            ReferenceEncoder::Checkpoint(p) => load_encoder(p, device),
        }
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        match self {
            ReferenceEncoder::Random { config, seed } => format!(
                "randomly initialised HARNet (width {}, {}-d features, group norm, seed {seed:#x})",
                config.width,
                config.repr_dim()
            ),
            ReferenceEncoder::Checkpoint(p) => format!("trained encoder {}", p.display()),
        }
    }
}

/// What the generated windows of the study are conditioned on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyConditioning {
    /// Each real window's own representation (one pass serves every metric).
    OwnRepresentations,
    /// Draws from a Gaussian fitted to the real windows' representations (each method's own
    /// encoder); reconstruction error still comes from a second, own-representation pass.
    FittedGaussian(CovarianceKind),
}

/// Settings of [`generation_study`]. Sizes are parametric so CI can run it at tiny scale.
#[derive(Clone, Debug, Serialize)]
pub struct StudyConfig {
    /// Flow solvers, in table order.
    pub flow_samplers: Vec<SamplerSpec>,
    /// Diffusion samplers, in table order.
    pub diffusion_samplers: Vec<SamplerSpec>,
    /// Windows per network call (timed batches).
    pub batch_size: usize,
    /// Seed of noise, drawn representations and the discriminator's split.
    pub seed: u64,
    /// Feature space of Frechet distance and MMD.
    pub reference: ReferenceEncoder,
    /// What generation is conditioned on.
    pub conditioning: StudyConditioning,
    /// MMD settings (RBF, median heuristic by default).
    pub mmd: MmdConfig,
    /// Real-vs-generated classifier settings.
    pub discriminative: DiscriminativeConfig,
    /// Clip diffusion's predicted `x_0` to `[-c, c]` g at every step (the usual DDPM practice
    /// of clipping to the data range); `None` samples unclipped.
    pub diffusion_clip_x0: Option<f64>,
}

impl StudyConfig {
    /// The paper's grid: flow Euler at 1/2/4/8/16/32 steps and dopri5; diffusion DDIM at
    /// 10/20/50/100 steps and DDPM over all `T`; own-representation conditioning.
    pub fn paper(reference: ReferenceEncoder) -> Self {
        Self::with_steps(
            reference,
            &[1, 2, 4, 8, 16, 32],
            true,
            &[10, 20, 50, 100],
            true,
        )
    }

    /// A grid of Euler steps (plus dopri5) and DDIM steps (plus DDPM).
    pub fn with_steps(
        reference: ReferenceEncoder,
        euler_steps: &[usize],
        dopri5: bool,
        ddim_steps: &[usize],
        ddpm: bool,
    ) -> Self {
        Self {
            flow_samplers: SamplerSpec::flow_grid(euler_steps, dopri5),
            diffusion_samplers: SamplerSpec::diffusion_grid(ddim_steps, ddpm),
            batch_size: 64,
            seed: 0,
            reference,
            conditioning: StudyConditioning::OwnRepresentations,
            mmd: MmdConfig::default(),
            discriminative: DiscriminativeConfig::default(),
            diffusion_clip_x0: None,
        }
    }
}

/// One sampler setting's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyRow {
    /// `flowfm` or `diffusion`.
    pub method: String,
    /// Sampler label (`euler-8`, `dopri5`, `ddim-50`, `ddpm-1000`).
    pub sampler: String,
    /// Network evaluations per window.
    pub nfe: usize,
    /// Milliseconds of sampling per window.
    pub ms_per_window: f64,
    /// Frechet distance to the real windows in the reference feature space (lower is better).
    pub frechet: f64,
    /// Frechet distance in the space of hand-crafted window features (per-axis and magnitude
    /// statistics, spectral bands, autocorrelation), each standardised by the real windows' mean
    /// and sd and compressed as `sign(z) ln(1 + |z|)`. Unlike the reference encoder, whose group norm divides out a window's scale, it
    /// sees amplitude, so a sample of the right shape at the wrong scale scores badly here.
    pub frechet_features: f64,
    /// Unbiased squared MMD (RBF) in the reference feature space.
    pub mmd2: f64,
    /// RBF bandwidth the median heuristic chose.
    pub mmd_bandwidth: f64,
    /// `|accuracy - 0.5|` of a held-out real-vs-generated classifier (0 is best).
    pub discriminative: f64,
    /// L1 distance of the normalised mean power spectra (in [0, 2]).
    pub spectral_l1: f64,
    /// Log-spectral distance in dB.
    pub spectral_db: f64,
    /// RMSE of reconstructions from each real window's own representation.
    pub recon_rmse: f64,
    /// Mean per-window correlation of those reconstructions.
    pub recon_corr: f64,
}

/// The speed-up of a flow setting over the DDPM baseline at no worse Frechet distance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speedup {
    /// The flow sampler.
    pub flow_sampler: String,
    /// The baseline sampler (`ddpm-T`).
    pub baseline_sampler: String,
    /// `baseline ms per window / flow ms per window`.
    pub factor: f64,
    /// `baseline NFE / flow NFE`.
    pub nfe_ratio: f64,
    /// Flow Frechet distance.
    pub flow_frechet: f64,
    /// Baseline Frechet distance.
    pub baseline_frechet: f64,
}

/// Results of [`generation_study`]: serialisable, rendered by [`GenerationStudy::to_markdown`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationStudy {
    /// One row per sampler setting, flow first.
    pub rows: Vec<StudyRow>,
    /// Real windows compared against (and conditioned on).
    pub num_windows: usize,
    /// Where it ran.
    pub device: String,
    /// The reference encoder.
    pub reference_encoder: String,
    /// The conditioning.
    pub conditioning: StudyConditioning,
    /// Frechet distance between two halves of the real windows: the noise floor at this size.
    pub real_halves_frechet: f64,
    /// Parameters of the flow generator.
    pub flow_generator_params: usize,
    /// Parameters of the diffusion generator.
    pub diffusion_generator_params: usize,
    /// Speed-up of the fastest flow setting at least as good as DDPM-T (`None`: see the note).
    pub speedup: Option<Speedup>,
    /// How the speed-up was found, or why there is none.
    pub speedup_note: String,
    /// The first real window and, per row, its reconstruction from its own representation (for
    /// the report's real-vs-generated plot).
    #[serde(default)]
    pub examples: Vec<ExampleWindow>,
}

/// One window of the real-vs-generated plot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExampleWindow {
    /// `real`, `flowfm` or `diffusion`.
    pub method: String,
    /// Sampler label (empty for the real window).
    pub sampler: String,
    /// Channels.
    pub channels: usize,
    /// `channels x window_len` values, channel-major.
    pub values: Vec<f32>,
}

/// The fastest (by ms per window) flow row whose Frechet distance is at most the DDPM row's,
/// with its speed-up; `None` and a reason when there is no DDPM row or no flow row qualifies.
pub fn matched_speedup(rows: &[StudyRow]) -> (Option<Speedup>, String) {
    let Some(base) = rows
        .iter()
        .find(|r| r.method == "diffusion" && r.sampler.starts_with("ddpm"))
    else {
        return (
            None,
            "no DDPM row in the study, so no speed-up is reported".into(),
        );
    };
    let flows: Vec<&StudyRow> = rows.iter().filter(|r| r.method == "flowfm").collect();
    let best = flows
        .iter()
        .filter(|r| {
            r.frechet.is_finite()
                && r.frechet <= base.frechet
                && (!base.frechet_features.is_finite()
                    || r.frechet_features <= base.frechet_features)
        })
        .min_by(|a, b| a.ms_per_window.total_cmp(&b.ms_per_window));
    match best {
        Some(r) => {
            let s = Speedup {
                flow_sampler: r.sampler.clone(),
                baseline_sampler: base.sampler.clone(),
                factor: base.ms_per_window / r.ms_per_window,
                nfe_ratio: base.nfe as f64 / r.nfe.max(1) as f64,
                flow_frechet: r.frechet,
                baseline_frechet: base.frechet,
            };
            let note = format!(
                "fastest flow setting with both Frechet distances <= {}'s ({:.4} encoder, {:.3} features): {} ({:.4}, {:.3}), {:.1}x faster per window, {:.1}x fewer network evaluations",
                base.sampler, base.frechet, base.frechet_features, r.sampler, r.frechet, r.frechet_features, s.factor, s.nfe_ratio
            );
            (Some(s), note)
        }
        None => {
            let closest = flows
                .iter()
                .filter(|r| r.frechet.is_finite())
                .min_by(|a, b| a.frechet.total_cmp(&b.frechet));
            let note = match closest {
                Some(c) => format!(
                    "no flow setting reached {}'s Frechet distances ({:.4} encoder, {:.3} features) on both; the best flow setting by the encoder distance was {} at {:.4} ({:.3} features)",
                    base.sampler, base.frechet, base.frechet_features, c.sampler, c.frechet, c.frechet_features
                ),
                None => "no flow rows with a finite Frechet distance".to_string(),
            };
            (None, note)
        }
    }
}

fn cell(v: f64, decimals: usize) -> String {
    flowfm_eval::markdown::number(v, decimals)
}

impl GenerationStudy {
    /// The study as a Markdown table plus its notes.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "| Method | Sampler | NFE | ms / window | Frechet (encoder) | Frechet (features) | MMD² | Discr. | Spectral L1 | Spectral dB | Recon. RMSE | Recon. corr |\n",
        );
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                flowfm_eval::markdown::escape(&r.method),
                flowfm_eval::markdown::escape(&r.sampler),
                r.nfe,
                cell(r.ms_per_window, 3),
                cell(r.frechet, 4),
                cell(r.frechet_features, 3),
                cell(r.mmd2, 5),
                cell(r.discriminative, 3),
                cell(r.spectral_l1, 4),
                cell(r.spectral_db, 2),
                cell(r.recon_rmse, 4),
                cell(r.recon_corr, 3),
            ));
        }
        s.push('\n');
        s.push_str(&format!(
            "{} real windows on {}; conditioning: {}; features: {}; generator parameters: flow {}, diffusion {}.\n",
            self.num_windows,
            self.device,
            match self.conditioning {
                StudyConditioning::OwnRepresentations => "each real window's own representation".to_string(),
                StudyConditioning::FittedGaussian(k) => format!("draws from a Gaussian ({k:?} covariance) fitted to the real windows' representations"),
            },
            self.reference_encoder,
            self.flow_generator_params,
            self.diffusion_generator_params,
        ));
        s.push_str(&format!(
            "Frechet distance between two halves of the real windows (noise floor at this size): {}. \
             Frechet (encoder) is measured in the features of a fixed random encoder whose group norm divides out each window's scale; \
             Frechet (features) uses hand-crafted features (statistics, spectral bands, autocorrelation), standardised by the real windows and compressed as sign(z) ln(1 + |z|); it sees amplitude.\n",
            cell(self.real_halves_frechet, 4)
        ));
        s.push_str(&format!("Speed-up: {}.\n", self.speedup_note));
        s
    }

    /// The rows as generation-efficiency records (for the efficiency tables).
    pub fn efficiency(&self) -> Result<Vec<GenerationEfficiency>> {
        self.rows
            .iter()
            .map(|r| {
                Ok(GenerationEfficiency::new(
                    r.method.clone(),
                    r.sampler.clone(),
                    self.device.clone(),
                    r.nfe,
                    self.num_windows,
                    r.ms_per_window * self.num_windows as f64 / 1000.0,
                )?)
            })
            .collect()
    }
}

fn device_name(d: &Device) -> String {
    if d.is_cuda() {
        "cuda".to_string()
    } else if d.is_metal() {
        "metal".to_string()
    } else {
        "cpu".to_string()
    }
}

/// Everything about the real windows that every row is compared with.
struct RealReference<'a> {
    windows: Windows<'a>,
    stats: GaussianStats,
    features_space: StandardisedFeatures,
    feature_stats: GaussianStats,
    features: Embeddings<'static>,
    sample_rate_hz: f64,
}

/// Hand-crafted window features standardised by the real windows' per-feature mean and sd.
struct StandardisedFeatures {
    extractor: FeatureExtractor,
    mean: Vec<f64>,
    sd: Vec<f64>,
}

impl StandardisedFeatures {
    fn fit(real: &Windows<'_>, sample_rate_hz: f64) -> Result<(Self, Embeddings<'static>)> {
        let extractor = FeatureExtractor::new(
            FeatureConfig {
                sample_rate_hz,
                ..FeatureConfig::default()
            },
            real.channels(),
            real.len_samples(),
        )?;
        let table = extractor.extract(real)?;
        let (rows, cols) = (table.rows(), table.cols());
        let mut mean = vec![0.0; cols];
        let mut sd = vec![0.0; cols];
        for j in 0..cols {
            let col: Vec<f64> = (0..rows)
                .map(|i| table.row(i)[j])
                .filter(|v| v.is_finite())
                .collect();
            let m = col.iter().sum::<f64>() / col.len().max(1) as f64;
            let v = col.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / col.len().max(1) as f64;
            mean[j] = m;
            sd[j] = if v.sqrt() > 1e-12 { v.sqrt() } else { 1.0 };
        }
        let me = Self {
            extractor,
            mean,
            sd,
        };
        let emb = me.embed(real)?;
        Ok((me, emb))
    }

    /// Standardised features, compressed as `sign(z) ln(1 + |z|)` so that one feature far out
    /// (say, the energy above 8 Hz of noisy samples against anti-aliased real windows, hundreds of
    /// real sds away) cannot swamp the rest; a non-finite feature (e.g. the autocorrelation of a
    /// constant window) becomes the real mean (0).
    fn embed(&self, w: &Windows<'_>) -> Result<Embeddings<'static>> {
        let table = self.extractor.extract(w)?;
        let (rows, cols) = (table.rows(), table.cols());
        let mut out = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for (j, v) in table.row(i).iter().enumerate() {
                let z = (v - self.mean[j]) / self.sd[j];
                let c = z.signum() * z.abs().ln_1p();
                out.push(if c.is_finite() { c as f32 } else { 0.0 });
            }
        }
        let t = Tensor::from_vec(out, (rows, cols), &Device::Cpu)?;
        Ok(Embeddings::from_tensor(&t)?)
    }
}

#[allow(clippy::too_many_arguments)] // one row of the study: each argument is a distinct input of it
fn study_row(
    models: &TrainedModels,
    sampler: &SamplerSpec,
    z_own: &Tensor,
    z_dist: Option<&Tensor>,
    reference: &HarNet,
    real: &RealReference<'_>,
    cfg: &StudyConfig,
    index: usize,
) -> Result<(StudyRow, ExampleWindow)> {
    let mut label = sampler.label(models.schedule.num_steps());
    if let (GeneratorKind::Diffusion, Some(c)) = (models.kind(), cfg.diffusion_clip_x0) {
        label = format!("{label} (x0 clip {c:.1})");
    }
    let ctx = || format!("{} {label}", models.kind().method_name());
    let clip = cfg.diffusion_clip_x0;
    let own = models
        .sample_with_clip(z_own, sampler, cfg.batch_size, cfg.seed, clip)
        .with_context(ctx)?;
    let dist = match z_dist {
        Some(z) => models
            .sample_with_clip(z, sampler, cfg.batch_size, cfg.seed, clip)
            .with_context(ctx)?,
        None => own.clone(),
    };
    let gen_windows = Windows::from_tensor(&dist.x)?;
    let own_windows = Windows::from_tensor(&own.x)?;
    let feats = Embeddings::from_tensor(&encode_tensor(reference, &dist.x, cfg.batch_size)?)?;
    let frechet = frechet_distance_from_stats(&real.stats, &GaussianStats::fit(&feats)?)?;
    let frechet_features = frechet_distance_from_stats(
        &real.feature_stats,
        &GaussianStats::fit(&real.features_space.embed(&gen_windows)?)?,
    )?;
    let mmd = mmd2_rbf(&real.features, &feats, &cfg.mmd)?;
    let mut rng = SeededRng::new(cfg.seed).derive_indexed("discriminator", index as u64);
    let disc = discriminative_score(&real.windows, &gen_windows, &cfg.discriminative, &mut rng)?;
    let spec = spectral_distance(&real.windows, &gen_windows, real.sample_rate_hz)?;
    let rec = reconstruction_error(&real.windows, &own_windows)?;
    let example = ExampleWindow {
        method: models.kind().method_name().to_string(),
        sampler: label.clone(),
        channels: own.x.dim(1)?,
        values: own.x.narrow(0, 0, 1)?.flatten_all()?.to_vec1::<f32>()?,
    };
    let row = StudyRow {
        method: models.kind().method_name().to_string(),
        sampler: label,
        nfe: dist.nfe_per_window,
        ms_per_window: dist.ms_per_window,
        frechet,
        frechet_features,
        mmd2: mmd.mmd2,
        mmd_bandwidth: mmd.bandwidth,
        discriminative: disc.score,
        spectral_l1: spec.l1,
        spectral_db: spec.log_spectral_db,
        recon_rmse: rec.rmse,
        recon_corr: rec.corr_mean,
    };
    Ok((row, example))
}

/// Evaluates every sampler setting of a flow run and a diffusion run on the same real windows.
///
/// Per setting: NFE and sampling time per window (the networks are warmed up first; encoding
/// and metrics are not timed), Frechet distance and MMD (RBF, median heuristic) between the
/// reference encoder's features of real and generated windows, the discriminative score and
/// spectral distance on the windows themselves, and the reconstruction error of generation
/// conditioned on each real window's own representation. Then the speed-up of the fastest flow
/// setting whose Frechet distance is at most DDPM-T's ([`matched_speedup`]).
///
/// `real` needs at least 8 windows of the models' shape.
pub fn generation_study(
    flow: &TrainedModels,
    diffusion: &TrainedModels,
    real: &WindowSet,
    cfg: &StudyConfig,
) -> Result<GenerationStudy> {
    ensure!(
        flow.kind() == GeneratorKind::Flow,
        "flow: {} holds a {} generator",
        flow.generator_path.display(),
        flow.kind().method_name()
    );
    ensure!(
        diffusion.kind() == GeneratorKind::Diffusion,
        "diffusion: {} holds a {} generator",
        diffusion.generator_path.display(),
        diffusion.kind().method_name()
    );
    ensure!(
        flow.window_shape() == diffusion.window_shape(),
        "diffusion: windows of {:?} (channels, samples), the flow run's are {:?}",
        diffusion.window_shape(),
        flow.window_shape()
    );
    flow.check_windows(real)?;
    let n = real.num_windows();
    ensure!(n >= 8, "real: the study needs at least 8 windows, got {n}");
    ensure!(cfg.batch_size >= 1, "batch_size: must be at least 1");
    for (field, list, models) in [
        ("flow_samplers", &cfg.flow_samplers, flow),
        ("diffusion_samplers", &cfg.diffusion_samplers, diffusion),
    ] {
        for (i, s) in list.iter().enumerate() {
            s.validate(models.kind(), models.schedule.num_steps())
                .with_context(|| format!("{field}[{i}] = `{s}`"))?;
        }
    }

    let reference = cfg.reference.build(&flow.device)?;
    let (c, l) = flow.window_shape();
    let rc = reference.config();
    ensure!(
        rc.in_channels == c && rc.window_len == l,
        "reference: the reference encoder reads {} x {}, the windows are {c} x {l}",
        rc.in_channels,
        rc.window_len
    );
    let x_real = windows_tensor(real, &flow.device)?;
    let real_feats = encode_tensor(&reference, &x_real, cfg.batch_size)?;
    let half = n / 2;
    let real_halves_frechet = frechet_distance_from_stats(
        &GaussianStats::fit(&Embeddings::from_tensor(&real_feats.narrow(0, 0, half)?)?)?,
        &GaussianStats::fit(&Embeddings::from_tensor(&real_feats.narrow(
            0,
            half,
            n - half,
        )?)?)?,
    )?;
    let features = Embeddings::from_tensor(&real_feats)?;
    let real_windows = Windows::new(&real.x, n, real.channels, real.window_len)?;
    let (features_space, real_hand) =
        StandardisedFeatures::fit(&real_windows, real.sample_rate_hz)?;
    let reference_real = RealReference {
        windows: real_windows,
        stats: GaussianStats::fit(&features)?,
        features_space,
        feature_stats: GaussianStats::fit(&real_hand)?,
        features,
        sample_rate_hz: real.sample_rate_hz,
    };

    let mut rows = Vec::new();
    let mut examples = vec![ExampleWindow {
        method: "real".into(),
        sampler: String::new(),
        channels: real.channels,
        values: real.x[..real.channels * real.window_len].to_vec(),
    }];
    let mut index = 0;
    for (models, samplers, warm) in [
        (flow, &cfg.flow_samplers, SamplerSpec::Euler { steps: 1 }),
        (
            diffusion,
            &cfg.diffusion_samplers,
            SamplerSpec::Ddim { steps: 1, eta: 0.0 },
        ),
    ] {
        if samplers.is_empty() {
            continue;
        }
        let z_own = models.encode(&x_real, cfg.batch_size)?;
        let z_dist = match cfg.conditioning {
            StudyConditioning::OwnRepresentations => None,
            StudyConditioning::FittedGaussian(kind) => {
                let g = RepresentationGaussian::fit(&z_own, kind)?;
                let mut rng = SeededRng::new(cfg.seed).derive("representations");
                Some(g.sample(n, &mut rng, &models.device)?)
            }
        };
        // Warm-up: first calls pay for allocation and kernel setup.
        let warm_n = cfg.batch_size.min(n);
        models.sample(
            &z_own.narrow(0, 0, warm_n)?,
            &warm,
            cfg.batch_size,
            cfg.seed,
        )?;
        for s in samplers {
            let (row, example) = study_row(
                models,
                s,
                &z_own,
                z_dist.as_ref(),
                &reference,
                &reference_real,
                cfg,
                index,
            )?;
            rows.push(row);
            examples.push(example);
            index += 1;
        }
    }
    let (speedup, speedup_note) = matched_speedup(&rows);
    Ok(GenerationStudy {
        rows,
        num_windows: n,
        device: device_name(&flow.device),
        reference_encoder: cfg.reference.describe(),
        conditioning: cfg.conditioning,
        real_halves_frechet,
        flow_generator_params: flow.generator_params,
        diffusion_generator_params: diffusion.generator_params,
        speedup,
        speedup_note,
        examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(n: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::new(seed);
        (0..n * 3 * 300)
            .map(|i| {
                let t = (i % 300) as f32 / 30.0;
                scale * ((2.0 * std::f32::consts::PI * 2.0 * t).sin() + 0.3 * rng.normal() as f32)
            })
            .collect()
    }

    #[test]
    fn the_feature_frechet_distance_sees_a_change_of_scale() {
        let real = windows(48, 1.0, 1);
        let same = windows(48, 1.0, 2);
        let scaled = windows(48, 50.0, 3);
        fn w(x: &[f32]) -> Windows<'_> {
            Windows::new(x, 48, 3, 300).unwrap()
        }
        let (space, real_emb) = StandardisedFeatures::fit(&w(&real), 30.0).unwrap();
        let stats = GaussianStats::fit(&real_emb).unwrap();
        let d = |x: &Vec<f32>| {
            let e = space.embed(&w(x)).unwrap();
            frechet_distance_from_stats(&stats, &GaussianStats::fit(&e).unwrap()).unwrap()
        };
        let near = d(&same);
        let far = d(&scaled);
        assert!(near.is_finite() && far.is_finite());
        assert!(
            far > 100.0 * near.max(1e-3),
            "scaled windows should be far: {far} vs {near}"
        );
    }
}
