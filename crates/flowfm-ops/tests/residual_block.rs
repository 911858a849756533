//! The residual blocks trained as one op against the blocks composed from their layers:
//!
//! - `block::batch_norm_block_train`, HARNet10's `x + conv2(relu(bn2(conv1(relu(bn1(x))))))`:
//!   outputs, the gradients of the input and of all six parameters, and both running statistics;
//! - `block::group_norm_block_train`, the U-Net's block (group norms, the second FiLM-modulated,
//!   convolutions with biases, an identity or 1x1 skip): outputs and the gradients of the input,
//!   the modulation and all parameters;
//!
//! bit for bit in f32 and f64, on both output strategies of the sliding convolution and both
//! paddings; their gradients against central differences in f64; and `None` wherever the op
//! does not apply.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarBuilder;
use common::{bits, randn};
use flowfm_core::{ForwardMode, SeededRng};
use flowfm_ops::block::{batch_norm_block_train, group_norm_block_train};
use flowfm_ops::fused_norm::Activation;
use flowfm_ops::gradcheck::check_gradients;
use flowfm_ops::{
    with_portable_ops, BatchNorm1d, BatchNormConfig, Conv1d, Conv1dConfig, Conv1dSpec, GroupNorm,
    PaddingMode,
};
use std::collections::HashMap;

/// The block's layers over the given parameters `[w1, w2, gamma1, beta1, gamma2, beta2]` (the
/// tensors themselves, so gradients reach them), running statistics starting at 0 and 1.
struct Layers {
    bn1: BatchNorm1d,
    conv1: Conv1d,
    bn2: BatchNorm1d,
    conv2: Conv1d,
}

fn layers(params: &[Tensor], spec: Conv1dSpec, bias: bool) -> Result<Layers> {
    let c = params[2].dim(0)?;
    let k = params[0].dim(2)?;
    let dt = params[0].dtype();
    let dev = Device::Cpu;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in [
        ("conv1.weight", &params[0]),
        ("conv2.weight", &params[1]),
        ("bn1.weight", &params[2]),
        ("bn1.bias", &params[3]),
        ("bn2.weight", &params[4]),
        ("bn2.bias", &params[5]),
    ] {
        map.insert(name.to_string(), t.clone());
    }
    for bn in ["bn1", "bn2"] {
        map.insert(format!("{bn}.running_mean"), Tensor::zeros(c, dt, &dev)?);
        map.insert(format!("{bn}.running_var"), Tensor::ones(c, dt, &dev)?);
    }
    if bias {
        map.insert("conv1.bias".into(), Tensor::zeros(c, dt, &dev)?);
        map.insert("conv2.bias".into(), Tensor::zeros(c, dt, &dev)?);
    }
    let vb = VarBuilder::from_tensors(map, dt, &dev);
    let cfg = Conv1dConfig { spec, bias };
    Ok(Layers {
        bn1: BatchNorm1d::new(c, BatchNormConfig::default(), vb.pp("bn1"))?,
        conv1: Conv1d::new(c, c, k, cfg, vb.pp("conv1"))?,
        bn2: BatchNorm1d::new(c, BatchNormConfig::default(), vb.pp("bn2"))?,
        conv2: Conv1d::new(c, c, k, cfg, vb.pp("conv2"))?,
    })
}

fn composed(x: &Tensor, n: &Layers) -> Result<Tensor> {
    let a1 = n.bn1.forward_act(x, ForwardMode::Train, Activation::Relu)?;
    let h1 = candle_core::Module::forward(&n.conv1, &a1)?;
    let a2 = n
        .bn2
        .forward_act(&h1, ForwardMode::Train, Activation::Relu)?;
    let h2 = candle_core::Module::forward(&n.conv2, &a2)?;
    x + h2
}

fn fused(x: &Tensor, n: &Layers) -> Result<Option<Tensor>> {
    batch_norm_block_train(x, (&n.bn1, &n.conv1), (&n.bn2, &n.conv2), Activation::Relu)
}

/// `[x, w1, w2, gamma1, beta1, gamma2, beta2]` for `(b, c, l)` and kernel `k`.
fn inputs(
    rng: &mut SeededRng,
    (b, c, l): (usize, usize, usize),
    k: usize,
    dt: DType,
) -> Vec<Tensor> {
    let scale = 1.0 / ((c * k) as f64).sqrt();
    vec![
        randn(rng, &[b, c, l], dt),
        (randn(rng, &[c, c, k], dt) * scale).unwrap(),
        (randn(rng, &[c, c, k], dt) * scale).unwrap(),
        randn(rng, &[c], dt).affine(0.3, 1.0).unwrap(),
        (randn(rng, &[c], dt) * 0.2).unwrap(),
        randn(rng, &[c], dt).affine(0.3, 1.0).unwrap(),
        (randn(rng, &[c], dt) * 0.2).unwrap(),
    ]
}

/// Fresh variables holding `values`, the block `build` computes on them (with whatever else it
/// returns), and the gradients of `(y * r).sum()` for every input.
fn with_grads<S>(
    values: &[Tensor],
    r: &Tensor,
    build: impl FnOnce(&[Tensor]) -> Result<(Tensor, S)>,
) -> Result<(Tensor, Vec<Tensor>, S)> {
    let vars: Vec<Var> = values
        .iter()
        .map(|t| Var::from_tensor(&t.copy()?))
        .collect::<Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (y, extra) = build(&ts)?;
    let grads = y.mul(r)?.sum_all()?.backward()?;
    let g = ts
        .iter()
        .map(|t| grads.get(t).cloned().expect("a gradient for every input"))
        .collect();
    Ok((y, g, extra))
}

/// The output, the gradients of `(y * r).sum()` for all seven inputs and the four running
/// statistics, from fresh variables holding `values`.
fn run(
    values: &[Tensor],
    r: &Tensor,
    spec: Conv1dSpec,
    one_op: bool,
) -> Result<(Tensor, Vec<Tensor>, Vec<Tensor>)> {
    let (y, g, n) = with_grads(values, r, |ts| {
        let n = layers(&ts[1..], spec, false)?;
        let y = if one_op {
            fused(&ts[0], &n)?.expect("the one-op block applies here")
        } else {
            composed(&ts[0], &n)?
        };
        Ok((y, n))
    })?;
    let stats = vec![
        n.bn1.running_mean().clone(),
        n.bn1.running_var().clone(),
        n.bn2.running_mean().clone(),
        n.bn2.running_var().clone(),
    ];
    Ok((y, g, stats))
}

#[test]
fn one_op_block_equals_the_composed_block_bit_for_bit() -> Result<()> {
    let mut rng = SeededRng::new(7);
    // ((batch, channels, len), kernel, padding, mode): outputs of 256 samples or more take one
    // product per sample, shorter ones one product over all positions, short sequences (HARNet10's
    // lengths 15 and 3) one product with an im2col matrix.
    let cases = [
        ((4, 6, 15), 5, 2, PaddingMode::Circular),
        ((3, 4, 3), 5, 2, PaddingMode::Circular),
        ((3, 6, 7), 3, 1, PaddingMode::Zeros),
        ((3, 6, 40), 5, 2, PaddingMode::Circular),
        ((3, 6, 40), 5, 2, PaddingMode::Zeros),
        ((2, 4, 300), 3, 1, PaddingMode::Circular),
        ((2, 5, 260), 5, 2, PaddingMode::Zeros),
    ];
    let names = ["x", "w1", "w2", "gamma1", "beta1", "gamma2", "beta2"];
    for dt in [DType::F32, DType::F64] {
        for &(shape, k, pad, mode) in &cases {
            let spec = Conv1dSpec {
                padding: pad,
                padding_mode: mode,
                ..Default::default()
            };
            let values = inputs(&mut rng, shape, k, dt);
            let r = randn(&mut rng, &[shape.0, shape.1, shape.2], dt);
            let (y0, g0, s0) = run(&values, &r, spec, false)?;
            let (y1, g1, s1) = run(&values, &r, spec, true)?;
            let what = format!("{dt:?} {shape:?} k={k} {mode:?}");
            assert_eq!(bits(&y0), bits(&y1), "output, {what}");
            for ((a, b), name) in g0.iter().zip(&g1).zip(names) {
                assert_eq!(bits(a), bits(b), "gradient of {name}, {what}");
            }
            for (i, (a, b)) in s0.iter().zip(&s1).enumerate() {
                assert_eq!(bits(a), bits(b), "running statistic {i}, {what}");
            }
            // The running statistics moved away from their start (the op recorded the batch).
            let moved = s1[0]
                .abs()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            assert!(moved > 0.0, "running mean not updated, {what}");
        }
    }
    Ok(())
}

#[test]
fn one_op_block_gradients_match_central_differences() -> Result<()> {
    let mut rng = SeededRng::new(11);
    // Long enough for shifted views of the padded batch, and short (an im2col matrix).
    for (mode, len) in [
        (PaddingMode::Circular, 24),
        (PaddingMode::Zeros, 24),
        (PaddingMode::Circular, 5),
        (PaddingMode::Zeros, 4),
    ] {
        let spec = Conv1dSpec {
            padding: 1,
            padding_mode: mode,
            ..Default::default()
        };
        let values = inputs(&mut rng, (2, 3, len), 3, DType::F64);
        let report = check_gradients(
            |ts: &[Tensor]| {
                let n = layers(&ts[1..], spec, false)?;
                fused(&ts[0], &n)?
                    .ok_or_else(|| candle_core::Error::Msg("the one-op block did not apply".into()))
            },
            &values,
        )?;
        report.assert_ok(&format!(
            "one-op residual block, {mode:?} padding, length {len}"
        ));
    }
    Ok(())
}

#[test]
fn one_op_block_declines_where_it_does_not_apply() -> Result<()> {
    let mut rng = SeededRng::new(3);
    let spec = Conv1dSpec {
        padding: 2,
        padding_mode: PaddingMode::Circular,
        ..Default::default()
    };
    // Circular padding longer than the signal it wraps.
    let v = inputs(&mut rng, (4, 6, 1), 5, DType::F32);
    assert!(fused(&v[0], &layers(&v[1..], spec, false)?)?.is_none());
    // Convolutions with a bias.
    let v = inputs(&mut rng, (3, 6, 40), 5, DType::F32);
    assert!(fused(&v[0], &layers(&v[1..], spec, true)?)?.is_none());
    // The portable path forced (what a GPU runs).
    let n = layers(&v[1..], spec, false)?;
    assert!(with_portable_ops(|| fused(&v[0], &n))?.is_none());
    // A length the convolution does not keep (no padding).
    let unpadded = Conv1dSpec::default();
    assert!(fused(&v[0], &layers(&v[1..], unpadded, false)?)?.is_none());
    // And where it applies, it gives a value (so the cases above are not vacuous).
    assert!(fused(&v[0], &n)?.is_some());
    Ok(())
}

/// The U-Net block's layers over `[w1, b1, w2, b2, gamma1, beta1, gamma2, beta2]` and, when
/// `C_in != C_out`, `[w_skip, b_skip]` after them.
struct GnLayers {
    gn1: GroupNorm,
    conv1: Conv1d,
    gn2: GroupNorm,
    conv2: Conv1d,
    skip: Option<Conv1d>,
}

fn gn_layers(params: &[Tensor], spec: Conv1dSpec, groups: (usize, usize)) -> Result<GnLayers> {
    let (c_out, c_in, k) = params[0].dims3()?;
    let dt = params[0].dtype();
    let names = [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "gn1.weight",
        "gn1.bias",
        "gn2.weight",
        "gn2.bias",
        "skip.weight",
        "skip.bias",
    ];
    let map: HashMap<String, Tensor> = names
        .iter()
        .zip(params)
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let vb = VarBuilder::from_tensors(map, dt, &Device::Cpu);
    let cfg = Conv1dConfig { spec, bias: true };
    let skip_cfg = Conv1dConfig {
        spec: Conv1dSpec::default(),
        bias: true,
    };
    Ok(GnLayers {
        gn1: GroupNorm::new(groups.0, c_in, 1e-5, vb.pp("gn1"))?,
        conv1: Conv1d::new(c_in, c_out, k, cfg, vb.pp("conv1"))?,
        gn2: GroupNorm::new(groups.1, c_out, 1e-5, vb.pp("gn2"))?,
        conv2: Conv1d::new(c_out, c_out, k, cfg, vb.pp("conv2"))?,
        skip: if params.len() > 8 {
            Some(Conv1d::new(c_in, c_out, 1, skip_cfg, vb.pp("skip"))?)
        } else {
            None
        },
    })
}

/// `[x, scale, shift, w1, b1, w2, b2, gamma1, beta1, gamma2, beta2, (w_skip, b_skip)]`.
fn gn_inputs(
    rng: &mut SeededRng,
    (b, c_in, c_out, l): (usize, usize, usize, usize),
    k: usize,
    dt: DType,
) -> Vec<Tensor> {
    let s1 = 1.0 / ((c_in * k) as f64).sqrt();
    let s2 = 1.0 / ((c_out * k) as f64).sqrt();
    let mut v = vec![
        randn(rng, &[b, c_in, l], dt),
        randn(rng, &[b, c_out], dt).affine(0.2, 1.0).unwrap(),
        (randn(rng, &[b, c_out], dt) * 0.3).unwrap(),
        (randn(rng, &[c_out, c_in, k], dt) * s1).unwrap(),
        (randn(rng, &[c_out], dt) * 0.1).unwrap(),
        (randn(rng, &[c_out, c_out, k], dt) * s2).unwrap(),
        (randn(rng, &[c_out], dt) * 0.1).unwrap(),
        randn(rng, &[c_in], dt).affine(0.3, 1.0).unwrap(),
        (randn(rng, &[c_in], dt) * 0.2).unwrap(),
        randn(rng, &[c_out], dt).affine(0.3, 1.0).unwrap(),
        (randn(rng, &[c_out], dt) * 0.2).unwrap(),
    ];
    if c_in != c_out {
        v.push((randn(rng, &[c_out, c_in, 1], dt) * (1.0 / (c_in as f64).sqrt())).unwrap());
        v.push((randn(rng, &[c_out], dt) * 0.1).unwrap());
    }
    v
}

fn gn_composed(ts: &[Tensor], n: &GnLayers) -> Result<Tensor> {
    let (x, scale, shift) = (&ts[0], &ts[1], &ts[2]);
    let a1 = n.gn1.forward_act(x, Activation::Silu)?;
    let h1 = candle_core::Module::forward(&n.conv1, &a1)?;
    let a2 = n
        .gn2
        .forward_modulated(&h1, scale, shift, Activation::Silu)?;
    let h2 = candle_core::Module::forward(&n.conv2, &a2)?;
    match &n.skip {
        None => x + h2,
        Some(s) => candle_core::Module::forward(s, x)? + h2,
    }
}

fn gn_fused(ts: &[Tensor], n: &GnLayers) -> Result<Option<Tensor>> {
    group_norm_block_train(
        &ts[0],
        (&n.gn1, &n.conv1),
        (&n.gn2, &ts[1], &ts[2], &n.conv2),
        n.skip.as_ref(),
        Activation::Silu,
    )
}

#[test]
fn one_op_unet_block_equals_the_composed_block_bit_for_bit() -> Result<()> {
    let mut rng = SeededRng::new(17);
    // ((batch, c_in, c_out, len), kernel, padding mode, groups)
    let cases = [
        ((3, 8, 8, 40), 3, PaddingMode::Zeros, (2, 4)),
        ((3, 8, 12, 40), 3, PaddingMode::Zeros, (4, 3)),
        ((2, 6, 4, 300), 3, PaddingMode::Circular, (3, 2)),
        ((2, 4, 4, 260), 5, PaddingMode::Zeros, (2, 2)),
        ((3, 8, 8, 6), 3, PaddingMode::Zeros, (2, 4)),
        ((3, 8, 12, 9), 3, PaddingMode::Circular, (4, 3)),
    ];
    for dt in [DType::F32, DType::F64] {
        for &(shape, k, mode, groups) in &cases {
            let spec = Conv1dSpec {
                padding: k / 2,
                padding_mode: mode,
                ..Default::default()
            };
            let values = gn_inputs(&mut rng, shape, k, dt);
            let r = randn(&mut rng, &[shape.0, shape.2, shape.3], dt);
            let mut outs = Vec::new();
            for one_op in [false, true] {
                let (y, g, ()) = with_grads(&values, &r, |ts| {
                    let n = gn_layers(&ts[3..], spec, groups)?;
                    let y = if one_op {
                        gn_fused(ts, &n)?.expect("the one-op block applies here")
                    } else {
                        gn_composed(ts, &n)?
                    };
                    Ok((y, ()))
                })?;
                outs.push((y, g));
            }
            let what = format!("{dt:?} {shape:?} k={k} {mode:?}");
            assert_eq!(bits(&outs[0].0), bits(&outs[1].0), "output, {what}");
            for (i, (a, b)) in outs[0].1.iter().zip(&outs[1].1).enumerate() {
                assert_eq!(bits(a), bits(b), "gradient of input {i}, {what}");
            }
        }
    }
    Ok(())
}

#[test]
fn one_op_unet_block_gradients_match_central_differences() -> Result<()> {
    let mut rng = SeededRng::new(19);
    for shape in [(2, 4, 4, 20), (2, 4, 6, 20), (2, 4, 6, 5)] {
        let spec = Conv1dSpec {
            padding: 1,
            ..Default::default()
        };
        let values = gn_inputs(&mut rng, shape, 3, DType::F64);
        let report = check_gradients(
            |ts: &[Tensor]| {
                let n = gn_layers(&ts[3..], spec, (2, 2))?;
                gn_fused(ts, &n)?
                    .ok_or_else(|| candle_core::Error::Msg("the one-op block did not apply".into()))
            },
            &values,
        )?;
        report.assert_ok(&format!("one-op U-Net block {shape:?}"));
    }
    Ok(())
}

#[test]
fn one_op_unet_block_declines_where_it_does_not_apply() -> Result<()> {
    let mut rng = SeededRng::new(23);
    let spec = Conv1dSpec {
        padding: 1,
        ..Default::default()
    };
    let v = gn_inputs(&mut rng, (3, 8, 8, 40), 3, DType::F32);
    let n = gn_layers(&v[3..], spec, (2, 2))?;
    // The portable path forced.
    assert!(with_portable_ops(|| gn_fused(&v, &n))?.is_none());
    // Channels change without a skip convolution.
    let w = gn_inputs(&mut rng, (3, 8, 12, 40), 3, DType::F32);
    let mut m = gn_layers(&w[3..], spec, (2, 2))?;
    m.skip = None;
    assert!(gn_fused(&w, &m)?.is_none());
    // A modulation of the wrong shape is an error, not a silent fallback.
    let bad = [v[0].clone(), v[1].narrow(0, 0, 2)?, v[2].clone()];
    assert!(gn_fused(&bad, &n).is_err());
    assert!(gn_fused(&v, &n)?.is_some());
    Ok(())
}
