//! A pretraining run's history read back from its `metrics.jsonl` (so a resumed or reused run
//! reports everything it did, not only its last session). Time to validation targets over seeds
//! is `train::target`.

use crate::train::run::{MetricsRecord, RunDir};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// The `metrics.jsonl` keys of the held-out pretext accuracies of ssl_multitask, in the order
/// arrow of time, permutation, time warp.
pub const PRETEXT_KEYS: [&str; 3] = ["pretext_acc_aot", "pretext_acc_permute", "pretext_acc_warp"];

/// Everything the report needs from one pretraining run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunHistory {
    /// Steps completed.
    pub steps: u64,
    /// Wall seconds from the first step to the last record (probes and checkpoints included).
    pub wall_s: f64,
    /// Seconds spent in training steps only (`train_s` of the last record).
    pub train_s: f64,
    /// Loss of every logged step, in step order.
    #[serde(skip)]
    pub losses: Vec<f64>,
    /// Seconds of every completed epoch.
    pub epoch_seconds: Vec<f64>,
    /// RankMe at each checkpoint: `(step, rankme)`.
    pub rankme: Vec<(u64, f64)>,
    /// Validation probe scores: `(step, train_s, val_knn_f1)`.
    pub validation: Vec<(u64, f64, f64)>,
    /// ssl_multitask: held-out pretext accuracy at each validation point and at the end:
    /// `(step, [arrow of time, permutation, time warp])` (empty for the other methods).
    pub pretext: Vec<(u64, [f64; 3])>,
}

impl RunHistory {
    /// Reads `run_dir/metrics.jsonl`.
    pub fn read(run_dir: &Path) -> Result<Self> {
        let run = RunDir::open_read(run_dir)?;
        let records = run
            .read_metrics()
            .with_context(|| format!("reading the metrics of {}", run_dir.display()))?;
        Ok(Self::from_records(&records))
    }

    /// Builds the history from metrics records (in step order).
    pub fn from_records(records: &[MetricsRecord]) -> Self {
        let mut h = RunHistory::default();
        for r in records {
            h.steps = r.step;
            h.wall_s = r.wall_s;
            h.losses.push(r.loss);
            if let Some(t) = r.extra.get("train_s") {
                h.train_s = *t;
            }
            if let Some(e) = r.extra.get("epoch_seconds") {
                h.epoch_seconds.push(*e);
            }
            if let Some(v) = r.extra.get("rankme") {
                h.rankme.push((r.step, *v));
            }
            if let (Some(v), Some(t)) = (r.extra.get("val_knn_f1"), r.extra.get("train_s")) {
                h.validation.push((r.step, *t, *v));
            }
            if let [Some(a), Some(p), Some(w)] = PRETEXT_KEYS.map(|k| r.extra.get(k)) {
                h.pretext.push((r.step, [*a, *p, *w]));
            }
        }
        h
    }

    /// The last held-out pretext accuracies `[arrow of time, permutation, time warp]` (at the end
    /// of a finished run); `None` when the run logged none (not ssl_multitask, or scoring off).
    pub fn pretext_accuracy(&self) -> Option<[f64; 3]> {
        self.pretext.last().map(|p| p.1)
    }

    /// One task's held-out accuracy curve `(step, accuracy)`: task 0 arrow of time, 1
    /// permutation, 2 time warp (`None` for another index).
    pub fn pretext_series(&self, task: usize) -> Option<Vec<(u64, f64)>> {
        (task < 3).then(|| self.pretext.iter().map(|(s, a)| (*s, a[task])).collect())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn record(step: u64, train_s: f64, val: Option<f64>) -> MetricsRecord {
        let mut extra = HashMap::new();
        extra.insert("train_s".to_string(), train_s);
        if let Some(v) = val {
            extra.insert("val_knn_f1".to_string(), v);
        }
        MetricsRecord {
            step,
            epoch: 0,
            loss: 1.0 / step as f64,
            lr: 1e-3,
            grad_norm: 1.0,
            windows_per_s: 10.0,
            wall_s: train_s * 1.1,
            extra,
        }
    }

    #[test]
    fn history_collects_validation_points_and_the_last_training_time() {
        let recs = vec![
            record(1, 0.5, None),
            record(2, 1.0, Some(0.3)),
            record(3, 1.5, None),
            record(4, 2.0, Some(0.5)),
        ];
        let h = RunHistory::from_records(&recs);
        assert_eq!(h.steps, 4);
        assert_eq!(h.losses.len(), 4);
        assert_eq!(h.validation, vec![(2, 1.0, 0.3), (4, 2.0, 0.5)]);
        assert!((h.train_s - 2.0).abs() < 1e-12);
        assert!((h.wall_s - 2.2).abs() < 1e-12);
    }

    #[test]
    fn pretext_accuracies_are_read_only_from_records_with_all_three() {
        let mut recs = vec![
            record(1, 0.5, None),
            record(2, 1.0, None),
            record(3, 1.5, None),
        ];
        for (r, acc) in recs.iter_mut().zip([[0.5, 0.6, 0.7], [0.55, 0.65, 0.75]]) {
            for (k, v) in PRETEXT_KEYS.iter().zip(acc) {
                r.extra.insert(k.to_string(), v);
            }
        }
        // Record 3 lacks the permutation accuracy: not a pretext point.
        recs[2].extra.insert(PRETEXT_KEYS[0].to_string(), 0.9);
        let h = RunHistory::from_records(&recs);
        assert_eq!(
            h.pretext,
            vec![(1, [0.5, 0.6, 0.7]), (2, [0.55, 0.65, 0.75])]
        );
        assert_eq!(h.pretext_accuracy(), Some([0.55, 0.65, 0.75]));
        assert_eq!(h.pretext_series(2), Some(vec![(1, 0.7), (2, 0.75)]));
        assert_eq!(h.pretext_series(3), None);
        assert_eq!(
            RunHistory::from_records(&recs[..0]).pretext_accuracy(),
            None
        );
    }
}
