//! The DDPM noise-prediction objective (Ho et al. 2020, "simple" loss) and its step sampler.

use candle_core::{Result, Tensor};
use flowfm_core::{Conditioning, Denoiser, DiffusionSteps, NoiseSchedule, SeededRng};

/// Draws `batch` training steps uniformly from `0..schedule.num_steps()`.
pub fn sample_diffusion_steps(
    rng: &mut SeededRng,
    batch: usize,
    schedule: &NoiseSchedule,
) -> Result<DiffusionSteps> {
    let t = schedule.num_steps();
    let steps = (0..batch).map(|_| rng.below(t)).collect();
    Ok(DiffusionSteps::new(steps, t)?)
}

/// The DDPM loss `mean || eps_theta(x_k, k | cond) - eps ||^2` with
/// `x_k = sqrt(alpha_bar[k]) x_0 + sqrt(1 - alpha_bar[k]) eps` (a scalar).
///
/// `x_0` is the data (diffusion convention: data at step 0), `eps` the noise. Gradients reach the
/// denoiser and, through `cond`, the encoder.
///
/// # Shapes
/// - `x_0`, `eps`: `(batch, channels, samples)`
/// - `k`: `batch` steps
/// - returns a scalar `()`
pub fn ddpm_loss(
    denoiser: &dyn Denoiser,
    x_0: &Tensor,
    eps: &Tensor,
    k: &DiffusionSteps,
    schedule: &NoiseSchedule,
    cond: &Conditioning,
) -> Result<Tensor> {
    if x_0.shape() != eps.shape() {
        candle_core::bail!(
            "data {:?} and noise {:?} differ in shape",
            x_0.shape(),
            eps.shape()
        );
    }
    let batch = x_0.dims().first().copied().unwrap_or(0);
    if k.batch() != batch {
        candle_core::bail!("{} diffusion steps for a batch of {batch}", k.batch());
    }
    let x_k = schedule.q_sample(x_0, eps, k)?;
    let pred = denoiser.predict_noise(&x_k, k, cond)?;
    if pred.shape() != eps.shape() {
        candle_core::bail!(
            "denoiser returned shape {:?} for x_k of shape {:?}",
            pred.shape(),
            x_k.shape()
        );
    }
    pred.sub(eps)?.sqr()?.mean_all()
}
