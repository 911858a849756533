//! Seeded augmentations of single windows `(C, L)` and their composition with probabilities.
//!
//! Geometric transforms (rotation, axis permutation, sign flips) act on consecutive channel
//! triads (accelerometer x, y, z; gyroscope x, y, z), with the same transform for every triad so
//! the sensors stay physically consistent; they need `C` to be a multiple of 3. Scaling, jitter and
//! magnitude warping follow Um et al. (ICMI 2017, "Data augmentation of wearable sensor data for
//! Parkinson's disease monitoring using convolutional neural networks"); time warping, segment
//! permutation and reversal are the transformations of SSL-Wearables (Yuan et al., npj Digital
//! Medicine 2024). All randomness comes from the [`SeededRng`] passed in.

use flowfm_core::SeededRng;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::resample::config_err;

/// One augmentation of a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Augmentation {
    /// A 3-D rotation of every channel triad: uniformly random over SO(3) when `max_angle_rad` is
    /// `None`, otherwise about a uniformly random axis by an angle uniform in
    /// `[-max_angle_rad, max_angle_rad]`.
    Rotation {
        /// Largest rotation angle in radians; `None` for a uniform random rotation.
        max_angle_rad: Option<f64>,
    },
    /// A random permutation of the three axes (the same for every triad).
    AxisPermutation,
    /// Each axis flipped with probability 1/2 (the same flips for every triad).
    SignFlip,
    /// Each channel multiplied by a factor drawn from `N(1, sigma^2)`.
    Scaling {
        /// Standard deviation of the factor.
        sigma: f64,
    },
    /// Independent `N(0, sigma^2)` noise added to every sample.
    Jitter {
        /// Noise standard deviation (in the signal's unit, g).
        sigma: f64,
    },
    /// Each channel multiplied by a smooth curve: a natural cubic spline through `knots + 2`
    /// evenly spaced values drawn from `N(1, sigma^2)`.
    MagnitudeWarp {
        /// Standard deviation of the knot values.
        sigma: f64,
        /// Interior knots.
        knots: usize,
    },
    /// Time warping: a random speed curve (natural cubic spline through `knots + 2` values from
    /// `N(1, sigma^2)`, clipped positive) is integrated into a monotone time map from the first to
    /// the last sample, and every channel is linearly resampled along it.
    TimeWarp {
        /// Standard deviation of the speed knots.
        sigma: f64,
        /// Interior knots.
        knots: usize,
    },
    /// The window is cut into `segments` pieces of at least `min_segment_len` samples each at
    /// random points, and the pieces are put back in a random order (all channels alike).
    SegmentPermutation {
        /// Number of pieces (>= 2).
        segments: usize,
        /// Shortest allowed piece in samples (>= 1).
        min_segment_len: usize,
    },
    /// Time reversal.
    Reversal,
}

impl Augmentation {
    /// A short name for logs and task heads.
    pub fn name(&self) -> &'static str {
        match self {
            Augmentation::Rotation { .. } => "rotation",
            Augmentation::AxisPermutation => "axis_permutation",
            Augmentation::SignFlip => "sign_flip",
            Augmentation::Scaling { .. } => "scaling",
            Augmentation::Jitter { .. } => "jitter",
            Augmentation::MagnitudeWarp { .. } => "magnitude_warp",
            Augmentation::TimeWarp { .. } => "time_warp",
            Augmentation::SegmentPermutation { .. } => "segment_permutation",
            Augmentation::Reversal => "reversal",
        }
    }

    /// Checks the parameters and that a `(channels, len)` window fits; errors name the field.
    pub fn validate(&self, channels: usize, len: usize) -> Result<()> {
        let nonneg = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(config_err(
                    field,
                    format!("must be finite and >= 0, got {v}"),
                ))
            }
        };
        let triads = || {
            if channels > 0 && channels % 3 == 0 {
                Ok(())
            } else {
                Err(config_err(
                    self.name(),
                    format!("acts on x/y/z triads, but the window has {channels} channels"),
                ))
            }
        };
        if channels == 0 || len == 0 {
            return Err(config_err(
                "window",
                format!("empty window ({channels} x {len})"),
            ));
        }
        match *self {
            Augmentation::Rotation { max_angle_rad } => {
                if let Some(a) = max_angle_rad {
                    nonneg("rotation.max_angle_rad", a)?;
                }
                triads()
            }
            Augmentation::AxisPermutation | Augmentation::SignFlip => triads(),
            Augmentation::Scaling { sigma } => nonneg("scaling.sigma", sigma),
            Augmentation::Jitter { sigma } => nonneg("jitter.sigma", sigma),
            Augmentation::MagnitudeWarp { sigma, .. } => nonneg("magnitude_warp.sigma", sigma),
            Augmentation::TimeWarp { sigma, .. } => {
                nonneg("time_warp.sigma", sigma)?;
                if len < 2 {
                    return Err(config_err("time_warp", "needs windows of >= 2 samples"));
                }
                Ok(())
            }
            Augmentation::SegmentPermutation {
                segments,
                min_segment_len,
            } => {
                if segments < 2 {
                    return Err(config_err(
                        "segment_permutation.segments",
                        format!("must be >= 2, got {segments}"),
                    ));
                }
                if min_segment_len == 0 || segments * min_segment_len > len {
                    return Err(config_err(
                        "segment_permutation.min_segment_len",
                        format!(
                            "{segments} pieces of >= {min_segment_len} samples do not fit {len} samples (need >= 1)"
                        ),
                    ));
                }
                Ok(())
            }
            Augmentation::Reversal => Ok(()),
        }
    }

    /// Applies the augmentation in place to `x`, a `(channels, x.len() / channels)` row-major
    /// window.
    pub fn apply(&self, x: &mut [f32], channels: usize, rng: &mut SeededRng) -> Result<()> {
        if channels == 0 || x.len() % channels != 0 {
            return Err(config_err(
                "window",
                format!("{} values do not split into {channels} channels", x.len()),
            ));
        }
        let len = x.len() / channels;
        self.validate(channels, len)?;
        match *self {
            Augmentation::Rotation { max_angle_rad } => {
                let r = match max_angle_rad {
                    None => uniform_rotation(rng),
                    Some(a) => {
                        axis_angle_rotation(&random_unit_vector(rng), rng.uniform_range(-a, a))
                    }
                };
                apply_matrix(x, channels, len, &r);
            }
            Augmentation::AxisPermutation => {
                let p = rng.permutation(3);
                let mut r = [[0.0; 3]; 3];
                for (i, &j) in p.iter().enumerate() {
                    r[i][j] = 1.0;
                }
                apply_matrix(x, channels, len, &r);
            }
            Augmentation::SignFlip => {
                let s: Vec<f32> = (0..3)
                    .map(|_| if rng.bernoulli(0.5) { -1.0 } else { 1.0 })
                    .collect();
                for c in 0..channels {
                    for v in &mut x[c * len..(c + 1) * len] {
                        *v *= s[c % 3];
                    }
                }
            }
            Augmentation::Scaling { sigma } => {
                for c in 0..channels {
                    let k = (1.0 + sigma * rng.normal()) as f32;
                    for v in &mut x[c * len..(c + 1) * len] {
                        *v *= k;
                    }
                }
            }
            Augmentation::Jitter { sigma } => {
                for v in x.iter_mut() {
                    *v += (sigma * rng.normal()) as f32;
                }
            }
            Augmentation::MagnitudeWarp { sigma, knots } => {
                for c in 0..channels {
                    let curve = random_curve(rng, sigma, knots, len)?;
                    for (v, k) in x[c * len..(c + 1) * len].iter_mut().zip(curve) {
                        *v = (f64::from(*v) * k) as f32;
                    }
                }
            }
            Augmentation::TimeWarp { sigma, knots } => {
                let speed = random_curve(rng, sigma, knots, len)?;
                let mut tt = Vec::with_capacity(len);
                let mut acc = 0.0;
                tt.push(0.0);
                for s in &speed[..len - 1] {
                    acc += s.max(1e-3);
                    tt.push(acc);
                }
                let scale = (len - 1) as f64 / acc;
                let mut buf = vec![0f32; len];
                for c in 0..channels {
                    let ch = &mut x[c * len..(c + 1) * len];
                    for (j, b) in buf.iter_mut().enumerate() {
                        let u = (tt[j] * scale).clamp(0.0, (len - 1) as f64);
                        let i = (u.floor() as usize).min(len - 2);
                        let w = u - i as f64;
                        let (a, bb) = (f64::from(ch[i]), f64::from(ch[i + 1]));
                        *b = (a + w * (bb - a)) as f32;
                    }
                    ch.copy_from_slice(&buf);
                }
            }
            Augmentation::SegmentPermutation {
                segments,
                min_segment_len,
            } => {
                let slack = len - segments * min_segment_len;
                let mut r: Vec<usize> = (0..segments - 1).map(|_| rng.below(slack + 1)).collect();
                r.sort_unstable();
                let mut bounds = Vec::with_capacity(segments + 1);
                bounds.push(0);
                for (i, &ri) in r.iter().enumerate() {
                    bounds.push(ri + (i + 1) * min_segment_len);
                }
                bounds.push(len);
                let order = rng.permutation(segments);
                let mut buf = Vec::with_capacity(len);
                for c in 0..channels {
                    let ch = &mut x[c * len..(c + 1) * len];
                    buf.clear();
                    for &s in &order {
                        buf.extend_from_slice(&ch[bounds[s]..bounds[s + 1]]);
                    }
                    ch.copy_from_slice(&buf);
                }
            }
            Augmentation::Reversal => {
                for c in 0..channels {
                    x[c * len..(c + 1) * len].reverse();
                }
            }
        }
        Ok(())
    }
}

/// Applies the 3x3 matrix `r` to every channel triad: `out[a] = sum_b r[a][b] * in[b]`.
fn apply_matrix(x: &mut [f32], channels: usize, len: usize, r: &[[f64; 3]; 3]) {
    for t in 0..channels / 3 {
        let base = 3 * t * len;
        for i in 0..len {
            let v = [
                f64::from(x[base + i]),
                f64::from(x[base + len + i]),
                f64::from(x[base + 2 * len + i]),
            ];
            for (a, row) in r.iter().enumerate() {
                x[base + a * len + i] = (row[0] * v[0] + row[1] * v[1] + row[2] * v[2]) as f32;
            }
        }
    }
}

/// A rotation matrix drawn uniformly (Haar measure) from SO(3): a normalised 4-D Gaussian vector
/// is a uniform unit quaternion.
pub fn uniform_rotation(rng: &mut SeededRng) -> [[f64; 3]; 3] {
    loop {
        let q: Vec<f64> = rng.normal_vec(4);
        let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
        if n > 1e-9 {
            let (w, x, y, z) = (q[0] / n, q[1] / n, q[2] / n, q[3] / n);
            return [
                [
                    1.0 - 2.0 * (y * y + z * z),
                    2.0 * (x * y - w * z),
                    2.0 * (x * z + w * y),
                ],
                [
                    2.0 * (x * y + w * z),
                    1.0 - 2.0 * (x * x + z * z),
                    2.0 * (y * z - w * x),
                ],
                [
                    2.0 * (x * z - w * y),
                    2.0 * (y * z + w * x),
                    1.0 - 2.0 * (x * x + y * y),
                ],
            ];
        }
    }
}

fn random_unit_vector(rng: &mut SeededRng) -> [f64; 3] {
    loop {
        let v = rng.normal_vec(3);
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if n > 1e-9 {
            return [v[0] / n, v[1] / n, v[2] / n];
        }
    }
}

/// The rotation by `angle` radians about the unit vector `axis` (Rodrigues' formula).
pub fn axis_angle_rotation(axis: &[f64; 3], angle: f64) -> [[f64; 3]; 3] {
    let (s, c) = angle.sin_cos();
    let [x, y, z] = *axis;
    let t = 1.0 - c;
    [
        [c + x * x * t, x * y * t - z * s, x * z * t + y * s],
        [y * x * t + z * s, c + y * y * t, y * z * t - x * s],
        [z * x * t - y * s, z * y * t + x * s, c + z * z * t],
    ]
}

/// A smooth random curve over `len` samples through `knots + 2` evenly spaced `N(1, sigma^2)`
/// values.
fn random_curve(rng: &mut SeededRng, sigma: f64, knots: usize, len: usize) -> Result<Vec<f64>> {
    let k = knots + 2;
    let last = (len.max(2) - 1) as f64;
    let xs: Vec<f64> = (0..k).map(|i| last * i as f64 / (k - 1) as f64).collect();
    let ys: Vec<f64> = (0..k).map(|_| 1.0 + sigma * rng.normal()).collect();
    let at: Vec<f64> = (0..len).map(|i| i as f64).collect();
    natural_cubic_spline(&xs, &ys, &at)
}

/// The natural cubic spline through `(xs, ys)` evaluated at `at`
/// ([`flowfm_core::interp::natural_cubic_spline`]); a bad knot set is a config error.
pub fn natural_cubic_spline(xs: &[f64], ys: &[f64], at: &[f64]) -> Result<Vec<f64>> {
    flowfm_core::interp::natural_cubic_spline(xs, ys, at)
        .map_err(|e| config_err("knots", e.to_string()))
}

/// A sequence of augmentations, each applied with its own probability.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compose {
    /// `(augmentation, probability)` in application order.
    pub steps: Vec<(Augmentation, f64)>,
}

impl Compose {
    /// The augmentation of SSL-Wearables fine-tuning (Yuan et al., npj Digital Medicine 2024): a
    /// uniformly random 3-D rotation (probability 0.5), then a random permutation of the axes
    /// (probability 0.5), applied to every channel triad.
    pub fn ssl_wearables_finetune() -> Self {
        Compose {
            steps: vec![
                (
                    Augmentation::Rotation {
                        max_angle_rad: None,
                    },
                    0.5,
                ),
                (Augmentation::AxisPermutation, 0.5),
            ],
        }
    }

    /// A composition; probabilities must lie in [0, 1].
    pub fn new(steps: Vec<(Augmentation, f64)>) -> Result<Self> {
        let c = Self { steps };
        for (i, (_, p)) in c.steps.iter().enumerate() {
            if !(0.0..=1.0).contains(p) {
                return Err(config_err(
                    &format!("steps[{i}].probability"),
                    format!("must lie in [0, 1], got {p}"),
                ));
            }
        }
        Ok(c)
    }

    /// The SSL-Wearables self-supervised tasks: reversal, segment permutation (4 pieces, >= 10
    /// samples) and time warping (sigma 0.2, 4 knots), each with probability 0.5.
    pub fn ssl_wearables() -> Self {
        Self {
            steps: vec![
                (Augmentation::Reversal, 0.5),
                (
                    Augmentation::SegmentPermutation {
                        segments: 4,
                        min_segment_len: 10,
                    },
                    0.5,
                ),
                (
                    Augmentation::TimeWarp {
                        sigma: 0.2,
                        knots: 4,
                    },
                    0.5,
                ),
            ],
        }
    }

    /// Checks every step against a `(channels, len)` window.
    pub fn validate(&self, channels: usize, len: usize) -> Result<()> {
        for (a, _) in &self.steps {
            a.validate(channels, len)?;
        }
        Ok(())
    }

    /// Applies each step with its probability; returns which steps were applied (the targets of
    /// the SSL-Wearables tasks).
    pub fn apply(&self, x: &mut [f32], channels: usize, rng: &mut SeededRng) -> Result<Vec<bool>> {
        let mut applied = Vec::with_capacity(self.steps.len());
        for (a, p) in &self.steps {
            let on = rng.bernoulli(*p);
            if on {
                a.apply(x, channels, rng)?;
            }
            applied.push(on);
        }
        Ok(applied)
    }
}
