//! Class-weighted cross-entropy for downstream training, and inverse-frequency class weights.

use candle_core::{DType, Result, Tensor, D};
use flowfm_core::CoreError;

/// Cross-entropy with optional per-class weights, averaged as PyTorch does with `weight=`:
/// `sum_i w[y_i] (-log softmax(logits_i)[y_i]) / sum_i w[y_i]`. Without weights, the plain mean.
///
/// # Shapes
/// - `logits`: `(batch, classes)`
/// - `targets`: `(batch,)` integer class indices (u32 or i64)
/// - `class_weights`: `classes` numbers, or `None`
/// - returns a scalar `()`
pub fn weighted_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    class_weights: Option<&[f64]>,
) -> Result<Tensor> {
    let (batch, classes) = logits.dims2()?;
    if targets.dims() != [batch] {
        candle_core::bail!(
            "targets {:?} for logits {:?}",
            targets.shape(),
            logits.shape()
        );
    }
    let idx: Vec<i64> = targets.to_dtype(DType::I64)?.to_vec1()?;
    if let Some((i, &y)) = idx
        .iter()
        .enumerate()
        .find(|(_, &y)| y < 0 || y as usize >= classes)
    {
        candle_core::bail!("target[{i}] = {y} is not a class in 0..{classes}");
    }
    let idx_t = Tensor::from_vec(
        idx.iter().map(|&y| y as u32).collect::<Vec<_>>(),
        (batch, 1),
        logits.device(),
    )?;
    let nll = candle_nn::ops::log_softmax(logits, D::Minus1)?
        .gather(&idx_t, 1)?
        .squeeze(1)?
        .neg()?;
    match class_weights {
        None => nll.mean_all(),
        Some(w) => {
            if w.len() != classes {
                return Err(CoreError::InvalidParameter {
                    name: "class_weights",
                    reason: format!("{} weights for {classes} classes", w.len()),
                }
                .into());
            }
            if let Some((c, v)) = w
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(CoreError::InvalidParameter {
                    name: "class_weights",
                    reason: format!("weight[{c}] = {v} is not finite and >= 0"),
                }
                .into());
            }
            let per: Vec<f64> = idx.iter().map(|&y| w[y as usize]).collect();
            let total: f64 = per.iter().sum();
            if total <= 0.0 {
                candle_core::bail!("the targets of this batch all have class weight 0");
            }
            let per = Tensor::from_vec(per, batch, logits.device())?.to_dtype(nll.dtype())?;
            nll.mul(&per)?.sum_all()?.affine(1.0 / total, 0.0)
        }
    }
}

/// Inverse-frequency ("balanced") class weights `w_c = N / (K n_c)`: every class then carries the
/// same total weight. Classes absent from `labels` get weight 0 (they never occur as targets).
pub fn inverse_frequency_weights(
    labels: &[usize],
    num_classes: usize,
) -> std::result::Result<Vec<f64>, CoreError> {
    if num_classes == 0 {
        return Err(CoreError::InvalidParameter {
            name: "num_classes",
            reason: "must be at least 1".into(),
        });
    }
    if labels.is_empty() {
        return Err(CoreError::InvalidParameter {
            name: "labels",
            reason: "no labels to count".into(),
        });
    }
    let mut counts = vec![0usize; num_classes];
    for (i, &y) in labels.iter().enumerate() {
        match counts.get_mut(y) {
            Some(c) => *c += 1,
            None => {
                return Err(CoreError::InvalidParameter {
                    name: "labels",
                    reason: format!("label[{i}] = {y} is not a class in 0..{num_classes}"),
                })
            }
        }
    }
    let n = labels.len() as f64;
    let k = num_classes as f64;
    Ok(counts
        .iter()
        .map(|&c| if c == 0 { 0.0 } else { n / (k * c as f64) })
        .collect())
}
