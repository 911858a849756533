//! Trained generators loaded from a run directory: [`TrainedModels`] reads a run's
//! `encoder.safetensors` and `generator.safetensors` (EMA weights of a `FlowUNet` or
//! `DiffusionUNet`, configs from the checkpoint metadata) and samples with any [`SamplerSpec`].
//!
//! Randomness: the initial noise comes from `SeededRng::new(seed).derive("noise")`, drawn per
//! window (see `flowfm_sampling::generate`), so a window depends on the seed and its index only,
//! not on the batch size (except under the adaptive dopri5 solver, whose step sizes are chosen
//! per batch).

use super::sampler::{GeneratorKind, SamplerSpec};
use crate::encode::{encode_tensor, load_encoder};
use crate::train::config::Experiment;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::schedule::{NoiseSchedule, NoiseScheduleConfig};
use flowfm_core::{Conditioning, SeededRng};
use flowfm_data::window::WindowSet;
use flowfm_models::checkpoint::{load_checkpoint_checked, read_checkpoint_metadata};
use flowfm_models::unet::{DiffusionUNet, FlowUNet, UNetConfig};
use flowfm_models::HarNet;
use flowfm_sampling::{
    generate_diffusion, generate_flow, DdimOptions, DdpmOptions, DiffusionMethod, Dopri5Options,
    GenerateOptions, OdeMethod, SampleShape, TimeGrid,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
        encode_tensor(&self.encoder, x, batch_size)
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
            batch_ms_per_window: out
                .chunk_secs
                .iter()
                .map(|&(len, secs)| 1000.0 * secs / len.max(1) as f64)
                .collect(),
        })
    }
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
    /// Milliseconds per window of each batch of at most `batch_size` windows, in order.
    pub batch_ms_per_window: Vec<f64>,
}

impl TrainedModels {
    /// Checks that `ws` holds valid windows of the shape the models read, and at least one.
    pub fn check_windows(&self, ws: &WindowSet) -> Result<()> {
        ws.validate()?;
        let (c, l) = self.window_shape();
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
}
