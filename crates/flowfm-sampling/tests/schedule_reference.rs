//! Noise schedules and one DDIM / DDPM step against reference values.
//!
//! The numbers below were produced by `tests/fixtures/make_schedule_reference.py` (numpy,
//! float64, written from the papers' formulas independently of the Rust code):
//! `python3 tests/fixtures/make_schedule_reference.py`, output pasted verbatim.

use candle_core::{Device, Result, Tensor};
use flowfm_core::{
    BetaSchedule, Conditioning, DiffusionSteps, NoiseSchedule, NoiseScheduleConfig, Tolerance,
};
use flowfm_sampling::{ddim_step, ddpm_step, DdpmOptions, PosteriorVariance};

const IDX: [usize; 9] = [0, 1, 9, 99, 249, 499, 749, 998, 999];

// alpha_bar linear T=1000 at [0, 1, 9, 99, 249, 499, 749, 998, 999]
const LINEAR: [f64; 9] = [
    0.9999,
    0.9997800920720721,
    0.9981052047858344,
    0.89701814567496,
    0.5240853738253606,
    0.07858724288177824,
    0.0033505504389367744,
    4.118193638138445e-05,
    4.035829765375676e-05,
];
// alpha_bar scaled_linear T=1000 at [0, 1, 9, 99, 249, 499, 749, 998, 999]
const SCALED_LINEAR: [f64; 9] = [
    0.99915,
    0.9982960278384514,
    0.9913210885345622,
    0.8954627734950016,
    0.6754324137251241,
    0.27766965045646763,
    0.056623491598269717,
    0.004716698899875748,
    0.004660098513077238,
];
// alpha_bar cosine T=1000 at [0, 1, 9, 99, 249, 499, 749, 998, 999]
const COSINE: [f64; 9] = [
    0.999958715775178,
    0.9999125759273678,
    0.9993687184016583,
    0.9720927371139696,
    0.847012161326905,
    0.4938435904406382,
    0.14427210238573596,
    2.4287669070348544e-06,
    2.4287669070348567e-09,
];
// ddim k=500 -> 480 eta=0
const DDIM_ETA0: [f64; 6] = [
    0.2445130167263001,
    -1.2780162641760475,
    2.0548482449053025,
    -0.05453811715542878,
    0.6481922288808343,
    -0.4537756510543106,
];
// ddim k=500 -> 480 eta=0.5 with z
const DDIM_ETA_HALF: [f64; 6] = [
    0.3308876655195428,
    -1.3203981624129995,
    2.2318678137893087,
    -0.3814852967814966,
    0.6423207219709308,
    -0.2882677276071923,
];
// ddim k=20 -> data (alpha_bar_prev = 1)
const DDIM_TO_DATA: [f64; 6] = [
    0.2758924082831863,
    -1.1313622941699009,
    1.9325096779390896,
    -0.0015879626802971188,
    0.6494653109045136,
    -0.37192770486460297,
];
// ddpm k=500 -> 499 beta_tilde with z
const DDPM_STEP: [f64; 6] = [
    0.3432727856126125,
    -1.2265971412082717,
    2.0955546577657036,
    -0.1556489204454936,
    0.7015261837639155,
    -0.3229865115949242,
];

/// Schedules agree to ~1e-12 relative: cumulative products of 1000 factors in a different order.
const TOL: Tolerance = Tolerance::new(1e-11, 1e-15);

fn alpha_bar_at(betas: BetaSchedule) -> Vec<f64> {
    let s = NoiseSchedule::new(&NoiseScheduleConfig {
        num_steps: 1000,
        betas,
    })
    .unwrap();
    IDX.iter().map(|&k| s.alpha_bar()[k]).collect()
}

#[test]
fn linear_alpha_bar_matches_ho_et_al() {
    TOL.assert_close(&alpha_bar_at(BetaSchedule::LINEAR_DDPM), &LINEAR);
}

#[test]
fn scaled_linear_alpha_bar_matches_reference() {
    let b = BetaSchedule::ScaledLinear {
        beta_start: 0.00085,
        beta_end: 0.012,
    };
    TOL.assert_close(&alpha_bar_at(b), &SCALED_LINEAR);
}

#[test]
fn cosine_alpha_bar_matches_nichol_and_dhariwal() {
    TOL.assert_close(&alpha_bar_at(BetaSchedule::COSINE), &COSINE);
}

fn x() -> Tensor {
    Tensor::new(&[[[0.3f64, -1.2, 2.0]], [[0.0, 0.7, -0.4]]], &Device::Cpu).unwrap()
}

fn z() -> Tensor {
    Tensor::new(&[[[0.5f64, -0.25, 1.0]], [[-1.5, 0.1, 0.8]]], &Device::Cpu).unwrap()
}

/// The analytic "denoiser" of the fixture: eps(x, k) = sin(x) + k / 1000.
fn eps_fn(x: &Tensor, k: &DiffusionSteps, _: &Conditioning) -> Result<Tensor> {
    let ks: Vec<f64> = k.steps().iter().map(|&s| s as f64 / 1000.0).collect();
    let ks = Tensor::from_vec(ks, (k.batch(), 1, 1), x.device())?;
    x.sin()?.broadcast_add(&ks)
}

fn values(t: &Tensor) -> Vec<f64> {
    flowfm_core::tolerance::tensor_to_f64(t).unwrap()
}

const STEP_TOL: Tolerance = Tolerance::new(1e-10, 1e-12);

#[test]
fn ddim_steps_match_song_et_al_eq_12() {
    let s = NoiseSchedule::ddpm_linear();
    let c = Conditioning::None;
    let out = ddim_step(&eps_fn, &x(), 500, Some(480), &s, &c, 0.0, None, None).unwrap();
    STEP_TOL.assert_close(&values(&out), &DDIM_ETA0);
    let zz = z();
    let out = ddim_step(&eps_fn, &x(), 500, Some(480), &s, &c, 0.5, Some(&zz), None).unwrap();
    STEP_TOL.assert_close(&values(&out), &DDIM_ETA_HALF);
    let out = ddim_step(&eps_fn, &x(), 20, None, &s, &c, 0.0, None, None).unwrap();
    STEP_TOL.assert_close(&values(&out), &DDIM_TO_DATA);
}

#[test]
fn ddpm_step_matches_ho_et_al_algorithm_2() {
    let s = NoiseSchedule::ddpm_linear();
    let opts = DdpmOptions {
        variance: PosteriorVariance::BetaTilde,
        clip_x0: None,
    };
    let out = ddpm_step(&eps_fn, &x(), 500, &s, &Conditioning::None, &z(), &opts).unwrap();
    STEP_TOL.assert_close(&values(&out), &DDPM_STEP);
}
