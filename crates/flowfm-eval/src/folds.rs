//! Aggregation over cross-validation folds: [`FoldResults`] collects one [`ClassificationReport`]
//! per fold and summarises every metric as mean +- sample sd ([`MeanSd`], from [`crate::stats`]).

use serde::{Deserialize, Serialize};

use crate::classification::{ClassificationReport, ConfusionMatrix};
use crate::error::{EvalError, Result};
use crate::markdown;

/// Re-exported from [`crate::stats`], where they live (kept here so `folds::MeanSd` paths compile).
pub use crate::stats::{mean_sd, MeanSd};

/// The metrics of one fold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldMetrics {
    /// What identifies the fold (`"fold 3"`, a held-out subject id).
    pub name: String,
    /// Its metrics.
    pub report: ClassificationReport,
}

/// One method on one dataset, over folds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldResults {
    /// Dataset name.
    pub dataset: String,
    /// Method name (`FlowFM (linear probe)`, `Random forest`).
    pub method: String,
    /// Per-fold metrics, in the order they were added.
    pub folds: Vec<FoldMetrics>,
}

/// Mean +- sd over folds of every metric.
///
/// A metric that is undefined (`NaN`) in a fold is left out of its mean; its `n` then says over
/// how many folds it was averaged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldSummary {
    /// Dataset name.
    pub dataset: String,
    /// Method name.
    pub method: String,
    /// Number of folds.
    pub folds: usize,
    /// Macro F1 (the primary metric).
    pub macro_f1: MeanSd,
    /// Cohen's kappa.
    pub cohen_kappa: Option<MeanSd>,
    /// Accuracy.
    pub accuracy: MeanSd,
    /// Balanced accuracy.
    pub balanced_accuracy: MeanSd,
    /// Per-class F1 over the folds where the class occurs; `None` if it never does.
    pub per_class_f1: Vec<Option<MeanSd>>,
}

impl FoldResults {
    /// Empty results for `method` on `dataset`.
    pub fn new(dataset: impl Into<String>, method: impl Into<String>) -> Self {
        Self {
            dataset: dataset.into(),
            method: method.into(),
            folds: Vec::new(),
        }
    }

    /// Adds a fold from its confusion matrix; every fold must have the same number of classes.
    pub fn push(&mut self, name: impl Into<String>, confusion: &ConfusionMatrix) -> Result<()> {
        if let Some(first) = self.folds.first() {
            let k = first.report.confusion.num_classes();
            if k != confusion.num_classes() {
                return Err(EvalError::mismatch(
                    "folds[0]",
                    format!("folds[{}]", self.folds.len()),
                    format!("{k} vs {} classes", confusion.num_classes()),
                ));
            }
        }
        if confusion.total() == 0 {
            return Err(EvalError::invalid(
                format!("folds[{}]", self.folds.len()),
                "empty confusion matrix (no test windows)",
            ));
        }
        self.folds.push(FoldMetrics {
            name: name.into(),
            report: confusion.report(),
        });
        Ok(())
    }

    /// The confusion matrix pooled over all folds.
    pub fn pooled_confusion(&self) -> Result<ConfusionMatrix> {
        let first = self
            .folds
            .first()
            .ok_or_else(|| EvalError::invalid("folds", "no folds"))?;
        let mut m = ConfusionMatrix::new(first.report.confusion.num_classes())?;
        for f in &self.folds {
            m.merge(&f.report.confusion)?;
        }
        Ok(m)
    }

    /// Mean +- sd of every metric over the folds.
    pub fn summary(&self) -> Result<FoldSummary> {
        if self.folds.is_empty() {
            return Err(EvalError::invalid("folds", "no folds to summarise"));
        }
        let defined = |get: &dyn Fn(&ClassificationReport) -> f64| -> Option<MeanSd> {
            let v: Vec<f64> = self
                .folds
                .iter()
                .map(|f| get(&f.report))
                .filter(|v| v.is_finite())
                .collect();
            mean_sd(&v).ok()
        };
        let required = |name: &str, m: Option<MeanSd>| {
            m.ok_or_else(|| EvalError::invalid(name, "undefined in every fold"))
        };
        let k = self.folds[0].report.confusion.num_classes();
        let per_class_f1 = (0..k)
            .map(|c| defined(&|r| r.per_class[c].f1.unwrap_or(f64::NAN)))
            .collect();
        Ok(FoldSummary {
            dataset: self.dataset.clone(),
            method: self.method.clone(),
            folds: self.folds.len(),
            macro_f1: required("macro_f1", defined(&|r| r.macro_f1))?,
            cohen_kappa: defined(&|r| r.cohen_kappa),
            accuracy: required("accuracy", defined(&|r| r.accuracy))?,
            balanced_accuracy: required("balanced_accuracy", defined(&|r| r.balanced_accuracy))?,
            per_class_f1,
        })
    }

    /// The header matching [`FoldResults::markdown_row`] (two lines, no trailing newline).
    pub fn markdown_header() -> String {
        "| Dataset | Method | Folds | Macro F1 | Cohen's kappa | Accuracy | Balanced accuracy |\n\
         |---|---|---:|---:|---:|---:|---:|"
            .to_string()
    }

    /// One Markdown table row: `mean ± sd` over folds with three decimals.
    pub fn markdown_row(&self) -> Result<String> {
        let s = self.summary()?;
        let kappa = s
            .cohen_kappa
            .as_ref()
            .map_or_else(|| "n/a".to_string(), |m| markdown::mean_sd(m, 3));
        Ok(format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            markdown::escape(&s.dataset),
            markdown::escape(&s.method),
            s.folds,
            markdown::mean_sd(&s.macro_f1, 3),
            kappa,
            markdown::mean_sd(&s.accuracy, 3),
            markdown::mean_sd(&s.balanced_accuracy, 3),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    const T: Tolerance = Tolerance::F64;

    #[test]
    fn fold_results_average_per_fold_metrics_and_render_a_row() {
        let mut r = FoldResults::new("UCI|HAPT", "Random forest");
        // fold A: perfect (macro F1 1); fold B: accuracy 1/2, F1 of both classes 1/2.
        let a = ConfusionMatrix::from_counts(vec![vec![2, 0], vec![0, 2]]).unwrap();
        let b = ConfusionMatrix::from_counts(vec![vec![1, 1], vec![1, 1]]).unwrap();
        r.push("s1", &a).unwrap();
        r.push("s2", &b).unwrap();
        let s = r.summary().unwrap();
        assert!(T.close(s.macro_f1.mean, 0.75));
        // sample sd of (1, 0.5) = |1 - 0.5| / sqrt(2)
        assert!(T.close(s.macro_f1.sd.unwrap(), 0.5 / 2f64.sqrt()));
        // kappa: 1 and 0
        let kappa = s.cohen_kappa.unwrap();
        assert!(T.close(kappa.mean, 0.5));
        let row = r.markdown_row().unwrap();
        assert_eq!(
            row,
            "| UCI\\|HAPT | Random forest | 2 | 0.750 ± 0.354 | 0.500 ± 0.707 | 0.750 ± 0.354 | 0.750 ± 0.354 |"
        );
        assert_eq!(
            FoldResults::markdown_header()
                .lines()
                .next()
                .map(|l| l.matches('|').count()),
            Some(row.matches('|').count() - 1)
        );
        assert_eq!(
            r.pooled_confusion().unwrap().counts(),
            &[vec![3, 1], vec![1, 3]]
        );
    }

    #[test]
    fn folds_with_different_class_counts_or_no_windows_are_rejected() {
        let mut r = FoldResults::new("d", "m");
        assert!(r.summary().is_err());
        r.push(
            "a",
            &ConfusionMatrix::from_counts(vec![vec![1, 0], vec![0, 1]]).unwrap(),
        )
        .unwrap();
        assert!(r.push("b", &ConfusionMatrix::new(3).unwrap()).is_err());
        assert!(r.push("c", &ConfusionMatrix::new(2).unwrap()).is_err());
    }

    #[test]
    fn class_missing_from_a_fold_is_averaged_over_the_folds_that_have_it() {
        let mut r = FoldResults::new("d", "m");
        r.push(
            "a",
            &ConfusionMatrix::from_counts(vec![vec![1, 0], vec![0, 1]]).unwrap(),
        )
        .unwrap();
        r.push(
            "b",
            &ConfusionMatrix::from_counts(vec![vec![2, 0], vec![0, 0]]).unwrap(),
        )
        .unwrap();
        let s = r.summary().unwrap();
        let c1 = s.per_class_f1[1].unwrap();
        assert_eq!(c1.n, 1);
        assert!(T.close(c1.mean, 1.0));
        assert_eq!(s.per_class_f1[0].unwrap().n, 2);
    }
}
