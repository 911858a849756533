//! A Gaussian fitted to representations (full or diagonal covariance), to draw conditioning
//! vectors for unconditional-style generation from a seeded stream (`derive("representations")`).

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use flowfm_core::SeededRng;
use serde::{Deserialize, Serialize};

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

/// Lower Cholesky factor of the symmetric `d x d` matrix `a` (row-major), or `None` when it is
/// not positive definite.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
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

impl RepresentationGaussian {
    /// Fits the mean and (sample, `n - 1`) covariance of the rows of `z`.
    ///
    /// # Shapes
    /// - `z`: `(N, d)`, `N >= 2`
    pub fn fit(z: &Tensor, kind: CovarianceKind) -> Result<Self> {
        let (n, d) = z.dims2().context("z: expected an (N, d) tensor")?;
        ensure!(
            n >= 2,
            "z: a covariance needs at least 2 representations, got {n}"
        );
        let z = z.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let mean_t = z.mean_keepdim(0)?;
        let centred = z.broadcast_sub(&mean_t)?;
        let mean = mean_t.flatten_all()?.to_vec1::<f64>()?;
        ensure!(
            mean.iter().all(|v| v.is_finite()),
            "z: representations contain non-finite values"
        );
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
            let mut lower = cholesky(&cov, d);
            let mut eps = 1e-9 * scale;
            while lower.is_none() && eps <= 1e-1 * scale {
                let mut a = cov.clone();
                for i in 0..d {
                    a[i * d + i] += eps;
                }
                lower = cholesky(&a, d);
                ridge = eps;
                eps *= 10.0;
            }
            let lower = lower.with_context(|| {
                format!("z: the covariance of {n} representations of dimension {d} cannot be factorised; use a diagonal covariance")
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

    /// `n` draws `mean + L eps`, `eps ~ N(0, I)` from `rng`, as f32 on `device`.
    ///
    /// # Shapes
    /// - returns `(n, d)`
    pub fn sample(&self, n: usize, rng: &mut SeededRng, device: &Device) -> Result<Tensor> {
        ensure!(n >= 1, "count: must be at least 1");
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
