//! Time per generated window and NFE for every sampler setting of the flow-vs-diffusion
//! comparison, on the same U-Net size: Euler at 1/2/4/8/16/32 steps and Dopri5 for the flow
//! generator, DDIM at 10/20/50/100 steps and ancestral DDPM over all T for the denoiser.
//!
//! `cargo run --release -p flowfm --example sampler_grid -- FLOW_RUN DIFFUSION_RUN STORE [N]`
//! (run directories written by `flowfm pretrain`, a window store to take N windows from).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use candle_core::Device;
use flowfm::encode::windows_tensor;
use flowfm::generation::{SamplerSpec, TrainedModels};
use flowfm_data::store::WindowStore;
use std::path::PathBuf;

fn main() -> Result<()> {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flow_dir, diff_dir, store, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: sampler_grid FLOW_RUN DIFFUSION_RUN STORE [N]");
    };
    let n: usize = rest
        .first()
        .map(|s| s.parse())
        .transpose()
        .context("N")?
        .unwrap_or(16);
    let dev = Device::Cpu;
    let flow = TrainedModels::from_run_dir(&PathBuf::from(flow_dir), &dev)?;
    let diffusion = TrainedModels::from_run_dir(&PathBuf::from(diff_dir), &dev)?;
    let st = WindowStore::open(store)?;
    let ws = st.load_subset(&(0..n.min(st.num_windows())).collect::<Vec<_>>())?;
    let x = windows_tensor(&ws, &dev)?;
    let z = flow.encode(&x, 64)?;
    let zd = diffusion.encode(&x, 64)?;
    println!(
        "{} windows, generator parameters: flow {}, diffusion {}; T = {}",
        ws.num_windows(),
        flow.generator_params,
        diffusion.generator_params,
        diffusion.schedule.num_steps()
    );
    println!("| generator | sampler | NFE | ms / window |\n|---|---|---:|---:|");
    let grid: Vec<(&TrainedModels, &candle_core::Tensor, SamplerSpec)> =
        SamplerSpec::flow_grid(&[1, 2, 4, 8, 16, 32], true)
            .into_iter()
            .map(|s| (&flow, &z, s))
            .chain(
                SamplerSpec::diffusion_grid(&[10, 20, 50, 100], true)
                    .into_iter()
                    .map(|s| (&diffusion, &zd, s)),
            )
            .collect();
    // Warm up both networks once.
    flow.sample(&z, &SamplerSpec::flow_grid(&[1], false)[0], 64, 0)?;
    diffusion.sample(&zd, &SamplerSpec::diffusion_grid(&[1], false)[0], 64, 0)?;
    for (models, z, spec) in grid {
        let g = models.sample(z, &spec, 64, 0)?;
        println!(
            "| {} | {} | {} | {:.2} |",
            models.kind().method_name(),
            g.sampler,
            g.nfe_per_window,
            g.ms_per_window
        );
    }
    Ok(())
}
