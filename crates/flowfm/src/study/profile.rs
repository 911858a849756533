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

/// Scale of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Profile {
    /// Tiny models and few steps on real data (minutes on 2 cores; what CI runs).
    Quick,
    /// CPU scale: width-reduced encoder (about an hour on 2 cores).
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

    /// The protocol of a dataset: leave-one-subject-out for ADL/HMP (as SSL-Wearables), subject-wise
    /// 5-fold elsewhere (3-fold in the quick profile).
    pub fn protocol_for(self, dataset: &str, subjects: usize) -> Protocol {
        let k = if self == Profile::Quick { 3 } else { 5 };
        if dataset.starts_with("adl") && self != Profile::Quick {
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
                cfg.max_epochs = if probe { 30 } else { 2 };
                cfg.min_steps = if probe { 0 } else { 40 };
                cfg.eval_every = 20;
                cfg.patience = 5;
                cfg.batch_size = 32;
                cfg.bn_recalibration_windows = 128;
                cfg.forest_trees = 30;
                cfg.lr = if probe { 1e-2 } else { 1e-3 };
            }
            Profile::Default => {
                // CPU scale: every fold trains at least 600 steps (3 epochs when that is more).
                cfg.max_epochs = if probe { 100 } else { 3 };
                cfg.min_steps = 600;
                cfg.eval_every = 25;
                cfg.patience = 5;
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

    /// Real windows the generation study compares against.
    pub fn generation_windows(self) -> usize {
        match self {
            Profile::Quick => 64,
            Profile::Default => 64,
            Profile::Full => 1000,
        }
    }

    /// The sampler grid of the generation study at this scale (the paper's grid from the
    /// default profile on; the quick profile shortens DDPM to its few steps by using a short T).
    pub fn study_config(self, flow: &TrainedModels) -> StudyConfig {
        let reference = ReferenceEncoder::random_like(flow.encoder.config());
        let mut cfg = match self {
            Profile::Quick => {
                StudyConfig::with_steps(reference, &[1, 2, 4, 8], true, &[10, 20], true)
            }
            Profile::Default | Profile::Full => StudyConfig::paper(reference),
        };
        cfg.batch_size = 64;
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
