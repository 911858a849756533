//! Reconstruction error between real windows and their reconstructions (generation conditioned on
//! each real window's own representation): mean squared error over all values, and the Pearson
//! correlation per window (per channel, averaged over the window's channels).

use serde::Serialize;

use crate::arrays::Windows;
use crate::error::{EvalError, Result};
use crate::stats;

/// Reconstruction quality over a set of windows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReconstructionError {
    /// Mean squared error over every value.
    pub mse: f64,
    /// Square root of `mse`.
    pub rmse: f64,
    /// Mean over windows of the per-window correlation.
    pub corr_mean: f64,
    /// Sample sd over windows of the per-window correlation (`None` for fewer than 2 windows).
    pub corr_sd: Option<f64>,
    /// Windows compared.
    pub n_windows: usize,
    /// Windows whose correlation is undefined (every channel constant in the real window or in
    /// its reconstruction) and therefore left out of `corr_mean`.
    pub n_corr_undefined: usize,
}

/// Compares `real[i]` with `recon[i]` for every window.
///
/// A window's correlation is the mean, over its channels, of the Pearson correlation between the
/// real channel and the reconstructed one; channels constant on either side are skipped.
///
/// # Shapes
/// - `real`, `recon`: `(N, C, L)`, same shape, `N >= 1`.
pub fn reconstruction_error(
    real: &Windows<'_>,
    recon: &Windows<'_>,
) -> Result<ReconstructionError> {
    real.check_same_layout(recon, "real", "recon")?;
    if real.num_windows() != recon.num_windows() {
        return Err(EvalError::mismatch(
            "real",
            "recon",
            format!("{} vs {} windows", real.num_windows(), recon.num_windows()),
        ));
    }
    if real.is_empty() {
        return Err(EvalError::invalid("real", "no windows"));
    }
    let sse: f64 = real
        .as_slice()
        .iter()
        .zip(recon.as_slice())
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let mse = sse / real.as_slice().len() as f64;
    let mut corrs = Vec::with_capacity(real.num_windows());
    for i in 0..real.num_windows() {
        let per_channel: Vec<f64> = (0..real.channels())
            .filter_map(|c| stats::pearson(real.channel(i, c), recon.channel(i, c)))
            .collect();
        if !per_channel.is_empty() {
            corrs.push(per_channel.iter().sum::<f64>() / per_channel.len() as f64);
        }
    }
    let (corr_mean, corr_sd) = match crate::stats::mean_sd(&corrs) {
        Ok(m) => (m.mean, m.sd),
        Err(_) => (f64::NAN, None),
    };
    Ok(ReconstructionError {
        mse,
        rmse: mse.sqrt(),
        corr_mean,
        corr_sd,
        n_windows: real.num_windows(),
        n_corr_undefined: real.num_windows() - corrs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::{SeededRng, Tolerance};

    fn random_windows(n: usize, rng: &mut SeededRng) -> Vec<f32> {
        rng.normal_vec(n * 2 * 50)
            .iter()
            .map(|&v| v as f32)
            .collect()
    }

    #[test]
    fn perfect_reconstruction_has_zero_error_and_unit_correlation() {
        let mut rng = SeededRng::new(1);
        let x = random_windows(4, &mut rng);
        let w = Windows::new(&x, 4, 2, 50).unwrap();
        let r = reconstruction_error(&w, &w).unwrap();
        assert!(Tolerance::new(0.0, 1e-15).close(r.mse, 0.0));
        assert!(Tolerance::F64.close(r.corr_mean, 1.0));
        assert_eq!(r.n_corr_undefined, 0);
    }

    #[test]
    fn offset_and_negation_give_their_closed_forms() {
        let mut rng = SeededRng::new(2);
        let x = random_windows(3, &mut rng);
        let w = Windows::new(&x, 3, 2, 50).unwrap();
        // a constant offset of 0.5: MSE 0.25, correlation still 1
        let shifted: Vec<f32> = x.iter().map(|v| v + 0.5).collect();
        let r = reconstruction_error(&w, &Windows::new(&shifted, 3, 2, 50).unwrap()).unwrap();
        assert!(Tolerance::new(1e-6, 0.0).close(r.mse, 0.25), "{r:?}");
        assert!(Tolerance::new(1e-9, 0.0).close(r.corr_mean, 1.0));
        // negation: MSE = 4 mean(x^2), correlation -1
        let neg: Vec<f32> = x.iter().map(|v| -v).collect();
        let r = reconstruction_error(&w, &Windows::new(&neg, 3, 2, 50).unwrap()).unwrap();
        let ms = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64;
        assert!(Tolerance::new(1e-12, 0.0).close(r.mse, 4.0 * ms));
        assert!(Tolerance::new(1e-9, 0.0).close(r.corr_mean, -1.0));
    }

    #[test]
    fn constant_reconstruction_has_undefined_correlation_counted_not_hidden() {
        let mut rng = SeededRng::new(3);
        let x = random_windows(2, &mut rng);
        let flat = vec![0.0f32; x.len()];
        let r = reconstruction_error(
            &Windows::new(&x, 2, 2, 50).unwrap(),
            &Windows::new(&flat, 2, 2, 50).unwrap(),
        )
        .unwrap();
        assert_eq!(r.n_corr_undefined, 2);
        assert!(r.corr_mean.is_nan());
        let other = vec![0.0f32; 2 * 50];
        assert!(reconstruction_error(
            &Windows::new(&x, 2, 2, 50).unwrap(),
            &Windows::new(&other, 1, 2, 50).unwrap()
        )
        .is_err());
    }
}
