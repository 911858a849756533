//! Times the pieces of a pretraining step (encoder, U-Net forward/backward) for a profile:
//! `cargo run --release -p flowfm --example step_profile -- quick|default`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device};
use flowfm::study::Profile;
use flowfm::train::pretrain::Networks;
use flowfm_core::{Conditioning, FlowTimes, ForwardMode, SeededRng};
use std::time::Instant;

fn time<F: FnMut()>(name: &str, reps: usize, mut f: F) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    println!(
        "{name:32} {:9.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

fn main() -> anyhow::Result<()> {
    // As the `flowfm` binary does (see its `configure_threads`).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let profile = Profile::parse(&std::env::args().nth(1).unwrap_or_else(|| "quick".into()))?;
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let exp = profile.experiment(&configs, "flowfm", 0)?;
    let batch = exp.file.train.batch_size;
    let nets = Networks::build(&exp, &Device::Cpu)?;
    let mut rng = SeededRng::new(0);
    let x = rng.normal_tensor((batch, 3, 300), DType::F32, &Device::Cpu)?;
    let field = nets.flow.as_ref().unwrap();
    println!("profile {} batch {batch}", profile.name());
    time("encoder forward (train)", 3, || {
        nets.encoder.forward(&x, ForwardMode::Train).unwrap();
    });
    time("encoder forward+backward", 3, || {
        nets.encoder
            .forward(&x, ForwardMode::Train)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
    });
    let z = nets.encoder.forward(&x, ForwardMode::Train)?.detach();
    let t = FlowTimes::from_values(&vec![0.5; batch], DType::F32, &Device::Cpu)?;
    let cond = Conditioning::Representation(z);
    time("unet forward", 3, || {
        field.forward(&x, &t, &cond).unwrap();
    });
    time("unet forward+backward", 3, || {
        field
            .forward(&x, &t, &cond)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
    });
    Ok(())
}
