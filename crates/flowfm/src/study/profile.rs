//! The study's scales ([`Profile`]): which config files it pretrains with, its protocols,
//! downstream settings, sizes and sampler grid. Pretraining experiments are read from
//! `configs/<method>-<profile>.toml`, the one source of truth: editing a file changes the study.

use crate::downstream::{DownstreamConfig, Mode, Protocol};
use crate::generation::{ReferenceEncoder, StudyConfig, TrainedModels};
use crate::train::config::{Experiment, ExperimentFile};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::Path;

/// The three pretraining methods of the study, in report order.
pub const METHODS: [&str; 3] = ["flowfm", "diffusion", "ssl_multitask"];

/// Datasets that take no part in pretraining: all their subjects are downstream (cross-dataset
/// transfer, as in the paper and SSL-Wearables), matched by name prefix.
pub const TRANSFER_DATASETS: [&str; 2] = ["adl", "seglearn"];

/// Whether `dataset` is a transfer dataset (see [`TRANSFER_DATASETS`]).
pub fn is_transfer(dataset: &str) -> bool {
    TRANSFER_DATASETS.iter().any(|p| dataset.starts_with(p))
}

/// Scale of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Profile {
    /// Tiny models and few steps on real data (minutes on 2 cores; what CI runs).
    Quick,
    /// CPU scale: width-reduced encoder (about two hours on 2 cores: README, docs/benchmarks.md).
    Default,
    /// The paper's sizes (for a GPU build).
    Full,
}

impl Profile {
    /// Parses `quick`, `default` or `full`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "quick" => Profile::Quick,
            "default" => Profile::Default,
            "full" => Profile::Full,
            other => bail!("unknown profile `{other}` (quick | default | full)"),
        })
    }

    /// The name used in paths and reports.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Default => "default",
            Profile::Full => "full",
        }
    }

    /// Pretraining seeds per method (and downstream repetitions): the study seed `s` runs seeds
    /// `s, s + 1, ...`. Two in the quick profile (every interval defined), three from the default on.
    pub fn seeds(self) -> usize {
        match self {
            Profile::Quick => 2,
            Profile::Default | Profile::Full => 3,
        }
    }

    /// Windows of the validation probe `(memorised, scored)`, both from subjects outside the
    /// pretraining pool (the quick profile keeps it small; the others score at least 1,000).
    pub fn probe_windows(self) -> (usize, usize) {
        match self {
            Profile::Quick => (192, 128),
            Profile::Default | Profile::Full => (2000, 1000),
        }
    }

    /// The protocol of a dataset: subject-wise 5-fold in the full profile, with ADL/HMP
    /// leave-one-subject-out as SSL-Wearables does; 3-fold in the quick and default profiles.
    /// The default profile fine-tunes 4 encoders x 3 seeds on every fold of 4 datasets; at 5
    /// folds that alone measured about 75 minutes on 2 cores, at 3 folds about 45
    /// (docs/decisions.md, "Fine-tuning and supervised recipe").
    pub fn protocol_for(self, dataset: &str, subjects: usize) -> Protocol {
        let k = if self == Profile::Full { 5 } else { 3 };
        if dataset.starts_with("adl") && self == Profile::Full {
            Protocol::Loso
        } else {
            Protocol::KFold { k: k.min(subjects) }
        }
    }

    /// The downstream training settings at this scale. Fine-tuning and the supervised baseline
    /// share one recipe per profile (docs/decisions.md, "Fine-tuning and supervised recipe"):
    /// a step budget `max(max_epochs x batches, min_steps)`, validation every `eval_every`
    /// steps, patience 5 on the validation loss, 12.5 % validation subjects, batch norm
    /// recalibrated on training windows.
    pub fn downstream_config(self, mode: Mode, protocol: Protocol, seed: u64) -> DownstreamConfig {
        let mut cfg = DownstreamConfig {
            mode,
            protocol,
            seed,
            ..DownstreamConfig::default()
        };
        let probe = mode == Mode::LinearProbe;
        match self {
            Profile::Quick => {
                // A smoke test of the recipe on tiny models: a short floor, the same rule.
                // (One epoch at most: with every encoder fine-tuned over 2 seeds, 2 epochs made
                // fine-tuning 5 of the quick study's 6.7 minutes.)
                cfg.max_epochs = if probe { 30 } else { 1 };
                cfg.min_steps = if probe { 0 } else { 30 };
                cfg.eval_every = 15;
                cfg.patience = 5;
                cfg.batch_size = 32;
                cfg.bn_recalibration_windows = 64;
                cfg.forest_trees = 30;
                cfg.lr = if probe { 1e-2 } else { 1e-3 };
            }
            Profile::Default => {
                // CPU scale (docs/decisions.md, "Fine-tuning and supervised recipe"): 144
                // fine-tuned folds (4 encoders x 3 seeds x 4 datasets x 3 folds) must fit in
                // under an hour on 2 cores. Batches of 32, at most one epoch or 200 steps,
                // validation every 10 steps (SSL-Wearables validates once per epoch: about 10
                // batches of 50 on ADL), patience 5, recalibration on 256 training windows.
                cfg.max_epochs = if probe { 100 } else { 1 };
                cfg.min_steps = if probe { 600 } else { 200 };
                cfg.eval_every = if probe { 25 } else { 10 };
                cfg.patience = 5;
                cfg.batch_size = if probe { 64 } else { 32 };
                cfg.bn_recalibration_windows = 256;
                cfg.lr = if probe { 1e-2 } else { 1e-3 };
                cfg.forest_trees = 100;
            }
            Profile::Full => {
                // SSL-Wearables' fine-tuning: 200 epochs, lr 1e-4, patience 5, augmentation.
                cfg.max_epochs = if probe { 100 } else { 200 };
                cfg.min_steps = 1000;
                cfg.eval_every = 50;
                cfg.patience = 5;
                cfg.lr = if probe { 1e-2 } else { 1e-4 };
                cfg.augment = mode == Mode::FineTune;
            }
        }
        cfg
    }

    /// At most this many downstream subjects per dataset take part in the protocols (the quick
    /// profile keeps CI within minutes; the others use every downstream subject).
    pub fn max_downstream_subjects(self) -> Option<usize> {
        match self {
            Profile::Quick => Some(8),
            Profile::Default | Profile::Full => None,
        }
    }

    /// Windows per set of the generation study: conditioning windows, reference windows and
    /// generated windows per sampler (all that exist when fewer; the report says so). At least
    /// 1,000 from the default profile on; the quick profile keeps every metric at a tiny size.
    pub fn generation_windows(self) -> usize {
        match self {
            Profile::Quick => 32,
            Profile::Default => 1000,
            Profile::Full => 2000,
        }
    }

    /// The sampler grid and metric settings of the generation study at this scale.
    ///
    /// Default profile (2 cores): per window, one network evaluation of the small U-Net costs
    /// about 2 ms, so DDPM-1000 on 1,000 windows alone takes about half an hour; the grid keeps
    /// the cheap points that answer the question (Euler 1-16; DDIM 10 and 50, and DDIM 50 with
    /// eta 1, against DDPM) and leaves out dopri5 (about 400 evaluations per window) and DDIM
    /// 20/100. The full profile
    /// runs the paper's grid; its reference encoder is narrowed to width 0.25 so that each
    /// bootstrap resample's Frechet distance stays a 256-d eigenproblem.
    pub fn study_config(self, flow: &TrainedModels) -> StudyConfig {
        let enc = flow.encoder.config();
        let mut cfg = match self {
            Profile::Quick => StudyConfig::with_steps(
                ReferenceEncoder::random_like(enc),
                &[1, 2, 4, 8],
                true,
                &[10, 20],
                true,
            ),
            Profile::Default => StudyConfig::with_steps(
                ReferenceEncoder::random_like(enc),
                &[1, 2, 4, 8, 16],
                false,
                &[10, 50],
                true,
            ),
            Profile::Full => {
                let mut narrow = enc.clone();
                narrow.width = narrow.width.min(0.25);
                StudyConfig::paper(ReferenceEncoder::random_like(&narrow))
            }
        };
        // DDIM with eta = 1 at the steps of a deterministic point (same NFE): the report's check
        // of whether DDIM's gap to DDPM comes from determinism on an imperfect noise predictor.
        let stochastic_ddim = crate::generation::SamplerSpec::Ddim {
            steps: if self == Profile::Quick { 20 } else { 50 },
            eta: 1.0,
        };
        let ddpm_at = cfg.diffusion_samplers.len().saturating_sub(1);
        cfg.diffusion_samplers.insert(ddpm_at, stochastic_ddim);
        match self {
            Profile::Quick => {
                cfg.batch_size = 16;
                cfg.bootstrap.resamples = 100;
                cfg.classifier.n_trees = 30;
                cfg.discriminative.steps = 200;
            }
            Profile::Default | Profile::Full => {
                cfg.batch_size = 64;
                cfg.bootstrap.resamples = 200;
            }
        }
        cfg
    }
    /// The config file of `method` at this scale: `<config_dir>/<method>-<profile>.toml`.
    pub fn config_path(self, config_dir: &Path, method: &str) -> std::path::PathBuf {
        config_dir.join(format!("{method}-{}.toml", self.name()))
    }

    /// The pretraining experiment of `method` at this scale, read from
    /// [`Profile::config_path`], with `run.seed` set to the study's `seed`. The file must name
    /// `method` as its `run.method`.
    pub fn experiment(self, config_dir: &Path, method: &str, seed: u64) -> Result<Experiment> {
        let path = self.config_path(config_dir, method);
        let mut file = ExperimentFile::load(&path).with_context(|| {
            format!(
                "the {} profile reads its {method} pretraining config from {}",
                self.name(),
                path.display()
            )
        })?;
        if file.run.method.name() != method {
            bail!(
                "{}: run.method is `{}`, the study expects `{method}` in this file",
                path.display(),
                file.run.method.name()
            );
        }
        file.run.seed = seed;
        file.validate()
            .with_context(|| format!("validating {}", path.display()))
    }
}
