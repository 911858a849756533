//! Sampler specifications: [`GeneratorKind`] (what a checkpoint holds) and [`SamplerSpec`], a solver
//! or sampler with its steps (`euler-8`, `dopri5`, `ddim-50`, `ddpm`), parsed and validated with
//! errors that name the offending field.

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which kind of generator a checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorKind {
    /// A flow-matching velocity field (FlowFM).
    Flow,
    /// A DDPM noise predictor (the diffusion baseline).
    Diffusion,
}

impl GeneratorKind {
    /// The method name used in configs, checkpoints and reports (`flowfm`, `diffusion`).
    pub fn method_name(self) -> &'static str {
        match self {
            GeneratorKind::Flow => "flowfm",
            GeneratorKind::Diffusion => "diffusion",
        }
    }

    /// The kind of a method name as written in checkpoint metadata.
    pub fn from_method_name(name: &str) -> Option<Self> {
        match name {
            "flowfm" => Some(GeneratorKind::Flow),
            "diffusion" => Some(GeneratorKind::Diffusion),
            _ => None,
        }
    }
}

/// A solver (flow) or sampler (diffusion) with its settings.
///
/// Written and parsed in compact form: `euler-8`, `midpoint-4`, `heun-4`, `rk4-2`, `dopri5`
/// (default tolerances 1e-5) or `dopri5-1e-3` (rtol = atol), `ddpm` (all `T` steps), `ddim-50`
/// (eta 0) or `ddim-50-eta0.5`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "sampler", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerSpec {
    /// Forward Euler on a uniform grid of `steps` steps (NFE = steps).
    Euler {
        /// Number of steps.
        steps: usize,
    },
    /// Explicit midpoint (NFE = 2 steps).
    Midpoint {
        /// Number of steps.
        steps: usize,
    },
    /// Heun (NFE = 2 steps).
    Heun {
        /// Number of steps.
        steps: usize,
    },
    /// Classical RK4 (NFE = 4 steps).
    Rk4 {
        /// Number of steps.
        steps: usize,
    },
    /// Adaptive Dormand-Prince 5(4).
    Dopri5 {
        /// Relative tolerance.
        rtol: f64,
        /// Absolute tolerance.
        atol: f64,
    },
    /// Ancestral DDPM over all `T` steps.
    Ddpm,
    /// DDIM over `steps` evenly spaced steps.
    Ddim {
        /// Number of denoising steps (1..=T).
        steps: usize,
        /// Stochasticity (0 deterministic, 1 the DDPM posterior variance).
        eta: f64,
    },
}

/// Default dopri5 tolerance (relative and absolute).
pub const DEFAULT_DOPRI5_TOL: f64 = 1e-5;

fn check_positive_steps(steps: usize) -> Result<()> {
    ensure!(steps >= 1, "steps: must be at least 1, got {steps}");
    Ok(())
}

fn check_tol(field: &str, v: f64) -> Result<()> {
    ensure!(
        v.is_finite() && v > 0.0,
        "{field}: must be finite and > 0, got {v}"
    );
    Ok(())
}

impl SamplerSpec {
    /// Builds a sampler from command-line parts: `name` is one of `euler`, `midpoint`, `heun`,
    /// `rk4`, `dopri5`, `ddpm`, `ddim`; fixed-step solvers and DDIM need `steps`; `eta` applies
    /// to DDIM only; `rtol`/`atol` to dopri5 only (default 1e-5 each).
    ///
    /// Errors name the field: `sampler`, `steps`, `eta`, `rtol` or `atol`.
    pub fn from_parts(
        name: &str,
        steps: Option<usize>,
        eta: Option<f64>,
        rtol: Option<f64>,
        atol: Option<f64>,
    ) -> Result<Self> {
        let name = name.trim().to_ascii_lowercase();
        let need_steps = |solver: &str| -> Result<usize> {
            let s = steps.with_context(|| format!("steps: `{solver}` needs a number of steps"))?;
            check_positive_steps(s)?;
            Ok(s)
        };
        let no = |field: &str, given: bool, why: &str| -> Result<()> {
            ensure!(!given, "{field}: not used by `{name}` ({why})");
            Ok(())
        };
        let is_flow = matches!(
            name.as_str(),
            "euler" | "midpoint" | "heun" | "rk4" | "dopri5"
        );
        if is_flow || name == "ddpm" {
            no("eta", eta.is_some(), "eta applies to ddim only")?;
        }
        if name != "dopri5" {
            no("rtol", rtol.is_some(), "tolerances apply to dopri5 only")?;
            no("atol", atol.is_some(), "tolerances apply to dopri5 only")?;
        }
        let spec = match name.as_str() {
            "euler" => SamplerSpec::Euler {
                steps: need_steps("euler")?,
            },
            "midpoint" => SamplerSpec::Midpoint {
                steps: need_steps("midpoint")?,
            },
            "heun" => SamplerSpec::Heun {
                steps: need_steps("heun")?,
            },
            "rk4" => SamplerSpec::Rk4 {
                steps: need_steps("rk4")?,
            },
            "dopri5" => {
                no(
                    "steps",
                    steps.is_some(),
                    "dopri5 chooses its own steps; set rtol/atol",
                )?;
                SamplerSpec::Dopri5 {
                    rtol: rtol.unwrap_or(DEFAULT_DOPRI5_TOL),
                    atol: atol.unwrap_or(DEFAULT_DOPRI5_TOL),
                }
            }
            "ddpm" => {
                no(
                    "steps",
                    steps.is_some(),
                    "ddpm always runs all T steps; use ddim for fewer",
                )?;
                SamplerSpec::Ddpm
            }
            "ddim" => SamplerSpec::Ddim {
                steps: need_steps("ddim")?,
                eta: eta.unwrap_or(0.0),
            },
            other => bail!(
                "sampler: unknown `{other}` (euler | midpoint | heun | rk4 | dopri5 | ddpm | ddim)"
            ),
        };
        spec.check_values()?;
        Ok(spec)
    }

    /// Checks the values that do not depend on the generator (steps >= 1, tolerances > 0,
    /// eta in [0, 1]).
    fn check_values(&self) -> Result<()> {
        match self {
            SamplerSpec::Euler { steps }
            | SamplerSpec::Midpoint { steps }
            | SamplerSpec::Heun { steps }
            | SamplerSpec::Rk4 { steps } => check_positive_steps(*steps),
            SamplerSpec::Dopri5 { rtol, atol } => {
                check_tol("rtol", *rtol)?;
                check_tol("atol", *atol)
            }
            SamplerSpec::Ddpm => Ok(()),
            SamplerSpec::Ddim { steps, eta } => {
                check_positive_steps(*steps)?;
                ensure!(
                    eta.is_finite() && (0.0..=1.0).contains(eta),
                    "eta: must be in [0, 1], got {eta}"
                );
                Ok(())
            }
        }
    }

    /// The generator kind this sampler drives.
    pub fn kind(&self) -> GeneratorKind {
        match self {
            SamplerSpec::Ddpm | SamplerSpec::Ddim { .. } => GeneratorKind::Diffusion,
            _ => GeneratorKind::Flow,
        }
    }

    /// Checks the sampler against a generator of `kind` whose schedule has `num_steps` steps.
    pub fn validate(&self, kind: GeneratorKind, num_steps: usize) -> Result<()> {
        self.check_values()?;
        if self.kind() != kind {
            bail!(
                "sampler: `{}` drives a {} generator, but the checkpoint holds a {} generator",
                self,
                self.kind().method_name(),
                kind.method_name()
            );
        }
        if let SamplerSpec::Ddim { steps, .. } = self {
            ensure!(
                *steps <= num_steps,
                "steps: ddim with {steps} steps exceeds the schedule's T = {num_steps}"
            );
        }
        Ok(())
    }

    /// Network evaluations per window when known in advance (`None` for dopri5).
    pub fn nominal_nfe(&self, num_steps: usize) -> Option<usize> {
        match self {
            SamplerSpec::Euler { steps } => Some(*steps),
            SamplerSpec::Midpoint { steps } | SamplerSpec::Heun { steps } => Some(2 * steps),
            SamplerSpec::Rk4 { steps } => Some(4 * steps),
            SamplerSpec::Dopri5 { .. } => None,
            SamplerSpec::Ddpm => Some(num_steps),
            SamplerSpec::Ddim { steps, .. } => Some(*steps),
        }
    }

    /// The label with `T` filled in for DDPM (`ddpm-1000`), as used in tables.
    pub fn label(&self, num_steps: usize) -> String {
        match self {
            SamplerSpec::Ddpm => format!("ddpm-{num_steps}"),
            other => other.to_string(),
        }
    }

    /// Euler at each of `steps`, then dopri5 (default tolerances) when `dopri5`.
    pub fn flow_grid(steps: &[usize], dopri5: bool) -> Vec<SamplerSpec> {
        let mut v: Vec<SamplerSpec> = steps
            .iter()
            .map(|&steps| SamplerSpec::Euler { steps })
            .collect();
        if dopri5 {
            v.push(SamplerSpec::Dopri5 {
                rtol: DEFAULT_DOPRI5_TOL,
                atol: DEFAULT_DOPRI5_TOL,
            });
        }
        v
    }

    /// DDIM (eta 0) at each of `steps`, then DDPM over all `T` when `ddpm`.
    pub fn diffusion_grid(steps: &[usize], ddpm: bool) -> Vec<SamplerSpec> {
        let mut v: Vec<SamplerSpec> = steps
            .iter()
            .map(|&steps| SamplerSpec::Ddim { steps, eta: 0.0 })
            .collect();
        if ddpm {
            v.push(SamplerSpec::Ddpm);
        }
        v
    }
}

impl fmt::Display for SamplerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerSpec::Euler { steps } => write!(f, "euler-{steps}"),
            SamplerSpec::Midpoint { steps } => write!(f, "midpoint-{steps}"),
            SamplerSpec::Heun { steps } => write!(f, "heun-{steps}"),
            SamplerSpec::Rk4 { steps } => write!(f, "rk4-{steps}"),
            SamplerSpec::Dopri5 { rtol, atol } => {
                let default = |v: f64| (v - DEFAULT_DOPRI5_TOL).abs() <= 1e-3 * DEFAULT_DOPRI5_TOL;
                if default(*rtol) && default(*atol) {
                    write!(f, "dopri5")
                } else if (rtol - atol).abs() <= 1e-12 * rtol.abs().max(atol.abs()) {
                    write!(f, "dopri5-{rtol:e}")
                } else {
                    write!(f, "dopri5-rtol{rtol:e}-atol{atol:e}")
                }
            }
            SamplerSpec::Ddpm => write!(f, "ddpm"),
            SamplerSpec::Ddim { steps, eta } => {
                if *eta > 0.0 {
                    write!(f, "ddim-{steps}-eta{eta}")
                } else {
                    write!(f, "ddim-{steps}")
                }
            }
        }
    }
}

impl FromStr for SamplerSpec {
    type Err = anyhow::Error;

    /// Parses the compact form written by `Display` (see [`SamplerSpec`]).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let mut parts = s.splitn(2, '-');
        let name = parts.next().unwrap_or_default();
        let rest = parts.next();
        let steps_of = |r: &str| -> Result<usize> {
            r.parse::<usize>()
                .with_context(|| format!("steps: `{r}` in sampler `{s}` is not a step count"))
        };
        match (name, rest) {
            ("dopri5", None) | ("ddpm", None) => SamplerSpec::from_parts(name, None, None, None, None),
            ("dopri5", Some(r)) => {
                let parse_tol = |field: &str, v: &str| -> Result<f64> {
                    v.parse::<f64>()
                        .with_context(|| format!("{field}: `{v}` in sampler `{s}` is not a number"))
                };
                let (rtol, atol) = match r.strip_prefix("rtol") {
                    Some(both) => {
                        let (a, b) = both
                            .split_once("-atol")
                            .with_context(|| format!("atol: sampler `{s}` lacks `-atol<value>`"))?;
                        (parse_tol("rtol", a)?, parse_tol("atol", b)?)
                    }
                    None => {
                        let t = parse_tol("rtol", r)?;
                        (t, t)
                    }
                };
                SamplerSpec::from_parts(name, None, None, Some(rtol), Some(atol))
            }
            ("ddim", Some(r)) => {
                let (st, eta) = match r.split_once("-eta") {
                    Some((a, b)) => (
                        a,
                        Some(b.parse::<f64>().with_context(|| {
                            format!("eta: `{b}` in sampler `{s}` is not a number")
                        })?),
                    ),
                    None => (r, None),
                };
                SamplerSpec::from_parts(name, Some(steps_of(st)?), eta, None, None)
            }
            (n @ ("euler" | "midpoint" | "heun" | "rk4"), Some(r)) => {
                SamplerSpec::from_parts(n, Some(steps_of(r)?), None, None, None)
            }
            (n @ ("euler" | "midpoint" | "heun" | "rk4" | "ddim"), None) => {
                bail!("steps: sampler `{n}` needs a step count, e.g. `{n}-8`")
            }
            ("ddpm", Some(r)) => {
                SamplerSpec::from_parts("ddpm", Some(steps_of(r)?), None, None, None)
            }
            _ => bail!(
                "sampler: `{s}` is not a sampler (euler-N | midpoint-N | heun-N | rk4-N | dopri5 | ddpm | ddim-N)"
            ),
        }
    }
}
