//! Small helpers shared by the Markdown renderers (cell escaping, number formatting).

use crate::stats::{Interval, MeanSd};

/// Escapes a table cell: `|` would end the cell and a newline the row.
pub fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A number with `decimals` digits, or `n/a` when not finite.
pub fn number(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "n/a".to_string()
    }
}

/// `mean ± sd` with `decimals` digits; the sd is left out when undefined (a single value).
pub fn mean_sd(m: &MeanSd, decimals: usize) -> String {
    match m.sd {
        Some(sd) => format!("{} ± {}", number(m.mean, decimals), number(sd, decimals)),
        None => number(m.mean, decimals),
    }
}

/// `estimate [lower, upper]` with `decimals` digits (the interval's confidence is left to the
/// table's caption).
pub fn interval(i: &Interval, decimals: usize) -> String {
    format!(
        "{} [{}, {}]",
        number(i.estimate, decimals),
        number(i.lower, decimals),
        number(i.upper, decimals)
    )
}

/// A p-value with three decimals, `< 0.001` below that, `n/a` when not finite.
pub fn p_value(p: f64) -> String {
    if p.is_finite() && p < 0.001 {
        "< 0.001".to_string()
    } else {
        number(p, 3)
    }
}

/// An optional number, `n/a` when absent.
pub fn opt_number(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| number(v, decimals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_escaped_and_undefined_numbers_say_so() {
        assert_eq!(escape("a|b\nc"), "a\\|b c");
        assert_eq!(number(f64::NAN, 2), "n/a");
        assert_eq!(number(0.12345, 3), "0.123");
        let m = MeanSd {
            mean: 0.5,
            sd: None,
            n: 1,
        };
        assert_eq!(mean_sd(&m, 2), "0.50");
        let i = Interval {
            estimate: 0.5123,
            lower: 0.48,
            upper: 0.5449,
            standard_error: 0.01,
            confidence: 0.95,
            resamples: 1000,
            sizes: vec![9],
        };
        assert_eq!(interval(&i, 3), "0.512 [0.480, 0.545]");
        assert_eq!(p_value(0.0004), "< 0.001");
        assert_eq!(p_value(0.0312), "0.031");
        assert_eq!(p_value(f64::NAN), "n/a");
    }
}
