//! Welch's t-test of two independent samples (unequal variances), two-sided, computed as
//! `scipy.stats.ttest_ind(a, b, equal_var=False)`, with the 95 % confidence interval of the
//! difference of means from the same t distribution; and [`log_ratio_test`], the same test on
//! the logarithms of positive values (times), read as a ratio of geometric means.
//!
//! With sample means `m_a`, `m_b`, sample variances `v_a`, `v_b` (`n - 1` in the denominator)
//! and `s_a = v_a / n_a`, `s_b = v_b / n_b`: `t = (m_a - m_b) / sqrt(s_a + s_b)` with the
//! Welch-Satterthwaite degrees of freedom `df = (s_a + s_b)^2 / (s_a^2 / (n_a - 1) + s_b^2 /
//! (n_b - 1))`, `p = 2 P(T_df >= |t|)`, and the interval `m_a - m_b +- t_{0.975, df} sqrt(s_a +
//! s_b)`. The t distribution comes from `statrs`.
//!
//! Why this test for times over seeds: with three seeds per method a rank test cannot reach
//! p < 0.05 at all (the smallest two-sided p of Wilcoxon with 3 pairs is 0.25), while times to a
//! threshold are positive and roughly log-normal, so a t-test on their logarithms can.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::descriptive::mean_sd;
use crate::error::{EvalError, Result};

/// Confidence of the interval.
pub const CONFIDENCE: f64 = 0.95;

/// The outcome of a two-sided Welch t-test of `a` against `b`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WelchResult {
    /// Sizes of the two samples.
    pub n: (usize, usize),
    /// `mean(a) - mean(b)`.
    pub difference: f64,
    /// 95 % confidence interval of the difference.
    pub low: f64,
    /// See `low`.
    pub high: f64,
    /// The t statistic.
    pub t: f64,
    /// Welch-Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

fn check(name: &str, x: &[f64]) -> Result<()> {
    if x.len() < 2 {
        return Err(EvalError::invalid(
            name,
            format!("Welch's test needs at least 2 values, got {}", x.len()),
        ));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::invalid(
            format!("{name}[{i}]"),
            format!("{} is not finite", x[i]),
        ));
    }
    Ok(())
}

/// Two-sided Welch t-test of `a` against `b` (each at least 2 finite values). An error when
/// both samples have zero variance (the statistic is undefined).
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Result<WelchResult> {
    check("a", a)?;
    check("b", b)?;
    let (ma, mb) = (mean_sd(a)?, mean_sd(b)?);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let sa = ma.sd.unwrap_or(0.0).powi(2) / na;
    let sb = mb.sd.unwrap_or(0.0).powi(2) / nb;
    let se2 = sa + sb;
    if se2 <= 0.0 {
        return Err(EvalError::invalid(
            "a / b",
            "both samples have zero variance: Welch's t is undefined",
        ));
    }
    let se = se2.sqrt();
    let difference = ma.mean - mb.mean;
    let t = difference / se;
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    let dist =
        StudentsT::new(0.0, 1.0, df).map_err(|e| EvalError::invalid("df", format!("{df}: {e}")))?;
    let p_value = (2.0 * dist.sf(t.abs())).min(1.0);
    let q = dist.inverse_cdf(0.5 + CONFIDENCE / 2.0);
    Ok(WelchResult {
        n: (a.len(), b.len()),
        difference,
        low: difference - q * se,
        high: difference + q * se,
        t,
        df,
        p_value,
    })
}

/// A ratio of geometric means with its interval and p-value, from Welch's test on logarithms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRatioTest {
    /// `exp(mean(ln a) - mean(ln b))`: below 1 means `a` is smaller.
    pub ratio: f64,
    /// 95 % interval of the ratio (the exponentiated interval of the log difference).
    pub low: f64,
    /// See `low`.
    pub high: f64,
    /// The test on the logarithms.
    pub welch: WelchResult,
}

/// Welch's t-test on `ln a` against `ln b` (every value positive and finite, at least 2 each).
pub fn log_ratio_test(a: &[f64], b: &[f64]) -> Result<LogRatioTest> {
    let logs = |name: &str, x: &[f64]| -> Result<Vec<f64>> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                if v.is_finite() && v > 0.0 {
                    Ok(v.ln())
                } else {
                    Err(EvalError::invalid(
                        format!("{name}[{i}]"),
                        format!("{v} is not a positive finite value"),
                    ))
                }
            })
            .collect()
    };
    let welch = welch_t_test(&logs("a", a)?, &logs("b", b)?)?;
    Ok(LogRatioTest {
        ratio: welch.difference.exp(),
        low: welch.low.exp(),
        high: welch.high.exp(),
        welch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_nonfinite_and_constant_samples() {
        assert!(welch_t_test(&[1.0], &[1.0, 2.0]).is_err());
        assert!(welch_t_test(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
        assert!(welch_t_test(&[1.0, 1.0], &[2.0, 2.0]).is_err());
        assert!(log_ratio_test(&[1.0, 0.0], &[1.0, 2.0]).is_err());
    }

    #[test]
    fn symmetric_and_scale_free() {
        let (a, b) = ([1.0, 2.0, 4.0], [2.0, 3.0, 7.0, 5.0]);
        let ab = welch_t_test(&a, &b).unwrap();
        let ba = welch_t_test(&b, &a).unwrap();
        assert!((ab.t + ba.t).abs() < 1e-12 && (ab.p_value - ba.p_value).abs() < 1e-12);
        let r = log_ratio_test(&a, &b).unwrap();
        let scaled: Vec<f64> = a.iter().map(|v| v * 10.0).collect();
        let bs: Vec<f64> = b.iter().map(|v| v * 10.0).collect();
        let r10 = log_ratio_test(&scaled, &bs).unwrap();
        assert!(
            (r.ratio - r10.ratio).abs() < 1e-12
                && (r.welch.p_value - r10.welch.p_value).abs() < 1e-12
        );
        assert!(r.low < r.ratio && r.ratio < r.high);
    }
}
