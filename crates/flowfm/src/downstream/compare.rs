//! Paired comparisons of two protocol runs on the same folds: the per-fold macro F1 of method A
//! against method B, a bootstrap interval of the mean difference and the Wilcoxon signed-rank
//! p-value (flowfm-eval's `compare_paired`), and the verdict at alpha 0.05. A comparison is only
//! made when both runs were tested on exactly the same folds (same held-out subjects, in order).

use super::protocol::ProtocolResult;
use anyhow::{bail, Result};
use flowfm_core::SeededRng;
use flowfm_eval::stats::{compare_paired, BootstrapConfig, Direction, PairedComparison};
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

/// Compares the per-fold macro F1 of `a` and `b` (higher is better). The bootstrap draws from
/// `rng`. An error unless both were tested on the same datasets and folds.
pub fn compare_folds(
    a: &ProtocolResult,
    b: &ProtocolResult,
    bootstrap: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<FoldComparison> {
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
    let values =
        |r: &ProtocolResult| -> Vec<f64> { r.folds.iter().map(|f| f.report.macro_f1).collect() };
    let (values_a, values_b) = (values(a), values(b));
    let paired = compare_paired(
        &values_a,
        &values_b,
        Direction::HigherIsBetter,
        bootstrap,
        rng,
    )?;
    Ok(FoldComparison {
        dataset: a.dataset.clone(),
        a: run_label(a),
        b: run_label(b),
        metric: "macro_f1".into(),
        values_a,
        values_b,
        paired,
    })
}
