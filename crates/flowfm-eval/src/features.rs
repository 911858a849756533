//! Hand-crafted window features for the random-forest comparator.
//!
//! For each of the `C` channels and for the magnitude `sqrt(sum_c x_c^2)` (the "signals"), in this
//! order:
//!
//! | name | meaning |
//! |---|---|
//! | `mean`, `sd` | mean and population standard deviation |
//! | `min`, `max` | extremes |
//! | `p10`, `p25`, `p50`, `p75`, `p90` | percentiles (linear interpolation, numpy's default) |
//! | `dom_freq_hz` | frequency of the largest periodogram bin above 0 Hz (0 for a constant signal) |
//! | `dom_power` | PSD at that bin (unit^2 / Hz; one-sided, mean removed) |
//! | `band_<lo>_<hi>hz` | power in `[lo, hi)` Hz (PSD summed times bin width; the last band runs to Nyquist, inclusive; 0 Hz excluded) |
//! | `acf_lag` | autocorrelation at [`FeatureConfig::acf_lag_secs`] (1 s by default) |
//!
//! then, for every pair of channels `i < j`, `corr_ch<i>_ch<j>`: their Pearson correlation
//! (0 when one is constant). Signals are named `ch0 .. ch{C-1}` and `mag`; a feature is named
//! `<signal>_<name>` (e.g. `mag_band_1_3hz`). With 3 channels and the default 5 bands that is
//! `4 * 17 + 3 = 71` features.

use serde::Serialize;

use crate::arrays::{Embeddings, Windows};
use crate::error::{EvalError, Result};
use crate::spectrum::Periodogram;
use crate::stats;

/// Settings of the feature extractor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeatureConfig {
    /// Sample rate of the windows in Hz.
    pub sample_rate_hz: f64,
    /// Lower edges of the spectral bands in Hz, strictly increasing, the first at or above 0 and
    /// the last below Nyquist; the last band runs to Nyquist.
    pub band_edges_hz: Vec<f64>,
    /// Lag of the autocorrelation feature in seconds (rounded to whole samples, at least one).
    pub acf_lag_secs: f64,
}

impl Default for FeatureConfig {
    /// 30 Hz, bands 0-1, 1-3, 3-5, 5-8 and 8 Hz-Nyquist, autocorrelation at 1 s.
    fn default() -> Self {
        Self {
            sample_rate_hz: 30.0,
            band_edges_hz: vec![0.0, 1.0, 3.0, 5.0, 8.0],
            acf_lag_secs: 1.0,
        }
    }
}

/// A table of features: one row per window, one named column per feature.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeatureTable {
    names: Vec<String>,
    values: Vec<f64>,
    rows: usize,
}

impl FeatureTable {
    /// A table from row-major `values` (`rows x names.len()`); values must be finite.
    pub fn new(names: Vec<String>, values: Vec<f64>, rows: usize) -> Result<Self> {
        let cols = names.len();
        if cols == 0 {
            return Err(EvalError::invalid("names", "a feature table needs columns"));
        }
        if values.len() != rows * cols {
            return Err(EvalError::invalid(
                "values",
                format!("{} values for {rows} rows x {cols} columns", values.len()),
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::invalid(
                format!("values[{}][{}] ({})", i / cols, i % cols, names[i % cols]),
                "not finite",
            ));
        }
        Ok(Self {
            names,
            values,
            rows,
        })
    }

    /// Column names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of rows (windows).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (features).
    pub fn cols(&self) -> usize {
        self.names.len()
    }

    /// All values, row-major.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        let c = self.cols();
        &self.values[i * c..(i + 1) * c]
    }

    /// The value of feature `name` in row `i`, if there is such a feature.
    pub fn get(&self, i: usize, name: &str) -> Option<f64> {
        let j = self.names.iter().position(|n| n == name)?;
        Some(self.row(i)[j])
    }

    /// The table as f32 embeddings (e.g. for a Frechet distance in feature space).
    pub fn to_embeddings(&self) -> Result<Embeddings<'static>> {
        Embeddings::from_vec(
            self.values.iter().map(|&v| v as f32).collect(),
            self.rows,
            self.cols(),
        )
    }
}

/// Computes [`FeatureTable`]s from windows of a fixed layout.
#[derive(Clone, Debug)]
pub struct FeatureExtractor {
    config: FeatureConfig,
    channels: usize,
    len: usize,
    lag: usize,
    periodogram: Periodogram,
    names: Vec<String>,
}

const STATS: [&str; 9] = [
    "mean", "sd", "min", "max", "p10", "p25", "p50", "p75", "p90",
];
const PERCENTILES: [f64; 5] = [0.10, 0.25, 0.50, 0.75, 0.90];

impl FeatureExtractor {
    /// An extractor for windows of `channels x len` samples.
    pub fn new(config: FeatureConfig, channels: usize, len: usize) -> Result<Self> {
        let fs = config.sample_rate_hz;
        if !(fs.is_finite() && fs > 0.0) {
            return Err(EvalError::invalid(
                "config.sample_rate_hz",
                format!("{fs} is not a positive rate"),
            ));
        }
        if channels == 0 || len < 2 {
            return Err(EvalError::invalid(
                "windows",
                format!("need at least 1 channel and 2 samples, got ({channels}, {len})"),
            ));
        }
        let nyquist = fs / 2.0;
        let edges = &config.band_edges_hz;
        if edges.is_empty() {
            return Err(EvalError::invalid(
                "config.band_edges_hz",
                "needs at least one edge",
            ));
        }
        for (i, &e) in edges.iter().enumerate() {
            let ok = e.is_finite() && e >= 0.0 && e < nyquist && (i == 0 || e > edges[i - 1]);
            if !ok {
                return Err(EvalError::invalid(
                    format!("config.band_edges_hz[{i}]"),
                    format!("{e} Hz: edges must increase strictly within [0, {nyquist}) Hz"),
                ));
            }
        }
        let lag_f = (config.acf_lag_secs * fs).round();
        if !(lag_f >= 1.0 && lag_f < len as f64) {
            return Err(EvalError::invalid(
                "config.acf_lag_secs",
                format!(
                    "{} s is {lag_f} samples at {fs} Hz; it must be in 1..{len}",
                    config.acf_lag_secs
                ),
            ));
        }
        let mut signal_feats: Vec<String> = STATS.iter().map(|s| s.to_string()).collect();
        signal_feats.push("dom_freq_hz".into());
        signal_feats.push("dom_power".into());
        for (i, e) in edges.iter().enumerate() {
            let hi = edges
                .get(i + 1)
                .map_or("nyq".to_string(), |h| h.to_string());
            signal_feats.push(format!("band_{e}_{hi}hz"));
        }
        signal_feats.push("acf_lag".into());
        let signals: Vec<String> = (0..channels)
            .map(|c| format!("ch{c}"))
            .chain(std::iter::once("mag".to_string()))
            .collect();
        let mut names: Vec<String> = signals
            .iter()
            .flat_map(|s| signal_feats.iter().map(move |f| format!("{s}_{f}")))
            .collect();
        for i in 0..channels {
            for j in i + 1..channels {
                names.push(format!("corr_ch{i}_ch{j}"));
            }
        }
        Ok(Self {
            periodogram: Periodogram::new(len, fs),
            lag: lag_f as usize,
            config,
            channels,
            len,
            names,
        })
    }

    /// Feature names, in column order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The features of every window.
    ///
    /// # Shapes
    /// - `windows`: `(N, C, L)` with the extractor's `C` and `L`; result: `N x names().len()`.
    pub fn extract(&self, windows: &Windows<'_>) -> Result<FeatureTable> {
        if windows.channels() != self.channels || windows.len_samples() != self.len {
            return Err(EvalError::mismatch(
                "extractor",
                "windows",
                format!(
                    "built for ({}, {}) windows, got ({}, {})",
                    self.channels,
                    self.len,
                    windows.channels(),
                    windows.len_samples()
                ),
            ));
        }
        let mut values = Vec::with_capacity(windows.num_windows() * self.names.len());
        let mut mag = vec![0f32; self.len];
        for w in 0..windows.num_windows() {
            for c in 0..self.channels {
                self.signal_features(windows.channel(w, c), &mut values);
            }
            for (l, m) in mag.iter_mut().enumerate() {
                let ss: f64 = (0..self.channels)
                    .map(|c| f64::from(windows.channel(w, c)[l]).powi(2))
                    .sum();
                *m = ss.sqrt() as f32;
            }
            self.signal_features(&mag, &mut values);
            for i in 0..self.channels {
                for j in i + 1..self.channels {
                    let r = stats::pearson(windows.channel(w, i), windows.channel(w, j));
                    values.push(r.unwrap_or(0.0));
                }
            }
        }
        FeatureTable::new(self.names.clone(), values, windows.num_windows())
    }

    fn signal_features(&self, x: &[f32], out: &mut Vec<f64>) {
        let m = stats::mean(x);
        let sd = stats::pop_sd(x, m);
        let mut sorted: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        sorted.sort_by(f64::total_cmp);
        out.push(m);
        out.push(sd);
        out.push(sorted[0]);
        out.push(sorted[sorted.len() - 1]);
        out.extend(
            PERCENTILES
                .iter()
                .map(|&q| stats::percentile_sorted(&sorted, q)),
        );

        let psd = self.periodogram.psd(x);
        // A (numerically) constant signal has no dominant frequency: report 0 Hz and 0 power
        // rather than the argmax of rounding noise.
        let constant = sd <= 1e-9 * (1.0 + m.abs());
        let mut dom = 0usize;
        if !constant {
            dom = 1;
            for k in 2..psd.len() {
                if psd[k] > psd[dom] {
                    dom = k;
                }
            }
        }
        out.push(self.periodogram.frequency_hz(dom));
        out.push(if dom == 0 { 0.0 } else { psd[dom] });

        let edges = &self.config.band_edges_hz;
        let df = self.periodogram.bin_width_hz();
        for (i, &lo) in edges.iter().enumerate() {
            let hi = edges.get(i + 1).copied();
            let power: f64 = (1..psd.len())
                .filter(|&k| {
                    let f = self.periodogram.frequency_hz(k);
                    f >= lo && hi.is_none_or(|h| f < h)
                })
                .map(|k| psd[k])
                .sum();
            out.push(power * df);
        }
        out.push(stats::autocorrelation(x, self.lag));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;
    use std::f64::consts::PI;

    /// Three channels of 10 s at 30 Hz: `A sin(2 pi f t) + offset`, its negation, and `cos`.
    fn sinusoid_window(f_hz: f64, amp: f64, offset: f64) -> Vec<f32> {
        let (fs, len) = (30.0, 300);
        let t = |l: usize| l as f64 / fs;
        let mut v = Vec::with_capacity(3 * len);
        v.extend((0..len).map(|l| (amp * (2.0 * PI * f_hz * t(l)).sin() + offset) as f32));
        v.extend((0..len).map(|l| (-amp * (2.0 * PI * f_hz * t(l)).sin()) as f32));
        v.extend((0..len).map(|l| (amp * (2.0 * PI * f_hz * t(l)).cos()) as f32));
        v
    }

    #[test]
    fn pure_sinusoid_has_its_frequency_power_and_correlations() {
        let data = sinusoid_window(2.0, 0.5, 1.0);
        let w = Windows::new(&data, 1, 3, 300).unwrap();
        let fx = FeatureExtractor::new(FeatureConfig::default(), 3, 300).unwrap();
        let t = fx.extract(&w).unwrap();
        assert_eq!(t.cols(), 71);
        let tol = Tolerance::new(1e-5, 1e-6);
        let get = |n: &str| t.get(0, n).unwrap_or_else(|| panic!("no feature {n}"));
        // 2 Hz falls exactly on bin 20 of a 300-sample, 30 Hz window (0.1 Hz bins).
        assert!(tol.close(get("ch0_dom_freq_hz"), 2.0));
        assert!(tol.close(get("ch2_dom_freq_hz"), 2.0));
        // gravity-like offset shows in the mean only
        assert!(tol.close(get("ch0_mean"), 1.0));
        // sd of a sinusoid over whole periods: A / sqrt(2); its power A^2 / 2 lies in 1-3 Hz
        assert!(tol.close(get("ch0_sd"), 0.5 / 2f64.sqrt()));
        assert!(tol.close(get("ch0_band_1_3hz"), 0.125));
        assert!(tol.close(get("ch0_band_0_1hz"), 0.0));
        assert!(tol.close(get("ch0_band_8_nyqhz"), 0.0));
        // all the power in one bin: PSD = (A^2 / 2) / bin width
        assert!(tol.close(get("ch0_dom_power"), 0.125 / 0.1));
        // 1 s is two whole periods: x[t + 30] = x[t], so r = (300 - 30) / 300
        assert!(tol.close(get("ch1_acf_lag"), 0.9));
        assert!(tol.close(get("corr_ch0_ch1"), -1.0));
        assert!(tol.close(get("corr_ch0_ch2"), 0.0));
        assert!(tol.close(get("ch0_p50"), 1.0));
        assert!(get("ch0_max") <= 1.5 + 1e-6 && get("ch0_max") > 1.49);
    }

    #[test]
    fn dominant_frequency_follows_the_sample_rate() {
        // 7.3 Hz at 50 Hz over 10 s (0.1 Hz bins), plus a weaker 2 Hz component.
        let (fs, len) = (50.0, 500);
        let x: Vec<f32> = (0..len)
            .map(|l| {
                let t = l as f64 / fs;
                ((2.0 * PI * 7.3 * t).sin() + 0.3 * (2.0 * PI * 2.0 * t).sin()) as f32
            })
            .collect();
        let cfg = FeatureConfig {
            sample_rate_hz: fs,
            ..FeatureConfig::default()
        };
        let fx = FeatureExtractor::new(cfg, 1, len).unwrap();
        let t = fx.extract(&Windows::new(&x, 1, 1, len).unwrap()).unwrap();
        assert!(Tolerance::new(1e-9, 1e-9).close(t.get(0, "ch0_dom_freq_hz").unwrap(), 7.3));
        // no channel pairs with a single channel
        assert_eq!(t.cols(), 2 * 17);
    }

    #[test]
    fn constant_window_has_zero_spectrum_and_correlations() {
        let data = vec![0.25f32; 3 * 300];
        let fx = FeatureExtractor::new(FeatureConfig::default(), 3, 300).unwrap();
        let t = fx
            .extract(&Windows::new(&data, 1, 3, 300).unwrap())
            .unwrap();
        let tol = Tolerance::new(0.0, 1e-12);
        for n in [
            "ch1_dom_freq_hz",
            "ch1_dom_power",
            "ch1_band_1_3hz",
            "corr_ch0_ch1",
            "ch1_acf_lag",
        ] {
            assert!(tol.close(t.get(0, n).unwrap(), 0.0), "{n}");
        }
        // magnitude of (0.25, 0.25, 0.25)
        assert!(
            Tolerance::new(1e-6, 0.0).close(t.get(0, "mag_mean").unwrap(), 0.75f64.sqrt() * 0.5)
        );
    }

    #[test]
    fn bad_configs_are_rejected_with_the_field_named() {
        let bad_edges = FeatureConfig {
            band_edges_hz: vec![0.0, 3.0, 2.0],
            ..FeatureConfig::default()
        };
        let e = FeatureExtractor::new(bad_edges, 3, 300)
            .unwrap_err()
            .to_string();
        assert!(e.contains("band_edges_hz[2]"), "{e}");
        let beyond_nyquist = FeatureConfig {
            band_edges_hz: vec![0.0, 20.0],
            ..FeatureConfig::default()
        };
        assert!(FeatureExtractor::new(beyond_nyquist, 3, 300).is_err());
        let long_lag = FeatureConfig {
            acf_lag_secs: 20.0,
            ..FeatureConfig::default()
        };
        assert!(FeatureExtractor::new(long_lag, 3, 300)
            .unwrap_err()
            .to_string()
            .contains("acf_lag_secs"));
        let fx = FeatureExtractor::new(FeatureConfig::default(), 3, 300).unwrap();
        let other = vec![0f32; 2 * 300];
        assert!(fx
            .extract(&Windows::new(&other, 1, 2, 300).unwrap())
            .is_err());
    }
}
