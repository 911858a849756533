//! Set metrics with window-resampling bootstrap intervals ([`super::resample`]): Frechet
//! distance, unbiased MMD² with one fixed bandwidth, and the spectral distances, each between a
//! reference set and every compared set (generated sets and the real floor set, all of one size).
//!
//! A resample is a multiplicity vector `c` (summing to `n`). The statistics are the plain ones
//! with weights: mean `sum c_i x_i / n`, covariance `sum c_i (x_i - m)(x_i - m)^T / (n - 1)`, mean
//! spectrum `sum c_i P_i`; the unbiased MMD² leaves out pairs of the *same original window*
//! (`sum_{i != j} c_i c_j k_ij / ((sum c)^2 - sum c_i^2)`), so a window drawn twice is not
//! compared with itself. With every `c_i = 1` each is exactly the plain estimate. Intervals are
//! percentile intervals shifted by the bootstrap's bias estimate
//! ([`super::resample::bias_corrected_interval`]): duplicated windows inflate plug-in distances.

use nalgebra::{DMatrix, DVector};

use super::frechet::frechet_distance;
use super::mmd::{median_distance, mmd2_rbf, Bandwidth, MmdConfig};
use super::resample::{bias_corrected_interval, Resamples};
use super::spectral::{spectral_distance, LOG_SPECTRAL_EPS};
use crate::arrays::{Embeddings, Windows};
use crate::error::{EvalError, Result};
use crate::linalg;
use crate::spectrum::Periodogram;
use crate::stats::Interval;

fn check_sets<T>(
    sets: &[T],
    rows: impl Fn(&T) -> usize,
    reference_rows: usize,
    ref_draws: &Resamples,
    set_draws: &Resamples,
) -> Result<()> {
    ref_draws.check_size("reference", reference_rows)?;
    if ref_draws.len() != set_draws.len() {
        return Err(EvalError::mismatch(
            "reference resamples",
            "set resamples",
            format!("{} vs {} resamples", ref_draws.len(), set_draws.len()),
        ));
    }
    for (i, s) in sets.iter().enumerate() {
        set_draws.check_size(&format!("sets[{i}]"), rows(s))?;
    }
    Ok(())
}

/// Weighted mean and covariance (`n - 1`) of the rows of `x` with multiplicities `c` (sum `n`).
fn weighted_stats(x: &DMatrix<f64>, c: &[u32]) -> (DVector<f64>, DMatrix<f64>) {
    let n: f64 = c.iter().map(|&k| k as f64).sum();
    let w = DVector::from_iterator(c.len(), c.iter().map(|&k| k as f64));
    let mean = x.tr_mul(&w) / n;
    let mut y = x.clone();
    for (i, mut row) in y.row_iter_mut().enumerate() {
        let s = (c[i] as f64).sqrt();
        for (v, m) in row.iter_mut().zip(mean.iter()) {
            *v = (*v - m) * s;
        }
    }
    let cov = y.tr_mul(&y) / (n - 1.0);
    (mean, linalg::symmetrise(cov))
}

/// Frechet distance between `reference` and each of `sets`, each with its percentile interval
/// over the shared resamples (`ref_draws` of the reference, `set_draws` of every set).
pub fn frechet_intervals(
    reference: &Embeddings<'_>,
    sets: &[&Embeddings<'_>],
    ref_draws: &Resamples,
    set_draws: &Resamples,
    confidence: f64,
) -> Result<Vec<Interval>> {
    check_sets(sets, |s| s.rows(), reference.rows(), ref_draws, set_draws)?;
    for (i, s) in sets.iter().enumerate() {
        if s.dim() != reference.dim() {
            return Err(EvalError::mismatch(
                "reference",
                format!("sets[{i}]"),
                format!("dimension {} vs {}", reference.dim(), s.dim()),
            ));
        }
    }
    let r = reference.to_dmatrix();
    let xs: Vec<DMatrix<f64>> = sets.iter().map(|s| s.to_dmatrix()).collect();
    let mut stats = vec![Vec::with_capacity(ref_draws.len()); sets.len()];
    for b in 0..ref_draws.len() {
        let (m1, s1) = weighted_stats(&r, ref_draws.counts(b));
        let tr1 = s1.trace();
        let r1 = linalg::psd_sqrt(s1);
        for (x, out) in xs.iter().zip(stats.iter_mut()) {
            let (m2, s2) = weighted_stats(x, set_draws.counts(b));
            let mean_term = (&m1 - &m2).norm_squared();
            let tr2 = s2.trace();
            let tr_sqrt: f64 = linalg::psd_eigenvalues(&r1 * s2 * &r1)
                .iter()
                .map(|l| l.sqrt())
                .sum();
            out.push((mean_term + tr1 + tr2 - 2.0 * tr_sqrt).max(0.0));
        }
    }
    sets.iter()
        .zip(stats)
        .map(|(s, st)| {
            let estimate = frechet_distance(reference, s)?;
            bias_corrected_interval(estimate, st, confidence, vec![reference.rows(), s.rows()])
        })
        .collect()
}

/// The RBF bandwidth of [`mmd_intervals`]: the median pairwise distance within `reference` (on
/// an evenly strided subset of at most `max_points` rows). One bandwidth for every compared set,
/// so their MMD² values are on one scale.
pub fn reference_bandwidth(reference: &Embeddings<'_>, max_points: usize) -> Result<f64> {
    let empty = DMatrix::<f64>::zeros(0, reference.dim());
    median_distance(&reference.to_dmatrix(), &empty, max_points)
}

/// `sum_{i != j} a_i b_j k_ij` over distinct original windows of one set (`k_ii = 1` for RBF) and
/// its normaliser, or the full double sum across sets.
fn within(k: &DMatrix<f64>, c: &[u32]) -> f64 {
    let mut s = 0.0;
    let mut sq = 0.0;
    let mut tot = 0.0;
    for (i, &ci) in c.iter().enumerate() {
        if ci == 0 {
            continue;
        }
        let ci = ci as f64;
        tot += ci;
        sq += ci * ci;
        let row: f64 = k.row(i).iter().zip(c).map(|(v, &cj)| v * cj as f64).sum();
        s += ci * (row - ci * k[(i, i)]);
    }
    let denom = tot * tot - sq;
    if denom > 0.0 {
        s / denom
    } else {
        0.0
    }
}

fn across(k: &DMatrix<f64>, a: &[u32], b: &[u32]) -> f64 {
    let (ta, tb): (f64, f64) = (
        a.iter().map(|&v| v as f64).sum(),
        b.iter().map(|&v| v as f64).sum(),
    );
    let mut s = 0.0;
    for (i, &ai) in a.iter().enumerate() {
        if ai == 0 {
            continue;
        }
        let row: f64 = k.row(i).iter().zip(b).map(|(v, &bj)| v * bj as f64).sum();
        s += ai as f64 * row;
    }
    s / (ta * tb)
}

/// Unbiased MMD² (RBF of width `sigma`) between `reference` and each of `sets`, with percentile
/// intervals over the shared resamples.
pub fn mmd_intervals(
    reference: &Embeddings<'_>,
    sets: &[&Embeddings<'_>],
    ref_draws: &Resamples,
    set_draws: &Resamples,
    sigma: f64,
    confidence: f64,
) -> Result<Vec<Interval>> {
    check_sets(sets, |s| s.rows(), reference.rows(), ref_draws, set_draws)?;
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(EvalError::invalid(
            "sigma",
            format!("{sigma} is not a positive bandwidth"),
        ));
    }
    let gamma = 1.0 / (2.0 * sigma * sigma);
    let kernel =
        |a: &DMatrix<f64>, b: &DMatrix<f64>| linalg::sq_dists(a, b).map(|d| (-gamma * d).exp());
    let r = reference.to_dmatrix();
    let krr = kernel(&r, &r);
    let ref_terms: Vec<f64> = (0..ref_draws.len())
        .map(|b| within(&krr, ref_draws.counts(b)))
        .collect();
    let config = MmdConfig {
        bandwidth: Bandwidth::Fixed(sigma),
        ..MmdConfig::default()
    };
    sets.iter()
        .map(|s| {
            if s.dim() != reference.dim() {
                return Err(EvalError::mismatch(
                    "reference",
                    "set",
                    format!("dimension {} vs {}", reference.dim(), s.dim()),
                ));
            }
            let x = s.to_dmatrix();
            let (kxx, krx) = (kernel(&x, &x), kernel(&r, &x));
            let stats = (0..ref_draws.len())
                .map(|b| {
                    let (cr, cx) = (ref_draws.counts(b), set_draws.counts(b));
                    ref_terms[b] + within(&kxx, cx) - 2.0 * across(&krx, cr, cx)
                })
                .collect();
            let estimate = mmd2_rbf(reference, s, &config)?.mmd2;
            bias_corrected_interval(
                estimate,
                stats,
                confidence,
                vec![reference.rows(), s.rows()],
            )
        })
        .collect()
}

/// Per-window one-sided periodograms above 0 Hz, per channel: `[channel][window][bin]`.
fn spectra(w: &Windows<'_>, p: &Periodogram) -> Vec<Vec<Vec<f64>>> {
    (0..w.channels())
        .map(|c| {
            (0..w.num_windows())
                .map(|i| p.psd(w.channel(i, c))[1..].to_vec())
                .collect()
        })
        .collect()
}

fn weighted_spectrum(per_window: &[Vec<f64>], c: &[u32]) -> Option<Vec<f64>> {
    let bins = per_window.first().map_or(0, |v| v.len());
    let mut acc = vec![0.0; bins];
    for (p, &k) in per_window.iter().zip(c) {
        if k > 0 {
            for (a, v) in acc.iter_mut().zip(p) {
                *a += k as f64 * v;
            }
        }
    }
    let total: f64 = acc.iter().sum();
    (total > 0.0).then(|| acc.into_iter().map(|v| v / total).collect())
}

/// `(L1, log-spectral dB)` between the channel-averaged normalised mean spectra.
fn spectral_pair(
    a: &[Vec<Vec<f64>>],
    b: &[Vec<Vec<f64>>],
    ca: &[u32],
    cb: &[u32],
) -> Option<(f64, f64)> {
    let (mut l1, mut db) = (0.0, 0.0);
    for (sa, sb) in a.iter().zip(b) {
        let (p, q) = (weighted_spectrum(sa, ca)?, weighted_spectrum(sb, cb)?);
        l1 += p.iter().zip(&q).map(|(x, y)| (x - y).abs()).sum::<f64>();
        let msq = p
            .iter()
            .zip(&q)
            .map(|(x, y)| {
                (10.0 * ((x + LOG_SPECTRAL_EPS) / (y + LOG_SPECTRAL_EPS)).log10()).powi(2)
            })
            .sum::<f64>()
            / p.len() as f64;
        db += msq.sqrt();
    }
    let c = a.len() as f64;
    Some((l1 / c, db / c))
}

/// Spectral distances (L1 and log-spectral dB, as [`spectral_distance`]) between `reference`
/// and each of `sets`, each with percentile intervals over the shared resamples: `(l1, db)` per
/// set. A resample without power above 0 Hz (only constant windows drawn) is an error.
pub fn spectral_intervals(
    reference: &Windows<'_>,
    sets: &[&Windows<'_>],
    ref_draws: &Resamples,
    set_draws: &Resamples,
    sample_rate_hz: f64,
    confidence: f64,
) -> Result<Vec<(Interval, Interval)>> {
    check_sets(
        sets,
        |s| s.num_windows(),
        reference.num_windows(),
        ref_draws,
        set_draws,
    )?;
    let p = Periodogram::new(
        reference.len_samples(),
        sample_rate_hz.max(f64::MIN_POSITIVE),
    );
    let rs = spectra(reference, &p);
    sets.iter()
        .map(|s| {
            let est = spectral_distance(reference, s, sample_rate_hz)?;
            let ss = spectra(s, &p);
            let mut l1 = Vec::with_capacity(ref_draws.len());
            let mut db = Vec::with_capacity(ref_draws.len());
            for b in 0..ref_draws.len() {
                let (a, d) = spectral_pair(&rs, &ss, ref_draws.counts(b), set_draws.counts(b))
                    .ok_or_else(|| {
                        EvalError::invalid("windows", "a resample has no power above 0 Hz")
                    })?;
                l1.push(a);
                db.push(d);
            }
            let sizes = vec![reference.num_windows(), s.num_windows()];
            Ok((
                bias_corrected_interval(est.l1, l1, confidence, sizes.clone())?,
                bias_corrected_interval(est.log_spectral_db, db, confidence, sizes)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::BootstrapConfig;
    use flowfm_core::SeededRng;

    fn emb(n: usize, d: usize, v: &[f32]) -> Embeddings<'_> {
        Embeddings::new(v, n, d).unwrap()
    }

    fn win(n: usize, v: &[f32]) -> Windows<'_> {
        Windows::new(v, n, 1, 300).unwrap()
    }

    fn cfg(resamples: usize) -> BootstrapConfig {
        BootstrapConfig {
            resamples,
            confidence: 0.95,
        }
    }

    fn gaussian(n: usize, d: usize, shift: f64, scale: f64, rng: &mut SeededRng) -> Vec<f32> {
        rng.normal_vec(n * d)
            .iter()
            .map(|&v| (shift + scale * v) as f32)
            .collect()
    }

    fn draws(n: usize, seed: u64) -> (Resamples, Resamples) {
        let mut rng = SeededRng::new(seed);
        (
            Resamples::draw(n, &cfg(300), &mut rng).unwrap(),
            Resamples::draw(n, &cfg(300), &mut rng).unwrap(),
        )
    }

    #[test]
    fn frechet_intervals_separate_a_shift_from_the_floor_and_cover_the_closed_form() {
        // Reference N(0, I_2); floor: another draw of N(0, I_2); shifted: N(0.5, I_2), whose
        // population distance is |dmu|^2 = 2 * 0.25 = 0.5; scaled: N(0, 4 I_2), distance
        // sum (1 - 2)^2 = 2.
        let mut rng = SeededRng::new(3);
        let (n, d) = (2000, 2);
        let r = gaussian(n, d, 0.0, 1.0, &mut rng);
        let same = gaussian(n, d, 0.0, 1.0, &mut rng);
        let shifted = gaussian(n, d, 0.5, 1.0, &mut rng);
        let scaled = gaussian(n, d, 0.0, 2.0, &mut rng);
        let (rd, sd) = draws(n, 9);
        let iv = frechet_intervals(
            &emb(n, d, &r),
            &[&emb(n, d, &same), &emb(n, d, &shifted), &emb(n, d, &scaled)],
            &rd,
            &sd,
            0.95,
        )
        .unwrap();
        // the floor is near 0 (bias of order d / n) and far below the shifted set's interval
        assert!(iv[0].upper < 0.02, "{:?}", iv[0]);
        assert!(iv[1].lower > iv[0].upper, "{:?} vs {:?}", iv[1], iv[0]);
        assert!(iv[1].contains(0.5), "{:?}", iv[1]);
        assert!(iv[2].contains(2.0), "{:?}", iv[2]);
        // the estimate is the plain Frechet distance
        let plain = frechet_distance(&emb(n, d, &r), &emb(n, d, &shifted)).unwrap();
        assert!((iv[1].estimate - plain).abs() < 1e-12);
        assert_eq!(iv[1].sizes, vec![n, n]);
    }

    #[test]
    fn mmd_intervals_cover_zero_for_one_distribution_and_exclude_it_for_a_shift() {
        let mut rng = SeededRng::new(5);
        let (n, d) = (400, 3);
        let r = gaussian(n, d, 0.0, 1.0, &mut rng);
        let same = gaussian(n, d, 0.0, 1.0, &mut rng);
        let shifted = gaussian(n, d, 1.0, 1.0, &mut rng);
        let sigma = reference_bandwidth(&emb(n, d, &r), 1000).unwrap();
        let (rd, sd) = draws(n, 11);
        let iv = mmd_intervals(
            &emb(n, d, &r),
            &[&emb(n, d, &same), &emb(n, d, &shifted)],
            &rd,
            &sd,
            sigma,
            0.95,
        )
        .unwrap();
        assert!(iv[0].contains(0.0), "{:?}", iv[0]);
        assert!(iv[1].lower > 0.0, "{:?}", iv[1]);
        // estimate = the unbiased estimator with that fixed bandwidth
        let cfg = MmdConfig {
            bandwidth: Bandwidth::Fixed(sigma),
            ..MmdConfig::default()
        };
        let plain = mmd2_rbf(&emb(n, d, &r), &emb(n, d, &shifted), &cfg)
            .unwrap()
            .mmd2;
        assert!((iv[1].estimate - plain).abs() < 1e-12);
    }

    #[test]
    fn unit_counts_give_the_unbiased_estimate_exactly() {
        // within/across with every multiplicity 1 are the unbiased MMD terms: check on the
        // hand-computed case x = {0, 1}, y = {0, 2}, sigma = 1: MMD² = e^{-2} / 2 - 1/2.
        let x = DMatrix::from_row_slice(2, 1, &[0.0, 1.0]);
        let y = DMatrix::from_row_slice(2, 1, &[0.0, 2.0]);
        let k =
            |a: &DMatrix<f64>, b: &DMatrix<f64>| linalg::sq_dists(a, b).map(|d| (-0.5 * d).exp());
        let one = [1u32, 1];
        let v = within(&k(&x, &x), &one) + within(&k(&y, &y), &one)
            - 2.0 * across(&k(&x, &y), &one, &one);
        assert!((v - (0.5 * (-2f64).exp() - 0.5)).abs() < 1e-12, "{v}");
        // a window drawn twice is not compared with itself: counts (2, 0) leave no pair
        assert!(within(&k(&x, &x), &[2, 0]).abs() < 1e-15);
    }

    #[test]
    fn spectral_intervals_separate_other_frequencies() {
        // windows of one tone at a random frequency in [1, 2] Hz (reference and floor) or in
        // [4, 5] Hz (other), random phase, 1 channel of 300 samples at 30 Hz
        let mut rng = SeededRng::new(8);
        let n = 60;
        let mut tones = |lo: f64, hi: f64| -> Vec<f32> {
            let mut v = Vec::new();
            for _ in 0..n {
                let f = rng.uniform_range(lo, hi);
                let ph = rng.uniform_range(0.0, std::f64::consts::TAU);
                v.extend((0..300).map(|l| {
                    ((std::f64::consts::TAU * f * l as f64 / 30.0 + ph).sin() + 0.05 * rng.normal())
                        as f32
                }));
            }
            v
        };
        let (r, same, other) = (tones(1.0, 2.0), tones(1.0, 2.0), tones(4.0, 5.0));
        let (rd, sd) = draws(n, 2);
        let iv = spectral_intervals(
            &win(n, &r),
            &[&win(n, &same), &win(n, &other)],
            &rd,
            &sd,
            30.0,
            0.95,
        )
        .unwrap();
        assert!(
            iv[1].0.lower > iv[0].0.upper,
            "{:?} vs {:?}",
            iv[1].0,
            iv[0].0
        );
        assert!(
            iv[1].0.lower > 1.8,
            "disjoint bands are near the maximum 2: {:?}",
            iv[1].0
        );
        let plain = spectral_distance(&win(n, &r), &win(n, &other), 30.0).unwrap();
        assert!((iv[1].0.estimate - plain.l1).abs() < 1e-12);
        assert!((iv[1].1.estimate - plain.log_spectral_db).abs() < 1e-12);
    }

    #[test]
    fn mismatched_sizes_are_errors() {
        let mut rng = SeededRng::new(1);
        let a = gaussian(10, 2, 0.0, 1.0, &mut rng);
        let b = gaussian(12, 2, 0.0, 1.0, &mut rng);
        let (rd, sd) = draws(10, 1);
        let ea = Embeddings::new(&a, 10, 2).unwrap();
        let eb = Embeddings::new(&b, 12, 2).unwrap();
        assert!(frechet_intervals(&ea, &[&eb], &rd, &sd, 0.95).is_err());
        assert!(mmd_intervals(&ea, &[&ea], &rd, &sd, 0.0, 0.95).is_err());
    }
}
