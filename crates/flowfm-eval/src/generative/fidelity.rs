//! Phase-free conditional fidelity of generation from a window's own representation `E(x)`:
//!
//! - representation consistency: per window, `cos(E(G(E(x))), E(x))`, the cosine between the
//!   representation of the generated window and the representation it was generated from
//!   ([`cosine_per_row`]); a shift-invariant encoder cannot recover phase, so this, not the
//!   sample-wise correlation with `x`, is what a conditional generator can be asked to keep;
//! - label agreement: per window, whether a classifier trained on real labelled windows gives the
//!   generated window its source window's label ([`agreement`]); the same classifier's accuracy
//!   on the real source windows is the ceiling.
//!
//! Both are per-window values, so their means get intervals from
//! [`super::resample::Resamples::mean_interval`].

use crate::arrays::Embeddings;
use crate::error::{EvalError, Result};

/// `cos(a_i, b_i)` for every row `i` (0 where either row is all zeros).
///
/// # Shapes
/// - `a`, `b`: `(N, d)`, same shape.
pub fn cosine_per_row(a: &Embeddings<'_>, b: &Embeddings<'_>) -> Result<Vec<f64>> {
    if a.rows() != b.rows() || a.dim() != b.dim() {
        return Err(EvalError::mismatch(
            "a",
            "b",
            format!("({}, {}) vs ({}, {})", a.rows(), a.dim(), b.rows(), b.dim()),
        ));
    }
    Ok((0..a.rows())
        .map(|i| {
            let (x, y) = (a.row(i), b.row(i));
            let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
            for (&u, &v) in x.iter().zip(y) {
                let (u, v) = (f64::from(u), f64::from(v));
                xy += u * v;
                xx += u * u;
                yy += v * v;
            }
            if xx > 0.0 && yy > 0.0 {
                xy / (xx.sqrt() * yy.sqrt())
            } else {
                0.0
            }
        })
        .collect())
}

/// `1.0` where `predicted[i] == expected[i]`, else `0.0` (same lengths, at least one).
pub fn agreement(predicted: &[usize], expected: &[usize]) -> Result<Vec<f64>> {
    if predicted.len() != expected.len() {
        return Err(EvalError::mismatch(
            "predicted",
            "expected",
            format!("{} vs {} labels", predicted.len(), expected.len()),
        ));
    }
    if predicted.is_empty() {
        return Err(EvalError::invalid("predicted", "no labels"));
    }
    Ok(predicted
        .iter()
        .zip(expected)
        .map(|(p, e)| if p == e { 1.0 } else { 0.0 })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosines_of_hand_made_rows() {
        // (1, 0) vs (1, 0): 1; (1, 1) vs (-1, -1): -1; (3, 4) vs (4, 3): 24 / 25; zero row: 0
        let a = Embeddings::new(&[1.0, 0.0, 1.0, 1.0, 3.0, 4.0, 0.0, 0.0], 4, 2).unwrap();
        let b = Embeddings::new(&[2.0, 0.0, -1.0, -1.0, 4.0, 3.0, 1.0, 0.0], 4, 2).unwrap();
        let c = cosine_per_row(&a, &b).unwrap();
        let expected = [1.0, -1.0, 0.96, 0.0];
        for (x, y) in c.iter().zip(expected) {
            assert!((x - y).abs() < 1e-7, "{c:?}");
        }
        let short = Embeddings::new(&[1.0, 0.0], 1, 2).unwrap();
        assert!(cosine_per_row(&a, &short).is_err());
    }

    #[test]
    fn agreement_of_a_hand_made_case() {
        // the classifier gives 3 of 4 generated windows their source window's label
        let v = agreement(&[0, 2, 1, 1], &[0, 2, 2, 1]).unwrap();
        assert_eq!(v, vec![1.0, 1.0, 0.0, 1.0]);
        assert!((v.iter().sum::<f64>() / 4.0 - 0.75).abs() < 1e-15);
        assert!(agreement(&[0], &[0, 1]).is_err());
        assert!(agreement(&[], &[]).is_err());
    }
}
