//! HARNet encoder: parameter counts, names, presets, shapes, validation, seeding and the
//! graph-free inference path.

mod common;

use candle_core::{DType, Tensor};
use candle_nn::Optimizer;
use common::*;
use flowfm_core::{Encoder, ForwardMode, SeededRng, Tolerance};
use flowfm_models::{count_parameters, trainable_vars, EncoderConfig, HarNet, NormKind};

#[test]
fn harnet10_has_exactly_the_published_parameter_count() {
    let (vm, vb) = seeded(0, DType::F32);
    let net = HarNet::new(EncoderConfig::harnet10(), vb).unwrap();
    let pc = count_parameters(&vm).unwrap();
    assert_eq!(pc.trainable, 10_457_408);
    // Buffers: two per channel of every batch norm: (2 blocks * 2 + 1) norms in the first four
    // stages, one in the last.
    let bn_channels = 5 * (64 + 128 + 256 + 512) + 1024;
    assert_eq!(pc.buffers, 2 * bn_channels);
    assert_eq!(net.repr_dim(), 1024);
}

#[test]
fn parameter_names_follow_field_paths() {
    let (vm, vb) = seeded(0, DType::F32);
    HarNet::new(EncoderConfig::harnet10(), vb).unwrap();
    let shapes: std::collections::HashMap<String, Vec<usize>> = shapes(&vm).into_iter().collect();
    assert_eq!(shapes["stages.0.conv.weight"], vec![64, 3, 5]);
    assert_eq!(shapes["stages.0.blocks.1.bn1.running_mean"], vec![64]);
    assert_eq!(shapes["stages.3.blocks.0.conv2.weight"], vec![512, 512, 5]);
    assert_eq!(shapes["stages.4.bn.weight"], vec![1024]);
    assert!(
        !shapes.contains_key("stages.0.conv.bias"),
        "convs have no bias"
    );
    assert!(!shapes.keys().any(|k| k.starts_with("stages.4.blocks")));
}

#[test]
fn presets_reach_length_one() {
    let cases = [
        (
            EncoderConfig::harnet10(),
            vec![300, 150, 75, 15, 3, 1],
            1024,
        ),
        (
            EncoderConfig::harnet10_30s(),
            vec![900, 300, 100, 20, 4, 1],
            1024,
        ),
        (EncoderConfig::harnet5s(), vec![150, 75, 37, 12, 4, 1], 512),
    ];
    for (cfg, lens, dim) in cases {
        assert_eq!(cfg.lengths().unwrap(), lens);
        assert_eq!(cfg.repr_dim(), dim);
    }
}

#[test]
fn every_preset_encodes_a_batch_to_its_representation_dimension() {
    let mut rng = SeededRng::new(1);
    let cases = [
        (EncoderConfig::harnet10(), 1024),
        (EncoderConfig::harnet10().with_width(0.25), 256),
        (EncoderConfig::harnet10_30s().with_width(0.25), 256),
        (EncoderConfig::harnet5s().with_width(0.25), 128),
        (
            EncoderConfig::harnet10()
                .with_width(0.25)
                .with_norm(NormKind::Group { groups: 8 }),
            256,
        ),
    ];
    for (cfg, dim) in cases {
        let (_, vb) = seeded(0, DType::F32);
        let len = cfg.window_len;
        let net = HarNet::new(cfg, vb).unwrap();
        let x = randn(&mut rng, &[2, 3, len], DType::F32);
        for mode in [ForwardMode::Train, ForwardMode::Eval] {
            assert_eq!(net.encode(&x, mode).unwrap().dims(), &[2, dim]);
        }
        assert_eq!(net.encode_detached(&x).unwrap().dims(), &[2, dim]);
    }
}

#[test]
fn width_multiplier_scales_channels_and_keeps_at_least_one() {
    let cfg = EncoderConfig::harnet10().with_width(0.25);
    assert_eq!(cfg.stage_channels(), vec![16, 32, 64, 128, 256]);
    let tiny = EncoderConfig::harnet10().with_width(0.001);
    assert_eq!(tiny.stage_channels(), vec![1; 5]);
    let (_, vb) = seeded(0, DType::F32);
    let net = HarNet::new(tiny, vb).unwrap();
    let x = Tensor::zeros((2, 3, 300), DType::F32, &candle_core::Device::Cpu).unwrap();
    assert_eq!(net.encode(&x, ForwardMode::Train).unwrap().dims(), &[2, 1]);
}

#[test]
fn group_norm_variant_has_no_buffers_and_the_same_parameter_count() {
    let (vm, vb) = seeded(0, DType::F32);
    HarNet::new(
        EncoderConfig::harnet10().with_norm(NormKind::Group { groups: 32 }),
        vb,
    )
    .unwrap();
    let pc = count_parameters(&vm).unwrap();
    assert_eq!(pc.trainable, 10_457_408);
    assert_eq!(pc.buffers, 0);
}

#[test]
fn invalid_configs_are_errors_naming_the_field() {
    let err = |cfg: EncoderConfig| cfg.validate().unwrap_err().to_string();
    assert!(err(EncoderConfig::harnet10().with_width(0.0)).contains("`width`"));
    assert!(err(EncoderConfig::harnet10().with_width(f64::NAN)).contains("`width`"));
    let mut even = EncoderConfig::harnet10();
    even.kernel_size = 4;
    assert!(err(even).contains("`kernel_size`"));
    let mut odd_pad = EncoderConfig::harnet10();
    odd_pad.stages[4].down_factor = 4;
    assert!(err(odd_pad).contains("`stages[4].down_order`"));
    let mut short = EncoderConfig::harnet10();
    short.window_len = 100; // 100 -> 50 -> 25 -> 5 -> 1, then a factor 3 does not fit.
    assert!(err(short).contains("`stages[4]`"));
    let (_, vb) = seeded(0, DType::F32);
    assert!(HarNet::new(EncoderConfig::harnet10().with_width(-1.0), vb).is_err());
}

#[test]
fn wrong_input_length_is_an_error() {
    let (_, vb) = seeded(0, DType::F32);
    let net = HarNet::new(EncoderConfig::harnet10().with_width(0.125), vb).unwrap();
    let x = Tensor::zeros((2, 3, 299), DType::F32, &candle_core::Device::Cpu).unwrap();
    let msg = net.encode(&x, ForwardMode::Eval).unwrap_err().to_string();
    assert!(msg.contains("(batch, 3, 300)"), "{msg}");
}

#[test]
fn same_seed_gives_identical_weights_and_another_seed_does_not() {
    let build = |seed| {
        let (vm, vb) = seeded(seed, DType::F32);
        HarNet::new(EncoderConfig::harnet10().with_width(0.125), vb).unwrap();
        values(&vm)
    };
    let (a, b, c) = (build(3), build(3), build(4));
    let exact = Tolerance::new(0.0, 0.0);
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        exact.assert_close(va, vb);
    }
    let conv_a = &a
        .iter()
        .find(|(n, _)| n == "stages.0.conv.weight")
        .unwrap()
        .1;
    let conv_c = &c
        .iter()
        .find(|(n, _)| n == "stages.0.conv.weight")
        .unwrap()
        .1;
    assert!(exact.check(conv_a, conv_c).is_err());
}

#[test]
fn detached_encoding_builds_no_graph_and_follows_weight_updates() {
    let mut rng = SeededRng::new(2);
    let (vm, vb) = seeded(5, DType::F64);
    let net = HarNet::new(EncoderConfig::harnet10().with_width(0.125), vb).unwrap();
    let x = randn(&mut rng, &[4, 3, 300], DType::F64);
    // Populate the running statistics.
    net.encode(&x, ForwardMode::Train).unwrap();

    let live = net.encode(&x, ForwardMode::Eval).unwrap();
    let detached = net.encode_detached(&x).unwrap();
    Tolerance::F64.assert_close(&flat(&detached), &flat(&live));
    assert!(
        !detached.track_op(),
        "the detached path must not record ops"
    );
    let grads = detached.sum_all().unwrap().backward().unwrap();
    for var in trainable_vars(&vm).unwrap() {
        assert!(grads.get(var.as_tensor()).is_none());
    }
    assert!(live.track_op());

    // One SGD step on the live weights is visible through the detached path.
    let loss = net
        .encode(&x, ForwardMode::Train)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let mut sgd = candle_nn::SGD::new(trainable_vars(&vm).unwrap(), 0.1).unwrap();
    sgd.backward_step(&loss).unwrap();
    let live = net.encode(&x, ForwardMode::Eval).unwrap();
    let detached2 = net.encode_detached(&x).unwrap();
    Tolerance::F64.assert_close(&flat(&detached2), &flat(&live));
    assert!(Tolerance::F64
        .check(&flat(&detached2), &flat(&detached))
        .is_err());
}

#[test]
fn training_mode_updates_running_statistics_and_eval_does_not() {
    let mut rng = SeededRng::new(3);
    let (vm, vb) = seeded(0, DType::F32);
    let net = HarNet::new(EncoderConfig::harnet10().with_width(0.125), vb).unwrap();
    let x = (randn(&mut rng, &[4, 3, 300], DType::F32) + 2.0).unwrap();
    let read = || {
        values(&vm)
            .into_iter()
            .find(|(n, _)| n == "stages.0.bn.running_mean")
            .unwrap()
            .1
    };
    let before = read();
    net.encode(&x, ForwardMode::Eval).unwrap();
    Tolerance::new(0.0, 0.0).assert_close(&read(), &before);
    net.encode(&x, ForwardMode::Train).unwrap();
    assert!(Tolerance::F32.check(&read(), &before).is_err());
}

#[test]
fn the_fused_evaluation_path_gives_the_live_encoders_bits_in_f32() {
    // `encode_detached` takes the fused evaluation path (batch norm and ReLU applied inside the
    // next convolution's input copy, the residual inside the second convolution); the live
    // encoder in evaluation mode takes the separate ops.
    let mut rng = SeededRng::new(21);
    let (_vm, vb) = seeded(6, DType::F32);
    let net = HarNet::new(EncoderConfig::harnet10().with_width(0.125), vb).unwrap();
    // 37 windows: the detached encoder evaluates chunks of 16, 16 and 5 concurrently
    // (`flowfm_ops::eval_in_chunks`), the live one the whole batch at once.
    let x = randn(&mut rng, &[37, 3, 300], DType::F32);
    net.encode(&x, ForwardMode::Train).unwrap();
    let live = net.encode(&x, ForwardMode::Eval).unwrap();
    let detached = net.encode_detached(&x).unwrap();
    assert_eq!(detached.dims(), live.dims());
    assert!(live.track_op() && !detached.track_op());
    assert!(bits32(&detached) == bits32(&live));
}
