//! The `flowfm` command line's grammar: every subcommand, option and help text (clap). Parsing
//! only; `main.rs` dispatches.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Foundation models for wearable sensor data: joint encoder + flow-matching pretraining.
#[derive(Parser)]
#[command(name = "flowfm", version, about)]
pub(crate) struct Cli {
    /// Worker threads for tensor and data work (default: RAYON_NUM_THREADS or all cores).
    #[arg(long, global = true)]
    pub(crate) threads: Option<usize>,
    /// No progress bars.
    #[arg(long, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Turn a raw dataset (or a registry default) into an HDF5 window store.
    Prepare {
        /// Dataset kind: wisdm2019, adl_hmp, uci_hapt, pamap2, opportunity, realworld2016,
        /// capture24, uea_ts, csv (with --spec or the --csv-* options); or a registry default:
        /// hapt_kcc2020, seglearn_watch.
        #[arg(long)]
        dataset: String,
        /// Folder (or file) of the raw dataset; not needed for registry defaults.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Output store (`.h5`).
        #[arg(long)]
        output: PathBuf,
        /// Target sample rate in Hz.
        #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
        rate_hz: f64,
        /// Window length in seconds.
        #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
        window_secs: f64,
        /// Hop between windows in seconds (default: the window length).
        #[arg(long, allow_negative_numbers = true)]
        hop_secs: Option<f64>,
        /// Keep only these classes (comma-separated).
        #[arg(long, value_delimiter = ',')]
        classes: Option<Vec<String>>,
        /// Rebuild even if a matching store exists.
        #[arg(long)]
        force: bool,
        /// Succeed even when a subject or the whole dataset produced no window (reported either way).
        #[arg(long)]
        allow_empty: bool,
        #[command(flatten)]
        csv: CsvArgs,
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
        /// Leave out windows holding NaN or infinity (counted) instead of failing on the first.
        #[arg(long)]
        skip_nonfinite: bool,
        /// Where the networks train: `cpu`, or `cuda` / `cuda:N` in a `--features cuda` build
        /// (docs/cuda-build.md).
        #[arg(long, default_value = "cpu")]
        device: flowfm_core::device::DeviceChoice,
        /// Stop after this many steps in this session (a checkpoint is written; `--resume`
        /// continues), e.g. for a short timing run of a long profile.
        #[arg(long)]
        stop_after: Option<u64>,
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
        /// Leave out windows holding NaN or infinity (counted) instead of failing on the first.
        #[arg(long)]
        skip_nonfinite: bool,
        /// Where the networks run: `cpu`, or `cuda` / `cuda:N` in a `--features cuda` build.
        #[arg(long, default_value = "cpu")]
        device: flowfm_core::device::DeviceChoice,
    },
    /// Encode a window store with a pretrained encoder; write `(N, d)` representations to HDF5.
    Embed {
        /// Encoder checkpoint (`encoder.safetensors` of a run directory).
        #[arg(long)]
        encoder: PathBuf,
        /// Window store.
        #[arg(
            long,
            required_unless_present = "recording",
            conflicts_with = "recording"
        )]
        store: Option<PathBuf>,
        /// One long recording (CSV, optionally gzip'd; see the CSV options), streamed in bounded
        /// memory: windows are read, resampled and encoded in batches.
        #[arg(long)]
        recording: Option<PathBuf>,
        #[command(flatten)]
        csv: CsvArgs,
        /// Output file (`.h5`).
        #[arg(long)]
        output: PathBuf,
        /// Windows per forward pass.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Leave out windows holding NaN or infinity (counted) instead of failing on the first.
        #[arg(long)]
        skip_nonfinite: bool,
        /// Where the networks run: `cpu`, or `cuda` / `cuda:N` in a `--features cuda` build.
        #[arg(long, default_value = "cpu")]
        device: flowfm_core::device::DeviceChoice,
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
        /// Instead of evaluating by folds, fine-tune on every labelled window (a subject-wise
        /// validation split for early stopping) and save the classifier to this new folder
        /// (`encoder.safetensors`, `head.safetensors`, `model.json`) for `flowfm predict`.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Predict activities with a classifier saved by `finetune --save`: one row per window with
    /// start and end time, the predicted class and every class probability.
    Predict {
        /// Model folder written by `flowfm finetune --save`.
        #[arg(long)]
        model: PathBuf,
        /// A prepared window store to predict.
        #[arg(
            long,
            required_unless_present = "recording",
            conflicts_with = "recording"
        )]
        store: Option<PathBuf>,
        /// One long recording (CSV, optionally gzip'd; see the CSV options), streamed in bounded
        /// memory.
        #[arg(long)]
        recording: Option<PathBuf>,
        #[command(flatten)]
        csv: CsvArgs,
        /// The timeline (CSV) to write.
        #[arg(long)]
        output: PathBuf,
        /// Windows per batch.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Leave out windows holding NaN or infinity (counted) instead of failing on the first.
        #[arg(long)]
        skip_nonfinite: bool,
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
        /// Evaluation config (TOML; see `flowfm::downstream::eval`).
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
        /// Folder of the pretraining configs the study reads (`<method>-<profile>.toml`).
        #[arg(long, default_value = "configs")]
        config_dir: PathBuf,
        /// Seed of the whole study (subject plan, pretraining, folds, generation); recorded in
        /// the report.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Rerun stages whose outputs exist.
        #[arg(long)]
        force: bool,
        /// Where the networks run: `cpu`, or `cuda` / `cuda:N` in a `--features cuda` build.
        #[arg(long, default_value = "cpu")]
        device: flowfm_core::device::DeviceChoice,
    },
    /// Check that a report directory is complete (every table filled, every plot present).
    CheckReport {
        /// The report directory (holding report.md and report.json).
        dir: PathBuf,
    },
}

/// Options shared by `finetune` and `probe`.
#[derive(clap::Args)]
pub(crate) struct DownstreamArgs {
    /// Encoder checkpoint (`encoder.safetensors` of a pretraining run).
    #[arg(long)]
    pub(crate) encoder: PathBuf,
    /// Labelled window store.
    #[arg(long)]
    pub(crate) store: PathBuf,
    /// `loso` or `kfold:K`.
    #[arg(long, default_value = "kfold:5")]
    pub(crate) protocol: String,
    /// Training epochs of the step budget: at most max(EPOCHS x batches, the recipe's step floor)
    /// steps, with early stopping on the validation loss.
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub(crate) lr: Option<f64>,
    /// Seed of folds, splits, initialisation and batches.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Write the full result (every fold) as JSON here.
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
    /// Leave out windows holding NaN or infinity (counted) instead of failing on the first.
    #[arg(long)]
    pub(crate) skip_nonfinite: bool,
}

/// How to read CSV recordings (`prepare --dataset csv`, `embed --recording`, `predict
/// --recording`): a TOML spec file, or these flags (the README has a worked example).
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct CsvArgs {
    /// A CSV dataset spec (TOML); the flags below build one when absent.
    #[arg(long)]
    pub(crate) spec: Option<PathBuf>,
    /// Channel columns by name or 0-based index, comma-separated (e.g. `acc_x,acc_y,acc_z`).
    #[arg(long, value_delimiter = ',')]
    pub(crate) csv_channels: Vec<String>,
    /// Sample rate in Hz: the fixed rate without a time column, the nominal rate with one.
    #[arg(long)]
    pub(crate) csv_rate_hz: Option<f64>,
    /// Units of the channels: g, mg, m/s^2, rad/s, deg/s (one, or one per channel).
    #[arg(long, value_delimiter = ',')]
    pub(crate) csv_units: Vec<String>,
    /// Time column (name or index).
    #[arg(long)]
    pub(crate) csv_time_column: Option<String>,
    /// Unit of the time column: s, ms, us, ns or datetime.
    #[arg(long)]
    pub(crate) csv_time_unit: Option<String>,
    /// Per-sample label column (name or index).
    #[arg(long)]
    pub(crate) csv_label_column: Option<String>,
    /// Labels table (CSV with `file` and `label` and/or `subject` columns).
    #[arg(long)]
    pub(crate) csv_labels_table: Option<PathBuf>,
    /// File-name pattern with `{subject}`, `{label}` and `{*}`, e.g. `{subject}_{label}.csv`.
    #[arg(long)]
    pub(crate) csv_file_pattern: Option<String>,
    /// Per-sample subject column (name or index).
    #[arg(long)]
    pub(crate) csv_subject_column: Option<String>,
    /// The subject is the name of each file's folder.
    #[arg(long)]
    pub(crate) csv_subject_from_folder: bool,
    /// Field delimiter: `,` `;` `tab` `whitespace` or one ASCII character.
    #[arg(long)]
    pub(crate) csv_delimiter: Option<String>,
    /// The files have no header line.
    #[arg(long)]
    pub(crate) csv_no_header: bool,
}
