//! Dense f64 linear algebra helpers: covariance, symmetric PSD square roots and pairwise squared
//! distances (on nalgebra), and the Cholesky factor (on row-major slices).

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Column means and the sample covariance (`n - 1`) of the rows of `x` (`n >= 2`).
pub(crate) fn mean_and_cov(x: &DMatrix<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let n = x.nrows();
    let mean = DVector::from_iterator(x.ncols(), x.column_iter().map(|c| c.mean()));
    let mut centred = x.clone();
    for (mut col, m) in centred.column_iter_mut().zip(mean.iter()) {
        col.add_scalar_mut(-m);
    }
    let cov = (centred.transpose() * &centred) / (n as f64 - 1.0);
    (mean, symmetrise(cov))
}

/// `(a + a^T) / 2`: removes the rounding asymmetry before a symmetric eigendecomposition.
pub(crate) fn symmetrise(a: DMatrix<f64>) -> DMatrix<f64> {
    (&a + a.transpose()) * 0.5
}

/// Eigenvalues of a symmetric matrix, negative ones (rounding of a PSD matrix) clamped to 0.
pub(crate) fn psd_eigenvalues(a: DMatrix<f64>) -> Vec<f64> {
    SymmetricEigen::new(symmetrise(a))
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0))
        .collect()
}

/// The PSD square root `V sqrt(max(L, 0)) V^T` of a symmetric matrix.
pub(crate) fn psd_sqrt(a: DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(symmetrise(a));
    let v = &eig.eigenvectors;
    let mut scaled = v.clone();
    for (mut col, &l) in scaled.column_iter_mut().zip(eig.eigenvalues.iter()) {
        col *= l.max(0.0).sqrt();
    }
    symmetrise(&scaled * v.transpose())
}

/// Squared Euclidean distances between the rows of `a` and the rows of `b`, clamped at 0.
pub(crate) fn sq_dists(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    let an: Vec<f64> = a.row_iter().map(|r| r.norm_squared()).collect();
    let bn: Vec<f64> = b.row_iter().map(|r| r.norm_squared()).collect();
    let mut d = a * b.transpose();
    for i in 0..d.nrows() {
        for j in 0..d.ncols() {
            d[(i, j)] = (an[i] + bn[j] - 2.0 * d[(i, j)]).max(0.0);
        }
    }
    d
}

/// Lower Cholesky factor `L` (row-major `d x d`, `L L^T = a`) of the symmetric row-major `d x d`
/// matrix `a` (only its lower triangle is read), or `None` when `a` is not positive definite
/// (a pivot that is not positive and finite). Cholesky-Banachiewicz order: row by row, each entry
/// from the already computed ones.
pub(crate) fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if !(v > 0.0 && v.is_finite()) {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    #[test]
    fn psd_sqrt_squares_back_to_the_matrix() {
        let a = DMatrix::from_row_slice(3, 3, &[4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0]);
        let r = psd_sqrt(a.clone());
        let back = &r * &r;
        Tolerance::new(1e-10, 1e-12).assert_close(back.as_slice(), a.as_slice());
    }

    #[test]
    fn covariance_matches_a_hand_computed_case() {
        // rows (0, 0), (2, 2), (4, 8): means (2, 10/3);
        // var_x = (4 + 0 + 4) / 2 = 4; cov_xy = (-2 * -10/3 + 0 + 2 * 14/3) / 2 = 8;
        // var_y = (100/9 + 16/9 + 196/9) / 2 = 52/3
        let x = DMatrix::from_row_slice(3, 2, &[0.0, 0.0, 2.0, 2.0, 4.0, 8.0]);
        let (m, c) = mean_and_cov(&x);
        Tolerance::F64.assert_close(m.as_slice(), &[2.0, 10.0 / 3.0]);
        Tolerance::new(1e-12, 1e-12).assert_close(c.as_slice(), &[4.0, 8.0, 8.0, 52.0 / 3.0]);
    }

    #[test]
    fn cholesky_factor_is_lower_triangular_and_multiplies_back() {
        // hand-made L = [[2, 0, 0], [1, 3, 0], [-1, 0.5, 1.5]]; a = L L^T
        let l = [2.0, 0.0, 0.0, 1.0, 3.0, 0.0, -1.0, 0.5, 1.5];
        let lm = DMatrix::from_row_slice(3, 3, &l);
        let a = &lm * lm.transpose();
        let a_rows: Vec<f64> = a.transpose().as_slice().to_vec();
        let got = cholesky(&a_rows, 3).unwrap();
        Tolerance::new(1e-12, 1e-12).assert_close(&got, &l);
        // not positive definite: a zero and a negative pivot
        assert!(cholesky(&[1.0, 1.0, 1.0, 1.0], 2).is_none());
        assert!(cholesky(&[-1.0], 1).is_none());
        assert!(cholesky(&[f64::NAN], 1).is_none());
        assert_eq!(cholesky(&[], 0), Some(vec![]));
    }

    #[test]
    fn squared_distances_match_direct_differences() {
        let a = DMatrix::from_row_slice(2, 2, &[0.0, 0.0, 1.0, 2.0]);
        let b = DMatrix::from_row_slice(1, 2, &[3.0, -1.0]);
        let d = sq_dists(&a, &b);
        Tolerance::new(1e-12, 1e-12).assert_close(d.as_slice(), &[10.0, 13.0]);
    }
}
