//! One-sided power spectral density (periodogram) of real signals, via `rustfft`.

use std::sync::Arc;

use rustfft::{num_complex::Complex, Fft, FftPlanner};

/// Periodogram of signals of a fixed length at a fixed sample rate.
///
/// The mean is removed first, so bin 0 holds (numerically) nothing; the density is one-sided and
/// scaled so that `sum(psd) * df` equals the signal's population variance (Parseval), in
/// `unit^2 / Hz`.
pub(crate) struct Periodogram {
    fft: Arc<dyn Fft<f64>>,
    len: usize,
    sample_rate_hz: f64,
}

impl std::fmt::Debug for Periodogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Periodogram")
            .field("len", &self.len)
            .field("sample_rate_hz", &self.sample_rate_hz)
            .finish()
    }
}

impl Clone for Periodogram {
    fn clone(&self) -> Self {
        Self {
            fft: Arc::clone(&self.fft),
            len: self.len,
            sample_rate_hz: self.sample_rate_hz,
        }
    }
}

impl Periodogram {
    /// A periodogram for signals of `len >= 1` samples at `sample_rate_hz > 0`.
    pub(crate) fn new(len: usize, sample_rate_hz: f64) -> Self {
        let fft = FftPlanner::<f64>::new().plan_fft_forward(len);
        Self {
            fft,
            len,
            sample_rate_hz,
        }
    }

    /// Number of one-sided bins: `len / 2 + 1`.
    pub(crate) fn num_bins(&self) -> usize {
        self.len / 2 + 1
    }

    /// Frequency resolution `fs / len` in Hz.
    pub(crate) fn bin_width_hz(&self) -> f64 {
        self.sample_rate_hz / self.len as f64
    }

    /// Frequency of bin `k` in Hz.
    pub(crate) fn frequency_hz(&self, k: usize) -> f64 {
        k as f64 * self.bin_width_hz()
    }

    /// One-sided PSD of `x` (`len` samples), `num_bins` values.
    pub(crate) fn psd(&self, x: &[f32]) -> Vec<f64> {
        let m = crate::stats::mean(x);
        let mut buf: Vec<Complex<f64>> = x
            .iter()
            .map(|&v| Complex::new(f64::from(v) - m, 0.0))
            .collect();
        self.fft.process(&mut buf);
        let scale = 1.0 / (self.sample_rate_hz * self.len as f64);
        (0..self.num_bins())
            .map(|k| {
                // bins other than DC and (for even lengths) Nyquist stand for two conjugate bins
                let twice = k != 0 && 2 * k != self.len;
                let p = buf[k].norm_sqr() * scale;
                if twice {
                    2.0 * p
                } else {
                    p
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::{SeededRng, Tolerance};

    #[test]
    fn psd_integrates_to_the_variance() {
        let mut rng = SeededRng::new(9);
        for len in [64usize, 75] {
            let x: Vec<f32> = rng
                .normal_vec(len)
                .iter()
                .map(|&v| v as f32 + 1.0)
                .collect();
            let p = Periodogram::new(len, 30.0);
            let psd = p.psd(&x);
            let power: f64 = psd.iter().sum::<f64>() * p.bin_width_hz();
            let m = crate::stats::mean(&x);
            let var = crate::stats::pop_sd(&x, m).powi(2);
            assert!(
                Tolerance::new(1e-9, 1e-12).close(power, var),
                "{power} vs {var}"
            );
        }
    }
}
