//! Interpolation shared by augmentation (flowfm-data) and the multi-task transforms
//! (flowfm-objectives): the natural cubic spline through a few knots.

use crate::error::CoreError;

/// Evaluates the natural cubic spline (zero second derivative at both ends) through the points
/// `(xs[i], ys[i])` (`xs` strictly increasing, at least 2 points) at `at`; outside the knots the end
/// polynomials are extended.
pub fn natural_cubic_spline(xs: &[f64], ys: &[f64], at: &[f64]) -> Result<Vec<f64>, CoreError> {
    let n = xs.len();
    if n < 2 || ys.len() != n {
        return Err(CoreError::InvalidParameter {
            name: "knots",
            reason: format!(
                "need >= 2 knots with one value each, got {} and {}",
                n,
                ys.len()
            ),
        });
    }
    if xs
        .windows(2)
        .any(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater))
    {
        return Err(CoreError::InvalidParameter {
            name: "knots",
            reason: "knot positions must be strictly increasing".into(),
        });
    }
    // Second derivatives m[i] from the tridiagonal system (Thomas algorithm), m[0] = m[n-1] = 0.
    let mut m = vec![0.0; n];
    if n > 2 {
        let h: Vec<f64> = xs.windows(2).map(|w| w[1] - w[0]).collect();
        let mut diag = vec![0.0; n];
        let mut rhs = vec![0.0; n];
        for i in 1..n - 1 {
            diag[i] = 2.0 * (h[i - 1] + h[i]);
            rhs[i] = 6.0 * ((ys[i + 1] - ys[i]) / h[i] - (ys[i] - ys[i - 1]) / h[i - 1]);
        }
        for i in 2..n - 1 {
            let f = h[i - 1] / diag[i - 1];
            diag[i] -= f * h[i - 1];
            rhs[i] -= f * rhs[i - 1];
        }
        for i in (1..n - 1).rev() {
            m[i] = (rhs[i] - h[i] * m[i + 1]) / diag[i];
        }
    }
    let mut seg = 0;
    Ok(at
        .iter()
        .map(|&t| {
            // The at-points are usually sorted; restart the search when they are not.
            if t < xs[seg] {
                seg = 0;
            }
            while seg + 2 < n && t > xs[seg + 1] {
                seg += 1;
            }
            let (x0, x1) = (xs[seg], xs[seg + 1]);
            let h = x1 - x0;
            let a = (x1 - t) / h;
            let b = (t - x0) / h;
            a * ys[seg]
                + b * ys[seg + 1]
                + ((a * a * a - a) * m[seg] + (b * b * b - b) * m[seg + 1]) * h * h / 6.0
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tolerance;

    #[test]
    fn the_spline_reproduces_a_parabola_s_interior_shape_and_extends_lines_outside_the_knots() {
        // Through (0,0), (1,1), (2,0): interior second derivative -3 (4 M = 6 (-1 - 1)), so
        // s(0.5) = -3 (0.5)^3 / 6 + (1 + 3 / 6) 0.5 = 0.6875, by symmetry s(1.5) the same.
        let v = natural_cubic_spline(&[0.0, 1.0, 2.0], &[0.0, 1.0, 0.0], &[0.5, 1.5]).unwrap();
        Tolerance::F64.assert_close(&v, &[0.6875, 0.6875]);
        // A line stays a line, also beyond the first and last knots.
        let xs = [0.0, 1.0, 3.0];
        let ys = [1.0, 3.0, 7.0];
        let v = natural_cubic_spline(&xs, &ys, &[-1.0, 2.0, 4.0]).unwrap();
        Tolerance::new(1e-12, 1e-12).assert_close(&v, &[-1.0, 5.0, 9.0]);
    }

    #[test]
    fn bad_knots_are_errors_naming_the_parameter() {
        let e = natural_cubic_spline(&[0.0, 0.0], &[1.0, 2.0], &[0.5]).unwrap_err();
        assert!(e.to_string().contains("knots"), "{e}");
        assert!(natural_cubic_spline(&[0.0], &[1.0], &[0.5]).is_err());
        assert!(natural_cubic_spline(&[0.0, 1.0], &[1.0], &[0.5]).is_err());
    }
}
