//! RankMe (Garrido et al., "RankMe: Assessing the downstream performance of pretrained
//! self-supervised representations by their rank", ICML 2023): the effective rank of an
//! embedding matrix, a label-free proxy of representation quality tracked during pretraining.
//!
//! `RankMe(Z) = exp(-sum_k p_k log p_k)` with `p_k = sigma_k / |sigma|_1 + eps`, `eps = 1e-7`,
//! over the `min(N, d)` singular values `sigma_k` of the (uncentred) `(N, d)` matrix `Z`.
//! The singular values are the square roots of the eigenvalues of the smaller Gram matrix
//! (`Z^T Z` or `Z Z^T`), computed in f64.

use candle_core::Tensor;

use crate::arrays::Embeddings;
use crate::error::{EvalError, Result};
use crate::linalg;

/// The `eps` added to each normalised singular value, as in the paper.
pub const RANKME_EPS: f64 = 1e-7;

/// RankMe of the rows of `z`.
///
/// # Shapes
/// - `z`: `(N, d)`; the result lies in `[1, min(N, d)]` (up to the `eps` term).
pub fn rankme(z: &Embeddings<'_>) -> Result<f64> {
    if z.is_empty() {
        return Err(EvalError::invalid("embeddings", "RankMe of no rows"));
    }
    let m = z.to_dmatrix();
    let gram = if m.nrows() >= m.ncols() {
        m.transpose() * &m
    } else {
        &m * m.transpose()
    };
    let singular: Vec<f64> = linalg::psd_eigenvalues(gram)
        .iter()
        .map(|l| l.sqrt())
        .collect();
    rankme_from_singular_values(&singular)
}

/// RankMe of an `(N, d)` tensor (any float dtype, any device).
///
/// # Shapes
/// - `z`: `(batch, dim)`.
pub fn rankme_tensor(z: &Tensor) -> Result<f64> {
    rankme(&Embeddings::from_tensor(z)?)
}

/// RankMe from singular values (non-negative, not all zero).
pub fn rankme_from_singular_values(singular: &[f64]) -> Result<f64> {
    if let Some(i) = singular.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(EvalError::invalid(
            format!("singular[{i}]"),
            format!("{} is not a non-negative finite value", singular[i]),
        ));
    }
    let total: f64 = singular.iter().sum();
    if total <= 0.0 {
        return Err(EvalError::invalid(
            "embeddings",
            "all singular values are 0 (zero matrix)",
        ));
    }
    let entropy: f64 = singular
        .iter()
        .map(|s| {
            let p = s / total + RANKME_EPS;
            -p * p.ln()
        })
        .sum();
    Ok(entropy.exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use flowfm_core::{SeededRng, Tolerance};

    #[test]
    fn identity_like_embedding_has_full_rank() {
        let d = 16;
        // three stacked identities: all singular values equal sqrt(3)
        let mut v = vec![0f32; 3 * d * d];
        for b in 0..3 {
            for i in 0..d {
                v[(b * d + i) * d + i] = 1.0;
            }
        }
        let r = rankme(&Embeddings::new(&v, 3 * d, d).unwrap()).unwrap();
        // p_k = 1/d + eps for all k: exp(-d p ln p)
        let p = 1.0 / d as f64 + RANKME_EPS;
        let expected = (-(d as f64) * p * p.ln()).exp();
        assert!(Tolerance::new(1e-9, 0.0).close(r, expected));
        assert!(Tolerance::new(1e-4, 0.0).close(r, d as f64));
    }

    #[test]
    fn rank_one_data_has_rank_about_one() {
        let mut rng = SeededRng::new(6);
        let (n, d) = (40, 10);
        let u = rng.normal_vec(n);
        let w = rng.normal_vec(d);
        let v: Vec<f32> = (0..n * d).map(|i| (u[i / d] * w[i % d]) as f32).collect();
        let r = rankme(&Embeddings::new(&v, n, d).unwrap()).unwrap();
        assert!(Tolerance::new(0.0, 1e-3).close(r, 1.0), "{r}");
    }

    #[test]
    fn two_singular_values_match_the_entropy_by_hand() {
        // diag(3, 1): p = (3/4, 1/4) + eps
        let v = [3.0f32, 0.0, 0.0, 1.0];
        let r = rankme(&Embeddings::new(&v, 2, 2).unwrap()).unwrap();
        let (p, q) = (0.75 + RANKME_EPS, 0.25 + RANKME_EPS);
        let expected = (-(p * p.ln()) - q * q.ln()).exp();
        assert!(
            Tolerance::new(1e-10, 0.0).close(r, expected),
            "{r} vs {expected}"
        );
        // wide matrices use the other Gram matrix and give the same answer
        let t =
            Tensor::from_slice(&[3.0f32, 0.0, 0.0, 0.0, 1.0, 0.0], (2, 3), &Device::Cpu).unwrap();
        assert!(Tolerance::new(1e-10, 0.0).close(rankme_tensor(&t).unwrap(), expected));
    }

    #[test]
    fn zero_matrix_is_an_error() {
        assert!(rankme(&Embeddings::new(&[0.0; 6], 2, 3).unwrap()).is_err());
        assert!(rankme_from_singular_values(&[1.0, -1.0]).is_err());
    }
}
