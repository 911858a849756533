//! Spectral distance between two sets of windows.
//!
//! Per channel, the periodograms of all windows (mean removed, bins above 0 Hz up to Nyquist) are
//! averaged and normalised to sum to 1, giving the distribution of power over frequency. Two
//! distances between the normalised mean spectra `p` (first set) and `q` (second set) are reported:
//!
//! - L1: `sum_k |p_k - q_k|`, in [0, 2] (0: same spectral shape, 2: disjoint frequencies);
//! - log-spectral distance in dB: `sqrt(mean_k (10 log10((p_k + eps) / (q_k + eps)))^2)` with
//!   `eps = 1e-10`, which weighs the weak high-frequency bins more than L1 does.
//!
//! Both ignore overall amplitude (that is the job of the other metrics).

use serde::Serialize;

use crate::arrays::Windows;
use crate::error::{EvalError, Result};
use crate::spectrum::Periodogram;

/// Floor added to normalised spectra before taking logs.
pub const LOG_SPECTRAL_EPS: f64 = 1e-10;

/// Distances between the mean power spectra of two sets of windows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpectralDistance {
    /// L1 distance of the normalised mean spectra, per channel.
    pub per_channel_l1: Vec<f64>,
    /// Mean of `per_channel_l1`.
    pub l1: f64,
    /// Log-spectral distance in dB, per channel.
    pub per_channel_log_spectral_db: Vec<f64>,
    /// Mean of `per_channel_log_spectral_db`.
    pub log_spectral_db: f64,
}

/// Spectral distance between `a` and `b` (same channels and samples; at least one window each).
///
/// # Shapes
/// - `a`: `(N_a, C, L)`, `b`: `(N_b, C, L)`, `L >= 2`.
pub fn spectral_distance(
    a: &Windows<'_>,
    b: &Windows<'_>,
    sample_rate_hz: f64,
) -> Result<SpectralDistance> {
    a.check_same_layout(b, "a", "b")?;
    if !(sample_rate_hz.is_finite() && sample_rate_hz > 0.0) {
        return Err(EvalError::invalid(
            "sample_rate_hz",
            format!("{sample_rate_hz} is not a positive rate"),
        ));
    }
    if a.len_samples() < 2 {
        return Err(EvalError::invalid(
            "windows",
            "need at least 2 samples per channel",
        ));
    }
    let p = Periodogram::new(a.len_samples(), sample_rate_hz);
    let mut per_channel_l1 = Vec::with_capacity(a.channels());
    let mut per_channel_lsd = Vec::with_capacity(a.channels());
    for c in 0..a.channels() {
        let pa = normalised_mean_spectrum(a, c, &p, "a")?;
        let pb = normalised_mean_spectrum(b, c, &p, "b")?;
        per_channel_l1.push(pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum());
        let msq = pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| {
                (10.0 * ((x + LOG_SPECTRAL_EPS) / (y + LOG_SPECTRAL_EPS)).log10()).powi(2)
            })
            .sum::<f64>()
            / pa.len() as f64;
        per_channel_lsd.push(msq.sqrt());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(SpectralDistance {
        l1: mean(&per_channel_l1),
        log_spectral_db: mean(&per_channel_lsd),
        per_channel_l1,
        per_channel_log_spectral_db: per_channel_lsd,
    })
}

fn normalised_mean_spectrum(
    w: &Windows<'_>,
    c: usize,
    p: &Periodogram,
    name: &str,
) -> Result<Vec<f64>> {
    if w.is_empty() {
        return Err(EvalError::invalid(name, "no windows"));
    }
    let mut acc = vec![0.0; p.num_bins() - 1];
    for i in 0..w.num_windows() {
        for (a, v) in acc.iter_mut().zip(&p.psd(w.channel(i, c))[1..]) {
            *a += v;
        }
    }
    let total: f64 = acc.iter().sum();
    if total <= 0.0 {
        return Err(EvalError::invalid(
            format!("{name}: channel {c}"),
            "no power above 0 Hz in any window (constant signal)",
        ));
    }
    Ok(acc.into_iter().map(|v| v / total).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;
    use std::f64::consts::PI;

    /// One channel of 300 samples at 30 Hz: sum of `amp * sin(2 pi f t)` over `(f, amp)`.
    fn tones(parts: &[(f64, f64)]) -> Vec<f32> {
        (0..300)
            .map(|l| {
                let t = l as f64 / 30.0;
                parts
                    .iter()
                    .map(|(f, a)| a * (2.0 * PI * f * t).sin())
                    .sum::<f64>() as f32
            })
            .collect()
    }

    fn dist(a: &[f32], b: &[f32]) -> SpectralDistance {
        spectral_distance(
            &Windows::new(a, 1, 1, 300).unwrap(),
            &Windows::new(b, 1, 1, 300).unwrap(),
            30.0,
        )
        .unwrap()
    }

    #[test]
    fn identical_and_rescaled_sets_have_zero_distance() {
        let a = tones(&[(2.0, 1.0), (5.0, 0.3)]);
        let b = tones(&[(2.0, 3.0), (5.0, 0.9)]);
        let tol = Tolerance::new(0.0, 1e-9);
        let d = dist(&a, &a);
        assert!(tol.close(d.l1, 0.0) && tol.close(d.log_spectral_db, 0.0));
        let d = dist(&a, &b);
        assert!(Tolerance::new(0.0, 1e-6).close(d.l1, 0.0), "{d:?}");
    }

    #[test]
    fn disjoint_tones_are_at_the_maximum_l1() {
        // all power at 2 Hz vs all at 5 Hz (exact bins): |1 - 0| + |0 - 1| = 2
        let d = dist(&tones(&[(2.0, 1.0)]), &tones(&[(5.0, 1.0)]));
        assert!(Tolerance::new(0.0, 1e-6).close(d.l1, 2.0), "{d:?}");
        // two equal tones vs one: spectra (1/2, 1/2) vs (1, 0): L1 = 1/2 + 1/2
        let d = dist(&tones(&[(2.0, 1.0), (5.0, 1.0)]), &tones(&[(2.0, 1.0)]));
        assert!(Tolerance::new(0.0, 1e-6).close(d.l1, 1.0), "{d:?}");
    }

    #[test]
    fn constant_channel_or_mismatched_layout_is_an_error() {
        let flat = vec![1.0f32; 300];
        let a = tones(&[(2.0, 1.0)]);
        let wf = Windows::new(&flat, 1, 1, 300).unwrap();
        let wa = Windows::new(&a, 1, 1, 300).unwrap();
        assert!(spectral_distance(&wa, &wf, 30.0).is_err());
        let wb = Windows::new(&a, 2, 1, 150).unwrap();
        assert!(spectral_distance(&wa, &wb, 30.0).is_err());
        assert!(spectral_distance(&wa, &wa, 0.0).is_err());
    }
}
