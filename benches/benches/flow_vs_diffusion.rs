//! FlowFM vs the diffusion baseline on the same networks: HARNet10 at width 0.25 (256-d
//! representation) and `UNetConfig::small()` conditioned on it, CPU, f32.
//!
//! - `joint_train_step/{flowfm,diffusion}`: one pretraining step on a batch of 64 windows, as
//!   `flowfm::train::pretrain` does it: encoder forward (train mode), noise and times from a seeded
//!   stream, flow-matching or DDPM loss, backward through generator and encoder, gradient
//!   clipping at 1, AdamW, EMA of the generator. Throughput in windows/s.
//! - `generate/*`: sampling 16 windows conditioned on representations: flow Euler 8 steps
//!   (NFE 8), DDIM 50 steps (NFE 50), and one U-Net forward (`unet_forward`, NFE 1). DDPM over
//!   T = 1000 steps is 1000 U-Net forwards plus a cheap update each, so its time per window is
//!   about 1000 x `unet_forward`; it is only run when `FLOWFM_BENCH_DDPM=1` (about 1000 times
//!   the `unet_forward` time per iteration). Throughput in windows/s.
//!
//! Weights are seeded random initialisations: time per step does not depend on their values.
//! `CANDLE_NUM_THREADS` defaults to 1, as in the `flowfm` binary.
//!
//! `cargo bench -p flowfm-benches --bench flow_vs_diffusion`

// criterion_group! and criterion_main! generate functions without docs.
#![allow(missing_docs)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use flowfm_core::init::seeded_var_builder;
use flowfm_core::paths::LinearPath;
use flowfm_core::schedule::NoiseSchedule;
use flowfm_core::{Conditioning, ForwardMode, SeededRng};
use flowfm_models::unet::{DiffusionUNet, FlowUNet, UNetConfig};
use flowfm_models::{EncoderConfig, HarNet};
use flowfm_objectives::ddpm::{ddpm_loss, sample_diffusion_steps};
use flowfm_objectives::flow::{flow_matching_loss, sample_flow_times, TimeSampling};
use flowfm_ops::optim::{clip_grad_norm, AdamW, AdamWConfig, Ema};
use flowfm_sampling::{
    generate_diffusion, generate_flow, DdimOptions, DdpmOptions, DiffusionMethod, GenerateOptions,
    OdeMethod, SampleShape, TimeGrid,
};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TRAIN_BATCH: usize = 64;
const GEN_BATCH: usize = 16;
const WIDTH: f64 = 0.25;

fn single_threaded_elementwise() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Synthetic windows: per-channel sinusoids of random frequency and phase plus noise.
fn windows(n: usize, rng: &mut SeededRng) -> Tensor {
    let mut v = Vec::with_capacity(n * 900);
    for _ in 0..n {
        let f = rng.uniform_range(0.3, 4.0);
        let phase = rng.uniform_range(0.0, std::f64::consts::TAU);
        for c in 0..3 {
            for s in 0..300 {
                let t = s as f64 / 30.0;
                let g = if c == 2 { 1.0 } else { 0.0 };
                let x = (std::f64::consts::TAU * f * t + phase + c as f64).sin() * 0.5 + g;
                v.push((x + 0.05 * rng.normal()) as f32);
            }
        }
    }
    Tensor::from_vec(v, (n, 3, 300), &Device::Cpu).expect("window tensor")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Flow,
    Diffusion,
}

struct Setup {
    encoder: HarNet,
    flow: Option<FlowUNet>,
    denoiser: Option<DiffusionUNet>,
    trainable: Vec<(String, Var)>,
    generator: Vec<(String, Var)>,
}

fn setup(method: Method) -> Setup {
    let dev = Device::Cpu;
    let enc_vars = VarMap::new();
    let encoder = HarNet::new(
        EncoderConfig::harnet10().with_width(WIDTH),
        seeded_var_builder(&enc_vars, 1, DType::F32, &dev),
    )
    .expect("encoder");
    let gen_vars = VarMap::new();
    let vb = seeded_var_builder(&gen_vars, 2, DType::F32, &dev);
    let cfg = UNetConfig::small();
    let (flow, denoiser) = match method {
        Method::Flow => (Some(FlowUNet::new(cfg, vb).expect("unet")), None),
        Method::Diffusion => (None, Some(DiffusionUNet::new(cfg, vb).expect("unet"))),
    };
    let named = |prefix: &str, vm: &VarMap| -> Vec<(String, Var)> {
        let data = vm.data().lock().expect("varmap");
        let mut v: Vec<(String, Var)> = data
            .iter()
            .filter(|(n, _)| !flowfm_ops::norm::is_buffer_name(n))
            .map(|(n, v)| (format!("{prefix}.{n}"), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let generator = named("generator", &gen_vars);
    let mut trainable = named("encoder", &enc_vars);
    trainable.extend(generator.iter().cloned());
    Setup {
        encoder,
        flow,
        denoiser,
        trainable,
        generator,
    }
}

fn bench_train_step(c: &mut Criterion) {
    single_threaded_elementwise();
    let mut group = c.benchmark_group("joint_train_step");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(TRAIN_BATCH as u64));
    let x = windows(TRAIN_BATCH, &mut SeededRng::new(7));
    let schedule = NoiseSchedule::ddpm_linear();
    let path = LinearPath::new(0.0).expect("path");
    for (name, method) in [("flowfm", Method::Flow), ("diffusion", Method::Diffusion)] {
        let s = setup(method);
        let vars: Vec<Var> = s.trainable.iter().map(|(_, v)| v.clone()).collect();
        let mut opt = AdamW::new(s.trainable.clone(), AdamWConfig::default()).expect("adamw");
        let mut ema = Ema::new(&s.generator, 0.999).expect("ema");
        let root = SeededRng::new(3);
        let mut step = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut rng = root.derive_indexed("step", step);
                step += 1;
                let z = s.encoder.forward(&x, ForwardMode::Train).expect("encode");
                let cond = Conditioning::Representation(z);
                let noise = rng
                    .normal_tensor(x.shape(), DType::F32, x.device())
                    .expect("noise");
                let loss = match method {
                    Method::Flow => {
                        let t = sample_flow_times(
                            &mut rng,
                            TRAIN_BATCH,
                            TimeSampling::Uniform,
                            DType::F32,
                            x.device(),
                        )
                        .expect("times");
                        let field = s.flow.as_ref().expect("flow");
                        flow_matching_loss(field, &x, &noise, &t, &cond, &path).expect("loss")
                    }
                    Method::Diffusion => {
                        let k = sample_diffusion_steps(&mut rng, TRAIN_BATCH, &schedule)
                            .expect("steps");
                        let den = s.denoiser.as_ref().expect("denoiser");
                        ddpm_loss(den, &x, &noise, &k, &schedule, &cond).expect("loss")
                    }
                };
                let mut grads = loss.backward().expect("backward");
                clip_grad_norm(&mut grads, &vars, Some(1.0)).expect("clip");
                opt.step(&grads, 1e-4).expect("adamw step");
                ema.update().expect("ema");
            })
        });
    }
    group.finish();
}

fn bench_generation(c: &mut Criterion) {
    single_threaded_elementwise();
    let mut group = c.benchmark_group("generate");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(GEN_BATCH as u64));
    let mut rng = SeededRng::new(11);
    let x = windows(GEN_BATCH, &mut rng);
    let flow = setup(Method::Flow);
    let diffusion = setup(Method::Diffusion);
    let cond = Conditioning::Representation(flow.encoder.encode_detached(&x).expect("encode"));
    let shape = SampleShape {
        batch: GEN_BATCH,
        channels: 3,
        samples: 300,
    };
    let opts = GenerateOptions::default();
    let schedule = NoiseSchedule::ddpm_linear();
    let field = flow.flow.as_ref().expect("flow");
    let den = diffusion.denoiser.as_ref().expect("denoiser");

    let grid = TimeGrid::noise_to_data(8).expect("grid");
    group.bench_function("flow_euler_8", |b| {
        let mut rng = SeededRng::new(1);
        b.iter(|| {
            generate_flow(
                &field.detached(),
                &cond,
                shape,
                &grid,
                &OdeMethod::Euler,
                &opts,
                &mut rng,
            )
            .expect("flow generation")
        })
    });
    let ddim = DiffusionMethod::Ddim(DdimOptions {
        num_sample_steps: 50,
        ..DdimOptions::default()
    });
    group.bench_function("diffusion_ddim_50", |b| {
        let mut rng = SeededRng::new(1);
        b.iter(|| {
            generate_diffusion(
                &den.detached(),
                &cond,
                shape,
                &schedule,
                &ddim,
                &opts,
                &mut rng,
            )
            .expect("ddim generation")
        })
    });
    let x_t = SeededRng::new(5)
        .normal_tensor((GEN_BATCH, 3, 300), DType::F32, &Device::Cpu)
        .expect("x_t");
    let t = flowfm_core::FlowTimes::from_values(&[0.5; GEN_BATCH], DType::F32, &Device::Cpu)
        .expect("times");
    group.bench_function("unet_forward", |b| {
        b.iter(|| field.velocity_detached(&x_t, &t, &cond).expect("forward"))
    });
    if std::env::var("FLOWFM_BENCH_DDPM").is_ok_and(|v| v == "1") {
        let ddpm = DiffusionMethod::Ddpm(DdpmOptions::default());
        group.bench_function("diffusion_ddpm_1000", |b| {
            let mut rng = SeededRng::new(1);
            b.iter(|| {
                generate_diffusion(
                    &den.detached(),
                    &cond,
                    shape,
                    &schedule,
                    &ddpm,
                    &opts,
                    &mut rng,
                )
                .expect("ddpm generation")
            })
        });
    }
    group.finish();
}

/// Every benchmark of this file (written out so the generated function needs no docs).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench_train_step(&mut c);
    bench_generation(&mut c);
}

criterion_main!(benches);
