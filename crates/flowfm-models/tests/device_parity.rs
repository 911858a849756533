//! Device parity: HARNet10, the U-Net, one FlowFM training step (encoder + U-Net, flow-matching
//! loss, backward, AdamW) and one DDPM step give the CPU kernels' results, for the same weights
//! and the same noise, on
//!
//! - the CPU with the portable path forced (what a GPU computes, checked on every machine), and
//! - a CUDA GPU when one opens (`--features cuda`; a CPU build counts the test as ignored, a cuda
//!   build without a GPU skips it, or fails it under `FLOWFM_REQUIRE_GPU=1`).
//!
//! Compared: outputs, the loss, every parameter's gradient, and every parameter after the AdamW
//! step. In f64, where the arithmetic differs only in summation order (tolerance 1e-8 relative);
//! one AdamW step in f32 would amplify rounding noise in gradients that are zero in exact
//! arithmetic (a convolution bias before a batch norm) into a full `lr * sign` step.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::paths::LinearPath;
use flowfm_core::testing::skip_without_gpu;
use flowfm_core::tolerance::tensor_to_f64;
use flowfm_core::{
    Conditioning, FlowTimes, ForwardMode, NoiseSchedule, NoiseScheduleConfig, SeededRng, Tolerance,
};
use flowfm_models::{DiffusionUNet, EncoderConfig, FlowUNet, HarNet, UNetConfig};
use flowfm_objectives::ddpm::{ddpm_loss, sample_diffusion_steps};
use flowfm_objectives::flow::{flow_matching_loss, sample_flow_times, TimeSampling};
use flowfm_ops::norm::is_buffer_name;
use flowfm_ops::optim::{AdamW, AdamWConfig};
use flowfm_ops::with_portable_ops;

const BATCH: usize = 4;

/// Named values of a computation, for a comparison that says which one differs.
type Named = Vec<(String, Vec<f64>)>;

fn named_params(maps: &[(&str, &VarMap)]) -> Vec<(String, candle_core::Var)> {
    let mut out = Vec::new();
    for (prefix, vm) in maps {
        let data = vm.data().lock().unwrap();
        out.extend(
            data.iter()
                .filter(|(n, _)| !is_buffer_name(n))
                .map(|(n, v)| (format!("{prefix}.{n}"), v.clone())),
        );
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The loss, every parameter's gradient, then every parameter after one AdamW step.
fn step_and_report(
    loss: &Tensor,
    params: &[(String, candle_core::Var)],
    out: &mut Named,
) -> Result<()> {
    out.push(("loss".into(), tensor_to_f64(loss)?));
    let grads = loss.backward()?;
    for (n, v) in params {
        // A parameter the loss does not reach (the U-Net's null embedding when conditioned on
        // `z`) has no gradient; it is reported as such, and both sides must agree.
        let g = match grads.get(v) {
            Some(g) => tensor_to_f64(g)?,
            None => Vec::new(),
        };
        out.push((format!("grad {n}"), g));
    }
    let mut opt = AdamW::new(params.to_vec(), AdamWConfig::default())?;
    opt.step(&grads, 1e-3)?;
    for (n, v) in params {
        out.push((format!("after step {n}"), tensor_to_f64(v.as_tensor())?));
    }
    Ok(())
}

fn encoder_config() -> EncoderConfig {
    EncoderConfig::harnet10().with_width(0.25)
}

fn unet_config() -> UNetConfig {
    UNetConfig::small().with_cond_dim(encoder_config().repr_dim())
}

fn batch(dev: &Device, dtype: DType) -> Result<Tensor> {
    SeededRng::new(11).normal_tensor((BATCH, 3, 300), dtype, dev)
}

/// HARNet10 (width 0.25): representations in training and evaluation mode, and one training
/// step on `mean(z^2)`.
fn encoder_run(dev: &Device, dtype: DType) -> Result<Named> {
    let vm = VarMap::new();
    let net = HarNet::new(encoder_config(), seeded_var_builder(&vm, 1, dtype, dev))?;
    let x = batch(dev, dtype)?;
    let z = net.forward(&x, ForwardMode::Train)?;
    let mut out = vec![("z (train)".to_string(), tensor_to_f64(&z)?)];
    let loss = z.sqr()?.mean_all()?;
    step_and_report(&loss, &named_params(&[("encoder", &vm)]), &mut out)?;
    out.push(("z (eval)".into(), tensor_to_f64(&net.encode_detached(&x)?)?));
    Ok(out)
}

/// The small U-Net as a velocity field: the velocity at t = 0.3 and a training step on its
/// squared norm.
fn unet_run(dev: &Device, dtype: DType) -> Result<Named> {
    let vm = VarMap::new();
    let cfg = unet_config();
    let cond_dim = cfg.cond_dim;
    let net = FlowUNet::new(cfg, seeded_var_builder(&vm, 2, dtype, dev))?;
    let mut rng = SeededRng::new(12);
    let x = batch(dev, dtype)?;
    let z = rng.normal_tensor((BATCH, cond_dim), dtype, dev)?;
    let t = FlowTimes::from_values(&[0.3; BATCH], dtype, dev)?;
    let cond = Conditioning::Representation(z);
    let v = net.forward(&x, &t, &cond)?;
    let mut out = vec![("velocity".to_string(), tensor_to_f64(&v)?)];
    step_and_report(
        &v.sqr()?.mean_all()?,
        &named_params(&[("unet", &vm)]),
        &mut out,
    )?;
    out.push((
        "velocity (detached)".into(),
        tensor_to_f64(&net.velocity_detached(&x, &t, &cond)?)?,
    ));
    Ok(out)
}

/// One FlowFM pretraining step: HARNet10 encodes the batch, the U-Net conditioned on `z` is
/// trained with the flow-matching loss on the linear path; both networks take the AdamW step.
fn flowfm_step(dev: &Device, dtype: DType) -> Result<Named> {
    let (enc_vm, gen_vm) = (VarMap::new(), VarMap::new());
    let encoder = HarNet::new(encoder_config(), seeded_var_builder(&enc_vm, 3, dtype, dev))?;
    let field = FlowUNet::new(unet_config(), seeded_var_builder(&gen_vm, 4, dtype, dev))?;
    let x = batch(dev, dtype)?;
    let mut rng = SeededRng::new(13);
    let z = encoder.forward(&x, ForwardMode::Train)?;
    let x_0 = rng.normal_tensor(x.shape(), dtype, dev)?;
    let t = sample_flow_times(&mut rng, BATCH, TimeSampling::Uniform, dtype, dev)?;
    let loss = flow_matching_loss(
        &field,
        &x,
        &x_0,
        &t,
        &Conditioning::Representation(z),
        &LinearPath::new(0.0)?,
    )?;
    let mut out = Vec::new();
    let params = named_params(&[("encoder", &enc_vm), ("generator", &gen_vm)]);
    step_and_report(&loss, &params, &mut out)?;
    Ok(out)
}

/// One DDPM pretraining step: the same, with the noise-prediction loss at uniformly drawn
/// steps of the default 1000-step schedule.
fn ddpm_step(dev: &Device, dtype: DType) -> Result<Named> {
    let (enc_vm, gen_vm) = (VarMap::new(), VarMap::new());
    let encoder = HarNet::new(encoder_config(), seeded_var_builder(&enc_vm, 5, dtype, dev))?;
    let denoiser = DiffusionUNet::new(unet_config(), seeded_var_builder(&gen_vm, 6, dtype, dev))?;
    let schedule = NoiseSchedule::new(&NoiseScheduleConfig::default())?;
    let x = batch(dev, dtype)?;
    let mut rng = SeededRng::new(14);
    let z = encoder.forward(&x, ForwardMode::Train)?;
    let eps = rng.normal_tensor(x.shape(), dtype, dev)?;
    let k = sample_diffusion_steps(&mut rng, BATCH, &schedule)?;
    let loss = ddpm_loss(
        &denoiser,
        &x,
        &eps,
        &k,
        &schedule,
        &Conditioning::Representation(z),
    )?;
    let mut out = Vec::new();
    let params = named_params(&[("encoder", &enc_vm), ("generator", &gen_vm)]);
    step_and_report(&loss, &params, &mut out)?;
    Ok(out)
}

type Run = fn(&Device, DType) -> Result<Named>;

const RUNS: [(&str, Run); 4] = [
    ("encoder", encoder_run),
    ("unet", unet_run),
    ("flowfm step", flowfm_step),
    ("ddpm step", ddpm_step),
];

#[track_caller]
fn assert_same(what: &str, got: &Named, want: &Named, tol: Tolerance) {
    assert_eq!(
        got.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        want.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "{what}: different values reported"
    );
    assert!(want.len() > 3, "{what}: nothing compared");
    for ((name, a), (_, b)) in got.iter().zip(want) {
        if let Err(m) = tol.check(a, b) {
            panic!("{what}: {name} differs: {m}");
        }
    }
}

#[test]
fn the_portable_path_gives_the_cpu_kernels_results() {
    for (what, run) in RUNS {
        let want = run(&Device::Cpu, DType::F64).unwrap();
        let got = with_portable_ops(|| run(&Device::Cpu, DType::F64)).unwrap();
        // The two paths sum in different orders, so some value differs in its last bits: equal
        // bits everywhere would mean the portable path was not taken.
        assert!(
            got != want,
            "{what}: the portable path gave bit-identical results; was it taken?"
        );
        assert_same(
            &format!("{what}, cpu portable vs cpu kernels"),
            &got,
            &want,
            Tolerance::new(1e-8, 1e-10),
        );
    }
}

#[test]
fn the_comparison_sees_a_changed_weight() {
    // The same run with a different initialisation seed must not pass as equal.
    let want = encoder_run(&Device::Cpu, DType::F64).unwrap();
    let other = {
        let vm = VarMap::new();
        let net = HarNet::new(
            encoder_config(),
            seeded_var_builder(&vm, 99, DType::F64, &Device::Cpu),
        )
        .unwrap();
        let x = batch(&Device::Cpu, DType::F64).unwrap();
        let z = net.forward(&x, ForwardMode::Train).unwrap();
        let mut out = vec![("z (train)".to_string(), tensor_to_f64(&z).unwrap())];
        step_and_report(
            &z.sqr().unwrap().mean_all().unwrap(),
            &named_params(&[("encoder", &vm)]),
            &mut out,
        )
        .unwrap();
        out.push((
            "z (eval)".into(),
            tensor_to_f64(&net.encode_detached(&x).unwrap()).unwrap(),
        ));
        out
    };
    let caught = std::panic::catch_unwind(|| {
        assert_same(
            "seed 99 vs seed 1",
            &other,
            &want,
            Tolerance::new(1e-8, 1e-10),
        )
    });
    assert!(caught.is_err());
}

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "needs a GPU: a `--features cuda` build on a machine with one (counted as ignored here)"
)]
fn the_gpu_gives_the_cpu_results() {
    let Some(gpu) = flowfm_core::device::test_gpu() else {
        skip_without_gpu("the_gpu_gives_the_cpu_results");
        return;
    };
    for (what, run) in RUNS {
        let want = run(&Device::Cpu, DType::F64).unwrap();
        let got = run(&gpu, DType::F64).unwrap();
        assert_same(
            &format!("{what}, gpu vs cpu (f64)"),
            &got,
            &want,
            Tolerance::new(1e-8, 1e-10),
        );
    }
    // f32, what training runs in: the forward values (no optimiser step to amplify rounding).
    for (what, run) in RUNS {
        let want = run(&Device::Cpu, DType::F32).unwrap();
        let got = run(&gpu, DType::F32).unwrap();
        let pick = |r: &Named| -> Named {
            r.iter()
                .filter(|(n, _)| !n.starts_with("after step") && !n.starts_with("grad"))
                .cloned()
                .collect()
        };
        let (got, want) = (pick(&got), pick(&want));
        for ((name, a), (_, b)) in got.iter().zip(&want) {
            if let Err(m) = Tolerance::new(1e-3, 1e-4).check(a, b) {
                panic!("{what}, gpu vs cpu (f32): {name} differs: {m}");
            }
        }
    }
}
