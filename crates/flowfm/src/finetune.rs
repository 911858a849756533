//! Downstream training and prediction on one fold: full fine-tuning of an encoder with the
//! SSL-Wearables head, a linear probe on frozen (cached) representations, kNN on representations
//! and the random-forest comparator on hand-crafted features; plus the validated
//! [`DownstreamConfig`] shared with [`crate::protocol`], and early stopping on the validation
//! macro F1 that restores the best-validation weights before the test fold is predicted.
//!
//! Fine-tuning follows SSL-Wearables (Yuan et al., npj Digital Medicine 2024): the head
//! `Linear(d, 512) -> ReLU -> Linear(512, K)` on the encoder, class-weighted cross-entropy with
//! inverse-frequency weights of the training windows, Adam(W), early stopping on a subject-wise
//! validation split, and optionally the fine-tuning augmentation (random 3-D rotation and random
//! axis permutation, see [`finetune_augmentation`]).
//!
//! Every random draw (head and scratch-encoder initialisation, batch order, augmentation,
//! probe mini-batches, forest seed) comes from the [`SeededRng`] the caller passes in.

use flowfm_ops::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::protocol::Protocol;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::{ForwardMode, SeededRng};
use flowfm_data::augment::{Augmentation, Compose};
use flowfm_data::batch::{BatchConfig, Batcher, WindowSource};
use flowfm_eval::{
    Distance, Embeddings, FeatureTable, ForestConfig, KnnClassifier, KnnConfig, RandomForest,
};
use flowfm_models::heads::{Classifier, ClassifierConfig, LinearProbe};
use flowfm_models::{detached_var_builder, EncoderConfig, HarNet};
use flowfm_objectives::classification::{inverse_frequency_weights, weighted_cross_entropy};
use flowfm_ops::norm::is_buffer_name;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
/// before use ([`crate::protocol::run_protocol`] does).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownstreamConfig {
    /// Fine-tune, linear probe, kNN or random forest.
    pub mode: Mode,
    /// Subject-wise k-fold or leave-one-subject-out.
    pub protocol: Protocol,
    /// Most epochs of training (fine-tune, linear probe).
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation macro F1 (>= 1).
    pub patience: usize,
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
    /// Fraction of a training fold's subjects held out for validation, in (0, 1).
    pub val_fraction: f64,
    /// Fine-tune with random rotation and axis permutation ([`finetune_augmentation`]).
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
    /// Fine-tune, 5-fold, 20 epochs with patience 5, batches of 64, lr 1e-4, weight decay 0,
    /// a fifth of the training subjects for validation, no augmentation, kNN k = 5, 100 trees.
    fn default() -> Self {
        Self {
            mode: Mode::FineTune,
            protocol: Protocol::KFold { k: 5 },
            max_epochs: 20,
            patience: 5,
            batch_size: 64,
            eval_batch_size: 256,
            lr: 1e-4,
            weight_decay: 0.0,
            grad_clip: None,
            val_fraction: 0.2,
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
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> std::result::Result<(), DownstreamError> {
        if let Protocol::KFold { k } = self.protocol {
            if k < 2 {
                return Err(invalid("protocol.k", format!("must be >= 2, got {k}")));
            }
        }
        for (field, v) in [
            ("max_epochs", self.max_epochs),
            ("patience", self.patience),
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

/// The augmentation of SSL-Wearables fine-tuning: a uniformly random 3-D rotation (probability
/// 0.5) then a random permutation of the axes (probability 0.5), applied to every channel triad.
pub fn finetune_augmentation() -> Compose {
    Compose {
        steps: vec![
            (
                Augmentation::Rotation {
                    max_angle_rad: None,
                },
                0.5,
            ),
            (Augmentation::AxisPermutation, 0.5),
        ],
    }
}

/// One epoch of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Macro F1 on the validation split after the epoch.
    pub val_macro_f1: f64,
}

/// What early-stopped training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// Epoch (0-based) with the best validation macro F1; its weights were restored.
    pub best_epoch: usize,
    /// The best validation macro F1.
    pub best_val_macro_f1: f64,
    /// Epochs trained.
    pub epochs_run: usize,
    /// Whether training stopped before `max_epochs` for lack of improvement.
    pub stopped_early: bool,
    /// Every epoch's loss and validation score.
    pub history: Vec<EpochRecord>,
}

/// Copies of variables' values, to restore the best-validation weights.
struct Snapshot(Vec<(Var, Tensor)>);

impl Snapshot {
    fn take(vars: &[Var]) -> Result<Self> {
        Ok(Self(
            vars.iter()
                .map(|v| Ok((v.clone(), v.as_tensor().detach().copy()?)))
                .collect::<Result<_>>()?,
        ))
    }

    fn restore(&self) -> Result<()> {
        for (v, t) in &self.0 {
            v.set(t)?;
        }
        Ok(())
    }
}

/// Trains for up to `max_epochs`, calling `run_epoch(epoch)` (returns the mean training loss)
/// then `validate()` (returns the validation macro F1) each epoch, and stops once `patience`
/// epochs in a row did not strictly improve on the best score. The values of `vars` (include
/// batch-norm buffers) at the best epoch are restored before returning, so whatever is
/// predicted afterwards uses the best-validation weights. A non-finite training loss is an
/// error naming the epoch; a NaN validation score never counts as an improvement.
pub fn train_with_early_stopping(
    max_epochs: usize,
    patience: usize,
    vars: &[Var],
    mut run_epoch: impl FnMut(usize) -> Result<f64>,
    mut validate: impl FnMut() -> Result<f64>,
) -> Result<TrainOutcome> {
    if max_epochs == 0 || patience == 0 {
        bail!("early stopping needs max_epochs >= 1 and patience >= 1");
    }
    let mut best: Option<(usize, f64, Snapshot)> = None;
    let mut history = Vec::new();
    let mut stopped_early = false;
    for epoch in 0..max_epochs {
        let train_loss = run_epoch(epoch)?;
        if !train_loss.is_finite() {
            bail!("training diverged: mean loss {train_loss} in epoch {epoch}");
        }
        let val = validate()?;
        history.push(EpochRecord {
            epoch,
            train_loss,
            val_macro_f1: val,
        });
        let improved = match &best {
            None => true,
            Some((_, b, _)) => val > *b || (b.is_nan() && !val.is_nan()),
        };
        if improved {
            best = Some((epoch, val, Snapshot::take(vars)?));
        } else if let Some((b, _, _)) = &best {
            if epoch - b >= patience {
                stopped_early = epoch + 1 < max_epochs;
                break;
            }
        }
    }
    let Some((best_epoch, best_val, snap)) = best else {
        bail!("no epoch was trained");
    };
    snap.restore()?;
    Ok(TrainOutcome {
        best_epoch,
        best_val_macro_f1: best_val,
        epochs_run: history.len(),
        stopped_early,
        history,
    })
}

/// The windows of one fold: indices into a window source (fine-tuning) or into cached
/// representation / feature rows (the other modes), depending on the function they go to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FoldSplit {
    /// Windows the classifier is trained on.
    pub train: Vec<usize>,
    /// Windows for early stopping (empty for kNN and random forest).
    pub val: Vec<usize>,
    /// Held-out windows that are predicted.
    pub test: Vec<usize>,
}

/// The result of one fold: predictions for the test windows and how training went.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldOutcome {
    /// True class of every test window (order of [`FoldSplit::test`]).
    pub truth: Vec<usize>,
    /// Predicted class of every test window.
    pub predicted: Vec<usize>,
    /// Inverse-frequency class weights of the training windows (0 for absent classes); empty
    /// for modes without a loss.
    pub class_weights: Vec<f64>,
    /// Early-stopping record (fine-tune and linear probe).
    pub training: Option<TrainOutcome>,
}

fn class_of(y: i64, num_classes: usize, what: &str) -> Result<usize> {
    if y < 0 || y as usize >= num_classes {
        bail!("{what}: label {y} is not a class in 0..{num_classes}");
    }
    Ok(y as usize)
}

fn labels_at(labels: &[i64], idx: &[usize], num_classes: usize) -> Result<Vec<usize>> {
    idx.iter()
        .map(|&i| {
            let y = *labels
                .get(i)
                .with_context(|| format!("window {i} out of range ({} labels)", labels.len()))?;
            class_of(y, num_classes, &format!("window {i}"))
        })
        .collect()
}

fn argmax_rows(logits: &Tensor) -> Result<Vec<usize>> {
    Ok(logits
        .argmax(1)?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|c| c as usize)
        .collect())
}

fn macro_f1(truth: &[usize], pred: &[usize], num_classes: usize) -> Result<f64> {
    Ok(flowfm_eval::ConfusionMatrix::from_predictions(truth, pred, num_classes)?.macro_f1())
}

/// Encodes the windows `indices` of `source` with the frozen encoder (evaluation mode, no
/// autograd graph), `batch` windows at a time.
///
/// # Shapes
/// - returns `(indices.len(), repr_dim)` row-major, rows in the order of `indices`.
pub fn encode_windows<S: WindowSource + ?Sized>(
    encoder: &HarNet,
    source: &S,
    indices: &[usize],
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let (c, l) = (source.channels(), source.window_len());
    let mut out = Vec::with_capacity(indices.len() * encoder.config().repr_dim());
    for chunk in indices.chunks(batch.max(1)) {
        let x = source.read_windows(chunk)?;
        let x = Tensor::from_vec(x, (chunk.len(), c, l), device)?;
        let z = encoder.encode_detached(&x)?;
        out.extend(z.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Predicts windows held in memory `(n, C, L)` with the encoder's detached view and `head`.
fn predict_windows(
    encoder: &HarNet,
    head: &Classifier,
    x: &[f32],
    shape: (usize, usize, usize),
    batch: usize,
    device: &Device,
) -> Result<Vec<usize>> {
    let (n, c, l) = shape;
    let per = c * l;
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let xb = Tensor::from_slice(&x[start * per..end * per], (end - start, c, l), device)?;
        out.extend(argmax_rows(&head.forward(&encoder.encode_detached(&xb)?)?)?);
        start = end;
    }
    Ok(out)
}

/// Fine-tunes a fresh copy of the encoder from `encoder_src` with the classification head on
/// `split.train` (indices into `source`), early-stopping on the macro F1 of `split.val`, and
/// predicts `split.test` with the best-validation weights. Every label of the split must lie in
/// `0..num_classes`. The encoder is initialised from `rng.derive("encoder")` (scratch) or the
/// checkpoint; the head from `rng.derive("head")`; batches and augmentation from
/// `rng.derive("batches")`.
pub fn finetune_fold<S: WindowSource + 'static>(
    source: &Arc<S>,
    split: &FoldSplit,
    encoder_src: &EncoderSource,
    num_classes: usize,
    cfg: &DownstreamConfig,
    rng: &SeededRng,
    device: &Device,
) -> Result<FoldOutcome> {
    finetune_fold_with_model(source, split, encoder_src, num_classes, cfg, rng, device)
        .map(|(outcome, _)| outcome)
}

/// A fine-tuned encoder and head (the best-validation weights).
pub struct FineTunedModel {
    /// Encoder variables (parameters and batch-norm buffers).
    pub encoder_vars: VarMap,
    /// The encoder.
    pub encoder: HarNet,
    /// Head variables.
    pub head_vars: VarMap,
    /// The head's configuration.
    pub head_config: ClassifierConfig,
    /// The head.
    pub head: Classifier,
}

impl FineTunedModel {
    /// Writes `encoder.safetensors` (loadable as [`EncoderSource::Pretrained`]) and
    /// `head.safetensors` into `dir`, atomically, each with its config in the metadata.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        flowfm_models::save_checkpoint(
            &self.encoder_vars,
            self.encoder.config(),
            &dir.join("encoder.safetensors"),
        )?;
        flowfm_models::save_checkpoint(
            &self.head_vars,
            &self.head_config,
            &dir.join("head.safetensors"),
        )?;
        Ok(())
    }
}

/// As [`finetune_fold`], also returning the fine-tuned model (best-validation weights), e.g. to
/// save it with [`FineTunedModel::save`].
pub fn finetune_fold_with_model<S: WindowSource + 'static>(
    source: &Arc<S>,
    split: &FoldSplit,
    encoder_src: &EncoderSource,
    num_classes: usize,
    cfg: &DownstreamConfig,
    rng: &SeededRng,
    device: &Device,
) -> Result<(FoldOutcome, FineTunedModel)> {
    if split.train.len() < 2 || split.val.is_empty() || split.test.is_empty() {
        bail!(
            "fine-tuning needs >= 2 training, >= 1 validation and >= 1 test windows, got {}/{}/{}",
            split.train.len(),
            split.val.len(),
            split.test.len()
        );
    }
    let labels = source.labels();
    let y_train = labels_at(labels, &split.train, num_classes)?;
    let y_val = labels_at(labels, &split.val, num_classes)?;
    let y_test = labels_at(labels, &split.test, num_classes)?;
    let weights = inverse_frequency_weights(&y_train, num_classes)?;

    let (enc_vars, encoder) = encoder_src
        .build(&rng.derive("encoder"), device)?
        .context("mode fine_tune needs an encoder (pretrained or scratch)")?;
    let head_vars = VarMap::new();
    let head_cfg = ClassifierConfig {
        in_dim: encoder.config().repr_dim(),
        hidden: cfg.head_hidden,
        classes: num_classes,
    };
    let head_vb = seeded_var_builder(&head_vars, rng.derive("head").seed(), DType::F32, device);
    let head = Classifier::new(head_cfg.clone(), head_vb.clone())?;
    let head_eval = Classifier::new(head_cfg.clone(), detached_var_builder(&head_vb))?;

    let mut named: Vec<(String, Var)> = Vec::new();
    for (prefix, vm) in [("encoder", &enc_vars), ("head", &head_vars)] {
        let data = vm
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
        named.extend(
            data.iter()
                .map(|(n, v)| (format!("{prefix}.{n}"), v.clone())),
        );
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let all_vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let trainable: Vec<(String, Var)> = named
        .into_iter()
        .filter(|(n, _)| !is_buffer_name(n))
        .collect();
    let trainable_vars: Vec<Var> = trainable.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = AdamW::new(
        trainable,
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
    )?;

    let n_train = split.train.len();
    let batcher = Batcher::new(
        Arc::clone(source),
        split.train.clone(),
        cfg.augment.then(finetune_augmentation),
        BatchConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            // A trailing batch of one window would break batch norm in training mode.
            drop_last: n_train > cfg.batch_size,
            prefetch: 2,
            seed: rng.derive("batches").seed(),
        },
        device.clone(),
    )?;
    let (c, l) = (source.channels(), source.window_len());
    let x_val = source.read_windows(&split.val)?;
    let x_test = source.read_windows(&split.test)?;

    let run_epoch = |epoch: usize| -> Result<f64> {
        let mut total = 0.0;
        let mut batches = 0usize;
        for batch in batcher.epoch(epoch as u64) {
            let batch = batch?;
            let z = encoder.forward(&batch.x, ForwardMode::Train)?;
            let logits = head.forward(&z)?;
            let loss = weighted_cross_entropy(&logits, &batch.y, Some(&weights))?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                bail!("fine-tuning diverged: loss {value} in epoch {epoch}, batch {batches}");
            }
            let mut grads = loss.backward()?;
            clip_grad_norm(&mut grads, &trainable_vars, cfg.grad_clip)?;
            opt.step(&grads, cfg.lr)?;
            total += value;
            batches += 1;
        }
        Ok(total / batches.max(1) as f64)
    };
    let validate = || -> Result<f64> {
        let pred = predict_windows(
            &encoder,
            &head_eval,
            &x_val,
            (split.val.len(), c, l),
            cfg.eval_batch_size,
            device,
        )?;
        macro_f1(&y_val, &pred, num_classes)
    };
    let training =
        train_with_early_stopping(cfg.max_epochs, cfg.patience, &all_vars, run_epoch, validate)?;
    let predicted = predict_windows(
        &encoder,
        &head_eval,
        &x_test,
        (split.test.len(), c, l),
        cfg.eval_batch_size,
        device,
    )?;
    Ok((
        FoldOutcome {
            truth: y_test,
            predicted,
            class_weights: weights,
            training: Some(training),
        },
        FineTunedModel {
            encoder_vars: enc_vars,
            encoder,
            head_vars,
            head_config: head_cfg,
            head,
        },
    ))
}

/// Gathers rows `idx` of a `(rows, dim)` row-major matrix.
fn gather_rows(data: &[f32], dim: usize, idx: &[usize]) -> Result<Vec<f32>> {
    let rows = data.len() / dim.max(1);
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        if i >= rows {
            bail!("row {i} out of range ({rows} rows)");
        }
        out.extend_from_slice(&data[i * dim..(i + 1) * dim]);
    }
    Ok(out)
}

/// Trains a linear probe on cached representations: rows `split.train` of `reps` (standardised
/// with the training rows' per-dimension mean and sd), early-stopped on the macro F1 of
/// `split.val`, then predicts `split.test`. `labels[i]` is the class of row `i`. Initialisation
/// from `rng.derive("head")`, mini-batch order from `rng.derive("batches")`.
pub fn linear_probe_fold(
    reps: &Embeddings<'_>,
    labels: &[usize],
    split: &FoldSplit,
    num_classes: usize,
    cfg: &DownstreamConfig,
    rng: &SeededRng,
    device: &Device,
) -> Result<FoldOutcome> {
    if split.train.is_empty() || split.val.is_empty() || split.test.is_empty() {
        bail!(
            "the linear probe needs training, validation and test rows, got {}/{}/{}",
            split.train.len(),
            split.val.len(),
            split.test.len()
        );
    }
    let d = reps.dim();
    let pick = |idx: &[usize]| -> Result<Vec<usize>> {
        idx.iter()
            .map(|&i| {
                let y = *labels
                    .get(i)
                    .with_context(|| format!("row {i} out of range ({} labels)", labels.len()))?;
                if y >= num_classes {
                    bail!("row {i}: label {y} is not a class in 0..{num_classes}");
                }
                Ok(y)
            })
            .collect()
    };
    let y_train = pick(&split.train)?;
    let y_val = pick(&split.val)?;
    let y_test = pick(&split.test)?;
    let weights = inverse_frequency_weights(&y_train, num_classes)?;

    // Standardise with the training rows only (no information from validation or test).
    let x_train = gather_rows(reps.as_slice(), d, &split.train)?;
    let n = split.train.len();
    let mut mean = vec![0f64; d];
    let mut sq = vec![0f64; d];
    for row in x_train.chunks(d) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let scale: Vec<(f32, f32)> = (0..d)
        .map(|j| {
            let m = mean[j] / n as f64;
            let var = (sq[j] / n as f64 - m * m).max(0.0);
            let sd = var.sqrt();
            (m as f32, if sd > 1e-8 { (1.0 / sd) as f32 } else { 1.0 })
        })
        .collect();
    let standardise = |mut x: Vec<f32>| -> Vec<f32> {
        for row in x.chunks_mut(d) {
            for (v, &(m, inv)) in row.iter_mut().zip(&scale) {
                *v = (*v - m) * inv;
            }
        }
        x
    };
    let x_train = Tensor::from_vec(standardise(x_train), (n, d), device)?;
    let x_val = Tensor::from_vec(
        standardise(gather_rows(reps.as_slice(), d, &split.val)?),
        (split.val.len(), d),
        device,
    )?;
    let x_test = Tensor::from_vec(
        standardise(gather_rows(reps.as_slice(), d, &split.test)?),
        (split.test.len(), d),
        device,
    )?;
    let y_train_t = Tensor::from_vec(
        y_train.iter().map(|&y| y as i64).collect::<Vec<_>>(),
        n,
        device,
    )?;

    let vars = VarMap::new();
    let vb = seeded_var_builder(&vars, rng.derive("head").seed(), DType::F32, device);
    let probe = LinearProbe::new(d, num_classes, vb.clone())?;
    let probe_eval = LinearProbe::new(d, num_classes, detached_var_builder(&vb))?;
    let named: Vec<(String, Var)> = {
        let data = vars
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
        data.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    };
    let all_vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = AdamW::new(
        named,
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    let batch_rng = rng.derive("batches");
    let run_epoch = |epoch: usize| -> Result<f64> {
        let order = batch_rng
            .derive_indexed("epoch", epoch as u64)
            .permutation(n);
        let mut total = 0.0;
        let mut batches = 0usize;
        for chunk in order.chunks(cfg.batch_size) {
            let idx = Tensor::from_vec(
                chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                chunk.len(),
                device,
            )?;
            let logits = probe.forward(&x_train.index_select(&idx, 0)?)?;
            let loss =
                weighted_cross_entropy(&logits, &y_train_t.index_select(&idx, 0)?, Some(&weights))?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let mut grads = loss.backward()?;
            clip_grad_norm(&mut grads, &all_vars, cfg.grad_clip)?;
            opt.step(&grads, cfg.lr)?;
            total += value;
            batches += 1;
        }
        Ok(total / batches.max(1) as f64)
    };
    let validate = || -> Result<f64> {
        macro_f1(
            &y_val,
            &argmax_rows(&probe_eval.forward(&x_val)?)?,
            num_classes,
        )
    };
    let training =
        train_with_early_stopping(cfg.max_epochs, cfg.patience, &all_vars, run_epoch, validate)?;
    let predicted = argmax_rows(&probe_eval.forward(&x_test)?)?;
    Ok(FoldOutcome {
        truth: y_test,
        predicted,
        class_weights: weights,
        training: Some(training),
    })
}

fn check_rows(labels: &[usize], idx: &[usize], num_classes: usize) -> Result<Vec<usize>> {
    idx.iter()
        .map(|&i| match labels.get(i) {
            Some(&y) if y < num_classes => Ok(y),
            Some(&y) => bail!("row {i}: label {y} is not a class in 0..{num_classes}"),
            None => bail!("row {i} out of range ({} labels)", labels.len()),
        })
        .collect()
}

/// kNN (cosine, `cfg.knn_k` neighbours, fewer when the training side is smaller) on cached
/// representations: rows `split.train` and `split.val` together are the reference set
/// (nothing is tuned on a validation split), rows `split.test` are predicted.
pub fn knn_fold(
    reps: &Embeddings<'_>,
    labels: &[usize],
    split: &FoldSplit,
    num_classes: usize,
    cfg: &DownstreamConfig,
    device: &Device,
) -> Result<FoldOutcome> {
    let reference: Vec<usize> = split.train.iter().chain(&split.val).copied().collect();
    if reference.is_empty() || split.test.is_empty() {
        bail!("kNN needs training and test rows");
    }
    let y_ref = check_rows(labels, &reference, num_classes)?;
    let y_test = check_rows(labels, &split.test, num_classes)?;
    let d = reps.dim();
    let train = Embeddings::from_vec(
        gather_rows(reps.as_slice(), d, &reference)?,
        reference.len(),
        d,
    )?;
    let test = Embeddings::from_vec(
        gather_rows(reps.as_slice(), d, &split.test)?,
        split.test.len(),
        d,
    )?;
    let knn = KnnClassifier::fit(
        &train,
        &y_ref,
        num_classes,
        KnnConfig {
            k: cfg.knn_k.min(reference.len()),
            distance: Distance::Cosine,
            ..KnnConfig::default()
        },
        device,
    )?;
    Ok(FoldOutcome {
        truth: y_test,
        predicted: knn.predict(&test)?,
        class_weights: Vec::new(),
        training: None,
    })
}

fn feature_rows(features: &FeatureTable, idx: &[usize]) -> Result<FeatureTable> {
    let mut values = Vec::with_capacity(idx.len() * features.cols());
    for &i in idx {
        if i >= features.rows() {
            bail!("feature row {i} out of range ({} rows)", features.rows());
        }
        values.extend_from_slice(features.row(i));
    }
    Ok(FeatureTable::new(
        features.names().to_vec(),
        values,
        idx.len(),
    )?)
}

/// The random-forest comparator on cached hand-crafted features: fitted on rows `split.train`
/// and `split.val` together, predicting rows `split.test`; the forest's seed is drawn from
/// `rng.derive("forest")`.
pub fn forest_fold(
    features: &FeatureTable,
    labels: &[usize],
    split: &FoldSplit,
    num_classes: usize,
    cfg: &DownstreamConfig,
    rng: &SeededRng,
) -> Result<FoldOutcome> {
    let reference: Vec<usize> = split.train.iter().chain(&split.val).copied().collect();
    if reference.is_empty() || split.test.is_empty() {
        bail!("the random forest needs training and test rows");
    }
    let y_ref = check_rows(labels, &reference, num_classes)?;
    let y_test = check_rows(labels, &split.test, num_classes)?;
    let forest = RandomForest::fit(
        &feature_rows(features, &reference)?,
        &y_ref,
        &ForestConfig {
            n_trees: cfg.forest_trees,
            max_depth: cfg.forest_max_depth,
            ..ForestConfig::default()
        },
        &mut rng.derive("forest"),
    )?;
    Ok(FoldOutcome {
        truth: y_test,
        predicted: forest.predict(&feature_rows(features, &split.test)?)?,
        class_weights: Vec::new(),
        training: None,
    })
}
