//! Discriminative score: how well a small classifier tells real from generated windows.
//!
//! Each window is summarised by the hand-crafted features of [`crate::features`] (statistics,
//! spectrum, autocorrelation, cross-axis correlation), standardised with the training split's mean
//! and sd. A logistic regression is trained by full-batch gradient descent in f64 (zero init, L2
//! penalty) on a seeded, per-class 70/30 split; the score is `|accuracy - 0.5|` on the held-out
//! 30 %: 0 when the sets are indistinguishable to it, 0.5 when trivially separable.

use flowfm_core::SeededRng;
use serde::Serialize;

use crate::arrays::Windows;
use crate::error::{EvalError, Result};
use crate::features::{FeatureConfig, FeatureExtractor};

/// Settings of the real-vs-generated classifier.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiscriminativeConfig {
    /// Window features the classifier sees.
    pub features: FeatureConfig,
    /// Fraction of each set used for training (the rest is held out), in (0, 1).
    pub train_fraction: f64,
    /// Gradient-descent steps.
    pub steps: usize,
    /// Step size.
    pub learning_rate: f64,
    /// L2 penalty on the weights (not the bias).
    pub l2: f64,
}

impl Default for DiscriminativeConfig {
    /// Default features, 70/30 split, 500 steps of size 0.1, L2 1e-3.
    fn default() -> Self {
        Self {
            features: FeatureConfig::default(),
            train_fraction: 0.7,
            steps: 500,
            learning_rate: 0.1,
            l2: 1e-3,
        }
    }
}

/// The outcome of [`discriminative_score`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiscriminativeScore {
    /// `|test_accuracy - 0.5|`.
    pub score: f64,
    /// Held-out accuracy.
    pub test_accuracy: f64,
    /// Training windows (real + generated).
    pub n_train: usize,
    /// Held-out windows (real + generated).
    pub n_test: usize,
}

/// Trains a logistic regression to tell `real` from `generated` and scores it on held-out windows.
///
/// # Shapes
/// - `real`: `(N_r, C, L)`, `generated`: `(N_g, C, L)`, each with at least 4 windows.
pub fn discriminative_score(
    real: &Windows<'_>,
    generated: &Windows<'_>,
    config: &DiscriminativeConfig,
    rng: &mut SeededRng,
) -> Result<DiscriminativeScore> {
    real.check_same_layout(generated, "real", "generated")?;
    if !(config.train_fraction > 0.0 && config.train_fraction < 1.0) {
        return Err(EvalError::invalid(
            "config.train_fraction",
            format!("{} is not in (0, 1)", config.train_fraction),
        ));
    }
    if !(config.learning_rate > 0.0 && config.learning_rate.is_finite()) || config.l2 < 0.0 {
        return Err(EvalError::invalid(
            "config.learning_rate",
            "learning rate must be positive and l2 non-negative",
        ));
    }
    for (name, w) in [("real", real), ("generated", generated)] {
        if w.num_windows() < 4 {
            return Err(EvalError::invalid(
                name,
                format!("needs at least 4 windows, got {}", w.num_windows()),
            ));
        }
    }
    let fx = FeatureExtractor::new(config.features.clone(), real.channels(), real.len_samples())?;
    let fr = fx.extract(real)?;
    let fg = fx.extract(generated)?;

    // per-class split, so both classes appear on both sides in the same proportion
    let mut train: Vec<(&[f64], f64)> = Vec::new();
    let mut test: Vec<(&[f64], f64)> = Vec::new();
    for (table, label) in [(&fr, 1.0), (&fg, 0.0)] {
        let perm = rng.permutation(table.rows());
        let n_train = ((table.rows() as f64 * config.train_fraction).round() as usize)
            .clamp(1, table.rows() - 1);
        for (rank, &i) in perm.iter().enumerate() {
            let dst = if rank < n_train {
                &mut train
            } else {
                &mut test
            };
            dst.push((table.row(i), label));
        }
    }
    let (mu, sd) = standardisation(&train, fr.cols());
    let model = fit_logistic(&train, &mu, &sd, config);
    let correct = test
        .iter()
        .filter(|(x, y)| {
            let p = model.probability(x, &mu, &sd);
            (p >= 0.5) == (*y > 0.5)
        })
        .count();
    let acc = correct as f64 / test.len() as f64;
    Ok(DiscriminativeScore {
        score: (acc - 0.5).abs(),
        test_accuracy: acc,
        n_train: train.len(),
        n_test: test.len(),
    })
}

/// The cross-validated discriminative score of [`discriminative_cv`]: every window is
/// classified once, by a classifier that did not see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CrossValidated {
    /// Whether each real window was classified as real.
    pub real_correct: Vec<bool>,
    /// Whether each generated window was classified as generated.
    pub generated_correct: Vec<bool>,
    /// Accuracy over all windows.
    pub accuracy: f64,
    /// `|accuracy - 0.5|`.
    pub score: f64,
}

/// Like [`discriminative_score`], but `folds`-fold cross-validated (folds drawn per class from
/// `rng`, standardisation fitted on each training part), so every window of both sets is held
/// out once: the accuracy rests on all `N_r + N_g` windows instead of a 30 % split.
///
/// # Shapes
/// - `real`: `(N_r, C, L)`, `generated`: `(N_g, C, L)`, each with at least `folds` windows.
pub fn discriminative_cv(
    real: &Windows<'_>,
    generated: &Windows<'_>,
    config: &DiscriminativeConfig,
    folds: usize,
    rng: &mut SeededRng,
) -> Result<CrossValidated> {
    real.check_same_layout(generated, "real", "generated")?;
    if folds < 2 {
        return Err(EvalError::invalid(
            "folds",
            format!("cross-validation needs at least 2 folds, got {folds}"),
        ));
    }
    if !(config.learning_rate > 0.0 && config.learning_rate.is_finite()) || config.l2 < 0.0 {
        return Err(EvalError::invalid(
            "config.learning_rate",
            "learning rate must be positive and l2 non-negative",
        ));
    }
    for (name, w) in [("real", real), ("generated", generated)] {
        if w.num_windows() < folds {
            return Err(EvalError::invalid(
                name,
                format!("needs at least {folds} windows, got {}", w.num_windows()),
            ));
        }
    }
    let fx = FeatureExtractor::new(config.features.clone(), real.channels(), real.len_samples())?;
    let tables = [fx.extract(real)?, fx.extract(generated)?];
    // fold of each window: its rank in a per-class permutation, modulo `folds`
    let fold_of: Vec<Vec<usize>> = tables
        .iter()
        .map(|t| {
            let mut f = vec![0; t.rows()];
            for (rank, &i) in rng.permutation(t.rows()).iter().enumerate() {
                f[i] = rank % folds;
            }
            f
        })
        .collect();
    let mut correct = [vec![false; tables[0].rows()], vec![false; tables[1].rows()]];
    for k in 0..folds {
        let mut train: Vec<(&[f64], f64)> = Vec::new();
        for (c, (t, label)) in tables.iter().zip([1.0, 0.0]).enumerate() {
            train.extend(
                (0..t.rows())
                    .filter(|&i| fold_of[c][i] != k)
                    .map(|i| (t.row(i), label)),
            );
        }
        let (mu, sd) = standardisation(&train, tables[0].cols());
        let model = fit_logistic(&train, &mu, &sd, config);
        for (c, t) in tables.iter().enumerate() {
            for i in (0..t.rows()).filter(|&i| fold_of[c][i] == k) {
                let p = model.probability(t.row(i), &mu, &sd);
                correct[c][i] = (p >= 0.5) == (c == 0);
            }
        }
    }
    let [real_correct, generated_correct] = correct;
    let n = (real_correct.len() + generated_correct.len()) as f64;
    let accuracy = real_correct
        .iter()
        .chain(&generated_correct)
        .filter(|&&c| c)
        .count() as f64
        / n;
    Ok(CrossValidated {
        real_correct,
        generated_correct,
        accuracy,
        score: (accuracy - 0.5).abs(),
    })
}

impl CrossValidated {
    /// The percentile interval of the accuracy over the shared window resamples (`real_draws`
    /// of the real set, `generated_draws` of the generated one; the classifiers are not refitted),
    /// and from it the interval of the score `|accuracy - 0.5|`: `[0, max |end - 0.5|]` when the
    /// accuracy interval contains 0.5, else the two ends mapped. Returns `(accuracy, score)`.
    pub fn intervals(
        &self,
        real_draws: &super::resample::Resamples,
        generated_draws: &super::resample::Resamples,
        confidence: f64,
    ) -> Result<(crate::stats::Interval, crate::stats::Interval)> {
        real_draws.check_size("real", self.real_correct.len())?;
        generated_draws.check_size("generated", self.generated_correct.len())?;
        if real_draws.len() != generated_draws.len() {
            return Err(EvalError::mismatch(
                "real resamples",
                "generated resamples",
                format!("{} vs {}", real_draws.len(), generated_draws.len()),
            ));
        }
        let n = (self.real_correct.len() + self.generated_correct.len()) as f64;
        let hits = |c: &[u32], ok: &[bool]| -> f64 {
            c.iter()
                .zip(ok)
                .filter(|(_, &o)| o)
                .map(|(&k, _)| k as f64)
                .sum()
        };
        let stats = (0..real_draws.len())
            .map(|b| {
                (hits(real_draws.counts(b), &self.real_correct)
                    + hits(generated_draws.counts(b), &self.generated_correct))
                    / n
            })
            .collect();
        let sizes = vec![self.real_correct.len(), self.generated_correct.len()];
        let acc = super::resample::percentile_interval(self.accuracy, stats, confidence, sizes)?;
        let (lo, hi) = ((acc.lower - 0.5).abs(), (acc.upper - 0.5).abs());
        let (lower, upper) = if acc.contains(0.5) {
            (0.0, lo.max(hi))
        } else {
            (lo.min(hi), lo.max(hi))
        };
        let score = crate::stats::Interval {
            estimate: self.score,
            lower,
            upper,
            ..acc.clone()
        };
        Ok((acc, score))
    }
}

fn standardisation(rows: &[(&[f64], f64)], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let mut mu = vec![0.0; d];
    for (x, _) in rows {
        for (m, v) in mu.iter_mut().zip(x.iter()) {
            *m += v / n;
        }
    }
    let mut sd = vec![0.0; d];
    for (x, _) in rows {
        for ((s, v), m) in sd.iter_mut().zip(x.iter()).zip(&mu) {
            *s += (v - m).powi(2) / n;
        }
    }
    // a constant feature carries nothing; dividing by 1 keeps it at 0 after centring
    let sd = sd
        .into_iter()
        .map(|v| if v > 1e-24 { v.sqrt() } else { 1.0 })
        .collect();
    (mu, sd)
}

struct Logistic {
    w: Vec<f64>,
    b: f64,
}

impl Logistic {
    fn logit(&self, x: &[f64], mu: &[f64], sd: &[f64]) -> f64 {
        self.b
            + x.iter()
                .zip(mu)
                .zip(sd)
                .zip(&self.w)
                .map(|(((v, m), s), w)| w * (v - m) / s)
                .sum::<f64>()
    }

    fn probability(&self, x: &[f64], mu: &[f64], sd: &[f64]) -> f64 {
        sigmoid(self.logit(x, mu, sd))
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn fit_logistic(
    rows: &[(&[f64], f64)],
    mu: &[f64],
    sd: &[f64],
    config: &DiscriminativeConfig,
) -> Logistic {
    let d = mu.len();
    let n = rows.len() as f64;
    let z: Vec<Vec<f64>> = rows
        .iter()
        .map(|(x, _)| {
            x.iter()
                .zip(mu)
                .zip(sd)
                .map(|((v, m), s)| (v - m) / s)
                .collect()
        })
        .collect();
    let mut model = Logistic {
        w: vec![0.0; d],
        b: 0.0,
    };
    let zero = vec![0.0; d];
    let one = vec![1.0; d];
    for _ in 0..config.steps {
        let mut gw = vec![0.0; d];
        let mut gb = 0.0;
        for (zi, (_, y)) in z.iter().zip(rows) {
            let r = model.probability(zi, &zero, &one) - y;
            for (g, v) in gw.iter_mut().zip(zi) {
                *g += r * v / n;
            }
            gb += r / n;
        }
        for (w, g) in model.w.iter_mut().zip(&gw) {
            *w -= config.learning_rate * (g + config.l2 * *w);
        }
        model.b -= config.learning_rate * gb;
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// `n` windows of 3 x 60 samples at 30 Hz: a sinusoid of random frequency in
    /// [f_lo, f_hi] Hz and amplitude in [0.5, 1.5], plus noise of sd `noise`.
    fn windows(n: usize, f_lo: f64, f_hi: f64, noise: f64, rng: &mut SeededRng) -> Vec<f32> {
        let mut v = Vec::with_capacity(n * 3 * 60);
        for _ in 0..n {
            let f = rng.uniform_range(f_lo, f_hi);
            let a = rng.uniform_range(0.5, 1.5);
            for _ in 0..3 {
                let phase = rng.uniform_range(0.0, 2.0 * PI);
                for l in 0..60 {
                    let t = l as f64 / 30.0;
                    v.push((a * (2.0 * PI * f * t + phase).sin() + noise * rng.normal()) as f32);
                }
            }
        }
        v
    }

    fn cfg() -> DiscriminativeConfig {
        DiscriminativeConfig {
            features: FeatureConfig {
                acf_lag_secs: 0.5,
                ..FeatureConfig::default()
            },
            ..DiscriminativeConfig::default()
        }
    }

    #[test]
    fn same_distribution_scores_near_zero() {
        let mut rng = SeededRng::new(31);
        let n = 400;
        let a = windows(n, 1.0, 3.0, 0.1, &mut rng);
        let b = windows(n, 1.0, 3.0, 0.1, &mut rng);
        let s = discriminative_score(
            &Windows::new(&a, n, 3, 60).unwrap(),
            &Windows::new(&b, n, 3, 60).unwrap(),
            &cfg(),
            &mut rng.derive("split"),
        )
        .unwrap();
        assert_eq!(s.n_train + s.n_test, 2 * n);
        assert_eq!(s.n_test, 240);
        assert!(s.score < 0.08, "score {s:?}");
    }

    #[test]
    fn trivially_separable_sets_score_near_one_half() {
        let mut rng = SeededRng::new(32);
        let n = 100;
        let real = windows(n, 1.0, 2.0, 0.05, &mut rng);
        let fake: Vec<f32> = (0..n * 3 * 60)
            .map(|_| (0.05 * rng.normal()) as f32)
            .collect();
        let s = discriminative_score(
            &Windows::new(&real, n, 3, 60).unwrap(),
            &Windows::new(&fake, n, 3, 60).unwrap(),
            &cfg(),
            &mut rng.derive("split"),
        )
        .unwrap();
        assert!(s.score > 0.45, "score {s:?}");
    }

    #[test]
    fn cross_validation_holds_out_every_window_and_its_interval_knows_the_answer() {
        let mut rng = SeededRng::new(33);
        let n = 200;
        let a = windows(n, 1.0, 3.0, 0.1, &mut rng);
        let b = windows(n, 1.0, 3.0, 0.1, &mut rng);
        let fake: Vec<f32> = (0..n * 3 * 60)
            .map(|_| (0.05 * rng.normal()) as f32)
            .collect();
        fn w(v: &[f32]) -> Windows<'_> {
            Windows::new(v, v.len() / 180, 3, 60).unwrap()
        }
        let rcfg = crate::stats::BootstrapConfig {
            resamples: 500,
            confidence: 0.95,
        };
        let rd = super::super::resample::Resamples::draw(n, &rcfg, &mut rng).unwrap();
        let gd = super::super::resample::Resamples::draw(n, &rcfg, &mut rng).unwrap();
        // one distribution: the accuracy interval covers 0.5, so the score's starts at 0
        let same = discriminative_cv(&w(&a), &w(&b), &cfg(), 5, &mut rng.derive("cv")).unwrap();
        assert_eq!(
            (same.real_correct.len(), same.generated_correct.len()),
            (n, n)
        );
        let (acc, score) = same.intervals(&rd, &gd, 0.95).unwrap();
        assert!(acc.contains(0.5), "{acc:?}");
        assert!(score.lower.abs() < 1e-15, "{score:?}");
        assert!(score.upper < 0.12, "{score:?}");
        // separable: accuracy near 1, the score interval excludes 0
        let apart = discriminative_cv(&w(&a), &w(&fake), &cfg(), 5, &mut rng.derive("cv")).unwrap();
        let (acc, score) = apart.intervals(&rd, &gd, 0.95).unwrap();
        assert!(acc.lower > 0.9 && score.lower > 0.4, "{acc:?} {score:?}");
        assert!(score.contains(apart.score));
        assert!(discriminative_cv(&w(&a), &w(&b), &cfg(), 1, &mut rng).is_err());
    }

    #[test]
    fn too_few_windows_or_bad_split_are_errors() {
        let mut rng = SeededRng::new(1);
        let few = vec![0.5f32; 3 * 3 * 60];
        let w = Windows::new(&few, 3, 3, 60).unwrap();
        assert!(discriminative_score(&w, &w, &cfg(), &mut rng).is_err());
        let many = windows(10, 1.0, 2.0, 0.1, &mut rng);
        let w = Windows::new(&many, 10, 3, 60).unwrap();
        let bad = DiscriminativeConfig {
            train_fraction: 1.0,
            ..cfg()
        };
        assert!(discriminative_score(&w, &w, &bad, &mut rng).is_err());
    }
}
