//! The generation study's settings and results: which real windows it uses ([`StudySets`]), its
//! configuration ([`StudyConfig`]), one row of intervals per sampler ([`StudyRow`], [`Quality`]),
//! the real-vs-real noise floor, and the speed-up at matched quality ([`Speedup`],
//! [`GenerationStudy::speedup_at_matched_quality`]). The measurements are in [`super::measure`],
//! the matching in [`super::matched`].

use super::sampler::SamplerSpec;
use crate::encode::load_encoder;
use anyhow::Result;
use candle_core::{DType, Device};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_data::window::WindowSet;
use flowfm_eval::generative::matched::Better;
use flowfm_eval::stats::{BootstrapConfig, Interval};
use flowfm_eval::{DiscriminativeConfig, ForestConfig, GenerationEfficiency, MmdConfig};
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

/// The real windows of the study: labelled windows of subjects never seen in pretraining, in two
/// subject-disjoint sets of the same size.
#[derive(Clone, Debug)]
pub struct StudySets {
    /// Windows whose own representations condition generation (one generated window each).
    pub conditioning: WindowSet,
    /// Windows every set is compared with, and that the label classifier is trained on.
    pub reference: WindowSet,
    /// How the sets were chosen (dataset, subjects, and whether fewer windows than asked for
    /// existed), for the report.
    pub description: String,
    /// Windows per set that were asked for.
    pub requested: usize,
}

/// Settings of [`super::generation_study`]. Sizes are parametric so CI can run it at tiny scale.
#[derive(Clone, Debug, Serialize)]
pub struct StudyConfig {
    /// Flow solvers, in table order.
    pub flow_samplers: Vec<SamplerSpec>,
    /// Diffusion samplers, in table order.
    pub diffusion_samplers: Vec<SamplerSpec>,
    /// Windows per network call (timed batches; the speed-up interval needs at least 2 per
    /// sampler).
    pub batch_size: usize,
    /// Seed of noise, classifiers, folds and bootstrap draws.
    pub seed: u64,
    /// Feature space of Frechet distance and MMD.
    pub reference: ReferenceEncoder,
    /// MMD settings: the bandwidth is the median pairwise distance within the reference set
    /// (over at most `median_max_points` windows), one for every row.
    pub mmd: MmdConfig,
    /// Real-vs-generated classifier settings.
    pub discriminative: DiscriminativeConfig,
    /// Folds of the cross-validated real-vs-generated classifier.
    pub discriminative_folds: usize,
    /// Resamples and confidence of every interval (windows resampled; shared by all rows).
    pub bootstrap: BootstrapConfig,
    /// The label classifier (a random forest on hand-crafted features of the reference set).
    pub classifier: ForestConfig,
    /// Clip diffusion's predicted `x_0` to `[-c, c]` g at every step (the usual DDPM practice
    /// of clipping to the data range); `None` samples unclipped.
    pub diffusion_clip_x0: Option<f64>,
}

impl StudyConfig {
    /// The paper's grid: flow Euler at 1/2/4/8/16/32 steps and dopri5; diffusion DDIM at
    /// 10/20/50/100 steps and DDPM over all `T`.
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
            mmd: MmdConfig::default(),
            discriminative: DiscriminativeConfig::default(),
            discriminative_folds: 5,
            bootstrap: BootstrapConfig {
                resamples: 200,
                confidence: 0.95,
            },
            classifier: ForestConfig::default(),
            diffusion_clip_x0: None,
        }
    }
}

/// Distribution distances and label agreement of one set of windows against the reference set,
/// each a point estimate with its percentile bootstrap interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Frechet distance in the reference encoder's features (lower is better).
    pub frechet: Interval,
    /// Frechet distance in standardised, compressed hand-crafted features, which see amplitude
    /// (lower is better).
    pub frechet_features: Interval,
    /// Unbiased MMD² (RBF, the reference set's median-distance bandwidth) in the reference
    /// encoder's features (lower is better).
    pub mmd2: Interval,
    /// `|accuracy - 0.5|` of a cross-validated real-vs-generated classifier (lower is better).
    pub discriminative: Interval,
    /// L1 distance of the normalised mean power spectra, in [0, 2] (lower is better).
    pub spectral_l1: Interval,
    /// Log-spectral distance in dB (lower is better).
    pub spectral_db: Interval,
    /// Fraction of windows the reference-trained classifier gives their source window's label
    /// (higher is better); for the real floor set, the classifier's accuracy on it (the ceiling).
    pub label_agreement: Interval,
}

impl Quality {
    /// Every metric with its name and direction, in table order: all of them decide matched
    /// quality.
    pub fn metrics(&self) -> [(&'static str, &Interval, Better); 7] {
        [
            ("Frechet (encoder)", &self.frechet, Better::Lower),
            ("Frechet (features)", &self.frechet_features, Better::Lower),
            ("MMD²", &self.mmd2, Better::Lower),
            ("discriminative", &self.discriminative, Better::Lower),
            ("spectral L1", &self.spectral_l1, Better::Lower),
            ("spectral dB", &self.spectral_db, Better::Lower),
            ("label agreement", &self.label_agreement, Better::Higher),
        ]
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
    /// Windows generated.
    pub windows: usize,
    /// Milliseconds of sampling per window over all batches.
    pub ms_per_window: f64,
    /// Milliseconds per window of each timed batch (for the speed-up's interval).
    pub batch_ms_per_window: Vec<f64>,
    /// Distances to the reference set and label agreement.
    pub quality: Quality,
    /// Representation consistency `cos(E(G(E(x))), E(x))` in the method's own encoder (higher is
    /// better; not comparable across methods, whose encoders differ, so not part of matching).
    pub consistency: Interval,
    /// Metrics on which this row's interval neither overlaps nor beats the DDPM baseline's
    /// (empty: matched quality; all of them for the baseline row itself are trivially matched).
    pub unmatched: Vec<String>,
}

/// The speed-up of the fastest flow setting at matched quality over the DDPM baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speedup {
    /// The flow sampler.
    pub flow_sampler: String,
    /// The baseline sampler (`ddpm-T`).
    pub baseline_sampler: String,
    /// `baseline ms per window / flow ms per window`, with the percentile bootstrap interval of
    /// the ratio of mean per-batch times (batches of each resampled on their own).
    pub factor: Interval,
    /// `baseline NFE / flow NFE`.
    pub nfe_ratio: f64,
}

/// Results of [`super::generation_study`]: serialisable, rendered by
/// [`GenerationStudy::to_markdown`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationStudy {
    /// One row per sampler setting, flow first.
    pub rows: Vec<StudyRow>,
    /// The real conditioning windows against the reference set, at the same sizes as every row:
    /// the value a perfect generator would reach (its label agreement is the classifier's
    /// accuracy on those real windows, the ceiling).
    pub floor: Quality,
    /// Windows per set (conditioning, reference, and generated per sampler).
    pub num_windows: usize,
    /// Windows per set that were asked for.
    pub requested_windows: usize,
    /// How the real sets were chosen.
    pub sets: String,
    /// The label classifier.
    pub classifier: String,
    /// Where it ran.
    pub device: String,
    /// The reference encoder.
    pub reference_encoder: String,
    /// The MMD bandwidth (median pairwise distance within the reference set's features).
    pub mmd_bandwidth: f64,
    /// Per method, the mean `cos(E(x_i), E(x_j))` over pairs of different real conditioning
    /// windows: the consistency of a generator that ignored its condition.
    pub consistency_chance: Vec<(String, f64)>,
    /// Parameters of the flow generator.
    pub flow_generator_params: usize,
    /// Parameters of the diffusion generator.
    pub diffusion_generator_params: usize,
    /// Bootstrap resamples and confidence of every interval.
    pub bootstrap: BootstrapConfig,
    /// Folds of the cross-validated real-vs-generated classifier.
    pub discriminative_folds: usize,
    /// Speed-up of the fastest flow setting at matched quality (`None`: see the note).
    pub speedup: Option<Speedup>,
    /// How the speed-up was found, or why there is none.
    pub speedup_note: String,
    /// The first conditioning window and, per row, the window generated from its representation
    /// (for the report's real-vs-generated plot).
    #[serde(default)]
    pub examples: Vec<ExampleWindow>,
    /// Wall seconds the whole study took when it ran (0 until the caller sets it; a reused
    /// study keeps the time of the run that made it).
    #[serde(default)]
    pub wall_s: f64,
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

fn cell(v: f64, decimals: usize) -> String {
    flowfm_eval::markdown::number(v, decimals)
}

fn iv(i: &Interval, decimals: usize) -> String {
    flowfm_eval::markdown::interval(i, decimals)
}

/// Decimals of the metrics in [`Quality::metrics`] order.
const DECIMALS: [usize; 7] = [3, 3, 4, 3, 3, 2, 3];

impl GenerationStudy {
    /// The speed-up at matched quality with its interval, or `None` and the reason (no DDPM row,
    /// or no flow setting whose intervals overlap or beat DDPM's on every metric).
    pub fn speedup_at_matched_quality(&self) -> (Option<&Speedup>, &str) {
        (self.speedup.as_ref(), &self.speedup_note)
    }

    /// The study as a Markdown table plus its notes.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let conf = 100.0 * self.bootstrap.confidence;
        s.push_str(
            "| Method | Sampler | NFE | ms / window | Frechet (encoder) | Frechet (features) | MMD² | Discr. | Spectral L1 | Spectral dB | Label agreement | Consistency | Matches DDPM |\n",
        );
        s.push_str("|---|---|---:|---:|---|---|---|---|---|---|---|---|---|\n");
        let quality_cells = |q: &Quality| -> String {
            q.metrics()
                .iter()
                .zip(DECIMALS)
                .map(|((_, i, _), d)| iv(i, d))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        s.push_str(&format!(
            "| real (floor) | conditioning windows | 0 | 0 | {} | 1 (identity) | floor |\n",
            quality_cells(&self.floor)
        ));
        let baseline = self.speedup_baseline();
        for r in &self.rows {
            let matched = if Some(r.sampler.as_str()) == baseline && r.method == "diffusion" {
                "baseline".to_string()
            } else if baseline.is_none() {
                "no baseline".to_string()
            } else if r.unmatched.is_empty() {
                "yes".to_string()
            } else {
                format!("no ({})", r.unmatched.join(", "))
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                flowfm_eval::markdown::escape(&r.method),
                flowfm_eval::markdown::escape(&r.sampler),
                r.nfe,
                cell(r.ms_per_window, 3),
                quality_cells(&r.quality),
                iv(&r.consistency, 3),
                matched,
            ));
        }
        s.push('\n');
        s.push_str(&format!(
            "Every cell is `estimate [{conf:.0} % interval]`: a percentile bootstrap over {} resamples of the windows (reference and compared set each resampled, the same draws for every row, classifiers not refitted). \
             {} windows per set{}; {}. Generated windows: one per conditioning window, from its own representation; {} per sampler on {}.\n",
            self.bootstrap.resamples,
            self.num_windows,
            if self.num_windows < self.requested_windows {
                format!(" (fewer than the {} asked for: all that exist)", self.requested_windows)
            } else {
                String::new()
            },
            self.sets,
            self.num_windows,
            self.device,
        ));
        s.push_str(&format!(
            "The floor row compares the real conditioning windows with the reference set at the same sizes: what a perfect generator would score (its label agreement is the classifier's accuracy on real windows, the ceiling). \
             Frechet (encoder) and MMD² (bandwidth {}) are measured in the features of the {}, whose group norm divides out each window's scale; Frechet (features) uses hand-crafted features (statistics, spectral bands, autocorrelation), standardised by the reference set and compressed as sign(z) ln(1 + |z|), and sees amplitude. \
             Discr. is |accuracy - 0.5| of a {}-fold cross-validated logistic regression telling reference from compared windows. Label agreement: {}.\n",
            cell(self.mmd_bandwidth, 4),
            self.reference_encoder,
            self.discriminative_folds,
            self.classifier,
        ));
        s.push_str(&format!(
            "Consistency is cos(E(G(E(x))), E(x)) in each method's own encoder (phase-free: the encoder is shift-invariant, so no generator can be asked to recover a window sample by sample); it is not comparable between methods and does not enter matching. A generator ignoring its condition would score {}. Generator parameters: flow {}, diffusion {}.\n",
            self.consistency_chance
                .iter()
                .map(|(m, v)| format!("{m} {}", cell(*v, 3)))
                .collect::<Vec<_>>()
                .join(", "),
            self.flow_generator_params,
            self.diffusion_generator_params,
        ));
        s.push_str(&self.ddim_check());
        s.push_str(&format!(
            "Matched quality: a flow setting matches DDPM when its interval overlaps or beats DDPM's on every metric from Frechet (encoder) to label agreement. Speed-up: {}.\n",
            self.speedup_note
        ));
        s
    }

    /// The DDIM check: each stochastic DDIM row (eta > 0) against the deterministic row of the
    /// same steps and against DDPM, in the feature Frechet distance (empty without such rows).
    fn ddim_check(&self) -> String {
        let fd = |label: &str| {
            self.rows
                .iter()
                .find(|r| r.method == "diffusion" && r.sampler == label)
                .map(|r| &r.quality.frechet_features)
        };
        let mut parts = Vec::new();
        for r in self.rows.iter().filter(|r| r.method == "diffusion") {
            let Some((head, rest)) = r.sampler.split_once("-eta") else {
                continue;
            };
            // `ddim-50-eta1 (x0 clip 4.5)` -> `ddim-50 (x0 clip 4.5)`
            let tail = rest.find(' ').map_or("", |i| &rest[i..]);
            let deterministic = format!("{head}{tail}");
            if let Some(d) = fd(&deterministic) {
                parts.push(format!(
                    "{} {} vs {} {}",
                    r.sampler,
                    iv(&r.quality.frechet_features, 3),
                    deterministic,
                    iv(d, 3)
                ));
            }
        }
        if parts.is_empty() {
            return String::new();
        }
        let ddpm = self
            .speedup_baseline()
            .and_then(fd)
            .map(|i| format!(" (DDPM: {})", iv(i, 3)))
            .unwrap_or_default();
        format!(
            "DDIM check, Frechet (features) at equal network evaluations: {}{ddpm}. The samplers are verified in flowfm-sampling's tests (the DDIM step equals the closed form of Song et al. 2021, eq. 12, on the schedule's alpha-bar checked against numpy; DDIM at 50 and 200 steps and DDPM fed the exact noise prediction of Gaussian data recover its mean and variance), so where eta 1 is much closer to DDPM than eta 0 at the same steps, the gap is the deterministic sampler carrying the network's noise-prediction error to the end, which DDPM's and eta 1's injected noise partly corrects: a property of the short-trained model, not a sampler bug.\n",
            parts.join("; ")
        )
    }

    /// The baseline sampler's label (the DDPM row), if any.
    pub fn speedup_baseline(&self) -> Option<&str> {
        self.rows
            .iter()
            .find(|r| r.method == "diffusion" && r.sampler.starts_with("ddpm"))
            .map(|r| r.sampler.as_str())
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
                    r.windows,
                    r.ms_per_window * r.windows as f64 / 1000.0,
                )?)
            })
            .collect()
    }
}
