//! The conditional U-Net: parameter counts, shapes at L = 300, length policies, conditioning,
//! the flow/diffusion time conventions and the graph-free sampling path.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use flowfm_core::{
    Conditioning, Denoiser, DiffusionSteps, FlowTimes, SeededRng, Tolerance, VelocityField,
};
use flowfm_models::{
    count_parameters, trainable_vars, DiffusionUNet, Downsampling, FlowUNet, LengthPolicy,
    UNetConfig,
};

/// Parameter count of the U-Net from its description (written independently of the code).
fn expected_params(cfg: &UNetConfig) -> usize {
    let k = cfg.kernel_size;
    let e = cfg.time_embed_dim + cfg.cond_embed_dim;
    let conv = |ci: usize, co: usize, k: usize| ci * co * k + co;
    let lin = |i: usize, o: usize| i * o + o;
    let block = |ci: usize, co: usize| {
        2 * ci
            + conv(ci, co, k)
            + lin(e, 2 * co)
            + 2 * co
            + conv(co, co, k)
            + if ci == co { 0 } else { conv(ci, co, 1) }
    };
    let b = cfg.base_channels;
    let chans: Vec<usize> = cfg.channel_mults.iter().map(|m| m * b).collect();
    let mut n = conv(cfg.in_channels, b, k)
        + lin(b, cfg.time_embed_dim)
        + lin(cfg.time_embed_dim, cfg.time_embed_dim)
        + cfg.cond_embed_dim;
    if cfg.cond_dim > 0 {
        n += lin(cfg.cond_dim, cfg.cond_embed_dim) + lin(cfg.cond_embed_dim, cfg.cond_embed_dim);
    }
    let mut ch = b;
    for (i, &c) in chans.iter().enumerate() {
        for _ in 0..cfg.res_blocks {
            n += block(ch, c);
            ch = c;
        }
        if i + 1 < chans.len() && cfg.downsampling == Downsampling::StridedConv {
            n += conv(c, c, 3);
        }
    }
    n += 2 * block(ch, ch);
    for (i, &c) in chans.iter().enumerate().rev() {
        n += block(ch + c, c);
        n += (cfg.res_blocks - 1) * block(c, c);
        ch = c;
        if i > 0 {
            n += conv(c, c, k);
        }
    }
    n + 2 * ch + conv(ch, cfg.in_channels, k)
}

fn tiny() -> UNetConfig {
    UNetConfig {
        in_channels: 3,
        base_channels: 8,
        channel_mults: vec![1, 2],
        res_blocks: 1,
        time_embed_dim: 16,
        cond_dim: 6,
        cond_embed_dim: 8,
        groups: 4,
        kernel_size: 3,
        downsampling: Downsampling::Blur,
        length_policy: LengthPolicy::Exact,
        time_scale: 1000.0,
    }
}

fn times(ts: &[f64]) -> FlowTimes {
    FlowTimes::from_values(ts, DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn default_generator_is_paper_scale_and_counts_match_the_description() {
    let mut strided = UNetConfig::small();
    strided.downsampling = Downsampling::StridedConv;
    let mut uncond = tiny();
    uncond.cond_dim = 0;
    for cfg in [
        UNetConfig::default(),
        UNetConfig::small(),
        strided,
        tiny(),
        uncond,
    ] {
        let (vm, vb) = seeded(0, DType::F32);
        FlowUNet::new(cfg.clone(), vb).unwrap();
        let pc = count_parameters(&vm).unwrap();
        assert_eq!(pc.trainable, expected_params(&cfg), "{cfg:?}");
        assert_eq!(pc.buffers, 0);
    }
    let n = expected_params(&UNetConfig::default());
    assert!((3_000_000..3_400_000).contains(&n), "{n}");
}

#[test]
fn flow_and_diffusion_networks_have_identical_parameters() {
    for cfg in [UNetConfig::default(), UNetConfig::small()] {
        let (vf, vbf) = seeded(0, DType::F32);
        let (vd, vbd) = seeded(0, DType::F32);
        FlowUNet::new(cfg.clone(), vbf).unwrap();
        DiffusionUNet::new(cfg, vbd).unwrap();
        assert_eq!(shapes(&vf), shapes(&vd));
        assert_eq!(
            count_parameters(&vf).unwrap(),
            count_parameters(&vd).unwrap()
        );
    }
}

#[test]
fn generators_keep_the_shape_of_300_sample_windows() {
    let mut rng = SeededRng::new(0);
    for cfg in [UNetConfig::default(), UNetConfig::small()] {
        let (_, vb) = seeded(0, DType::F32);
        let flow = FlowUNet::new(cfg.clone(), vb.clone()).unwrap();
        let diff = DiffusionUNet::new(cfg.clone(), vb).unwrap();
        let x = randn(&mut rng, &[2, 3, 300], DType::F32);
        let z = Conditioning::Representation(randn(&mut rng, &[2, cfg.cond_dim], DType::F32));
        let t = FlowTimes::from_values(&[0.1, 0.9], DType::F32, &Device::Cpu).unwrap();
        let k = DiffusionSteps::new(vec![0, 999], 1000).unwrap();
        for cond in [&z, &Conditioning::None] {
            assert_eq!(flow.velocity(&x, &t, cond).unwrap().dims(), &[2, 3, 300]);
            assert_eq!(
                diff.predict_noise(&x, &k, cond).unwrap().dims(),
                &[2, 3, 300]
            );
        }
    }
}

#[test]
fn exact_policy_refuses_lengths_that_do_not_divide_and_says_why() {
    let mut cfg = tiny();
    cfg.channel_mults = vec![1, 2, 2, 2]; // multiple of 8
    let (_, vb) = seeded(0, DType::F64);
    let flow = FlowUNet::new(cfg, vb).unwrap();
    let x = Tensor::zeros((1, 3, 300), DType::F64, &Device::Cpu).unwrap();
    let msg = flow
        .velocity(&x, &times(&[0.5]), &Conditioning::None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("300") && msg.contains("multiple of 8"),
        "{msg}"
    );
}

#[test]
fn zero_pad_policy_equals_explicit_padding_then_cropping() {
    let mut rng = SeededRng::new(4);
    let mut cfg = tiny();
    cfg.channel_mults = vec![1, 2, 2]; // multiple of 4
    let (_, vb) = seeded(7, DType::F64);
    let exact = FlowUNet::new(cfg.clone(), vb.clone()).unwrap();
    let padded = FlowUNet::new(cfg.with_length_policy(LengthPolicy::ZeroPad), vb).unwrap();
    let x = randn(&mut rng, &[2, 3, 13], DType::F64); // 13 -> 16: 1 zero left, 2 right
    let z = Conditioning::Representation(randn(&mut rng, &[2, 6], DType::F64));
    let t = times(&[0.3, 0.7]);
    let got = padded.velocity(&x, &t, &z).unwrap();
    assert_eq!(got.dims(), &[2, 3, 13]);
    let manual = exact
        .velocity(&x.pad_with_zeros(2, 1, 2).unwrap(), &t, &z)
        .unwrap()
        .narrow(2, 1, 13)
        .unwrap();
    Tolerance::F64.assert_close(&flat(&got), &flat(&manual));
    // Lengths that already divide run unpadded under both policies.
    let x16 = randn(&mut rng, &[2, 3, 16], DType::F64);
    Tolerance::F64.assert_close(
        &flat(&padded.velocity(&x16, &t, &z).unwrap()),
        &flat(&exact.velocity(&x16, &t, &z).unwrap()),
    );
}

#[test]
fn flow_time_is_the_diffusion_step_divided_by_the_time_scale() {
    let mut rng = SeededRng::new(5);
    let (_, vb) = seeded(3, DType::F64);
    let flow = FlowUNet::new(tiny(), vb.clone()).unwrap();
    let diff = DiffusionUNet::new(tiny(), vb).unwrap();
    let x = randn(&mut rng, &[2, 3, 12], DType::F64);
    let z = Conditioning::Representation(randn(&mut rng, &[2, 6], DType::F64));
    let v = flow.velocity(&x, &times(&[0.25, 0.999]), &z).unwrap();
    let eps = diff
        .predict_noise(&x, &DiffusionSteps::new(vec![250, 999], 1000).unwrap(), &z)
        .unwrap();
    Tolerance::new(1e-9, 1e-12).assert_close(&flat(&v), &flat(&eps));
    let other = flow.velocity(&x, &times(&[0.5, 0.999]), &z).unwrap();
    assert!(Tolerance::F64.check(&flat(&other), &flat(&v)).is_err());
}

#[test]
fn the_representation_changes_the_output_and_none_uses_the_null_embedding() {
    let mut rng = SeededRng::new(6);
    let (_, vb) = seeded(1, DType::F64);
    let flow = FlowUNet::new(tiny(), vb).unwrap();
    let x = randn(&mut rng, &[2, 3, 12], DType::F64);
    let t = times(&[0.5, 0.5]);
    let z1 = Conditioning::Representation(randn(&mut rng, &[2, 6], DType::F64));
    let z2 = Conditioning::Representation(randn(&mut rng, &[2, 6], DType::F64));
    let a = flat(&flow.velocity(&x, &t, &z1).unwrap());
    let b = flat(&flow.velocity(&x, &t, &z2).unwrap());
    let n = flat(&flow.velocity(&x, &t, &Conditioning::None).unwrap());
    assert!(Tolerance::F64.check(&a, &b).is_err());
    assert!(Tolerance::F64.check(&a, &n).is_err());
}

#[test]
fn bad_conditioning_is_an_error() {
    let (_, vb) = seeded(0, DType::F64);
    let flow = FlowUNet::new(tiny(), vb).unwrap();
    let x = Tensor::zeros((2, 3, 12), DType::F64, &Device::Cpu).unwrap();
    let t = times(&[0.5, 0.5]);
    let wrong =
        Conditioning::Representation(Tensor::zeros((2, 5), DType::F64, &Device::Cpu).unwrap());
    let msg = flow.velocity(&x, &t, &wrong).unwrap_err().to_string();
    assert!(msg.contains("(2, 6)"), "{msg}");
    let mut cfg = tiny();
    cfg.cond_dim = 0;
    let (_, vb) = seeded(0, DType::F64);
    let uncond = FlowUNet::new(cfg, vb).unwrap();
    let z = Conditioning::Representation(Tensor::zeros((2, 6), DType::F64, &Device::Cpu).unwrap());
    assert!(uncond.velocity(&x, &t, &z).is_err());
    assert!(uncond.velocity(&x, &t, &Conditioning::None).is_ok());
    assert!(flow
        .velocity(&x, &times(&[0.5]), &Conditioning::None)
        .is_err());
}

#[test]
fn invalid_configs_are_errors_naming_the_field() {
    let err = |cfg: UNetConfig| cfg.validate().unwrap_err().to_string();
    let mut c = tiny();
    c.groups = 3;
    assert!(err(c).contains("`groups`"));
    let mut c = tiny();
    c.base_channels = 7;
    assert!(err(c).contains("`base_channels`"));
    let mut c = tiny();
    c.channel_mults.clear();
    assert!(err(c).contains("`channel_mults`"));
    let mut c = tiny();
    c.time_scale = f64::INFINITY;
    assert!(err(c).contains("`time_scale`"));
    let mut c = tiny();
    c.kernel_size = 2;
    assert!(err(c).contains("`kernel_size`"));
}

#[test]
fn detached_views_build_no_graph_and_agree_with_the_live_networks() {
    let mut rng = SeededRng::new(8);
    let (vm, vb) = seeded(2, DType::F64);
    let flow = FlowUNet::new(tiny(), vb.clone()).unwrap();
    let diff = DiffusionUNet::new(tiny(), vb).unwrap();
    let x = randn(&mut rng, &[2, 3, 12], DType::F64);
    let z = Conditioning::Representation(randn(&mut rng, &[2, 6], DType::F64));
    let t = times(&[0.2, 0.6]);
    let k = DiffusionSteps::new(vec![3, 500], 1000).unwrap();
    let live = flow.velocity(&x, &t, &z).unwrap();
    let det = flow.detached().velocity(&x, &t, &z).unwrap();
    Tolerance::F64.assert_close(&flat(&det), &flat(&live));
    let live_eps = diff.predict_noise(&x, &k, &z).unwrap();
    let det_eps = diff.detached().predict_noise(&x, &k, &z).unwrap();
    Tolerance::F64.assert_close(&flat(&det_eps), &flat(&live_eps));
    for out in [&det, &det_eps] {
        assert!(!out.track_op());
        let grads = out.sum_all().unwrap().backward().unwrap();
        for var in trainable_vars(&vm).unwrap() {
            assert!(grads.get(var.as_tensor()).is_none());
        }
    }
    assert!(live.track_op());
}

#[test]
fn the_fused_evaluation_path_gives_the_live_networks_bits_in_f32() {
    // The detached views take the fused evaluation path (each norm applied inside the next
    // convolution's input copy, the residual added inside the second convolution); the live
    // networks build a graph and take the separate ops. At L = 300 the first level's
    // convolutions compute one product per sample, the deeper ones one product over all
    // positions: both output strategies are covered.
    let mut rng = SeededRng::new(12);
    let mut cfg = UNetConfig::small().with_cond_dim(6);
    cfg.base_channels = 8;
    let (_vm, vb) = seeded(4, DType::F32);
    let flow = FlowUNet::new(cfg, vb).unwrap();
    let inputs = |rng: &mut SeededRng, n: usize| {
        let x = randn(rng, &[n, 3, 300], DType::F32);
        let z = Conditioning::Representation(randn(rng, &[n, 6], DType::F32));
        let ts: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect();
        let t = FlowTimes::from_values(&ts, DType::F32, &Device::Cpu).unwrap();
        (x, t, z)
    };
    let (x, t, z) = inputs(&mut rng, 3);
    let live = flow.velocity(&x, &t, &z).unwrap();
    let det = flow.detached().velocity(&x, &t, &z).unwrap();
    assert!(live.track_op() && !det.track_op());
    assert!(bits32(&det) == bits32(&live));

    // 37 windows: the detached network evaluates chunks of 16, 16 and 5 concurrently
    // (`flowfm_ops::eval_in_chunks`), the live one the whole batch at once. The small linear
    // layers of the embeddings take another kernel for 16 rows than for 37 (rounding-level
    // differences), so the two agree to f32 tolerance; the chunked result itself does not
    // depend on the number of threads.
    let (x, t, z) = inputs(&mut rng, 37);
    let live = flow.velocity(&x, &t, &z).unwrap();
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| flow.detached().velocity(&x, &t, &z).unwrap())
    };
    let (one, three) = (on(1), on(3));
    assert_eq!(one.dims(), live.dims());
    Tolerance::F32.assert_close(&flat(&one), &flat(&live));
    assert!(bits32(&one) == bits32(&three));
}
