//! Training time to fixed validation targets, read from the validation curves of several seeds
//! per method: for every threshold of a sweep fixed in advance ([`THRESHOLDS`], never derived
//! from the runs' own maxima), the step and training second at which each seed's curve first
//! reached it, their mean and interval over seeds, and flow matching against diffusion (the
//! ratio of geometric-mean times with Welch's test on log times); and the area under each
//! validation curve (the mean score over training), compared the same way.

use anyhow::{bail, Result};
use flowfm_core::SeededRng;
use flowfm_eval::stats::{
    log_ratio_test, welch_t_test, BootstrapConfig, Direction, LogRatioTest, Verdict, WelchResult,
    ALPHA,
};
use flowfm_eval::{summarise_seeds, AcrossSeeds, CurveAxis, CurveSummary, ValidationCurve};
use serde::{Deserialize, Serialize};

/// The threshold sweep of the validation score (kNN macro F1): 0.10, 0.15, ..., 0.80.
pub const THRESHOLDS: [f64; 15] = [
    0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80,
];

/// One validation probe `(step, training seconds, score)`.
pub type ProbePoint = (u64, f64, f64);

/// One method's sweep over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodSweep {
    /// Method.
    pub method: String,
    /// Areas and threshold crossings over seeds.
    pub summary: CurveSummary,
    /// Each seed's first probe `(step, score)`, in the order of the curves: with its best score,
    /// what tells a rising curve from a flat one.
    #[serde(default)]
    pub first_probe: Vec<(u64, f64)>,
    /// Each seed's best score.
    #[serde(default)]
    pub best: Vec<f64>,
}

impl MethodSweep {
    /// Whether every seed reached `threshold` already at its first probe.
    pub fn reached_at_first_probe(&self, threshold_index: usize) -> bool {
        self.summary
            .thresholds
            .get(threshold_index)
            .is_some_and(|t| {
                t.per_seed.len() == self.first_probe.len()
                    && t.per_seed
                        .iter()
                        .zip(&self.first_probe)
                        .all(|(c, f)| c.as_ref().is_some_and(|c| c.step == f.0))
            })
    }
}

/// Flow against diffusion at one threshold, in training seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdTest {
    /// The threshold.
    pub threshold: f64,
    /// Seeds of flow and of diffusion that reached it.
    pub reached: (usize, usize),
    /// Seeds of each.
    pub seeds: (usize, usize),
    /// Flow's over diffusion's geometric-mean time with its 95 % interval and Welch's test on
    /// log times; `None` unless every seed of both reached the threshold (and the test is
    /// defined).
    pub test: Option<LogRatioTest>,
    /// Faster (`better`) / slower (`worse`) / no significant difference, at p < 0.05.
    pub verdict: Option<Verdict>,
}

/// Flow against diffusion on the area under the validation curve along training seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AreaTest {
    /// Flow's areas over seeds.
    pub flow: AcrossSeeds,
    /// Diffusion's areas over seeds.
    pub diffusion: AcrossSeeds,
    /// Welch's test of flow against diffusion (difference of mean areas).
    pub test: Option<WelchResult>,
    /// Higher area is better.
    pub verdict: Option<Verdict>,
}

/// The whole sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetSweep {
    /// The thresholds.
    pub thresholds: Vec<f64>,
    /// Every method with at least one curve.
    pub methods: Vec<MethodSweep>,
    /// Flow against diffusion at every threshold.
    pub flow_vs_diffusion: Vec<ThresholdTest>,
    /// Flow against diffusion on the area under the curve; `None` without two seeds of each.
    pub area: Option<AreaTest>,
}

impl TargetSweep {
    /// The thresholds that every seed of flow and of diffusion reached, with a defined test.
    pub fn tested(&self) -> impl Iterator<Item = &ThresholdTest> {
        self.flow_vs_diffusion.iter().filter(|t| t.test.is_some())
    }

    /// How many of the tested thresholds flow reached significantly faster, slower, or with no
    /// significant difference.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |v: Verdict| self.tested().filter(|t| t.verdict == Some(v)).count();
        (
            n(Verdict::Better),
            n(Verdict::Worse),
            n(Verdict::NoSignificantDifference),
        )
    }
}

/// Builds the sweep from `(method, one curve per seed)`; `None` when neither flow nor diffusion
/// has a curve. Curves need at least two probes each.
pub fn target_sweep(
    curves: &[(String, Vec<Vec<ProbePoint>>)],
    thresholds: &[f64],
    seed: u64,
) -> Result<Option<TargetSweep>> {
    let rng = SeededRng::new(seed).derive("target-sweep");
    let cfg = BootstrapConfig::default();
    let mut methods = Vec::new();
    let mut validated: Vec<(String, Vec<ValidationCurve>)> = Vec::new();
    for (i, (method, seeds)) in curves.iter().enumerate() {
        let seeds: Vec<&Vec<ProbePoint>> = seeds.iter().filter(|c| c.len() >= 2).collect();
        if seeds.is_empty() {
            continue;
        }
        let vc = seeds
            .iter()
            .map(|c| {
                let steps: Vec<u64> = c.iter().map(|p| p.0).collect();
                let secs: Vec<f64> = c.iter().map(|p| p.1).collect();
                let values: Vec<f64> = c.iter().map(|p| p.2).collect();
                ValidationCurve::from_columns(&steps, &secs, &values)
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("validation curve of {method}: {e}"))?;
        let summary = summarise_seeds(
            &vc,
            thresholds,
            Direction::HigherIsBetter,
            &cfg,
            &mut rng.derive_indexed("method", i as u64),
        )?;
        methods.push(MethodSweep {
            method: method.clone(),
            summary,
            first_probe: seeds.iter().map(|c| (c[0].0, c[0].2)).collect(),
            best: seeds
                .iter()
                .map(|c| c.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max))
                .collect(),
        });
        validated.push((method.clone(), vc));
    }
    let get = |m: &str| validated.iter().find(|(n, _)| n == m).map(|(_, c)| c);
    let (Some(flow), Some(diff)) = (get("flowfm"), get("diffusion")) else {
        if methods.is_empty() {
            return Ok(None);
        }
        bail!("the time-to-target sweep needs validation curves of both flowfm and diffusion");
    };
    let mut flow_vs_diffusion = Vec::new();
    for &threshold in thresholds {
        let times = |cs: &[ValidationCurve]| -> Vec<f64> {
            cs.iter()
                .filter_map(|c| c.first_reaching(threshold, Direction::HigherIsBetter))
                .map(|c| c.at(CurveAxis::Secs))
                .collect()
        };
        let (tf, td) = (times(flow), times(diff));
        let all = tf.len() == flow.len() && td.len() == diff.len();
        let test = if all {
            log_ratio_test(&tf, &td).ok()
        } else {
            None
        };
        let verdict = test
            .as_ref()
            .map(|t| {
                Verdict::from_test(
                    t.welch.p_value,
                    t.welch.difference,
                    Direction::LowerIsBetter,
                    ALPHA,
                )
            })
            .transpose()?;
        flow_vs_diffusion.push(ThresholdTest {
            threshold,
            reached: (tf.len(), td.len()),
            seeds: (flow.len(), diff.len()),
            test,
            verdict,
        });
    }
    let area_of = |m: &str| {
        methods
            .iter()
            .find(|s| s.method == m)
            .map(|s| s.summary.area_secs.clone())
    };
    let area = match (area_of("flowfm"), area_of("diffusion")) {
        (Some(f), Some(d)) if f.values.len() >= 2 && d.values.len() >= 2 => {
            let test = welch_t_test(&f.values, &d.values).ok();
            let verdict = test
                .as_ref()
                .map(|t| {
                    Verdict::from_test(t.p_value, t.difference, Direction::HigherIsBetter, ALPHA)
                })
                .transpose()?;
            Some(AreaTest {
                flow: f,
                diffusion: d,
                test,
                verdict,
            })
        }
        _ => None,
    };
    Ok(Some(TargetSweep {
        thresholds: thresholds.to_vec(),
        methods,
        flow_vs_diffusion,
        area,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A curve rising linearly in seconds from 0 to `top` over 10 probes, `secs_per_probe` apart.
    fn curve(top: f64, secs_per_probe: f64) -> Vec<ProbePoint> {
        (1..=10)
            .map(|i| (i * 10, i as f64 * secs_per_probe, top * i as f64 / 10.0))
            .collect()
    }

    #[test]
    fn a_clearly_faster_method_is_better_and_unreached_thresholds_are_untested() {
        // Flow climbs to 0.6 at about 1 s per probe, diffusion to 0.6 at about 2 s per probe.
        let flow = vec![curve(0.6, 1.0), curve(0.6, 1.05), curve(0.6, 0.95)];
        let diff = vec![curve(0.6, 2.0), curve(0.6, 2.1), curve(0.6, 1.9)];
        let s = target_sweep(
            &[("flowfm".into(), flow), ("diffusion".into(), diff)],
            &[0.3, 0.6, 0.7],
            1,
        )
        .unwrap()
        .unwrap();
        let at = |t: f64| {
            s.flow_vs_diffusion
                .iter()
                .find(|x| (x.threshold - t).abs() < 1e-12)
                .unwrap()
        };
        let t03 = at(0.3).test.as_ref().unwrap();
        // Each flow seed reaches 0.3 at probe 5: 5 s, 5.25 s, 4.75 s; diffusion twice that.
        assert!((t03.ratio - 0.5).abs() < 1e-9, "{}", t03.ratio);
        assert_eq!(at(0.3).verdict, Some(Verdict::Better));
        assert!(at(0.7).test.is_none() && at(0.7).verdict.is_none());
        assert_eq!(at(0.7).reached, (0, 0));
        assert_eq!(s.counts(), (2, 0, 0));
        // The same ramp stretched in time has the same mean score over training in every seed.
        let area = s.area.unwrap();
        assert!((area.flow.mean_sd.mean - area.diffusion.mean_sd.mean).abs() < 1e-12);
    }

    #[test]
    fn a_higher_curve_has_the_better_area() {
        let flow = vec![curve(0.6, 1.0), curve(0.62, 1.0), curve(0.58, 1.0)];
        let diff = vec![curve(0.4, 1.0), curve(0.42, 1.0), curve(0.38, 1.0)];
        let s = target_sweep(
            &[("flowfm".into(), flow), ("diffusion".into(), diff)],
            &THRESHOLDS,
            3,
        )
        .unwrap()
        .unwrap();
        let area = s.area.unwrap();
        // Mean score of a ramp sampled at probes 1..10 over seconds 1..10: top * 0.55.
        assert!((area.flow.mean_sd.mean - 0.6 * 0.55).abs() < 1e-9);
        assert_eq!(area.verdict, Some(Verdict::Better));
    }

    #[test]
    fn identical_methods_show_no_significant_difference() {
        let c = vec![curve(0.5, 1.0), curve(0.5, 1.2), curve(0.5, 0.9)];
        let s = target_sweep(
            &[("flowfm".into(), c.clone()), ("diffusion".into(), c)],
            &THRESHOLDS,
            2,
        )
        .unwrap()
        .unwrap();
        let (b, w, n) = s.counts();
        assert_eq!((b, w), (0, 0));
        assert!(n > 0);
        assert!(s
            .tested()
            .all(|t| (t.test.as_ref().unwrap().ratio - 1.0).abs() < 1e-12));
    }

    #[test]
    fn no_curves_no_sweep_and_one_method_alone_is_an_error() {
        assert!(target_sweep(&[], &THRESHOLDS, 0).unwrap().is_none());
        let c = vec![curve(0.5, 1.0)];
        assert!(target_sweep(&[("flowfm".into(), c)], &THRESHOLDS, 0).is_err());
    }
}
