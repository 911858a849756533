//! Plain SGD on a fixed batch lowers the loss: a few steps of the downstream classifier on the
//! encoder, and one step of the joint flow-matching objective (gradients reach the encoder
//! through `z`), whose decrease matches the first-order prediction `lr * |grad|^2`.

mod common;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Optimizer, VarMap};
use common::*;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::{Conditioning, FlowTimes, ForwardMode, SeededRng};
use flowfm_models::{
    trainable_vars, Classifier, ClassifierConfig, EncoderConfig, FlowUNet, HarNet, UNetConfig,
};

/// Mean cross-entropy from logits and one-hot targets.
fn cross_entropy(logits: &Tensor, one_hot: &Tensor) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (logp * one_hot)?.sum(1)?.neg()?.mean_all()
}

#[test]
fn sgd_on_a_fixed_batch_lowers_the_classification_loss() {
    let mut rng = SeededRng::new(20);
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, 1, DType::F32, &Device::Cpu);
    let enc_cfg = EncoderConfig::harnet10().with_width(0.0625);
    let d = enc_cfg.repr_dim();
    let encoder = HarNet::new(enc_cfg, vb.pp("encoder")).unwrap();
    let head = Classifier::new(ClassifierConfig::new(d, 3), vb.pp("head")).unwrap();
    let x = randn(&mut rng, &[12, 3, 300], DType::F32);
    let labels: Vec<usize> = (0..12).map(|i| i % 3).collect();
    let one_hot: Vec<f32> = labels
        .iter()
        .flat_map(|&y| (0..3).map(move |c| if c == y { 1.0 } else { 0.0 }))
        .collect();
    let one_hot = Tensor::from_vec(one_hot, (12, 3), &Device::Cpu).unwrap();
    let loss = || {
        let z = encoder.forward(&x, ForwardMode::Train).unwrap();
        cross_entropy(&head.forward(&z).unwrap(), &one_hot).unwrap()
    };
    let mut sgd = candle_nn::SGD::new(trainable_vars(&vm).unwrap(), 0.05).unwrap();
    let first = loss().to_scalar::<f32>().unwrap();
    for _ in 0..8 {
        sgd.backward_step(&loss()).unwrap();
    }
    let last = loss().to_scalar::<f32>().unwrap();
    assert!(last < 0.8 * first, "loss {first} -> {last}");
}

#[test]
fn a_joint_flow_matching_step_lowers_the_loss_as_predicted_and_trains_the_encoder() {
    let mut rng = SeededRng::new(21);
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, 2, DType::F32, &Device::Cpu);
    let enc_cfg = EncoderConfig::harnet10().with_width(0.0625);
    let d = enc_cfg.repr_dim();
    let encoder = HarNet::new(enc_cfg, vb.pp("encoder")).unwrap();
    let field = FlowUNet::new(UNetConfig::small().with_cond_dim(d), vb.pp("field")).unwrap();
    let b = 8;
    let x1 = randn(&mut rng, &[b, 3, 300], DType::F32);
    let x0 = randn(&mut rng, &[b, 3, 300], DType::F32);
    let ts: Vec<f64> = (0..b).map(|i| (i as f64 + 0.5) / b as f64).collect();
    let t = FlowTimes::from_values(&ts, DType::F32, &Device::Cpu).unwrap();
    let tt = t.tensor().reshape((b, 1, 1)).unwrap();
    // x_t = (1 - t) x_0 + t x_1, target u = x_1 - x_0.
    let x_t = (x0.broadcast_mul(&(1.0 - &tt).unwrap()).unwrap() + x1.broadcast_mul(&tt).unwrap())
        .unwrap();
    let u = (&x1 - &x0).unwrap();
    let loss = || {
        let z = encoder.forward(&x1, ForwardMode::Train).unwrap();
        let v = field
            .forward(&x_t, &t, &Conditioning::Representation(z))
            .unwrap();
        (v - &u).unwrap().sqr().unwrap().mean_all().unwrap()
    };
    let l0 = loss();
    let grads = l0.backward().unwrap();
    let enc_w = vm
        .data()
        .lock()
        .unwrap()
        .get("encoder.stages.0.conv.weight")
        .unwrap()
        .as_tensor()
        .clone();
    let g = grads.get(&enc_w).expect("the loss reaches the encoder");
    assert!(
        g.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );

    // One SGD step of size lr lowers the loss by about lr * |grad|^2 (first order).
    let lr = 0.01;
    let vars = trainable_vars(&vm).unwrap();
    let grad_sq: f64 = vars
        .iter()
        .filter_map(|v| grads.get(v.as_tensor()))
        .map(|g| {
            g.to_dtype(DType::F64)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        })
        .sum();
    let mut sgd = candle_nn::SGD::new(vars, lr).unwrap();
    let first = l0.to_scalar::<f32>().unwrap() as f64;
    sgd.step(&grads).unwrap();
    let last = loss().to_scalar::<f32>().unwrap() as f64;
    let predicted = lr * grad_sq;
    let actual = first - last;
    assert!(
        actual > 0.5 * predicted && actual < 1.5 * predicted,
        "loss {first} -> {last}: decrease {actual}, first-order prediction {predicted}"
    );
}
