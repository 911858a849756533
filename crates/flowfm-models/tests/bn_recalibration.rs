//! Batch-norm recalibration of the HARNet encoder: the running statistics become the statistics
//! of each layer's inputs over the given windows (closed form for the first layer, whatever the
//! batching; for every layer, the batch statistics of a training-mode forward over one batch),
//! the new values live in the `VarMap`, and a group-norm encoder has nothing to recalibrate.

mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::*;
use flowfm_core::{ForwardMode, SeededRng, Tolerance};
use flowfm_models::{EncoderConfig, HarNet, NormKind, StageConfig};

const TOL: Tolerance = Tolerance::new(1e-4, 1e-5);

/// Two stages: 3 -> 4 channels with one residual block (three batch norms), 4 -> 6 channels
/// (one batch norm); 12 samples, kernel 3 (circular padding 1).
fn tiny() -> EncoderConfig {
    EncoderConfig {
        in_channels: 3,
        window_len: 12,
        kernel_size: 3,
        stages: vec![
            StageConfig {
                channels: 4,
                res_blocks: 1,
                down_factor: 2,
                down_order: 0,
            },
            StageConfig {
                channels: 6,
                res_blocks: 0,
                down_factor: 3,
                down_order: 0,
            },
        ],
        norm: NormKind::Batch,
        width: 1.0,
    }
}

fn value(vm: &candle_nn::VarMap, name: &str) -> Vec<f64> {
    values(vm)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no variable {name}"))
        .1
}

/// Windows `(n, 3, 12)` with a per-channel offset and scale, so the statistics are not trivial.
fn windows(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let mut x = Vec::with_capacity(n * 3 * 12);
    for _ in 0..n {
        for c in 0..3 {
            for _ in 0..12 {
                x.push((0.5 * c as f64 + (1.0 + c as f64) * rng.normal()) as f32);
            }
        }
    }
    x
}

fn batches(x: &[f32], sizes: &[usize]) -> Vec<Result<Tensor>> {
    let per = 3 * 12;
    let mut start = 0;
    sizes
        .iter()
        .map(|&b| {
            let t =
                Tensor::from_slice(&x[start * per..(start + b) * per], (b, 3, 12), &Device::Cpu);
            start += b;
            t
        })
        .collect()
}

#[test]
fn the_first_layer_gets_the_mean_and_unbiased_variance_of_its_inputs_whatever_the_batching() {
    let n = 7;
    let x = windows(n, 3);
    // The first batch norm (stages.0.blocks.0.bn1) normalises the stage's first convolution:
    // y[o, t] = sum_{i, k} w[o, i, k] x[i, (t + k - 1) mod 12], computed here by hand.
    let (vm, vb) = seeded(1, DType::F32);
    let net = HarNet::new(tiny(), vb).unwrap();
    let w = value(&vm, "stages.0.conv.weight");
    let (c_out, c_in, k, l) = (4, 3, 3, 12);
    let mut sum = vec![0f64; c_out];
    let mut ys = vec![Vec::new(); c_out];
    for win in 0..n {
        for (o, ys_o) in ys.iter_mut().enumerate() {
            for t in 0..l {
                let mut y = 0f64;
                for i in 0..c_in {
                    for j in 0..k {
                        let s = (t + l + j - 1) % l;
                        y += w[(o * c_in + i) * k + j] * x[(win * c_in + i) * l + s] as f64;
                    }
                }
                sum[o] += y;
                ys_o.push(y);
            }
        }
    }
    let count = (n * l) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let var: Vec<f64> = ys
        .iter()
        .zip(&mean)
        .map(|(v, m)| v.iter().map(|y| (y - m) * (y - m)).sum::<f64>() / (count - 1.0))
        .collect();
    assert!(var.iter().all(|&v| v > 1e-3), "degenerate inputs {var:?}");

    let set = net.recalibrate_batch_norm(batches(&x, &[3, 3, 1])).unwrap();
    assert_eq!(set, 4, "three norms in stage 0, one in stage 1");
    TOL.assert_close(&value(&vm, "stages.0.blocks.0.bn1.running_mean"), &mean);
    TOL.assert_close(&value(&vm, "stages.0.blocks.0.bn1.running_var"), &var);

    // Other batchings of the same windows give the same first-layer statistics.
    for sizes in [&[7][..], &[1, 2, 4][..]] {
        let (vm2, vb2) = seeded(1, DType::F32);
        let net2 = HarNet::new(tiny(), vb2).unwrap();
        net2.recalibrate_batch_norm(batches(&x, sizes)).unwrap();
        TOL.assert_close(&value(&vm2, "stages.0.blocks.0.bn1.running_mean"), &mean);
        TOL.assert_close(&value(&vm2, "stages.0.blocks.0.bn1.running_var"), &var);
    }
}

#[test]
fn every_layer_gets_the_batch_statistics_of_a_training_forward_over_one_batch() {
    let n = 6;
    let x = windows(n, 5);
    let (vm, vb) = seeded(2, DType::F32);
    let net = HarNet::new(tiny(), vb).unwrap();
    net.recalibrate_batch_norm(batches(&x, &[n])).unwrap();

    // A twin from the same seed, one training-mode forward: its running statistics move from
    // (0, 1) by momentum 0.1 towards the batch's mean and unbiased variance, so
    // batch = (running - 0.9 * initial) / 0.1.
    let (vm2, vb2) = seeded(2, DType::F32);
    let twin = HarNet::new(tiny(), vb2).unwrap();
    twin.forward(
        &Tensor::from_slice(&x, (n, 3, 12), &Device::Cpu).unwrap(),
        ForwardMode::Train,
    )
    .unwrap();
    let names = [
        "stages.0.blocks.0.bn1",
        "stages.0.blocks.0.bn2",
        "stages.0.bn",
        "stages.1.bn",
    ];
    for name in names {
        for (buffer, initial) in [("running_mean", 0.0), ("running_var", 1.0)] {
            let full = format!("{name}.{buffer}");
            let expected: Vec<f64> = value(&vm2, &full)
                .iter()
                .map(|r| (r - 0.9 * initial) / 0.1)
                .collect();
            let got = value(&vm, &full);
            if let Err(m) = TOL.check(&got, &expected) {
                panic!("{full}: {m}");
            }
            assert!(
                got.iter()
                    .zip(std::iter::repeat(initial))
                    .any(|(g, i)| (g - i).abs() > 1e-3),
                "{full} still at its initial value"
            );
        }
    }
}

#[test]
fn recalibration_changes_what_the_encoder_predicts_and_needs_windows() {
    let x = windows(5, 9);
    let (_, vb) = seeded(4, DType::F32);
    let net = HarNet::new(tiny(), vb).unwrap();
    let xt = Tensor::from_slice(&x, (5, 3, 12), &Device::Cpu).unwrap();
    let before: Vec<f32> = net
        .encode_detached(&xt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    net.recalibrate_batch_norm(batches(&x, &[5])).unwrap();
    let after: Vec<f32> = net
        .encode_detached(&xt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(before.iter().zip(&after).any(|(a, b)| (a - b).abs() > 1e-4));
    assert!(net.recalibrate_batch_norm(Vec::new()).is_err());
    let wrong = Tensor::zeros((2, 3, 10), DType::F32, &Device::Cpu);
    assert!(net.recalibrate_batch_norm(vec![wrong]).is_err());

    // Group norm keeps no running statistics: nothing to recalibrate.
    let (_, vb) = seeded(4, DType::F32);
    let gn = HarNet::new(tiny().with_norm(NormKind::Group { groups: 2 }), vb).unwrap();
    assert_eq!(gn.recalibrate_batch_norm(batches(&x, &[5])).unwrap(), 0);
}
