//! Wilcoxon signed-rank test of paired values (Wilcoxon 1945), two-sided, computed as
//! `scipy.stats.wilcoxon(a, b)` with its defaults in scipy 1.17 (`zero_method="wilcox"`,
//! `correction=False`, `method="auto"`).
//!
//! With `d_i = a_i - b_i`: zero differences are dropped (Wilcoxon's own treatment, scipy's
//! `"wilcox"`), the `m` remaining `|d_i|` are ranked with average ranks for ties, `R+` sums the
//! ranks of the positive `d_i` and `R-` those of the negative ones; the reported statistic is
//! `min(R+, R-)`.
//!
//! **Which p-value** (scipy's `"auto"` rule; `n` counts every pair, zeros included):
//! - `n <= 50`, no ties and no zeros: [`WilcoxonMethod::Exact`], the null distribution of `R+`
//!   over all `2^m` equally likely sign assignments of the ranks `1..m`;
//! - `n <= 13` with ties or zeros: [`WilcoxonMethod::Permutation`], the same enumeration over the
//!   observed (average) ranks: scipy's permutation test is exhaustive there (`2^13 < 9999`);
//! - otherwise (`n > 50`, or ties / zeros with `n > 13`): [`WilcoxonMethod::Asymptotic`], the
//!   normal approximation `z = (R+ - m(m+1)/4) / sqrt((m(m+1)(2m+1) - sum_t (t^3 - t)/2) / 24)`,
//!   `t` the sizes of the tie groups among the non-zero `|d_i|`, without continuity correction,
//!   `p = P(|Z| >= |z|)`.
//!
//! Exact and permutation p-values are `min(1, 2 min(P(R+ <= r+), P(R+ >= r+)))`. Ties are exact
//! float equality of `|d_i|`, as in scipy. One departure: when every difference is zero scipy
//! returns NaN for `n > 13`; here the p-value is 1 (no evidence of a difference) at every `n`.

use serde::{Deserialize, Serialize};

use super::bootstrap;
use super::normal;
use crate::error::Result;

/// Above this many pairs the normal approximation is used (scipy's `"auto"` rule).
pub const EXACT_MAX_PAIRS: usize = 50;

/// With ties or zeros, up to this many pairs the sign-flip distribution is enumerated.
pub const PERMUTATION_MAX_PAIRS: usize = 13;

/// How the p-value was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WilcoxonMethod {
    /// Exact null distribution of `R+` (no ties, no zeros, `n <= 50`).
    Exact,
    /// Exhaustive sign-flip distribution over the observed ranks (ties or zeros, `n <= 13`).
    Permutation,
    /// Normal approximation with tie correction, no continuity correction.
    Asymptotic,
}

/// The outcome of a two-sided Wilcoxon signed-rank test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WilcoxonResult {
    /// Pairs given (zeros included).
    pub n: usize,
    /// Pairs with a zero difference (left out of the ranks).
    pub n_zero: usize,
    /// Sum of the ranks of the positive differences `a_i - b_i`.
    pub r_plus: f64,
    /// Sum of the ranks of the negative differences.
    pub r_minus: f64,
    /// `min(R+, R-)`: scipy's two-sided statistic.
    pub statistic: f64,
    /// The normal statistic, for the asymptotic method only.
    pub z: Option<f64>,
    /// Two-sided p-value.
    pub p_value: f64,
    /// How `p_value` was computed.
    pub method: WilcoxonMethod,
}

/// Two-sided Wilcoxon signed-rank test of `a` against `b`, paired by index (same length, at
/// least 2 pairs, finite values).
pub fn wilcoxon_signed_rank(a: &[f64], b: &[f64]) -> Result<WilcoxonResult> {
    let d = bootstrap::paired_differences(a, b)?;
    let n = d.len();
    let nonzero: Vec<f64> = d.iter().copied().filter(|&v| v != 0.0).collect();
    let n_zero = n - nonzero.len();
    let (ranks, tie_sizes) = average_ranks(&nonzero);
    let r_plus: f64 = nonzero
        .iter()
        .zip(&ranks)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum();
    let r_minus: f64 = nonzero
        .iter()
        .zip(&ranks)
        .filter(|(v, _)| **v < 0.0)
        .map(|(_, r)| r)
        .sum();
    let has_ties = tie_sizes.iter().any(|&t| t > 1);
    let method = if n > EXACT_MAX_PAIRS {
        WilcoxonMethod::Asymptotic
    } else if !has_ties && n_zero == 0 {
        WilcoxonMethod::Exact
    } else if n <= PERMUTATION_MAX_PAIRS {
        WilcoxonMethod::Permutation
    } else {
        WilcoxonMethod::Asymptotic
    };
    let m = nonzero.len() as f64;
    let (z, p_value) = if nonzero.is_empty() {
        (None, 1.0)
    } else if method == WilcoxonMethod::Asymptotic {
        let mean = m * (m + 1.0) / 4.0;
        let tie_term: f64 = tie_sizes
            .iter()
            .map(|&t| {
                let t = t as f64;
                t * t * t - t
            })
            .sum();
        let se = ((m * (m + 1.0) * (2.0 * m + 1.0) - tie_term / 2.0) / 24.0).sqrt();
        let z = (r_plus - mean) / se;
        (Some(z), normal::two_sided_p(z))
    } else {
        (None, sign_flip_p(&ranks, r_plus))
    };
    Ok(WilcoxonResult {
        n,
        n_zero,
        r_plus,
        r_minus,
        statistic: r_plus.min(r_minus),
        z,
        p_value,
        method,
    })
}

/// Average ranks (1-based) of `|x_i|`, and the size of every tie group.
fn average_ranks(x: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let abs: Vec<f64> = x.iter().map(|v| v.abs()).collect();
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| abs[i].total_cmp(&abs[j]));
    let mut ranks = vec![0.0; x.len()];
    let mut groups = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        // ties are exact equality of |d| (as in scipy); `total_cmp` says so without a float `==`
        while end < order.len() && abs[order[end]].total_cmp(&abs[order[start]]).is_eq() {
            end += 1;
        }
        // positions start..end hold ranks start+1..=end; their average
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        groups.push(end - start);
        start = end;
    }
    (ranks, groups)
}

/// Two-sided p-value of `r_plus` under the null that each rank's sign is + or - with
/// probability 1/2 independently: `min(1, 2 min(P(R+ <= r+), P(R+ >= r+)))`.
///
/// Average ranks are multiples of 1/2, so the distribution of `2 R+` is counted exactly by
/// dynamic programming over integers (`2^m <= 2^50` fits in a `u64`).
fn sign_flip_p(ranks: &[f64], r_plus: f64) -> f64 {
    let doubled: Vec<usize> = ranks.iter().map(|r| (2.0 * r).round() as usize).collect();
    let total: usize = doubled.iter().sum();
    let mut counts = vec![0u64; total + 1];
    counts[0] = 1;
    let mut reach = 0;
    for &r in &doubled {
        for s in (0..=reach).rev() {
            if counts[s] > 0 {
                counts[s + r] += counts[s];
            }
        }
        reach += r;
    }
    let observed = (2.0 * r_plus).round() as usize;
    let all = 2f64.powi(ranks.len() as i32);
    let at_most: u64 = counts[..=observed].iter().sum();
    let at_least: u64 = counts[observed..].iter().sum();
    (2.0 * (at_most.min(at_least) as f64) / all).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    #[test]
    fn five_positive_differences_have_the_textbook_exact_p() {
        // m = 5, all signs +: R+ = 15 is the most extreme of 2^5 outcomes, so p = 2 / 32.
        let r =
            wilcoxon_signed_rank(&[3.0, 5.0, 2.5, 8.0, 4.1], &[1.0, 1.0, 1.0, 1.0, 1.0]).unwrap();
        assert_eq!(r.method, WilcoxonMethod::Exact);
        assert_eq!((r.r_plus, r.r_minus, r.statistic), (15.0, 0.0, 0.0));
        assert!(Tolerance::F64.close(r.p_value, 2.0 / 32.0));
        // swapping the samples mirrors R+ and R- and keeps the p-value
        let s =
            wilcoxon_signed_rank(&[1.0, 1.0, 1.0, 1.0, 1.0], &[3.0, 5.0, 2.5, 8.0, 4.1]).unwrap();
        assert_eq!((s.r_plus, s.r_minus), (0.0, 15.0));
        assert!(Tolerance::F64.close(s.p_value, r.p_value));
    }

    #[test]
    fn exact_distribution_of_three_ranks_by_hand() {
        // ranks 1, 2, 3: the 8 sign patterns give R+ in {0, 1, 2, 3, 3, 4, 5, 6}.
        // d = (+1, -2, +3): R+ = 4, P(R+ >= 4) = 3/8, P(R+ <= 4) = 6/8, p = 2 * 3/8.
        let r = wilcoxon_signed_rank(&[1.0, 0.0, 3.0], &[0.0, 2.0, 0.0]).unwrap();
        assert!(Tolerance::F64.close(r.r_plus, 4.0));
        assert!(Tolerance::F64.close(r.p_value, 0.75));
    }

    #[test]
    fn ties_get_average_ranks_and_zeros_are_dropped() {
        let (ranks, groups) = average_ranks(&[2.0, -1.0, 2.0, -2.0, 5.0]);
        assert_eq!(ranks, vec![3.0, 1.0, 3.0, 3.0, 5.0]);
        assert_eq!(groups, vec![1, 3, 1]);
        let r = wilcoxon_signed_rank(&[1.0, 2.0, 3.0, 5.0], &[1.0, 0.0, 0.0, 0.0]).unwrap();
        assert_eq!((r.n, r.n_zero), (4, 1));
        assert_eq!(r.method, WilcoxonMethod::Permutation);
        // three ranks all positive: p = 2 / 8
        assert!(Tolerance::F64.close(r.p_value, 0.25));
    }

    #[test]
    fn all_zero_differences_give_p_one_and_bad_input_is_an_error() {
        let r = wilcoxon_signed_rank(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((r.p_value, r.n_zero), (1.0, 3));
        assert!(wilcoxon_signed_rank(&[1.0], &[2.0]).is_err());
        assert!(wilcoxon_signed_rank(&[1.0, 2.0], &[2.0]).is_err());
        assert!(wilcoxon_signed_rank(&[1.0, f64::INFINITY], &[2.0, 1.0]).is_err());
    }
}
