//! Frozen-encoder downstream modes on one fold: a linear probe on cached representations, kNN on
//! representations, and the random-forest comparator on hand-crafted features. Every random draw
//! (probe mini-batches, forest seed) comes from the [`SeededRng`] the caller passes in.

use super::config::DownstreamConfig;
use super::finetune::{
    argmax_rows, backward_and_step, macro_f1, train_with_early_stopping, validation_loss,
    FoldOutcome, FoldSplit, StoppingRule, Validation,
};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::SeededRng;
use flowfm_eval::{
    Distance, Embeddings, FeatureTable, ForestConfig, KnnClassifier, KnnConfig, RandomForest,
};
use flowfm_models::detached_var_builder;
use flowfm_models::heads::LinearProbe;
use flowfm_objectives::classification::{inverse_frequency_weights, weighted_cross_entropy};
use flowfm_ops::optim::{AdamW, AdamWConfig};

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
/// with the training rows' per-dimension mean and sd) for the step budget of `cfg`,
/// early-stopped on the validation loss of `split.val` (the rule of the fine-tune, see
/// [`super::finetune::train_with_early_stopping`]), then predicts `split.test`. `labels[i]` is the class of row `i`. Initialisation
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
    let batches_per_epoch = n.div_ceil(cfg.batch_size);
    let mut order: Vec<usize> = Vec::new();
    let train_steps = |first: usize, steps: usize| -> Result<f64> {
        let mut total = 0.0;
        for step in first..first + steps {
            let (epoch, b) = (step / batches_per_epoch, step % batches_per_epoch);
            if b == 0 || order.is_empty() {
                order = batch_rng
                    .derive_indexed("epoch", epoch as u64)
                    .permutation(n);
            }
            let chunk = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(n)];
            let idx = Tensor::from_vec(
                chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                chunk.len(),
                device,
            )?;
            let logits = probe.forward(&x_train.index_select(&idx, 0)?)?;
            let loss =
                weighted_cross_entropy(&logits, &y_train_t.index_select(&idx, 0)?, Some(&weights))?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            backward_and_step(&loss, &all_vars, cfg.grad_clip, &mut opt, cfg.lr)?;
            total += value;
        }
        Ok(total / steps.max(1) as f64)
    };
    let validate = || -> Result<Validation> {
        let logits = probe_eval.forward(&x_val)?;
        Ok(Validation {
            loss: validation_loss(&logits, &y_val, &weights)?,
            macro_f1: macro_f1(&y_val, &argmax_rows(&logits)?, num_classes)?,
        })
    };
    let training = train_with_early_stopping(
        StoppingRule::of(cfg, batches_per_epoch),
        &all_vars,
        train_steps,
        validate,
    )?;
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
