//! The `flowfm` command line: prepare datasets, pretrain, embed, and run the study.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use flowfm::config::Experiment;
use flowfm::datasets::{self, DatasetSpec, Source};
use flowfm::pretrain::{pretrain, PretrainOptions};
use flowfm_data::prepare::PrepareConfig;
use flowfm_data::readers::DatasetKind;
use flowfm_data::registry::DefaultDataset;
use mimalloc::MiMalloc;
use std::path::PathBuf;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Foundation models for wearable sensor data: joint encoder + flow-matching pretraining.
#[derive(Parser)]
#[command(name = "flowfm", version, about)]
struct Cli {
    /// Worker threads for tensor and data work (default: RAYON_NUM_THREADS or all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn a raw dataset (or a registry default) into an HDF5 window store.
    Prepare {
        /// Dataset kind: wisdm2019, adl_hmp, uci_hapt, pamap2, opportunity, realworld2016,
        /// capture24, uea_ts; or a registry default: hapt_kcc2020, seglearn_watch.
        #[arg(long)]
        dataset: String,
        /// Folder (or file) of the raw dataset; not needed for registry defaults.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Output store (`.h5`).
        #[arg(long)]
        output: PathBuf,
        /// Target sample rate in Hz.
        #[arg(long, default_value_t = 30.0)]
        rate_hz: f64,
        /// Window length in seconds.
        #[arg(long, default_value_t = 10.0)]
        window_secs: f64,
        /// Hop between windows in seconds (default: the window length).
        #[arg(long)]
        hop_secs: Option<f64>,
        /// Keep only these classes (comma-separated).
        #[arg(long, value_delimiter = ',')]
        classes: Option<Vec<String>>,
        /// Rebuild even if a matching store exists.
        #[arg(long)]
        force: bool,
    },
    /// Pretrain an encoder (and generator) from a TOML experiment on window stores.
    Pretrain {
        /// Experiment config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Window stores forming the pretraining pool.
        #[arg(long, required = true, num_args = 1..)]
        store: Vec<PathBuf>,
        /// Run directory (default: runs/<run.name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the run directory's last checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Generate windows from a pretrained run: reconstruct given windows from their
    /// representations, or sample new ones conditioned on a Gaussian fitted to representations.
    Generate {
        /// Run directory of a flowfm or diffusion pretraining (holds encoder/generator checkpoints).
        #[arg(long)]
        run: PathBuf,
        /// Window store: the windows to reconstruct, or the pool the Gaussian is fitted to.
        #[arg(long)]
        store: PathBuf,
        /// Output store (`.h5`).
        #[arg(long)]
        output: PathBuf,
        /// euler | midpoint | heun | rk4 | dopri5 (flow); ddpm | ddim (diffusion).
        #[arg(long, default_value = "euler")]
        sampler: String,
        /// Steps of a fixed-step solver or of DDIM.
        #[arg(long)]
        steps: Option<usize>,
        /// DDIM eta (0 = deterministic).
        #[arg(long)]
        eta: Option<f64>,
        /// Dopri5 relative tolerance.
        #[arg(long)]
        rtol: Option<f64>,
        /// Dopri5 absolute tolerance.
        #[arg(long)]
        atol: Option<f64>,
        /// Sample this many new windows instead of reconstructing the store's windows.
        #[arg(long)]
        sample: Option<usize>,
        /// At most this many windows of the store are used.
        #[arg(long)]
        limit: Option<usize>,
        /// Windows per network call.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Seed of the noise (and of the drawn representations).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Encode a window store with a pretrained encoder; write `(N, d)` representations to HDF5.
    Embed {
        /// Encoder checkpoint (`encoder.safetensors` of a run directory).
        #[arg(long)]
        encoder: PathBuf,
        /// Window store.
        #[arg(long)]
        store: PathBuf,
        /// Output file (`.h5`).
        #[arg(long)]
        output: PathBuf,
        /// Windows per forward pass.
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
    /// Fine-tune a pretrained encoder (or one from scratch) with a classifier head on a labelled
    /// store, by subject-disjoint folds; prints and writes the fold metrics.
    Finetune {
        #[command(flatten)]
        args: DownstreamArgs,
        /// Train the encoder's architecture from random initialisation instead (supervised baseline).
        #[arg(long)]
        scratch: bool,
        /// Fine-tune with random rotation and axis permutation.
        #[arg(long)]
        augment: bool,
    },
    /// Linear probe (or kNN) on a frozen pretrained encoder, by subject-disjoint folds.
    Probe {
        #[command(flatten)]
        args: DownstreamArgs,
        /// k-nearest neighbours on the representations instead of a linear layer.
        #[arg(long)]
        knn: bool,
    },
    /// Run downstream protocols from an evaluation config; writes results.json and results.md.
    Eval {
        /// Evaluation config (TOML; see `flowfm::evaluate`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate experiment configs and print their resolved form.
    CheckConfig {
        /// Config files.
        #[arg(required = true)]
        configs: Vec<PathBuf>,
    },
    /// Run the whole study and write a report (what `cargo xtask reproduce` calls).
    Reproduce {
        /// quick | default | full.
        #[arg(long, default_value = "default")]
        profile: String,
        /// Also use every supported raw dataset found under this folder.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where the report (and its working files) go.
        #[arg(long)]
        report_dir: PathBuf,
        /// Rerun stages whose outputs exist.
        #[arg(long)]
        force: bool,
    },
    /// Check that a report directory is complete (every table filled, every plot present).
    CheckReport {
        /// The report directory (holding report.md and report.json).
        dir: PathBuf,
    },
}

/// Options shared by `finetune` and `probe`.
#[derive(clap::Args)]
struct DownstreamArgs {
    /// Encoder checkpoint (`encoder.safetensors` of a pretraining run).
    #[arg(long)]
    encoder: PathBuf,
    /// Labelled window store.
    #[arg(long)]
    store: PathBuf,
    /// `loso` or `kfold:K`.
    #[arg(long, default_value = "kfold:5")]
    protocol: String,
    /// Most training epochs (early stopping on validation macro F1).
    #[arg(long)]
    epochs: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of folds, splits, initialisation and batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the full result (every fold) as JSON here.
    #[arg(long)]
    output: Option<PathBuf>,
}

fn parse_protocol(s: &str) -> Result<flowfm::protocol::Protocol> {
    use flowfm::protocol::Protocol;
    if s == "loso" {
        return Ok(Protocol::Loso);
    }
    match s.strip_prefix("kfold:").map(str::parse::<usize>) {
        Some(Ok(k)) => Ok(Protocol::KFold { k }),
        _ => bail!("--protocol must be `loso` or `kfold:K`, got `{s}`"),
    }
}

fn run_downstream(
    args: DownstreamArgs,
    mode: flowfm::finetune::Mode,
    scratch: bool,
    augment: bool,
    quiet: bool,
) -> Result<()> {
    use flowfm::finetune::{DownstreamConfig, EncoderSource};
    use flowfm::protocol::{run_protocol, DatasetInfo, ProtocolOptions, ProtocolResult};
    let mut cfg = DownstreamConfig {
        mode,
        protocol: parse_protocol(&args.protocol)?,
        seed: args.seed,
        augment,
        ..DownstreamConfig::default()
    };
    if let Some(e) = args.epochs {
        cfg.max_epochs = e;
    }
    if let Some(lr) = args.lr {
        cfg.lr = lr;
    }
    let pretrained = EncoderSource::Pretrained(args.encoder.clone());
    let encoder = if scratch {
        match pretrained.config()? {
            Some(c) => EncoderSource::Scratch(c),
            None => bail!("{}: no encoder config", args.encoder.display()),
        }
    } else {
        pretrained
    };
    let store = Arc::new(flowfm_data::store::WindowStore::open(&args.store)?);
    let mut opts = ProtocolOptions::new(DatasetInfo::of_store(&store), encoder.label());
    opts.verbose = !quiet;
    let r = run_protocol(store, &encoder, &cfg, &opts)?;
    println!("{}", ProtocolResult::markdown_header().trim_end());
    println!("{}", r.markdown_row()?.trim_end());
    if let Some(out) = args.output {
        r.write_json(&out)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn configure_threads(threads: Option<usize>) -> Result<()> {
    // candle 0.11 runs large elementwise ops on its own spinning barrier pool; on a few cores it
    // competes with the rayon threads of our ops and of gemm, and a training step takes about
    // twice as long (measured: docs/benchmarks.md). Elementwise ops are memory-bound, so they run
    // on the calling thread unless the user chose otherwise.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be >= 1");
        }
        // candle's CPU matmul sizes its pool from RAYON_NUM_THREADS; rayon's global pool is the
        // one our ops and data work use.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("configuring the thread pool")?;
    }
    Ok(())
}

fn spec_for(
    dataset: &str,
    input: Option<PathBuf>,
    classes: Option<Vec<String>>,
) -> Result<DatasetSpec> {
    let source = match dataset {
        "hapt_kcc2020" => Source::Registry(DefaultDataset::UciHaptKcc2020),
        "seglearn_watch" => Source::Registry(DefaultDataset::SeglearnWatch),
        other => {
            let kind = DatasetKind::parse(other)?;
            let Some(path) = input else {
                bail!("--input is required for the raw dataset `{other}`");
            };
            Source::Raw(kind, path)
        }
    };
    Ok(DatasetSpec {
        name: dataset.to_string(),
        source,
        classes,
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowfm: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    configure_threads(cli.threads)?;
    match cli.command {
        Command::Prepare {
            dataset,
            input,
            output,
            rate_hz,
            window_secs,
            hop_secs,
            classes,
            force,
        } => {
            let spec = spec_for(&dataset, input, classes)?;
            let mut cfg = PrepareConfig::default();
            cfg.resample.target_rate_hz = rate_hz;
            cfg.window.window_secs = window_secs;
            cfg.window.hop_secs = hop_secs.unwrap_or(window_secs);
            cfg.validate()?;
            let dir = output
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            let name = output
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .context("--output needs a file name")?;
            let spec = DatasetSpec { name, ..spec };
            let prepared = datasets::prepare_spec(&spec, &cfg, &dir, true, force)?;
            match &prepared.summary {
                Some(s) => println!("{s}"),
                None => println!(
                    "{}: reused (its recorded inputs and config match); {} windows",
                    prepared.path.display(),
                    prepared.store.num_windows()
                ),
            }
            println!("wrote {}", prepared.path.display());
            Ok(())
        }
        Command::Pretrain {
            config,
            store,
            out,
            resume,
        } => {
            let exp = Experiment::load(&config)?;
            let pool = flowfm::reproduce::load_pool(&store)?;
            let n = pool.num_windows();
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&exp.file.run.name));
            let mut opts = PretrainOptions::new(&out);
            opts.resume = resume;
            opts.quiet = cli.quiet;
            let outcome = pretrain(&exp, Arc::new(pool), (0..n).collect(), &opts)?;
            println!(
                "pretrained {} for {} steps ({:.1} windows/s); run directory {}",
                exp.method.name(),
                outcome.steps,
                outcome.windows_per_s,
                outcome.run_dir.display()
            );
            Ok(())
        }
        Command::Generate {
            run,
            store,
            output,
            sampler,
            steps,
            eta,
            rtol,
            atol,
            sample,
            limit,
            batch,
            seed,
        } => {
            use flowfm::generate::{
                run_generation, CovarianceKind, GenerateJob, GenerateMode, SamplerSpec,
                TrainedModels,
            };
            let device = candle_core::Device::Cpu;
            let models = TrainedModels::from_run_dir(&run, &device)?;
            let spec = SamplerSpec::from_parts(&sampler, steps, eta, rtol, atol)?;
            let st = flowfm_data::store::WindowStore::open(&store)?;
            let n = limit.unwrap_or(usize::MAX).min(st.num_windows());
            let windows = st.load_subset(&(0..n).collect::<Vec<_>>())?;
            let mode = match sample {
                Some(count) => GenerateMode::Sample {
                    count,
                    covariance: CovarianceKind::Auto,
                },
                None => GenerateMode::Reconstruct,
            };
            let summary = run_generation(
                &models,
                &windows,
                &GenerateJob {
                    sampler: spec,
                    batch_size: batch,
                    seed,
                    mode,
                    output: output.clone(),
                },
            )?;
            println!(
                "wrote {} windows to {} ({} by {}, {} NFE per window, {:.2} ms per window)",
                summary.windows,
                output.display(),
                summary.method,
                summary.sampler,
                summary.nfe_per_window,
                summary.ms_per_window
            );
            Ok(())
        }
        Command::Embed {
            encoder,
            store,
            output,
            batch,
        } => {
            let device = candle_core::Device::Cpu;
            let enc = flowfm::generate::load_encoder(&encoder, &device)?;
            let st = flowfm_data::store::WindowStore::open(&store)?;
            let z = flowfm::embed::embed_store(&enc, &st, batch, &device)?;
            flowfm::embed::write_embeddings(&output, &z, enc.config().repr_dim(), &st, &encoder)?;
            println!(
                "wrote {} representations of dimension {} to {}",
                st.num_windows(),
                enc.config().repr_dim(),
                output.display()
            );
            Ok(())
        }
        Command::Finetune {
            args,
            scratch,
            augment,
        } => run_downstream(
            args,
            flowfm::finetune::Mode::FineTune,
            scratch,
            augment,
            cli.quiet,
        ),
        Command::Probe { args, knn } => {
            let mode = if knn {
                flowfm::finetune::Mode::Knn
            } else {
                flowfm::finetune::Mode::LinearProbe
            };
            run_downstream(args, mode, false, false, cli.quiet)
        }
        Command::Eval { config } => {
            let f = flowfm::evaluate::EvalFile::load(&config)?;
            let results = flowfm::evaluate::run_eval(&f, !cli.quiet)?;
            println!(
                "{} protocol results written to {}",
                results.len(),
                f.output_dir.display()
            );
            Ok(())
        }
        Command::CheckConfig { configs } => {
            for c in configs {
                let exp = Experiment::load(&c)?;
                println!(
                    "{}: ok ({}, fingerprint {})",
                    c.display(),
                    exp.method.name(),
                    exp.fingerprint()
                );
            }
            Ok(())
        }
        Command::Reproduce {
            profile,
            data_dir,
            report_dir,
            force,
        } => {
            let profile = flowfm::reproduce::Profile::parse(&profile)?;
            flowfm::reproduce::run(&flowfm::reproduce::ReproduceOptions {
                profile,
                data_dir,
                report_dir,
                force,
                quiet: cli.quiet,
            })
        }
        Command::CheckReport { dir } => {
            let problems = flowfm::report::check_report(&dir)?;
            if problems.is_empty() {
                println!("{}: complete", dir.display());
                Ok(())
            } else {
                anyhow::bail!(
                    "{} is incomplete:\n  {}",
                    dir.display(),
                    problems.join("\n  ")
                )
            }
        }
    }
}
