//! The `flowfm` command line: prepare datasets, pretrain, embed, evaluate, generate, and run the
//! study. Parsing is in `cli.rs`; this file dispatches each command to the library.

mod cli;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{Cli, Command, CsvArgs, DownstreamArgs};
use flowfm::datasets::{self, DatasetSpec, Source};
use flowfm::downstream::deploy::{self, SavedClassifier, TrainingData};
use flowfm::downstream::{
    run_protocol, DatasetInfo, DownstreamConfig, EncoderSource, Mode, Protocol, ProtocolOptions,
    ProtocolResult,
};
use flowfm::train::resources::{available_memory_bytes, ResourceEstimate};
use flowfm::train::{pretrain, Experiment, PretrainOptions};
use flowfm_data::prepare::PrepareConfig;
use flowfm_data::readers::DatasetKind;
use flowfm_data::readers::{CsvColumn, CsvFolderSpec};
use flowfm_data::registry::DefaultDataset;
use flowfm_data::store::{NonFinite, WindowStore};
use mimalloc::MiMalloc;
use std::path::PathBuf;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Prints a line on stdout. A closed stdout (`flowfm ... | head -1`) is not an error: the command
/// finishes its work quietly and exits with its own status; other write errors go to stderr.
macro_rules! say {
    ($($arg:tt)*) => {
        say_line(format_args!($($arg)*))
    };
}

fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{args}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("flowfm: writing to stdout: {e}");
        }
    }
}

/// An error unless `path` can be an output file: an existing directory is refused (instead of
/// writing `<dir>.h5` beside it).
fn check_output_file(path: &std::path::Path, flag: &str) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{flag} {}: is a directory; give a file path such as {}",
            path.display(),
            path.join("out.h5").display()
        );
    }
    if path.file_name().is_none() {
        bail!("{flag} {}: needs a file name", path.display());
    }
    Ok(())
}

/// The non-finite policy of `--skip-nonfinite`.
fn policy(skip_nonfinite: bool) -> NonFinite {
    if skip_nonfinite {
        NonFinite::Skip
    } else {
        NonFinite::Error
    }
}

/// Says how many windows `--skip-nonfinite` left out.
fn report_skipped(skipped: usize) {
    if skipped > 0 {
        eprintln!("flowfm: left out {skipped} windows holding NaN or infinity (--skip-nonfinite)");
    }
}

fn parse_protocol(s: &str) -> Result<Protocol> {
    if s == "loso" {
        return Ok(Protocol::Loso);
    }
    match s.strip_prefix("kfold:").map(str::parse::<usize>) {
        Some(Ok(k)) => Ok(Protocol::KFold { k }),
        _ => bail!("--protocol must be `loso` or `kfold:K`, got `{s}`"),
    }
}

/// The downstream config and encoder source of `finetune` / `probe` from their options.
fn downstream_setup(
    args: &DownstreamArgs,
    mode: Mode,
    scratch: bool,
    augment: bool,
) -> Result<(DownstreamConfig, EncoderSource)> {
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
    cfg.validate()?;
    let pretrained = EncoderSource::Pretrained(args.encoder.clone());
    let encoder = if scratch {
        match pretrained.config()? {
            Some(c) => EncoderSource::Scratch(c),
            None => bail!("{}: no encoder config", args.encoder.display()),
        }
    } else {
        pretrained
    };
    Ok((cfg, encoder))
}

fn run_downstream(
    args: DownstreamArgs,
    mode: Mode,
    scratch: bool,
    augment: bool,
    quiet: bool,
) -> Result<()> {
    let (cfg, encoder) = downstream_setup(&args, mode, scratch, augment)?;
    let (store, check) = WindowStore::open_checked(&args.store, policy(args.skip_nonfinite))?;
    report_skipped(check.skipped.len());
    let r = if check.skipped.is_empty() {
        let store = Arc::new(store);
        let mut opts = ProtocolOptions::new(DatasetInfo::of_store(&store), encoder.label());
        opts.verbose = !quiet;
        run_protocol(store, &encoder, &cfg, &opts)?
    } else {
        let ws = Arc::new(store.load_subset(&check.kept)?);
        let mut opts = ProtocolOptions::new(DatasetInfo::of_window_set(&ws), encoder.label());
        opts.verbose = !quiet;
        run_protocol(ws, &encoder, &cfg, &opts)?
    };
    say!("{}", ProtocolResult::markdown_header().trim_end());
    say!("{}", r.markdown_row()?.trim_end());
    if let Some(out) = args.output {
        r.write_json(&out)?;
        say!("wrote {}", out.display());
    }
    Ok(())
}

/// The output rate of `embed --recording` (the windows the encoders of this project read).
const DEFAULT_RATE_HZ: f64 = 30.0;

/// A CSV reading spec from `--spec` or the `--csv-*` options.
fn csv_spec(args: &CsvArgs, name: &str) -> Result<CsvFolderSpec> {
    if let Some(path) = &args.spec {
        return Ok(CsvFolderSpec::from_toml_file(path)?);
    }
    let Some(rate) = args.csv_rate_hz else {
        bail!("CSV input needs --spec FILE or --csv-rate-hz (with --csv-channels)");
    };
    if args.csv_channels.is_empty() {
        bail!("CSV input needs --csv-channels (names or 0-based indices, comma-separated)");
    }
    let mut spec = CsvFolderSpec::new(
        args.csv_channels
            .iter()
            .map(|c| CsvColumn::parse(c))
            .collect(),
        rate,
    );
    spec.name = name.to_string();
    if !args.csv_units.is_empty() {
        spec.units = args.csv_units.clone();
    }
    spec.time_column = args.csv_time_column.as_deref().map(CsvColumn::parse);
    if let Some(u) = &args.csv_time_unit {
        spec.time_unit = u.clone();
    }
    spec.label_column = args.csv_label_column.as_deref().map(CsvColumn::parse);
    spec.labels_table = args.csv_labels_table.clone();
    spec.file_pattern = args.csv_file_pattern.clone();
    spec.subject_column = args.csv_subject_column.as_deref().map(CsvColumn::parse);
    spec.subject_from_folder = args.csv_subject_from_folder;
    if let Some(d) = &args.csv_delimiter {
        spec.delimiter = d.clone();
    }
    spec.header = !args.csv_no_header;
    spec.validate()?;
    Ok(spec)
}

/// `flowfm finetune --save`: fine-tune on every labelled window and save the classifier.
fn save_classifier(
    args: DownstreamArgs,
    scratch: bool,
    augment: bool,
    dir: &std::path::Path,
) -> Result<()> {
    let (cfg, encoder) = downstream_setup(&args, Mode::FineTune, scratch, augment)?;
    let (store, check) = WindowStore::open_checked(&args.store, policy(args.skip_nonfinite))?;
    report_skipped(check.skipped.len());
    let data = TrainingData {
        class_names: store.meta.class_names.clone(),
        sample_rate_hz: store.meta.sample_rate_hz,
        channels: store.meta.channel_names.clone(),
        fingerprint: store.meta.fingerprint.clone(),
        store: args.store.display().to_string(),
    };
    let ws = Arc::new(store.load_subset(&check.kept)?);
    let card = deploy::train_and_save(&ws, &data, &encoder, &cfg, dir)?;
    say!(
        "saved the classifier to {} (validation macro F1 {:.3} on subjects {:?})",
        dir.display(),
        card.validation_macro_f1,
        card.validation_subjects
    );
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
    // Two settings that must be in place when the process starts, so the binary runs itself
    // again with them unless the user chose their own:
    // - mimalloc returns freed memory to the OS after a second by default, so each training
    //   step's activations land on fresh pages the kernel must fault in and zero (40 % of a
    //   step's CPU time, docs/benchmarks.md); MIMALLOC_PURGE_DELAY=-1 keeps them.
    // - libhdf5 takes flock() locks on every file it opens, through descriptors that child
    //   processes inherit: a store written while another process was being started stayed
    //   locked by that process. Our stores are replaced atomically and our run directories and
    //   stores have lock files of their own, so HDF5's locking is off.
    let settings = [
        ("MIMALLOC_PURGE_DELAY", "-1"),
        ("HDF5_USE_FILE_LOCKING", "FALSE"),
    ];
    let missing: Vec<(&str, &str)> = (settings.iter())
        .filter(|(k, _)| std::env::var_os(k).is_none())
        .copied()
        .collect();
    if !missing.is_empty() {
        if let Ok(exe) = std::env::current_exe() {
            let child = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .envs(missing)
                .status();
            if let Ok(status) = child {
                return exit_code(status);
            }
        }
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowfm: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The exit code that reports a child's status (128 + signal when it was killed).
fn exit_code(status: std::process::ExitStatus) -> std::process::ExitCode {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return std::process::ExitCode::from((128 + sig).clamp(0, 255) as u8);
        }
    }
    std::process::ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8)
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
            allow_empty,
            csv,
        } => {
            check_output_file(&output, "--output")?;
            let spec = if dataset == "csv" {
                let Some(path) = input else {
                    bail!("--input (a CSV file or folder) is required for --dataset csv");
                };
                let stem = output
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_else(|| "csv".into());
                DatasetSpec {
                    name: stem.clone(),
                    source: Source::Csv(path, Box::new(csv_spec(&csv, &stem)?)),
                    classes,
                }
            } else {
                spec_for(&dataset, input, classes)?
            };
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
            for f in &prepared.removed_temp_files {
                eprintln!("flowfm: removed {} (left by a killed writer)", f.display());
            }
            match &prepared.summary {
                Some(s) => {
                    say!("{s}");
                    say!("wrote {}", prepared.path.display());
                    // The store is written either way; an empty subject or dataset still fails
                    // the command unless the user said it may happen.
                    s.check_nonempty(allow_empty)
                        .context("rerun with --allow-empty to accept it")?;
                }
                None => say!(
                    "{}: reused (its recorded inputs and config match); {} windows",
                    prepared.path.display(),
                    prepared.store.num_windows()
                ),
            }
            Ok(())
        }
        Command::Pretrain {
            config,
            store,
            out,
            resume,
            skip_nonfinite,
            device,
            stop_after,
        } => {
            let exp = Experiment::load(&config)?;
            let device = device
                .open()
                .map_err(|e| anyhow::anyhow!("--device: {e}"))?;
            let (pool, skipped) = datasets::load_pool(&store, policy(skip_nonfinite))?;
            report_skipped(skipped);
            let n = pool.num_windows();
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&exp.file.run.name));
            let mut opts = PretrainOptions::new(&out);
            opts.resume = resume;
            opts.device = device;
            opts.stop_after = stop_after;
            opts.data_fingerprint = Some(
                store
                    .iter()
                    .map(|p| flowfm_data::store::read_fingerprint(p))
                    .collect::<std::result::Result<Vec<_>, _>>()?
                    .join("+"),
            );
            opts.quiet = cli.quiet;
            let outcome = pretrain(&exp, Arc::new(pool), (0..n).collect(), &opts)?;
            say!(
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
            skip_nonfinite,
            device,
        } => {
            use flowfm::generation::{
                run_generation, CovarianceKind, GenerateJob, GenerateMode, SamplerSpec,
                TrainedModels,
            };
            check_output_file(&output, "--output")?;
            let device = device
                .open()
                .map_err(|e| anyhow::anyhow!("--device: {e}"))?;
            let models = TrainedModels::from_run_dir(&run, &device)?;
            let spec = SamplerSpec::from_parts(&sampler, steps, eta, rtol, atol)?;
            let (st, check) = WindowStore::open_checked(&store, policy(skip_nonfinite))?;
            report_skipped(check.skipped.len());
            let n = limit.unwrap_or(usize::MAX).min(check.kept.len());
            let windows = st.load_subset(&check.kept[..n])?;
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
            say!(
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
            recording,
            csv,
            output,
            batch,
            skip_nonfinite,
            device,
        } => {
            check_output_file(&output, "--output")?;
            let device = device
                .open()
                .map_err(|e| anyhow::anyhow!("--device: {e}"))?;
            let enc = flowfm::encode::load_encoder(&encoder, &device)?;
            if let Some(rec) = recording {
                let cfg = flowfm::recording::stream_config(
                    enc.config().window_len,
                    DEFAULT_RATE_HZ,
                    batch,
                );
                let (n, stats) = flowfm::recording::embed_recording(
                    &enc,
                    &device,
                    &rec,
                    &csv_spec(&csv, "recording")?,
                    &cfg,
                    &output,
                    !cli.quiet,
                )?;
                say!(
                    "wrote {n} representations of dimension {} to {} ({} samples read, {} repeated times, {} gaps)",
                    enc.config().repr_dim(),
                    output.display(),
                    stats.samples,
                    stats.repeated_times,
                    stats.gaps
                );
                return Ok(());
            }
            let store = store.context("--store or --recording is required")?;
            let (st, check) = WindowStore::open_checked(&store, policy(skip_nonfinite))?;
            report_skipped(check.skipped.len());
            let z = flowfm::encode::embed_store(&enc, &st, &check.kept, batch, &device)?;
            let d = enc.config().repr_dim();
            flowfm::encode::write_embeddings(&output, &z, d, &st, &check.kept, &encoder)?;
            say!(
                "wrote {} representations of dimension {} to {}",
                check.kept.len(),
                enc.config().repr_dim(),
                output.display()
            );
            Ok(())
        }
        Command::Finetune {
            args,
            scratch,
            augment,
            save: Some(dir),
        } => save_classifier(args, scratch, augment, &dir),
        Command::Finetune {
            args,
            scratch,
            augment,
            save: None,
        } => run_downstream(args, Mode::FineTune, scratch, augment, cli.quiet),
        Command::Predict {
            model,
            store,
            recording,
            csv,
            output,
            batch,
            skip_nonfinite,
        } => {
            check_output_file(&output, "--output")?;
            let clf = SavedClassifier::load(&model)?;
            if let Some(rec) = recording {
                let spec = csv_spec(&csv, "recording")?;
                let n = clf.predict_recording(&rec, &spec, &output, batch, !cli.quiet)?;
                say!("wrote {n} predicted windows to {}", output.display());
                return Ok(());
            }
            let store = store.context("--store or --recording is required")?;
            let (st, check) = WindowStore::open_checked(&store, policy(skip_nonfinite))?;
            report_skipped(check.skipped.len());
            clf.check_input(
                &store.display().to_string(),
                st.meta.window_len,
                st.meta.sample_rate_hz,
                st.meta.channels,
            )?;
            let rows = clf.predict_source(&st, &check.kept, &st.start_time_s, batch)?;
            flowfm::output::write_file(&output, clf.timeline_csv(&rows).as_bytes())?;
            say!(
                "wrote {} predicted windows to {}",
                rows.len(),
                output.display()
            );
            Ok(())
        }
        Command::Probe { args, knn } => {
            let mode = if knn { Mode::Knn } else { Mode::LinearProbe };
            run_downstream(args, mode, false, false, cli.quiet)
        }
        Command::Eval { config } => {
            let f = flowfm::downstream::eval::EvalFile::load(&config)?;
            let results = flowfm::downstream::eval::run_eval(&f, !cli.quiet)?;
            say!(
                "{} protocol results written to {}",
                results.len(),
                f.output_dir.display()
            );
            Ok(())
        }
        Command::CheckConfig { configs } => {
            for c in configs {
                let exp = Experiment::load(&c)?;
                let estimate = ResourceEstimate::of(&exp)?;
                say!(
                    "{}: ok ({}, fingerprint {}); {estimate}",
                    c.display(),
                    exp.method.name(),
                    exp.fingerprint()
                );
                estimate
                    .check_fits(available_memory_bytes())
                    .with_context(|| c.display().to_string())?;
            }
            Ok(())
        }
        Command::Reproduce {
            profile,
            data_dir,
            report_dir,
            config_dir,
            seed,
            force,
            device,
        } => {
            let profile = flowfm::study::Profile::parse(&profile)?;
            flowfm::study::run(&flowfm::study::ReproduceOptions {
                profile,
                data_dir,
                config_dir,
                report_dir,
                seed,
                force,
                quiet: cli.quiet,
                device,
            })
        }
        Command::CheckReport { dir } => {
            let problems = flowfm::study::check_report(&dir)?;
            if problems.is_empty() {
                say!("{}: complete", dir.display());
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
