//! Paired comparisons of protocol runs on the same folds: the per-fold macro F1 of method A
//! against method B, a bootstrap interval of the mean difference and the Wilcoxon signed-rank
//! p-value (flowfm-eval's `compare_paired`), and the verdict at alpha 0.05. A comparison is only
//! made when both were tested on exactly the same folds (same held-out subjects, in order).
//! Repeated runs (one per seed) pair seed by seed and fold by fold ([`compare_runs`]), and
//! [`summarise_runs`] gives a method's mean +- sd over seeds x folds with bootstrap intervals.

use super::protocol::ProtocolResult;
use anyhow::{bail, Result};
use flowfm_core::SeededRng;
use flowfm_eval::stats::{
    bootstrap_mean, compare_paired, mean_sd, BootstrapConfig, Direction, Interval, MeanSd,
    PairedComparison,
};
use serde::{Deserialize, Serialize};

/// Method A against method B on one dataset, fold by fold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldComparison {
    /// Dataset.
    pub dataset: String,
    /// Method A and its mode (`flowfm linear_probe`).
    pub a: String,
    /// Method B and its mode.
    pub b: String,
    /// The metric compared (`macro_f1`).
    pub metric: String,
    /// Seeds (repeated runs) paired; the values are seed by seed, fold by fold.
    #[serde(default = "one")]
    pub seeds: usize,
    /// Per-fold values of A, in fold order.
    pub values_a: Vec<f64>,
    /// Per-fold values of B, in fold order.
    pub values_b: Vec<f64>,
    /// Mean difference A - B with its interval, the Wilcoxon test, and the verdict for A.
    pub paired: PairedComparison,
}

/// The label of a run in comparisons: method and mode.
pub fn run_label(r: &ProtocolResult) -> String {
    format!("{} {}", r.method, r.config.mode.name())
}

fn one() -> usize {
    1
}

/// Compares the per-fold macro F1 of `a` and `b` (higher is better). The bootstrap draws from
/// `rng`. An error unless both were tested on the same datasets and folds.
pub fn compare_folds(
    a: &ProtocolResult,
    b: &ProtocolResult,
    bootstrap: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<FoldComparison> {
    compare_runs(&[a], &[b], bootstrap, rng)
}

/// Compares repeated runs of A and B (one per seed, matched by `config.seed`), pairing seed by
/// seed and fold by fold: every seed of A needs its run of B on exactly the same folds.
pub fn compare_runs(
    a: &[&ProtocolResult],
    b: &[&ProtocolResult],
    bootstrap: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<FoldComparison> {
    let (Some(first_a), Some(first_b)) = (a.first(), b.first()) else {
        bail!("a comparison needs at least one run of each method");
    };
    let mut values_a = Vec::new();
    let mut values_b = Vec::new();
    for ra in a {
        let Some(rb) = b.iter().find(|r| r.config.seed == ra.config.seed) else {
            bail!(
                "{} on `{}` has a run with seed {} that {} lacks",
                run_label(ra),
                ra.dataset,
                ra.config.seed,
                run_label(first_b)
            );
        };
        check_same_folds(ra, rb)?;
        values_a.extend(ra.folds.iter().map(|f| f.report.macro_f1));
        values_b.extend(rb.folds.iter().map(|f| f.report.macro_f1));
    }
    if a.len() != b.len() {
        bail!(
            "{} has {} seeds and {} has {} on `{}`; a paired test needs the same seeds",
            run_label(first_a),
            a.len(),
            run_label(first_b),
            b.len(),
            first_a.dataset
        );
    }
    let paired = compare_paired(
        &values_a,
        &values_b,
        Direction::HigherIsBetter,
        bootstrap,
        rng,
    )?;
    Ok(FoldComparison {
        dataset: first_a.dataset.clone(),
        a: run_label(first_a),
        b: run_label(first_b),
        metric: "macro_f1".into(),
        seeds: a.len(),
        values_a,
        values_b,
        paired,
    })
}

fn check_same_folds(a: &ProtocolResult, b: &ProtocolResult) -> Result<()> {
    if a.dataset != b.dataset {
        bail!(
            "cannot pair {} on `{}` with {} on `{}`",
            run_label(a),
            a.dataset,
            run_label(b),
            b.dataset
        );
    }
    let folds = |r: &ProtocolResult| -> Vec<Vec<i64>> {
        r.folds.iter().map(|f| f.test_subjects.clone()).collect()
    };
    if folds(a) != folds(b) {
        bail!(
            "{} and {} on `{}` were tested on different folds; a paired test needs the same folds",
            run_label(a),
            run_label(b),
            a.dataset
        );
    }
    Ok(())
}

/// A method's downstream result over its repeated runs: every fold of every seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Dataset.
    pub dataset: String,
    /// Method and mode (`flowfm linear_probe`).
    pub label: String,
    /// Seeds (runs).
    pub seeds: usize,
    /// Folds per seed (the protocol's).
    pub folds: usize,
    /// Macro F1 over seeds x folds.
    pub macro_f1: MeanSd,
    /// 95 % bootstrap interval of the mean macro F1.
    pub macro_f1_interval: Interval,
    /// Cohen's kappa over seeds x folds (folds where it is undefined left out).
    pub kappa: Option<MeanSd>,
    /// 95 % bootstrap interval of the mean kappa.
    pub kappa_interval: Option<Interval>,
}

/// Summarises repeated runs of one method on one dataset (at least one run, same dataset).
pub fn summarise_runs(
    runs: &[&ProtocolResult],
    bootstrap: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<RunSummary> {
    let Some(first) = runs.first() else {
        bail!("no runs to summarise");
    };
    if let Some(r) = runs.iter().find(|r| r.dataset != first.dataset) {
        bail!(
            "runs of {} on `{}` and `{}` cannot be summarised together",
            run_label(first),
            first.dataset,
            r.dataset
        );
    }
    let f1: Vec<f64> = (runs.iter())
        .flat_map(|r| r.folds.iter().map(|f| f.report.macro_f1))
        .collect();
    let kappa: Vec<f64> = (runs.iter())
        .flat_map(|r| r.folds.iter().map(|f| f.report.cohen_kappa))
        .filter(|k| k.is_finite())
        .collect();
    let interval = |v: &[f64], rng: &mut SeededRng| -> Result<Interval> {
        Ok(bootstrap_mean(v, bootstrap, rng)?)
    };
    Ok(RunSummary {
        dataset: first.dataset.clone(),
        label: run_label(first),
        seeds: runs.len(),
        folds: first.folds.len(),
        macro_f1: mean_sd(&f1)?,
        macro_f1_interval: interval(&f1, rng)?,
        kappa: if kappa.is_empty() {
            None
        } else {
            Some(mean_sd(&kappa)?)
        },
        kappa_interval: if kappa.is_empty() {
            None
        } else {
            Some(interval(&kappa, rng)?)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downstream::protocol::FoldRecord;
    use crate::downstream::{DownstreamConfig, Mode};
    use flowfm_eval::{ConfusionMatrix, FoldResults};

    /// A run of `method` with `seed` whose folds test subjects 1, 2, ... and score `f1` (the
    /// report's macro F1 is overwritten; the confusion matrix is a placeholder).
    fn run(method: &str, seed: u64, f1: &[f64]) -> ProtocolResult {
        let cm = ConfusionMatrix::from_predictions(&[0, 1], &[0, 1], 2).unwrap();
        let mut results = FoldResults::new("d", method);
        let folds = (f1.iter().enumerate())
            .map(|(i, &v)| {
                results.push(format!("fold {i}"), &cm).unwrap();
                let mut report = cm.report();
                report.macro_f1 = v;
                report.cohen_kappa = 2.0 * v - 1.0;
                FoldRecord {
                    name: format!("fold {i}"),
                    train_subjects: vec![],
                    val_subjects: vec![],
                    test_subjects: vec![i as i64 + 1],
                    train_windows: 0,
                    val_windows: 0,
                    test_windows: 0,
                    class_weights: vec![],
                    training: None,
                    report,
                    wall_s: 0.0,
                }
            })
            .collect();
        let summary = results.summary().unwrap();
        ProtocolResult {
            dataset: "d".into(),
            method: method.into(),
            encoder: "none".into(),
            config: DownstreamConfig {
                mode: Mode::LinearProbe,
                seed,
                ..DownstreamConfig::default()
            },
            class_names: vec!["a".into(), "b".into()],
            labelled_windows: 0,
            folds,
            results,
            summary,
            cache_wall_s: 0.0,
            wall_s: 0.0,
        }
    }

    #[test]
    fn repeated_runs_pair_seed_by_seed_and_fold_by_fold() {
        let a = [run("flowfm", 0, &[0.5, 0.6]), run("flowfm", 1, &[0.7, 0.8])];
        // B's seeds in the other order: pairing is by seed, not by position.
        let b = [run("x", 1, &[0.6, 0.7]), run("x", 0, &[0.4, 0.5])];
        let mut rng = SeededRng::new(0);
        let c = compare_runs(
            &[&a[0], &a[1]],
            &[&b[0], &b[1]],
            &BootstrapConfig::default(),
            &mut rng,
        )
        .unwrap();
        assert_eq!(c.seeds, 2);
        assert_eq!(c.values_a, vec![0.5, 0.6, 0.7, 0.8]);
        assert_eq!(c.values_b, vec![0.4, 0.5, 0.6, 0.7]);
        assert_eq!(c.paired.n, 4);
        assert!((c.paired.difference.estimate - 0.1).abs() < 1e-12);
        // A seed of A that B lacks, or other folds, is an error, never a silent mismatch.
        let lone = run("x", 2, &[0.1, 0.2]);
        assert!(compare_runs(&[&a[0]], &[&lone], &BootstrapConfig::default(), &mut rng).is_err());
        let other_folds = run("x", 0, &[0.1, 0.2, 0.3]);
        assert!(compare_runs(
            &[&a[0]],
            &[&other_folds],
            &BootstrapConfig::default(),
            &mut rng
        )
        .is_err());
    }

    #[test]
    fn summaries_are_over_seeds_times_folds() {
        let a = [run("flowfm", 0, &[0.5, 0.6]), run("flowfm", 1, &[0.7, 0.8])];
        let mut rng = SeededRng::new(1);
        let s = summarise_runs(&[&a[0], &a[1]], &BootstrapConfig::default(), &mut rng).unwrap();
        assert_eq!((s.seeds, s.folds), (2, 2));
        assert!((s.macro_f1.mean - 0.65).abs() < 1e-12);
        // Sample sd of 0.5, 0.6, 0.7, 0.8.
        assert!((s.macro_f1.sd.unwrap() - (0.05f64 / 3.0).sqrt()).abs() < 1e-12);
        let iv = &s.macro_f1_interval;
        assert!(iv.lower >= 0.5 && iv.upper <= 0.8 && iv.lower < 0.65 && 0.65 < iv.upper);
        assert!((s.kappa.unwrap().mean - 0.3).abs() < 1e-12);
    }
}
