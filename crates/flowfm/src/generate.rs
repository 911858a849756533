//! Generation from trained checkpoints and the flow-vs-diffusion generation study.
//!
//! - [`TrainedModels`] loads a run's `encoder.safetensors` and `generator.safetensors` (EMA
//!   weights of a [`FlowUNet`] or [`DiffusionUNet`], configs read from the checkpoint metadata);
//! - [`SamplerSpec`] names a solver or sampler with its steps (`euler-8`, `dopri5`, `ddim-50`,
//!   `ddpm`), validated with errors that name the offending field;
//! - [`RepresentationGaussian`] fits a Gaussian (full or diagonal covariance) to representations
//!   and draws new ones from a seeded stream, for unconditional-style generation;
//! - [`run_generation`] reconstructs windows from their own representations or samples new ones
//!   from the fitted Gaussian, records NFE and wall time per window, and writes an HDF5 window
//!   store atomically (`flowfm generate`);
//! - [`generation_study`] evaluates a grid of samplers of a flow run and a diffusion run on the
//!   same real windows (NFE, ms per window, Frechet distance and MMD in a fixed reference
//!   encoder's feature space, discriminative score, spectral distance, reconstruction error) and
//!   reports the speed-up of the fastest flow setting that is at least as good as DDPM-T.
//!
//! Randomness: the initial noise comes from `SeededRng::new(seed).derive("noise")`, drawn per
//! window (see `flowfm_sampling::generate`), so a window depends on the seed and its index only,
//! not on the batch size (except under the adaptive dopri5 solver, whose step sizes are chosen
//! per batch). Drawn representations come from `derive("representations")`.

use crate::config::Experiment;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::schedule::{NoiseSchedule, NoiseScheduleConfig};
use flowfm_core::{Conditioning, SeededRng};
use flowfm_data::store::write_store;
use flowfm_data::window::WindowSet;
use flowfm_eval::{
    discriminative_score, frechet_distance_from_stats, mmd2_rbf, reconstruction_error,
    spectral_distance, DiscriminativeConfig, Embeddings, FeatureConfig, FeatureExtractor,
    GaussianStats, GenerationEfficiency, MmdConfig, Windows,
};
use flowfm_models::checkpoint::{load_checkpoint_checked, read_checkpoint_metadata};
use flowfm_models::unet::{DiffusionUNet, FlowUNet, UNetConfig};
use flowfm_models::{EncoderConfig, HarNet, NormKind};
use flowfm_sampling::{
    generate_diffusion, generate_flow, DdimOptions, DdpmOptions, DiffusionMethod, Dopri5Options,
    GenerateOptions, OdeMethod, SampleShape, TimeGrid,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// Value of the store's `preprocessing_version` attribute for generated windows.
pub const GENERATED_STORE_VERSION: i64 = 1;

/// Seed of the default reference encoder of the study (a fixed, never-trained HARNet).
pub const REFERENCE_ENCODER_SEED: u64 = 0x5EED_F1D0;

// ---------------------------------------------------------------------------------------------
// Samplers
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Loading trained models
// ---------------------------------------------------------------------------------------------

/// A trained generator network.
#[derive(Clone, Debug)]
pub enum GeneratorNet {
    /// Flow-matching velocity field.
    Flow(FlowUNet),
    /// DDPM noise predictor.
    Diffusion(DiffusionUNet),
}

impl GeneratorNet {
    /// The U-Net configuration.
    pub fn config(&self) -> &UNetConfig {
        match self {
            GeneratorNet::Flow(f) => f.config(),
            GeneratorNet::Diffusion(d) => d.config(),
        }
    }

    /// The kind of generator.
    pub fn kind(&self) -> GeneratorKind {
        match self {
            GeneratorNet::Flow(_) => GeneratorKind::Flow,
            GeneratorNet::Diffusion(_) => GeneratorKind::Diffusion,
        }
    }
}

/// An encoder and generator loaded from checkpoints, ready to encode and sample.
#[derive(Debug)]
pub struct TrainedModels {
    /// The encoder (inference through `encode_detached`, eval mode).
    pub encoder: HarNet,
    /// The generator (EMA weights as saved by pretraining).
    pub generator: GeneratorNet,
    /// The diffusion noise schedule (the run's; DDPM default for flow runs, where it is unused).
    pub schedule: NoiseSchedule,
    /// Trainable parameters plus buffers of the generator.
    pub generator_params: usize,
    /// Where the encoder came from.
    pub encoder_path: PathBuf,
    /// Where the generator came from.
    pub generator_path: PathBuf,
    /// The device the networks live on.
    pub device: Device,
}

/// Loads an encoder checkpoint (config from its metadata) onto `device`.
pub fn load_encoder(path: &Path, device: &Device) -> Result<HarNet> {
    let meta = read_checkpoint_metadata(path)
        .with_context(|| format!("reading encoder checkpoint {}", path.display()))?;
    let cfg: EncoderConfig = meta
        .config()
        .with_context(|| format!("{}: encoder config", path.display()))?;
    let vm = VarMap::new();
    // The seeded builder only creates the variables; the checkpoint overwrites every value.
    let encoder = HarNet::new(cfg.clone(), seeded_var_builder(&vm, 0, DType::F32, device))?;
    load_checkpoint_checked(&vm, &cfg, path)
        .with_context(|| format!("loading encoder {}", path.display()))?;
    Ok(encoder)
}

fn varmap_elems(vm: &VarMap) -> usize {
    vm.data()
        .lock()
        .map(|d| d.values().map(|v| v.as_tensor().elem_count()).sum())
        .unwrap_or(0)
}

impl TrainedModels {
    /// Loads `encoder.safetensors` and `generator.safetensors` from a run directory; the
    /// diffusion schedule comes from the run's `config.toml`.
    pub fn from_run_dir(dir: &Path, device: &Device) -> Result<Self> {
        let enc = dir.join("encoder.safetensors");
        let gen = dir.join("generator.safetensors");
        ensure!(
            gen.exists(),
            "{}: no generator checkpoint (only flowfm and diffusion runs have one, and it is \
             written when pretraining finishes)",
            gen.display()
        );
        ensure!(enc.exists(), "{}: no encoder checkpoint", enc.display());
        let config = dir.join("config.toml");
        let schedule = if config.exists() {
            Some(
                Experiment::load(&config)
                    .with_context(|| format!("reading {}", config.display()))?
                    .noise_schedule,
            )
        } else {
            None
        };
        Self::from_paths(&enc, &gen, None, schedule, device)
    }

    /// Loads explicit checkpoints. The generator's kind is read from its `method` metadata
    /// unless `kind` is given (a disagreement is an error). A diffusion generator needs its
    /// noise schedule (`schedule`); flow generators ignore it.
    pub fn from_paths(
        encoder_path: &Path,
        generator_path: &Path,
        kind: Option<GeneratorKind>,
        schedule: Option<NoiseScheduleConfig>,
        device: &Device,
    ) -> Result<Self> {
        let encoder = load_encoder(encoder_path, device)?;
        let meta = read_checkpoint_metadata(generator_path).with_context(|| {
            format!("reading generator checkpoint {}", generator_path.display())
        })?;
        let stored = meta
            .extra
            .get("method")
            .and_then(|m| GeneratorKind::from_method_name(m));
        let kind = match (kind, stored) {
            (Some(k), Some(s)) if k != s => bail!(
                "{}: the checkpoint says method `{}`, but `{}` was requested",
                generator_path.display(),
                s.method_name(),
                k.method_name()
            ),
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => bail!(
                "{}: the checkpoint has no `method` metadata (flowfm | diffusion); say which \
                 generator it holds",
                generator_path.display()
            ),
        };
        let cfg: UNetConfig = meta
            .config()
            .with_context(|| format!("{}: generator config", generator_path.display()))?;
        let repr = encoder.config().repr_dim();
        ensure!(
            cfg.cond_dim == repr,
            "{}: the generator is conditioned on {}-d representations but the encoder {} gives {}-d",
            generator_path.display(),
            cfg.cond_dim,
            encoder_path.display(),
            repr
        );
        ensure!(
            cfg.in_channels == encoder.config().in_channels,
            "{}: the generator makes {} channels but the encoder reads {}",
            generator_path.display(),
            cfg.in_channels,
            encoder.config().in_channels
        );
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 0, DType::F32, device);
        let generator = match kind {
            GeneratorKind::Flow => GeneratorNet::Flow(FlowUNet::new(cfg.clone(), vb)?),
            GeneratorKind::Diffusion => {
                GeneratorNet::Diffusion(DiffusionUNet::new(cfg.clone(), vb)?)
            }
        };
        load_checkpoint_checked(&vm, &cfg, generator_path)
            .with_context(|| format!("loading generator {}", generator_path.display()))?;
        let schedule = match (kind, schedule) {
            (_, Some(s)) => NoiseSchedule::new(&s)?,
            (GeneratorKind::Flow, None) => NoiseSchedule::ddpm_linear(),
            (GeneratorKind::Diffusion, None) => bail!(
                "{}: a diffusion generator needs its noise schedule (the run's config.toml)",
                generator_path.display()
            ),
        };
        Ok(Self {
            encoder,
            generator,
            schedule,
            generator_params: varmap_elems(&vm),
            encoder_path: encoder_path.to_path_buf(),
            generator_path: generator_path.to_path_buf(),
            device: device.clone(),
        })
    }

    /// The generator's kind.
    pub fn kind(&self) -> GeneratorKind {
        self.generator.kind()
    }

    /// `(channels, samples)` of the windows this model reads and writes.
    pub fn window_shape(&self) -> (usize, usize) {
        let c = self.encoder.config();
        (c.in_channels, c.window_len)
    }

    /// Encodes windows in batches of at most `batch_size` (eval mode, no autograd graph).
    ///
    /// # Shapes
    /// - `x`: `(N, channels, samples)`
    /// - returns `(N, repr_dim)`
    pub fn encode(&self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        encode_batched(&self.encoder, x, batch_size)
    }

    /// Generates one window per row of `z` with `sampler`, in batches of at most `batch_size`
    /// windows, timing the sampling alone.
    ///
    /// # Shapes
    /// - `z`: `(N, repr_dim)`
    /// - returns `x`: `(N, channels, samples)`
    pub fn sample(
        &self,
        z: &Tensor,
        sampler: &SamplerSpec,
        batch_size: usize,
        seed: u64,
    ) -> Result<Generation> {
        self.sample_with_clip(z, sampler, batch_size, seed, None)
    }

    /// [`TrainedModels::sample`], with diffusion's predicted `x_0` clipped to `[-c, c]` at every
    /// step when `clip_x0` is `Some(c)` (flow generators ignore it).
    pub fn sample_with_clip(
        &self,
        z: &Tensor,
        sampler: &SamplerSpec,
        batch_size: usize,
        seed: u64,
        clip_x0: Option<f64>,
    ) -> Result<Generation> {
        ensure!(batch_size >= 1, "batch_size: must be at least 1");
        sampler.validate(self.kind(), self.schedule.num_steps())?;
        let (n, d) = z.dims2().context("z: expected an (N, repr_dim) tensor")?;
        ensure!(n >= 1, "z: no representations to generate from");
        let repr = self.encoder.config().repr_dim();
        ensure!(
            d == repr,
            "z: {d}-d representations for a generator conditioned on {repr}-d"
        );
        let (channels, samples) = self.window_shape();
        let shape = SampleShape {
            batch: n,
            channels,
            samples,
        };
        let opts = GenerateOptions {
            dtype: DType::F32,
            device: self.device.clone(),
            max_batch: Some(batch_size),
        };
        let cond = Conditioning::Representation(z.to_device(&self.device)?.to_dtype(DType::F32)?);
        let mut rng = SeededRng::new(seed).derive("noise");
        let start = Instant::now();
        let out = match (&self.generator, sampler) {
            (GeneratorNet::Flow(f), s) => {
                let (grid, method) = match s {
                    SamplerSpec::Euler { steps } => (*steps, OdeMethod::Euler),
                    SamplerSpec::Midpoint { steps } => (*steps, OdeMethod::Midpoint),
                    SamplerSpec::Heun { steps } => (*steps, OdeMethod::Heun),
                    SamplerSpec::Rk4 { steps } => (*steps, OdeMethod::Rk4),
                    SamplerSpec::Dopri5 { rtol, atol } => (
                        1,
                        OdeMethod::Dopri5(Dopri5Options {
                            rtol: *rtol,
                            atol: *atol,
                            ..Dopri5Options::default()
                        }),
                    ),
                    other => bail!("sampler: `{other}` cannot drive a flow generator"),
                };
                let grid = TimeGrid::noise_to_data(grid)?;
                generate_flow(&f.detached(), &cond, shape, &grid, &method, &opts, &mut rng)?
            }
            (GeneratorNet::Diffusion(den), s) => {
                let method = match s {
                    SamplerSpec::Ddpm => DiffusionMethod::Ddpm(DdpmOptions {
                        clip_x0,
                        ..DdpmOptions::default()
                    }),
                    SamplerSpec::Ddim { steps, eta } => DiffusionMethod::Ddim(DdimOptions {
                        num_sample_steps: *steps,
                        eta: *eta,
                        clip_x0,
                        ..DdimOptions::default()
                    }),
                    other => bail!("sampler: `{other}` cannot drive a diffusion generator"),
                };
                generate_diffusion(
                    &den.detached(),
                    &cond,
                    shape,
                    &self.schedule,
                    &method,
                    &opts,
                    &mut rng,
                )?
            }
        };
        self.device.synchronize()?;
        let total_secs = start.elapsed().as_secs_f64();
        Ok(Generation {
            x: out.x,
            sampler: sampler.label(self.schedule.num_steps()),
            nfe_per_window: out.nfe.0,
            calls: out.calls,
            total_secs,
            ms_per_window: 1000.0 * total_secs / n as f64,
        })
    }
}

/// Encodes `x` with `encoder` in batches (eval mode, detached).
///
/// # Shapes
/// - `x`: `(N, channels, samples)`; returns `(N, repr_dim)`
pub fn encode_batched(encoder: &HarNet, x: &Tensor, batch_size: usize) -> Result<Tensor> {
    ensure!(batch_size >= 1, "batch_size: must be at least 1");
    let (n, _, _) = x.dims3().context("windows: expected an (N, C, L) tensor")?;
    ensure!(n >= 1, "windows: nothing to encode");
    let mut parts = Vec::new();
    let mut s = 0;
    while s < n {
        let len = batch_size.min(n - s);
        parts.push(encoder.encode_detached(&x.narrow(0, s, len)?)?);
        s += len;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Generated windows and what they cost.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The windows, `(N, channels, samples)`.
    pub x: Tensor,
    /// Sampler label (`euler-8`, `ddpm-1000`).
    pub sampler: String,
    /// Network evaluations per window (for dopri5 the largest over batches).
    pub nfe_per_window: usize,
    /// Network calls in total (over all batches).
    pub calls: usize,
    /// Wall seconds of sampling (encoding excluded).
    pub total_secs: f64,
    /// `1000 * total_secs / N`.
    pub ms_per_window: f64,
}

/// The windows of `ws` as an `(N, C, L)` f32 tensor on `device`.
pub fn windows_tensor(ws: &WindowSet, device: &Device) -> Result<Tensor> {
    ws.validate()?;
    Ok(Tensor::from_slice(
        &ws.x,
        (ws.num_windows(), ws.channels, ws.window_len),
        device,
    )?)
}

// ---------------------------------------------------------------------------------------------
// Distribution of representations
// ---------------------------------------------------------------------------------------------

/// Which covariance [`RepresentationGaussian::fit`] estimates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CovarianceKind {
    /// Full sample covariance (a small ridge is added if needed for the Cholesky factor).
    Full,
    /// Per-dimension variances only.
    Diagonal,
    /// Full when there are more representations than dimensions, diagonal otherwise (the full
    /// estimate is singular then).
    Auto,
}

/// How draws are made from the fitted covariance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CovarianceFactor {
    /// Lower Cholesky factor `L` (row-major `d x d`) of `cov + ridge * I`.
    Full {
        /// The factor.
        lower: Vec<f64>,
        /// Ridge added to the diagonal before factorising (0 when none was needed).
        ridge: f64,
    },
    /// Standard deviations per dimension.
    Diagonal {
        /// The standard deviations.
        sd: Vec<f64>,
    },
}

/// A Gaussian fitted to representations, to draw conditioning vectors for new windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepresentationGaussian {
    /// Mean representation.
    pub mean: Vec<f64>,
    /// The covariance's factor.
    pub factor: CovarianceFactor,
    /// Representations the fit used.
    pub n_fit: usize,
}

/// Lower Cholesky factor of the symmetric `d x d` matrix `a` (row-major), or `None` when it is
/// not positive definite.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if !(v > 0.0 && v.is_finite()) {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Some(l)
}

impl RepresentationGaussian {
    /// Fits the mean and (sample, `n - 1`) covariance of the rows of `z`.
    ///
    /// # Shapes
    /// - `z`: `(N, d)`, `N >= 2`
    pub fn fit(z: &Tensor, kind: CovarianceKind) -> Result<Self> {
        let (n, d) = z.dims2().context("z: expected an (N, d) tensor")?;
        ensure!(
            n >= 2,
            "z: a covariance needs at least 2 representations, got {n}"
        );
        let z = z.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let mean_t = z.mean_keepdim(0)?;
        let centred = z.broadcast_sub(&mean_t)?;
        let mean = mean_t.flatten_all()?.to_vec1::<f64>()?;
        ensure!(
            mean.iter().all(|v| v.is_finite()),
            "z: representations contain non-finite values"
        );
        let full = match kind {
            CovarianceKind::Full => true,
            CovarianceKind::Diagonal => false,
            CovarianceKind::Auto => n > d,
        };
        let factor = if full {
            let cov = (centred.t()?.matmul(&centred)? / (n - 1) as f64)?;
            let cov = cov.flatten_all()?.to_vec1::<f64>()?;
            let scale = (0..d).map(|i| cov[i * d + i]).sum::<f64>() / d as f64;
            let scale = if scale > 0.0 { scale } else { 1.0 };
            let mut ridge = 0.0;
            let mut lower = cholesky(&cov, d);
            let mut eps = 1e-9 * scale;
            while lower.is_none() && eps <= 1e-1 * scale {
                let mut a = cov.clone();
                for i in 0..d {
                    a[i * d + i] += eps;
                }
                lower = cholesky(&a, d);
                ridge = eps;
                eps *= 10.0;
            }
            let lower = lower.with_context(|| {
                format!("z: the covariance of {n} representations of dimension {d} cannot be factorised; use a diagonal covariance")
            })?;
            CovarianceFactor::Full { lower, ridge }
        } else {
            let var = (centred.sqr()?.sum(0)? / (n - 1) as f64)?.to_vec1::<f64>()?;
            CovarianceFactor::Diagonal {
                sd: var.into_iter().map(|v| v.max(0.0).sqrt()).collect(),
            }
        };
        Ok(Self {
            mean,
            factor,
            n_fit: n,
        })
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The covariance the draws follow (row-major `d x d`: `L L^T` or `diag(sd^2)`).
    pub fn covariance(&self) -> Vec<f64> {
        let d = self.dim();
        let mut c = vec![0.0; d * d];
        match &self.factor {
            CovarianceFactor::Full { lower, .. } => {
                for i in 0..d {
                    for j in 0..d {
                        c[i * d + j] = (0..=i.min(j))
                            .map(|k| lower[i * d + k] * lower[j * d + k])
                            .sum();
                    }
                }
            }
            CovarianceFactor::Diagonal { sd } => {
                for (i, s) in sd.iter().enumerate() {
                    c[i * d + i] = s * s;
                }
            }
        }
        c
    }

    /// `n` draws `mean + L eps`, `eps ~ N(0, I)` from `rng`, as f32 on `device`.
    ///
    /// # Shapes
    /// - returns `(n, d)`
    pub fn sample(&self, n: usize, rng: &mut SeededRng, device: &Device) -> Result<Tensor> {
        ensure!(n >= 1, "count: must be at least 1");
        let d = self.dim();
        let eps = Tensor::from_vec(rng.normal_vec(n * d), (n, d), &Device::Cpu)?;
        let mean = Tensor::from_slice(&self.mean, (1, d), &Device::Cpu)?;
        let z = match &self.factor {
            CovarianceFactor::Full { lower, .. } => {
                let l = Tensor::from_slice(lower, (d, d), &Device::Cpu)?;
                eps.matmul(&l.t()?)?
            }
            CovarianceFactor::Diagonal { sd } => {
                eps.broadcast_mul(&Tensor::from_slice(sd, (1, d), &Device::Cpu)?)?
            }
        };
        Ok(z.broadcast_add(&mean)?
            .to_dtype(DType::F32)?
            .to_device(device)?)
    }
}

// ---------------------------------------------------------------------------------------------
// `flowfm generate`
// ---------------------------------------------------------------------------------------------

/// What to condition generation on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum GenerateMode {
    /// Rebuild each given window from its own representation.
    Reconstruct,
    /// Fit a Gaussian to the given windows' representations (the training pool) and generate
    /// `count` windows conditioned on draws from it.
    Sample {
        /// Windows to generate.
        count: usize,
        /// Covariance of the fitted Gaussian.
        covariance: CovarianceKind,
    },
}

/// One `flowfm generate` job.
#[derive(Clone, Debug)]
pub struct GenerateJob {
    /// Solver or sampler.
    pub sampler: SamplerSpec,
    /// Windows per network call.
    pub batch_size: usize,
    /// Seed of the noise and of the drawn representations.
    pub seed: u64,
    /// Reconstruction or sampling.
    pub mode: GenerateMode,
    /// The HDF5 store to write (atomically).
    pub output: PathBuf,
}

/// Reconstruction quality of a reconstruct job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionSummary {
    /// Mean squared error over all values.
    pub mse: f64,
    /// Root of `mse`.
    pub rmse: f64,
    /// Mean per-window correlation.
    pub corr_mean: f64,
}

/// What a generation job did; also stored as JSON in the output store's `config` attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateSummary {
    /// `flowfm` or `diffusion`.
    pub method: String,
    /// Sampler label.
    pub sampler: String,
    /// The mode.
    pub mode: GenerateMode,
    /// Seed.
    pub seed: u64,
    /// Windows per network call.
    pub batch_size: usize,
    /// Windows written.
    pub windows: usize,
    /// Network evaluations per window.
    pub nfe_per_window: usize,
    /// Wall seconds of sampling.
    pub total_secs: f64,
    /// Milliseconds of sampling per window.
    pub ms_per_window: f64,
    /// Encoder checkpoint.
    pub encoder: String,
    /// Generator checkpoint.
    pub generator: String,
    /// Source dataset of the conditioning windows.
    pub source_dataset: String,
    /// Reconstruction error (reconstruct mode).
    pub reconstruction: Option<ReconstructionSummary>,
    /// The store written.
    pub output: String,
}

fn fnv1a(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    format!("{h:016x}")
}

fn check_windows(models: &TrainedModels, ws: &WindowSet) -> Result<()> {
    ws.validate()?;
    let (c, l) = models.window_shape();
    ensure!(
        ws.channels == c && ws.window_len == l,
        "windows: {} has windows of {} channels x {} samples, the model reads {c} x {l}",
        ws.dataset,
        ws.channels,
        ws.window_len
    );
    ensure!(
        ws.num_windows() >= 1,
        "windows: {} has no windows",
        ws.dataset
    );
    Ok(())
}

/// Encodes every window of `ws` in batches (without copying the whole set into one tensor).
///
/// # Shapes
/// - returns `(N, repr_dim)`
pub fn encode_window_set(
    models: &TrainedModels,
    ws: &WindowSet,
    batch_size: usize,
) -> Result<Tensor> {
    check_windows(models, ws)?;
    ensure!(batch_size >= 1, "batch_size: must be at least 1");
    let (n, size) = (ws.num_windows(), ws.window_size());
    let mut parts = Vec::new();
    let mut s = 0;
    while s < n {
        let len = batch_size.min(n - s);
        let x = Tensor::from_slice(
            &ws.x[s * size..(s + len) * size],
            (len, ws.channels, ws.window_len),
            &models.device,
        )?;
        parts.push(models.encoder.encode_detached(&x)?);
        s += len;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Runs a generation job: conditions on `windows` (the windows to reconstruct, or the pool
/// whose representations the Gaussian is fitted to), generates, and writes the store.
///
/// The store's `dataset` attribute is `<source>/generated/<method>/<sampler>`; in reconstruct
/// mode every generated window keeps its source window's label, subject and start time, in
/// sample mode labels and subjects are -1. The `config` attribute holds the
/// [`GenerateSummary`] as JSON, the `fingerprint` an FNV-1a hash of it.
pub fn run_generation(
    models: &TrainedModels,
    windows: &WindowSet,
    job: &GenerateJob,
) -> Result<GenerateSummary> {
    check_windows(models, windows)?;
    job.sampler
        .validate(models.kind(), models.schedule.num_steps())?;
    ensure!(job.batch_size >= 1, "batch_size: must be at least 1");
    let z_real = encode_window_set(models, windows, job.batch_size)?;
    let z = match &job.mode {
        GenerateMode::Reconstruct => z_real,
        GenerateMode::Sample { count, covariance } => {
            ensure!(*count >= 1, "count: must be at least 1");
            let g = RepresentationGaussian::fit(&z_real, *covariance)?;
            let mut rng = SeededRng::new(job.seed).derive("representations");
            g.sample(*count, &mut rng, &models.device)?
        }
    };
    let gen = models.sample(&z, &job.sampler, job.batch_size, job.seed)?;
    let x: Vec<f32> = gen.x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let n = gen.x.dims()[0];
    let reconstruction = match job.mode {
        GenerateMode::Reconstruct => {
            let real = Windows::new(&windows.x, n, windows.channels, windows.window_len)?;
            let fake = Windows::new(&x, n, windows.channels, windows.window_len)?;
            let r = reconstruction_error(&real, &fake)?;
            Some(ReconstructionSummary {
                mse: r.mse,
                rmse: r.rmse,
                corr_mean: r.corr_mean,
            })
        }
        GenerateMode::Sample { .. } => None,
    };
    let method = models.kind().method_name();
    let mut out = WindowSet::empty(
        format!("{}/generated/{method}/{}", windows.dataset, gen.sampler),
        windows.sample_rate_hz,
        windows.channel_names.clone(),
        windows.window_len,
        Vec::new(),
    );
    out.x = x;
    match job.mode {
        GenerateMode::Reconstruct => {
            out.class_names = windows.class_names.clone();
            out.y = windows.y.clone();
            out.subject = windows.subject.clone();
            out.start_time_s = windows.start_time_s.clone();
        }
        GenerateMode::Sample { .. } => {
            out.y = vec![-1; n];
            out.subject = vec![-1; n];
            out.start_time_s = vec![0.0; n];
        }
    }
    let summary = GenerateSummary {
        method: method.to_string(),
        sampler: gen.sampler.clone(),
        mode: job.mode.clone(),
        seed: job.seed,
        batch_size: job.batch_size,
        windows: n,
        nfe_per_window: gen.nfe_per_window,
        total_secs: gen.total_secs,
        ms_per_window: gen.ms_per_window,
        encoder: models.encoder_path.display().to_string(),
        generator: models.generator_path.display().to_string(),
        source_dataset: windows.dataset.clone(),
        reconstruction,
        output: job.output.display().to_string(),
    };
    let json = serde_json::to_string(&summary)?;
    write_store(
        &job.output,
        &out,
        GENERATED_STORE_VERSION,
        &fnv1a(&json),
        &json,
    )
    .with_context(|| format!("writing generated windows to {}", job.output.display()))?;
    Ok(summary)
}

// ---------------------------------------------------------------------------------------------
// The generation study
// ---------------------------------------------------------------------------------------------

/// The fixed encoder whose feature space the Frechet distance and MMD are measured in.
#[derive(Clone, Debug, PartialEq)]
pub enum ReferenceEncoder {
    /// A never-trained HARNet initialised from `seed`: identical for both methods and
    /// independent of either run's training, so neither method is favoured.
    Random {
        /// Architecture.
        config: EncoderConfig,
        /// Initialisation seed.
        seed: u64,
    },
    /// A trained encoder checkpoint, e.g. the SSL-Wearables multi-task run's
    /// `encoder.safetensors` (trained without any generator, so neutral between the two).
    Checkpoint(PathBuf),
}

impl ReferenceEncoder {
    /// The default reference: the architecture of `like` (so it reads the same windows) with
    /// group norm (8 groups; a never-trained batch norm has no meaningful running statistics),
    /// initialised from [`REFERENCE_ENCODER_SEED`].
    pub fn random_like(like: &EncoderConfig) -> Self {
        ReferenceEncoder::Random {
            config: like.clone().with_norm(NormKind::Group { groups: 8 }),
            seed: REFERENCE_ENCODER_SEED,
        }
    }

    /// Builds the encoder on `device`.
    pub fn build(&self, device: &Device) -> Result<HarNet> {
        match self {
            ReferenceEncoder::Random { config, seed } => {
                let vm = VarMap::new();
                Ok(HarNet::new(
                    config.clone(),
                    seeded_var_builder(&vm, *seed, DType::F32, device),
                )?)
            }
            ReferenceEncoder::Checkpoint(p) => load_encoder(p, device),
        }
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        match self {
            ReferenceEncoder::Random { config, seed } => format!(
                "randomly initialised HARNet (width {}, {}-d features, group norm, seed {seed:#x})",
                config.width,
                config.repr_dim()
            ),
            ReferenceEncoder::Checkpoint(p) => format!("trained encoder {}", p.display()),
        }
    }
}

/// What the generated windows of the study are conditioned on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyConditioning {
    /// Each real window's own representation (one pass serves every metric).
    OwnRepresentations,
    /// Draws from a Gaussian fitted to the real windows' representations (each method's own
    /// encoder); reconstruction error still comes from a second, own-representation pass.
    FittedGaussian(CovarianceKind),
}

/// Settings of [`generation_study`]. Sizes are parametric so CI can run it at tiny scale.
#[derive(Clone, Debug)]
pub struct StudyConfig {
    /// Flow solvers, in table order.
    pub flow_samplers: Vec<SamplerSpec>,
    /// Diffusion samplers, in table order.
    pub diffusion_samplers: Vec<SamplerSpec>,
    /// Windows per network call (timed batches).
    pub batch_size: usize,
    /// Seed of noise, drawn representations and the discriminator's split.
    pub seed: u64,
    /// Feature space of Frechet distance and MMD.
    pub reference: ReferenceEncoder,
    /// What generation is conditioned on.
    pub conditioning: StudyConditioning,
    /// MMD settings (RBF, median heuristic by default).
    pub mmd: MmdConfig,
    /// Real-vs-generated classifier settings.
    pub discriminative: DiscriminativeConfig,
    /// Clip diffusion's predicted `x_0` to `[-c, c]` g at every step (the usual DDPM practice
    /// of clipping to the data range); `None` samples unclipped.
    pub diffusion_clip_x0: Option<f64>,
}

impl StudyConfig {
    /// The paper's grid: flow Euler at 1/2/4/8/16/32 steps and dopri5; diffusion DDIM at
    /// 10/20/50/100 steps and DDPM over all `T`; own-representation conditioning.
    pub fn paper(reference: ReferenceEncoder) -> Self {
        Self::with_steps(
            reference,
            &[1, 2, 4, 8, 16, 32],
            true,
            &[10, 20, 50, 100],
            true,
        )
    }

    /// A grid of Euler steps (plus dopri5) and DDIM steps (plus DDPM).
    pub fn with_steps(
        reference: ReferenceEncoder,
        euler_steps: &[usize],
        dopri5: bool,
        ddim_steps: &[usize],
        ddpm: bool,
    ) -> Self {
        Self {
            flow_samplers: SamplerSpec::flow_grid(euler_steps, dopri5),
            diffusion_samplers: SamplerSpec::diffusion_grid(ddim_steps, ddpm),
            batch_size: 64,
            seed: 0,
            reference,
            conditioning: StudyConditioning::OwnRepresentations,
            mmd: MmdConfig::default(),
            discriminative: DiscriminativeConfig::default(),
            diffusion_clip_x0: None,
        }
    }
}

/// One sampler setting's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyRow {
    /// `flowfm` or `diffusion`.
    pub method: String,
    /// Sampler label (`euler-8`, `dopri5`, `ddim-50`, `ddpm-1000`).
    pub sampler: String,
    /// Network evaluations per window.
    pub nfe: usize,
    /// Milliseconds of sampling per window.
    pub ms_per_window: f64,
    /// Frechet distance to the real windows in the reference feature space (lower is better).
    pub frechet: f64,
    /// Frechet distance in the space of hand-crafted window features (per-axis and magnitude
    /// statistics, spectral bands, autocorrelation), each standardised by the real windows' mean
    /// and sd and compressed as `sign(z) ln(1 + |z|)`. Unlike the reference encoder, whose group norm divides out a window's scale, it
    /// sees amplitude, so a sample of the right shape at the wrong scale scores badly here.
    pub frechet_features: f64,
    /// Unbiased squared MMD (RBF) in the reference feature space.
    pub mmd2: f64,
    /// RBF bandwidth the median heuristic chose.
    pub mmd_bandwidth: f64,
    /// `|accuracy - 0.5|` of a held-out real-vs-generated classifier (0 is best).
    pub discriminative: f64,
    /// L1 distance of the normalised mean power spectra (in [0, 2]).
    pub spectral_l1: f64,
    /// Log-spectral distance in dB.
    pub spectral_db: f64,
    /// RMSE of reconstructions from each real window's own representation.
    pub recon_rmse: f64,
    /// Mean per-window correlation of those reconstructions.
    pub recon_corr: f64,
}

/// The speed-up of a flow setting over the DDPM baseline at no worse Frechet distance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speedup {
    /// The flow sampler.
    pub flow_sampler: String,
    /// The baseline sampler (`ddpm-T`).
    pub baseline_sampler: String,
    /// `baseline ms per window / flow ms per window`.
    pub factor: f64,
    /// `baseline NFE / flow NFE`.
    pub nfe_ratio: f64,
    /// Flow Frechet distance.
    pub flow_frechet: f64,
    /// Baseline Frechet distance.
    pub baseline_frechet: f64,
}

/// Results of [`generation_study`]: serialisable, rendered by [`GenerationStudy::to_markdown`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationStudy {
    /// One row per sampler setting, flow first.
    pub rows: Vec<StudyRow>,
    /// Real windows compared against (and conditioned on).
    pub num_windows: usize,
    /// Where it ran.
    pub device: String,
    /// The reference encoder.
    pub reference_encoder: String,
    /// The conditioning.
    pub conditioning: StudyConditioning,
    /// Frechet distance between two halves of the real windows: the noise floor at this size.
    pub real_halves_frechet: f64,
    /// Parameters of the flow generator.
    pub flow_generator_params: usize,
    /// Parameters of the diffusion generator.
    pub diffusion_generator_params: usize,
    /// Speed-up of the fastest flow setting at least as good as DDPM-T (`None`: see the note).
    pub speedup: Option<Speedup>,
    /// How the speed-up was found, or why there is none.
    pub speedup_note: String,
    /// The first real window and, per row, its reconstruction from its own representation (for
    /// the report's real-vs-generated plot).
    #[serde(default)]
    pub examples: Vec<ExampleWindow>,
}

/// One window of the real-vs-generated plot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExampleWindow {
    /// `real`, `flowfm` or `diffusion`.
    pub method: String,
    /// Sampler label (empty for the real window).
    pub sampler: String,
    /// Channels.
    pub channels: usize,
    /// `channels x window_len` values, channel-major.
    pub values: Vec<f32>,
}

/// The fastest (by ms per window) flow row whose Frechet distance is at most the DDPM row's,
/// with its speed-up; `None` and a reason when there is no DDPM row or no flow row qualifies.
pub fn matched_speedup(rows: &[StudyRow]) -> (Option<Speedup>, String) {
    let Some(base) = rows
        .iter()
        .find(|r| r.method == "diffusion" && r.sampler.starts_with("ddpm"))
    else {
        return (
            None,
            "no DDPM row in the study, so no speed-up is reported".into(),
        );
    };
    let flows: Vec<&StudyRow> = rows.iter().filter(|r| r.method == "flowfm").collect();
    let best = flows
        .iter()
        .filter(|r| {
            r.frechet.is_finite()
                && r.frechet <= base.frechet
                && (!base.frechet_features.is_finite()
                    || r.frechet_features <= base.frechet_features)
        })
        .min_by(|a, b| a.ms_per_window.total_cmp(&b.ms_per_window));
    match best {
        Some(r) => {
            let s = Speedup {
                flow_sampler: r.sampler.clone(),
                baseline_sampler: base.sampler.clone(),
                factor: base.ms_per_window / r.ms_per_window,
                nfe_ratio: base.nfe as f64 / r.nfe.max(1) as f64,
                flow_frechet: r.frechet,
                baseline_frechet: base.frechet,
            };
            let note = format!(
                "fastest flow setting with both Frechet distances <= {}'s ({:.4} encoder, {:.3} features): {} ({:.4}, {:.3}), {:.1}x faster per window, {:.1}x fewer network evaluations",
                base.sampler, base.frechet, base.frechet_features, r.sampler, r.frechet, r.frechet_features, s.factor, s.nfe_ratio
            );
            (Some(s), note)
        }
        None => {
            let closest = flows
                .iter()
                .filter(|r| r.frechet.is_finite())
                .min_by(|a, b| a.frechet.total_cmp(&b.frechet));
            let note = match closest {
                Some(c) => format!(
                    "no flow setting reached {}'s Frechet distances ({:.4} encoder, {:.3} features) on both; the best flow setting by the encoder distance was {} at {:.4} ({:.3} features)",
                    base.sampler, base.frechet, base.frechet_features, c.sampler, c.frechet, c.frechet_features
                ),
                None => "no flow rows with a finite Frechet distance".to_string(),
            };
            (None, note)
        }
    }
}

fn cell(v: f64, decimals: usize) -> String {
    flowfm_eval::markdown::number(v, decimals)
}

impl GenerationStudy {
    /// The study as a Markdown table plus its notes.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "| Method | Sampler | NFE | ms / window | Frechet (encoder) | Frechet (features) | MMD² | Discr. | Spectral L1 | Spectral dB | Recon. RMSE | Recon. corr |\n",
        );
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                flowfm_eval::markdown::escape(&r.method),
                flowfm_eval::markdown::escape(&r.sampler),
                r.nfe,
                cell(r.ms_per_window, 3),
                cell(r.frechet, 4),
                cell(r.frechet_features, 3),
                cell(r.mmd2, 5),
                cell(r.discriminative, 3),
                cell(r.spectral_l1, 4),
                cell(r.spectral_db, 2),
                cell(r.recon_rmse, 4),
                cell(r.recon_corr, 3),
            ));
        }
        s.push('\n');
        s.push_str(&format!(
            "{} real windows on {}; conditioning: {}; features: {}; generator parameters: flow {}, diffusion {}.\n",
            self.num_windows,
            self.device,
            match self.conditioning {
                StudyConditioning::OwnRepresentations => "each real window's own representation".to_string(),
                StudyConditioning::FittedGaussian(k) => format!("draws from a Gaussian ({k:?} covariance) fitted to the real windows' representations"),
            },
            self.reference_encoder,
            self.flow_generator_params,
            self.diffusion_generator_params,
        ));
        s.push_str(&format!(
            "Frechet distance between two halves of the real windows (noise floor at this size): {}. \
             Frechet (encoder) is measured in the features of a fixed random encoder whose group norm divides out each window's scale; \
             Frechet (features) uses hand-crafted features (statistics, spectral bands, autocorrelation), standardised by the real windows and compressed as sign(z) ln(1 + |z|); it sees amplitude.\n",
            cell(self.real_halves_frechet, 4)
        ));
        s.push_str(&format!("Speed-up: {}.\n", self.speedup_note));
        s
    }

    /// The rows as generation-efficiency records (for the efficiency tables).
    pub fn efficiency(&self) -> Result<Vec<GenerationEfficiency>> {
        self.rows
            .iter()
            .map(|r| {
                Ok(GenerationEfficiency::new(
                    r.method.clone(),
                    r.sampler.clone(),
                    self.device.clone(),
                    r.nfe,
                    self.num_windows,
                    r.ms_per_window * self.num_windows as f64 / 1000.0,
                )?)
            })
            .collect()
    }
}

fn device_name(d: &Device) -> String {
    if d.is_cuda() {
        "cuda".to_string()
    } else if d.is_metal() {
        "metal".to_string()
    } else {
        "cpu".to_string()
    }
}

/// Everything about the real windows that every row is compared with.
struct RealReference<'a> {
    windows: Windows<'a>,
    stats: GaussianStats,
    features_space: StandardisedFeatures,
    feature_stats: GaussianStats,
    features: Embeddings<'static>,
    sample_rate_hz: f64,
}

/// Hand-crafted window features standardised by the real windows' per-feature mean and sd.
struct StandardisedFeatures {
    extractor: FeatureExtractor,
    mean: Vec<f64>,
    sd: Vec<f64>,
}

impl StandardisedFeatures {
    fn fit(real: &Windows<'_>, sample_rate_hz: f64) -> Result<(Self, Embeddings<'static>)> {
        let extractor = FeatureExtractor::new(
            FeatureConfig {
                sample_rate_hz,
                ..FeatureConfig::default()
            },
            real.channels(),
            real.len_samples(),
        )?;
        let table = extractor.extract(real)?;
        let (rows, cols) = (table.rows(), table.cols());
        let mut mean = vec![0.0; cols];
        let mut sd = vec![0.0; cols];
        for j in 0..cols {
            let col: Vec<f64> = (0..rows)
                .map(|i| table.row(i)[j])
                .filter(|v| v.is_finite())
                .collect();
            let m = col.iter().sum::<f64>() / col.len().max(1) as f64;
            let v = col.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / col.len().max(1) as f64;
            mean[j] = m;
            sd[j] = if v.sqrt() > 1e-12 { v.sqrt() } else { 1.0 };
        }
        let me = Self {
            extractor,
            mean,
            sd,
        };
        let emb = me.embed(real)?;
        Ok((me, emb))
    }

    /// Standardised features, compressed as `sign(z) ln(1 + |z|)` so that one feature far out
    /// (say, the energy above 8 Hz of noisy samples against anti-aliased real windows, hundreds of
    /// real sds away) cannot swamp the rest; a non-finite feature (e.g. the autocorrelation of a
    /// constant window) becomes the real mean (0).
    fn embed(&self, w: &Windows<'_>) -> Result<Embeddings<'static>> {
        let table = self.extractor.extract(w)?;
        let (rows, cols) = (table.rows(), table.cols());
        let mut out = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for (j, v) in table.row(i).iter().enumerate() {
                let z = (v - self.mean[j]) / self.sd[j];
                let c = z.signum() * z.abs().ln_1p();
                out.push(if c.is_finite() { c as f32 } else { 0.0 });
            }
        }
        let t = Tensor::from_vec(out, (rows, cols), &Device::Cpu)?;
        Ok(Embeddings::from_tensor(&t)?)
    }
}

#[allow(clippy::too_many_arguments)]
fn study_row(
    models: &TrainedModels,
    sampler: &SamplerSpec,
    z_own: &Tensor,
    z_dist: Option<&Tensor>,
    reference: &HarNet,
    real: &RealReference<'_>,
    cfg: &StudyConfig,
    index: usize,
) -> Result<(StudyRow, ExampleWindow)> {
    let mut label = sampler.label(models.schedule.num_steps());
    if let (GeneratorKind::Diffusion, Some(c)) = (models.kind(), cfg.diffusion_clip_x0) {
        label = format!("{label} (x0 clip {c:.1})");
    }
    let ctx = || format!("{} {label}", models.kind().method_name());
    let clip = cfg.diffusion_clip_x0;
    let own = models
        .sample_with_clip(z_own, sampler, cfg.batch_size, cfg.seed, clip)
        .with_context(ctx)?;
    let dist = match z_dist {
        Some(z) => models
            .sample_with_clip(z, sampler, cfg.batch_size, cfg.seed, clip)
            .with_context(ctx)?,
        None => own.clone(),
    };
    let gen_windows = Windows::from_tensor(&dist.x)?;
    let own_windows = Windows::from_tensor(&own.x)?;
    let feats = Embeddings::from_tensor(&encode_batched(reference, &dist.x, cfg.batch_size)?)?;
    let frechet = frechet_distance_from_stats(&real.stats, &GaussianStats::fit(&feats)?)?;
    let frechet_features = frechet_distance_from_stats(
        &real.feature_stats,
        &GaussianStats::fit(&real.features_space.embed(&gen_windows)?)?,
    )?;
    let mmd = mmd2_rbf(&real.features, &feats, &cfg.mmd)?;
    let mut rng = SeededRng::new(cfg.seed).derive_indexed("discriminator", index as u64);
    let disc = discriminative_score(&real.windows, &gen_windows, &cfg.discriminative, &mut rng)?;
    let spec = spectral_distance(&real.windows, &gen_windows, real.sample_rate_hz)?;
    let rec = reconstruction_error(&real.windows, &own_windows)?;
    let example = ExampleWindow {
        method: models.kind().method_name().to_string(),
        sampler: label.clone(),
        channels: own.x.dim(1)?,
        values: own.x.narrow(0, 0, 1)?.flatten_all()?.to_vec1::<f32>()?,
    };
    let row = StudyRow {
        method: models.kind().method_name().to_string(),
        sampler: label,
        nfe: dist.nfe_per_window,
        ms_per_window: dist.ms_per_window,
        frechet,
        frechet_features,
        mmd2: mmd.mmd2,
        mmd_bandwidth: mmd.bandwidth,
        discriminative: disc.score,
        spectral_l1: spec.l1,
        spectral_db: spec.log_spectral_db,
        recon_rmse: rec.rmse,
        recon_corr: rec.corr_mean,
    };
    Ok((row, example))
}

/// Evaluates every sampler setting of a flow run and a diffusion run on the same real windows.
///
/// Per setting: NFE and sampling time per window (the networks are warmed up first; encoding
/// and metrics are not timed), Frechet distance and MMD (RBF, median heuristic) between the
/// reference encoder's features of real and generated windows, the discriminative score and
/// spectral distance on the windows themselves, and the reconstruction error of generation
/// conditioned on each real window's own representation. Then the speed-up of the fastest flow
/// setting whose Frechet distance is at most DDPM-T's ([`matched_speedup`]).
///
/// `real` needs at least 8 windows of the models' shape.
pub fn generation_study(
    flow: &TrainedModels,
    diffusion: &TrainedModels,
    real: &WindowSet,
    cfg: &StudyConfig,
) -> Result<GenerationStudy> {
    ensure!(
        flow.kind() == GeneratorKind::Flow,
        "flow: {} holds a {} generator",
        flow.generator_path.display(),
        flow.kind().method_name()
    );
    ensure!(
        diffusion.kind() == GeneratorKind::Diffusion,
        "diffusion: {} holds a {} generator",
        diffusion.generator_path.display(),
        diffusion.kind().method_name()
    );
    ensure!(
        flow.window_shape() == diffusion.window_shape(),
        "diffusion: windows of {:?} (channels, samples), the flow run's are {:?}",
        diffusion.window_shape(),
        flow.window_shape()
    );
    check_windows(flow, real)?;
    let n = real.num_windows();
    ensure!(n >= 8, "real: the study needs at least 8 windows, got {n}");
    ensure!(cfg.batch_size >= 1, "batch_size: must be at least 1");
    for (field, list, models) in [
        ("flow_samplers", &cfg.flow_samplers, flow),
        ("diffusion_samplers", &cfg.diffusion_samplers, diffusion),
    ] {
        for (i, s) in list.iter().enumerate() {
            s.validate(models.kind(), models.schedule.num_steps())
                .with_context(|| format!("{field}[{i}] = `{s}`"))?;
        }
    }

    let reference = cfg.reference.build(&flow.device)?;
    let (c, l) = flow.window_shape();
    let rc = reference.config();
    ensure!(
        rc.in_channels == c && rc.window_len == l,
        "reference: the reference encoder reads {} x {}, the windows are {c} x {l}",
        rc.in_channels,
        rc.window_len
    );
    let x_real = windows_tensor(real, &flow.device)?;
    let real_feats = encode_batched(&reference, &x_real, cfg.batch_size)?;
    let half = n / 2;
    let real_halves_frechet = frechet_distance_from_stats(
        &GaussianStats::fit(&Embeddings::from_tensor(&real_feats.narrow(0, 0, half)?)?)?,
        &GaussianStats::fit(&Embeddings::from_tensor(&real_feats.narrow(
            0,
            half,
            n - half,
        )?)?)?,
    )?;
    let features = Embeddings::from_tensor(&real_feats)?;
    let real_windows = Windows::new(&real.x, n, real.channels, real.window_len)?;
    let (features_space, real_hand) =
        StandardisedFeatures::fit(&real_windows, real.sample_rate_hz)?;
    let reference_real = RealReference {
        windows: real_windows,
        stats: GaussianStats::fit(&features)?,
        features_space,
        feature_stats: GaussianStats::fit(&real_hand)?,
        features,
        sample_rate_hz: real.sample_rate_hz,
    };

    let mut rows = Vec::new();
    let mut examples = vec![ExampleWindow {
        method: "real".into(),
        sampler: String::new(),
        channels: real.channels,
        values: real.x[..real.channels * real.window_len].to_vec(),
    }];
    let mut index = 0;
    for (models, samplers, warm) in [
        (flow, &cfg.flow_samplers, SamplerSpec::Euler { steps: 1 }),
        (
            diffusion,
            &cfg.diffusion_samplers,
            SamplerSpec::Ddim { steps: 1, eta: 0.0 },
        ),
    ] {
        if samplers.is_empty() {
            continue;
        }
        let z_own = models.encode(&x_real, cfg.batch_size)?;
        let z_dist = match cfg.conditioning {
            StudyConditioning::OwnRepresentations => None,
            StudyConditioning::FittedGaussian(kind) => {
                let g = RepresentationGaussian::fit(&z_own, kind)?;
                let mut rng = SeededRng::new(cfg.seed).derive("representations");
                Some(g.sample(n, &mut rng, &models.device)?)
            }
        };
        // Warm-up: first calls pay for allocation and kernel setup.
        let warm_n = cfg.batch_size.min(n);
        models.sample(
            &z_own.narrow(0, 0, warm_n)?,
            &warm,
            cfg.batch_size,
            cfg.seed,
        )?;
        for s in samplers {
            let (row, example) = study_row(
                models,
                s,
                &z_own,
                z_dist.as_ref(),
                &reference,
                &reference_real,
                cfg,
                index,
            )?;
            rows.push(row);
            examples.push(example);
            index += 1;
        }
    }
    let (speedup, speedup_note) = matched_speedup(&rows);
    Ok(GenerationStudy {
        rows,
        num_windows: n,
        device: device_name(&flow.device),
        reference_encoder: cfg.reference.describe(),
        conditioning: cfg.conditioning,
        real_halves_frechet,
        flow_generator_params: flow.generator_params,
        diffusion_generator_params: diffusion.generator_params,
        speedup,
        speedup_note,
        examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(n: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::new(seed);
        (0..n * 3 * 300)
            .map(|i| {
                let t = (i % 300) as f32 / 30.0;
                scale * ((2.0 * std::f32::consts::PI * 2.0 * t).sin() + 0.3 * rng.normal() as f32)
            })
            .collect()
    }

    #[test]
    fn the_feature_frechet_distance_sees_a_change_of_scale() {
        let real = windows(48, 1.0, 1);
        let same = windows(48, 1.0, 2);
        let scaled = windows(48, 50.0, 3);
        fn w(x: &[f32]) -> Windows<'_> {
            Windows::new(x, 48, 3, 300).unwrap()
        }
        let (space, real_emb) = StandardisedFeatures::fit(&w(&real), 30.0).unwrap();
        let stats = GaussianStats::fit(&real_emb).unwrap();
        let d = |x: &Vec<f32>| {
            let e = space.embed(&w(x)).unwrap();
            frechet_distance_from_stats(&stats, &GaussianStats::fit(&e).unwrap()).unwrap()
        };
        let near = d(&same);
        let far = d(&scaled);
        assert!(near.is_finite() && far.is_finite());
        assert!(
            far > 100.0 * near.max(1e-3),
            "scaled windows should be far: {far} vs {near}"
        );
    }
}
