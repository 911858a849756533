//! The standard normal tail, through the complementary error function (std has no `erfc`).

use std::f64::consts::PI;

/// Below this the power series of `erf` is used, above it the continued fraction of `erfc`.
const SERIES_LIMIT: f64 = 2.5;

/// Terms of the continued fraction, evaluated backwards (converged to f64 for `x >= 2.5`).
const FRACTION_TERMS: usize = 60;

/// `erfc(x) = 1 - erf(x)`, absolute error about 1e-15.
///
/// For `|x| < 2.5`: `erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1 3 5 ... (2n+1))`
/// (Abramowitz & Stegun 7.1.6: positive terms, no cancellation inside the sum). Above it the
/// continued fraction `erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`
/// (A&S 7.1.14), which keeps the relative accuracy of tiny tails.
pub(crate) fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < SERIES_LIMIT {
        let x2 = x * x;
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= 2.0 * x2 / (2 * n + 1) as f64;
            sum += term;
            if term <= 1e-17 * sum {
                break;
            }
        }
        return 1.0 - 2.0 / PI.sqrt() * (-x2).exp() * sum;
    }
    let mut f = x;
    for k in (1..=FRACTION_TERMS).rev() {
        f = x + (k as f64 / 2.0) / f;
    }
    (-x * x).exp() / (PI.sqrt() * f)
}

/// Two-sided p-value of a standard normal statistic: `P(|Z| >= |z|) = erfc(|z| / sqrt 2)`.
pub(crate) fn two_sided_p(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    #[test]
    fn erfc_meets_its_closed_form_anchors() {
        // erfc(0) = 1, erfc(-x) = 2 - erfc(x), and the 1.96 rule: P(|Z| >= 1.959964) = 0.05.
        let t = Tolerance::new(1e-12, 1e-15);
        assert!(t.close(erfc(0.0), 1.0));
        assert!(t.close(erfc(-1.3), 2.0 - erfc(1.3)));
        assert!(t.close(two_sided_p(1.959_963_984_540_054), 0.05));
        assert!(t.close(two_sided_p(-1.959_963_984_540_054), 0.05));
        // both branches agree where they meet
        assert!(Tolerance::new(1e-10, 0.0).close(erfc(2.5 - 1e-12), erfc(2.5)));
        assert!(erfc(f64::NAN).is_nan());
        // exp(-1600) underflows: the tail is 0, not NaN
        assert!(erfc(40.0) < f64::MIN_POSITIVE);
    }

    #[test]
    fn erfc_matches_scipy_special() {
        // values written by tests/fixtures/make_stats_reference.py (scipy.special.erfc)
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/stats_reference.json"))
                .unwrap();
        let cases = fixture["erfc"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for c in cases {
            let (x, want) = (c["x"].as_f64().unwrap(), c["erfc"].as_f64().unwrap());
            let got = erfc(x);
            assert!(
                Tolerance::new(1e-11, 1e-15).close(got, want),
                "erfc({x}) = {got}, scipy {want}"
            );
        }
    }
}
