//! Full fine-tuning of an encoder with the SSL-Wearables head on one fold, and the early
//! stopping shared with the linear probe: a budget of optimiser steps, validation at a fixed step
//! cadence, patience on the validation loss, and the best-validation weights restored before the
//! test fold is predicted.
//!
//! Fine-tuning follows SSL-Wearables (Yuan et al., npj Digital Medicine 2024): the head
//! `Linear(d, 512) -> ReLU -> Linear(512, K)` on the encoder, every layer trained, class-weighted
//! cross-entropy with inverse-frequency weights of the training windows (the validation loss
//! uses the same weights), Adam(W), early stopping on the validation loss of a subject-wise
//! validation split, and optionally the fine-tuning augmentation (random 3-D rotation and random
//! axis permutation, see [`Compose::ssl_wearables_finetune`]). The recipe (step budget with a
//! floor, cadence, patience, learning rate) and its sources are in `docs/decisions.md`
//! ("Fine-tuning and supervised recipe").
//!
//! Batch norm: before every validation and before the test windows are predicted, the encoder's
//! running statistics are recalibrated on (a seeded sample of) the training windows
//! ([`HarNet::recalibrate_batch_norm`]), so evaluation never uses statistics that lag the weights
//! or still sit near their initial values.
//!
//! Every random draw (head and scratch-encoder initialisation, batch order, augmentation, the
//! recalibration sample) comes from the [`SeededRng`] the caller passes in.

use super::config::{DownstreamConfig, EncoderSource};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::{ForwardMode, SeededRng};
use flowfm_data::augment::Compose;
use flowfm_data::batch::{Batch, BatchConfig, BatchIter, Batcher, WindowSource};
use flowfm_models::heads::{Classifier, ClassifierConfig};
use flowfm_models::{detached_var_builder, HarNet};
use flowfm_objectives::classification::{inverse_frequency_weights, weighted_cross_entropy};
use flowfm_ops::norm::is_buffer_name;
use flowfm_ops::optim::{clip_grad_norm, AdamW, AdamWConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// One validation during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    /// Optimiser steps taken when the validation ran.
    pub step: usize,
    /// Mean training loss over the steps since the previous validation.
    pub train_loss: f64,
    /// Validation loss (the training loss function on the validation windows, evaluation mode).
    pub val_loss: f64,
    /// Macro F1 on the validation windows (reported, not used for stopping).
    pub val_macro_f1: f64,
}

/// What a validation measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    /// The loss early stopping minimises.
    pub loss: f64,
    /// Macro F1, recorded alongside.
    pub macro_f1: f64,
}

/// The step budget and early-stopping rule of one training run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoppingRule {
    /// Most optimiser steps.
    pub max_steps: usize,
    /// Steps between validations (the last step is always validated).
    pub eval_every: usize,
    /// Validations in a row without a strictly lower validation loss before stopping.
    pub patience: usize,
}

impl StoppingRule {
    /// The rule of `cfg` for `batches_per_epoch` batches per epoch (budget
    /// [`DownstreamConfig::step_budget`]).
    pub fn of(cfg: &DownstreamConfig, batches_per_epoch: usize) -> Self {
        Self {
            max_steps: cfg.step_budget(batches_per_epoch),
            eval_every: cfg.eval_every,
            patience: cfg.patience,
        }
    }
}

/// What early-stopped training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// Steps taken at the validation with the lowest loss; its weights were restored.
    pub best_step: usize,
    /// The lowest validation loss.
    pub best_val_loss: f64,
    /// The validation macro F1 at that step.
    pub best_val_macro_f1: f64,
    /// Optimiser steps taken.
    pub steps_run: usize,
    /// The step budget.
    pub max_steps: usize,
    /// Whether training stopped before the budget for lack of improvement.
    pub stopped_early: bool,
    /// Every validation.
    pub history: Vec<ValidationRecord>,
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

/// Trains in chunks of `rule.eval_every` steps up to `rule.max_steps`: `train_steps(first, n)`
/// takes optimiser steps `first..first + n` and returns their mean loss, then `validate()`
/// measures the validation loss. Training stops once `rule.patience` validations in a row did
/// not strictly lower the best loss. The values of `vars` (include batch-norm buffers) at the
/// best validation are restored before returning, so whatever is predicted afterwards uses the
/// best-validation weights. A non-finite training loss is an error naming the step; a NaN
/// validation loss never counts as an improvement (except over an earlier NaN's absence).
pub fn train_with_early_stopping(
    rule: StoppingRule,
    vars: &[Var],
    mut train_steps: impl FnMut(usize, usize) -> Result<f64>,
    mut validate: impl FnMut() -> Result<Validation>,
) -> Result<TrainOutcome> {
    if rule.max_steps == 0 || rule.eval_every == 0 || rule.patience == 0 {
        bail!(
            "early stopping needs max_steps, eval_every and patience >= 1, got {:?}",
            rule
        );
    }
    let mut best: Option<(usize, Validation, Snapshot)> = None;
    let mut since_best = 0usize;
    let mut history = Vec::new();
    let mut stopped_early = false;
    let mut step = 0usize;
    while step < rule.max_steps {
        let n = rule.eval_every.min(rule.max_steps - step);
        let train_loss = train_steps(step, n)?;
        if !train_loss.is_finite() {
            bail!(
                "training diverged: mean loss {train_loss} over steps {step}..{}",
                step + n
            );
        }
        step += n;
        let val = validate()?;
        history.push(ValidationRecord {
            step,
            train_loss,
            val_loss: val.loss,
            val_macro_f1: val.macro_f1,
        });
        let improved = match &best {
            None => true,
            Some((_, b, _)) => val.loss < b.loss || (b.loss.is_nan() && !val.loss.is_nan()),
        };
        if improved {
            best = Some((step, val, Snapshot::take(vars)?));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= rule.patience {
                stopped_early = step < rule.max_steps;
                break;
            }
        }
    }
    let Some((best_step, best_val, snap)) = best else {
        bail!("no step was trained");
    };
    snap.restore()?;
    Ok(TrainOutcome {
        best_step,
        best_val_loss: best_val.loss,
        best_val_macro_f1: best_val.macro_f1,
        steps_run: step,
        max_steps: rule.max_steps,
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

/// Logits `(n, K)` of windows held in memory `(n, C, L)`, from the encoder's detached view
/// (evaluation mode) and `head`, `batch` windows at a time.
fn logits_of(
    encoder: &HarNet,
    head: &Classifier,
    x: &[f32],
    shape: (usize, usize, usize),
    batch: usize,
    device: &Device,
) -> Result<Tensor> {
    let (n, c, l) = shape;
    let per = c * l;
    let mut parts = Vec::with_capacity(n.div_ceil(batch.max(1)));
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let xb = Tensor::from_slice(&x[start * per..end * per], (end - start, c, l), device)?;
        parts.push(head.forward(&encoder.encode_detached(&xb)?)?);
        start = end;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// One update from `loss`: backward, clipping of the gradient norm over `vars` to `clip`, and the
/// optimizer step, all on a pool worker (`flowfm_ops::on_worker`) so the ops start without a
/// wake-up each. Fine-tuning and the linear probe train with it.
pub(super) fn backward_and_step(
    loss: &Tensor,
    vars: &[Var],
    clip: Option<f64>,
    opt: &mut AdamW,
    lr: f64,
) -> Result<()> {
    flowfm_ops::on_worker(|| -> Result<()> {
        let mut grads = loss.backward()?;
        clip_grad_norm(&mut grads, vars, clip)?;
        opt.step(&grads, lr)?;
        Ok(())
    })
}

/// The validation loss of `logits` for classes `truth`: the training loss (cross-entropy with
/// the training windows' class weights); the plain mean when every validation window belongs to
/// a class absent from training (weight 0).
pub(super) fn validation_loss(logits: &Tensor, truth: &[usize], weights: &[f64]) -> Result<f64> {
    let y = Tensor::from_vec(
        truth.iter().map(|&c| c as i64).collect::<Vec<_>>(),
        truth.len(),
        logits.device(),
    )?;
    let weighted = truth
        .iter()
        .any(|&c| weights.get(c).is_some_and(|&w| w > 0.0));
    let loss = weighted_cross_entropy(logits, &y, weighted.then_some(weights))?;
    Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Recalibrates the encoder's batch norm on windows held in memory, in batches of at most
/// `batch` windows and of equal size up to one (no tiny trailing batch whose statistics would
/// normalise the deeper layers' inputs).
fn recalibrate(
    encoder: &HarNet,
    x: &[f32],
    shape: (usize, usize, usize),
    batch: usize,
    device: &Device,
) -> Result<()> {
    let (n, c, l) = shape;
    let per = c * l;
    let batch = n.div_ceil(n.div_ceil(batch.max(1)).max(1)).max(1);
    let batches = (0..n).step_by(batch.max(1)).map(|start| {
        let end = (start + batch).min(n);
        Tensor::from_slice(&x[start * per..end * per], (end - start, c, l), device)
    });
    encoder
        .recalibrate_batch_norm(batches)
        .context("recalibrating batch norm on training windows")?;
    Ok(())
}

/// An endless stream of training batches: epoch after epoch of `batcher`.
struct BatchStream<'a, S: WindowSource + 'static> {
    batcher: &'a Batcher<S>,
    epoch: u64,
    current: Option<BatchIter>,
}

impl<'a, S: WindowSource + 'static> BatchStream<'a, S> {
    fn new(batcher: &'a Batcher<S>) -> Self {
        Self {
            batcher,
            epoch: 0,
            current: None,
        }
    }

    fn next_batch(&mut self) -> Result<Batch> {
        for _ in 0..2 {
            let iter = match &mut self.current {
                Some(it) => it,
                None => {
                    let it = self.batcher.epoch(self.epoch);
                    self.epoch += 1;
                    self.current.insert(it)
                }
            };
            match iter.next() {
                Some(b) => return Ok(b?),
                None => self.current = None,
            }
        }
        bail!("the training batcher yields no batch (no training windows)")
    }
}

/// Fine-tunes a fresh copy of the encoder from `encoder_src` with the classification head on
/// `split.train` (indices into `source`) for the step budget of `cfg`, early-stopping on the
/// validation loss of `split.val` (batch norm recalibrated on training windows first), and
/// predicts `split.test` with the best-validation weights, recalibrated again. Every label of the
/// split must lie in `0..num_classes`. The encoder is initialised from `rng.derive("encoder")`
/// (scratch) or the checkpoint; the head from `rng.derive("head")`; batches and augmentation
/// from `rng.derive("batches")`; the recalibration sample from `rng.derive("bn_recalibration")`.
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
    // The batch-norm recalibration sample: a seeded subset of the training windows, fixed for
    // the run (so recalibrating the same weights twice gives the same statistics).
    let mut recal_idx: Vec<usize> = {
        let order = rng.derive("bn_recalibration").permutation(n_train);
        order
            .into_iter()
            .take(cfg.bn_recalibration_windows)
            .map(|i| split.train[i])
            .collect()
    };
    recal_idx.sort_unstable();
    let x_recal = source.read_windows(&recal_idx)?;
    let recal_shape = (recal_idx.len(), c, l);

    let mut stream = BatchStream::new(&batcher);
    let train_steps = |first: usize, n: usize| -> Result<f64> {
        let mut total = 0.0;
        for step in first..first + n {
            let batch = stream.next_batch()?;
            let z = encoder.forward(&batch.x, ForwardMode::Train)?;
            let logits = head.forward(&z)?;
            let loss = weighted_cross_entropy(&logits, &batch.y, Some(&weights))?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                bail!("fine-tuning diverged: loss {value} at step {step}");
            }
            backward_and_step(&loss, &trainable_vars, cfg.grad_clip, &mut opt, cfg.lr)?;
            total += value;
        }
        Ok(total / n.max(1) as f64)
    };
    let validate = || -> Result<Validation> {
        recalibrate(&encoder, &x_recal, recal_shape, cfg.eval_batch_size, device)?;
        let logits = logits_of(
            &encoder,
            &head_eval,
            &x_val,
            (split.val.len(), c, l),
            cfg.eval_batch_size,
            device,
        )?;
        Ok(Validation {
            loss: validation_loss(&logits, &y_val, &weights)?,
            macro_f1: macro_f1(&y_val, &argmax_rows(&logits)?, num_classes)?,
        })
    };
    let rule = StoppingRule::of(cfg, batcher.num_batches());
    let training = train_with_early_stopping(rule, &all_vars, train_steps, validate)?;
    // The restored snapshot already holds the statistics recalibrated for its weights; this
    // pass recomputes them from the same windows, so the test never depends on that ordering.
    recalibrate(&encoder, &x_recal, recal_shape, cfg.eval_batch_size, device)?;
    let predicted = argmax_rows(&logits_of(
        &encoder,
        &head_eval,
        &x_test,
        (split.test.len(), c, l),
        cfg.eval_batch_size,
        device,
    )?)?;
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
