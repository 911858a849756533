//! The fused kernels of issue 17 against the composed paths they replace, at the HARNet10 and
//! paper-size U-Net shapes (batch 64):
//!
//! - `norm_relu_fwd_bwd/*`: training batch norm + ReLU, forward and backward, on HARNet10's four
//!   large activations; `fused` is one op (`BatchNorm1d::forward_act`), `separate` the norm op
//!   followed by candle's ReLU (the path before).
//! - `groupnorm_silu_fwd_bwd/*`: group norm (8 groups) + SiLU on the U-Net's three levels
//!   (48/96/192 channels at 300/150/75 samples), fused against norm then candle's SiLU.
//! - `norm_conv_eval/*`: graph-free evaluation of group norm + SiLU + convolution (+ residual),
//!   a U-Net block's second half at its three levels: `prepared` is one pass
//!   (`conv1d_prepared`: the norm applied while the convolution copies its input, the residual
//!   added inside), `separate` the fused norm, the convolution and the sum one after the other.
//! - `bn_block_fwd_bwd/*`: a HARNet10 residual block in training (batch norm + ReLU + convolution,
//!   twice, plus the residual), forward and backward, at HARNet10's four stages with blocks;
//!   `one_op` is `block::batch_norm_block_train`, `composed` the layers one op each.
//! - `gn_block_fwd_bwd/*`: a paper-size U-Net residual block in training (group norm + SiLU +
//!   convolution with bias, the second norm FiLM-modulated, plus the residual) at its three
//!   levels; `one_op` is `block::group_norm_block_train`, `composed` the layers one op each.
//! - `adamw_step/*`: one AdamW update of every HARNet10 parameter (10.5 M), the fused in-place
//!   pass against the composed candle ops (`adamw_step_composed`).
//!
//! Throughput in elements (activation values, or parameters for AdamW).
//! `cargo bench -p flowfm-benches --bench fused`

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use flowfm_core::init::seeded_var_builder;
use flowfm_core::{ForwardMode, SeededRng};
use flowfm_models::{EncoderConfig, HarNet};
use flowfm_ops::conv::conv1d_prepared;
use flowfm_ops::fused_norm::Activation;
use flowfm_ops::optim::{adamw_step_composed, AdamW, AdamWConfig, ComposedState};
use flowfm_ops::{
    conv1d_bias, BatchNorm1d, BatchNormConfig, Conv1d, Conv1dConfig, Conv1dSpec, GroupNorm,
    PaddingMode,
};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 64;

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g
}

/// A tracked input, so that backward runs through the norm to `x` as in a network.
fn input(rng: &mut SeededRng, shape: (usize, usize, usize)) -> Var {
    Var::from_tensor(
        &rng.normal_tensor(shape, DType::F32, &Device::Cpu)
            .expect("input"),
    )
    .expect("var")
}

fn bench_norm_relu(c: &mut Criterion) {
    let mut rng = SeededRng::new(0);
    let mut g = group(c, "norm_relu_fwd_bwd");
    for (ch, len) in [(64usize, 300usize), (128, 150), (256, 75), (512, 15)] {
        let vm = VarMap::new();
        let bn = BatchNorm1d::new(
            ch,
            BatchNormConfig::default(),
            seeded_var_builder(&vm, 1, DType::F32, &Device::Cpu),
        )
        .expect("bn");
        let x = input(&mut rng, (BATCH, ch, len));
        g.throughput(Throughput::Elements((BATCH * ch * len) as u64));
        let id = format!("{ch}ch_L{len}");
        g.bench_with_input(BenchmarkId::new("fused", &id), &(), |b, _| {
            b.iter(|| {
                let y = bn
                    .forward_act(x.as_tensor(), ForwardMode::Train, Activation::Relu)
                    .expect("forward");
                y.sum_all().and_then(|s| s.backward()).expect("backward")
            })
        });
        g.bench_with_input(BenchmarkId::new("separate", &id), &(), |b, _| {
            b.iter(|| {
                let y = bn
                    .forward(x.as_tensor(), ForwardMode::Train)
                    .and_then(|y| y.relu())
                    .expect("forward");
                y.sum_all().and_then(|s| s.backward()).expect("backward")
            })
        });
    }
    g.finish();
}

fn bench_groupnorm_silu(c: &mut Criterion) {
    let mut rng = SeededRng::new(1);
    let mut g = group(c, "groupnorm_silu_fwd_bwd");
    for (ch, len) in [(48usize, 300usize), (96, 150), (192, 75)] {
        let vm = VarMap::new();
        let gn = GroupNorm::new(
            8,
            ch,
            1e-5,
            seeded_var_builder(&vm, 1, DType::F32, &Device::Cpu),
        )
        .expect("gn");
        let x = input(&mut rng, (BATCH, ch, len));
        g.throughput(Throughput::Elements((BATCH * ch * len) as u64));
        let id = format!("{ch}ch_L{len}");
        g.bench_with_input(BenchmarkId::new("fused", &id), &(), |b, _| {
            b.iter(|| {
                let y = gn
                    .forward_act(x.as_tensor(), Activation::Silu)
                    .expect("forward");
                y.sum_all().and_then(|s| s.backward()).expect("backward")
            })
        });
        g.bench_with_input(BenchmarkId::new("separate", &id), &(), |b, _| {
            b.iter(|| {
                let y = gn
                    .forward(x.as_tensor())
                    .and_then(|y| y.silu())
                    .expect("forward");
                y.sum_all().and_then(|s| s.backward()).expect("backward")
            })
        });
    }
    g.finish();
}

fn bench_adamw(c: &mut Criterion) {
    let vm = VarMap::new();
    let _net = HarNet::new(
        EncoderConfig::harnet10(),
        seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu),
    )
    .expect("encoder");
    let params: Vec<(String, Var)> = {
        let data = vm.data().lock().expect("varmap");
        data.iter()
            .filter(|(n, _)| !flowfm_ops::norm::is_buffer_name(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    };
    let n: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    // Gradients: d/dp sum(p * 0.001 * (1 + index of p)), built once.
    let mut loss = Tensor::new(0f32, &Device::Cpu).expect("zero");
    for (i, (_, v)) in params.iter().enumerate() {
        let term = (v.as_tensor() * (0.001 * (i + 1) as f64))
            .and_then(|t| t.sum_all())
            .expect("term");
        loss = (loss + term).expect("sum");
    }
    let grads = loss.backward().expect("backward");
    let cfg = AdamWConfig::default();
    let mut g = group(c, "adamw_step");
    g.throughput(Throughput::Elements(n as u64));
    let mut opt = AdamW::new(params.clone(), cfg).expect("adamw");
    g.bench_function("fused/harnet10", |b| {
        b.iter(|| opt.step(&grads, 1e-4).expect("step"))
    });
    let mut states: Vec<ComposedState> = params
        .iter()
        .map(|(_, v)| ComposedState::zeros(v, &cfg).expect("state"))
        .collect();
    let mut step = 0u64;
    g.bench_function("composed/harnet10", |b| {
        b.iter(|| {
            step += 1;
            for ((_, var), state) in params.iter().zip(states.iter_mut()) {
                let grad = grads.get(var.as_tensor()).expect("grad");
                *state = adamw_step_composed(var, grad, state, &cfg, step, 1e-4).expect("step");
            }
        })
    });
    g.finish();
}

fn bench_norm_conv_eval(c: &mut Criterion) {
    let mut rng = SeededRng::new(3);
    let mut g = group(c, "norm_conv_eval");
    let spec = Conv1dSpec {
        padding: 1,
        ..Default::default()
    };
    for (ch, len) in [(48usize, 300usize), (96, 150), (192, 75)] {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 2, DType::F32, &Device::Cpu);
        let gn = GroupNorm::new(8, ch, 1e-5, vb).expect("group norm");
        let x = rng
            .normal_tensor((BATCH, ch, len), DType::F32, &Device::Cpu)
            .expect("x");
        let w = (rng
            .normal_tensor((ch, ch, 3), DType::F32, &Device::Cpu)
            .expect("w")
            * 0.05)
            .expect("scale");
        let b = Tensor::zeros(ch, DType::F32, &Device::Cpu).expect("bias");
        g.throughput(Throughput::Elements((BATCH * ch * len) as u64));
        g.bench_function(
            BenchmarkId::new("prepared", format!("{ch}x{len}")),
            |bench| {
                bench.iter(|| {
                    flowfm_ops::on_worker(|| {
                        let prep = gn.row_affine(&x, Activation::Silu)?;
                        conv1d_prepared(&x, Some(&prep), &w, Some(&b), Some(&x), &spec)
                    })
                    .expect("prepared")
                })
            },
        );
        g.bench_function(
            BenchmarkId::new("separate", format!("{ch}x{len}")),
            |bench| {
                bench.iter(|| {
                    flowfm_ops::on_worker(|| {
                        let h = gn.forward_act(&x, Activation::Silu)?;
                        &x + conv1d_bias(&h, &w, &b, &spec)?
                    })
                    .expect("separate")
                })
            },
        );
    }
    g.finish();
}

fn bench_bn_block(c: &mut Criterion) {
    let mut rng = SeededRng::new(4);
    let mut g = group(c, "bn_block_fwd_bwd");
    let cfg = Conv1dConfig {
        spec: Conv1dSpec {
            padding: 2,
            padding_mode: PaddingMode::Circular,
            ..Default::default()
        },
        bias: false,
    };
    for (ch, len) in [(64usize, 300usize), (128, 150), (256, 75), (512, 15)] {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 5, DType::F32, &Device::Cpu);
        let bn1 = BatchNorm1d::new(ch, BatchNormConfig::default(), vb.pp("bn1")).expect("bn1");
        let conv1 = Conv1d::new(ch, ch, 5, cfg, vb.pp("conv1")).expect("conv1");
        let bn2 = BatchNorm1d::new(ch, BatchNormConfig::default(), vb.pp("bn2")).expect("bn2");
        let conv2 = Conv1d::new(ch, ch, 5, cfg, vb.pp("conv2")).expect("conv2");
        let x = input(&mut rng, (BATCH, ch, len));
        g.throughput(Throughput::Elements((BATCH * ch * len) as u64));
        g.bench_function(BenchmarkId::new("one_op", format!("{ch}x{len}")), |bench| {
            bench.iter(|| {
                flowfm_ops::on_worker(|| {
                    let y = flowfm_ops::block::batch_norm_block_train(
                        x.as_tensor(),
                        (&bn1, &conv1),
                        (&bn2, &conv2),
                        Activation::Relu,
                    )?
                    .ok_or_else(|| candle_core::Error::Msg("block did not apply".into()))?;
                    y.sqr()?.mean_all()?.backward()
                })
                .expect("one op")
            })
        });
        g.bench_function(
            BenchmarkId::new("composed", format!("{ch}x{len}")),
            |bench| {
                bench.iter(|| {
                    flowfm_ops::on_worker(|| {
                        let a =
                            bn1.forward_act(x.as_tensor(), ForwardMode::Train, Activation::Relu)?;
                        let h = candle_core::Module::forward(&conv1, &a)?;
                        let a = bn2.forward_act(&h, ForwardMode::Train, Activation::Relu)?;
                        let y = (x.as_tensor() + candle_core::Module::forward(&conv2, &a)?)?;
                        y.sqr()?.mean_all()?.backward()
                    })
                    .expect("composed")
                })
            },
        );
    }
    g.finish();
}

fn bench_gn_block(c: &mut Criterion) {
    let mut rng = SeededRng::new(6);
    let mut g = group(c, "gn_block_fwd_bwd");
    let cfg = Conv1dConfig {
        spec: Conv1dSpec {
            padding: 1,
            ..Default::default()
        },
        bias: true,
    };
    for (ch, len) in [(48usize, 300usize), (96, 150), (192, 75)] {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 7, DType::F32, &Device::Cpu);
        let gn1 = GroupNorm::new(8, ch, 1e-5, vb.pp("gn1")).expect("gn1");
        let conv1 = Conv1d::new(ch, ch, 3, cfg, vb.pp("conv1")).expect("conv1");
        let gn2 = GroupNorm::new(8, ch, 1e-5, vb.pp("gn2")).expect("gn2");
        let conv2 = Conv1d::new(ch, ch, 3, cfg, vb.pp("conv2")).expect("conv2");
        let x = input(&mut rng, (BATCH, ch, len));
        let scale = Var::from_tensor(
            &rng.normal_tensor((BATCH, ch), DType::F32, &Device::Cpu)
                .and_then(|t| t.affine(0.1, 1.0))
                .expect("scale"),
        )
        .expect("var");
        let shift = Var::from_tensor(
            &(rng
                .normal_tensor((BATCH, ch), DType::F32, &Device::Cpu)
                .expect("shift")
                * 0.1)
                .expect("shift"),
        )
        .expect("var");
        g.throughput(Throughput::Elements((BATCH * ch * len) as u64));
        g.bench_function(BenchmarkId::new("one_op", format!("{ch}x{len}")), |bench| {
            bench.iter(|| {
                flowfm_ops::on_worker(|| {
                    let y = flowfm_ops::block::group_norm_block_train(
                        x.as_tensor(),
                        (&gn1, &conv1),
                        (&gn2, scale.as_tensor(), shift.as_tensor(), &conv2),
                        None,
                        Activation::Silu,
                    )?
                    .ok_or_else(|| candle_core::Error::Msg("block did not apply".into()))?;
                    y.sqr()?.mean_all()?.backward()
                })
                .expect("one op")
            })
        });
        g.bench_function(
            BenchmarkId::new("composed", format!("{ch}x{len}")),
            |bench| {
                bench.iter(|| {
                    flowfm_ops::on_worker(|| {
                        let a = gn1.forward_act(x.as_tensor(), Activation::Silu)?;
                        let h = candle_core::Module::forward(&conv1, &a)?;
                        let a = gn2.forward_modulated(
                            &h,
                            scale.as_tensor(),
                            shift.as_tensor(),
                            Activation::Silu,
                        )?;
                        let y = (x.as_tensor() + candle_core::Module::forward(&conv2, &a)?)?;
                        y.sqr()?.mean_all()?.backward()
                    })
                    .expect("composed")
                })
            },
        );
    }
    g.finish();
}

/// Every benchmark of this file (written out so the generated function needs no docs).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench_norm_relu(&mut c);
    bench_groupnorm_silu(&mut c);
    bench_norm_conv_eval(&mut c);
    bench_bn_block(&mut c);
    bench_gn_block(&mut c);
    bench_adamw(&mut c);
}

criterion_main!(benches);
