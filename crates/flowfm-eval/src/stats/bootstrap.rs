//! Percentile bootstrap confidence intervals (Efron & Tibshirani 1993, *An Introduction to the
//! Bootstrap*, ch. 13): of a mean, of a mean paired difference, and of the ratio of two
//! independent samples' means.
//!
//! **Method.** `B` resamples; each draws `n` indices uniformly with replacement (per sample, from
//! the caller's [`SeededRng`], resample after resample) and evaluates the statistic. The interval
//! is the `alpha / 2` and `1 - alpha / 2` quantiles of the `B` statistics, `alpha = 1 -
//! confidence`, interpolated linearly between order statistics: `scipy.stats.bootstrap` with
//! `method="percentile"`. The same seed gives the same interval.
//!
//! **Why percentile, not BCa.** The study has a few seeds times a few folds (`n` about 5-25).
//! BCa's bias and acceleration corrections are themselves estimated (the acceleration by a
//! jackknife) and are noisy at that `n`; BCa is undefined (scipy returns NaN) when every
//! bootstrap statistic is equal, which happens in the study (a kappa of 0 in every fold). The
//! percentile interval is always defined for finite data, lies inside the range of the
//! statistic over the resamples, and follows monotone transformations (a ratio's interval
//! inverts to the inverse ratio's). Its weakness: it under-covers for small `n` (below the
//! nominal 95 %), so every [`Interval`] carries its sample sizes for the reader.

use flowfm_core::SeededRng;
use serde::{Deserialize, Serialize};

use super::descriptive::percentile_sorted;
use crate::error::{EvalError, Result};

/// How many resamples and which confidence level.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of bootstrap resamples `B` (at least 100).
    pub resamples: usize,
    /// Confidence level in (0, 1), e.g. 0.95.
    pub confidence: f64,
}

impl Default for BootstrapConfig {
    /// 10,000 resamples, 95 %.
    fn default() -> Self {
        Self {
            resamples: 10_000,
            confidence: 0.95,
        }
    }
}

impl BootstrapConfig {
    /// Checks the fields (named in the error).
    pub fn validate(&self) -> Result<()> {
        if self.resamples < 100 {
            return Err(EvalError::invalid(
                "bootstrap.resamples",
                format!("{} resamples; need at least 100", self.resamples),
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(EvalError::invalid(
                "bootstrap.confidence",
                format!("{} is not in (0, 1)", self.confidence),
            ));
        }
        Ok(())
    }
}

/// A point estimate with its percentile bootstrap interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the data as given (not resampled).
    pub estimate: f64,
    /// Lower end of the interval.
    pub lower: f64,
    /// Upper end of the interval.
    pub upper: f64,
    /// Sample standard deviation (`B - 1`) of the statistic over the resamples.
    pub standard_error: f64,
    /// Confidence level of `[lower, upper]`.
    pub confidence: f64,
    /// Resamples `B`.
    pub resamples: usize,
    /// Size of each resampled sample: one entry for a mean or a paired difference (the number of
    /// pairs), two for a ratio (numerator, denominator).
    pub sizes: Vec<usize>,
}

impl Interval {
    /// Whether `v` lies in `[lower, upper]`.
    pub fn contains(&self, v: f64) -> bool {
        self.lower <= v && v <= self.upper
    }

    /// Whether the two intervals share at least one point.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.lower <= other.upper && other.lower <= self.upper
    }
}

/// Percentile bootstrap interval of the mean of `values` (at least 2, all finite).
pub fn bootstrap_mean(
    values: &[f64],
    cfg: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<Interval> {
    cfg.validate()?;
    check_sample("values", values)?;
    let stats = (0..cfg.resamples)
        .map(|_| resampled_mean(values, rng))
        .collect();
    Ok(interval(mean(values), stats, cfg, vec![values.len()]))
}

/// Percentile bootstrap interval of the mean paired difference `mean(a_i - b_i)`: pairs are
/// resampled together (`scipy.stats.bootstrap(..., paired=True)`). `a` and `b` have the same
/// length (at least 2) and finite values.
pub fn bootstrap_paired_difference(
    a: &[f64],
    b: &[f64],
    cfg: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<Interval> {
    let d = paired_differences(a, b)?;
    bootstrap_mean(&d, cfg, rng)
}

/// Percentile bootstrap interval of `mean(numerator) / mean(denominator)` for two independent
/// samples, each resampled on its own (`scipy.stats.bootstrap(..., paired=False)`): e.g. the
/// seconds one method needs to reach a threshold over another's, one value per seed. Each sample
/// has at least 2 finite values; every denominator value must be positive (so no resample
/// divides by zero).
pub fn bootstrap_ratio_of_means(
    numerator: &[f64],
    denominator: &[f64],
    cfg: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<Interval> {
    cfg.validate()?;
    check_sample("numerator", numerator)?;
    check_sample("denominator", denominator)?;
    if let Some(i) = denominator.iter().position(|&v| v <= 0.0) {
        return Err(EvalError::invalid(
            format!("denominator[{i}]"),
            format!("{} is not positive", denominator[i]),
        ));
    }
    let stats = (0..cfg.resamples)
        .map(|_| {
            let num = resampled_mean(numerator, rng);
            num / resampled_mean(denominator, rng)
        })
        .collect();
    Ok(interval(
        mean(numerator) / mean(denominator),
        stats,
        cfg,
        vec![numerator.len(), denominator.len()],
    ))
}

/// `a_i - b_i` after checking both samples (same length, at least 2, finite).
pub(crate) fn paired_differences(a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    if a.len() != b.len() {
        return Err(EvalError::mismatch(
            "a",
            "b",
            format!("{} vs {} paired values", a.len(), b.len()),
        ));
    }
    check_sample("a", a)?;
    check_sample("b", b)?;
    Ok(a.iter().zip(b).map(|(x, y)| x - y).collect())
}

/// At least 2 values (an interval from one value would have zero width), all finite.
fn check_sample(name: &str, values: &[f64]) -> Result<()> {
    if values.len() < 2 {
        return Err(EvalError::invalid(
            name,
            format!(
                "at least 2 values are needed (an interval of one has no width), got {}",
                values.len()
            ),
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::invalid(
            format!("{name}[{i}]"),
            format!("{} is not finite", values[i]),
        ));
    }
    Ok(())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean of `n` draws with replacement from `values` (`n = values.len() > 0`).
fn resampled_mean(values: &[f64], rng: &mut SeededRng) -> f64 {
    let n = values.len();
    (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64
}

/// The percentile interval of the bootstrap statistics `stats`.
fn interval(
    estimate: f64,
    mut stats: Vec<f64>,
    cfg: &BootstrapConfig,
    sizes: Vec<usize>,
) -> Interval {
    let b = stats.len() as f64;
    let m = stats.iter().sum::<f64>() / b;
    let standard_error = (stats.iter().map(|s| (s - m).powi(2)).sum::<f64>() / (b - 1.0)).sqrt();
    stats.sort_by(f64::total_cmp);
    let alpha = 1.0 - cfg.confidence;
    Interval {
        estimate,
        lower: percentile_sorted(&stats, alpha / 2.0),
        upper: percentile_sorted(&stats, 1.0 - alpha / 2.0),
        standard_error,
        confidence: cfg.confidence,
        resamples: cfg.resamples,
        sizes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    fn cfg(resamples: usize) -> BootstrapConfig {
        BootstrapConfig {
            resamples,
            confidence: 0.95,
        }
    }

    #[test]
    fn constant_values_give_a_zero_width_interval_at_the_value() {
        // 0.25 is dyadic: every resampled mean is exactly 0.25
        let ci = bootstrap_mean(&[0.25; 6], &cfg(500), &mut SeededRng::new(1)).unwrap();
        assert_eq!((ci.lower, ci.upper, ci.standard_error), (0.25, 0.25, 0.0));
        assert_eq!(ci.sizes, vec![6]);
    }

    #[test]
    fn the_bootstrap_standard_error_of_a_mean_is_the_plug_in_one() {
        // Resampling n values with replacement: Var(mean*) = (population variance) / n exactly,
        // so the bootstrap standard error converges to sigma_pop / sqrt(n).
        let x = [0.2, 0.9, 0.4, 0.55, 0.7, 0.1, 0.35, 0.8, 0.6, 0.45];
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let pop_var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
        let ci = bootstrap_mean(&x, &cfg(40_000), &mut SeededRng::new(5)).unwrap();
        // relative Monte Carlo sd of a sd from B draws: about 1 / sqrt(2 B) = 0.35 %
        assert!(
            Tolerance::new(0.02, 0.0).close(ci.standard_error, (pop_var / n).sqrt()),
            "{} vs {}",
            ci.standard_error,
            (pop_var / n).sqrt()
        );
        assert!(Tolerance::F64.close(ci.estimate, m));
        assert!(ci.contains(m) && ci.lower > 0.1 && ci.upper < 0.9);
        // for a mean of 10 values the 95 % interval is close to mean +- 1.96 se
        assert!(Tolerance::new(0.1, 0.0).close(ci.upper - ci.lower, 2.0 * 1.96 * ci.standard_error));
    }

    #[test]
    fn same_seed_same_interval_and_shifts_move_it_exactly() {
        let x = [1.0, 3.0, 2.0, 7.0, 4.0];
        let a = bootstrap_mean(&x, &cfg(1000), &mut SeededRng::new(9)).unwrap();
        let b = bootstrap_mean(&x, &cfg(1000), &mut SeededRng::new(9)).unwrap();
        assert_eq!(a, b);
        let c = bootstrap_mean(&x, &cfg(1000), &mut SeededRng::new(10)).unwrap();
        assert_ne!(a, c);
        // x + 10 with the same draws: every resampled mean moves by 10
        let shifted: Vec<f64> = x.iter().map(|v| v + 10.0).collect();
        let s = bootstrap_mean(&shifted, &cfg(1000), &mut SeededRng::new(9)).unwrap();
        let t = Tolerance::new(0.0, 1e-12);
        assert!(t.close(s.lower, a.lower + 10.0) && t.close(s.upper, a.upper + 10.0));
    }

    #[test]
    fn paired_difference_is_the_mean_interval_of_the_differences() {
        let a = [0.71, 0.65, 0.80, 0.62, 0.77];
        let b = [0.70, 0.60, 0.74, 0.63, 0.70];
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let p = bootstrap_paired_difference(&a, &b, &cfg(2000), &mut SeededRng::new(3)).unwrap();
        let m = bootstrap_mean(&d, &cfg(2000), &mut SeededRng::new(3)).unwrap();
        assert_eq!(p, m);
    }

    #[test]
    fn ratio_of_constant_samples_is_exact() {
        let r = bootstrap_ratio_of_means(
            &[2.0, 2.0, 2.0],
            &[4.0, 4.0],
            &cfg(200),
            &mut SeededRng::new(1),
        )
        .unwrap();
        assert_eq!((r.estimate, r.lower, r.upper), (0.5, 0.5, 0.5));
        assert_eq!(r.sizes, vec![3, 2]);
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_field() {
        let mut rng = SeededRng::new(0);
        let c = cfg(200);
        let err = |r: Result<Interval>| r.unwrap_err().to_string();
        assert!(err(bootstrap_mean(&[], &c, &mut rng)).contains("values"));
        assert!(err(bootstrap_mean(&[1.0], &c, &mut rng)).contains("at least 2"));
        assert!(err(bootstrap_mean(&[1.0, f64::NAN], &c, &mut rng)).contains("values[1]"));
        assert!(err(bootstrap_paired_difference(
            &[1.0, 2.0],
            &[1.0],
            &c,
            &mut rng
        ))
        .contains("mismatch"));
        assert!(err(bootstrap_ratio_of_means(
            &[1.0, 2.0],
            &[1.0, 0.0],
            &c,
            &mut rng
        ))
        .contains("denominator[1]"));
        let few = BootstrapConfig {
            resamples: 10,
            confidence: 0.95,
        };
        assert!(err(bootstrap_mean(&[1.0, 2.0], &few, &mut rng)).contains("resamples"));
        let bad = BootstrapConfig {
            resamples: 200,
            confidence: 1.0,
        };
        assert!(err(bootstrap_mean(&[1.0, 2.0], &bad, &mut rng)).contains("confidence"));
    }

    #[test]
    fn intervals_know_containment_and_overlap() {
        let i = |lower, upper| Interval {
            estimate: 0.0,
            lower,
            upper,
            standard_error: 0.0,
            confidence: 0.95,
            resamples: 100,
            sizes: vec![2],
        };
        assert!(i(0.0, 1.0).overlaps(&i(1.0, 2.0)));
        assert!(!i(0.0, 1.0).overlaps(&i(1.5, 2.0)));
        assert!(i(0.0, 1.0).contains(0.5) && !i(0.0, 1.0).contains(1.5));
    }
}
