//! Properties of the DDPM and DDIM samplers: oracle denoisers recover the data, DDIM with
//! `eta = 1` on the full sequence is the ancestral DDPM step, and options are validated.

use candle_core::{Device, Result, Tensor};
use flowfm_core::{
    BetaSchedule, Conditioning, DiffusionSteps, NoiseSchedule, NoiseScheduleConfig, SeededRng,
    Tolerance,
};
use flowfm_sampling::{
    ddim_sample, ddim_step, ddim_timesteps, ddpm_sample, ddpm_step, DdpmOptions, PosteriorVariance,
    StepSpacing,
};

fn data() -> Tensor {
    Tensor::new(
        &[[[0.9f64, -0.3, 0.1, 0.0]], [[-1.0, 0.2, 0.6, 0.4]]],
        &Device::Cpu,
    )
    .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    flowfm_core::tolerance::tensor_to_f64(t).unwrap()
}

/// The exact noise predictor for a point mass at `x0`: eps = (x_k - sqrt(abar) x0) / sqrt(1 - abar).
fn oracle(
    schedule: &NoiseSchedule,
    x0: Tensor,
) -> impl Fn(&Tensor, &DiffusionSteps, &Conditioning) -> Result<Tensor> + '_ {
    move |x: &Tensor, k: &DiffusionSteps, _: &Conditioning| {
        let ab: Vec<f64> = k.steps().iter().map(|&s| schedule.alpha_bar()[s]).collect();
        let a = Tensor::from_vec(
            ab.iter().map(|a| a.sqrt()).collect::<Vec<_>>(),
            (k.batch(), 1, 1),
            x.device(),
        )?;
        let b = Tensor::from_vec(
            ab.iter().map(|a| (1.0 - a).sqrt()).collect::<Vec<_>>(),
            (k.batch(), 1, 1),
            x.device(),
        )?;
        x.sub(&x0.broadcast_mul(&a)?)?.broadcast_div(&b)
    }
}

fn streams(n: usize, seed: u64) -> Vec<SeededRng> {
    (0..n)
        .map(|i| SeededRng::new(seed).derive_indexed("s", i as u64))
        .collect()
}

fn small_schedule() -> NoiseSchedule {
    NoiseSchedule::new(&NoiseScheduleConfig {
        num_steps: 100,
        betas: BetaSchedule::COSINE,
    })
    .unwrap()
}

#[test]
fn ddim_with_an_oracle_denoiser_lands_on_the_data_for_any_subsequence() {
    let s = small_schedule();
    let field = oracle(&s, data());
    let x_init = SeededRng::new(1)
        .normal_tensor((2, 1, 4), candle_core::DType::F64, &Device::Cpu)
        .unwrap();
    for (n, spacing) in [
        (1, StepSpacing::Linspace),
        (7, StepSpacing::Leading),
        (20, StepSpacing::Trailing),
    ] {
        let seq = ddim_timesteps(100, n, spacing).unwrap();
        for eta in [0.0, 0.7] {
            let (out, nfe) = ddim_sample(
                &field,
                &x_init,
                &Conditioning::None,
                &s,
                &seq,
                eta,
                None,
                &mut streams(2, 3),
            )
            .unwrap();
            assert_eq!(nfe.0, n);
            Tolerance::new(1e-9, 1e-9).assert_close(&values(&out), &values(&data()));
        }
    }
}

#[test]
fn ddpm_with_an_oracle_denoiser_lands_on_the_data() {
    let s = small_schedule();
    let field = oracle(&s, data());
    let x_init = SeededRng::new(2)
        .normal_tensor((2, 1, 4), candle_core::DType::F64, &Device::Cpu)
        .unwrap();
    for variance in [PosteriorVariance::BetaTilde, PosteriorVariance::Beta] {
        let opts = DdpmOptions {
            variance,
            clip_x0: None,
        };
        let (out, nfe) = ddpm_sample(
            &field,
            &x_init,
            &Conditioning::None,
            &s,
            &opts,
            &mut streams(2, 4),
        )
        .unwrap();
        assert_eq!(nfe.0, 100);
        Tolerance::new(1e-9, 1e-9).assert_close(&values(&out), &values(&data()));
    }
}

#[test]
fn ddim_with_eta_one_on_consecutive_steps_is_the_ancestral_ddpm_step() {
    let s = NoiseSchedule::ddpm_linear();
    let eps = |x: &Tensor, _: &DiffusionSteps, _: &Conditioning| -> Result<Tensor> {
        x.tanh()?.affine(0.8, 0.1)
    };
    let x = data();
    let z = SeededRng::new(9)
        .normal_tensor((2, 1, 4), candle_core::DType::F64, &Device::Cpu)
        .unwrap();
    let opts = DdpmOptions::default();
    for k in [1usize, 300, 999] {
        let a = ddim_step(
            &eps,
            &x,
            k,
            Some(k - 1),
            &s,
            &Conditioning::None,
            1.0,
            Some(&z),
            None,
        )
        .unwrap();
        let b = ddpm_step(&eps, &x, k, &s, &Conditioning::None, &z, &opts).unwrap();
        Tolerance::new(1e-10, 1e-12).assert_tensors_close(&a, &b);
    }
}

#[test]
fn clipping_bounds_the_predicted_data() {
    let s = small_schedule();
    let big = data().affine(10.0, 0.0).unwrap();
    let field = oracle(&s, big);
    let x_init = SeededRng::new(5)
        .normal_tensor((2, 1, 4), candle_core::DType::F64, &Device::Cpu)
        .unwrap();
    let seq = ddim_timesteps(100, 10, StepSpacing::Linspace).unwrap();
    let (out, _) = ddim_sample(
        &field,
        &x_init,
        &Conditioning::None,
        &s,
        &seq,
        0.0,
        Some(1.0),
        &mut streams(2, 0),
    )
    .unwrap();
    // x_0 = 10 * data, clipped to [-1, 1]: the last step returns the clipped prediction.
    let expected: Vec<f64> = values(&data())
        .iter()
        .map(|v| (10.0 * v).clamp(-1.0, 1.0))
        .collect();
    Tolerance::new(1e-9, 1e-9).assert_close(&values(&out), &expected);
}

#[test]
fn bad_diffusion_sampler_inputs_are_errors() {
    let s = small_schedule();
    let eps =
        |x: &Tensor, _: &DiffusionSteps, _: &Conditioning| -> Result<Tensor> { x.zeros_like() };
    let x = data();
    let c = Conditioning::None;
    assert!(ddim_step(&eps, &x, 10, Some(10), &s, &c, 0.0, None, None).is_err());
    assert!(ddim_step(&eps, &x, 10, Some(5), &s, &c, -1.0, None, None).is_err());
    assert!(
        ddim_step(&eps, &x, 10, Some(5), &s, &c, 0.5, None, None).is_err(),
        "eta > 0 without z"
    );
    assert!(ddim_sample(&eps, &x, &c, &s, &[5, 3], 0.0, None, &mut streams(2, 0)).is_err());
    assert!(ddim_sample(&eps, &x, &c, &s, &[5, 100], 0.0, None, &mut streams(2, 0)).is_err());
    assert!(ddpm_sample(
        &eps,
        &x,
        &c,
        &s,
        &DdpmOptions::default(),
        &mut streams(3, 0)
    )
    .is_err());
    let clip = DdpmOptions {
        clip_x0: Some(0.0),
        ..DdpmOptions::default()
    };
    assert!(ddpm_step(&eps, &x, 3, &s, &c, &x, &clip).is_err());
}
