//! A pretraining run's history read back from its `metrics.jsonl` (so a resumed or reused run
//! reports everything it did, not only its last session), and the time each method needed to
//! reach a validation target.

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

/// When one method first reached the validation target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetRow {
    /// Method.
    pub method: String,
    /// Best validation score over the run.
    pub best: f64,
    /// First probed step at which the score was at least the target (`None`: never).
    pub step: Option<u64>,
    /// Training seconds (steps only) to that probe.
    pub train_s: Option<f64>,
    /// Training seconds of the whole run.
    pub total_train_s: f64,
}

/// Time to a validation target for every method, with the flow/diffusion ratio.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimeToTargetSummary {
    /// The validation metric.
    pub metric: String,
    /// The target: `fraction` of the lower of flow's and diffusion's best scores, so both can
    /// reach it.
    pub target: f64,
    /// See `target`.
    pub fraction: f64,
    /// One row per method that logged validation scores.
    pub rows: Vec<TargetRow>,
    /// Flow's training time to target over diffusion's (`None` if either never reached it).
    pub flow_over_diffusion: Option<f64>,
}

/// A method's validation curve: `(method, [(step, train_s, score)], total train_s)`.
pub type MethodCurve = (String, Vec<(u64, f64, f64)>, f64);

/// Computes the time to target from `(method, validation curve)` pairs, each curve being
/// `(step, train_s, score)` in step order with higher scores better. `None` when neither
/// `flowfm` nor `diffusion` has a curve (no target can be set).
pub fn time_to_target(
    curves: &[MethodCurve],
    fraction: f64,
) -> Result<Option<TimeToTargetSummary>> {
    let best = |m: &str| {
        curves
            .iter()
            .find(|(name, c, _)| name == m && !c.is_empty())
            .map(|(_, c, _)| c.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max))
    };
    let anchor = match (best("flowfm"), best("diffusion")) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Ok(None),
    };
    let target = fraction * anchor;
    let mut rows = Vec::new();
    for (method, curve, total) in curves {
        if curve.is_empty() {
            continue;
        }
        let mut prev = 0.0;
        let mut intervals = Vec::with_capacity(curve.len());
        for p in curve {
            intervals.push((p.1 - prev).max(0.0));
            prev = p.1;
        }
        let values: Vec<f64> = curve.iter().map(|p| p.2).collect();
        let t =
            flowfm_eval::TimeToTarget::from_curve("val_knn_f1", target, true, &intervals, &values)?;
        rows.push(TargetRow {
            method: method.clone(),
            best: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            step: t.epoch.map(|i| curve[i].0),
            train_s: t.epoch.map(|i| curve[i].1),
            total_train_s: *total,
        });
    }
    let time = |m: &str| rows.iter().find(|r| r.method == m).and_then(|r| r.train_s);
    let flow_over_diffusion = match (time("flowfm"), time("diffusion")) {
        (Some(f), Some(d)) if d > 0.0 => Some(f / d),
        _ => None,
    };
    Ok(Some(TimeToTargetSummary {
        metric: "val_knn_f1".into(),
        target,
        fraction,
        rows,
        flow_over_diffusion,
    }))
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

    #[test]
    fn the_target_is_a_fraction_of_the_weaker_best_and_times_are_read_at_first_crossing() {
        // Flow: 0.2 at 10 s, 0.6 at 20 s, 0.7 at 30 s. Diffusion: 0.1 at 12 s, 0.4 at 24 s, 0.5 at 36 s.
        let curves = vec![
            (
                "flowfm".to_string(),
                vec![(10, 10.0, 0.2), (20, 20.0, 0.6), (30, 30.0, 0.7)],
                31.0,
            ),
            (
                "diffusion".to_string(),
                vec![(10, 12.0, 0.1), (20, 24.0, 0.4), (30, 36.0, 0.5)],
                37.0,
            ),
            (
                "ssl_multitask".to_string(),
                vec![(10, 4.0, 0.45), (20, 8.0, 0.46)],
                9.0,
            ),
        ];
        let s = time_to_target(&curves, 0.9).unwrap().unwrap();
        // Weaker best is diffusion's 0.5, target 0.45.
        assert!((s.target - 0.45).abs() < 1e-12);
        let row = |m: &str| s.rows.iter().find(|r| r.method == m).unwrap().clone();
        assert_eq!(row("flowfm").step, Some(20));
        assert_eq!(row("flowfm").train_s, Some(20.0));
        assert_eq!(row("diffusion").step, Some(30));
        assert_eq!(row("diffusion").train_s, Some(36.0));
        assert_eq!(row("ssl_multitask").step, Some(10));
        assert!((s.flow_over_diffusion.unwrap() - 20.0 / 36.0).abs() < 1e-12);
    }

    #[test]
    fn a_method_that_never_reaches_the_target_has_no_time_and_no_ratio() {
        let curves = vec![
            ("flowfm".to_string(), vec![(10, 10.0, 0.2)], 10.0),
            ("diffusion".to_string(), vec![(10, 10.0, 0.8)], 10.0),
            ("ssl_multitask".to_string(), vec![(10, 10.0, 0.1)], 10.0),
        ];
        let s = time_to_target(&curves, 1.0).unwrap().unwrap();
        assert!((s.target - 0.2).abs() < 1e-12);
        let ssl = s.rows.iter().find(|r| r.method == "ssl_multitask").unwrap();
        assert_eq!(ssl.step, None);
        assert_eq!(ssl.train_s, None);
        assert!(s.flow_over_diffusion.is_some());
        assert!(time_to_target(&[], 0.9).unwrap().is_none());
    }
}
