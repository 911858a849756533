//! A Gaussian fitted to representations, to draw conditioning vectors for new windows: mean and
//! sample covariance of `z`, factorised for sampling (Cholesky of the full covariance with the
//! smallest ridge that makes it positive definite, or per-dimension standard deviations).
//!
//! The fit and the draws run on candle tensors in f64 on the CPU, in the operation order the
//! generation study has always used, so its numbers do not move; [`GaussianStats`] (Frechet
//! distance) is the same mean and covariance without a factor.
//!
//! [`GaussianStats`]: crate::generative::frechet::GaussianStats

use candle_core::{DType, Device, Tensor};
use flowfm_core::SeededRng;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::linalg;

/// Which covariance [`RepresentationGaussian::fit`] estimates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CovarianceKind {
    /// Full sample covariance (a small ridge is added if needed for the Cholesky factor).
    Full,
    /// Per-dimension variances only.
    Diagonal,
    /// Full when there are more representations than dimensions, diagonal otherwise (the full
    /// estimate is singular then).
    Auto,
}

/// How draws are made from the fitted covariance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CovarianceFactor {
    /// Lower Cholesky factor `L` (row-major `d x d`) of `cov + ridge * I`.
    Full {
        /// The factor.
        lower: Vec<f64>,
        /// Ridge added to the diagonal before factorising (0 when none was needed).
        ridge: f64,
    },
    /// Standard deviations per dimension.
    Diagonal {
        /// The standard deviations.
        sd: Vec<f64>,
    },
}

/// A Gaussian fitted to representations, to draw conditioning vectors for new windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepresentationGaussian {
    /// Mean representation.
    pub mean: Vec<f64>,
    /// The covariance's factor.
    pub factor: CovarianceFactor,
    /// Representations the fit used.
    pub n_fit: usize,
}

/// The first ridge tried is `RIDGE_START * s`, `s` the mean variance; it grows tenfold per try.
const RIDGE_START: f64 = 1e-9;

/// The largest ridge tried is `RIDGE_MAX * s`; beyond it the fit fails (use a diagonal fit).
const RIDGE_MAX: f64 = 1e-1;

impl RepresentationGaussian {
    /// Fits the mean and (sample, `n - 1`) covariance of the rows of `z` (any float dtype, any
    /// device; computed in f64 on the CPU).
    ///
    /// A full covariance that is not positive definite gets the smallest ridge
    /// `1e-9 s, 1e-8 s, ..., 1e-1 s` (`s` the mean variance, 1 if that is 0) whose
    /// `cov + ridge I` factorises; if none does, the fit fails.
    ///
    /// # Shapes
    /// - `z`: `(N, d)`, `N >= 2`, `d >= 1`
    pub fn fit(z: &Tensor, kind: CovarianceKind) -> Result<Self> {
        let (n, d) = z.dims2().map_err(|_| {
            EvalError::invalid(
                "z",
                format!("expected an (N, d) tensor, got shape {:?}", z.dims()),
            )
        })?;
        if n < 2 {
            return Err(EvalError::invalid(
                "z",
                format!("a covariance needs at least 2 representations, got {n}"),
            ));
        }
        if d == 0 {
            return Err(EvalError::invalid("z", "representations of dimension 0"));
        }
        let z = z.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let mean_t = z.mean_keepdim(0)?;
        let centred = z.broadcast_sub(&mean_t)?;
        let mean = mean_t.flatten_all()?.to_vec1::<f64>()?;
        if !mean.iter().all(|v| v.is_finite()) {
            return Err(EvalError::invalid(
                "z",
                "representations contain non-finite values",
            ));
        }
        let full = match kind {
            CovarianceKind::Full => true,
            CovarianceKind::Diagonal => false,
            CovarianceKind::Auto => n > d,
        };
        let factor = if full {
            let cov = (centred.t()?.matmul(&centred)? / (n - 1) as f64)?;
            let cov = cov.flatten_all()?.to_vec1::<f64>()?;
            let scale = (0..d).map(|i| cov[i * d + i]).sum::<f64>() / d as f64;
            let scale = if scale > 0.0 { scale } else { 1.0 };
            let mut ridge = 0.0;
            let mut lower = linalg::cholesky(&cov, d);
            let mut eps = RIDGE_START * scale;
            while lower.is_none() && eps <= RIDGE_MAX * scale {
                let mut a = cov.clone();
                for i in 0..d {
                    a[i * d + i] += eps;
                }
                lower = linalg::cholesky(&a, d);
                ridge = eps;
                eps *= 10.0;
            }
            let lower = lower.ok_or_else(|| {
                EvalError::invalid(
                    "z",
                    format!(
                        "the covariance of {n} representations of dimension {d} cannot be \
                         factorised; use a diagonal covariance"
                    ),
                )
            })?;
            CovarianceFactor::Full { lower, ridge }
        } else {
            let var = (centred.sqr()?.sum(0)? / (n - 1) as f64)?.to_vec1::<f64>()?;
            CovarianceFactor::Diagonal {
                sd: var.into_iter().map(|v| v.max(0.0).sqrt()).collect(),
            }
        };
        Ok(Self {
            mean,
            factor,
            n_fit: n,
        })
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The covariance the draws follow (row-major `d x d`: `L L^T` or `diag(sd^2)`).
    pub fn covariance(&self) -> Vec<f64> {
        let d = self.dim();
        let mut c = vec![0.0; d * d];
        match &self.factor {
            CovarianceFactor::Full { lower, .. } => {
                for i in 0..d {
                    for j in 0..d {
                        c[i * d + j] = (0..=i.min(j))
                            .map(|k| lower[i * d + k] * lower[j * d + k])
                            .sum();
                    }
                }
            }
            CovarianceFactor::Diagonal { sd } => {
                for (i, s) in sd.iter().enumerate() {
                    c[i * d + i] = s * s;
                }
            }
        }
        c
    }

    /// `n` draws `mean + L eps`, `eps ~ N(0, I)` from `rng` (`n * d` normals, row by row), as
    /// f32 on `device`.
    ///
    /// # Shapes
    /// - returns `(n, d)`
    pub fn sample(&self, n: usize, rng: &mut SeededRng, device: &Device) -> Result<Tensor> {
        if n == 0 {
            return Err(EvalError::invalid("count", "must be at least 1"));
        }
        let d = self.dim();
        let eps = Tensor::from_vec(rng.normal_vec(n * d), (n, d), &Device::Cpu)?;
        let mean = Tensor::from_slice(&self.mean, (1, d), &Device::Cpu)?;
        let z = match &self.factor {
            CovarianceFactor::Full { lower, .. } => {
                let l = Tensor::from_slice(lower, (d, d), &Device::Cpu)?;
                eps.matmul(&l.t()?)?
            }
            CovarianceFactor::Diagonal { sd } => {
                eps.broadcast_mul(&Tensor::from_slice(sd, (1, d), &Device::Cpu)?)?
            }
        };
        Ok(z.broadcast_add(&mean)?
            .to_dtype(DType::F32)?
            .to_device(device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrays::Embeddings;
    use crate::generative::frechet::GaussianStats;
    use flowfm_core::Tolerance;

    /// `n` rows of dimension 3 drawn from a correlated Gaussian (mean (1, -2, 0.5)).
    fn correlated(n: usize, rng: &mut SeededRng) -> Vec<f32> {
        let mut v = Vec::with_capacity(3 * n);
        for _ in 0..n {
            let (a, b, c) = (rng.normal(), rng.normal(), rng.normal());
            v.extend([
                (1.0 + 2.0 * a) as f32,
                (-2.0 + a + 0.5 * b) as f32,
                (0.5 - a + 0.3 * b + 0.2 * c) as f32,
            ]);
        }
        v
    }

    #[test]
    fn the_full_factor_reproduces_the_sample_covariance() {
        let mut rng = SeededRng::new(3);
        let x = correlated(50, &mut rng);
        let z = Tensor::from_slice(&x, (50, 3), &Device::Cpu).unwrap();
        let g = RepresentationGaussian::fit(&z, CovarianceKind::Full).unwrap();
        assert!(matches!(g.factor, CovarianceFactor::Full { ridge, .. } if ridge == 0.0));
        // the same statistics computed independently (nalgebra, GaussianStats)
        let s = GaussianStats::fit(&Embeddings::new(&x, 50, 3).unwrap()).unwrap();
        let t = Tolerance::new(1e-10, 1e-12);
        t.assert_close(&g.mean, s.mean());
        t.assert_close(&g.covariance(), s.cov());
        assert_eq!((g.dim(), g.n_fit), (3, 50));
        // Auto picks the full covariance when N > d, and diagonal keeps only the variances
        let auto = RepresentationGaussian::fit(&z, CovarianceKind::Auto).unwrap();
        assert_eq!(auto, g);
        let diag = RepresentationGaussian::fit(&z, CovarianceKind::Diagonal).unwrap();
        let c = diag.covariance();
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { s.cov()[i * 3 + i] } else { 0.0 };
                assert!(t.close(c[i * 3 + j], want), "({i}, {j})");
            }
        }
    }

    #[test]
    fn a_singular_covariance_gets_the_smallest_working_ridge() {
        // 3 points in 3 dimensions: the sample covariance has rank 2
        let x = [1.0f32, 0.0, 2.0, 0.0, 1.0, -1.0, 2.0, 2.0, 0.5];
        let z = Tensor::from_slice(&x, (3, 3), &Device::Cpu).unwrap();
        let g = RepresentationGaussian::fit(&z, CovarianceKind::Full).unwrap();
        let CovarianceFactor::Full { ridge, .. } = g.factor else {
            panic!("expected a full factor");
        };
        assert!(ridge > 0.0);
        // L L^T = cov + ridge I
        let s = GaussianStats::fit(&Embeddings::new(&x, 3, 3).unwrap()).unwrap();
        let mut want = s.cov().to_vec();
        for i in 0..3 {
            want[i * 3 + i] += ridge;
        }
        Tolerance::new(1e-9, 1e-12).assert_close(&g.covariance(), &want);
        // the ridge is a try of the sequence 1e-9 s, 1e-8 s, ... (s the mean variance), and the
        // try before it (if any) does not factorise
        let scale = (0..3).map(|i| s.cov()[i * 3 + i]).sum::<f64>() / 3.0;
        let tries = (ridge / (RIDGE_START * scale)).log10();
        assert!(
            (tries - tries.round()).abs() < 1e-6 && tries > -0.5,
            "{ridge} {scale}"
        );
        if tries.round() >= 1.0 {
            let mut smaller = s.cov().to_vec();
            for i in 0..3 {
                smaller[i * 3 + i] += ridge / 10.0;
            }
            assert!(linalg::cholesky(&smaller, 3).is_none());
        }
        // Auto falls back to diagonal when N <= d
        let auto = RepresentationGaussian::fit(&z, CovarianceKind::Auto).unwrap();
        assert!(matches!(auto.factor, CovarianceFactor::Diagonal { .. }));
    }

    #[test]
    fn draws_have_the_fitted_mean_and_covariance() {
        let g = RepresentationGaussian {
            mean: vec![1.0, -2.0],
            factor: CovarianceFactor::Full {
                lower: vec![2.0, 0.0, 1.0, 0.5],
                ridge: 0.0,
            },
            n_fit: 10,
        };
        let n = 40_000;
        let z = g.sample(n, &mut SeededRng::new(8), &Device::Cpu).unwrap();
        assert_eq!(z.dims(), &[n, 2]);
        assert_eq!(z.dtype(), DType::F32);
        let x: Vec<f32> = z.flatten_all().unwrap().to_vec1().unwrap();
        let s = GaussianStats::fit(&Embeddings::new(&x, n, 2).unwrap()).unwrap();
        // cov = L L^T = [[4, 2], [2, 1.25]]; Monte Carlo sd of each moment about 0.01-0.03
        Tolerance::new(0.0, 0.05).assert_close(s.mean(), &[1.0, -2.0]);
        Tolerance::new(0.03, 0.0).assert_close(s.cov(), &[4.0, 2.0, 2.0, 1.25]);
        assert_eq!(g.covariance(), vec![4.0, 2.0, 2.0, 1.25]);
        // the same seed draws the same windows' conditions
        let again = g.sample(n, &mut SeededRng::new(8), &Device::Cpu).unwrap();
        let y: Vec<f32> = again.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn the_serialised_form_is_stable() {
        // the generation study writes these into its JSON; the layout must not change
        let g = RepresentationGaussian {
            mean: vec![0.5],
            factor: CovarianceFactor::Full {
                lower: vec![2.0],
                ridge: 0.0,
            },
            n_fit: 4,
        };
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(
            json,
            r#"{"mean":[0.5],"factor":{"full":{"lower":[2.0],"ridge":0.0}},"n_fit":4}"#
        );
        let back: RepresentationGaussian = serde_json::from_str(&json).unwrap();
        assert_eq!(back, g);
        let d = CovarianceFactor::Diagonal { sd: vec![1.0] };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"diagonal":{"sd":[1.0]}}"#
        );
        assert_eq!(
            serde_json::to_string(&CovarianceKind::Auto).unwrap(),
            r#""auto""#
        );
    }

    #[test]
    fn bad_representations_are_errors() {
        let dev = Device::Cpu;
        let one = Tensor::from_slice(&[1.0f32, 2.0], (1, 2), &dev).unwrap();
        assert!(RepresentationGaussian::fit(&one, CovarianceKind::Auto).is_err());
        let flat = Tensor::from_slice(&[1.0f32, 2.0], 2, &dev).unwrap();
        assert!(RepresentationGaussian::fit(&flat, CovarianceKind::Auto)
            .unwrap_err()
            .to_string()
            .contains("(N, d)"));
        let nan = Tensor::from_slice(&[1.0f32, f32::NAN, 0.0, 1.0], (2, 2), &dev).unwrap();
        assert!(RepresentationGaussian::fit(&nan, CovarianceKind::Diagonal).is_err());
        let g = RepresentationGaussian::fit(
            &Tensor::from_slice(&[1.0f32, 2.0, 0.0, 1.0], (2, 2), &dev).unwrap(),
            CovarianceKind::Diagonal,
        )
        .unwrap();
        assert!(g.sample(0, &mut SeededRng::new(1), &dev).is_err());
    }
}
