//! Rough throughput of the networks on the CPU (not a benchmark: a few timed iterations).
//!
//! `cargo run --release -p flowfm-models --example throughput [-- quick]` prints parameter
//! counts, HARNet10 train-step (forward + backward) and eval-forward windows/s at batch 64 for
//! width 1 and 0.25, and the U-Net forward time per window.
//!
//! mimalloc is the global allocator, as in the `flowfm` binary: with glibc's allocator every
//! multi-megabyte activation is a fresh `mmap` whose page faults make elementwise ops ~10x slower.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::{Conditioning, FlowTimes, ForwardMode, SeededRng};
use flowfm_models::{count_parameters, EncoderConfig, FlowUNet, HarNet, UNetConfig};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn time<F: FnMut() -> candle_core::Result<()>>(iters: usize, mut f: F) -> candle_core::Result<f64> {
    f()?; // warm-up
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(start.elapsed().as_secs_f64() / iters as f64)
}

fn main() -> candle_core::Result<()> {
    let quick = std::env::args().any(|a| a == "quick");
    let iters = if quick { 1 } else { 3 };
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(0);
    let batch = 64;

    for width in [1.0, 0.25] {
        let vm = VarMap::new();
        let cfg = EncoderConfig::harnet10().with_width(width);
        let net = HarNet::new(cfg, seeded_var_builder(&vm, 0, DType::F32, &dev))?;
        let pc = count_parameters(&vm)?;
        let x = rng.normal_tensor((batch, 3, 300), DType::F32, &dev)?;
        let train = time(iters, || {
            let z = net.forward(&x, ForwardMode::Train)?;
            let loss = z.sqr()?.mean_all()?;
            let _grads = loss.backward()?;
            Ok(())
        })?;
        let eval = time(iters, || {
            let _z = net.encode_detached(&x)?;
            Ok(())
        })?;
        println!(
            "HARNet10 width {width}: {} parameters ({} buffer values); train step {:.1} windows/s, eval forward {:.1} windows/s (batch {batch})",
            pc.trainable,
            pc.buffers,
            batch as f64 / train,
            batch as f64 / eval
        );
    }

    for (name, cfg) in [
        ("UNetConfig::default()", UNetConfig::default()),
        ("UNetConfig::small()", UNetConfig::small()),
    ] {
        let vm = VarMap::new();
        let cond_dim = cfg.cond_dim;
        let net = FlowUNet::new(cfg, seeded_var_builder(&vm, 0, DType::F32, &dev))?;
        let pc = count_parameters(&vm)?;
        let b = 64;
        let x = rng.normal_tensor((b, 3, 300), DType::F32, &dev)?;
        let z = rng.normal_tensor((b, cond_dim), DType::F32, &dev)?;
        let t = FlowTimes::from_tensor(Tensor::full(0.5f32, b, &dev)?)?;
        let cond = Conditioning::Representation(z);
        let fwd = time(iters, || {
            let _v = net.velocity_detached(&x, &t, &cond)?;
            Ok(())
        })?;
        let train = time(iters, || {
            let v = net.forward(&x, &t, &cond)?;
            let _g = v.sqr()?.mean_all()?.backward()?;
            Ok(())
        })?;
        println!(
            "{name}: {} parameters; forward {:.2} ms per window per evaluation, train step {:.1} windows/s (batch {b})",
            pc.trainable,
            fwd * 1e3 / b as f64,
            b as f64 / train
        );
    }
    Ok(())
}
