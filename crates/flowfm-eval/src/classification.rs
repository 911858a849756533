//! Classification metrics, all derived from one [`ConfusionMatrix`]: accuracy, balanced accuracy,
//! per-class precision / recall / F1, macro F1 (the primary downstream metric) and Cohen's kappa.
//!
//! # Classes absent from a fold
//!
//! A class can be absent from both the truth and the predictions of a fold (leave-one-subject-out
//! folds often lack activities). Its precision, recall and F1 are undefined and reported as `None`.
//! [`ConfusionMatrix::macro_f1`] averages over the classes that occur in the truth **or** the
//! predictions, which is what scikit-learn's `f1_score(y, p, average="macro")` does (labels = the
//! sorted union of `y` and `p`), and what `labels=` restricted to the classes present gives.
//! [`AbsentClassPolicy::CountAsZero`] instead reproduces `labels=range(K), zero_division=0`, which
//! scores every absent class as F1 = 0. Precision of a class that is never predicted and recall of
//! a class with no support are 0 (scikit-learn's `zero_division=0`).

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// Counts of (true class, predicted class) pairs over `K` classes; rows are truth, columns are
/// predictions (the scikit-learn layout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    num_classes: usize,
    counts: Vec<Vec<u64>>,
}

/// How [`ConfusionMatrix::macro_f1_with`] treats classes absent from both truth and predictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbsentClassPolicy {
    /// Leave them out of the mean (scikit-learn's default label set; the default here).
    Exclude,
    /// Count them as F1 = 0 (scikit-learn with `labels=range(K), zero_division=0`).
    CountAsZero,
}

/// Precision, recall and F1 of one class, with its support.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class index.
    pub class: usize,
    /// Number of windows whose true class is this one.
    pub support: u64,
    /// Number of windows predicted as this class.
    pub predicted: u64,
    /// `tp / (tp + fp)`; `None` when the class is absent from truth and predictions.
    pub precision: Option<f64>,
    /// `tp / (tp + fn)`; `None` when the class is absent from truth and predictions.
    pub recall: Option<f64>,
    /// `2 tp / (2 tp + fp + fn)`; `None` when the class is absent from truth and predictions.
    pub f1: Option<f64>,
}

/// Every classification metric of one evaluation, ready for a JSON report.
///
/// Undefined values (an empty matrix; kappa when both raters use a single class) are `NaN`, which
/// serde_json writes as `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Mean recall over the classes with support.
    pub balanced_accuracy: f64,
    /// Mean F1 over the classes present in truth or predictions.
    pub macro_f1: f64,
    /// Cohen's kappa.
    pub cohen_kappa: f64,
    /// Per-class metrics, one entry per class index.
    pub per_class: Vec<ClassMetrics>,
    /// The matrix the metrics come from.
    pub confusion: ConfusionMatrix,
}

impl ConfusionMatrix {
    /// An empty matrix over `num_classes` classes.
    pub fn new(num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(EvalError::invalid("num_classes", "must be at least 1"));
        }
        Ok(Self {
            num_classes,
            counts: vec![vec![0; num_classes]; num_classes],
        })
    }

    /// Counts the pairs `(truth[i], pred[i])`; every label must be below `num_classes`.
    pub fn from_predictions(truth: &[usize], pred: &[usize], num_classes: usize) -> Result<Self> {
        if truth.len() != pred.len() {
            return Err(EvalError::mismatch(
                "truth",
                "pred",
                format!("{} labels vs {} predictions", truth.len(), pred.len()),
            ));
        }
        let mut m = Self::new(num_classes)?;
        for (i, (&t, &p)) in truth.iter().zip(pred).enumerate() {
            if t >= num_classes {
                return Err(EvalError::invalid(
                    format!("truth[{i}]"),
                    format!("class {t} is not below num_classes = {num_classes}"),
                ));
            }
            if p >= num_classes {
                return Err(EvalError::invalid(
                    format!("pred[{i}]"),
                    format!("class {p} is not below num_classes = {num_classes}"),
                ));
            }
            m.counts[t][p] += 1;
        }
        Ok(m)
    }

    /// A matrix from its counts (`counts[truth][pred]`, square).
    pub fn from_counts(counts: Vec<Vec<u64>>) -> Result<Self> {
        let k = counts.len();
        if k == 0 {
            return Err(EvalError::invalid("counts", "needs at least one class"));
        }
        if let Some(i) = counts.iter().position(|r| r.len() != k) {
            return Err(EvalError::invalid(
                format!("counts[{i}]"),
                format!("row has {} entries, expected {k}", counts[i].len()),
            ));
        }
        Ok(Self {
            num_classes: k,
            counts,
        })
    }

    /// Adds one (truth, prediction) pair.
    pub fn add(&mut self, truth: usize, pred: usize) -> Result<()> {
        if truth >= self.num_classes || pred >= self.num_classes {
            return Err(EvalError::invalid(
                "label",
                format!(
                    "pair ({truth}, {pred}) out of range for {} classes",
                    self.num_classes
                ),
            ));
        }
        self.counts[truth][pred] += 1;
        Ok(())
    }

    /// Adds the counts of `other` (pooling folds).
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<()> {
        if other.num_classes != self.num_classes {
            return Err(EvalError::mismatch(
                "self",
                "other",
                format!("{} vs {} classes", self.num_classes, other.num_classes),
            ));
        }
        for (row, orow) in self.counts.iter_mut().zip(&other.counts) {
            for (c, o) in row.iter_mut().zip(orow) {
                *c += o;
            }
        }
        Ok(())
    }

    /// Number of classes `K`.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Number of windows of true class `truth` predicted as `pred`.
    pub fn count(&self, truth: usize, pred: usize) -> u64 {
        self.counts[truth][pred]
    }

    /// The counts, `counts[truth][pred]`.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// Total number of pairs.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Windows whose true class is `k` (row sum).
    pub fn support(&self, k: usize) -> u64 {
        self.counts[k].iter().sum()
    }

    /// Windows predicted as class `k` (column sum).
    pub fn predicted(&self, k: usize) -> u64 {
        self.counts.iter().map(|r| r[k]).sum()
    }

    fn present(&self, k: usize) -> bool {
        self.support(k) > 0 || self.predicted(k) > 0
    }

    /// Fraction of correct predictions (`NaN` for an empty matrix).
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.num_classes).map(|k| self.counts[k][k]).sum();
        ratio(correct, self.total())
    }

    /// Precision of class `k` (`None` when absent from truth and predictions; 0 when never
    /// predicted but present in the truth).
    pub fn precision(&self, k: usize) -> Option<f64> {
        self.present(k)
            .then(|| ratio_or_zero(self.counts[k][k], self.predicted(k)))
    }

    /// Recall of class `k` (`None` when absent from truth and predictions; 0 when predicted but
    /// without support).
    pub fn recall(&self, k: usize) -> Option<f64> {
        self.present(k)
            .then(|| ratio_or_zero(self.counts[k][k], self.support(k)))
    }

    /// F1 of class `k`: `2 tp / (2 tp + fp + fn)`, `None` when absent from truth and predictions.
    pub fn f1(&self, k: usize) -> Option<f64> {
        self.present(k).then(|| {
            let tp = self.counts[k][k];
            ratio_or_zero(2 * tp, self.support(k) + self.predicted(k))
        })
    }

    /// Macro F1 over the classes present in truth or predictions (see the module docs).
    pub fn macro_f1(&self) -> f64 {
        self.macro_f1_with(AbsentClassPolicy::Exclude)
    }

    /// Macro F1 with an explicit treatment of classes absent from truth and predictions.
    pub fn macro_f1_with(&self, policy: AbsentClassPolicy) -> f64 {
        if self.total() == 0 {
            return f64::NAN;
        }
        let f1s = (0..self.num_classes).filter_map(|k| match (self.f1(k), policy) {
            (Some(f), _) => Some(f),
            (None, AbsentClassPolicy::CountAsZero) => Some(0.0),
            (None, AbsentClassPolicy::Exclude) => None,
        });
        mean(f1s)
    }

    /// Mean recall over the classes with support (scikit-learn's `balanced_accuracy_score`).
    pub fn balanced_accuracy(&self) -> f64 {
        mean((0..self.num_classes).filter_map(|k| {
            let s = self.support(k);
            (s > 0).then(|| self.counts[k][k] as f64 / s as f64)
        }))
    }

    /// Cohen's kappa `(p_o - p_e) / (1 - p_e)`, with `p_o` the observed agreement and `p_e` the
    /// agreement expected from the marginals; `NaN` when empty or when `p_e = 1` (both raters use
    /// one and the same class), as scikit-learn.
    pub fn cohen_kappa(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            return f64::NAN;
        }
        let n = n as f64;
        let p_o = self.accuracy();
        let p_e: f64 = (0..self.num_classes)
            .map(|k| (self.support(k) as f64 / n) * (self.predicted(k) as f64 / n))
            .sum();
        if p_e >= 1.0 {
            return f64::NAN;
        }
        (p_o - p_e) / (1.0 - p_e)
    }

    /// Precision, recall and F1 of every class.
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        (0..self.num_classes)
            .map(|k| ClassMetrics {
                class: k,
                support: self.support(k),
                predicted: self.predicted(k),
                precision: self.precision(k),
                recall: self.recall(k),
                f1: self.f1(k),
            })
            .collect()
    }

    /// Every metric at once.
    pub fn report(&self) -> ClassificationReport {
        ClassificationReport {
            accuracy: self.accuracy(),
            balanced_accuracy: self.balanced_accuracy(),
            macro_f1: self.macro_f1(),
            cohen_kappa: self.cohen_kappa(),
            per_class: self.per_class(),
            confusion: self.clone(),
        }
    }

    /// The matrix as a Markdown table (rows: truth, columns: predictions). `class_names`, when
    /// given, must have one name per class.
    pub fn to_markdown(&self, class_names: Option<&[String]>) -> Result<String> {
        let names: Vec<String> = match class_names {
            Some(n) if n.len() != self.num_classes => {
                return Err(EvalError::mismatch(
                    "class_names",
                    "confusion",
                    format!("{} names for {} classes", n.len(), self.num_classes),
                ))
            }
            Some(n) => n.iter().map(|s| crate::markdown::escape(s)).collect(),
            None => (0..self.num_classes).map(|k| k.to_string()).collect(),
        };
        let mut out = String::from("| truth \\ pred |");
        for n in &names {
            out.push_str(&format!(" {n} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(self.num_classes));
        out.push('\n');
        for (name, row) in names.iter().zip(&self.counts) {
            out.push_str(&format!("| {name} |"));
            for c in row {
                out.push_str(&format!(" {c} |"));
            }
            out.push('\n');
        }
        Ok(out)
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

fn ratio_or_zero(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::{SeededRng, Tolerance};

    const T: Tolerance = Tolerance::F64;

    /// Hand-computed 3-class example (rows truth, columns predictions):
    ///
    /// ```text
    ///          p0 p1 p2 | support
    ///   t0  [   5  1  0 ]  6
    ///   t1  [   2  3  1 ]  6
    ///   t2  [   0  1  4 ]  5
    ///   pred    7  5  5     n = 17, correct = 12
    /// ```
    ///
    /// precision = 5/7, 3/5, 4/5; recall = 5/6, 3/6, 4/5;
    /// F1 = 2 tp / (support + predicted) = 10/13, 6/11, 8/10;
    /// macro F1 = (10/13 + 6/11 + 4/5) / 3; balanced accuracy = (5/6 + 1/2 + 4/5) / 3 = 32/45;
    /// p_o = 12/17, p_e = (6*7 + 6*5 + 5*5) / 17^2 = 97/289,
    /// kappa = (204/289 - 97/289) / (192/289) = 107/192.
    fn three_class() -> ConfusionMatrix {
        ConfusionMatrix::from_counts(vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 1, 4]]).unwrap()
    }

    #[test]
    fn hand_computed_three_class_example_matches_every_metric() {
        let m = three_class();
        assert_eq!(m.total(), 17);
        assert!(T.close(m.accuracy(), 12.0 / 17.0));
        let p: Vec<f64> = (0..3).map(|k| m.precision(k).unwrap()).collect();
        T.assert_close(&p, &[5.0 / 7.0, 3.0 / 5.0, 4.0 / 5.0]);
        let r: Vec<f64> = (0..3).map(|k| m.recall(k).unwrap()).collect();
        T.assert_close(&r, &[5.0 / 6.0, 0.5, 0.8]);
        let f: Vec<f64> = (0..3).map(|k| m.f1(k).unwrap()).collect();
        T.assert_close(&f, &[10.0 / 13.0, 6.0 / 11.0, 0.8]);
        assert!(T.close(m.macro_f1(), (10.0 / 13.0 + 6.0 / 11.0 + 0.8) / 3.0));
        assert!(T.close(m.balanced_accuracy(), 32.0 / 45.0));
        assert!(T.close(m.cohen_kappa(), 107.0 / 192.0));
    }

    #[test]
    fn predictions_build_the_same_matrix_as_counts() {
        let truth = [0, 0, 1, 2, 2, 1];
        let pred = [0, 1, 1, 2, 0, 1];
        let m = ConfusionMatrix::from_predictions(&truth, &pred, 3).unwrap();
        let expected =
            ConfusionMatrix::from_counts(vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]])
                .unwrap();
        assert_eq!(m, expected);
    }

    #[test]
    fn perfect_prediction_scores_one_everywhere() {
        let y = [0, 1, 2, 2, 1, 0, 3];
        let m = ConfusionMatrix::from_predictions(&y, &y, 4).unwrap();
        for v in [
            m.accuracy(),
            m.balanced_accuracy(),
            m.macro_f1(),
            m.cohen_kappa(),
        ] {
            assert!(T.close(v, 1.0), "{v}");
        }
    }

    #[test]
    fn kappa_is_zero_when_the_matrix_is_the_product_of_its_marginals() {
        // truth marginals (1, 2, 3) x prediction marginals (2, 1, 1): counts a_i * b_j, so the
        // observed agreement equals the chance agreement exactly.
        let m = ConfusionMatrix::from_counts(vec![vec![2, 1, 1], vec![4, 2, 2], vec![6, 3, 3]])
            .unwrap();
        assert!(Tolerance::new(0.0, 1e-12).close(m.cohen_kappa(), 0.0));
    }

    #[test]
    fn kappa_is_near_zero_for_independent_random_predictions() {
        let mut rng = SeededRng::new(11);
        let n = 20_000;
        let truth: Vec<usize> = (0..n).map(|_| rng.below(4)).collect();
        let pred: Vec<usize> = (0..n).map(|_| rng.below(4)).collect();
        let m = ConfusionMatrix::from_predictions(&truth, &pred, 4).unwrap();
        assert!(m.cohen_kappa().abs() < 0.03, "kappa {}", m.cohen_kappa());
        assert!(Tolerance::new(0.0, 0.03).close(m.accuracy(), 0.25));
    }

    #[test]
    fn class_absent_from_truth_and_predictions_is_excluded_or_counted_as_zero() {
        // Class 2 never occurs. Classes 0 and 1 are perfectly predicted.
        let m = ConfusionMatrix::from_predictions(&[0, 1, 1], &[0, 1, 1], 3).unwrap();
        assert_eq!(m.f1(2), None);
        assert_eq!(m.precision(2), None);
        assert!(T.close(m.macro_f1(), 1.0));
        assert!(T.close(m.macro_f1_with(AbsentClassPolicy::CountAsZero), 2.0 / 3.0));
        assert!(T.close(m.balanced_accuracy(), 1.0));
        assert!(T.close(m.cohen_kappa(), 1.0));
    }

    #[test]
    fn class_only_predicted_counts_with_zero_f1() {
        // Class 2 is predicted once but never true: precision 0, recall 0 (zero_division=0).
        // F1 = 2 tp / (support + predicted): class 0 = 2 / (2 + 1), class 1 = 2 / 2, class 2 = 0.
        let m = ConfusionMatrix::from_predictions(&[0, 0, 1], &[0, 2, 1], 3).unwrap();
        assert!(T.close(m.precision(2).unwrap(), 0.0));
        assert!(T.close(m.recall(2).unwrap(), 0.0));
        assert!(T.close(m.f1(2).unwrap(), 0.0));
        assert!(T.close(m.macro_f1(), (2.0 / 3.0 + 1.0 + 0.0) / 3.0));
        // balanced accuracy averages recall over classes with support only: (1/2 + 1) / 2
        assert!(T.close(m.balanced_accuracy(), 0.75));
    }

    #[test]
    fn undefined_metrics_are_nan_not_panics() {
        let m = ConfusionMatrix::new(3).unwrap();
        assert!(m.accuracy().is_nan());
        assert!(m.macro_f1().is_nan());
        assert!(m.cohen_kappa().is_nan());
        let single = ConfusionMatrix::from_predictions(&[1, 1], &[1, 1], 2).unwrap();
        assert!(single.cohen_kappa().is_nan());
    }

    #[test]
    fn out_of_range_labels_are_errors_naming_the_index() {
        let e = ConfusionMatrix::from_predictions(&[0, 3], &[0, 1], 3).unwrap_err();
        assert!(e.to_string().contains("truth[1]"), "{e}");
        let e = ConfusionMatrix::from_predictions(&[0, 1], &[0, 1, 1], 3).unwrap_err();
        assert!(e.to_string().contains("pred"), "{e}");
        assert!(ConfusionMatrix::from_counts(vec![vec![1, 2], vec![3]]).is_err());
        assert!(ConfusionMatrix::new(0).is_err());
    }

    #[test]
    fn merging_folds_adds_counts() {
        let mut a = ConfusionMatrix::from_predictions(&[0, 1], &[0, 0], 2).unwrap();
        let b = ConfusionMatrix::from_predictions(&[1, 1], &[1, 0], 2).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.counts(), &[vec![1, 0], vec![2, 1]]);
        assert!(a.merge(&ConfusionMatrix::new(3).unwrap()).is_err());
    }

    #[test]
    fn markdown_table_has_a_row_per_class() {
        let names = vec![
            "walk".to_string(),
            "sit|stand".to_string(),
            "run".to_string(),
        ];
        let md = three_class().to_markdown(Some(&names)).unwrap();
        assert_eq!(md.lines().count(), 5);
        assert!(md.contains("| sit\\|stand | 2 | 3 | 1 |"), "{md}");
        assert!(three_class().to_markdown(Some(&names[..2])).is_err());
    }
}
