//! Descriptive statistics: mean +- sample sd of results ([`MeanSd`]), and small helpers on f32
//! signals accumulated in f64.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// Mean and sample standard deviation (`n - 1` in the denominator) of `n` values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation; `None` for a single value (it is undefined).
    pub sd: Option<f64>,
    /// Number of values.
    pub n: usize,
}

/// Mean and sample standard deviation of `values`; every value must be finite and there must be
/// at least one.
pub fn mean_sd(values: &[f64]) -> Result<MeanSd> {
    if values.is_empty() {
        return Err(EvalError::invalid("values", "mean +- sd of no values"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::invalid(
            format!("values[{i}]"),
            format!("{} is not finite", values[i]),
        ));
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = (n > 1).then(|| {
        let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        (ss / (n - 1) as f64).sqrt()
    });
    Ok(MeanSd { mean, sd, n })
}

/// Arithmetic mean (0 for an empty slice).
pub(crate) fn mean(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len() as f64
}

/// Population standard deviation (`n` in the denominator, numpy's default).
pub(crate) fn pop_sd(x: &[f32], mean: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / x.len() as f64)
        .sqrt()
}

/// Percentile `q` in [0, 1] of ascending `sorted` values with linear interpolation between order
/// statistics (numpy's default `linear` method).
pub(crate) fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Pearson correlation; `None` when either signal is constant.
pub(crate) fn pearson(a: &[f32], b: &[f32]) -> Option<f64> {
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// Sample autocorrelation at `lag` (the biased estimator: lagged cross-products over the full
/// sum of squares); 0 for a constant signal.
pub(crate) fn autocorrelation(x: &[f32], lag: usize) -> f64 {
    let m = mean(x);
    let den: f64 = x.iter().map(|&v| (f64::from(v) - m).powi(2)).sum();
    if den <= 0.0 || lag >= x.len() {
        return 0.0;
    }
    let num: f64 = x
        .iter()
        .zip(&x[lag..])
        .map(|(&a, &b)| (f64::from(a) - m) * (f64::from(b) - m))
        .sum();
    num / den
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    const T: Tolerance = Tolerance::F64;

    #[test]
    fn mean_sd_uses_the_sample_standard_deviation() {
        // values 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squares 32, sample variance 32 / 7.
        let m = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert!(T.close(m.mean, 5.0));
        assert!(T.close(m.sd.unwrap(), (32.0f64 / 7.0).sqrt()));
        assert_eq!(m.n, 8);
    }

    #[test]
    fn single_value_has_no_standard_deviation() {
        let m = mean_sd(&[0.7]).unwrap();
        assert!(m.sd.is_none());
        assert!(mean_sd(&[]).is_err());
        assert!(mean_sd(&[1.0, f64::NAN])
            .unwrap_err()
            .to_string()
            .contains("values[1]"));
    }

    #[test]
    fn percentiles_interpolate_like_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], [10, 25, 50, 90]) = [1.3, 1.75, 2.5, 3.7]
        let s = [1.0, 2.0, 3.0, 4.0];
        let got: Vec<f64> = [0.1, 0.25, 0.5, 0.9]
            .iter()
            .map(|&q| percentile_sorted(&s, q))
            .collect();
        T.assert_close(&got, &[1.3, 1.75, 2.5, 3.7]);
    }

    #[test]
    fn pearson_of_a_line_is_one_and_of_a_constant_is_undefined() {
        assert!(T.close(pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap(), 1.0));
        assert!(T.close(pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(), -1.0));
        assert!(pearson(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]).is_none());
    }

    #[test]
    fn autocorrelation_of_alternating_signal_at_lag_one_is_negative() {
        // x = (1, -1, 1, -1): mean 0, sum of squares 4, lag-1 products -1 * 3 -> -3/4
        assert!(T.close(autocorrelation(&[1.0, -1.0, 1.0, -1.0], 1), -0.75));
        assert!(T.close(pop_sd(&[1.0, -1.0, 1.0, -1.0], 0.0), 1.0));
    }
}
