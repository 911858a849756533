//! Throughput of the networks on the CPU: full training steps (forward, backward, AdamW) and
//! graph-free evaluation forwards, a few timed iterations each (not a statistical benchmark; the
//! `benches/` crate has Criterion benches of the kernels).
//!
//! ```sh
//! cargo run --release -p flowfm-models --example throughput [-- quick] [-- --json]
//! ```
//!
//! Text output (for people): parameter counts, HARNet10 train-step and eval-forward windows/s at
//! batch 64 for width 1 and 0.25, the paper-size U-Net's forward time per window and the joint
//! FlowFM step. With `--json`, one JSON object per line with the records that
//! `shared/bench/side_by_side.py` compares against PyTorch (`what` one of `encoder_train_step`,
//! `encoder_forward_eval`, `joint_train_step`, `unet_nfe_forward`; `width`; `windows_per_s` or
//! `ms_per_nfe_per_window`).
//!
//! Every train step is the work PyTorch's peer does: forward in training mode, backward, and an
//! AdamW update of every trainable parameter ([`flowfm_ops::optim::AdamW`]). The joint step is
//! the FlowFM pretraining objective as `flowfm pretrain` runs it: HARNet10 encodes the batch in
//! training mode, flow times are drawn uniformly, and the paper-size U-Net conditioned on the
//! representation is trained with the flow-matching loss on the linear path (`sigma_min` 0);
//! gradients reach both networks. (`flowfm pretrain` also clips the gradient norm and updates an
//! EMA copy of the generator; those are not part of the compared work.)
//!
//! `--device cuda[:N]` runs everything on a GPU (a `--features cuda` build; docs/cuda-build.md),
//! synchronising the device around each timed run; every JSON record names its `device`.
//! `--batch N` changes the batch of 64 (a GPU needs larger batches to fill).
//!
//! `--encoder-step-only` runs only the HARNet10 train steps (for `/usr/bin/time -v`).
//! `--only WHAT` runs one piece of work (`WHAT` one of the `what` names above, e.g.
//! `--only encoder_train_step`), `--width W` only that encoder width, and `--iters N` times `N`
//! steps after the warm-up instead of 3: with `perf record` this profiles mostly timed steps.
//!
//! The example runs itself again with `MIMALLOC_PURGE_DELAY=-1` unless that variable is set (see
//! `rerun_with_allocator_options`).
//!
//! Threads are set as the `flowfm` binary sets them: `CANDLE_NUM_THREADS=1` and rayon at 2
//! threads unless the environment says otherwise. mimalloc is the global allocator, as in the
//! `flowfm` binary: with glibc's allocator every multi-megabyte activation is a fresh `mmap` whose
//! page faults make elementwise ops ~10x slower.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use flowfm_core::device::DeviceChoice;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::paths::LinearPath;
use flowfm_core::{Conditioning, FlowTimes, ForwardMode, SeededRng};
use flowfm_models::{count_parameters, EncoderConfig, FlowUNet, HarNet, UNetConfig};
use flowfm_objectives::flow::{flow_matching_loss, sample_flow_times, TimeSampling};
use flowfm_ops::norm::is_buffer_name;
use flowfm_ops::on_worker;
use flowfm_ops::optim::{AdamW, AdamWConfig};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Learning rate of the timed AdamW steps (PyTorch's peer uses 1e-4 as well).
const LR: f64 = 1e-4;

/// CPU seconds (user + system, all threads) this process has used so far, from
/// `/proc/self/stat` (Linux; clock ticks of 1/100 s, the kernel's USER_HZ on x86). `None`
/// elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Wall and CPU seconds of one timed call.
#[derive(Clone, Copy, Debug)]
struct Timing {
    wall_s: f64,
    cpu_s: f64,
}

/// Mean wall and CPU seconds per call of `f` over `iters` calls after one warm-up call. With
/// one thread (`RAYON_NUM_THREADS=1`) the CPU time is the work done, whatever else the machine
/// runs: the figure to compare two builds by on a busy machine.
///
/// On a GPU every call only queues kernels: the device is synchronised after the warm-up and after
/// the last call, so the wall time covers the work done.
fn time<F: FnMut() -> Result<()>>(dev: &Device, iters: usize, mut f: F) -> Result<Timing> {
    f()?;
    dev.synchronize()?;
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    dev.synchronize()?;
    let wall_s = start.elapsed().as_secs_f64() / iters as f64;
    let cpu_s = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) / iters as f64,
        _ => f64::NAN,
    };
    Ok(Timing { wall_s, cpu_s })
}

/// The trainable variables of the given maps, named `{prefix}.{name}` (buffers excluded).
fn named_trainable(maps: &[(&str, &VarMap)]) -> Result<Vec<(String, Var)>> {
    let mut out = Vec::new();
    for (prefix, vm) in maps {
        let data = vm
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        out.extend(
            data.iter()
                .filter(|(n, _)| !is_buffer_name(n))
                .map(|(n, v)| (format!("{prefix}.{n}"), v.clone())),
        );
    }
    Ok(out)
}

/// mimalloc reads its options once, when the process starts. By default it returns freed memory
/// to the OS after a second (`purge_delay` 1000 ms), so with training steps of a second or more
/// every multi-megabyte activation of the next step lands on fresh pages that the kernel must
/// fault in and clear (measured with `perf`: 26-40 % of the CPU time in `clear_page_erms`, 726 K
/// page faults against 1.5 K with purging off). Unless the caller chose a value, the example runs
/// itself again with `MIMALLOC_PURGE_DELAY=-1` (never purge: freed memory is reused by the next
/// step) and exits with that run's status. Returns `None` in the process that should do the work.
fn rerun_with_allocator_options() -> Option<i32> {
    const VAR: &str = "MIMALLOC_PURGE_DELAY";
    if std::env::var_os(VAR).is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, "-1")
        .status()
        .ok()?;
    Some(status.code().unwrap_or(1))
}

/// Sets the thread counts as the `flowfm` binary does, unless the environment already does.
fn set_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let rayon_threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(2);
    // An error only means a pool already exists, which then keeps its own size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon_threads)
        .build_global();
}

fn main() -> Result<()> {
    if let Some(code) = rerun_with_allocator_options() {
        std::process::exit(code);
    }
    set_threads();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    let json = args.iter().any(|a| a == "--json");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let iters = match value("--iters") {
        Some(n) => n
            .parse::<usize>()
            .map_err(|e| candle_core::Error::Msg(format!("--iters {n}: {e}")))?
            .max(1),
        None if quick => 1,
        None => 3,
    };
    let only = value("--only");
    let want = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let only_width = match value("--width") {
        Some(w) => Some(
            w.parse::<f64>()
                .map_err(|e| candle_core::Error::Msg(format!("--width {w}: {e}")))?,
        ),
        None => None,
    };
    // `--encoder-step-only`: HARNet10 (width 1) train steps and nothing else, for measuring the
    // peak resident memory of a training step (`/usr/bin/time -v`).
    let encoder_only = args.iter().any(|a| a == "--encoder-step-only");
    let choice = match value("--device") {
        Some(d) => d.parse::<DeviceChoice>().map_err(candle_core::Error::Msg)?,
        None => DeviceChoice::Cpu,
    };
    let dev = choice.open().map_err(candle_core::Error::Msg)?;
    let mut rng = SeededRng::new(0);
    let batch = match value("--batch") {
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 2)
            .ok_or_else(|| candle_core::Error::Msg(format!("--batch {n}: a number >= 2")))?,
        None => 64,
    };
    let x = rng.normal_tensor((batch, 3, 300), DType::F32, &dev)?;

    let widths: &[f64] = if encoder_only { &[1.0] } else { &[1.0, 0.25] };
    for &width in widths {
        if only_width.is_some_and(|w| (w - width).abs() > 1e-9)
            || !(want("encoder_train_step") || want("encoder_forward_eval"))
        {
            continue;
        }
        let vm = VarMap::new();
        let cfg = EncoderConfig::harnet10().with_width(width);
        let net = HarNet::new(cfg, seeded_var_builder(&vm, 0, DType::F32, &dev))?;
        let pc = count_parameters(&vm)?;
        let mut opt = AdamW::new(
            named_trainable(&[("encoder", &vm)])?,
            AdamWConfig::default(),
        )?;
        let nothing = Timing {
            wall_s: f64::NAN,
            cpu_s: f64::NAN,
        };
        let train = if want("encoder_train_step") {
            time(&dev, iters, || {
                let z = net.forward(&x, ForwardMode::Train)?;
                // Backward and the update on a pool worker, as the binary's training loops run them.
                on_worker(|| {
                    let grads = z.sqr()?.mean_all()?.backward()?;
                    opt.step(&grads, LR)
                })
            })?
        } else {
            nothing
        };
        if encoder_only {
            println!(
                "{{\"device\": \"{choice}\", \"what\": \"encoder_train_step\", \"width\": {width}, \"batch\": {batch}, \"s_per_step\": {:.4}}}",
                train.wall_s
            );
            return Ok(());
        }
        let eval = if want("encoder_forward_eval") {
            time(&dev, iters, || net.encode_detached(&x).map(|_| ()))?
        } else {
            nothing
        };
        if json {
            if want("encoder_train_step") {
                println!(
                    "{{\"device\": \"{choice}\", \"what\": \"encoder_train_step\", \"params\": {}, \"width\": {width}, \"batch\": {batch}, \"s_per_step\": {:.4}, \"cpu_s_per_step\": {:.4}, \"windows_per_s\": {:.1}}}",
                    pc.trainable,
                    train.wall_s,
                    train.cpu_s,
                    batch as f64 / train.wall_s
                );
            }
            if want("encoder_forward_eval") {
                println!(
                "{{\"device\": \"{choice}\", \"what\": \"encoder_forward_eval\", \"width\": {width}, \"batch\": {batch}, \"s_per_step\": {:.4}, \"cpu_s_per_step\": {:.4}, \"windows_per_s\": {:.1}}}",
                eval.wall_s,
                eval.cpu_s,
                batch as f64 / eval.wall_s
            );
            }
        } else {
            println!(
                "HARNet10 width {width}: {} parameters ({} buffer values); train step {:.1} windows/s, eval forward {:.1} windows/s (batch {batch}, AdamW included)",
                pc.trainable,
                pc.buffers,
                batch as f64 / train.wall_s,
                batch as f64 / eval.wall_s
            );
        }
    }

    // The joint FlowFM step: HARNet10 (width 1) + the paper-size U-Net.
    if want("joint_train_step") || want("unet_nfe_forward") {
        let enc_vm = VarMap::new();
        let gen_vm = VarMap::new();
        let encoder = HarNet::new(
            EncoderConfig::harnet10(),
            seeded_var_builder(&enc_vm, 1, DType::F32, &dev),
        )?;
        let field = FlowUNet::new(
            UNetConfig::default(),
            seeded_var_builder(&gen_vm, 2, DType::F32, &dev),
        )?;
        let unet_params = count_parameters(&gen_vm)?.trainable;
        let mut opt = AdamW::new(
            named_trainable(&[("encoder", &enc_vm), ("generator", &gen_vm)])?,
            AdamWConfig::default(),
        )?;
        let path = LinearPath::new(0.0)?;
        let mut step_rng = SeededRng::new(3);
        let joint_step = || {
            let z = encoder.forward(&x, ForwardMode::Train)?;
            let x_0 = step_rng.normal_tensor(x.shape(), DType::F32, &dev)?;
            let t = sample_flow_times(
                &mut step_rng,
                batch,
                TimeSampling::Uniform,
                DType::F32,
                &dev,
            )?;
            let loss = flow_matching_loss(
                &field,
                &x,
                &x_0,
                &t,
                &Conditioning::Representation(z),
                &path,
            )?;
            on_worker(|| {
                let grads = loss.backward()?;
                opt.step(&grads, LR)
            })
        };
        let joint = if want("joint_train_step") {
            time(&dev, iters, joint_step)?
        } else {
            Timing {
                wall_s: f64::NAN,
                cpu_s: f64::NAN,
            }
        };
        let z = encoder.encode_detached(&x)?;
        let cond = Conditioning::Representation(z);
        let t = FlowTimes::from_tensor(Tensor::full(0.5f32, batch, &dev)?)?;
        let nfe = if want("unet_nfe_forward") {
            time(&dev, iters, || {
                field.velocity_detached(&x, &t, &cond).map(|_| ())
            })?
        } else {
            Timing {
                wall_s: f64::NAN,
                cpu_s: f64::NAN,
            }
        };
        if json {
            if want("joint_train_step") {
                println!(
                "{{\"device\": \"{choice}\", \"what\": \"joint_train_step\", \"width\": 1.0, \"unet_params\": {unet_params}, \"batch\": {batch}, \"s_per_step\": {:.4}, \"cpu_s_per_step\": {:.4}, \"windows_per_s\": {:.1}}}",
                joint.wall_s,
                joint.cpu_s,
                batch as f64 / joint.wall_s
            );
            }
            if want("unet_nfe_forward") {
                println!(
                "{{\"device\": \"{choice}\", \"what\": \"unet_nfe_forward\", \"width\": 1.0, \"batch\": {batch}, \"s_per_step\": {:.4}, \"cpu_s_per_step\": {:.4}, \"ms_per_nfe_per_window\": {:.3}}}",
                nfe.wall_s,
                nfe.cpu_s,
                nfe.wall_s * 1e3 / batch as f64
            );
            }
        } else {
            println!(
                "UNetConfig::default(): {unet_params} parameters; forward {:.3} ms per window per evaluation (batch {batch}); joint FlowFM step with HARNet10 {:.1} windows/s (AdamW included)",
                nfe.wall_s * 1e3 / batch as f64,
                batch as f64 / joint.wall_s
            );
        }
    }

    if !json && only.is_none() {
        let cfg = UNetConfig::small();
        let vm = VarMap::new();
        let cond_dim = cfg.cond_dim;
        let net = FlowUNet::new(cfg, seeded_var_builder(&vm, 0, DType::F32, &dev))?;
        let pc = count_parameters(&vm)?;
        let z = rng.normal_tensor((batch, cond_dim), DType::F32, &dev)?;
        let t = FlowTimes::from_tensor(Tensor::full(0.5f32, batch, &dev)?)?;
        let cond = Conditioning::Representation(z);
        let mut opt = AdamW::new(
            named_trainable(&[("generator", &vm)])?,
            AdamWConfig::default(),
        )?;
        let fwd = time(&dev, iters, || {
            net.velocity_detached(&x, &t, &cond).map(|_| ())
        })?;
        let train = time(&dev, iters, || {
            let v = net.forward(&x, &t, &cond)?;
            on_worker(|| {
                let grads = v.sqr()?.mean_all()?.backward()?;
                opt.step(&grads, LR)
            })
        })?;
        println!(
            "UNetConfig::small(): {} parameters; forward {:.3} ms per window per evaluation, train step {:.1} windows/s (batch {batch}, AdamW included)",
            pc.trainable,
            fwd.wall_s * 1e3 / batch as f64,
            batch as f64 / train.wall_s
        );
    }
    Ok(())
}
