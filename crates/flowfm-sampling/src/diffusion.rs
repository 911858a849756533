//! Diffusion samplers: ancestral DDPM over all `T` steps (Ho et al. 2020, Algorithm 2) and DDIM
//! over any increasing sub-sequence of steps (Song, Meng & Ermon 2021, eq. 12; `eta = 0` is
//! deterministic, `eta = 1` on the full sequence is DDPM with the `beta_tilde` variance).
//!
//! Steps follow flowfm's convention: `k` in `0..T`, data at `k = 0`. A step function is pure (the
//! noise `z` comes in); the samplers draw `z` from a [`SeededRng`].

use crate::ode::Nfe;
use candle_core::{Result, Tensor};
use flowfm_core::{
    Conditioning, CoreError, Denoiser, DiffusionStep, DiffusionSteps, NoiseSchedule, SeededRng,
};

/// The variance of the ancestral DDPM step (Ho et al. 2020 report both give similar results).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PosteriorVariance {
    /// `sigma^2 = beta_tilde[k]`, the true posterior variance given `x_0`.
    #[default]
    BetaTilde,
    /// `sigma^2 = beta[k]`.
    Beta,
}

/// Settings of ancestral DDPM sampling.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DdpmOptions {
    /// Which variance the reverse step uses.
    pub variance: PosteriorVariance,
    /// Clip the predicted `x_0` to `[-c, c]` before forming the posterior mean (off by default:
    /// accelerometer windows in g have no fixed range).
    pub clip_x0: Option<f64>,
}

/// How a DDIM sub-sequence of `S` steps is laid out over `0..T`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepSpacing {
    /// `round(linspace(0, T - 1, S))`: starts at data, ends at the noisiest step.
    #[default]
    Linspace,
    /// `i * (T / S)` for `i < S` (the "uniform" sequence of the DDIM paper).
    Leading,
    /// `round(T - i T / S) - 1`: always includes the noisiest step `T - 1`.
    Trailing,
}

/// Settings of DDIM sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimOptions {
    /// Number of denoising steps `S` (1..=T).
    pub num_sample_steps: usize,
    /// Layout of the sub-sequence.
    pub spacing: StepSpacing,
    /// Stochasticity: 0 deterministic (default), 1 the DDPM posterior variance.
    pub eta: f64,
    /// Clip the predicted `x_0` to `[-c, c]`.
    pub clip_x0: Option<f64>,
}

impl Default for DdimOptions {
    fn default() -> Self {
        Self {
            num_sample_steps: 50,
            spacing: StepSpacing::Linspace,
            eta: 0.0,
            clip_x0: None,
        }
    }
}

fn invalid(name: &'static str, reason: String) -> CoreError {
    CoreError::InvalidParameter { name, reason }
}

fn check_clip(clip: Option<f64>) -> std::result::Result<(), CoreError> {
    match clip {
        Some(c) if !(c.is_finite() && c > 0.0) => Err(invalid(
            "clip_x0",
            format!("must be finite and > 0, got {c}"),
        )),
        _ => Ok(()),
    }
}

/// The increasing sub-sequence of `num_sample_steps` steps of a `num_steps`-step schedule.
pub fn ddim_timesteps(
    num_steps: usize,
    num_sample_steps: usize,
    spacing: StepSpacing,
) -> std::result::Result<Vec<usize>, CoreError> {
    if num_sample_steps == 0 || num_sample_steps > num_steps {
        return Err(invalid(
            "num_sample_steps",
            format!("must be in 1..={num_steps}, got {num_sample_steps}"),
        ));
    }
    let (t, s) = (num_steps as f64, num_sample_steps as f64);
    let steps: Vec<usize> = match spacing {
        StepSpacing::Linspace if num_sample_steps == 1 => vec![num_steps - 1],
        StepSpacing::Linspace => (0..num_sample_steps)
            .map(|i| (i as f64 * (t - 1.0) / (s - 1.0)).round() as usize)
            .collect(),
        StepSpacing::Leading => (0..num_sample_steps)
            .map(|i| i * (num_steps / num_sample_steps))
            .collect(),
        StepSpacing::Trailing => (0..num_sample_steps)
            .rev()
            .map(|i| ((t - i as f64 * t / s).round() as usize).saturating_sub(1))
            .collect(),
    };
    check_sequence(&steps, num_steps)?;
    Ok(steps)
}

fn check_sequence(steps: &[usize], num_steps: usize) -> std::result::Result<(), CoreError> {
    if steps.is_empty() {
        return Err(invalid("ddim_steps", "the step sequence is empty".into()));
    }
    if let Some(&k) = steps.iter().find(|&&k| k >= num_steps) {
        return Err(invalid(
            "ddim_steps",
            format!("step {k} is outside 0..{num_steps}"),
        ));
    }
    if let Some(i) = (1..steps.len()).find(|&i| steps[i] <= steps[i - 1]) {
        return Err(invalid(
            "ddim_steps",
            format!(
                "steps must be strictly increasing: {} then {}",
                steps[i - 1],
                steps[i]
            ),
        ));
    }
    Ok(())
}

fn predict(
    denoiser: &dyn Denoiser,
    x_k: &Tensor,
    k: usize,
    schedule: &NoiseSchedule,
    cond: &Conditioning,
) -> Result<Tensor> {
    let batch = x_k.dims().first().copied().unwrap_or(0);
    let ks = DiffusionSteps::constant(
        DiffusionStep::new(k, schedule.num_steps())?,
        batch,
        schedule.num_steps(),
    )?;
    let eps = denoiser.predict_noise(x_k, &ks, cond)?;
    if eps.shape() != x_k.shape() {
        candle_core::bail!(
            "denoiser returned shape {:?} for x_k of shape {:?}",
            eps.shape(),
            x_k.shape()
        );
    }
    Ok(eps.detach())
}

/// `x_0` implied by `x_k` and the predicted noise, optionally clipped.
fn predict_x0(x_k: &Tensor, eps: &Tensor, alpha_bar: f64, clip: Option<f64>) -> Result<Tensor> {
    let x0 = x_k
        .sub(&eps.affine((1.0 - alpha_bar).sqrt(), 0.0)?)?
        .affine(1.0 / alpha_bar.sqrt(), 0.0)?;
    match clip {
        Some(c) => x0.clamp(-c, c),
        None => Ok(x0),
    }
}

/// One ancestral DDPM step from `x_k` to `x_{k-1}` with the given standard-normal `z`
/// (ignored at `k = 0`, which returns the posterior mean).
///
/// # Shapes
/// - `x_k`, `z`: `(batch, channels, samples)`
/// - returns the shape of `x_k`
pub fn ddpm_step(
    denoiser: &dyn Denoiser,
    x_k: &Tensor,
    k: usize,
    schedule: &NoiseSchedule,
    cond: &Conditioning,
    z: &Tensor,
    opts: &DdpmOptions,
) -> Result<Tensor> {
    check_clip(opts.clip_x0)?;
    let eps = predict(denoiser, x_k, k, schedule, cond)?;
    let x0 = predict_x0(x_k, &eps, schedule.alpha_bar()[k], opts.clip_x0)?;
    let mean = x0
        .affine(schedule.posterior_coef_x0()[k], 0.0)?
        .add(&x_k.affine(schedule.posterior_coef_xk()[k], 0.0)?)?;
    if k == 0 {
        return Ok(mean);
    }
    let var = match opts.variance {
        PosteriorVariance::BetaTilde => schedule.posterior_variance()[k],
        PosteriorVariance::Beta => schedule.betas()[k],
    };
    mean.add(&z.affine(var.sqrt(), 0.0)?)
}

/// One DDIM step from `x_k` to step `k_prev` (`None`: to data, `alpha_bar_prev = 1`), with noise
/// `z` (needed only when `eta > 0`).
///
/// # Shapes
/// - `x_k`, `z`: `(batch, channels, samples)`
/// - returns the shape of `x_k`
#[allow(clippy::too_many_arguments)] // the DDIM update as the paper writes it: every input is a named quantity
pub fn ddim_step(
    denoiser: &dyn Denoiser,
    x_k: &Tensor,
    k: usize,
    k_prev: Option<usize>,
    schedule: &NoiseSchedule,
    cond: &Conditioning,
    eta: f64,
    z: Option<&Tensor>,
    clip_x0: Option<f64>,
) -> Result<Tensor> {
    if !(eta.is_finite() && eta >= 0.0) {
        return Err(invalid("eta", format!("must be finite and >= 0, got {eta}")).into());
    }
    check_clip(clip_x0)?;
    if let Some(p) = k_prev {
        if p >= k {
            return Err(invalid(
                "ddim_steps",
                format!("previous step {p} is not before step {k}"),
            )
            .into());
        }
    }
    let a = schedule.alpha_bar()[k];
    let a_prev = k_prev.map_or(1.0, |p| schedule.alpha_bar()[p]);
    let eps = predict(denoiser, x_k, k, schedule, cond)?;
    let x0 = predict_x0(x_k, &eps, a, clip_x0)?;
    // With clipping, the noise direction is recomputed from the clipped x_0 (as in DDIM's code).
    let eps = if clip_x0.is_some() {
        x_k.sub(&x0.affine(a.sqrt(), 0.0)?)?
            .affine(1.0 / (1.0 - a).sqrt(), 0.0)?
    } else {
        eps
    };
    let sigma = eta
        * ((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
            .max(0.0)
            .sqrt();
    let dir = (1.0 - a_prev - sigma * sigma).max(0.0).sqrt();
    let mut out = x0.affine(a_prev.sqrt(), 0.0)?.add(&eps.affine(dir, 0.0)?)?;
    if sigma > 0.0 {
        match z {
            Some(z) => out = out.add(&z.affine(sigma, 0.0)?)?,
            None => candle_core::bail!("a DDIM step with eta > 0 needs noise z"),
        }
    }
    Ok(out)
}

/// Draws one standard-normal tensor of `x`'s shape, sample by sample from per-sample streams.
pub(crate) fn draw_like(streams: &mut [SeededRng], x: &Tensor) -> Result<Tensor> {
    let per = x.elem_count() / streams.len().max(1);
    let mut v = Vec::with_capacity(x.elem_count());
    for s in streams.iter_mut() {
        v.extend(s.normal_vec(per));
    }
    Tensor::from_vec(v, x.shape(), x.device())?.to_dtype(x.dtype())
}

/// Ancestral DDPM sampling over all `T` steps, from `x_init` (noise at step `T - 1`) to data.
///
/// `streams` holds one random stream per sample (so results do not depend on how a batch is
/// chunked); the per-step noise of sample `i` is drawn from `streams[i]`. Returns the samples and
/// the number of denoiser evaluations (`T`).
///
/// # Shapes
/// - `x_init`: `(batch, channels, samples)`
/// - returns the shape of `x_init`
pub fn ddpm_sample(
    denoiser: &dyn Denoiser,
    x_init: &Tensor,
    cond: &Conditioning,
    schedule: &NoiseSchedule,
    opts: &DdpmOptions,
    streams: &mut [SeededRng],
) -> Result<(Tensor, Nfe)> {
    check_streams(streams, x_init)?;
    let cond = cond.detach();
    let mut x = x_init.detach();
    for k in (0..schedule.num_steps()).rev() {
        let z = if k > 0 {
            draw_like(streams, &x)?
        } else {
            x.zeros_like()?
        };
        x = ddpm_step(denoiser, &x, k, schedule, &cond, &z, opts)?;
    }
    Ok((x, Nfe(schedule.num_steps())))
}

/// DDIM sampling over the increasing step sequence `steps` (see [`ddim_timesteps`]), from
/// `x_init` at the last (noisiest) step to data. Noise (when `eta > 0`) comes from one stream per
/// sample. Returns the samples and the number of denoiser evaluations (`steps.len()`).
///
/// # Shapes
/// - `x_init`: `(batch, channels, samples)`
/// - returns the shape of `x_init`
#[allow(clippy::too_many_arguments)] // mirrors ddim_step plus the schedule and the sub-sequence
pub fn ddim_sample(
    denoiser: &dyn Denoiser,
    x_init: &Tensor,
    cond: &Conditioning,
    schedule: &NoiseSchedule,
    steps: &[usize],
    eta: f64,
    clip_x0: Option<f64>,
    streams: &mut [SeededRng],
) -> Result<(Tensor, Nfe)> {
    check_sequence(steps, schedule.num_steps())?;
    check_streams(streams, x_init)?;
    let cond = cond.detach();
    let mut x = x_init.detach();
    for i in (0..steps.len()).rev() {
        let k_prev = if i == 0 { None } else { Some(steps[i - 1]) };
        let z = if eta > 0.0 && k_prev.is_some() {
            Some(draw_like(streams, &x)?)
        } else {
            None
        };
        x = ddim_step(
            denoiser,
            &x,
            steps[i],
            k_prev,
            schedule,
            &cond,
            eta,
            z.as_ref(),
            clip_x0,
        )?;
    }
    Ok((x, Nfe(steps.len())))
}

fn check_streams(streams: &[SeededRng], x: &Tensor) -> Result<()> {
    let batch = x.dims().first().copied().unwrap_or(0);
    if streams.len() != batch {
        candle_core::bail!("{} random streams for a batch of {batch}", streams.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use candle_core::{DType, Device};

    /// alpha_bar of the linear DDPM schedule (betas 1e-4 .. 0.02, T = 1000), computed
    /// independently with numpy: `np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))` at steps
    /// 0, 99, 499 and 999.
    const ALPHA_BAR_NUMPY: [(usize, f64); 4] = [
        (0, 0.9999),
        (99, 0.89701814567496),
        (499, 0.07858724288177824),
        (999, 4.035829765375676e-05),
    ];

    #[test]
    fn the_linear_schedule_alpha_bar_matches_numpy() {
        let s = NoiseSchedule::ddpm_linear();
        for (k, v) in ALPHA_BAR_NUMPY {
            assert!(
                (s.alpha_bar()[k] - v).abs() <= 1e-10 * v,
                "alpha_bar[{k}] = {} vs numpy {v}",
                s.alpha_bar()[k]
            );
        }
    }

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_vec(v.to_vec(), (1, 1, v.len()), &Device::Cpu).unwrap()
    }

    fn values(x: &Tensor) -> Vec<f64> {
        x.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    /// DDIM, Song et al. 2021 eq. 12, written out on scalars:
    /// x_prev = sqrt(a_prev) (x - sqrt(1 - a) eps) / sqrt(a) + sqrt(1 - a_prev - sigma^2) eps
    ///          + sigma z,  sigma = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev).
    fn ddim_closed_form(x: f64, eps: f64, a: f64, a_prev: f64, eta: f64, z: f64) -> f64 {
        let sigma = eta * ((1.0 - a_prev) / (1.0 - a)).sqrt() * (1.0 - a / a_prev).sqrt();
        let x0 = (x - (1.0 - a).sqrt() * eps) / a.sqrt();
        a_prev.sqrt() * x0 + (1.0 - a_prev - sigma * sigma).sqrt() * eps + sigma * z
    }

    #[test]
    fn the_ddim_step_is_the_closed_form_of_the_ddim_paper() {
        let schedule = NoiseSchedule::ddpm_linear();
        let (xs, es, zs) = (
            [0.3, -1.2, 2.5, 0.0],
            [0.9, -0.4, 1.1, -2.0],
            [0.5, -1.5, 0.25, 1.0],
        );
        let eps = t(&es);
        let den = |x: &Tensor, _: &DiffusionSteps, _: &Conditioning| -> Result<Tensor> {
            eps.broadcast_as(x.shape())?.contiguous()
        };
        // (k, k_prev) with alpha_bar from numpy: the first DDIM step of ddim-10 on T = 1000
        // (999 -> 888 is not in the table, so use pairs of tabulated steps) and the last one
        for ((k, a), prev) in [
            ((999, ALPHA_BAR_NUMPY[3].1), Some(ALPHA_BAR_NUMPY[2])),
            ((499, ALPHA_BAR_NUMPY[2].1), Some(ALPHA_BAR_NUMPY[1])),
            ((99, ALPHA_BAR_NUMPY[1].1), None),
        ] {
            for eta in [0.0, 0.5, 1.0] {
                let got = ddim_step(
                    &den,
                    &t(&xs),
                    k,
                    prev.map(|p| p.0),
                    &schedule,
                    &Conditioning::None,
                    eta,
                    Some(&t(&zs)),
                    None,
                )
                .unwrap();
                let a_prev = prev.map_or(1.0, |p| p.1);
                for (i, g) in values(&got).iter().enumerate() {
                    let want = ddim_closed_form(xs[i], es[i], a, a_prev, eta, zs[i]);
                    assert!(
                        (g - want).abs() <= 1e-9 * (1.0 + want.abs()),
                        "k {k} eta {eta} [{i}]: {g} vs {want}"
                    );
                }
            }
        }
    }

    /// The exact noise prediction for data x_0 ~ N(mu, s^2) (independent per value):
    /// E[eps | x_k] = sqrt(1 - a) (x_k - sqrt(a) mu) / (a s^2 + 1 - a).
    fn gaussian_oracle(
        schedule: &NoiseSchedule,
        mu: f64,
        s: f64,
    ) -> impl Fn(&Tensor, &DiffusionSteps, &Conditioning) -> Result<Tensor> + '_ {
        move |x: &Tensor, k: &DiffusionSteps, _: &Conditioning| {
            let a = schedule.alpha_bar()[k.steps()[0]];
            x.affine(1.0, -a.sqrt() * mu)?
                .affine((1.0 - a).sqrt() / (a * s * s + 1.0 - a), 0.0)
        }
    }

    fn mean_var(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            m,
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0),
        )
    }

    #[test]
    fn with_the_exact_noise_prediction_ddim_and_ddpm_recover_gaussian_data() {
        // x_0 ~ N(1, 0.5^2): a sampler fed the exact eps must end at that law. 4000 values: the
        // Monte-Carlo sd of the mean is 0.5 / sqrt(4000) = 0.008, of the variance
        // 0.25 sqrt(2 / 4000) = 0.0056.
        let schedule = NoiseSchedule::ddpm_linear();
        let (mu, s) = (1.0, 0.5);
        let oracle = gaussian_oracle(&schedule, mu, s);
        let n = 4000;
        let mut rng = SeededRng::new(7);
        let mut streams: Vec<SeededRng> = (0..1).map(|i| rng.derive_indexed("s", i)).collect();
        let init = Tensor::from_vec(rng.normal_vec(n), (1, 1, n), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        for steps in [50, 200] {
            let seq = ddim_timesteps(1000, steps, StepSpacing::Linspace).unwrap();
            let (x, nfe) = ddim_sample(
                &oracle,
                &init,
                &Conditioning::None,
                &schedule,
                &seq,
                0.0,
                None,
                &mut streams,
            )
            .unwrap();
            assert_eq!(nfe.0, steps);
            let (m, v) = mean_var(&values(&x));
            assert!((m - mu).abs() < 0.03, "ddim-{steps}: mean {m}");
            assert!((v - s * s).abs() < 0.03, "ddim-{steps}: variance {v}");
        }
        let (x, _) = ddpm_sample(
            &oracle,
            &init,
            &Conditioning::None,
            &schedule,
            &DdpmOptions::default(),
            &mut streams,
        )
        .unwrap();
        let (m, v) = mean_var(&values(&x));
        assert!(
            (m - mu).abs() < 0.03 && (v - s * s).abs() < 0.03,
            "ddpm: {m} {v}"
        );
    }

    #[test]
    fn ddim_sequences_are_increasing_and_sized() {
        for spacing in [
            StepSpacing::Linspace,
            StepSpacing::Leading,
            StepSpacing::Trailing,
        ] {
            for s in [1usize, 7, 50, 1000] {
                let seq = ddim_timesteps(1000, s, spacing).unwrap();
                assert_eq!(seq.len(), s, "{spacing:?} {s}");
                assert!(seq.windows(2).all(|w| w[0] < w[1]));
                assert!(*seq.last().unwrap() < 1000);
            }
        }
        assert_eq!(
            ddim_timesteps(10, 4, StepSpacing::Linspace).unwrap(),
            vec![0, 3, 6, 9]
        );
        assert_eq!(
            ddim_timesteps(10, 4, StepSpacing::Leading).unwrap(),
            vec![0, 2, 4, 6]
        );
        assert_eq!(
            ddim_timesteps(10, 4, StepSpacing::Trailing).unwrap(),
            vec![2, 4, 7, 9]
        );
        assert_eq!(
            ddim_timesteps(1000, 1000, StepSpacing::Linspace).unwrap(),
            (0..1000).collect::<Vec<_>>()
        );
        assert!(matches!(
            ddim_timesteps(10, 11, StepSpacing::Linspace),
            Err(CoreError::InvalidParameter {
                name: "num_sample_steps",
                ..
            })
        ));
        assert!(check_sequence(&[3, 3], 10).is_err());
        assert!(check_sequence(&[3, 10], 10).is_err());
    }
}
