//! ODE solvers for flow matching: fixed-step Euler, midpoint, Heun and classical RK4, and the
//! adaptive Dormand-Prince 5(4) pair (Dormand & Prince 1980; step control and initial-step
//! heuristic after Hairer, Norsett & Wanner, "Solving ODEs I", II.4). Every solver counts the
//! evaluations of the velocity field (NFE).
//!
//! Solvers see only a [`VelocityField`]. The state and the conditioning are detached first, so
//! sampling builds no autograd graph (candle has no no-grad mode).

use crate::grid::TimeGrid;
use candle_core::{DType, Result, Tensor};
use flowfm_core::{Conditioning, CoreError, FlowTime, FlowTimes, VelocityField};

/// Number of function (velocity-field) evaluations spent by a solver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nfe(pub usize);

/// Settings of the adaptive Dormand-Prince 5(4) solver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dopri5Options {
    /// Relative tolerance of the local error.
    pub rtol: f64,
    /// Absolute tolerance of the local error.
    pub atol: f64,
    /// Largest number of attempted steps (accepted + rejected) before giving up with an error.
    pub max_steps: usize,
    /// First step size; `None` uses the Hairer-Norsett-Wanner heuristic (one extra evaluation).
    pub initial_step: Option<f64>,
}

impl Default for Dopri5Options {
    fn default() -> Self {
        Self {
            rtol: 1e-5,
            atol: 1e-5,
            max_steps: 10_000,
            initial_step: None,
        }
    }
}

impl Dopri5Options {
    fn validate(&self) -> std::result::Result<(), CoreError> {
        let bad =
            |name: &'static str, reason: String| Err(CoreError::InvalidParameter { name, reason });
        if !(self.rtol.is_finite() && self.rtol >= 0.0) {
            return bad(
                "rtol",
                format!("must be finite and >= 0, got {}", self.rtol),
            );
        }
        if !(self.atol.is_finite() && self.atol >= 0.0) {
            return bad(
                "atol",
                format!("must be finite and >= 0, got {}", self.atol),
            );
        }
        if self.rtol == 0.0 && self.atol == 0.0 {
            return bad("atol", "rtol and atol cannot both be 0".into());
        }
        if self.max_steps == 0 {
            return bad("max_steps", "must be at least 1".into());
        }
        if let Some(h) = self.initial_step {
            if !(h.is_finite() && h > 0.0) {
                return bad("initial_step", format!("must be finite and > 0, got {h}"));
            }
        }
        Ok(())
    }
}

/// An ODE integration method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OdeMethod {
    /// Forward Euler: order 1, 1 evaluation per step.
    Euler,
    /// Explicit midpoint: order 2, 2 evaluations per step.
    Midpoint,
    /// Heun (explicit trapezoid): order 2, 2 evaluations per step.
    Heun,
    /// Classical Runge-Kutta: order 4, 4 evaluations per step.
    Rk4,
    /// Adaptive Dormand-Prince 5(4) with FSAL: 6 evaluations per attempted step, plus 1 at start
    /// (and 1 for the initial-step heuristic).
    Dopri5(Dopri5Options),
}

/// Evaluates the field at one flow time for the whole batch and counts the evaluation.
struct Counted<'a> {
    field: &'a dyn VelocityField,
    cond: Conditioning,
    nfe: usize,
}

impl Counted<'_> {
    fn eval(&mut self, x: &Tensor, t: f64) -> Result<Tensor> {
        let batch = x.dims().first().copied().unwrap_or(0);
        let times = FlowTimes::constant(FlowTime::new(t)?, batch, x.dtype(), x.device())?;
        let v = self.field.velocity(x, &times, &self.cond)?;
        self.nfe += 1;
        if v.shape() != x.shape() {
            candle_core::bail!(
                "velocity field returned shape {:?} for x_t of shape {:?}",
                v.shape(),
                x.shape()
            );
        }
        Ok(v.detach())
    }
}

/// `x + h * k`.
fn axpy(x: &Tensor, h: f64, k: &Tensor) -> Result<Tensor> {
    x.add(&k.affine(h, 0.0)?)
}

/// `x + sum_i w_i k_i` over the nonzero weights.
fn combine(x: &Tensor, terms: &[(f64, &Tensor)]) -> Result<Tensor> {
    let mut acc = x.clone();
    for &(w, k) in terms {
        if w != 0.0 {
            acc = axpy(&acc, w, k)?;
        }
    }
    Ok(acc)
}

/// Integrates `dx/dt = v(x, t | cond)` from `x_0` at `grid.start()` to `grid.end()`.
///
/// Returns the state at the end of the grid and the number of field evaluations.
///
/// # Shapes
/// - `x_0`: `(batch, channels, samples)`
/// - returns the shape of `x_0`
pub fn solve(
    field: &dyn VelocityField,
    x_0: &Tensor,
    cond: &Conditioning,
    grid: &TimeGrid,
    method: &OdeMethod,
) -> Result<(Tensor, Nfe)> {
    let mut f = Counted {
        field,
        cond: cond.detach(),
        nfe: 0,
    };
    let mut x = x_0.detach();
    let ts = grid.times();
    match method {
        OdeMethod::Dopri5(opts) => {
            opts.validate()?;
            x = dopri5(&mut f, x, ts, opts)?;
        }
        fixed => {
            for w in ts.windows(2) {
                let (t, t_next) = (w[0], w[1]);
                x = fixed_step(&mut f, &x, t, t_next, fixed)?;
            }
        }
    }
    Ok((x, Nfe(f.nfe)))
}

fn fixed_step(
    f: &mut Counted<'_>,
    x: &Tensor,
    t: f64,
    t_next: f64,
    method: &OdeMethod,
) -> Result<Tensor> {
    let h = t_next - t;
    match method {
        OdeMethod::Euler => {
            let k1 = f.eval(x, t)?;
            axpy(x, h, &k1)
        }
        OdeMethod::Midpoint => {
            let k1 = f.eval(x, t)?;
            let k2 = f.eval(&axpy(x, 0.5 * h, &k1)?, t + 0.5 * h)?;
            axpy(x, h, &k2)
        }
        OdeMethod::Heun => {
            let k1 = f.eval(x, t)?;
            let k2 = f.eval(&axpy(x, h, &k1)?, t_next)?;
            combine(x, &[(0.5 * h, &k1), (0.5 * h, &k2)])
        }
        OdeMethod::Rk4 => {
            let k1 = f.eval(x, t)?;
            let k2 = f.eval(&axpy(x, 0.5 * h, &k1)?, t + 0.5 * h)?;
            let k3 = f.eval(&axpy(x, 0.5 * h, &k2)?, t + 0.5 * h)?;
            let k4 = f.eval(&axpy(x, h, &k3)?, t_next)?;
            combine(
                x,
                &[
                    (h / 6.0, &k1),
                    (h / 3.0, &k2),
                    (h / 3.0, &k3),
                    (h / 6.0, &k4),
                ],
            )
        }
        OdeMethod::Dopri5(_) => candle_core::bail!("Dopri5 is not a fixed-step method"),
    }
}

// Dormand-Prince 5(4) tableau.
const C: [f64; 7] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
const A2: [f64; 1] = [1.0 / 5.0];
const A3: [f64; 2] = [3.0 / 40.0, 9.0 / 40.0];
const A4: [f64; 3] = [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0];
const A5: [f64; 4] = [
    19372.0 / 6561.0,
    -25360.0 / 2187.0,
    64448.0 / 6561.0,
    -212.0 / 729.0,
];
const A6: [f64; 5] = [
    9017.0 / 3168.0,
    -355.0 / 33.0,
    46732.0 / 5247.0,
    49.0 / 176.0,
    -5103.0 / 18656.0,
];
/// Fifth-order weights (also the last stage's row: first same as last).
const B5: [f64; 7] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
    0.0,
];
/// Fourth-order embedded weights.
const B4: [f64; 7] = [
    5179.0 / 57600.0,
    0.0,
    7571.0 / 16695.0,
    393.0 / 640.0,
    -92097.0 / 339200.0,
    187.0 / 2100.0,
    1.0 / 40.0,
];

/// Root mean square of `num / (atol + rtol max(|a|, |b|))` over all elements (in f64).
fn scaled_rms(num: &Tensor, a: &Tensor, b: &Tensor, opts: &Dopri5Options) -> Result<f64> {
    let num = num.to_dtype(DType::F64)?;
    let scale = a
        .to_dtype(DType::F64)?
        .abs()?
        .maximum(&b.to_dtype(DType::F64)?.abs()?)?
        .affine(opts.rtol, opts.atol)?;
    let ms = num.div(&scale)?.sqr()?.mean_all()?.to_scalar::<f64>()?;
    Ok(ms.sqrt())
}

/// Hairer-Norsett-Wanner starting step for a method of order 5 (one extra evaluation).
fn initial_step(
    f: &mut Counted<'_>,
    x: &Tensor,
    k1: &Tensor,
    t: f64,
    span: f64,
    opts: &Dopri5Options,
) -> Result<f64> {
    let d0 = scaled_rms(x, x, x, opts)?;
    let d1 = scaled_rms(k1, x, x, opts)?;
    let h0 = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    };
    let h0 = h0.min(span);
    let x1 = axpy(x, h0, k1)?;
    let k2 = f.eval(&x1, (t + h0).min(t + span))?;
    let d2 = scaled_rms(&k2.sub(k1)?, x, x, opts)? / h0;
    let h1 = if d1.max(d2) <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / d1.max(d2)).powf(1.0 / 5.0)
    };
    Ok((100.0 * h0).min(h1).min(span))
}

fn dopri5(f: &mut Counted<'_>, mut x: Tensor, ts: &[f64], opts: &Dopri5Options) -> Result<Tensor> {
    const SAFETY: f64 = 0.9;
    const FAC_MIN: f64 = 0.2;
    const FAC_MAX: f64 = 10.0;
    let (t_start, t_end) = (ts[0], ts[ts.len() - 1]);
    let mut t = t_start;
    let mut k1 = f.eval(&x, t)?;
    let mut h = match opts.initial_step {
        Some(h) => h,
        None => initial_step(f, &x, &k1, t, t_end - t_start, opts)?,
    };
    let mut attempts = 0usize;
    for &t_stop in &ts[1..] {
        while t < t_stop {
            if attempts >= opts.max_steps {
                candle_core::bail!(
                    "Dopri5 gave up after max_steps = {} attempted steps at t = {t} (step {h:e}); \
                     loosen rtol/atol or raise max_steps",
                    opts.max_steps
                );
            }
            attempts += 1;
            // Land exactly on grid points; avoid a sliver step just before one.
            let last = t + h >= t_stop || t_stop - (t + h) < 1e-12 * t_stop.abs().max(1.0);
            let h_step = if last { t_stop - t } else { h };
            let at = |c: f64| (t + c * h_step).min(t_stop);
            let k2 = f.eval(&combine(&x, &[(h_step * A2[0], &k1)])?, at(C[1]))?;
            let k3 = f.eval(
                &combine(&x, &[(h_step * A3[0], &k1), (h_step * A3[1], &k2)])?,
                at(C[2]),
            )?;
            let k4 = f.eval(
                &combine(
                    &x,
                    &[
                        (h_step * A4[0], &k1),
                        (h_step * A4[1], &k2),
                        (h_step * A4[2], &k3),
                    ],
                )?,
                at(C[3]),
            )?;
            let k5 = f.eval(
                &combine(
                    &x,
                    &[
                        (h_step * A5[0], &k1),
                        (h_step * A5[1], &k2),
                        (h_step * A5[2], &k3),
                        (h_step * A5[3], &k4),
                    ],
                )?,
                at(C[4]),
            )?;
            let k6 = f.eval(
                &combine(
                    &x,
                    &[
                        (h_step * A6[0], &k1),
                        (h_step * A6[1], &k2),
                        (h_step * A6[2], &k3),
                        (h_step * A6[3], &k4),
                        (h_step * A6[4], &k5),
                    ],
                )?,
                at(C[5]),
            )?;
            let ks = [&k1, &k2, &k3, &k4, &k5, &k6];
            let terms: Vec<(f64, &Tensor)> = ks
                .iter()
                .enumerate()
                .map(|(i, k)| (h_step * B5[i], *k))
                .collect();
            let x_new = combine(&x, &terms)?;
            let t_new = if last { t_stop } else { t + h_step };
            let k7 = f.eval(&x_new, t_new)?;
            // Local error estimate: the difference of the 5th- and 4th-order solutions.
            let mut err_terms: Vec<(f64, &Tensor)> = ks
                .iter()
                .enumerate()
                .map(|(i, k)| (h_step * (B5[i] - B4[i]), *k))
                .collect();
            err_terms.push((h_step * (B5[6] - B4[6]), &k7));
            let zero = x.zeros_like()?;
            let err = combine(&zero, &err_terms)?;
            let err_norm = scaled_rms(&err, &x, &x_new, opts)?;
            if !err_norm.is_finite() {
                candle_core::bail!(
                    "Dopri5 error estimate is not finite at t = {t} (the field diverged?)"
                );
            }
            let factor = if err_norm == 0.0 {
                FAC_MAX
            } else {
                (SAFETY * err_norm.powf(-1.0 / 5.0)).clamp(FAC_MIN, FAC_MAX)
            };
            if err_norm <= 1.0 {
                x = x_new;
                t = t_new;
                k1 = k7;
                // A step shortened to hit the grid point does not limit the next one.
                h = if last {
                    h.max(h_step * factor)
                } else {
                    h_step * factor
                };
            } else {
                h = h_step * factor.min(1.0);
            }
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_dopri5_options_name_their_field() {
        let name = |o: Dopri5Options| match o.validate() {
            Err(CoreError::InvalidParameter { name, .. }) => name,
            other => panic!("expected InvalidParameter, got {other:?}"),
        };
        let d = Dopri5Options::default();
        assert_eq!(name(Dopri5Options { rtol: -1.0, ..d }), "rtol");
        assert_eq!(
            name(Dopri5Options {
                atol: f64::NAN,
                ..d
            }),
            "atol"
        );
        assert_eq!(
            name(Dopri5Options {
                rtol: 0.0,
                atol: 0.0,
                ..d
            }),
            "atol"
        );
        assert_eq!(name(Dopri5Options { max_steps: 0, ..d }), "max_steps");
        assert_eq!(
            name(Dopri5Options {
                initial_step: Some(0.0),
                ..d
            }),
            "initial_step"
        );
    }
}
