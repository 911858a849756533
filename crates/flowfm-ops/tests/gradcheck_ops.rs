//! Gradient checks (autograd vs central finite differences, f64) for every op the models use,
//! over odd lengths, strides 1/2/5, kernels 1/3/5, zero and circular padding, dilation, groups
//! and batch sizes 1 and >1.

use candle_core::{DType, Device, Module, Tensor};
use flowfm_core::{ForwardMode, SeededRng};
use flowfm_ops::gradcheck::{check_gradients, GradCheck};
use flowfm_ops::*;

mod common;

fn randn(rng: &mut SeededRng, shape: &[usize]) -> Tensor {
    rng.normal_tensor(shape, DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn conv1d_gradients_match_finite_differences_over_many_geometries() {
    let mut rng = SeededRng::new(1);
    for common::ConvCase {
        batch: b,
        c_in,
        len: l,
        c_out,
        kernel: k,
        spec,
    } in common::conv_cases()
    {
        let groups = spec.groups;
        let x = randn(&mut rng, &[b, c_in, l]);
        let w = randn(&mut rng, &[c_out, c_in / groups, k]);
        check_gradients(|xs| conv1d(&xs[0], &xs[1], &spec), &[x, w])
            .unwrap()
            .assert_ok(&format!(
                "conv1d {spec:?} x ({b},{c_in},{l}) w ({c_out},{},{k})",
                c_in / groups
            ));
    }
}

#[test]
fn conv1d_layer_with_bias_gradients_match() {
    let vm = candle_nn::VarMap::new();
    let vb = flowfm_core::init::seeded_var_builder(&vm, 3, DType::F64, &Device::Cpu);
    let cfg = Conv1dConfig {
        spec: Conv1dSpec {
            padding: 2,
            padding_mode: PaddingMode::Circular,
            ..Default::default()
        },
        bias: true,
    };
    let conv = Conv1d::new(3, 4, 5, cfg, vb).unwrap();
    let mut rng = SeededRng::new(2);
    let x = randn(&mut rng, &[2, 3, 9]);
    let w = conv.weight().clone();
    let bias = conv.bias().unwrap().clone();
    check_gradients(
        |xs| conv1d(&xs[0], &xs[1], cfg_spec(&cfg))?.broadcast_add(&xs[2].reshape((1, 4, 1))?),
        &[x.clone(), w, bias],
    )
    .unwrap()
    .assert_ok("conv1d + bias");
    // The layer computes the same function.
    let direct = conv1d(&x, conv.weight(), &cfg.spec)
        .unwrap()
        .broadcast_add(&conv.bias().unwrap().reshape((1, 4, 1)).unwrap())
        .unwrap();
    flowfm_core::Tolerance::F64.assert_tensors_close(&conv.forward(&x).unwrap(), &direct);
}

fn cfg_spec(cfg: &Conv1dConfig) -> &Conv1dSpec {
    &cfg.spec
}

#[test]
fn nearest_upsampling_gradients_accumulate() {
    let mut rng = SeededRng::new(3);
    for (shape, factor) in [([1, 2, 5], 2), ([3, 2, 4], 3), ([2, 1, 7], 5)] {
        let x = randn(&mut rng, &shape);
        check_gradients(|xs| upsample_nearest1d(&xs[0], factor), &[x])
            .unwrap()
            .assert_ok(&format!("upsample x{factor} {shape:?}"));
    }
}

#[test]
fn blur_downsample_gradients_match_for_every_harnet_factor() {
    let mut rng = SeededRng::new(4);
    for (factor, order, len) in [
        (2, 2, 11),
        (2, 2, 16),
        (5, 1, 15),
        (5, 1, 17),
        (3, 1, 3),
        (3, 1, 10),
    ] {
        let down = BlurDownsample::new(factor, order).unwrap();
        for batch in [1, 2] {
            let x = randn(&mut rng, &[batch, 3, len]);
            check_gradients(|xs| down.forward(&xs[0]), &[x])
                .unwrap()
                .assert_ok(&format!("blur factor {factor} order {order} len {len}"));
        }
    }
}

#[test]
fn linear_gradients_match_on_3d_and_transposed_inputs() {
    let mut rng = SeededRng::new(5);
    let w = randn(&mut rng, &[4, 3]);
    let b = randn(&mut rng, &[4]);
    let x = randn(&mut rng, &[2, 5, 3]);
    check_gradients(
        |xs| linear(&xs[0], &xs[1], Some(&xs[2])),
        &[x, w.clone(), b.clone()],
    )
    .unwrap()
    .assert_ok("linear on (2,5,3)");
    // The case candle gets wrong: a transposed 3-D view (channels-first input, features last).
    let xt = randn(&mut rng, &[2, 3, 6]);
    check_gradients(
        |xs| linear(&xs[0].transpose(1, 2)?, &xs[1], Some(&xs[2])),
        &[xt, w, b],
    )
    .unwrap()
    .assert_ok("linear on a transposed (2,3,6) view");
    let x2 = randn(&mut rng, &[1, 3]);
    let w2 = randn(&mut rng, &[2, 3]);
    check_gradients(|xs| linear(&xs[0], &xs[1], None), &[x2, w2])
        .unwrap()
        .assert_ok("linear 2-D batch 1");
}

#[test]
fn group_norm_gradients_match() {
    let mut rng = SeededRng::new(6);
    for (shape, groups) in [
        ([2, 4, 7], 2),
        ([1, 6, 5], 3),
        ([3, 4, 9], 4),
        ([2, 4, 3], 1),
    ] {
        let x = randn(&mut rng, &shape);
        let g = randn(&mut rng, &[shape[1]]);
        let b = randn(&mut rng, &[shape[1]]);
        check_gradients(
            |xs| group_norm(&xs[0], groups, Some(&xs[1]), Some(&xs[2]), 1e-5),
            &[x, g, b],
        )
        .unwrap()
        .assert_ok(&format!("group_norm {shape:?} groups {groups}"));
    }
}

#[test]
fn batch_norm_gradients_match_in_train_and_eval_modes() {
    let mut rng = SeededRng::new(7);
    for shape in [[2, 3, 5], [4, 2, 1], [1, 3, 7]] {
        let x = randn(&mut rng, &shape);
        check_gradients(
            |xs| Ok(batch_norm_train(&xs[0], 1e-5)?.0),
            std::slice::from_ref(&x),
        )
        .unwrap()
        .assert_ok(&format!("batch norm (train) {shape:?}"));
        let vm = candle_nn::VarMap::new();
        let vb = flowfm_core::init::seeded_var_builder(&vm, 0, DType::F64, &Device::Cpu);
        let bn = BatchNorm1d::new(shape[1], BatchNormConfig::default(), vb).unwrap();
        // Populate non-trivial running statistics, then check eval mode.
        bn.forward(&randn(&mut rng, &[4, shape[1], 6]), ForwardMode::Train)
            .unwrap();
        check_gradients(
            |xs| bn.forward(&xs[0], ForwardMode::Eval),
            std::slice::from_ref(&x),
        )
        .unwrap()
        .assert_ok(&format!("batch norm (eval) {shape:?}"));
        check_gradients(|xs| bn.forward(&xs[0], ForwardMode::Train), &[x])
            .unwrap()
            .assert_ok(&format!("batch norm layer (train) {shape:?}"));
    }
}

#[test]
fn activation_gradients_match() {
    let mut rng = SeededRng::new(8);
    // Keep |x| away from relu's kink at 0 so the central difference is valid.
    let raw = randn(&mut rng, &[2, 3, 7]);
    let x = (raw.sign().unwrap() * 0.05).unwrap().add(&raw).unwrap();
    type Act = fn(&Tensor) -> candle_core::Result<Tensor>;
    let acts: [(&str, Act); 5] = [
        ("relu", activation::relu),
        ("silu", activation::silu),
        ("gelu", activation::gelu),
        ("sigmoid", activation::sigmoid),
        ("tanh", activation::tanh),
    ];
    for (name, act) in acts {
        // candle's erf (inside gelu) is accurate to about 1e-7 absolute, so the central difference
        // of its forward carries errors of that size; the other activations are exact.
        let tolerance = if name == "gelu" {
            flowfm_core::Tolerance::new(1e-5, 1e-7)
        } else {
            GradCheck::default().tolerance
        };
        GradCheck {
            tolerance,
            ..GradCheck::default()
        }
        .run(|xs| act(&xs[0]), std::slice::from_ref(&x), &[true])
        .unwrap()
        .assert_ok(name);
    }
}

#[test]
fn pooling_and_concatenation_gradients_match() {
    let mut rng = SeededRng::new(9);
    let a = randn(&mut rng, &[2, 3, 5]);
    let b = randn(&mut rng, &[2, 1, 5]);
    check_gradients(|xs| cat_channels(&[&xs[0], &xs[1]]), &[a.clone(), b])
        .unwrap()
        .assert_ok("cat");
    check_gradients(|xs| global_avg_pool1d(&xs[0]), std::slice::from_ref(&a))
        .unwrap()
        .assert_ok("avg pool");
    check_gradients(|xs| global_max_pool1d(&xs[0]), &[a])
        .unwrap()
        .assert_ok("max pool");
}

#[test]
fn a_composed_block_gradients_match() {
    // conv -> group norm -> silu -> blur downsample -> upsample -> cat with input, as in a U-Net.
    let mut rng = SeededRng::new(10);
    let x = randn(&mut rng, &[2, 2, 12]);
    let w = randn(&mut rng, &[4, 2, 3]);
    let spec = Conv1dSpec {
        padding: 1,
        padding_mode: PaddingMode::Circular,
        ..Default::default()
    };
    let down = BlurDownsample::new(2, 2).unwrap();
    check_gradients(
        |xs| {
            let h = conv1d(&xs[0], &xs[1], &spec)?;
            let h = activation::silu(&group_norm(&h, 2, None, None, 1e-5)?)?;
            let h = upsample_nearest1d(&down.forward(&h)?, 2)?;
            cat_channels(&[&h, &xs[0]])
        },
        &[x, w],
    )
    .unwrap()
    .assert_ok("composed block");
}

#[test]
fn the_checker_detects_a_wrong_gradient() {
    // A custom closure whose forward and backward disagree: x * stop_gradient(x) has gradient x,
    // not 2x. The checker must flag it.
    let mut rng = SeededRng::new(11);
    let x = randn(&mut rng, &[3, 4]);
    let report = GradCheck::default()
        .run(|xs| xs[0].mul(&xs[0].detach()), &[x], &[true])
        .unwrap();
    assert!(!report.ok(), "a detached factor must be caught");
}

/// candle 0.11.1's CPU conv1d computes wrong weight gradients (the kernel is non-contiguous in
/// backprop). This test asserts the discrepancy so we notice when an upgrade fixes it; flowfm's
/// [`conv1d`] is checked correct on the same inputs above.
#[test]
fn upstream_candle_conv1d_weight_gradient_is_wrong() {
    let mut rng = SeededRng::new(12);
    let x = randn(&mut rng, &[2, 3, 9]);
    let w = randn(&mut rng, &[4, 3, 3]);
    let report = GradCheck::default()
        .run(
            |xs| xs[0].conv1d(&xs[1], 1, 1, 1, 1),
            &[x.clone(), w.clone()],
            &[false, true],
        )
        .unwrap();
    let weight = report.input(1).unwrap();
    assert!(
        weight.mismatch.is_some(),
        "candle's conv1d weight gradient now matches finite differences: the upstream bug is fixed; \
         consider forwarding flowfm_ops::conv1d to candle on the CPU"
    );
    // Ours on the same inputs is right.
    check_gradients(
        |xs| {
            conv1d(
                &xs[0],
                &xs[1],
                &Conv1dSpec {
                    padding: 1,
                    ..Default::default()
                },
            )
        },
        &[x, w],
    )
    .unwrap()
    .assert_ok("flowfm conv1d on the upstream-bug inputs");
}

/// candle 0.11.1's nearest upsampling backward overwrites the gradient already accumulated for its
/// input instead of adding to it: wrong whenever the input is also used elsewhere (a skip path).
#[test]
fn upstream_candle_upsample_nearest_gradient_is_wrong() {
    let mut rng = SeededRng::new(13);
    let x = randn(&mut rng, &[1, 2, 5]);
    let with_skip =
        |xs: &[Tensor]| Tensor::cat(&[&xs[0].upsample_nearest1d(10)?, &xs[0].sqr()?], 2);
    let report = check_gradients(with_skip, std::slice::from_ref(&x)).unwrap();
    assert!(
        !report.ok(),
        "candle's upsample_nearest1d gradient now matches finite differences: the upstream bug is fixed"
    );
    let ours = |xs: &[Tensor]| Tensor::cat(&[&upsample_nearest1d(&xs[0], 2)?, &xs[0].sqr()?], 2);
    check_gradients(ours, &[x])
        .unwrap()
        .assert_ok("flowfm upsample with a skip path");
}

#[test]
fn fused_norm_gradients_match_for_batch_and_group_statistics() {
    use flowfm_ops::fused_norm::{fused_norm, Grouping, Statistics};
    use std::sync::Arc;
    let mut rng = SeededRng::new(14);
    for (shape, grouping) in [
        ([2, 3, 5], Grouping::PerChannel),
        ([4, 2, 1], Grouping::PerChannel),
        ([2, 4, 7], Grouping::Groups(2)),
        ([1, 6, 5], Grouping::Groups(3)),
        ([3, 4, 3], Grouping::Groups(1)),
    ] {
        let x = randn(&mut rng, &shape);
        let g = randn(&mut rng, &[shape[1]]);
        let b = randn(&mut rng, &[shape[1]]);
        check_gradients(
            |xs| {
                Ok(fused_norm(
                    &xs[0],
                    &xs[1],
                    &xs[2],
                    grouping,
                    Statistics::FromInput,
                    1e-5,
                )?
                .0)
            },
            &[x.clone(), g.clone(), b.clone()],
        )
        .unwrap()
        .assert_ok(&format!("fused norm {grouping:?} {shape:?}"));
        if grouping == Grouping::PerChannel {
            let mean = Arc::new(rng.normal_vec(shape[1]));
            let var = Arc::new(rng.uniform_vec(shape[1], 0.5, 2.0));
            let stats = Statistics::Fixed { mean, var };
            check_gradients(
                |xs| Ok(fused_norm(&xs[0], &xs[1], &xs[2], grouping, stats.clone(), 1e-5)?.0),
                &[x, g, b],
            )
            .unwrap()
            .assert_ok(&format!("fused norm with fixed statistics {shape:?}"));
        }
    }
}

#[test]
fn fused_layers_equal_the_composed_reference() {
    let mut rng = SeededRng::new(15);
    let tol = flowfm_core::Tolerance::new(1e-10, 1e-12);
    let x = randn(&mut rng, &[3, 4, 9]);
    // Group norm layer (fused on the CPU) vs the composed function with the same parameters.
    let mut vm = candle_nn::VarMap::new();
    let vb = flowfm_core::init::seeded_var_builder(&vm, 1, DType::F64, &Device::Cpu);
    let gn = GroupNorm::new(2, 4, 1e-5, vb).unwrap();
    let w = randn(&mut rng, &[4]);
    let b = randn(&mut rng, &[4]);
    vm.set_one("weight", &w).unwrap();
    vm.set_one("bias", &b).unwrap();
    tol.assert_tensors_close(
        &gn.forward(&x).unwrap(),
        &group_norm(&x, 2, Some(&w), Some(&b), 1e-5).unwrap(),
    );
    // Batch norm: two layers with the same init, fused vs composed, train then eval.
    let make = || {
        let vm = candle_nn::VarMap::new();
        let vb = flowfm_core::init::seeded_var_builder(&vm, 2, DType::F64, &Device::Cpu);
        BatchNorm1d::new(4, BatchNormConfig::default(), vb).unwrap()
    };
    let (fused, composed) = (make(), make());
    for _ in 0..3 {
        let xb = randn(&mut rng, &[5, 4, 6]);
        tol.assert_tensors_close(
            &fused.forward(&xb, ForwardMode::Train).unwrap(),
            &composed.forward_composed(&xb, ForwardMode::Train).unwrap(),
        );
    }
    tol.assert_tensors_close(fused.running_mean(), composed.running_mean());
    tol.assert_tensors_close(fused.running_var(), composed.running_var());
    tol.assert_tensors_close(
        &fused.forward(&x, ForwardMode::Eval).unwrap(),
        &composed.forward_composed(&x, ForwardMode::Eval).unwrap(),
    );
}

#[test]
fn fused_norm_with_activation_gradients_match() {
    use flowfm_ops::fused_norm::{fused_norm_act, Activation, Grouping, Statistics};
    use std::sync::Arc;
    let mut rng = SeededRng::new(16);
    for activation in [Activation::Relu, Activation::Silu] {
        for (shape, grouping) in [
            ([2, 3, 5], Grouping::PerChannel),
            ([3, 2, 4], Grouping::PerChannel),
            ([2, 4, 7], Grouping::Groups(2)),
            ([1, 6, 5], Grouping::Groups(3)),
        ] {
            let x = randn(&mut rng, &shape);
            let g = randn(&mut rng, &[shape[1]]);
            let b = randn(&mut rng, &[shape[1]]);
            let run = |stats: Statistics| {
                move |xs: &[Tensor]| {
                    Ok(fused_norm_act(
                        &xs[0],
                        &xs[1],
                        &xs[2],
                        grouping,
                        stats.clone(),
                        1e-5,
                        activation,
                    )?
                    .0)
                }
            };
            check_gradients(
                run(Statistics::FromInput),
                &[x.clone(), g.clone(), b.clone()],
            )
            .unwrap()
            .assert_ok(&format!(
                "fused norm + {activation:?} {grouping:?} {shape:?}"
            ));
            if grouping == Grouping::PerChannel {
                let mean = Arc::new(rng.normal_vec(shape[1]));
                let var = Arc::new(rng.uniform_vec(shape[1], 0.5, 2.0));
                check_gradients(run(Statistics::Fixed { mean, var }), &[x, g, b])
                    .unwrap()
                    .assert_ok(&format!(
                        "fused norm (fixed statistics) + {activation:?} {shape:?}"
                    ));
            }
        }
    }
}

#[test]
fn fused_norm_with_activation_equals_norm_then_activation() {
    use flowfm_ops::fused_norm::Activation;
    let mut rng = SeededRng::new(17);
    let tol = flowfm_core::Tolerance::new(1e-12, 1e-12);
    let x = randn(&mut rng, &[3, 8, 11]);
    let vm = candle_nn::VarMap::new();
    let vb = flowfm_core::init::seeded_var_builder(&vm, 1, DType::F64, &Device::Cpu);
    let gn = GroupNorm::new(4, 8, 1e-5, vb.pp("gn")).unwrap();
    let bn = BatchNorm1d::new(8, BatchNormConfig::default(), vb.pp("bn")).unwrap();
    tol.assert_tensors_close(
        &gn.forward_act(&x, Activation::Silu).unwrap(),
        &gn.forward(&x).unwrap().silu().unwrap(),
    );
    tol.assert_tensors_close(
        &gn.forward_act(&x, Activation::Relu).unwrap(),
        &gn.forward(&x).unwrap().relu().unwrap(),
    );
    for mode in [ForwardMode::Train, ForwardMode::Eval] {
        tol.assert_tensors_close(
            &bn.forward_act(&x, mode, Activation::Relu).unwrap(),
            &bn.forward(&x, mode).unwrap().relu().unwrap(),
        );
    }
}

#[test]
fn fused_norm_with_per_sample_affine_gradients_match() {
    use flowfm_ops::fused_norm::{fused_norm_act, Activation, Grouping, Statistics};
    let mut rng = SeededRng::new(18);
    for activation in [Activation::Identity, Activation::Silu] {
        for (shape, grouping) in [
            ([2, 4, 7], Grouping::Groups(2)),
            ([3, 6, 5], Grouping::Groups(3)),
            ([2, 3, 5], Grouping::PerChannel),
        ] {
            let x = randn(&mut rng, &shape);
            let g = randn(&mut rng, &[shape[0], shape[1]]);
            let b = randn(&mut rng, &[shape[0], shape[1]]);
            check_gradients(
                |xs| {
                    Ok(fused_norm_act(
                        &xs[0],
                        &xs[1],
                        &xs[2],
                        grouping,
                        Statistics::FromInput,
                        1e-5,
                        activation,
                    )?
                    .0)
                },
                &[x, g, b],
            )
            .unwrap()
            .assert_ok(&format!(
                "fused norm, per-sample affine, {activation:?} {grouping:?} {shape:?}"
            ));
        }
    }
}

#[test]
fn modulated_group_norm_equals_norm_then_film_then_silu() {
    use flowfm_ops::fused_norm::Activation;
    let mut rng = SeededRng::new(19);
    let tol = flowfm_core::Tolerance::new(1e-12, 1e-12);
    let mut vm = candle_nn::VarMap::new();
    let vb = flowfm_core::init::seeded_var_builder(&vm, 1, DType::F64, &Device::Cpu);
    let gn = GroupNorm::new(4, 8, 1e-5, vb).unwrap();
    // Non-trivial affine parameters.
    vm.set_one("weight", randn(&mut rng, &[8])).unwrap();
    vm.set_one("bias", randn(&mut rng, &[8])).unwrap();
    let x = randn(&mut rng, &[3, 8, 11]);
    let scale = randn(&mut rng, &[3, 8]);
    let shift = randn(&mut rng, &[3, 8]);
    let composed = gn
        .forward(&x)
        .unwrap()
        .broadcast_mul(&scale.unsqueeze(2).unwrap())
        .unwrap()
        .broadcast_add(&shift.unsqueeze(2).unwrap())
        .unwrap()
        .silu()
        .unwrap();
    tol.assert_tensors_close(
        &gn.forward_modulated(&x, &scale, &shift, Activation::Silu)
            .unwrap(),
        &composed,
    );
    // Gradients through the modulation reach scale and shift (and x).
    check_gradients(
        |xs| gn.forward_modulated(&xs[0], &xs[1], &xs[2], Activation::Silu),
        &[x, scale, shift],
    )
    .unwrap()
    .assert_ok("modulated group norm + SiLU");
    assert!(gn
        .forward_modulated(
            &randn(&mut rng, &[3, 8, 4]),
            &randn(&mut rng, &[3, 4]),
            &randn(&mut rng, &[3, 8]),
            Activation::Silu
        )
        .is_err());
}

#[test]
fn conv1d_with_bias_in_the_matrix_product_gradients_match() {
    let mut rng = SeededRng::new(20);
    // (batch, c_in, len, c_out, kernel, stride, padding, mode, dilation)
    let cases = [
        (2, 3, 9, 4, 3, 1, 1, PaddingMode::Zeros, 1),
        (1, 2, 7, 3, 1, 1, 0, PaddingMode::Zeros, 1),
        (2, 2, 11, 3, 5, 2, 2, PaddingMode::Circular, 1),
        (3, 2, 12, 2, 3, 1, 2, PaddingMode::Circular, 2),
        (2, 3, 10, 3, 3, 2, 1, PaddingMode::Zeros, 1),
    ];
    for (b, c_in, l, c_out, k, stride, padding, padding_mode, dilation) in cases {
        let spec = Conv1dSpec {
            stride,
            padding,
            padding_mode,
            dilation,
            groups: 1,
        };
        let x = randn(&mut rng, &[b, c_in, l]);
        let w = randn(&mut rng, &[c_out, c_in, k]);
        let bias = randn(&mut rng, &[c_out]);
        check_gradients(
            |xs| conv1d_bias(&xs[0], &xs[1], &xs[2], &spec),
            &[x, w, bias],
        )
        .unwrap()
        .assert_ok(&format!(
            "conv1d_bias {spec:?} x ({b},{c_in},{l}) w ({c_out},{c_in},{k})"
        ));
    }
}

#[test]
fn sliding_window_conv1d_gradients_match() {
    let mut rng = SeededRng::new(21);
    // (batch, c_in, len, c_out, kernel, padding, mode): kernels 1/3/5, padding 0, K / 2 and
    // beyond, zero and circular, batch 1 and more.
    let cases = [
        (2, 3, 9, 4, 3, 1, PaddingMode::Zeros),
        (1, 2, 7, 3, 1, 0, PaddingMode::Zeros),
        (2, 2, 11, 3, 5, 2, PaddingMode::Circular),
        (3, 2, 6, 2, 3, 0, PaddingMode::Circular),
        (2, 3, 5, 2, 3, 3, PaddingMode::Zeros),
        (2, 2, 4, 3, 3, 4, PaddingMode::Circular),
        (1, 4, 8, 2, 5, 1, PaddingMode::Circular),
        // Long enough for shifted views of the whole padded batch (the lengths above take an
        // im2col matrix of the real outputs).
        (1, 2, 40, 3, 3, 1, PaddingMode::Circular),
        (2, 2, 30, 2, 5, 2, PaddingMode::Zeros),
    ];
    for (b, c_in, l, c_out, k, padding, padding_mode) in cases {
        let spec = Conv1dSpec {
            padding,
            padding_mode,
            ..Default::default()
        };
        let x = randn(&mut rng, &[b, c_in, l]);
        let w = randn(&mut rng, &[c_out, c_in, k]);
        let bias = randn(&mut rng, &[c_out]);
        let what = format!("conv1d_sliding {spec:?} x ({b},{c_in},{l}) w ({c_out},{c_in},{k})");
        check_gradients(
            |xs| conv1d_sliding(&xs[0], &xs[1], None, &spec),
            &[x.clone(), w.clone()],
        )
        .unwrap()
        .assert_ok(&what);
        check_gradients(
            |xs| conv1d_sliding(&xs[0], &xs[1], Some(&xs[2]), &spec),
            &[x, w, bias],
        )
        .unwrap()
        .assert_ok(&format!("{what} with bias"));
    }
}
