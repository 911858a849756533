//! Finite-difference gradient checks (f64) of every network on small configurations: the input,
//! the conditioning and a subset of parameters at every depth.

mod common;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use common::*;
use flowfm_core::{Conditioning, DiffusionSteps, FlowTimes, ForwardMode, SeededRng, Tolerance};
use flowfm_models::{
    Classifier, ClassifierConfig, DiffusionUNet, Downsampling, EncoderConfig, FlowUNet, HarNet,
    LengthPolicy, MultiTaskHeads, NormKind, ProjectionConfig, ProjectionHead, StageConfig,
    UNetConfig,
};
use flowfm_ops::gradcheck::GradCheck;
use std::collections::HashMap;

fn checker() -> GradCheck {
    GradCheck {
        step: 1e-6,
        tolerance: Tolerance::new(1e-5, 1e-7),
        max_probes: 20,
        seed: 0,
    }
}

/// Checks the gradient of `forward(vb, inputs)` with respect to `inputs` and the parameters
/// `params`, rebuilding the network from tensors for every evaluation.
fn check_network<F>(
    vm_values: HashMap<String, Tensor>,
    params: &[&str],
    inputs: &[Tensor],
    what: &str,
    forward: F,
) where
    F: Fn(VarBuilder, &[Tensor]) -> Result<Tensor>,
{
    for p in params {
        assert!(vm_values.contains_key(*p), "no parameter `{p}` in {what}");
    }
    let n_in = inputs.len();
    let mut all: Vec<Tensor> = inputs.to_vec();
    all.extend(params.iter().map(|p| vm_values[*p].clone()));
    let f = |xs: &[Tensor]| {
        let mut map = vm_values.clone();
        for (p, t) in params.iter().zip(&xs[n_in..]) {
            map.insert(p.to_string(), t.clone());
        }
        let vb = VarBuilder::from_tensors(map, DType::F64, &Device::Cpu);
        forward(vb, &xs[..n_in])
    };
    let report = checker().run(f, &all, &vec![true; all.len()]).unwrap();
    report.assert_ok(what);
    // Every input and parameter was actually probed.
    for r in &report.inputs {
        assert!(r.probed > 0);
    }
}

fn tiny_encoder(norm: NormKind) -> EncoderConfig {
    EncoderConfig {
        in_channels: 3,
        window_len: 30,
        kernel_size: 5,
        stages: vec![
            StageConfig {
                channels: 4,
                res_blocks: 1,
                down_factor: 2,
                down_order: 2,
            },
            StageConfig {
                channels: 6,
                res_blocks: 1,
                down_factor: 5,
                down_order: 1,
            },
            StageConfig {
                channels: 8,
                res_blocks: 0,
                down_factor: 3,
                down_order: 1,
            },
        ],
        norm,
        width: 1.0,
    }
}

#[test]
fn encoder_gradients_match_finite_differences() {
    let mut rng = SeededRng::new(10);
    for (norm, mode) in [
        (NormKind::Batch, ForwardMode::Train),
        (NormKind::Batch, ForwardMode::Eval),
        (NormKind::Group { groups: 2 }, ForwardMode::Train),
    ] {
        let cfg = tiny_encoder(norm);
        let (vm, vb) = seeded(1, DType::F64);
        let net = HarNet::new(cfg.clone(), vb).unwrap();
        // Non-trivial running statistics for the eval-mode check.
        let x = randn(&mut rng, &[2, 3, 30], DType::F64);
        net.forward(&x, ForwardMode::Train).unwrap();
        let params = [
            "stages.0.conv.weight",
            "stages.0.blocks.0.bn1.weight",
            "stages.0.blocks.0.conv2.weight",
            "stages.1.blocks.0.bn2.bias",
            "stages.2.conv.weight",
            "stages.2.bn.weight",
        ];
        check_network(
            snapshot(&vm),
            &params,
            &[x],
            &format!("HarNet {norm:?} {mode:?}"),
            |vb, xs| HarNet::new(cfg.clone(), vb)?.forward(&xs[0], mode),
        );
    }
}

fn tiny_unet(downsampling: Downsampling) -> UNetConfig {
    UNetConfig {
        in_channels: 2,
        base_channels: 4,
        channel_mults: vec![1, 2],
        res_blocks: 1,
        time_embed_dim: 6,
        cond_dim: 5,
        cond_embed_dim: 4,
        groups: 2,
        kernel_size: 3,
        downsampling,
        length_policy: LengthPolicy::ZeroPad,
        time_scale: 1000.0,
    }
}

#[test]
fn velocity_field_gradients_match_finite_differences() {
    let mut rng = SeededRng::new(11);
    for (down, len) in [(Downsampling::Blur, 10), (Downsampling::StridedConv, 9)] {
        let cfg = tiny_unet(down);
        let (vm, vb) = seeded(2, DType::F64);
        FlowUNet::new(cfg.clone(), vb).unwrap();
        let x = randn(&mut rng, &[2, 2, len], DType::F64);
        let z = randn(&mut rng, &[2, 5], DType::F64);
        let t = FlowTimes::from_values(&[0.3, 0.8], DType::F64, &Device::Cpu).unwrap();
        let mut params = vec![
            "conv_in.weight",
            "time_mlp.fc1.weight",
            "cond_mlp.fc2.bias",
            "down.0.blocks.0.film.weight",
            "down.1.blocks.0.skip.weight",
            "mid.1.norm2.weight",
            "up.1.blocks.0.conv1.weight",
            "up.1.upsample.weight",
            "up.0.blocks.0.norm1.bias",
            "out_norm.weight",
            "conv_out.bias",
        ];
        if down == Downsampling::StridedConv {
            params.push("down.0.downsample.weight");
        }
        check_network(
            snapshot(&vm),
            &params,
            &[x, z],
            &format!("FlowUNet {down:?} L={len}"),
            |vb, xs| {
                FlowUNet::new(cfg.clone(), vb)?.forward(
                    &xs[0],
                    &t,
                    &Conditioning::Representation(xs[1].clone()),
                )
            },
        );
    }
}

#[test]
fn unconditional_and_diffusion_gradients_match_finite_differences() {
    let mut rng = SeededRng::new(12);
    let cfg = tiny_unet(Downsampling::Blur);
    let (vm, vb) = seeded(3, DType::F64);
    DiffusionUNet::new(cfg.clone(), vb).unwrap();
    let mut values = snapshot(&vm);
    // A non-zero null embedding, so its gradient path is exercised away from its init.
    values.insert("null_cond".into(), randn(&mut rng, &[4], DType::F64));
    let x = randn(&mut rng, &[2, 2, 8], DType::F64);
    let k = DiffusionSteps::new(vec![10, 700], 1000).unwrap();
    check_network(
        values,
        &[
            "null_cond",
            "down.1.blocks.0.conv2.weight",
            "time_mlp.fc2.weight",
        ],
        &[x],
        "DiffusionUNet unconditional",
        |vb, xs| DiffusionUNet::new(cfg.clone(), vb)?.forward(&xs[0], &k, &Conditioning::None),
    );
}

#[test]
fn head_gradients_match_finite_differences() {
    let mut rng = SeededRng::new(13);
    let z = randn(&mut rng, &[3, 7], DType::F64);

    let cfg = ClassifierConfig {
        in_dim: 7,
        hidden: 5,
        classes: 4,
    };
    let (vm, vb) = seeded(4, DType::F64);
    Classifier::new(cfg.clone(), vb).unwrap();
    check_network(
        snapshot(&vm),
        &["fc1.weight", "fc1.bias", "fc2.weight"],
        std::slice::from_ref(&z),
        "Classifier",
        |vb, xs| Classifier::new(cfg.clone(), vb)?.forward(&xs[0]),
    );

    let pcfg = ProjectionConfig {
        in_dim: 7,
        hidden: 7,
        out_dim: 3,
    };
    let (vm, vb) = seeded(5, DType::F64);
    ProjectionHead::new(pcfg.clone(), vb).unwrap();
    check_network(
        snapshot(&vm),
        &["fc1.weight", "fc2.bias"],
        std::slice::from_ref(&z),
        "ProjectionHead",
        |vb, xs| ProjectionHead::new(pcfg.clone(), vb)?.forward(&xs[0]),
    );

    let (vm, vb) = seeded(6, DType::F64);
    MultiTaskHeads::new(7, vb).unwrap();
    check_network(
        snapshot(&vm),
        &[
            "arrow_of_time.weight",
            "permutation.bias",
            "time_warp.weight",
        ],
        &[z],
        "MultiTaskHeads",
        |vb, xs| {
            let l = MultiTaskHeads::new(7, vb)?.forward(&xs[0])?;
            Tensor::cat(&[&l.arrow_of_time, &l.permutation, &l.time_warp], 1)
        },
    );
}
