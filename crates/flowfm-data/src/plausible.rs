//! Physical plausibility of recordings: sample rates that wearable sensors can have, timestamps
//! whose unit fits the nominal rate, and accelerations a body can produce.
//!
//! Every reader checks the timing of what it produces ([`check_timing`], with the unit it read the
//! timestamps in, so the message can name the likely mistake: "timestamps look like ms, expected
//! ns"), and `prepare` checks it again for recordings from anywhere else, together with the
//! acceleration bound ([`AccelLimit`]): beyond it is an error, or by option a counted clip.

use serde::{Deserialize, Serialize};

use crate::recording::Recording;

/// Lowest plausible sample rate of a wearable sensor, in Hz.
pub const MIN_RATE_HZ: f64 = 1.0;
/// Highest plausible sample rate of a wearable sensor, in Hz.
pub const MAX_RATE_HZ: f64 = 10_000.0;
/// A rate implied by the timestamps this many times above or below the nominal one is an error
/// in a reader (unless the reader knows its dataset mixes rates, see WISDM).
pub const MAX_RATE_FACTOR: f64 = 2.0;
/// Default of [`AccelLimit::max_abs_g`]: above every consumer accelerometer's range (16 g) and
/// the research loggers' (up to 24 g), far below anything a unit mistake produces.
pub const DEFAULT_MAX_ABS_ACCEL_G: f64 = 64.0;

/// Time units from fine to coarse, each 1000 times the previous one.
const UNIT_LADDER: [&str; 4] = ["ns", "us", "ms", "s"];

/// What to do with an acceleration beyond [`AccelLimit::max_abs_g`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverRange {
    /// Stop with an error naming the recording, channel, sample and value.
    #[default]
    Error,
    /// Clip to `±max_abs_g` and count the samples in the summary.
    Clip,
}

/// The plausibility bound on accelerometer channels (channels whose name starts with `acc`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccelLimit {
    /// Largest plausible absolute acceleration in g (gravity included).
    pub max_abs_g: f64,
    /// What to do beyond it.
    pub over_range: OverRange,
}

impl Default for AccelLimit {
    fn default() -> Self {
        Self {
            max_abs_g: DEFAULT_MAX_ABS_ACCEL_G,
            over_range: OverRange::Error,
        }
    }
}

impl AccelLimit {
    /// Checks the bound is a finite number above 1 g (gravity alone reaches 1 g).
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_abs_g.is_finite() && self.max_abs_g > 1.0) {
            return Err(format!(
                "must be a finite bound above 1 g, got {}",
                self.max_abs_g
            ));
        }
        Ok(())
    }
}

/// Whether a channel holds acceleration in g (the readers name them `acc_x`, `acc_y`, ...).
pub fn is_accel_channel(name: &str) -> bool {
    name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("acc"))
}

/// The rate implied by the timestamps: the reciprocal of the median positive step, over at most
/// 4096 steps spread evenly across the recording (so it costs no memory on long recordings).
/// `None` with fewer than two distinct times.
pub fn implied_rate_hz(timestamps_s: &[f64]) -> Option<f64> {
    const MAX_STEPS: usize = 4096;
    let steps = timestamps_s.len().checked_sub(1)?;
    let stride = steps.div_ceil(MAX_STEPS).max(1);
    let mut dts: Vec<f64> = (0..steps)
        .step_by(stride)
        .map(|i| timestamps_s[i + 1] - timestamps_s[i])
        .filter(|d| d.is_finite() && *d > 0.0)
        .collect();
    if dts.is_empty() {
        return None;
    }
    let mid = dts.len() / 2;
    let (_, m, _) = dts.select_nth_unstable_by(mid, f64::total_cmp);
    Some(1.0 / *m)
}

/// The unit mistake that turns the nominal rate into `implied` when timestamps were read as
/// `unit`: "timestamps look like ms, expected ns". `None` unless the factor is within 3x of a
/// power of 1000 that leads to another unit of the ladder.
fn unit_hint(implied: f64, nominal: f64, unit: &str) -> Option<String> {
    let e = UNIT_LADDER.iter().position(|u| *u == unit)?;
    let decades = (implied / nominal).log10();
    let k = (decades / 3.0).round();
    if k == 0.0 || (decades - 3.0 * k).abs() > 0.5 {
        return None;
    }
    let actual = UNIT_LADDER.get(usize::try_from(e as i64 + k as i64).ok()?)?;
    Some(format!("timestamps look like {actual}, expected {unit}"))
}

/// What is implausible about the timing of `rec`, if anything: a nominal rate outside
/// [`MIN_RATE_HZ`]..=[`MAX_RATE_HZ`], or timestamps implying a rate outside that range or
/// `max_factor` or more times off the nominal rate (readers pass [`MAX_RATE_FACTOR`];
/// `f64::INFINITY` checks the range only). `unit` is the unit the timestamps were read in
/// (`"ns"`, `"us"`, `"ms"` or `"s"`), when known, to name the likely mistake.
pub fn timing_problem(rec: &Recording, unit: Option<&str>, max_factor: f64) -> Option<String> {
    let nominal = rec.sample_rate_hz;
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&nominal) {
        return Some(format!(
            "nominal sample rate {nominal} Hz is outside the plausible {MIN_RATE_HZ} Hz - \
             {MAX_RATE_HZ} Hz of wearable sensors"
        ));
    }
    let implied = implied_rate_hz(rec.timestamps_s.as_deref()?)?;
    let ratio = implied / nominal;
    let in_range = (MIN_RATE_HZ..=MAX_RATE_HZ).contains(&implied);
    if in_range && ratio < max_factor && ratio > 1.0 / max_factor {
        return None;
    }
    let hint = unit
        .and_then(|u| unit_hint(implied, nominal, u))
        .unwrap_or_else(|| match unit {
            Some(u) => format!("are the timestamps in {u}, as expected?"),
            None => "are the timestamps in seconds?".into(),
        });
    let why = if in_range {
        format!("{ratio:.3e} times the nominal {nominal} Hz")
    } else {
        format!("outside the plausible {MIN_RATE_HZ} Hz - {MAX_RATE_HZ} Hz (nominal {nominal} Hz)")
    };
    Some(format!(
        "{}: the timestamps imply a sample rate of {implied:.6e} Hz (median step), {why}; {hint}",
        rec.session
    ))
}

/// [`timing_problem`] with [`MAX_RATE_FACTOR`] as a reader's error naming `path`.
pub(crate) fn check_timing(
    rec: &Recording,
    path: &std::path::Path,
    unit: Option<&str>,
) -> crate::error::Result<()> {
    check_timing_within(rec, path, unit, MAX_RATE_FACTOR)
}

/// [`timing_problem`] with `max_factor` as a reader's error naming `path`.
pub(crate) fn check_timing_within(
    rec: &Recording,
    path: &std::path::Path,
    unit: Option<&str>,
    max_factor: f64,
) -> crate::error::Result<()> {
    match timing_problem(rec, unit, max_factor) {
        Some(msg) => Err(crate::DataError::format(path, msg)),
        None => Ok(()),
    }
}

/// The first acceleration beyond the bound in the channels `channels` of `rec`:
/// `(channel, sample, value)`. NaN is not beyond any bound (the resampler counts it); infinity is.
pub fn first_over_range(
    rec: &Recording,
    channels: &[usize],
    max_abs_g: f64,
) -> Option<(usize, usize, f32)> {
    channels
        .iter()
        .filter(|&&c| {
            rec.channel_names
                .get(c)
                .is_some_and(|n| is_accel_channel(n))
        })
        .filter_map(|&c| {
            let s = rec.signals.get(c)?;
            let i = s.iter().position(|v| f64::from(v.abs()) > max_abs_g)?;
            Some((c, i, s[i]))
        })
        .min_by_key(|&(_, i, _)| i)
}

/// Clips the accelerometer channels among `channels` of `rec` to `±max_abs_g` in place; returns
/// the number of samples clipped (NaN is left alone).
pub fn clip_accel(rec: &mut Recording, channels: &[usize], max_abs_g: f64) -> usize {
    let bound = max_abs_g as f32;
    let mut clipped = 0;
    for &c in channels {
        if !rec
            .channel_names
            .get(c)
            .is_some_and(|n| is_accel_channel(n))
        {
            continue;
        }
        if let Some(s) = rec.signals.get_mut(c) {
            for v in s.iter_mut() {
                if f64::from(v.abs()) > max_abs_g {
                    *v = v.signum() * bound;
                    clipped += 1;
                }
            }
        }
    }
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rate: f64, ts: Option<Vec<f64>>, acc: Vec<f32>) -> Recording {
        let n = acc.len();
        Recording {
            subject_id: 1,
            subject_name: "1".into(),
            session: "s1".into(),
            sample_rate_hz: rate,
            timestamps_s: ts,
            start_time_s: 0.0,
            channel_names: vec!["acc_x".into(), "gyro_x".into()],
            signals: vec![acc, vec![1e6; n]],
            labels: vec![0; n],
        }
    }

    #[test]
    fn implied_rate_is_the_reciprocal_median_step() {
        // Steps 0.05 s with one gap of 10 s and one repeated time: median 0.05 -> 20 Hz.
        let mut t: Vec<f64> = (0..100).map(|i| i as f64 * 0.05).collect();
        t[50..].iter_mut().for_each(|x| *x += 10.0);
        t[20] = t[19];
        let r = implied_rate_hz(&t).unwrap();
        assert!((r - 20.0).abs() < 1e-9, "{r}");
        assert_eq!(implied_rate_hz(&[1.0]), None);
        assert_eq!(implied_rate_hz(&[1.0, 1.0]), None);
        // Long inputs are subsampled, still exact for a regular clock.
        let long: Vec<f64> = (0..1_000_003).map(|i| i as f64 / 100.0).collect();
        assert!((implied_rate_hz(&long).unwrap() - 100.0).abs() < 1e-6);
    }

    #[test]
    fn timestamps_in_ms_read_as_ns_are_named() {
        // WISDM: 20 Hz, timestamps in ns. A file in ms has steps of 50 units -> 50 ns.
        let t: Vec<f64> = (0..10).map(|i| i as f64 * 50.0 * 1e-9).collect();
        let msg = timing_problem(
            &rec(20.0, Some(t), vec![0.0; 10]),
            Some("ns"),
            MAX_RATE_FACTOR,
        )
        .unwrap();
        assert!(
            msg.contains("timestamps look like ms, expected ns"),
            "{msg}"
        );
        assert!(msg.starts_with("s1:"), "{msg}");
        // PAMAP2 expects s; a file in ms (steps of 10 units at 100 Hz) reads as 0.1 Hz.
        let t: Vec<f64> = (0..10).map(|i| i as f64 * 10.0).collect();
        let msg = timing_problem(
            &rec(100.0, Some(t), vec![0.0; 10]),
            Some("s"),
            MAX_RATE_FACTOR,
        )
        .unwrap();
        assert!(msg.contains("outside the plausible"), "{msg}");
        assert!(msg.contains("timestamps look like ms, expected s"), "{msg}");
        // Off by 10x is no unit mistake: no unit is named, only the factor.
        let t: Vec<f64> = (0..10).map(|i| i as f64 * 0.1).collect();
        let msg = timing_problem(
            &rec(100.0, Some(t), vec![0.0; 10]),
            Some("s"),
            MAX_RATE_FACTOR,
        )
        .unwrap();
        assert!(msg.contains("1.000e-1 times the nominal 100 Hz"), "{msg}");
        assert!(!msg.contains("look like"), "{msg}");
        let t: Vec<f64> = (0..10).map(|i| i as f64 * 0.02 * 1e-3).collect();
        let msg = timing_problem(
            &rec(50.0, Some(t), vec![0.0; 10]),
            Some("ms"),
            MAX_RATE_FACTOR,
        )
        .unwrap();
        assert!(msg.contains("timestamps look like s, expected ms"), "{msg}");
    }

    #[test]
    fn one_nanosecond_steps_are_outside_the_plausible_range() {
        let one_ns = rec(20.0, Some(vec![0.0, 1e-9]), vec![0.0; 2]);
        let msg = timing_problem(&one_ns, Some("ns"), MAX_RATE_FACTOR).unwrap();
        assert!(msg.contains("outside the plausible"), "{msg}");
        // The range holds whatever factor is allowed.
        assert!(timing_problem(&one_ns, None, f64::INFINITY).is_some());
    }

    #[test]
    fn factor_two_is_the_boundary() {
        let at = |step: f64| {
            let t: Vec<f64> = (0..10).map(|i| i as f64 * step).collect();
            let r = rec(20.0, Some(t), vec![0.0; 10]);
            (
                timing_problem(&r, None, MAX_RATE_FACTOR),
                timing_problem(&r, None, 6.0),
            )
        };
        assert_eq!(at(0.05), (None, None));
        assert_eq!(at(0.05 / 1.99), (None, None));
        assert_eq!(at(0.05 * 1.99), (None, None));
        assert!(at(0.05 / 2.01).0.is_some());
        assert!(at(0.05 * 2.01).0.is_some());
        // WISDM's allowance: 100 Hz blocks under a nominal 20 Hz pass at 6x, not at 2x.
        assert!(at(0.01).0.is_some() && at(0.01).1.is_none());
        let regular = |rate: f64| timing_problem(&rec(rate, None, vec![0.0]), None, 2.0);
        assert!(regular(20_000.0).is_some());
        assert!(regular(0.5).is_some());
        assert_eq!(regular(1.0), None);
    }

    #[test]
    fn over_range_finds_the_first_accel_sample_and_clipping_counts() {
        let mut r = rec(
            20.0,
            None,
            vec![0.5, f32::NAN, -70.0, f32::INFINITY, 64.0, 1e38],
        );
        // The gyro channel (1e6) is not an accelerometer and never counts.
        assert_eq!(first_over_range(&r, &[0, 1], 64.0), Some((0, 2, -70.0)));
        assert_eq!(first_over_range(&r, &[1], 64.0), None);
        assert_eq!(clip_accel(&mut r, &[0, 1], 64.0), 3);
        assert!(r.signals[0][1].is_nan());
        let as_f64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let tol = flowfm_core::Tolerance::F32;
        tol.assert_close(&as_f64(&r.signals[0][..1]), &[0.5]);
        tol.assert_close(&as_f64(&r.signals[0][2..]), &[-64.0, 64.0, 64.0, 64.0]);
        tol.assert_close(&as_f64(&r.signals[1][..1]), &[1e6]);
        assert_eq!(first_over_range(&r, &[0, 1], 64.0), None);
    }
}
