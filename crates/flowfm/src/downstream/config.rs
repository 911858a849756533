//! Downstream configuration: the [`Mode`] (fine-tune, linear probe, kNN, random forest), the
//! fold [`Protocol`], the validated [`DownstreamConfig`] (unknown keys rejected, every error names
//! the field), and where the encoder of a run comes from ([`EncoderSource`]).

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::SeededRng;
use flowfm_models::{EncoderConfig, HarNet};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How subjects are divided into folds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Protocol {
    /// Subject-wise k-fold (subjects shuffled with the seed, dealt round-robin into `k` folds).
    KFold {
        /// Number of folds (2 to the number of labelled subjects).
        k: usize,
    },
    /// Leave-one-subject-out: one fold per labelled subject.
    Loso,
}

impl Protocol {
    /// `"5-fold"` or `"LOSO"`, for reports.
    pub fn label(&self) -> String {
        match self {
            Protocol::KFold { k } => format!("{k}-fold"),
            Protocol::Loso => "LOSO".into(),
        }
    }
}

/// How the downstream classifier is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Encoder and head trained together (batch norm in training mode).
    FineTune,
    /// Frozen encoder: representations are computed once and a linear layer is trained on them.
    LinearProbe,
    /// Frozen encoder: k-nearest neighbours (cosine) on the representations.
    Knn,
    /// Random forest on hand-crafted window features (no encoder).
    RandomForest,
}

impl Mode {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::FineTune => "fine_tune",
            Mode::LinearProbe => "linear_probe",
            Mode::Knn => "knn",
            Mode::RandomForest => "random_forest",
        }
    }

    /// Whether the mode uses an encoder.
    pub fn needs_encoder(self) -> bool {
        !matches!(self, Mode::RandomForest)
    }

    /// Whether the mode trains with early stopping on a validation split.
    pub fn uses_validation(self) -> bool {
        matches!(self, Mode::FineTune | Mode::LinearProbe)
    }
}

/// A downstream config value out of its domain; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// A field with a bad value.
    #[error("invalid `downstream.{field}`: {reason}")]
    Invalid {
        /// Field name within the downstream section (e.g. `batch_size`, `protocol.k`).
        field: String,
        /// Why it is wrong.
        reason: String,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> DownstreamError {
    DownstreamError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Everything that decides a downstream evaluation. Deserialisable from a TOML section
/// (unknown keys rejected; every field has a default); call [`DownstreamConfig::validate`]
/// before use ([`super::run_protocol`] does).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownstreamConfig {
    /// Fine-tune, linear probe, kNN or random forest.
    pub mode: Mode,
    /// Subject-wise k-fold or leave-one-subject-out.
    pub protocol: Protocol,
    /// Epochs of the step budget (fine-tune, linear probe): training runs for at most
    /// `max(max_epochs * batches per epoch, min_steps)` optimiser steps.
    pub max_epochs: usize,
    /// Floor of the step budget, so that small datasets (a few batches per epoch) still train.
    pub min_steps: usize,
    /// Optimiser steps between validations (the early-stopping cadence; the last step of the
    /// budget is always validated).
    pub eval_every: usize,
    /// Stop after this many validations in a row without a lower validation loss (>= 1); the
    /// weights of the lowest validation loss are restored.
    pub patience: usize,
    /// At most this many training windows (a seeded sample) recalibrate the encoder's
    /// batch-norm running statistics before every validation and before the test windows are
    /// predicted (fine-tune; all of them when fewer).
    pub bn_recalibration_windows: usize,
    /// Windows per training batch.
    pub batch_size: usize,
    /// Windows per batch when encoding or predicting (no gradients; larger is faster).
    pub eval_batch_size: usize,
    /// Learning rate of AdamW (constant; SSL-Wearables fine-tunes with 1e-4).
    pub lr: f64,
    /// Decoupled weight decay (not applied to biases and norm parameters).
    pub weight_decay: f64,
    /// Gradient-norm clipping threshold (none when absent).
    pub grad_clip: Option<f64>,
    /// Fraction of a training fold's subjects held out for validation, in (0, 1) (rounded, at
    /// least one subject, at least one left for training).
    pub val_fraction: f64,
    /// Fine-tune with random rotation and axis permutation ([`Compose::ssl_wearables_finetune`]).
    pub augment: bool,
    /// Hidden width of the fine-tuning head (512 in SSL-Wearables).
    pub head_hidden: usize,
    /// Neighbours voting in kNN mode (reduced to the training size when larger).
    pub knn_k: usize,
    /// Trees of the random forest.
    pub forest_trees: u16,
    /// Depth limit of the forest's trees (none: grow fully).
    pub forest_max_depth: Option<u16>,
    /// Seed of every random stream (folds, splits, initialisation, batches, augmentation).
    pub seed: u64,
}

impl Default for DownstreamConfig {
    /// The fine-tuning recipe of `docs/decisions.md` ("Fine-tuning and supervised recipe"):
    /// fine-tune, 5-fold, a budget of `max(20 epochs, 600 steps)` with validation every 25 steps
    /// and patience 5 on the validation loss, batches of 64, lr 1e-3, weight decay 0, 12.5 % of
    /// the training subjects for validation, batch norm recalibrated on up to 1024 training
    /// windows, no augmentation, kNN k = 5, 100 trees.
    fn default() -> Self {
        Self {
            mode: Mode::FineTune,
            protocol: Protocol::KFold { k: 5 },
            max_epochs: 20,
            min_steps: 600,
            eval_every: 25,
            patience: 5,
            bn_recalibration_windows: 1024,
            batch_size: 64,
            eval_batch_size: 256,
            lr: 1e-3,
            weight_decay: 0.0,
            grad_clip: None,
            val_fraction: 0.125,
            augment: false,
            head_hidden: 512,
            knn_k: 5,
            forest_trees: 100,
            forest_max_depth: None,
            seed: 0,
        }
    }
}

impl DownstreamConfig {
    /// The step budget for `batches_per_epoch` batches per epoch:
    /// `max(max_epochs * batches_per_epoch, min_steps)`, at least 1.
    pub fn step_budget(&self, batches_per_epoch: usize) -> usize {
        self.max_epochs
            .saturating_mul(batches_per_epoch)
            .max(self.min_steps)
            .max(1)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> std::result::Result<(), DownstreamError> {
        if let Protocol::KFold { k } = self.protocol {
            if k < 2 {
                return Err(invalid("protocol.k", format!("must be >= 2, got {k}")));
            }
        }
        for (field, v) in [
            ("max_epochs", self.max_epochs),
            ("eval_every", self.eval_every),
            ("patience", self.patience),
            ("bn_recalibration_windows", self.bn_recalibration_windows),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
            ("head_hidden", self.head_hidden),
            ("knn_k", self.knn_k),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be >= 1"));
            }
        }
        if self.mode == Mode::FineTune && self.batch_size < 2 {
            return Err(invalid(
                "batch_size",
                "fine-tuning needs >= 2 windows per batch (batch norm in training mode)",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid(
                "lr",
                format!("must be finite and > 0, got {}", self.lr),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid(
                "weight_decay",
                format!("must be finite and >= 0, got {}", self.weight_decay),
            ));
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(invalid(
                    "grad_clip",
                    format!("must be finite and > 0, got {c}"),
                ));
            }
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(invalid(
                "val_fraction",
                format!(
                    "must lie strictly between 0 and 1, got {}",
                    self.val_fraction
                ),
            ));
        }
        if self.forest_trees == 0 {
            return Err(invalid("forest_trees", "must be >= 1"));
        }
        if self.forest_max_depth == Some(0) {
            return Err(invalid("forest_max_depth", "must be >= 1 when given"));
        }
        Ok(())
    }
}

/// Where the encoder of a downstream run comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum EncoderSource {
    /// An `encoder.safetensors` written by pretraining; its architecture is read from the file's
    /// metadata, and every tensor name and shape is checked on loading.
    Pretrained(PathBuf),
    /// A randomly initialised encoder (seeded): fine-tuned, it is the "supervised from scratch"
    /// comparator; frozen, a random-features baseline.
    Scratch(EncoderConfig),
    /// No encoder (the random-forest comparator).
    None,
}

impl EncoderSource {
    /// A short description for reports (`pretrained:<path>`, `scratch`, `none`).
    pub fn label(&self) -> String {
        match self {
            EncoderSource::Pretrained(p) => format!("pretrained:{}", p.display()),
            EncoderSource::Scratch(_) => "scratch".into(),
            EncoderSource::None => "none".into(),
        }
    }

    /// The encoder's architecture (read from the checkpoint for [`EncoderSource::Pretrained`]).
    pub fn config(&self) -> Result<Option<EncoderConfig>> {
        Ok(match self {
            EncoderSource::Pretrained(path) => Some(
                flowfm_models::read_checkpoint_metadata(path)
                    .and_then(|m| m.config::<EncoderConfig>())
                    .with_context(|| format!("reading the encoder config of {}", path.display()))?,
            ),
            EncoderSource::Scratch(cfg) => Some(cfg.clone()),
            EncoderSource::None => None,
        })
    }

    /// Builds the encoder in a fresh `VarMap`: initialised from `rng`'s seed, then, for a
    /// pretrained source, overwritten by the checkpoint (names, shapes and config checked).
    /// `Ok(None)` for [`EncoderSource::None`].
    pub fn build(&self, rng: &SeededRng, device: &Device) -> Result<Option<(VarMap, HarNet)>> {
        let Some(cfg) = self.config()? else {
            return Ok(None);
        };
        let vars = VarMap::new();
        let encoder = HarNet::new(
            cfg.clone(),
            seeded_var_builder(&vars, rng.seed(), DType::F32, device),
        )?;
        if let EncoderSource::Pretrained(path) = self {
            flowfm_models::load_checkpoint_checked(&vars, &cfg, path)
                .with_context(|| format!("loading encoder {}", path.display()))?;
        }
        Ok(Some((vars, encoder)))
    }
}
