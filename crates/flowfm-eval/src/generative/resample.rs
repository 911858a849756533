//! Bootstrap intervals for set metrics, by resampling windows (Efron & Tibshirani 1993, ch. 6
//! and 13): a resample draws `n` windows of a set of `n` with replacement, and is stored as the
//! multiplicity of each window ([`Resamples`]). A set metric (Frechet distance, MMD, spectral
//! distance, a classifier's accuracy) is recomputed on the resampled sets; the interval is the
//! percentile interval of those values, as [`crate::stats::bootstrap_mean`] does for a mean.
//!
//! One [`Resamples`] of the reference set and one of the compared sets are drawn once and shared
//! by every compared set of the same size (the generated sets of each sampler and the real floor
//! set), so every row is resampled with the same windows: rows are paired, and the floor is
//! computed exactly like a row.

use flowfm_core::SeededRng;

use crate::error::{EvalError, Result};
use crate::stats::{percentile_sorted, BootstrapConfig, Interval};

/// `B` bootstrap resamples of a set of `n` windows, as multiplicities.
#[derive(Clone, Debug, PartialEq)]
pub struct Resamples {
    n: usize,
    counts: Vec<Vec<u32>>,
}

impl Resamples {
    /// Draws `cfg.resamples` resamples of `n >= 2` windows from `rng` (each index uniform, with
    /// replacement, resample after resample).
    pub fn draw(n: usize, cfg: &BootstrapConfig, rng: &mut SeededRng) -> Result<Self> {
        cfg.validate()?;
        if n < 2 {
            return Err(EvalError::invalid(
                "windows",
                format!("a bootstrap needs at least 2 windows, got {n}"),
            ));
        }
        let counts = (0..cfg.resamples)
            .map(|_| {
                let mut c = vec![0u32; n];
                for _ in 0..n {
                    c[rng.below(n)] += 1;
                }
                c
            })
            .collect();
        Ok(Self { n, counts })
    }

    /// Windows per set.
    pub fn set_size(&self) -> usize {
        self.n
    }

    /// Number of resamples `B`.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether there are no resamples.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Multiplicities of resample `b` (they sum to `n`).
    pub fn counts(&self, b: usize) -> &[u32] {
        &self.counts[b]
    }

    /// Checks that these resamples are of a set of `n` windows.
    pub fn check_size(&self, name: &str, n: usize) -> Result<()> {
        if n != self.n {
            return Err(EvalError::mismatch(
                name,
                "resamples",
                format!("{n} windows, resamples of {}", self.n),
            ));
        }
        Ok(())
    }

    /// Percentile interval of the mean of per-window `values` (one per window), resampled with
    /// these draws.
    pub fn mean_interval(&self, values: &[f64], confidence: f64) -> Result<Interval> {
        self.check_size("values", values.len())?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::invalid(
                format!("values[{i}]"),
                format!("{} is not finite", values[i]),
            ));
        }
        let n = self.n as f64;
        let estimate = values.iter().sum::<f64>() / n;
        let stats = self
            .counts
            .iter()
            .map(|c| {
                c.iter()
                    .zip(values)
                    .map(|(&k, v)| k as f64 * v)
                    .sum::<f64>()
                    / n
            })
            .collect();
        percentile_interval(estimate, stats, confidence, vec![self.n])
    }
}

/// The percentile interval of bootstrap statistics `stats` (at least 2, all finite) around the
/// `estimate` computed on the data as given; `sizes` are the resampled sets' sizes.
pub fn percentile_interval(
    estimate: f64,
    mut stats: Vec<f64>,
    confidence: f64,
    sizes: Vec<usize>,
) -> Result<Interval> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(EvalError::invalid(
            "confidence",
            format!("{confidence} is not in (0, 1)"),
        ));
    }
    if stats.len() < 2 {
        return Err(EvalError::invalid(
            "stats",
            format!("need at least 2 bootstrap statistics, got {}", stats.len()),
        ));
    }
    if let Some(i) = stats.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::invalid(
            format!("stats[{i}]"),
            format!("{} is not finite", stats[i]),
        ));
    }
    let b = stats.len() as f64;
    let m = stats.iter().sum::<f64>() / b;
    let standard_error = (stats.iter().map(|s| (s - m).powi(2)).sum::<f64>() / (b - 1.0)).sqrt();
    stats.sort_by(f64::total_cmp);
    let alpha = 1.0 - confidence;
    Ok(Interval {
        estimate,
        lower: percentile_sorted(&stats, alpha / 2.0),
        upper: percentile_sorted(&stats, 1.0 - alpha / 2.0),
        standard_error,
        confidence,
        resamples: stats.len(),
        sizes,
    })
}

/// [`percentile_interval`] shifted by the bootstrap estimate of the statistic's bias,
/// `mean(stats) - estimate` (Efron & Tibshirani 1993, sec. 10.2): resampling windows with
/// replacement duplicates some of them, which inflates plug-in distances such as the Frechet
/// distance (fewer distinct windows), so the plain percentile interval can lie wholly above the
/// estimate. The shifted interval keeps the percentile interval's width and is centred like the
/// estimate; every row and the floor get the same correction from the same draws.
pub fn bias_corrected_interval(
    estimate: f64,
    stats: Vec<f64>,
    confidence: f64,
    sizes: Vec<usize>,
) -> Result<Interval> {
    let mean = stats.iter().sum::<f64>() / stats.len().max(1) as f64;
    let mut i = percentile_interval(estimate, stats, confidence, sizes)?;
    let bias = mean - estimate;
    i.lower -= bias;
    i.upper -= bias;
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::bootstrap_mean;
    use flowfm_core::Tolerance;

    fn cfg(resamples: usize) -> BootstrapConfig {
        BootstrapConfig {
            resamples,
            confidence: 0.95,
        }
    }

    #[test]
    fn every_resample_draws_n_windows() {
        let r = Resamples::draw(7, &cfg(300), &mut SeededRng::new(4)).unwrap();
        assert_eq!((r.len(), r.set_size()), (300, 7));
        assert!((0..r.len()).all(|b| r.counts(b).iter().sum::<u32>() == 7));
        // each window is drawn with probability 1/7 per draw: mean multiplicity 1
        let total: u32 = (0..r.len()).map(|b| r.counts(b)[3]).sum();
        assert!((total as f64 / 300.0 - 1.0).abs() < 0.15, "{total}");
    }

    #[test]
    fn the_mean_interval_matches_the_plain_bootstrap_of_a_mean() {
        // Same statistic, different draws: the two percentile intervals agree to Monte-Carlo
        // error, and the standard error is the plug-in sigma / sqrt(n).
        let x = [0.2, 0.9, 0.4, 0.55, 0.7, 0.1, 0.35, 0.8, 0.6, 0.45];
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let pop_sd = (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
        let r = Resamples::draw(10, &cfg(20_000), &mut SeededRng::new(1)).unwrap();
        let a = r.mean_interval(&x, 0.95).unwrap();
        let b = bootstrap_mean(&x, &cfg(20_000), &mut SeededRng::new(2)).unwrap();
        assert!(Tolerance::F64.close(a.estimate, m));
        assert!(Tolerance::new(0.03, 0.0).close(a.standard_error, pop_sd / n.sqrt()));
        assert!(
            Tolerance::new(0.0, 0.02).close(a.lower, b.lower),
            "{a:?} {b:?}"
        );
        assert!(
            Tolerance::new(0.0, 0.02).close(a.upper, b.upper),
            "{a:?} {b:?}"
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut rng = SeededRng::new(0);
        assert!(Resamples::draw(1, &cfg(100), &mut rng).is_err());
        assert!(Resamples::draw(5, &cfg(10), &mut rng).is_err());
        let r = Resamples::draw(3, &cfg(100), &mut rng).unwrap();
        assert!(r.mean_interval(&[1.0, 2.0], 0.95).is_err());
        assert!(r.mean_interval(&[1.0, 2.0, f64::NAN], 0.95).is_err());
        assert!(percentile_interval(0.0, vec![1.0], 0.95, vec![1]).is_err());
        assert!(percentile_interval(0.0, vec![1.0, 2.0], 1.0, vec![1]).is_err());
        let i = percentile_interval(1.5, vec![2.0, 1.0, 3.0], 0.5, vec![3]).unwrap();
        // quantiles 0.25 and 0.75 of (1, 2, 3), linear: 1.5 and 2.5
        assert_eq!((i.lower, i.upper, i.resamples), (1.5, 2.5, 3));
        // bootstrap mean 2 vs estimate 1.5: bias 0.5, so the interval moves down by 0.5
        let b = bias_corrected_interval(1.5, vec![2.0, 1.0, 3.0], 0.5, vec![3]).unwrap();
        assert_eq!((b.lower, b.upper, b.estimate), (1.0, 2.0, 1.5));
    }
}
