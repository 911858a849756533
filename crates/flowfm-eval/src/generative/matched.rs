//! Matched quality: whether a candidate's interval on a metric overlaps or beats a baseline's.
//!
//! For a metric where lower is better, the candidate matches when its interval's lower end is at
//! most the baseline's upper end (the intervals overlap, or the candidate lies wholly below);
//! where higher is better, when its upper end is at least the baseline's lower end. A candidate
//! matches a baseline on a set of metrics when it matches on every one of them.

use serde::{Deserialize, Serialize};

use crate::stats::Interval;

/// Which direction of a metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Distances, divergences, discriminability.
    Lower,
    /// Agreement, consistency, accuracy.
    Higher,
}

/// Whether `candidate` overlaps or beats `baseline` on a metric where `better` is better.
pub fn matches_or_beats(candidate: &Interval, baseline: &Interval, better: Better) -> bool {
    match better {
        Better::Lower => candidate.lower <= baseline.upper,
        Better::Higher => candidate.upper >= baseline.lower,
    }
}

/// The names of the metrics (of `(name, candidate, baseline, better)`) on which `candidate` does
/// not match the baseline; empty when it matches on all of them.
pub fn unmatched<'a>(metrics: &[(&'a str, &Interval, &Interval, Better)]) -> Vec<&'a str> {
    metrics
        .iter()
        .filter(|(_, c, b, better)| !matches_or_beats(c, b, *better))
        .map(|(name, ..)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(lower: f64, upper: f64) -> Interval {
        Interval {
            estimate: 0.5 * (lower + upper),
            lower,
            upper,
            standard_error: 0.0,
            confidence: 0.95,
            resamples: 100,
            sizes: vec![10, 10],
        }
    }

    #[test]
    fn overlapping_or_better_intervals_match_and_worse_ones_do_not() {
        let base = iv(1.0, 2.0);
        // lower is better: overlapping, touching and wholly below match; wholly above does not
        assert!(matches_or_beats(&iv(1.5, 3.0), &base, Better::Lower));
        assert!(matches_or_beats(&iv(2.0, 3.0), &base, Better::Lower));
        assert!(matches_or_beats(&iv(0.1, 0.2), &base, Better::Lower));
        assert!(!matches_or_beats(&iv(2.01, 3.0), &base, Better::Lower));
        // higher is better: mirrored
        assert!(matches_or_beats(&iv(0.0, 1.0), &base, Better::Higher));
        assert!(matches_or_beats(&iv(3.0, 4.0), &base, Better::Higher));
        assert!(!matches_or_beats(&iv(0.0, 0.99), &base, Better::Higher));
    }

    #[test]
    fn every_metric_must_match() {
        let (good, bad) = (iv(0.0, 1.0), iv(5.0, 6.0));
        let base = iv(1.0, 2.0);
        let all = [
            ("frechet", &good, &base, Better::Lower),
            ("agreement", &good, &base, Better::Higher),
        ];
        assert!(unmatched(&all).is_empty());
        let one_off = [
            ("frechet", &good, &base, Better::Lower),
            ("mmd", &bad, &base, Better::Lower),
            ("agreement", &bad, &base, Better::Higher),
        ];
        assert_eq!(unmatched(&one_off), vec!["mmd"]);
    }
}
