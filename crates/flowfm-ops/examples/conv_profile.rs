//! Breakdown of conv1d forward/backward time into unfold, matmuls and copies (a dev tool):
//! `cargo run --release -p flowfm-ops --example conv_profile`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use candle_core::{DType, Device, Var};
use flowfm_core::SeededRng;
use flowfm_ops::conv::unfold1d;
use flowfm_ops::{conv1d, Conv1dSpec, PaddingMode};
use std::time::Instant;

fn time<F: FnMut()>(name: &str, flops: f64, reps: usize, mut f: F) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{name:40} {:8.2} ms  {:6.1} GFLOP/s",
        dt * 1e3,
        flops / dt / 1e9
    );
}

fn main() {
    let mut rng = SeededRng::new(0);
    let b = 64;
    let k = 5;
    for (ch, len) in [(64usize, 300usize), (128, 150), (256, 75), (512, 15)] {
        let x = Var::from_tensor(
            &rng.normal_tensor((b, ch, len), DType::F32, &Device::Cpu)
                .unwrap(),
        )
        .unwrap();
        let w = Var::from_tensor(
            &rng.normal_tensor((ch, ch, k), DType::F32, &Device::Cpu)
                .unwrap(),
        )
        .unwrap();
        let spec = Conv1dSpec {
            padding: 2,
            padding_mode: PaddingMode::Circular,
            ..Default::default()
        };
        let f = 2.0 * (b * ch * ch * k * len) as f64;
        println!("--- {ch}ch L{len}");
        time("unfold", 0.0, 5, || {
            unfold1d(x.as_tensor(), k, &spec).unwrap();
        });
        let cols = unfold1d(&x.as_tensor().detach(), k, &spec).unwrap();
        let w2 = w.as_tensor().detach().reshape((ch, ch * k)).unwrap();
        time("matmul fwd", f, 5, || {
            w2.matmul(&cols).unwrap();
        });
        let y2 = w2.matmul(&cols).unwrap();
        time("transpose out", 0.0, 5, || {
            y2.reshape((ch, b, len))
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .contiguous()
                .unwrap();
        });
        time("matmul gW = g @ cols^T", f, 5, || {
            y2.matmul(&cols.t().unwrap()).unwrap();
        });
        time("matmul gC = W^T @ g", f, 5, || {
            w2.t().unwrap().matmul(&y2).unwrap();
        });
        time("conv fwd", f, 5, || {
            conv1d(x.as_tensor(), w.as_tensor(), &spec).unwrap();
        });
        time("conv fwd+bwd", 3.0 * f, 5, || {
            conv1d(x.as_tensor(), w.as_tensor(), &spec)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
        time("candle conv fwd+bwd", 3.0 * f, 3, || {
            x.as_tensor()
                .conv1d(w.as_tensor(), 2, 1, 1, 1)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
    }
}
