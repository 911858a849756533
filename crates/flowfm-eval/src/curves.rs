//! Validation curves of pretraining, summarised so that probe noise cannot flip a verdict: the
//! normalised area under the curve, a fixed threshold sweep (the first step and training second
//! at which a curve reaches each threshold), their mean with a bootstrap interval across seeds,
//! and the ratio of two methods' times with an interval.
//!
//! A curve is a list of probes `(step, training seconds, value)`. Thresholds are fixed by the
//! caller in advance, never derived from the runs' own maxima. "Reaches" means the first probe
//! whose value is at least the threshold ([`Direction::HigherIsBetter`]) or at most it
//! ([`Direction::LowerIsBetter`]), with no interpolation between probes.

use flowfm_core::SeededRng;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::stats::{
    bootstrap_mean, bootstrap_ratio_of_means, mean_sd, BootstrapConfig, Direction, Interval, MeanSd,
};

/// One validation probe.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Optimiser steps done when the probe ran.
    pub step: u64,
    /// Training wall time in seconds when the probe ran (probe time excluded).
    pub secs: f64,
    /// The validation score (or loss).
    pub value: f64,
}

/// Which x axis a curve is read along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurveAxis {
    /// Optimiser steps.
    Steps,
    /// Training seconds.
    Secs,
}

/// Where a curve first reached a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Crossing {
    /// Step of the first probe that reached it.
    pub step: u64,
    /// Training seconds at that probe.
    pub secs: f64,
}

impl Crossing {
    /// The crossing read along `axis`.
    pub fn at(&self, axis: CurveAxis) -> f64 {
        match axis {
            CurveAxis::Steps => self.step as f64,
            CurveAxis::Secs => self.secs,
        }
    }
}

/// One threshold of a sweep on one curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdCrossing {
    /// The threshold.
    pub threshold: f64,
    /// Where the curve first reached it; `None` if it never did.
    pub reached: Option<Crossing>,
}

/// A validated validation curve: at least one probe, steps strictly increasing, seconds finite,
/// non-negative and non-decreasing, values finite.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationCurve {
    points: Vec<CurvePoint>,
}

impl ValidationCurve {
    /// Checks and wraps `points` (errors name the first bad point).
    pub fn new(points: Vec<CurvePoint>) -> Result<Self> {
        if points.is_empty() {
            return Err(EvalError::invalid(
                "points",
                "a curve needs at least one probe",
            ));
        }
        for (i, p) in points.iter().enumerate() {
            if !p.value.is_finite() {
                return Err(EvalError::invalid(
                    format!("points[{i}].value"),
                    format!("{} is not finite", p.value),
                ));
            }
            if !(p.secs.is_finite() && p.secs >= 0.0) {
                return Err(EvalError::invalid(
                    format!("points[{i}].secs"),
                    format!("{} is not a finite non-negative time", p.secs),
                ));
            }
            if i > 0 {
                let q = &points[i - 1];
                if p.step <= q.step {
                    return Err(EvalError::invalid(
                        format!("points[{i}].step"),
                        format!("{} does not follow step {}", p.step, q.step),
                    ));
                }
                if p.secs < q.secs {
                    return Err(EvalError::invalid(
                        format!("points[{i}].secs"),
                        format!("{} s is before the previous probe's {} s", p.secs, q.secs),
                    ));
                }
            }
        }
        Ok(Self { points })
    }

    /// A curve from three columns of equal length.
    pub fn from_columns(steps: &[u64], secs: &[f64], values: &[f64]) -> Result<Self> {
        if steps.len() != secs.len() || steps.len() != values.len() {
            return Err(EvalError::mismatch(
                "steps",
                "secs / values",
                format!(
                    "{} steps, {} secs, {} values",
                    steps.len(),
                    secs.len(),
                    values.len()
                ),
            ));
        }
        Self::new(
            steps
                .iter()
                .zip(secs)
                .zip(values)
                .map(|((&step, &secs), &value)| CurvePoint { step, secs, value })
                .collect(),
        )
    }

    /// The probes.
    pub fn points(&self) -> &[CurvePoint] {
        &self.points
    }

    /// Area under the curve along `axis` by the trapezoid rule, divided by the span
    /// `x_last - x_first`: the curve's average value over training (`numpy.trapezoid(v, x) /
    /// (x[-1] - x[0])`). Needs at least two probes and a positive span.
    pub fn normalised_area(&self, axis: CurveAxis) -> Result<f64> {
        let x = |p: &CurvePoint| match axis {
            CurveAxis::Steps => p.step as f64,
            CurveAxis::Secs => p.secs,
        };
        let (first, last) = (&self.points[0], &self.points[self.points.len() - 1]);
        let span = x(last) - x(first);
        if self.points.len() < 2 || span <= 0.0 {
            return Err(EvalError::invalid(
                "curve",
                format!(
                    "an area along {axis:?} needs two probes with a positive span ({} probes, span {span})",
                    self.points.len()
                ),
            ));
        }
        let area: f64 = self
            .points
            .windows(2)
            .map(|w| (x(&w[1]) - x(&w[0])) * (w[0].value + w[1].value) / 2.0)
            .sum();
        Ok(area / span)
    }

    /// The first probe reaching `threshold`; `None` if none does.
    pub fn first_reaching(&self, threshold: f64, direction: Direction) -> Option<Crossing> {
        self.points
            .iter()
            .find(|p| match direction {
                Direction::HigherIsBetter => p.value >= threshold,
                Direction::LowerIsBetter => p.value <= threshold,
            })
            .map(|p| Crossing {
                step: p.step,
                secs: p.secs,
            })
    }

    /// [`ValidationCurve::first_reaching`] for every threshold (finite), in the given order.
    pub fn threshold_sweep(
        &self,
        thresholds: &[f64],
        direction: Direction,
    ) -> Result<Vec<ThresholdCrossing>> {
        check_thresholds(thresholds)?;
        Ok(thresholds
            .iter()
            .map(|&threshold| ThresholdCrossing {
                threshold,
                reached: self.first_reaching(threshold, direction),
            })
            .collect())
    }
}

/// One quantity over seeds: the per-seed values, mean +- sd and the percentile bootstrap
/// interval of the mean (`None` with a single seed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcrossSeeds {
    /// One value per seed, in the order of the curves.
    pub values: Vec<f64>,
    /// Mean and sample sd.
    pub mean_sd: MeanSd,
    /// Bootstrap interval of the mean over seeds.
    pub interval: Option<Interval>,
}

impl AcrossSeeds {
    /// Summarises `values` (at least one, finite); the interval needs at least two.
    pub fn new(values: Vec<f64>, cfg: &BootstrapConfig, rng: &mut SeededRng) -> Result<Self> {
        let summary = mean_sd(&values)?;
        let interval = if values.len() >= 2 {
            Some(bootstrap_mean(&values, cfg, rng)?)
        } else {
            None
        };
        Ok(Self {
            values,
            mean_sd: summary,
            interval,
        })
    }
}

/// One threshold over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdSummary {
    /// The threshold.
    pub threshold: f64,
    /// Where each seed's curve first reached it.
    pub per_seed: Vec<Option<Crossing>>,
    /// How many seeds reached it.
    pub reached: usize,
    /// Steps to the threshold over seeds; `None` unless every seed reached it (a mean over the
    /// seeds that did would hide the ones that did not).
    pub steps: Option<AcrossSeeds>,
    /// Training seconds to the threshold over seeds; `None` unless every seed reached it.
    pub secs: Option<AcrossSeeds>,
}

/// One method's validation curves over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurveSummary {
    /// Number of seeds (curves).
    pub seeds: usize,
    /// Normalised area along steps over seeds.
    pub area_steps: AcrossSeeds,
    /// Normalised area along training seconds over seeds.
    pub area_secs: AcrossSeeds,
    /// The threshold sweep, in the order of the thresholds.
    pub thresholds: Vec<ThresholdSummary>,
}

/// Summarises one method's curves, one per seed: areas and a threshold sweep, each as per-seed
/// values, mean +- sd and a bootstrap interval of the mean across seeds.
pub fn summarise_seeds(
    curves: &[ValidationCurve],
    thresholds: &[f64],
    direction: Direction,
    cfg: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<CurveSummary> {
    if curves.is_empty() {
        return Err(EvalError::invalid(
            "curves",
            "no curves (one per seed) given",
        ));
    }
    check_thresholds(thresholds)?;
    let areas = |axis| -> Result<Vec<f64>> {
        curves
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.normalised_area(axis)
                    .map_err(|e| EvalError::invalid(format!("curves[{i}]"), e.to_string()))
            })
            .collect()
    };
    let area_steps = AcrossSeeds::new(areas(CurveAxis::Steps)?, cfg, rng)?;
    let area_secs = AcrossSeeds::new(areas(CurveAxis::Secs)?, cfg, rng)?;
    let mut summaries = Vec::with_capacity(thresholds.len());
    for &threshold in thresholds {
        let per_seed: Vec<Option<Crossing>> = curves
            .iter()
            .map(|c| c.first_reaching(threshold, direction))
            .collect();
        let reached = per_seed.iter().filter(|c| c.is_some()).count();
        let all: Option<Vec<Crossing>> = per_seed.iter().copied().collect();
        let (steps, secs) = match all {
            Some(all) => {
                let along = |axis| all.iter().map(|c| c.at(axis)).collect::<Vec<_>>();
                (
                    Some(AcrossSeeds::new(along(CurveAxis::Steps), cfg, rng)?),
                    Some(AcrossSeeds::new(along(CurveAxis::Secs), cfg, rng)?),
                )
            }
            None => (None, None),
        };
        summaries.push(ThresholdSummary {
            threshold,
            per_seed,
            reached,
            steps,
            secs,
        });
    }
    Ok(CurveSummary {
        seeds: curves.len(),
        area_steps,
        area_secs,
        thresholds: summaries,
    })
}

/// The ratio of method A's to method B's time to one threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRatio {
    /// The threshold.
    pub threshold: f64,
    /// Seeds of A and of B that reached it.
    pub reached: (usize, usize),
    /// `mean(A's times) / mean(B's times)` with its bootstrap interval (seeds of each method
    /// resampled independently; [`bootstrap_ratio_of_means`]); `None` unless every seed of both
    /// reached the threshold, each method has at least two seeds and every time of B is positive.
    pub ratio: Option<Interval>,
}

/// For every threshold, the ratio of A's mean time to B's along `axis` (e.g. flow over
/// diffusion in training seconds: below 1 means A gets there faster), with an interval from a
/// bootstrap over seeds.
pub fn time_ratio(
    a: &[ValidationCurve],
    b: &[ValidationCurve],
    thresholds: &[f64],
    axis: CurveAxis,
    direction: Direction,
    cfg: &BootstrapConfig,
    rng: &mut SeededRng,
) -> Result<Vec<ThresholdRatio>> {
    if a.is_empty() || b.is_empty() {
        return Err(EvalError::invalid(
            if a.is_empty() { "a" } else { "b" },
            "no curves (one per seed) given",
        ));
    }
    check_thresholds(thresholds)?;
    let mut out = Vec::with_capacity(thresholds.len());
    for &threshold in thresholds {
        let times = |curves: &[ValidationCurve]| -> Vec<f64> {
            curves
                .iter()
                .filter_map(|c| c.first_reaching(threshold, direction))
                .map(|c| c.at(axis))
                .collect()
        };
        let (ta, tb) = (times(a), times(b));
        let defined = ta.len() == a.len()
            && tb.len() == b.len()
            && ta.len() >= 2
            && tb.len() >= 2
            && tb.iter().all(|&t| t > 0.0);
        let ratio = if defined {
            Some(bootstrap_ratio_of_means(&ta, &tb, cfg, rng)?)
        } else {
            None
        };
        out.push(ThresholdRatio {
            threshold,
            reached: (ta.len(), tb.len()),
            ratio,
        });
    }
    Ok(out)
}

fn check_thresholds(thresholds: &[f64]) -> Result<()> {
    if let Some(i) = thresholds.iter().position(|t| !t.is_finite()) {
        return Err(EvalError::invalid(
            format!("thresholds[{i}]"),
            format!("{} is not finite", thresholds[i]),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    /// A hand-made score history: probes every 100 steps, uneven seconds, a dip at step 300.
    fn history(values: [f64; 5], secs: [f64; 5]) -> ValidationCurve {
        ValidationCurve::from_columns(&[0, 100, 200, 300, 400], &secs, &values).unwrap()
    }

    const SECS: [f64; 5] = [0.0, 10.0, 21.0, 33.0, 44.0];

    #[test]
    fn the_sweep_finds_the_first_probe_at_or_past_each_threshold() {
        let c = history([0.1, 0.3, 0.5, 0.45, 0.6], SECS);
        let sweep = c
            .threshold_sweep(&[0.2, 0.5, 0.55, 0.7], Direction::HigherIsBetter)
            .unwrap();
        let got: Vec<Option<(u64, f64)>> = sweep
            .iter()
            .map(|t| t.reached.map(|c| (c.step, c.secs)))
            .collect();
        assert_eq!(
            got,
            vec![
                Some((100, 10.0)),
                Some((200, 21.0)),
                Some((400, 44.0)),
                None
            ]
        );
        // a loss curve: lower is better
        let loss = history([2.0, 1.5, 1.2, 1.3, 0.9], SECS);
        let first = loss.first_reaching(1.25, Direction::LowerIsBetter).unwrap();
        assert_eq!((first.step, first.secs), (200, 21.0));
        assert!(loss.first_reaching(0.5, Direction::LowerIsBetter).is_none());
    }

    #[test]
    fn area_of_a_straight_line_is_its_midpoint_value() {
        // v = 0.1 + 0.001 * step on [0, 400]: average value = v(200) = 0.3, along either axis
        // when seconds are proportional to steps
        let c = ValidationCurve::from_columns(
            &[0, 100, 200, 300, 400],
            &[0.0, 5.0, 10.0, 15.0, 20.0],
            &[0.1, 0.2, 0.3, 0.4, 0.5],
        )
        .unwrap();
        let t = Tolerance::new(1e-12, 1e-15);
        assert!(t.close(c.normalised_area(CurveAxis::Steps).unwrap(), 0.3));
        assert!(t.close(c.normalised_area(CurveAxis::Secs).unwrap(), 0.3));
        let one = ValidationCurve::from_columns(&[5], &[1.0], &[0.5]).unwrap();
        assert!(one.normalised_area(CurveAxis::Steps).is_err());
        let frozen = ValidationCurve::from_columns(&[0, 10], &[3.0, 3.0], &[0.1, 0.2]).unwrap();
        assert!(frozen.normalised_area(CurveAxis::Secs).is_err());
    }

    #[test]
    fn bad_curves_are_errors_naming_the_probe() {
        let e = |r: Result<ValidationCurve>| r.unwrap_err().to_string();
        assert!(e(ValidationCurve::new(vec![])).contains("points"));
        assert!(e(ValidationCurve::from_columns(
            &[0, 0],
            &[0.0, 1.0],
            &[0.1, 0.2]
        ))
        .contains("points[1].step"));
        assert!(e(ValidationCurve::from_columns(
            &[0, 1],
            &[2.0, 1.0],
            &[0.1, 0.2]
        ))
        .contains("points[1].secs"));
        assert!(e(ValidationCurve::from_columns(
            &[0, 1],
            &[0.0, 1.0],
            &[0.1, f64::NAN]
        ))
        .contains("points[1].value"));
        assert!(
            e(ValidationCurve::from_columns(&[0, 1], &[0.0], &[0.1, 0.2])).contains("mismatch")
        );
        let c = history([0.1, 0.3, 0.5, 0.45, 0.6], SECS);
        assert!(c
            .threshold_sweep(&[0.5, f64::NAN], Direction::HigherIsBetter)
            .unwrap_err()
            .to_string()
            .contains("thresholds[1]"));
    }

    #[test]
    fn seeds_are_summarised_with_exact_interval_ends_and_censoring() {
        // three seeds reach 0.5 at steps 200, 300, 200; none of them reaches 0.7 and only one 0.6
        let curves = [
            history([0.1, 0.3, 0.5, 0.45, 0.6], SECS),
            history([0.1, 0.2, 0.4, 0.5, 0.55], [0.0, 11.0, 22.0, 33.0, 44.0]),
            history([0.2, 0.4, 0.55, 0.5, 0.58], [0.0, 9.0, 20.0, 30.0, 41.0]),
        ];
        let cfg = BootstrapConfig::default();
        let s = summarise_seeds(
            &curves,
            &[0.5, 0.6, 0.7],
            Direction::HigherIsBetter,
            &cfg,
            &mut SeededRng::new(1),
        )
        .unwrap();
        assert_eq!(s.seeds, 3);
        let half = &s.thresholds[0];
        assert_eq!(half.reached, 3);
        let steps = half.steps.as_ref().unwrap();
        assert_eq!(steps.values, vec![200.0, 300.0, 200.0]);
        assert!(Tolerance::F64.close(steps.mean_sd.mean, 700.0 / 3.0));
        // resampled means of three values lie in {200, 233.3, 266.7, 300}; the top one has
        // probability 1/27 = 3.7 % > 2.5 % and the bottom one 8/27: the interval is [200, 300]
        let ci = steps.interval.as_ref().unwrap();
        assert_eq!((ci.lower, ci.upper), (200.0, 300.0));
        let secs = half.secs.as_ref().unwrap();
        assert_eq!(secs.values, vec![21.0, 33.0, 20.0]);
        // 0.6 reached by one seed only: counted, no mean over the survivors
        assert_eq!(s.thresholds[1].reached, 1);
        assert!(s.thresholds[1].steps.is_none() && s.thresholds[1].secs.is_none());
        assert_eq!(s.thresholds[2].reached, 0);
        // areas: the first seed's by hand along steps:
        // 100 * (0.2 + 0.4 + 0.475 + 0.525) / 400 = 0.4
        assert!(Tolerance::F64.close(s.area_steps.values[0], 0.4));
        assert_eq!(s.area_secs.values.len(), 3);
        assert!(s.area_steps.interval.is_some());
    }

    #[test]
    fn the_ratio_of_times_is_bounded_by_its_extreme_resamples() {
        // A reaches 0.5 at 10, 12, 11 s; B at 20, 24, 22 s: ratio of means 33 / 66 = 0.5, and
        // every resampled ratio lies in [10 / 24, 12 / 20]
        let a: Vec<ValidationCurve> = [10.0, 12.0, 11.0]
            .iter()
            .map(|&t| ValidationCurve::from_columns(&[0, 50], &[0.0, t], &[0.1, 0.6]).unwrap())
            .collect();
        let b: Vec<ValidationCurve> = [20.0, 24.0, 22.0]
            .iter()
            .map(|&t| ValidationCurve::from_columns(&[0, 50], &[0.0, t], &[0.1, 0.6]).unwrap())
            .collect();
        let cfg = BootstrapConfig::default();
        let r = time_ratio(
            &a,
            &b,
            &[0.5, 0.9],
            CurveAxis::Secs,
            Direction::HigherIsBetter,
            &cfg,
            &mut SeededRng::new(2),
        )
        .unwrap();
        let ci = r[0].ratio.as_ref().unwrap();
        assert!(Tolerance::F64.close(ci.estimate, 0.5));
        assert!(ci.lower >= 10.0 / 24.0 && ci.upper <= 12.0 / 20.0 && ci.contains(0.5));
        assert!(ci.lower < 0.5 && ci.upper > 0.5);
        assert_eq!(r[1].reached, (0, 0));
        assert!(r[1].ratio.is_none());
        // along steps both reach at step 50: the ratio is exactly 1
        let steps = time_ratio(
            &a,
            &b,
            &[0.5],
            CurveAxis::Steps,
            Direction::HigherIsBetter,
            &cfg,
            &mut SeededRng::new(2),
        )
        .unwrap();
        let ci = steps[0].ratio.as_ref().unwrap();
        assert_eq!((ci.lower, ci.estimate, ci.upper), (1.0, 1.0, 1.0));
        assert!(time_ratio(
            &[],
            &b,
            &[0.5],
            CurveAxis::Secs,
            Direction::HigherIsBetter,
            &cfg,
            &mut SeededRng::new(2)
        )
        .is_err());
    }
}
