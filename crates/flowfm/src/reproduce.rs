//! The study behind `cargo xtask reproduce`: obtain and prepare the datasets, split subjects into
//! a pretraining pool and downstream subjects, pretrain FlowFM, the diffusion baseline and
//! SSL-Wearables multi-task on the pool, then evaluate, and write `report.md`, `report.json` and
//! SVG plots. Every number in the report comes from this run.

use crate::cache::{self, KeyBuilder, Lookup};
use crate::config::{Experiment, ExperimentFile};
use crate::datasets::{self, DatasetSpec, PreparedStore};
use crate::finetune::{DownstreamConfig, EncoderSource, Mode};
use crate::generate::{
    generation_study, GenerationStudy, ReferenceEncoder, StudyConfig, TrainedModels,
};
use crate::history::{time_to_target, RunHistory};
use crate::pretrain::{pretrain, PretrainOptions, ValidationProbe};
use crate::protocol::{run_protocol, DatasetInfo, Protocol, ProtocolOptions, ProtocolResult};
use crate::report::{Report, Section};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use flowfm_core::SeededRng;
use flowfm_data::prepare::PrepareConfig;
use flowfm_data::store::WindowStore;
use flowfm_data::window::WindowSet;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Scale of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Profile {
    /// Tiny models and few steps on real data (minutes on 2 cores; what CI runs).
    Quick,
    /// CPU scale: width-reduced encoder (about an hour on 2 cores).
    Default,
    /// The paper's sizes (for a GPU build).
    Full,
}

impl Profile {
    /// Parses `quick`, `default` or `full`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "quick" => Profile::Quick,
            "default" => Profile::Default,
            "full" => Profile::Full,
            other => bail!("unknown profile `{other}` (quick | default | full)"),
        })
    }

    /// The name used in paths and reports.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Default => "default",
            Profile::Full => "full",
        }
    }

    /// The protocol of a dataset: leave-one-subject-out for ADL/HMP (as SSL-Wearables), subject-wise
    /// 5-fold elsewhere (3-fold in the quick profile).
    pub fn protocol_for(self, dataset: &str, subjects: usize) -> Protocol {
        let k = if self == Profile::Quick { 3 } else { 5 };
        if dataset.starts_with("adl") && self != Profile::Quick {
            Protocol::Loso
        } else {
            Protocol::KFold { k: k.min(subjects) }
        }
    }

    /// The downstream training settings at this scale.
    pub fn downstream_config(self, mode: Mode, protocol: Protocol, seed: u64) -> DownstreamConfig {
        let mut cfg = DownstreamConfig {
            mode,
            protocol,
            seed,
            ..DownstreamConfig::default()
        };
        match self {
            Profile::Quick => {
                cfg.max_epochs = if mode == Mode::LinearProbe { 30 } else { 2 };
                cfg.patience = 3;
                cfg.batch_size = 32;
                cfg.forest_trees = 30;
                cfg.lr = if mode == Mode::LinearProbe {
                    1e-2
                } else {
                    1e-3
                };
            }
            Profile::Default => {
                cfg.max_epochs = if mode == Mode::LinearProbe { 100 } else { 5 };
                cfg.patience = if mode == Mode::LinearProbe { 10 } else { 2 };
                cfg.lr = if mode == Mode::LinearProbe {
                    1e-2
                } else {
                    1e-3
                };
                cfg.forest_trees = 100;
            }
            Profile::Full => {
                cfg.max_epochs = if mode == Mode::LinearProbe { 100 } else { 20 };
                cfg.patience = if mode == Mode::LinearProbe { 10 } else { 5 };
                cfg.lr = if mode == Mode::LinearProbe {
                    1e-2
                } else {
                    1e-4
                };
                cfg.augment = mode == Mode::FineTune;
            }
        }
        cfg
    }

    /// At most this many downstream subjects per dataset take part in the protocols (the quick
    /// profile keeps CI within minutes; the others use every downstream subject).
    pub fn max_downstream_subjects(self) -> Option<usize> {
        match self {
            Profile::Quick => Some(8),
            Profile::Default | Profile::Full => None,
        }
    }

    /// Real windows the generation study compares against.
    pub fn generation_windows(self) -> usize {
        match self {
            Profile::Quick => 64,
            Profile::Default => 64,
            Profile::Full => 1000,
        }
    }

    /// The sampler grid of the generation study at this scale (the paper's grid from the
    /// default profile on; the quick profile shortens DDPM to its few steps by using a short T).
    pub fn study_config(self, flow: &TrainedModels) -> StudyConfig {
        let reference = ReferenceEncoder::random_like(flow.encoder.config());
        let mut cfg = match self {
            Profile::Quick => {
                StudyConfig::with_steps(reference, &[1, 2, 4, 8], true, &[10, 20], true)
            }
            Profile::Default | Profile::Full => StudyConfig::paper(reference),
        };
        cfg.batch_size = 64;
        cfg
    }

    /// The pretraining experiment of `method` at this scale.
    pub fn experiment(self, method: &str, seed: u64) -> Result<Experiment> {
        let (width, generator, steps, batch, lr) = match self {
            Profile::Quick => (
                "0.0625",
                "preset = \"small\"\nbase_channels = 8\nchannel_mults = [1, 2]",
                40,
                32,
                2e-3,
            ),
            Profile::Default => ("0.25", "preset = \"small\"", 300, 64, 1e-3),
            Profile::Full => ("1.0", "preset = \"paper\"", 20000, 256, 1e-3),
        };
        let text = format!(
            "[run]\nname = \"{method}\"\nmethod = \"{method}\"\nseed = {seed}\n\n[encoder]\nwidth = {width}\n\n[generator]\n{generator}\n\n\
             [train]\nbatch_size = {batch}\nsteps = {steps}\nlr = {lr}\nmin_lr = {min_lr}\nwarmup_steps = {warmup}\ngrad_clip = 1.0\n\
             checkpoint_every = {ckpt}\nlog_every = 1\n",
            min_lr = lr * 0.05,
            warmup = steps / 20,
            ckpt = (steps / 4).max(1),
        );
        Ok(
            ExperimentFile::parse(&text, &format!("{} profile, {method}", self.name()))?
                .validate()?,
        )
    }
}

/// Options of a reproduce run.
#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    /// Scale.
    pub profile: Profile,
    /// Extra raw datasets.
    pub data_dir: Option<PathBuf>,
    /// Where the report goes.
    pub report_dir: PathBuf,
    /// Rerun stages whose outputs exist.
    pub force: bool,
    /// No progress bars.
    pub quiet: bool,
}

/// Concatenates the windows of several stores into one set (subject ids offset per store so they
/// stay unique; labels dropped because class vocabularies differ).
pub fn load_pool(paths: &[PathBuf]) -> Result<WindowSet> {
    let mut sets = Vec::new();
    for p in paths {
        let store = WindowStore::open(p).with_context(|| format!("opening {}", p.display()))?;
        sets.push(store.load()?);
    }
    combine_unlabelled(&sets)
}

/// Concatenates window sets of the same layout as one unlabelled pool.
pub fn combine_unlabelled(sets: &[WindowSet]) -> Result<WindowSet> {
    let Some(first) = sets.first() else {
        bail!("no window sets to combine")
    };
    let mut out = WindowSet::empty(
        "pool",
        first.sample_rate_hz,
        first.channel_names.clone(),
        first.window_len,
        vec![],
    );
    for (i, s) in sets.iter().enumerate() {
        if s.channels != first.channels
            || s.window_len != first.window_len
            || s.sample_rate_hz != first.sample_rate_hz
        {
            bail!(
                "dataset `{}` has windows of {} channels x {} samples at {} Hz; `{}` has {} x {} at {} Hz",
                s.dataset, s.channels, s.window_len, s.sample_rate_hz, first.dataset, first.channels, first.window_len, first.sample_rate_hz
            );
        }
        out.x.extend_from_slice(&s.x);
        out.y.extend(std::iter::repeat_n(-1, s.y.len()));
        out.subject
            .extend(s.subject.iter().map(|&sub| (i as i64) * 1_000_000 + sub));
        out.start_time_s.extend_from_slice(&s.start_time_s);
    }
    Ok(out)
}

/// The subjects of a dataset split into a pretraining part and a downstream part.
#[derive(Clone, Debug, Serialize)]
pub struct SubjectPlan {
    /// Dataset name.
    pub dataset: String,
    /// Subjects whose windows (labelled or not) form the pretraining pool.
    pub pretrain_subjects: Vec<i64>,
    /// Subjects used only by the downstream protocols (never seen in pretraining).
    pub downstream_subjects: Vec<i64>,
}

/// Splits subjects in half (seeded): pretraining never sees a downstream subject.
pub fn plan_subjects(dataset: &str, subjects: &[i64], seed: u64) -> SubjectPlan {
    let mut unique: Vec<i64> = subjects
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    SeededRng::new(seed)
        .derive(&format!("subject-plan/{dataset}"))
        .shuffle(&mut unique);
    let half = unique.len() / 2;
    let mut pre = unique[..half].to_vec();
    let mut down = unique[half..].to_vec();
    pre.sort_unstable();
    down.sort_unstable();
    SubjectPlan {
        dataset: dataset.into(),
        pretrain_subjects: pre,
        downstream_subjects: down,
    }
}

/// One row of the data table.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetRow {
    /// Name.
    pub name: String,
    /// Subjects.
    pub subjects: usize,
    /// Windows.
    pub windows: usize,
    /// Labelled windows.
    pub labelled: usize,
    /// Classes.
    pub classes: usize,
    /// Whether the store was reused.
    pub reused: bool,
    /// Seconds to read and prepare (0 when reused).
    pub prepare_s: f64,
}

/// One pretraining run in the report (read from its `metrics.jsonl`, so a reused run reports
/// its whole history).
#[derive(Clone, Debug, Serialize)]
pub struct PretrainRow {
    /// Method.
    pub method: String,
    /// Steps.
    pub steps: u64,
    /// Windows in the pool.
    pub pool_windows: usize,
    /// Wall seconds of the whole run (probes and checkpoints included).
    pub wall_s: f64,
    /// Seconds spent in training steps.
    pub train_s: f64,
    /// Mean seconds per epoch (over completed epochs).
    pub epoch_s: Option<f64>,
    /// Throughput over the training steps.
    pub windows_per_s: f64,
    /// Mean loss of the first and last tenth of the steps.
    pub loss_first: f64,
    /// See `loss_first`.
    pub loss_last: f64,
    /// Loss of every step (for the plot).
    #[serde(skip)]
    pub losses: Vec<f64>,
    /// RankMe of the encoder at each checkpoint `(step, rankme)`.
    pub rankme: Vec<(u64, f64)>,
    /// Validation probe `(step, train_s, val_knn_f1)`.
    pub validation: Vec<(u64, f64, f64)>,
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The report row of a run from its history.
pub fn pretrain_row(method: &str, h: &RunHistory, pool: usize, batch_size: usize) -> PretrainRow {
    let k = (h.losses.len() / 10).max(1);
    PretrainRow {
        method: method.into(),
        steps: h.steps,
        pool_windows: pool,
        wall_s: h.wall_s,
        train_s: h.train_s,
        epoch_s: if h.epoch_seconds.is_empty() {
            None
        } else {
            Some(mean(&h.epoch_seconds))
        },
        windows_per_s: if h.train_s > 0.0 {
            (h.steps as f64 * batch_size as f64) / h.train_s
        } else {
            f64::NAN
        },
        loss_first: mean(&h.losses[..k.min(h.losses.len())]),
        loss_last: mean(&h.losses[h.losses.len().saturating_sub(k)..]),
        losses: h.losses.clone(),
        rankme: h.rankme.clone(),
        validation: h.validation.clone(),
    }
}

/// Version of the downstream stage's semantics; bump it when the same config and inputs would
/// now give other results, so cached results are not reused. Version 1 adds nothing to the key.
pub const DOWNSTREAM_STAGE_VERSION: u32 = 1;

/// Version of the generation stage's semantics (2: Frechet distance in hand-crafted features
/// added, and the speed-up requires both distances to match DDPM; 3: those features compressed
/// as sign(z) ln(1 + |z|); 4: diffusion's predicted x0 clipped to the pool's range).
pub const GENERATION_STAGE_VERSION: u32 = 4;

fn versioned(key: KeyBuilder, version: u32) -> KeyBuilder {
    if version > 1 {
        key.text("stage version", &version.to_string())
    } else {
        key
    }
}

/// Fraction of the weaker method's best validation score that defines the target.
pub const TARGET_FRACTION: f64 = 0.95;

/// The labelled validation probe watched during pretraining: windows of the *pretraining*
/// subjects of the dataset with the most labelled windows there (never a downstream subject),
/// its subjects split in half (seeded) into a kNN memory and a scored half.
pub fn validation_probe(
    prepared: &[(DatasetSpec, PreparedStore)],
    plans: &[SubjectPlan],
    profile: Profile,
    steps: u64,
    seed: u64,
) -> Result<Option<ValidationProbe>> {
    let mut best: Option<(usize, Vec<usize>)> = None;
    for (d, ((_, p), plan)) in prepared.iter().zip(plans).enumerate() {
        let keep: BTreeSet<i64> = plan.pretrain_subjects.iter().copied().collect();
        let idx: Vec<usize> = (0..p.store.num_windows())
            .filter(|&i| p.store.y[i] >= 0 && keep.contains(&p.store.subject[i]))
            .collect();
        if best.as_ref().map(|b| idx.len() > b.1.len()).unwrap_or(true) {
            best = Some((d, idx));
        }
    }
    let Some((d, idx)) = best else {
        return Ok(None);
    };
    let (spec, p) = &prepared[d];
    let mut subjects: Vec<i64> = idx
        .iter()
        .map(|&i| p.store.subject[i])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if subjects.len() < 2 {
        return Ok(None);
    }
    let rng = SeededRng::new(seed).derive("validation-probe");
    rng.derive("subjects").shuffle(&mut subjects);
    let fit_subjects: BTreeSet<i64> = subjects[..subjects.len() / 2].iter().copied().collect();
    let (n_fit, n_eval) = match profile {
        Profile::Quick => (192, 128),
        Profile::Default | Profile::Full => (768, 384),
    };
    let side = |fit: bool, n: usize, name: &str| -> Result<(Tensor, Vec<usize>)> {
        let mut rows: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| fit_subjects.contains(&p.store.subject[i]) == fit)
            .collect();
        rng.derive(name).shuffle(&mut rows);
        rows.truncate(n);
        rows.sort_unstable();
        let ws = p.store.load_subset(&rows)?;
        let y = ws.y.iter().map(|&v| v as usize).collect();
        let x = Tensor::from_vec(
            ws.x,
            (rows.len(), ws.channels, ws.window_len),
            &candle_core::Device::Cpu,
        )?;
        Ok((x, y))
    };
    let (fit_x, fit_y) = side(true, n_fit, "fit")?;
    let (eval_x, eval_y) = side(false, n_eval, "eval")?;
    if fit_y.len() < 5 || eval_y.is_empty() {
        return Ok(None);
    }
    let num_classes = p.store.meta.class_names.len().max(
        fit_y
            .iter()
            .chain(&eval_y)
            .max()
            .map(|m| m + 1)
            .unwrap_or(0),
    );
    Ok(Some(ValidationProbe {
        name: format!(
            "{}: {} windows of {} pretraining subjects memorised, {} windows of {} others scored",
            spec.name,
            fit_y.len(),
            fit_subjects.len(),
            eval_y.len(),
            subjects.len() - fit_subjects.len()
        ),
        fit_x,
        fit_y,
        eval_x,
        eval_y,
        num_classes,
        every: (steps / 10).max(1),
    }))
}

/// Runs the study.
pub fn run(opts: &ReproduceOptions) -> Result<()> {
    let started = Instant::now();
    let seed = 0u64;
    let work = work_dir(&opts.report_dir);
    let stores_dir = work.join("stores");
    let mut report = Report::new(
        &format!("flowfm study ({} profile)", opts.profile.name()),
        opts.profile.name(),
        seed,
    );
    report.set_command(format!(
        "cargo xtask reproduce{}{}",
        match opts.profile {
            Profile::Quick => " --quick",
            Profile::Default => "",
            Profile::Full => " --full",
        },
        opts.data_dir
            .as_ref()
            .map(|d| format!(" --data-dir {}", d.display()))
            .unwrap_or_default()
    ));

    // Stage 1: data.
    let mut specs: Vec<DatasetSpec> = datasets::default_specs();
    if let Some(dir) = &opts.data_dir {
        if !dir.is_dir() {
            bail!("--data-dir {}: not a directory", dir.display());
        }
        let found = datasets::discover(dir);
        // The registry's HAPT is the same study as the raw UCI HAPT: keep one copy, or a subject
        // could land in the pretraining pool through one and in the downstream set through the other.
        if found.iter().any(|s| s.name == "uci_hapt") {
            specs.retain(|s| s.name != "hapt_kcc2020");
        }
        specs.extend(found);
    }
    eprintln!("[1/6] data: {} datasets", specs.len());
    let prep_cfg = PrepareConfig::default();
    let mut prepared: Vec<(DatasetSpec, PreparedStore)> = Vec::new();
    let mut rows = Vec::new();
    let mut unavailable = Vec::new();
    for spec in specs {
        let t = Instant::now();
        let p = match datasets::prepare_spec(&spec, &prep_cfg, &stores_dir, true, opts.force) {
            Ok(p) => p,
            // A default dataset that cannot be downloaded (no network) is left out when other
            // datasets were given, and the report says so; without any, the run cannot go on.
            Err(e) if spec.is_registry() && opts.data_dir.is_some() => {
                eprintln!("      {}: unavailable, left out ({e:#})", spec.name);
                unavailable.push((spec.name.clone(), format!("{e:#}")));
                continue;
            }
            Err(e) => return Err(e),
        };
        let secs = if p.reused {
            0.0
        } else {
            t.elapsed().as_secs_f64()
        };
        let subjects: BTreeSet<i64> = p.store.subject.iter().copied().collect();
        let row = DatasetRow {
            name: spec.name.clone(),
            subjects: subjects.len(),
            windows: p.store.num_windows(),
            labelled: p.store.y.iter().filter(|&&y| y >= 0).count(),
            classes: p.store.meta.class_names.len(),
            reused: p.reused,
            prepare_s: secs,
        };
        eprintln!(
            "      {}: {} subjects, {} windows ({} labelled), {} classes{}",
            row.name,
            row.subjects,
            row.windows,
            row.labelled,
            row.classes,
            if p.reused { " (reused)" } else { "" }
        );
        rows.push(row);
        prepared.push((spec, p));
    }
    report.add(Section::datasets(&rows, &unavailable));

    // Stage 2: subjects.
    let mut plans = Vec::new();
    let mut pool_sets = Vec::new();
    for (spec, p) in &prepared {
        let plan = plan_subjects(&spec.name, &p.store.subject, seed);
        let keep: BTreeSet<i64> = plan.pretrain_subjects.iter().copied().collect();
        let idx: Vec<usize> = (0..p.store.num_windows())
            .filter(|&i| keep.contains(&p.store.subject[i]))
            .collect();
        pool_sets.push(p.store.load_subset(&idx)?);
        plans.push(plan);
    }
    let pool = Arc::new(combine_unlabelled(&pool_sets)?);
    let n_pool = pool.num_windows();
    report.add(Section::subjects(&plans, n_pool));
    eprintln!(
        "[2/6] pretraining pool: {n_pool} windows from the pretraining subjects of {} datasets",
        plans.len()
    );

    // Stage 3: pretraining (resumes, or reuses a finished run of the same config).
    let runs_dir = work.join("runs");
    let (steps, _) =
        crate::pretrain::schedule_steps(&opts.profile.experiment("flowfm", seed)?, n_pool)?;
    let probe = validation_probe(&prepared, &plans, opts.profile, steps, seed)?.map(Arc::new);
    if let Some(p) = &probe {
        eprintln!("      validation probe: {}", p.name);
    }
    let mut pre_rows = Vec::new();
    let mut pre_configs = Vec::new();
    for (i, method) in ["flowfm", "diffusion", "ssl_multitask"].iter().enumerate() {
        let exp = opts.profile.experiment(method, seed)?;
        let dir = runs_dir.join(method);
        if opts.force && dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        eprintln!("[3/6] pretraining {} ({}/3)", method, i + 1);
        let mut popts = PretrainOptions::new(&dir);
        popts.quiet = opts.quiet;
        popts.resume = true;
        popts.validation = probe.clone();
        pre_configs.push((method.to_string(), exp.file.to_toml()));
        let out = pretrain(&exp, pool.clone(), (0..n_pool).collect(), &popts)?;
        if out.losses.is_empty() && out.steps == out.total_steps {
            report.note_reused(format!(
                "pretraining of {method} (finished run in work/runs/{method} of the report folder)"
            ));
        }
        let history = RunHistory::read(&dir)?;
        pre_rows.push(pretrain_row(
            method,
            &history,
            n_pool,
            exp.file.train.batch_size,
        ));
    }
    report.add(Section::pretraining(&pre_rows));
    let curves: Vec<(String, Vec<(u64, f64, f64)>, f64)> = pre_rows
        .iter()
        .map(|r| (r.method.clone(), r.validation.clone(), r.train_s))
        .collect();
    let ttt = time_to_target(&curves, TARGET_FRACTION)?;
    report.add(Section::time_to_target(
        ttt.as_ref(),
        probe.as_ref().map(|p| p.name.as_str()),
    ));
    report.plot_losses(&opts.report_dir, &pre_rows)?;
    report.plot_rankme(&opts.report_dir, &pre_rows)?;
    report.plot_validation(&opts.report_dir, &pre_rows, ttt.as_ref())?;

    // Stage 4: downstream protocols on the downstream subjects.
    eprintln!("[4/6] downstream protocols");
    let mut downstream = Vec::new();
    let mut downstream_reused = 0usize;
    let mut down_configs: Vec<(String, String)> = Vec::new();
    let enc_cfg = opts.profile.experiment("flowfm", seed)?.encoder;
    for ((spec, p), plan) in prepared.iter().zip(&plans) {
        let cap = opts.profile.max_downstream_subjects().unwrap_or(usize::MAX);
        let keep: BTreeSet<i64> = plan.downstream_subjects.iter().copied().take(cap).collect();
        let idx: Vec<usize> = (0..p.store.num_windows())
            .filter(|&i| p.store.y[i] >= 0 && keep.contains(&p.store.subject[i]))
            .collect();
        let subjects: BTreeSet<i64> = idx.iter().map(|&i| p.store.subject[i]).collect();
        if subjects.len() < 3 || idx.is_empty() {
            eprintln!(
                "      {}: skipped (fewer than 3 labelled downstream subjects)",
                spec.name
            );
            continue;
        }
        let mut ws = p.store.load_subset(&idx)?;
        ws.dataset = spec.name.clone();
        let ws = Arc::new(ws);
        let protocol = opts.profile.protocol_for(&spec.name, subjects.len());
        for (method, encoder, mode) in downstream_grid(opts.profile, &runs_dir, &enc_cfg) {
            let cfg = opts.profile.downstream_config(mode, protocol, seed);
            let cfg_name = format!("{} ({})", mode.name(), protocol.label());
            if !down_configs.iter().any(|(n, _)| *n == cfg_name) {
                down_configs.push((cfg_name, format!("{cfg:#?}")));
            }
            let mut key = versioned(KeyBuilder::new(), DOWNSTREAM_STAGE_VERSION)
                .text("stage", "downstream")
                .text("dataset", &spec.name)
                .text("store", &p.store.meta.fingerprint)
                .text("subjects", &format!("{subjects:?}"))
                .text("method", &method)
                .text("encoder", &format!("{encoder:?}"))
                .text("config", &format!("{cfg:?}"));
            if let EncoderSource::Pretrained(path) = &encoder {
                key = key.file("checkpoint", path)?;
            }
            let key = key.finish();
            let cache_path = work
                .join("downstream")
                .join(&spec.name)
                .join(format!("{method}-{}.pkl", mode.name()));
            let t = Instant::now();
            let (res, reused) = match (opts.force, cache::load::<ProtocolResult>(&cache_path, &key))
            {
                (false, Lookup::Hit(r)) => {
                    downstream_reused += 1;
                    (r, true)
                }
                _ => {
                    let res = run_protocol(
                        ws.clone(),
                        &encoder,
                        &cfg,
                        &ProtocolOptions::new(DatasetInfo::of_window_set(&ws), method.clone()),
                    )
                    .with_context(|| {
                        format!("downstream {} / {method} / {}", spec.name, mode.name())
                    })?;
                    cache::store(&cache_path, &key, &res)?;
                    res.write_json(&cache_path.with_extension("json"))?;
                    (res, false)
                }
            };
            eprintln!(
                "      {} {} {}: macro F1 {:.3} ({})",
                spec.name,
                method,
                mode.name(),
                res.mean_macro_f1(),
                if reused {
                    "reused".to_string()
                } else {
                    format!("{:.1} s", t.elapsed().as_secs_f64())
                }
            );
            downstream.push(res);
        }
    }
    if downstream_reused > 0 {
        report.note_reused(format!(
            "{downstream_reused} of {} downstream protocol runs",
            downstream.len()
        ));
    }
    report.add(Section::downstream(&downstream)?);
    report.plot_f1(&opts.report_dir, &downstream)?;

    // Stage 5: generation quality and speed, flow vs diffusion, on held-out downstream windows.
    eprintln!("[5/6] generation: flow vs diffusion");
    let device = candle_core::Device::Cpu;
    let flow = TrainedModels::from_run_dir(&runs_dir.join("flowfm"), &device)?;
    let diffusion = TrainedModels::from_run_dir(&runs_dir.join("diffusion"), &device)?;
    let real = held_out_windows(&prepared, &plans, opts.profile.generation_windows(), seed)?;
    let mut study_cfg = opts.profile.study_config(&flow);
    // DDPM practice clips the predicted x0 to the data range; ours is the largest |x| (in g) of
    // the pretraining pool, so no real window of training would be clipped.
    let range = pool
        .x
        .iter()
        .fold(0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    study_cfg.diffusion_clip_x0 = Some((range as f64 * 10.0).ceil() / 10.0);
    let key = versioned(KeyBuilder::new(), GENERATION_STAGE_VERSION)
        .text("stage", "generation")
        .file("flow encoder", &flow.encoder_path)?
        .file("flow generator", &flow.generator_path)?
        .file("diffusion encoder", &diffusion.encoder_path)?
        .file("diffusion generator", &diffusion.generator_path)?
        .floats("real windows", &real.x)
        .text("config", &format!("{study_cfg:?}"))
        .finish();
    let cache_path = work.join("generation.pkl");
    let study = match (
        opts.force,
        cache::load::<GenerationStudy>(&cache_path, &key),
    ) {
        (false, Lookup::Hit(s)) => {
            eprintln!("      reused (same checkpoints, windows and sampler grid)");
            report.note_reused("the generation study".into());
            s
        }
        _ => {
            let s = generation_study(&flow, &diffusion, &real, &study_cfg)?;
            cache::store(&cache_path, &key, &s)?;
            s
        }
    };
    report.add(Section::generation(&study));
    report.add(Section::configs(
        &pre_configs,
        &down_configs,
        &format!("{study_cfg:#?}"),
    ));
    report.plot_nfe_quality(&opts.report_dir, &study)?;
    report.plot_examples(&opts.report_dir, &study)?;

    eprintln!("[6/6] report");
    report.finish(&opts.report_dir, started.elapsed().as_secs_f64())?;
    let problems = crate::report::check_report(&opts.report_dir)?;
    if !problems.is_empty() {
        bail!(
            "the report in {} is incomplete:\n  {}",
            opts.report_dir.display(),
            problems.join("\n  ")
        );
    }
    match ttt.as_ref().and_then(|t| t.flow_over_diffusion) {
        Some(r) => eprintln!(
            "time to the validation target: flow {:.1} % of diffusion's training time",
            100.0 * r
        ),
        None => {
            eprintln!("time to the validation target: no flow/diffusion ratio (see the report)")
        }
    }
    eprintln!("generation speed-up: {}", study.speedup_note);
    eprintln!(
        "done in {:.1} min; report: {}",
        started.elapsed().as_secs_f64() / 60.0,
        opts.report_dir.join("report.md").display()
    );
    Ok(())
}

/// The downstream comparators: every pretrained encoder, the same encoder from random init
/// trained supervised, and the random forest on hand-crafted features.
fn downstream_grid(
    profile: Profile,
    runs: &Path,
    enc_cfg: &flowfm_models::EncoderConfig,
) -> Vec<(String, EncoderSource, Mode)> {
    let mut grid = Vec::new();
    let modes: &[Mode] = match profile {
        Profile::Quick => &[Mode::LinearProbe, Mode::Knn],
        // Fine-tuning every pretrained encoder on every fold costs hours on a CPU; the default
        // profile probes them (linear and kNN) and fine-tunes only the from-scratch baseline.
        Profile::Default => &[Mode::LinearProbe, Mode::Knn],
        Profile::Full => &[Mode::FineTune, Mode::LinearProbe, Mode::Knn],
    };
    for method in ["flowfm", "diffusion", "ssl_multitask"] {
        for &mode in modes {
            grid.push((
                method.to_string(),
                EncoderSource::Pretrained(runs.join(method).join("encoder.safetensors")),
                mode,
            ));
        }
    }
    grid.push((
        "supervised".into(),
        EncoderSource::Scratch(enc_cfg.clone()),
        Mode::FineTune,
    ));
    grid.push((
        "random_forest".into(),
        EncoderSource::None,
        Mode::RandomForest,
    ));
    grid
}

/// Up to `n` windows of the downstream subjects of every dataset (none of them seen in
/// pretraining), drawn with a seeded shuffle, as one unlabelled set.
fn held_out_windows(
    prepared: &[(DatasetSpec, PreparedStore)],
    plans: &[SubjectPlan],
    n: usize,
    seed: u64,
) -> Result<WindowSet> {
    let mut candidates: Vec<(usize, usize)> = Vec::new();
    for (d, ((_, p), plan)) in prepared.iter().zip(plans).enumerate() {
        let keep: BTreeSet<i64> = plan.downstream_subjects.iter().copied().collect();
        candidates.extend(
            (0..p.store.num_windows())
                .filter(|&i| keep.contains(&p.store.subject[i]))
                .map(|i| (d, i)),
        );
    }
    SeededRng::new(seed)
        .derive("generation-windows")
        .shuffle(&mut candidates);
    candidates.truncate(n);
    let mut sets = Vec::new();
    for (d, (_, p)) in prepared.iter().enumerate() {
        let mut idx: Vec<usize> = candidates
            .iter()
            .filter(|(dd, _)| *dd == d)
            .map(|(_, i)| *i)
            .collect();
        idx.sort_unstable();
        if !idx.is_empty() {
            sets.push(p.store.load_subset(&idx)?);
        }
    }
    combine_unlabelled(&sets)
}

/// Where a report directory keeps its working files.
pub fn work_dir(report_dir: &Path) -> PathBuf {
    report_dir.join("work")
}
