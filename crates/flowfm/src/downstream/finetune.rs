//! Full fine-tuning of an encoder with the SSL-Wearables head on one fold, and early stopping on
//! the validation macro F1 that restores the best-validation weights before the test fold is
//! predicted.
//!
//! Fine-tuning follows SSL-Wearables (Yuan et al., npj Digital Medicine 2024): the head
//! `Linear(d, 512) -> ReLU -> Linear(512, K)` on the encoder, class-weighted cross-entropy with
//! inverse-frequency weights of the training windows, Adam(W), early stopping on a subject-wise
//! validation split, and optionally the fine-tuning augmentation (random 3-D rotation and random
//! axis permutation, see [`Compose::ssl_wearables_finetune`]).
//!
//! Every random draw (head and scratch-encoder initialisation, batch order, augmentation) comes
//! from the [`SeededRng`] the caller passes in.

use super::config::{DownstreamConfig, EncoderSource};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::{ForwardMode, SeededRng};
use flowfm_data::augment::Compose;
use flowfm_data::batch::{BatchConfig, Batcher, WindowSource};
use flowfm_models::heads::{Classifier, ClassifierConfig};
use flowfm_models::{detached_var_builder, HarNet};
use flowfm_objectives::classification::{inverse_frequency_weights, weighted_cross_entropy};
use flowfm_ops::norm::is_buffer_name;
use flowfm_ops::optim::{clip_grad_norm, AdamW, AdamWConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

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

pub(super) fn class_of(y: i64, num_classes: usize, what: &str) -> Result<usize> {
    if y < 0 || y as usize >= num_classes {
        bail!("{what}: label {y} is not a class in 0..{num_classes}");
    }
    Ok(y as usize)
}

pub(super) fn labels_at(labels: &[i64], idx: &[usize], num_classes: usize) -> Result<Vec<usize>> {
    idx.iter()
        .map(|&i| {
            let y = *labels
                .get(i)
                .with_context(|| format!("window {i} out of range ({} labels)", labels.len()))?;
            class_of(y, num_classes, &format!("window {i}"))
        })
        .collect()
}

pub(super) fn argmax_rows(logits: &Tensor) -> Result<Vec<usize>> {
    Ok(logits
        .argmax(1)?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|c| c as usize)
        .collect())
}

pub(super) fn macro_f1(truth: &[usize], pred: &[usize], num_classes: usize) -> Result<f64> {
    Ok(flowfm_eval::ConfusionMatrix::from_predictions(truth, pred, num_classes)?.macro_f1())
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
        cfg.augment.then(Compose::ssl_wearables_finetune),
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
