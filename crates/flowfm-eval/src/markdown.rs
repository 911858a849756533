//! Small helpers shared by the Markdown renderers (cell escaping, number formatting).

use crate::stats::MeanSd;

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
    }
}
