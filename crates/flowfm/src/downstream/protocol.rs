//! Evaluation protocols: subject-wise k-fold and leave-one-subject-out over the labelled windows
//! of a dataset, a subject-wise validation split inside each training fold, one downstream mode
//! per run ([`super::Mode`]), and the per-fold and aggregated metrics (macro F1, Cohen's
//! kappa, accuracy, balanced accuracy, per-class F1, confusion matrix) as a serialisable
//! [`ProtocolResult`] with a Markdown row per (dataset, method).
//!
//! Folds depend only on the subjects of the labelled windows and the seed, never on the mode, so
//! every comparator run with the same seed is tested on the same folds. Frozen-encoder modes
//! encode every labelled window once and the random forest extracts features once; folds then
//! only pick rows.
//!
//! Seeds: the folds come from `seed -> "folds"`, fold `i`'s validation split from
//! `seed -> ("fold", i) -> "validation"`, its training streams from `seed -> ("fold", i)`
//! (see [`super::finetune`]); the encoder is initialised from `seed -> "encoder"`, the same for
//! every fold.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use flowfm::downstream::{
//!     run_protocol, DatasetInfo, DownstreamConfig, EncoderSource, Mode, Protocol, ProtocolOptions,
//! };
//! let store = std::sync::Arc::new(flowfm_data::WindowStore::open("adl.h5")?);
//! let cfg = DownstreamConfig { mode: Mode::LinearProbe, protocol: Protocol::Loso, ..Default::default() };
//! let opts = ProtocolOptions::new(DatasetInfo::of_store(&store), "FlowFM (linear probe)");
//! let result = run_protocol(store, &EncoderSource::Pretrained("run/encoder.safetensors".into()), &cfg, &opts)?;
//! println!("{}\n{}", flowfm::downstream::ProtocolResult::markdown_header(), result.markdown_row()?);
//! result.write_json(std::path::Path::new("run/adl_probe.json"))?;
//! # Ok(()) }
//! ```

use super::config::{DownstreamConfig, EncoderSource, Mode, Protocol};
use super::finetune::{finetune_fold, FoldOutcome, FoldSplit, TrainOutcome};
use super::probe::{forest_fold, knn_fold, linear_probe_fold};
use crate::encode::encode_windows;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use flowfm_core::SeededRng;
use flowfm_data::batch::WindowSource;
use flowfm_data::split::{k_fold, leave_one_subject_out, validation_split, Fold, SubjectSet};
use flowfm_data::{WindowSet, WindowStore};
use flowfm_eval::{
    ClassificationReport, ConfusionMatrix, Embeddings, FeatureConfig, FeatureExtractor,
    FeatureTable, FoldResults, FoldSummary, Windows,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What the protocol needs to know about a dataset beyond its windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Dataset name (first column of the Markdown row).
    pub name: String,
    /// Sample rate of the windows in Hz (the random forest's spectral features need it).
    pub sample_rate_hz: f64,
    /// Class names; labels index into them. Empty: the classes are `0..=max label`.
    pub class_names: Vec<String>,
}

impl DatasetInfo {
    /// The information held by an in-memory window set.
    pub fn of_window_set(ws: &WindowSet) -> Self {
        Self {
            name: ws.dataset.clone(),
            sample_rate_hz: ws.sample_rate_hz,
            class_names: ws.class_names.clone(),
        }
    }

    /// The information held by an HDF5 window store.
    pub fn of_store(store: &WindowStore) -> Self {
        Self {
            name: store.meta.dataset.clone(),
            sample_rate_hz: store.meta.sample_rate_hz,
            class_names: store.meta.class_names.clone(),
        }
    }
}

/// Options of a protocol run that are not part of its config.
#[derive(Clone, Debug)]
pub struct ProtocolOptions {
    /// The dataset.
    pub dataset: DatasetInfo,
    /// Method name for reports (`"FlowFM (fine-tune)"`, `"Random forest"`).
    pub method: String,
    /// Where tensors live.
    pub device: Device,
    /// Print one line per fold to stderr.
    pub verbose: bool,
}

impl ProtocolOptions {
    /// Quiet options on the CPU.
    pub fn new(dataset: DatasetInfo, method: impl Into<String>) -> Self {
        Self {
            dataset,
            method: method.into(),
            device: Device::Cpu,
            verbose: false,
        }
    }
}

/// One fold of a protocol: subjects on each side and the window positions (indices into the
/// list of labelled windows, see [`labelled_windows`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldPlan {
    /// `"fold i"` (k-fold) or `"subject s"` (LOSO).
    pub name: String,
    /// Training subjects (validation subjects excluded).
    pub train: SubjectSet,
    /// Validation subjects, drawn from the training fold.
    pub val: SubjectSet,
    /// Test subjects.
    pub test: SubjectSet,
}

/// The indices (into the source) of the windows with a label (`y >= 0`), ascending.
pub fn labelled_windows(labels: &[i64]) -> Vec<usize> {
    labels
        .iter()
        .enumerate()
        .filter(|(_, &y)| y >= 0)
        .map(|(i, _)| i)
        .collect()
}

/// The folds of `protocol` over windows with per-window subjects `subjects`, each with a
/// validation split of about `val_fraction` of its training subjects when given (otherwise the
/// validation side is empty). Indices in the plans are positions in `subjects`. Deterministic in
/// `seed`; the test sides do not depend on `val_fraction`.
pub fn plan_folds(
    subjects: &[i64],
    protocol: Protocol,
    val_fraction: Option<f64>,
    seed: u64,
) -> Result<Vec<FoldPlan>> {
    let root = SeededRng::new(seed);
    let folds: Vec<Fold> = match protocol {
        Protocol::KFold { k } => k_fold(subjects, k, root.derive("folds").seed())
            .with_context(|| format!("building {k} subject-wise folds"))?,
        Protocol::Loso => leave_one_subject_out(subjects).context("building LOSO folds")?,
    };
    folds
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let name = match protocol {
                Protocol::KFold { .. } => format!("fold {i}"),
                Protocol::Loso => format!("subject {}", f.test.subjects[0]),
            };
            let seed = root
                .derive_indexed("fold", i as u64)
                .derive("validation")
                .seed();
            let (train, val) = match val_fraction {
                Some(fraction) => validation_split(subjects, &f.train, fraction, seed)
                    .with_context(|| format!("validation split of {name}"))?,
                None => (f.train, SubjectSet::default()),
            };
            Ok(FoldPlan {
                name,
                train,
                val,
                test: f.test,
            })
        })
        .collect()
}

/// The record of one fold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldRecord {
    /// `"fold i"` or `"subject s"`.
    pub name: String,
    /// Subjects the classifier was trained on (for kNN and the forest: validation subjects too).
    pub train_subjects: Vec<i64>,
    /// Subjects used for early stopping (empty for kNN and the forest).
    pub val_subjects: Vec<i64>,
    /// Held-out subjects.
    pub test_subjects: Vec<i64>,
    /// Training windows.
    pub train_windows: usize,
    /// Validation windows.
    pub val_windows: usize,
    /// Test windows.
    pub test_windows: usize,
    /// Inverse-frequency class weights of the training windows (empty without a loss).
    pub class_weights: Vec<f64>,
    /// Early stopping: best step (whose weights were tested), history of validations.
    pub training: Option<TrainOutcome>,
    /// Test metrics, with the confusion matrix.
    pub report: ClassificationReport,
    /// Wall seconds of the fold.
    pub wall_s: f64,
}

/// Everything a protocol run produced. Serialises to JSON ([`ProtocolResult::to_json`]); NaN
/// metrics (undefined, e.g. kappa of a one-class fold) become `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProtocolResult {
    /// Dataset name.
    pub dataset: String,
    /// Method name.
    pub method: String,
    /// Where the encoder came from (`pretrained:<path>`, `scratch`, `none`).
    pub encoder: String,
    /// The config that produced it.
    pub config: DownstreamConfig,
    /// Class names (or `"0"`, `"1"`, ... when the dataset has none).
    pub class_names: Vec<String>,
    /// Labelled windows taking part.
    pub labelled_windows: usize,
    /// Per-fold records, in fold order.
    pub folds: Vec<FoldRecord>,
    /// The per-fold reports as `flowfm_eval` aggregates them.
    pub results: FoldResults,
    /// Mean +- sd over folds of every metric.
    pub summary: FoldSummary,
    /// Seconds spent encoding windows or extracting features once for all folds.
    pub cache_wall_s: f64,
    /// Wall seconds of the whole run.
    pub wall_s: f64,
}

impl ProtocolResult {
    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Writes [`ProtocolResult::to_json`] to `path` atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        crate::output::write_file(path, self.to_json()?.as_bytes())
    }

    /// The Markdown table header matching [`ProtocolResult::markdown_row`].
    pub fn markdown_header() -> String {
        FoldResults::markdown_header()
    }

    /// One Markdown row: dataset, method, folds, macro F1, kappa, accuracy, balanced accuracy as
    /// mean +- sd over folds.
    pub fn markdown_row(&self) -> Result<String> {
        Ok(self.results.markdown_row()?)
    }

    /// Mean macro F1 over folds.
    pub fn mean_macro_f1(&self) -> f64 {
        self.summary.macro_f1.mean
    }
}

/// Number of classes and their names: from `info`, or `0..=max label` when it names none. Every
/// label must index a class.
fn classes(info: &DatasetInfo, labels: &[i64], labelled: &[usize]) -> Result<Vec<String>> {
    let max = labelled.iter().map(|&i| labels[i]).max().unwrap_or(-1);
    if info.class_names.is_empty() {
        return Ok((0..=max).map(|c| c.to_string()).collect());
    }
    if max >= info.class_names.len() as i64 {
        let i = labelled
            .iter()
            .copied()
            .find(|&i| labels[i] >= info.class_names.len() as i64)
            .unwrap_or(0);
        bail!(
            "window {i} of {} has label {} but the dataset names {} classes",
            info.name,
            labels[i],
            info.class_names.len()
        );
    }
    Ok(info.class_names.clone())
}

/// Hand-crafted features of the windows `indices` of `source`, extracted 512 windows at a time.
fn extract_features<S: WindowSource + ?Sized>(
    source: &S,
    indices: &[usize],
    sample_rate_hz: f64,
) -> Result<FeatureTable> {
    let (c, l) = (source.channels(), source.window_len());
    let fx = FeatureExtractor::new(
        FeatureConfig {
            sample_rate_hz,
            ..FeatureConfig::default()
        },
        c,
        l,
    )
    .context("hand-crafted features")?;
    let mut values = Vec::new();
    for chunk in indices.chunks(512) {
        let x = source.read_windows(chunk)?;
        let t = fx.extract(&Windows::new(&x, chunk.len(), c, l)?)?;
        values.extend_from_slice(t.values());
    }
    Ok(FeatureTable::new(
        fx.names().to_vec(),
        values,
        indices.len(),
    )?)
}

/// What folds select rows from.
enum Cache {
    /// Fine-tuning reads windows from the source.
    None,
    Representations(Embeddings<'static>),
    Features(FeatureTable),
}

/// Runs `cfg.mode` under `cfg.protocol` on the labelled windows of `source` and returns every
/// fold's metrics and their aggregate. `encoder` must not be [`EncoderSource::None`] unless the
/// mode is the random forest (which ignores it). The config is validated first (errors name the
/// field).
pub fn run_protocol<S: WindowSource + 'static>(
    source: Arc<S>,
    encoder: &EncoderSource,
    cfg: &DownstreamConfig,
    opts: &ProtocolOptions,
) -> Result<ProtocolResult> {
    cfg.validate()?;
    if cfg.mode.needs_encoder() && *encoder == EncoderSource::None {
        bail!(
            "mode {} needs an encoder (pretrained or scratch)",
            cfg.mode.name()
        );
    }
    let start = Instant::now();
    let device = &opts.device;
    let labels = source.labels();
    let subjects = source.subjects();
    if labels.len() != source.num_windows() || subjects.len() != source.num_windows() {
        bail!(
            "{}: {} windows but {} labels and {} subjects",
            opts.dataset.name,
            source.num_windows(),
            labels.len(),
            subjects.len()
        );
    }
    let labelled = labelled_windows(labels);
    if labelled.is_empty() {
        bail!("{}: no labelled windows (every y is -1)", opts.dataset.name);
    }
    let class_names = classes(&opts.dataset, labels, &labelled)?;
    let num_classes = class_names.len();
    let lab_subjects: Vec<i64> = labelled.iter().map(|&i| subjects[i]).collect();
    let lab_labels: Vec<usize> = labelled.iter().map(|&i| labels[i] as usize).collect();
    // kNN and the forest tune nothing: they train on the whole training fold.
    let val_fraction = cfg.mode.uses_validation().then_some(cfg.val_fraction);
    let plans = plan_folds(&lab_subjects, cfg.protocol, val_fraction, cfg.seed)
        .with_context(|| format!("{}: {} protocol", opts.dataset.name, cfg.protocol.label()))?;

    let root = SeededRng::new(cfg.seed);
    let cache_start = Instant::now();
    let cache = match cfg.mode {
        Mode::FineTune => Cache::None,
        Mode::LinearProbe | Mode::Knn => {
            let (_, enc) = encoder
                .build(&root.derive("encoder"), device)?
                .context("an encoder is required")?;
            let reps = encode_windows(&enc, &*source, &labelled, cfg.eval_batch_size, device)?;
            let d = enc.config().repr_dim();
            Cache::Representations(Embeddings::from_vec(reps, labelled.len(), d)?)
        }
        Mode::RandomForest => Cache::Features(extract_features(
            &*source,
            &labelled,
            opts.dataset.sample_rate_hz,
        )?),
    };
    let cache_wall_s = cache_start.elapsed().as_secs_f64();

    // Folds are independent (each has its own seeded stream, derived from its index), so they
    // train concurrently: with small batches one fold cannot keep both cores busy, two folds
    // can. The results do not depend on the schedule; they are gathered in fold order.
    type FoldDone = Result<(FoldSplit, FoldOutcome, f64)>;
    let run_fold = |i: usize, plan: &FoldPlan| -> FoldDone {
        let fold_start = Instant::now();
        let fold_rng = root.derive_indexed("fold", i as u64);
        let positions = FoldSplit {
            train: plan.train.indices.clone(),
            val: plan.val.indices.clone(),
            test: plan.test.indices.clone(),
        };
        let outcome: FoldOutcome = match &cache {
            Cache::None => {
                let to_source = |p: &[usize]| p.iter().map(|&j| labelled[j]).collect();
                let split = FoldSplit {
                    train: to_source(&positions.train),
                    val: to_source(&positions.val),
                    test: to_source(&positions.test),
                };
                finetune_fold(
                    &source,
                    &split,
                    encoder,
                    num_classes,
                    cfg,
                    &fold_rng,
                    device,
                )
            }
            Cache::Representations(reps) => match cfg.mode {
                Mode::Knn => knn_fold(reps, &lab_labels, &positions, num_classes, cfg, device),
                _ => linear_probe_fold(
                    reps,
                    &lab_labels,
                    &positions,
                    num_classes,
                    cfg,
                    &fold_rng,
                    device,
                ),
            },
            Cache::Features(f) => {
                forest_fold(f, &lab_labels, &positions, num_classes, cfg, &fold_rng)
            }
        }
        .with_context(|| format!("{} {}: {}", opts.dataset.name, cfg.mode.name(), plan.name))?;
        Ok((positions, outcome, fold_start.elapsed().as_secs_f64()))
    };
    let outcomes: Vec<FoldDone> = if cfg.mode == Mode::FineTune {
        // The folds run on a rayon pool of their own, one worker per concurrent fold, so that
        // each fold's parallel ops stay on its own worker's pool (as a `par_iter` over the
        // folds would, without more runnable threads than cores). Not on the global pool: a
        // fold blocks on its batch prefetcher, whose augmentation runs on the global pool,
        // and two folds on the two workers of a 2-core global pool would wait for each other's
        // prefetchers forever.
        let workers = rayon::current_num_threads().clamp(1, plans.len().max(1));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("flowfm-fold-{i}"))
            .build()
            .context("starting the fold threads")?;
        pool.install(|| {
            use rayon::prelude::*;
            plans
                .par_iter()
                .enumerate()
                .map(|(i, plan)| run_fold(i, plan))
                .collect()
        })
    } else {
        plans
            .iter()
            .enumerate()
            .map(|(i, plan)| run_fold(i, plan))
            .collect()
    };

    let mut results = FoldResults::new(&opts.dataset.name, &opts.method);
    let mut records = Vec::with_capacity(plans.len());
    for (plan, done) in plans.iter().zip(outcomes) {
        let (positions, outcome, wall_s) = done?;
        let (train, val) = (&plan.train, &plan.val);
        let confusion =
            ConfusionMatrix::from_predictions(&outcome.truth, &outcome.predicted, num_classes)?;
        results.push(&plan.name, &confusion)?;
        let report = confusion.report();
        if opts.verbose {
            let best = outcome
                .training
                .as_ref()
                .map(|t| {
                    format!(
                        ", best step {} of {} (budget {}), val loss {:.3}",
                        t.best_step, t.steps_run, t.max_steps, t.best_val_loss
                    )
                })
                .unwrap_or_default();
            eprintln!(
                "{} {} {}: macro F1 {:.3}, kappa {:.3}, {} test windows{best} ({wall_s:.1} s)",
                opts.dataset.name,
                opts.method,
                plan.name,
                report.macro_f1,
                report.cohen_kappa,
                outcome.truth.len()
            );
        }
        records.push(FoldRecord {
            name: plan.name.clone(),
            train_subjects: train.subjects.clone(),
            val_subjects: val.subjects.clone(),
            test_subjects: plan.test.subjects.clone(),
            train_windows: positions.train.len(),
            val_windows: positions.val.len(),
            test_windows: positions.test.len(),
            class_weights: outcome.class_weights,
            training: outcome.training,
            report,
            wall_s,
        });
    }
    let summary = results.summary()?;
    Ok(ProtocolResult {
        dataset: opts.dataset.name.clone(),
        method: opts.method.clone(),
        encoder: encoder.label(),
        config: cfg.clone(),
        class_names,
        labelled_windows: labelled.len(),
        folds: records,
        results,
        summary,
        cache_wall_s,
        wall_s: start.elapsed().as_secs_f64(),
    })
}
