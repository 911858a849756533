//! The study's verdicts: better / worse / no significant difference, from a paired test's p-value
//! and the sign of the paired mean difference at `alpha = 0.05`.

use flowfm_core::SeededRng;
use serde::{Deserialize, Serialize};

use super::bootstrap::{bootstrap_paired_difference, BootstrapConfig, Interval};
use super::wilcoxon::{wilcoxon_signed_rank, WilcoxonResult};
use crate::error::{EvalError, Result};

/// The significance level of the study's verdicts.
pub const ALPHA: f64 = 0.05;

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Larger is better (macro F1, kappa, area under a score curve).
    HigherIsBetter,
    /// Smaller is better (seconds or steps to a threshold, a loss, a distance).
    LowerIsBetter,
}

/// How method A compares with method B on paired results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A is significantly better than B.
    Better,
    /// A is significantly worse than B.
    Worse,
    /// The test does not reject equality at the chosen level.
    NoSignificantDifference,
}

impl Verdict {
    /// `Better` or `Worse` when `p_value < alpha`, by the sign of `mean_difference` (A - B) read
    /// through `direction`; otherwise (or when the difference is exactly 0)
    /// `NoSignificantDifference`. `p_value` must be in [0, 1], `alpha` in (0, 1), the difference
    /// finite.
    pub fn from_test(
        p_value: f64,
        mean_difference: f64,
        direction: Direction,
        alpha: f64,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&p_value) {
            return Err(EvalError::invalid(
                "p_value",
                format!("{p_value} is not in [0, 1]"),
            ));
        }
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(EvalError::invalid(
                "alpha",
                format!("{alpha} is not in (0, 1)"),
            ));
        }
        if !mean_difference.is_finite() {
            return Err(EvalError::invalid(
                "mean_difference",
                format!("{mean_difference} is not finite"),
            ));
        }
        if p_value >= alpha || mean_difference == 0.0 {
            return Ok(Verdict::NoSignificantDifference);
        }
        let a_is_higher = mean_difference > 0.0;
        Ok(match (direction, a_is_higher) {
            (Direction::HigherIsBetter, true) | (Direction::LowerIsBetter, false) => {
                Verdict::Better
            }
            _ => Verdict::Worse,
        })
    }

    /// `Better` or `Worse` when the interval of A's statistic lies entirely on one side of
    /// `reference` (e.g. a time ratio A / B against 1, a difference A - B against 0), read
    /// through `direction`; `NoSignificantDifference` when it contains `reference`. The interval
    /// ends and `reference` must be finite.
    pub fn from_interval(
        interval: &Interval,
        reference: f64,
        direction: Direction,
    ) -> Result<Self> {
        if !(interval.lower.is_finite() && interval.upper.is_finite() && reference.is_finite()) {
            return Err(EvalError::invalid(
                "interval",
                format!(
                    "[{}, {}] against {reference}: not finite",
                    interval.lower, interval.upper
                ),
            ));
        }
        let above = interval.lower > reference;
        let below = interval.upper < reference;
        Ok(match (direction, above, below) {
            (Direction::HigherIsBetter, true, _) | (Direction::LowerIsBetter, _, true) => {
                Verdict::Better
            }
            (Direction::HigherIsBetter, _, true) | (Direction::LowerIsBetter, true, _) => {
                Verdict::Worse
            }
            _ => Verdict::NoSignificantDifference,
        })
    }

    /// The words the report uses: `better`, `worse`, `no significant difference`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoSignificantDifference => "no significant difference",
        }
    }
}

/// Method A against method B on the same folds and seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    /// Number of pairs.
    pub n: usize,
    /// Mean of A's values.
    pub mean_a: f64,
    /// Mean of B's values.
    pub mean_b: f64,
    /// Mean paired difference A - B with its percentile bootstrap interval.
    pub difference: Interval,
    /// The two-sided Wilcoxon signed-rank test of A against B.
    pub wilcoxon: WilcoxonResult,
    /// The verdict for A at [`ALPHA`].
    pub verdict: Verdict,
}

/// Compares paired results `a[i]` and `b[i]` (the same fold and seed): Wilcoxon signed-rank
/// p-value, bootstrap interval of the mean difference `a - b`, and the verdict for A at
/// [`ALPHA`].
pub fn compare_paired(
    a: &[f64],
    b: &[f64],
    direction: Direction,
    cfg: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<PairedComparison> {
    let difference = bootstrap_paired_difference(a, b, cfg, rng)?;
    let wilcoxon = wilcoxon_signed_rank(a, b)?;
    let verdict = Verdict::from_test(wilcoxon.p_value, difference.estimate, direction, ALPHA)?;
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    Ok(PairedComparison {
        n: a.len(),
        mean_a: mean(a),
        mean_b: mean(b),
        difference,
        wilcoxon,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significance_and_direction_decide_the_verdict() {
        use Direction::*;
        let v = |p, d, dir| Verdict::from_test(p, d, dir, ALPHA).unwrap();
        assert_eq!(v(0.01, 0.05, HigherIsBetter), Verdict::Better);
        assert_eq!(v(0.01, -0.05, HigherIsBetter), Verdict::Worse);
        assert_eq!(v(0.01, -3.0, LowerIsBetter), Verdict::Better);
        assert_eq!(v(0.01, 3.0, LowerIsBetter), Verdict::Worse);
        // p exactly at alpha is not significant
        assert_eq!(
            v(0.05, 0.05, HigherIsBetter),
            Verdict::NoSignificantDifference
        );
        assert_eq!(
            v(0.2, 0.05, HigherIsBetter),
            Verdict::NoSignificantDifference
        );
        assert_eq!(
            v(0.001, 0.0, HigherIsBetter),
            Verdict::NoSignificantDifference
        );
        assert_eq!(
            Verdict::NoSignificantDifference.label(),
            "no significant difference"
        );
        assert!(Verdict::from_test(f64::NAN, 0.1, HigherIsBetter, ALPHA).is_err());
        assert!(Verdict::from_test(0.5, f64::NAN, HigherIsBetter, ALPHA).is_err());
        assert!(Verdict::from_test(0.5, 0.1, HigherIsBetter, 0.0).is_err());
    }

    #[test]
    fn an_interval_clear_of_the_reference_decides_the_verdict() {
        use Direction::*;
        let i = |lower, upper| Interval {
            estimate: (lower + upper) / 2.0,
            lower,
            upper,
            standard_error: 0.1,
            confidence: 0.95,
            resamples: 1000,
            sizes: vec![3, 3],
        };
        let v = |iv: Interval, dir| Verdict::from_interval(&iv, 1.0, dir).unwrap();
        // a time ratio A / B in [0.4, 0.7]: A needs less time, better when lower is better
        assert_eq!(v(i(0.4, 0.7), LowerIsBetter), Verdict::Better);
        assert_eq!(v(i(1.2, 1.9), LowerIsBetter), Verdict::Worse);
        assert_eq!(v(i(1.2, 1.9), HigherIsBetter), Verdict::Better);
        assert_eq!(
            v(i(0.8, 1.0), LowerIsBetter),
            Verdict::NoSignificantDifference
        );
        assert_eq!(
            v(i(0.8, 1.3), HigherIsBetter),
            Verdict::NoSignificantDifference
        );
        assert!(Verdict::from_interval(&i(0.1, f64::NAN), 1.0, LowerIsBetter).is_err());
    }

    #[test]
    fn a_consistent_gain_over_fifteen_pairs_is_better_and_noise_is_not() {
        let b: Vec<f64> = (0..15).map(|i| 0.5 + 0.01 * i as f64).collect();
        let gain: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.02 + 0.001 * i as f64)
            .collect();
        let cfg = BootstrapConfig::default();
        let mut rng = SeededRng::new(4);
        let c = compare_paired(&gain, &b, Direction::HigherIsBetter, &cfg, &mut rng).unwrap();
        // all 15 differences positive and distinct: exact p = 2 / 2^15
        assert_eq!(c.verdict, Verdict::Better);
        assert!((c.wilcoxon.p_value - 2.0 / 32768.0).abs() < 1e-15);
        assert!(c.difference.lower > 0.0 && c.mean_a > c.mean_b);
        // alternating +-: no significant difference
        let noisy: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % 2 == 0 { 0.01 } else { -0.011 } * (1.0 + i as f64 / 10.0))
            .collect();
        let c = compare_paired(&noisy, &b, Direction::HigherIsBetter, &cfg, &mut rng).unwrap();
        assert_eq!(c.verdict, Verdict::NoSignificantDifference);
        assert!(c.difference.contains(0.0));
        // lower is better flips it
        let c = compare_paired(&gain, &b, Direction::LowerIsBetter, &cfg, &mut rng).unwrap();
        assert_eq!(c.verdict, Verdict::Worse);
    }
}
