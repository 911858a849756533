//! Matched quality and the speed-up: a flow row matches the DDPM baseline when its interval
//! overlaps or beats DDPM's on every metric of [`Quality::metrics`]
//! (`flowfm_eval::generative::matched`); the speed-up is that of the fastest matched flow row,
//! with the bootstrap interval of the ratio of mean per-batch sampling times.

use super::quality::{Quality, Speedup, StudyRow};
use anyhow::Result;
use flowfm_core::SeededRng;
use flowfm_eval::generative::matched::unmatched;
use flowfm_eval::stats::{bootstrap_ratio_of_means, BootstrapConfig, Interval};

/// The metrics on which `q` neither overlaps nor beats `baseline`.
pub fn unmatched_metrics(q: &Quality, baseline: &Quality) -> Vec<String> {
    let metrics: Vec<_> = q
        .metrics()
        .into_iter()
        .zip(baseline.metrics())
        .map(|((name, c, better), (_, b, _))| (name, c, b, better))
        .collect();
    unmatched(&metrics).into_iter().map(String::from).collect()
}

/// Fills every row's `unmatched` against the DDPM row, then returns the speed-up of the fastest
/// (by ms per window) matched flow row over DDPM, with its interval, or `None` and why.
///
/// The interval resamples each row's per-batch milliseconds per window on their own
/// (`bootstrap_ratio_of_means`); with fewer than 2 batches on either side it is the point value.
///
/// Matching DDPM is not the same as being good: the note also says on which metrics DDPM itself
/// stays short of the real-vs-real `floor`.
pub fn matched_speedup(
    rows: &mut [StudyRow],
    floor: &Quality,
    cfg: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<(Option<Speedup>, String)> {
    let Some(base_i) = rows
        .iter()
        .position(|r| r.method == "diffusion" && r.sampler.starts_with("ddpm"))
    else {
        return Ok((
            None,
            "no DDPM row in the study, so no speed-up is reported".into(),
        ));
    };
    let base = rows[base_i].clone();
    let short = unmatched_metrics(&base.quality, floor);
    let caveat = if short.is_empty() {
        format!(
            "; {} itself overlaps the real-vs-real floor on every metric",
            base.sampler
        )
    } else {
        format!(
            "; matched means as good as {}, which itself stays short of the real-vs-real floor on {} of 7 metrics ({})",
            base.sampler,
            short.len(),
            short.join(", ")
        )
    };
    for (i, r) in rows.iter_mut().enumerate() {
        r.unmatched = if i == base_i {
            Vec::new()
        } else {
            unmatched_metrics(&r.quality, &base.quality)
        };
    }
    let best = rows
        .iter()
        .filter(|r| r.method == "flowfm" && r.unmatched.is_empty())
        .min_by(|a, b| a.ms_per_window.total_cmp(&b.ms_per_window));
    let Some(r) = best else {
        let flows: Vec<String> = rows
            .iter()
            .filter(|r| r.method == "flowfm")
            .map(|r| format!("{} ({})", r.sampler, r.unmatched.join(", ")))
            .collect();
        let note = if flows.is_empty() {
            "no flow rows, so no speed-up is reported".to_string()
        } else {
            format!(
                "no flow setting matched {}'s quality (its intervals neither overlap nor beat DDPM's on every metric), so no speed-up is reported; unmatched metrics per setting: {}",
                base.sampler,
                flows.join("; ")
            )
        };
        return Ok((None, note + &caveat));
    };
    let point = base.ms_per_window / r.ms_per_window;
    let factor = if base.batch_ms_per_window.len() >= 2 && r.batch_ms_per_window.len() >= 2 {
        let mut i =
            bootstrap_ratio_of_means(&base.batch_ms_per_window, &r.batch_ms_per_window, cfg, rng)?;
        // the table's factor is that of the total times (equal to the ratio of means when all
        // batches are full)
        i.estimate = point;
        i
    } else {
        Interval {
            estimate: point,
            lower: point,
            upper: point,
            standard_error: 0.0,
            confidence: cfg.confidence,
            resamples: 0,
            sizes: vec![base.batch_ms_per_window.len(), r.batch_ms_per_window.len()],
        }
    };
    let s = Speedup {
        flow_sampler: r.sampler.clone(),
        baseline_sampler: base.sampler.clone(),
        factor,
        nfe_ratio: base.nfe as f64 / r.nfe.max(1) as f64,
    };
    let note = format!(
        "the fastest flow setting at matched quality is {} ({} NFE): {:.1}x faster per window than {} [{:.0} % interval {:.1}, {:.1}; batches of each resampled], {:.1}x fewer network evaluations",
        r.sampler,
        r.nfe,
        s.factor.estimate,
        base.sampler,
        100.0 * cfg.confidence,
        s.factor.lower,
        s.factor.upper,
        s.nfe_ratio
    );
    Ok((Some(s), note + &caveat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(lower: f64, upper: f64) -> Interval {
        Interval {
            estimate: 0.5 * (lower + upper),
            lower,
            upper,
            standard_error: 0.0,
            confidence: 0.95,
            resamples: 200,
            sizes: vec![100, 100],
        }
    }

    /// A row whose distance metrics all have interval `d` and label agreement `agree`.
    fn row(
        method: &str,
        sampler: &str,
        nfe: usize,
        ms: f64,
        d: (f64, f64),
        agree: (f64, f64),
    ) -> StudyRow {
        let q = Quality {
            frechet: iv(d.0, d.1),
            frechet_features: iv(d.0, d.1),
            mmd2: iv(d.0, d.1),
            discriminative: iv(d.0, d.1),
            spectral_l1: iv(d.0, d.1),
            spectral_db: iv(d.0, d.1),
            label_agreement: iv(agree.0, agree.1),
        };
        StudyRow {
            method: method.into(),
            sampler: sampler.into(),
            nfe,
            windows: 100,
            ms_per_window: ms,
            batch_ms_per_window: vec![ms * 0.9, ms, ms * 1.1],
            quality: q,
            consistency: iv(0.9, 0.95),
            unmatched: vec!["stale".into()],
        }
    }

    /// The real-vs-real floor: distances (0, 0.5), agreement (0.8, 0.9).
    fn floor() -> Quality {
        row("real", "floor", 0, 0.0, (0.0, 0.5), (0.8, 0.9)).quality
    }

    fn rows() -> Vec<StudyRow> {
        vec![
            row("flowfm", "euler-1", 1, 1.0, (5.0, 6.0), (0.7, 0.8)),
            row("flowfm", "euler-4", 4, 4.0, (1.9, 2.5), (0.6, 0.7)),
            row("flowfm", "euler-8", 8, 8.0, (1.0, 1.5), (0.7, 0.8)),
            row("diffusion", "ddim-10", 10, 10.0, (3.0, 4.0), (0.5, 0.6)),
            row(
                "diffusion",
                "ddpm-1000",
                1000,
                1000.0,
                (1.5, 2.0),
                (0.65, 0.75),
            ),
        ]
    }

    #[test]
    fn the_fastest_flow_setting_overlapping_ddpm_on_every_metric_gives_the_speedup() {
        let mut r = rows();
        let cfg = BootstrapConfig {
            resamples: 500,
            confidence: 0.95,
        };
        let (s, note) = matched_speedup(&mut r, &floor(), &cfg, &mut SeededRng::new(1)).unwrap();
        // euler-1 is far off; euler-4's distances overlap (1.9 <= 2.0) and its agreement
        // overlaps (0.7 >= 0.65): it matches and is faster than euler-8 (which beats DDPM)
        let s = s.expect("euler-4 matches");
        assert_eq!(
            (s.flow_sampler.as_str(), s.baseline_sampler.as_str()),
            ("euler-4", "ddpm-1000")
        );
        assert!((s.factor.estimate - 250.0).abs() < 1e-9);
        assert!(
            s.factor.lower < 250.0 && s.factor.upper > 250.0,
            "{:?}",
            s.factor
        );
        assert!((s.nfe_ratio - 250.0).abs() < 1e-9);
        assert!(note.contains("euler-4"), "{note}");
        // DDPM (distances 1.5-2, agreement 0.65-0.75) is short of the floor on all 7 metrics
        assert!(
            note.contains("short of the real-vs-real floor on 7 of 7"),
            "{note}"
        );
        assert_eq!(
            r[0].unmatched.len(),
            6,
            "every distance of euler-1 is off: {:?}",
            r[0].unmatched
        );
        assert!(
            r[1].unmatched.is_empty() && r[2].unmatched.is_empty() && r[4].unmatched.is_empty()
        );
        assert_eq!(r[3].unmatched.len(), 7);
    }

    #[test]
    fn one_unmatched_metric_is_enough_to_disqualify() {
        let mut r = rows();
        // euler-4 loses on label agreement alone: euler-8 is the answer
        r[1].quality.label_agreement = iv(0.5, 0.6);
        let cfg = BootstrapConfig::default();
        let (s, _) = matched_speedup(&mut r, &floor(), &cfg, &mut SeededRng::new(1)).unwrap();
        assert_eq!(s.unwrap().flow_sampler, "euler-8");
        assert_eq!(r[1].unmatched, vec!["label agreement".to_string()]);
        // no flow setting matches: None, and the note names what failed
        let mut r = rows();
        r[1].quality.spectral_db = iv(2.1, 3.0);
        r[2].quality.frechet = iv(2.01, 2.2);
        let (s, note) = matched_speedup(&mut r, &floor(), &cfg, &mut SeededRng::new(1)).unwrap();
        assert!(s.is_none());
        assert!(
            note.contains("no flow setting matched") && note.contains("spectral dB"),
            "{note}"
        );
        // no DDPM row
        let mut r = rows();
        r.truncate(4);
        let (s, note) = matched_speedup(&mut r, &floor(), &cfg, &mut SeededRng::new(1)).unwrap();
        assert!(s.is_none() && note.contains("no DDPM"), "{note}");
    }
}
