//! The study's typed rows: what each stage measured, as the report shows it.

use crate::train::history::RunHistory;
use serde::Serialize;

/// One row of the data table.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetRow {
    /// Name.
    pub name: String,
    /// Subjects.
    pub subjects: usize,
    /// Windows.
    pub windows: usize,
    /// Labelled windows.
    pub labelled: usize,
    /// Classes.
    pub classes: usize,
    /// Whether the store was reused.
    pub reused: bool,
    /// Seconds to read and prepare (0 when reused).
    pub prepare_s: f64,
}

/// One dataset's share of the pretraining pool.
#[derive(Clone, Debug, Serialize)]
pub struct PoolSource {
    /// Dataset.
    pub dataset: String,
    /// Its pretraining subjects.
    pub subjects: usize,
    /// Windows of those subjects in the pool.
    pub windows: usize,
    /// Of which unlabelled (transitions, gaps, unannotated stretches).
    pub unlabelled: usize,
    /// Step between window starts (half a window: windows overlap).
    pub hop_secs: f64,
}

/// One pretraining run in the report (read from its `metrics.jsonl`, so a reused run reports
/// its whole history).
#[derive(Clone, Debug, Serialize)]
pub struct PretrainRow {
    /// Method.
    pub method: String,
    /// Seed of the run.
    pub seed: u64,
    /// Steps.
    pub steps: u64,
    /// Windows in the pool.
    pub pool_windows: usize,
    /// Wall seconds of the whole run (probes and checkpoints included).
    pub wall_s: f64,
    /// Seconds spent in training steps.
    pub train_s: f64,
    /// Mean seconds per epoch (over completed epochs).
    pub epoch_s: Option<f64>,
    /// Throughput over the training steps.
    pub windows_per_s: f64,
    /// Mean loss of the first and last tenth of the steps.
    pub loss_first: f64,
    /// See `loss_first`.
    pub loss_last: f64,
    /// Loss of every step (for the plot).
    #[serde(skip)]
    pub losses: Vec<f64>,
    /// RankMe of the encoder at each checkpoint `(step, rankme)`.
    pub rankme: Vec<(u64, f64)>,
    /// Validation probe `(step, train_s, val_knn_f1)`.
    pub validation: Vec<(u64, f64, f64)>,
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The report row of a run from its history.
pub fn pretrain_row(
    method: &str,
    seed: u64,
    h: &RunHistory,
    pool: usize,
    batch_size: usize,
) -> PretrainRow {
    let k = (h.losses.len() / 10).max(1);
    PretrainRow {
        method: method.into(),
        seed,
        steps: h.steps,
        pool_windows: pool,
        wall_s: h.wall_s,
        train_s: h.train_s,
        epoch_s: if h.epoch_seconds.is_empty() {
            None
        } else {
            Some(mean(&h.epoch_seconds))
        },
        windows_per_s: if h.train_s > 0.0 {
            (h.steps as f64 * batch_size as f64) / h.train_s
        } else {
            f64::NAN
        },
        loss_first: mean(&h.losses[..k.min(h.losses.len())]),
        loss_last: mean(&h.losses[h.losses.len().saturating_sub(k)..]),
        losses: h.losses.clone(),
        rankme: h.rankme.clone(),
        validation: h.validation.clone(),
    }
}
