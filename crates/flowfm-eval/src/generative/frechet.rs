//! Frechet distance between two sets of feature vectors (the FID recipe of Heusel et al. 2017,
//! applied to a fixed reference encoder's features):
//!
//! `FD = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})`.
//!
//! Means and sample covariances (`n - 1`) are computed in f64. The matrix square roots use
//! symmetric eigendecompositions with negative eigenvalues clamped to 0, so rank-deficient
//! covariances (fewer samples than dimensions) and slightly non-PSD products from rounding are
//! handled; `S_1^{1/2} S_2 S_1^{1/2}` is symmetric PSD and has the same trace of square root as
//! `S_1 S_2`.

use nalgebra::DMatrix;
use serde::Serialize;

use crate::arrays::Embeddings;
use crate::error::{EvalError, Result};
use crate::linalg;

/// Mean and covariance of a set of feature vectors (cache the real set's, reuse it per model).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GaussianStats {
    mean: Vec<f64>,
    /// Row-major `d x d`.
    cov: Vec<f64>,
}

impl GaussianStats {
    /// Fits the mean and sample covariance of the rows of `x` (at least 2 rows).
    ///
    /// # Shapes
    /// - `x`: `(N, d)`, `N >= 2`.
    pub fn fit(x: &Embeddings<'_>) -> Result<Self> {
        if x.rows() < 2 {
            return Err(EvalError::invalid(
                "features",
                format!("a covariance needs at least 2 rows, got {}", x.rows()),
            ));
        }
        let (mean, cov) = linalg::mean_and_cov(&x.to_dmatrix());
        Ok(Self {
            mean: mean.as_slice().to_vec(),
            cov: cov.transpose().as_slice().to_vec(),
        })
    }

    /// Statistics from a known mean and covariance (row-major `d x d`, symmetric, finite).
    pub fn new(mean: Vec<f64>, cov: Vec<f64>) -> Result<Self> {
        let d = mean.len();
        if d == 0 || cov.len() != d * d {
            return Err(EvalError::invalid(
                "cov",
                format!("{} values for a {d} x {d} covariance", cov.len()),
            ));
        }
        if let Some(i) = mean.iter().chain(&cov).position(|v| !v.is_finite()) {
            return Err(EvalError::invalid(
                "mean/cov",
                format!("value {i} is not finite"),
            ));
        }
        for i in 0..d {
            for j in 0..i {
                let (a, b) = (cov[i * d + j], cov[j * d + i]);
                if (a - b).abs() > 1e-9 * (1.0 + a.abs().max(b.abs())) {
                    return Err(EvalError::invalid(
                        format!("cov[{i}][{j}]"),
                        format!("{a} != cov[{j}][{i}] = {b}: not symmetric"),
                    ));
                }
            }
        }
        Ok(Self { mean, cov })
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The mean vector.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The covariance, row-major `d x d`.
    pub fn cov(&self) -> &[f64] {
        &self.cov
    }

    fn cov_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.dim(), self.dim(), &self.cov)
    }
}

/// Frechet distance between Gaussian fits of two feature sets of the same dimension.
///
/// # Shapes
/// - `a`: `(N_a, d)`, `b`: `(N_b, d)`, both with at least 2 rows.
pub fn frechet_distance(a: &Embeddings<'_>, b: &Embeddings<'_>) -> Result<f64> {
    frechet_distance_from_stats(&GaussianStats::fit(a)?, &GaussianStats::fit(b)?)
}

/// Frechet distance between two Gaussians given by their statistics (clamped at 0: the exact
/// value is non-negative, rounding can push it a hair below).
pub fn frechet_distance_from_stats(a: &GaussianStats, b: &GaussianStats) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(EvalError::mismatch(
            "a",
            "b",
            format!("dimension {} vs {}", a.dim(), b.dim()),
        ));
    }
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let (s1, s2) = (a.cov_matrix(), b.cov_matrix());
    let r1 = linalg::psd_sqrt(s1.clone());
    let product = &r1 * &s2 * &r1;
    let tr_sqrt: f64 = linalg::psd_eigenvalues(product)
        .iter()
        .map(|l| l.sqrt())
        .sum();
    let fd = mean_term + s1.trace() + s2.trace() - 2.0 * tr_sqrt;
    Ok(fd.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::{SeededRng, Tolerance};

    /// `n` draws from N(mean, L L^T) with a 2 x 2 lower-triangular `l`.
    fn gaussian_2d(n: usize, mean: [f64; 2], l: [[f64; 2]; 2], rng: &mut SeededRng) -> Vec<f32> {
        let mut v = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let (z0, z1) = (rng.normal(), rng.normal());
            v.push((mean[0] + l[0][0] * z0) as f32);
            v.push((mean[1] + l[1][0] * z0 + l[1][1] * z1) as f32);
        }
        v
    }

    /// For 2 x 2 PSD matrices, `tr(M^{1/2}) = sqrt(tr M + 2 sqrt(det M))`, and
    /// `tr((S1^{1/2} S2 S1^{1/2})^{1/2})` only depends on `tr(S1 S2)` and `det(S1) det(S2)`.
    fn closed_form_2d(mu1: [f64; 2], s1: [f64; 4], mu2: [f64; 2], s2: [f64; 4]) -> f64 {
        let det = |s: [f64; 4]| s[0] * s[3] - s[1] * s[2];
        let tr_prod = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
        let tr_sqrt = (tr_prod + 2.0 * (det(s1) * det(s2)).sqrt()).sqrt();
        let dm = (mu1[0] - mu2[0]).powi(2) + (mu1[1] - mu2[1]).powi(2);
        dm + s1[0] + s1[3] + s2[0] + s2[3] - 2.0 * tr_sqrt
    }

    #[test]
    fn non_commuting_covariances_match_the_2d_closed_form() {
        let (mu1, s1) = ([0.0, 1.0], [2.0, 0.8, 0.8, 1.0]);
        let (mu2, s2) = ([1.5, -0.5], [0.5, -0.3, -0.3, 3.0]);
        let a = GaussianStats::new(mu1.to_vec(), s1.to_vec()).unwrap();
        let b = GaussianStats::new(mu2.to_vec(), s2.to_vec()).unwrap();
        let fd = frechet_distance_from_stats(&a, &b).unwrap();
        let expected = closed_form_2d(mu1, s1, mu2, s2);
        assert!(
            Tolerance::new(1e-10, 1e-12).close(fd, expected),
            "{fd} vs {expected}"
        );
        // symmetric in its arguments
        let back = frechet_distance_from_stats(&b, &a).unwrap();
        assert!(Tolerance::new(1e-10, 1e-12).close(back, expected));
    }

    #[test]
    fn diagonal_covariances_give_the_sum_of_squared_sd_differences() {
        // commuting case: FD = |dmu|^2 + sum_i (sigma1_i - sigma2_i)^2
        let a = GaussianStats::new(vec![0.0, 0.0, 0.0], diag(&[1.0, 4.0, 9.0])).unwrap();
        let b = GaussianStats::new(vec![1.0, 2.0, 0.0], diag(&[4.0, 4.0, 1.0])).unwrap();
        let fd = frechet_distance_from_stats(&a, &b).unwrap();
        let expected = 5.0 + 1.0 + 0.0 + 4.0;
        assert!(Tolerance::new(1e-10, 1e-12).close(fd, expected), "{fd}");
    }

    fn diag(v: &[f64]) -> Vec<f64> {
        let d = v.len();
        let mut m = vec![0.0; d * d];
        for (i, x) in v.iter().enumerate() {
            m[i * d + i] = *x;
        }
        m
    }

    #[test]
    fn samples_of_shifted_gaussians_approach_the_closed_form() {
        let mut rng = SeededRng::new(17);
        let (mu1, l1) = ([0.0, 1.0], [[1.0, 0.0], [0.6, 0.8]]);
        let (mu2, l2) = ([2.0, 0.0], [[0.5, 0.0], [-0.4, 1.5]]);
        let cov = |l: [[f64; 2]; 2]| {
            [
                l[0][0] * l[0][0],
                l[0][0] * l[1][0],
                l[0][0] * l[1][0],
                l[1][0] * l[1][0] + l[1][1] * l[1][1],
            ]
        };
        let expected = closed_form_2d(mu1, cov(l1), mu2, cov(l2));
        let n = 20_000;
        let a = gaussian_2d(n, mu1, l1, &mut rng);
        let b = gaussian_2d(n, mu2, l2, &mut rng);
        let fd = frechet_distance(
            &Embeddings::new(&a, n, 2).unwrap(),
            &Embeddings::new(&b, n, 2).unwrap(),
        )
        .unwrap();
        assert!(
            Tolerance::new(0.03, 0.0).close(fd, expected),
            "{fd} vs {expected}"
        );
    }

    #[test]
    fn identical_sets_have_zero_distance_even_when_rank_deficient() {
        let mut rng = SeededRng::new(2);
        // 5 points in 8 dimensions: covariance of rank 4
        let x: Vec<f32> = rng.normal_vec(5 * 8).iter().map(|&v| v as f32).collect();
        let e = Embeddings::new(&x, 5, 8).unwrap();
        let fd = frechet_distance(&e, &e).unwrap();
        assert!(Tolerance::new(0.0, 1e-6).close(fd, 0.0), "{fd}");
        let shifted: Vec<f32> = x.iter().map(|v| v + 1.0).collect();
        let fd = frechet_distance(&e, &Embeddings::new(&shifted, 5, 8).unwrap()).unwrap();
        // a pure shift by 1 in 8 dimensions: |dmu|^2 = 8
        assert!(Tolerance::new(1e-5, 1e-5).close(fd, 8.0), "{fd}");
    }

    #[test]
    fn bad_statistics_are_rejected() {
        assert!(GaussianStats::new(vec![0.0, 0.0], vec![1.0, 0.5, 0.4, 1.0]).is_err());
        assert!(GaussianStats::new(vec![0.0], vec![1.0, 0.0]).is_err());
        let one = Embeddings::new(&[1.0, 2.0], 1, 2).unwrap();
        assert!(frechet_distance(&one, &one).is_err());
        let a = GaussianStats::new(vec![0.0], vec![1.0]).unwrap();
        let b = GaussianStats::new(vec![0.0, 0.0], diag(&[1.0, 1.0])).unwrap();
        assert!(frechet_distance_from_stats(&a, &b).is_err());
    }
}
