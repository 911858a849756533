//! HARNet10 encoder throughput on CPU at batch 64 (3 x 300 windows), full width (1024-d,
//! about 10.5 M parameters) and width 0.25 (256-d):
//!
//! - `encoder_forward/*`: inference, `encode_detached` (eval mode, no autograd graph);
//! - `encoder_forward_backward/*`: train-mode forward, mean of squared representations, backward
//!   to every parameter (the encoder's share of a pretraining step, without the optimiser).
//!
//! Throughput in windows/s. `CANDLE_NUM_THREADS` defaults to 1, as in the `flowfm` binary.
//!
//! `cargo bench -p flowfm-benches --bench encoder`

// criterion_group! and criterion_main! generate functions without docs.
#![allow(missing_docs)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use flowfm_core::init::seeded_var_builder;
use flowfm_core::{ForwardMode, SeededRng};
use flowfm_models::{EncoderConfig, HarNet};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 64;

fn encoders() -> Vec<(&'static str, HarNet)> {
    [("harnet10_full", 1.0), ("harnet10_w0.25", 0.25)]
        .into_iter()
        .map(|(name, width)| {
            let vm = VarMap::new();
            let enc = HarNet::new(
                EncoderConfig::harnet10().with_width(width),
                seeded_var_builder(&vm, 1, DType::F32, &Device::Cpu),
            )
            .expect("encoder");
            (name, enc)
        })
        .collect()
}

fn input() -> Tensor {
    SeededRng::new(3)
        .normal_tensor((BATCH, 3, 300), DType::F32, &Device::Cpu)
        .expect("input")
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
    secs: u64,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(secs))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(BATCH as u64));
    group
}

fn bench_forward(c: &mut Criterion) {
    let x = input();
    let encs = encoders();
    let mut group = configure(c, "encoder_forward", 6);
    for (name, enc) in &encs {
        group.bench_function(*name, |b| {
            b.iter(|| enc.encode_detached(&x).expect("forward"))
        });
    }
    group.finish();
}

fn bench_forward_backward(c: &mut Criterion) {
    let x = input();
    let encs = encoders();
    let mut group = configure(c, "encoder_forward_backward", 10);
    for (name, enc) in &encs {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let z = enc.forward(&x, ForwardMode::Train).expect("forward");
                z.sqr()
                    .and_then(|s| s.mean_all())
                    .and_then(|l| l.backward())
                    .expect("backward")
            })
        });
    }
    group.finish();
}

/// Every benchmark of this file (written out so the generated function needs no docs).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench_forward(&mut c);
    bench_forward_backward(&mut c);
}

criterion_main!(benches);
