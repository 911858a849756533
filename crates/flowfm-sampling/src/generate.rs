//! The generation API: windows from noise, conditioned on representations, batched and seeded.
//!
//! Each sample owns a random stream derived from one draw of the caller's [`SeededRng`], so a
//! result depends on the seed and the sample's index only, never on how the batch is chunked.

use crate::diffusion::{
    ddim_sample, ddim_timesteps, ddpm_sample, draw_like, DdimOptions, DdpmOptions,
};
use crate::grid::TimeGrid;
use crate::ode::{solve, Nfe, OdeMethod};
use candle_core::{DType, Device, Result, Tensor};
use flowfm_core::{Conditioning, CoreError, Denoiser, NoiseSchedule, SeededRng, VelocityField};

/// The shape of the windows to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleShape {
    /// Number of windows.
    pub batch: usize,
    /// Channels per window (3 for a wrist accelerometer).
    pub channels: usize,
    /// Samples per window (300 for 10 s at 30 Hz).
    pub samples: usize,
}

/// Where and how generation runs.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Float type of the generated windows.
    pub dtype: DType,
    /// Device of the generated windows.
    pub device: Device,
    /// Largest number of windows sent to the network at once (`None`: the whole batch).
    pub max_batch: Option<usize>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            max_batch: None,
        }
    }
}

/// Generated windows and their cost.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The windows, `(batch, channels, samples)`.
    pub x: Tensor,
    /// Network evaluations per window (largest over chunks; what NFE tables report).
    pub nfe: Nfe,
    /// Network calls in total (summed over chunks).
    pub calls: usize,
    /// `(windows, wall seconds)` of each chunk, in order: the time of the sampler alone (noise
    /// for the initial state is drawn before the first chunk), for per-batch cost statistics.
    pub chunk_secs: Vec<(usize, f64)>,
}

/// A diffusion sampler choice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DiffusionMethod {
    /// Ancestral DDPM over all `T` steps.
    Ddpm(DdpmOptions),
    /// DDIM over a sub-sequence.
    Ddim(DdimOptions),
}

fn check_batch(cond: &Conditioning, shape: &SampleShape, opts: &GenerateOptions) -> Result<()> {
    if shape.batch == 0 || shape.channels == 0 || shape.samples == 0 {
        return Err(CoreError::InvalidParameter {
            name: "sample_shape",
            reason: format!("all sizes must be positive, got {shape:?}"),
        }
        .into());
    }
    if opts.max_batch == Some(0) {
        return Err(CoreError::InvalidParameter {
            name: "max_batch",
            reason: "must be at least 1".into(),
        }
        .into());
    }
    if let Some(z) = cond.representation() {
        if z.dims().first() != Some(&shape.batch) {
            candle_core::bail!(
                "conditioning representation of shape {:?} for a batch of {}",
                z.shape(),
                shape.batch
            );
        }
    }
    Ok(())
}

/// Per-sample streams and initial noise for the whole batch.
fn start(
    shape: &SampleShape,
    opts: &GenerateOptions,
    rng: &mut SeededRng,
) -> Result<(Vec<SeededRng>, Tensor)> {
    // One draw advances the caller's stream; the per-sample streams hang off it.
    let base = SeededRng::new(rng.below(usize::MAX) as u64);
    let mut streams: Vec<SeededRng> = (0..shape.batch)
        .map(|i| base.derive_indexed("sample", i as u64))
        .collect();
    let like = Tensor::zeros(
        (shape.batch, shape.channels, shape.samples),
        opts.dtype,
        &opts.device,
    )?;
    let x_init = draw_like(&mut streams, &like)?;
    Ok((streams, x_init))
}

/// Runs `f` on chunks of at most `max_batch` windows and concatenates the results.
fn chunked<F>(batch: usize, max_batch: Option<usize>, mut f: F) -> Result<Generated>
where
    F: FnMut(usize, usize) -> Result<(Tensor, Nfe)>,
{
    let size = max_batch.unwrap_or(batch).min(batch);
    let mut parts = Vec::new();
    let (mut nfe, mut calls) = (Nfe(0), 0);
    let mut chunk_secs = Vec::new();
    let mut s = 0;
    while s < batch {
        let len = size.min(batch - s);
        let t = std::time::Instant::now();
        let (x, n) = f(s, len)?;
        chunk_secs.push((len, t.elapsed().as_secs_f64()));
        parts.push(x);
        nfe = nfe.max(n);
        calls += n.0;
        s += len;
    }
    Ok(Generated {
        x: Tensor::cat(&parts, 0)?,
        nfe,
        calls,
        chunk_secs,
    })
}

/// Generates windows by integrating the flow from noise (t = 0) to data (t = 1) over `grid`.
///
/// # Shapes
/// - `cond`: a representation `(batch, d)` or none
/// - returns `x`: `(batch, channels, samples)`
pub fn generate_flow(
    field: &dyn VelocityField,
    cond: &Conditioning,
    shape: SampleShape,
    grid: &TimeGrid,
    method: &OdeMethod,
    opts: &GenerateOptions,
    rng: &mut SeededRng,
) -> Result<Generated> {
    check_batch(cond, &shape, opts)?;
    let (_, x_init) = start(&shape, opts, rng)?;
    chunked(shape.batch, opts.max_batch, |s, len| {
        solve(
            field,
            &x_init.narrow(0, s, len)?,
            &cond.narrow(s, len)?,
            grid,
            method,
        )
    })
}

/// Generates windows with a diffusion sampler, from pure noise at step `T - 1` to data.
///
/// # Shapes
/// - `cond`: a representation `(batch, d)` or none
/// - returns `x`: `(batch, channels, samples)`
pub fn generate_diffusion(
    denoiser: &dyn Denoiser,
    cond: &Conditioning,
    shape: SampleShape,
    schedule: &NoiseSchedule,
    method: &DiffusionMethod,
    opts: &GenerateOptions,
    rng: &mut SeededRng,
) -> Result<Generated> {
    check_batch(cond, &shape, opts)?;
    let steps = match method {
        DiffusionMethod::Ddim(d) => Some(ddim_timesteps(
            schedule.num_steps(),
            d.num_sample_steps,
            d.spacing,
        )?),
        DiffusionMethod::Ddpm(_) => None,
    };
    let (mut streams, x_init) = start(&shape, opts, rng)?;
    chunked(shape.batch, opts.max_batch, |s, len| {
        let x = x_init.narrow(0, s, len)?;
        let c = cond.narrow(s, len)?;
        let st = &mut streams[s..s + len];
        match (method, &steps) {
            (DiffusionMethod::Ddpm(o), _) => ddpm_sample(denoiser, &x, &c, schedule, o, st),
            (DiffusionMethod::Ddim(o), Some(seq)) => {
                ddim_sample(denoiser, &x, &c, schedule, seq, o.eta, o.clip_x0, st)
            }
            (DiffusionMethod::Ddim(_), None) => {
                candle_core::bail!("internal: DDIM without a step sequence")
            }
        }
    })
}
