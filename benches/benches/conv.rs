//! conv1d forward+backward: flowfm's im2col op vs candle's CPU conv on HARNet10's shapes
//! (batch 64, kernel 5, circular padding 2 for ours, zero padding 2 for candle's).
//!
//! Throughput is reported in elements = FLOPs, so criterion's `elem/s` reads as FLOP/s.
//! `cargo bench -p flowfm-benches --bench conv`

// criterion_group! and criterion_main! generate functions without docs.
#![allow(missing_docs)]

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowfm_core::SeededRng;
use flowfm_ops::{conv1d, Conv1dSpec, PaddingMode};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SHAPES: [(usize, usize); 4] = [(64, 300), (128, 150), (256, 75), (512, 15)];
const BATCH: usize = 64;
const KERNEL: usize = 5;

fn bench_conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv1d_fwd_bwd");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let mut rng = SeededRng::new(0);
    for (ch, len) in SHAPES {
        // forward 2*B*Cout*Cin*K*L, backward twice that (input and weight gradients).
        let flops = 3 * 2 * BATCH * ch * ch * KERNEL * len;
        group.throughput(Throughput::Elements(flops as u64));
        let x = Var::from_tensor(
            &rng.normal_tensor((BATCH, ch, len), DType::F32, &Device::Cpu)
                .unwrap(),
        )
        .unwrap();
        let w = Var::from_tensor(
            &rng.normal_tensor((ch, ch, KERNEL), DType::F32, &Device::Cpu)
                .unwrap(),
        )
        .unwrap();
        let spec = Conv1dSpec {
            padding: 2,
            padding_mode: PaddingMode::Circular,
            ..Default::default()
        };
        let id = format!("{ch}ch_L{len}");
        group.bench_with_input(BenchmarkId::new("flowfm", &id), &(), |b, _| {
            b.iter(|| {
                let y = conv1d(x.as_tensor(), w.as_tensor(), &spec).unwrap();
                let g = y.sum_all().unwrap().backward().unwrap();
                g.get(w.as_tensor()).unwrap().dims().len()
            })
        });
        group.bench_with_input(BenchmarkId::new("candle", &id), &(), |b, _| {
            b.iter(|| {
                let y: Tensor = x.as_tensor().conv1d(w.as_tensor(), 2, 1, 1, 1).unwrap();
                let g = y.sum_all().unwrap().backward().unwrap();
                g.get(w.as_tensor()).unwrap().dims().len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
