//! conv1d forward+backward on HARNet10's shapes (batch 64, kernel 5, circular padding 2) and the
//! paper U-Net's (batch 64, kernel 3, zero padding 1, with bias; and its 1x1 skips): flowfm's
//! own convolution op (`conv1d_sliding`: shifted views of the input, no im2col matrix, or at
//! HARNet10's lengths 15 and 3 an im2col matrix built inside the op), the im2col path through
//! candle's matmul (`conv1d_im2col`), and candle's CPU conv for reference (zero padding; its weight gradient is
//! wrong, see flowfm-ops' tests, but the work is the same).
//!
//! Throughput is reported in elements = FLOPs, so criterion's `elem/s` reads as FLOP/s.
//! `cargo bench -p flowfm-benches --bench conv`

// criterion_group! and criterion_main! generate functions without docs.
#![allow(missing_docs)]

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowfm_core::SeededRng;
use flowfm_ops::{conv1d_im2col, conv1d_sliding, Conv1dSpec, PaddingMode};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 64;

/// `(name, c_in, c_out, len, kernel, padding mode)`.
const SHAPES: [(&str, usize, usize, usize, usize, PaddingMode); 9] = [
    ("harnet", 64, 64, 300, 5, PaddingMode::Circular),
    ("harnet", 128, 128, 150, 5, PaddingMode::Circular),
    ("harnet", 256, 256, 75, 5, PaddingMode::Circular),
    ("harnet", 512, 512, 15, 5, PaddingMode::Circular),
    ("harnet", 512, 1024, 3, 5, PaddingMode::Circular),
    ("unet", 48, 48, 300, 3, PaddingMode::Zeros),
    ("unet", 96, 96, 150, 3, PaddingMode::Zeros),
    ("unet", 192, 192, 75, 3, PaddingMode::Zeros),
    ("unet_skip", 144, 48, 300, 1, PaddingMode::Zeros),
];

fn bench_conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv1d_fwd_bwd");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let mut rng = SeededRng::new(0);
    let dev = Device::Cpu;
    for (name, c_in, c_out, len, kernel, padding_mode) in SHAPES {
        // forward 2*B*Cout*Cin*K*L, backward twice that (input and weight gradients).
        let flops = 3 * 2 * BATCH * c_in * c_out * kernel * len;
        group.throughput(Throughput::Elements(flops as u64));
        let var = |shape: &[usize], rng: &mut SeededRng| {
            Var::from_tensor(&rng.normal_tensor(shape, DType::F32, &dev).unwrap()).unwrap()
        };
        let x = var(&[BATCH, c_in, len], &mut rng);
        let w = var(&[c_out, c_in, kernel], &mut rng);
        let bias = var(&[c_out], &mut rng);
        let with_bias = name != "harnet";
        let spec = Conv1dSpec {
            padding: kernel / 2,
            padding_mode,
            ..Default::default()
        };
        let id = format!("{name}_{c_in}to{c_out}_L{len}_k{kernel}");
        group.bench_with_input(BenchmarkId::new("sliding", &id), &(), |b, _| {
            b.iter(|| {
                let bias = with_bias.then(|| bias.as_tensor());
                let y = conv1d_sliding(x.as_tensor(), w.as_tensor(), bias, &spec).unwrap();
                let g = y.sum_all().unwrap().backward().unwrap();
                g.get(w.as_tensor()).unwrap().dims().len()
            })
        });
        group.bench_with_input(BenchmarkId::new("im2col", &id), &(), |b, _| {
            b.iter(|| {
                let mut y = conv1d_im2col(x.as_tensor(), w.as_tensor(), &spec).unwrap();
                if with_bias {
                    y = y
                        .broadcast_add(&bias.as_tensor().reshape((1, c_out, 1)).unwrap())
                        .unwrap();
                }
                let g = y.sum_all().unwrap().backward().unwrap();
                g.get(w.as_tensor()).unwrap().dims().len()
            })
        });
        group.bench_with_input(BenchmarkId::new("candle", &id), &(), |b, _| {
            b.iter(|| {
                let y: Tensor = x
                    .as_tensor()
                    .conv1d(w.as_tensor(), kernel / 2, 1, 1, 1)
                    .unwrap();
                let g = y.sum_all().unwrap().backward().unwrap();
                g.get(w.as_tensor()).unwrap().dims().len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
