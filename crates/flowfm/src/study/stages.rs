//! The study's stages, each a function from typed inputs to a typed output: data, subject plan
//! and pool, pretraining, downstream protocols, generation. Stages call the jobs of `train`,
//! `downstream` and `generation`, reuse cached results under a canonical key (`cache`), and
//! measure nothing themselves; `study::run` turns their outputs into the report.

use super::cache::{self, KeyBuilder, Lookup};
use super::plan::{held_out_windows, plan_subjects, validation_probe, SubjectPlan};
use super::profile::{is_transfer, Profile, METHODS};
use super::rows::{pretrain_row, DatasetRow, PoolSource, PretrainRow};
use crate::datasets::{self, combine_unlabelled, DatasetSpec, PreparedStore};
use crate::downstream::compare::{compare_runs, summarise_runs, FoldComparison, RunSummary};
use crate::downstream::{
    run_protocol, DatasetInfo, EncoderSource, Mode, ProtocolOptions, ProtocolResult,
};
use crate::generation::{generation_study, GenerationStudy, TrainedModels};
use crate::train::config::Experiment;
use crate::train::history::RunHistory;
use crate::train::pretrain::{pretrain, schedule_steps, PretrainOptions};
use crate::train::target::{target_sweep, ProbePoint, TargetSweep, THRESHOLDS};
use anyhow::{bail, Context, Result};
use flowfm_core::SeededRng;
use flowfm_data::prepare::PrepareConfig;
use flowfm_data::window::WindowSet;
use flowfm_eval::stats::BootstrapConfig;
use flowfm_models::EncoderConfig;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Version of the downstream stage's semantics; bump it when the same config and inputs would
/// now give other results, so cached results are not reused (3: one run per seed, encoders from
/// `runs/<method>/seed-<s>`, every pretrained encoder fine-tuned from the default profile on; 4:
/// the fine-tune recipe: a step budget with a floor, early stopping on validation loss, 12.5 %
/// validation subjects, batch norm recalibrated before validation and test).
pub const DOWNSTREAM_STAGE_VERSION: u32 = 4;

/// Version of the generation stage's semantics (2: Frechet distance in hand-crafted features
/// added, and the speed-up requires both distances to match DDPM; 3: those features compressed
/// as sign(z) ln(1 + |z|); 4: diffusion's predicted x0 clipped to the pool's range; 5: keys from
/// the canonical serialisation of the config; 6: labelled, subject-disjoint conditioning and
/// reference sets of one dataset with up to 1,000 windows each, a real-vs-real floor at the same
/// sizes, bootstrap intervals on every metric, cross-validated discriminator, label agreement and
/// representation consistency in place of reconstruction error, and the speed-up only at matched
/// quality (intervals overlapping or beating DDPM's on every metric); 7: the study records its
/// wall time (the report's stage costs)).
pub const GENERATION_STAGE_VERSION: u32 = 7;

/// What every stage after the data needs to know about the run.
#[derive(Clone, Copy, Debug)]
pub struct Settings<'a> {
    /// Scale.
    pub profile: Profile,
    /// Seed of the study.
    pub seed: u64,
    /// The report's working folder (stores, runs, cached stage results).
    pub work: &'a Path,
    /// Rerun stages whose outputs exist.
    pub force: bool,
    /// No progress bars.
    pub quiet: bool,
    /// Where the networks run.
    pub device: &'a candle_core::Device,
}

impl Settings<'_> {
    /// Where the pretraining runs live (`work/runs`).
    pub fn runs_dir(&self) -> PathBuf {
        self.work.join("runs")
    }

    /// The seeds of the repeated runs: `seed, seed + 1, ...` ([`Profile::seeds`] of them).
    pub fn seeds(&self) -> Vec<u64> {
        (0..self.profile.seeds() as u64)
            .map(|k| self.seed + k)
            .collect()
    }

    /// The run directory of `method` pretrained with `seed` (`work/runs/<method>/seed-<seed>`).
    pub fn run_dir(&self, method: &str, seed: u64) -> PathBuf {
        self.runs_dir().join(method).join(format!("seed-{seed}"))
    }
}

/// Stage 1's output: the prepared datasets and their table rows.
pub struct Data {
    /// Every dataset that could be obtained, with its window store.
    pub prepared: Vec<(DatasetSpec, PreparedStore)>,
    /// One table row per prepared dataset.
    pub rows: Vec<DatasetRow>,
    /// Default datasets that could not be obtained `(name, why)`.
    pub unavailable: Vec<(String, String)>,
}

/// Stage 1: obtains the default datasets (and every supported raw dataset under `data_dir`) and
/// prepares their window stores under `stores_dir`, reusing stores whose inputs match.
pub fn prepare_data(data_dir: Option<&Path>, stores_dir: &Path, force: bool) -> Result<Data> {
    let mut specs: Vec<DatasetSpec> = datasets::default_specs();
    if let Some(dir) = data_dir {
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
    let mut data = Data {
        prepared: Vec::new(),
        rows: Vec::new(),
        unavailable: Vec::new(),
    };
    for spec in specs {
        let t = Instant::now();
        let p = match datasets::prepare_spec(&spec, &prep_cfg, stores_dir, true, force) {
            Ok(p) => p,
            // A default dataset that cannot be downloaded (no network) is left out when other
            // datasets were given, and the report says so; without any, the run cannot go on.
            Err(e) if spec.is_registry() && data_dir.is_some() => {
                eprintln!("      {}: unavailable, left out ({e:#})", spec.name);
                data.unavailable.push((spec.name.clone(), format!("{e:#}")));
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
        data.rows.push(row);
        data.prepared.push((spec, p));
    }
    Ok(data)
}

/// Stage 2's output: who is used for what.
pub struct Pool {
    /// One plan per prepared dataset, in the same order.
    pub plans: Vec<SubjectPlan>,
    /// Every window of the pretraining subjects, unlabelled, overlapping by half a window.
    pub windows: Arc<WindowSet>,
    /// Where the pool's windows come from.
    pub sources: Vec<PoolSource>,
}

/// Stage 2: splits each dataset's subjects (seeded; a transfer dataset gives all of them to
/// downstream) and gathers the pretraining pool: every accelerometer stream of the pretraining
/// subjects cut into windows overlapping by half a window (unlabelled stretches included), from
/// stores prepared for the pool under `stores_dir/pool`.
pub fn plan_pool(data: &Data, seed: u64, stores_dir: &Path, force: bool) -> Result<Pool> {
    let mut plans = Vec::new();
    let mut pool_sets = Vec::new();
    let mut sources = Vec::new();
    let mut cfg = PrepareConfig::default();
    cfg.window.hop_secs = cfg.window.window_secs / 2.0;
    for (spec, p) in &data.prepared {
        let plan = plan_subjects(&spec.name, &p.store.subject, seed, is_transfer(&spec.name));
        if !plan.pretrain_subjects.is_empty() {
            let pooled = datasets::prepare_spec(spec, &cfg, &stores_dir.join("pool"), true, force)
                .with_context(|| {
                    format!("preparing the pretraining pool's windows of {}", spec.name)
                })?;
            let keep: BTreeSet<i64> = plan.pretrain_subjects.iter().copied().collect();
            let idx: Vec<usize> = (0..pooled.store.num_windows())
                .filter(|&i| keep.contains(&pooled.store.subject[i]))
                .collect();
            sources.push(PoolSource {
                dataset: spec.name.clone(),
                subjects: plan.pretrain_subjects.len(),
                windows: idx.len(),
                unlabelled: idx.iter().filter(|&&i| pooled.store.y[i] < 0).count(),
                hop_secs: cfg.window.hop_secs,
            });
            pool_sets.push(pooled.store.load_subset(&idx)?);
        }
        plans.push(plan);
    }
    if pool_sets.is_empty() {
        bail!("no dataset contributes pretraining subjects: every dataset given is a transfer dataset");
    }
    let windows = Arc::new(combine_unlabelled(&pool_sets)?);
    eprintln!(
        "[2/6] pretraining pool: {} windows (hop {} s) from the pretraining subjects of {} datasets; {} transfer datasets kept out",
        windows.num_windows(),
        cfg.window.hop_secs,
        sources.len(),
        plans.iter().filter(|p| p.transfer).count()
    );
    Ok(Pool {
        plans,
        windows,
        sources,
    })
}

/// Stage 3's output.
pub struct Pretrained {
    /// One row per method and seed, from each run's whole history.
    pub rows: Vec<PretrainRow>,
    /// `(method, resolved TOML)` of each method (its first seed; the others differ only in
    /// `run.seed`).
    pub configs: Vec<(String, String)>,
    /// The validation probe's description, if there was one.
    pub probe: Option<String>,
    /// Training time to the fixed validation thresholds, over seeds.
    pub time_to_target: Option<TargetSweep>,
    /// Runs (`method seed`) whose finished runs were reused.
    pub reused: Vec<String>,
}

/// Stage 3: pretrains every method of `experiments` (one experiment per seed of
/// [`Settings::seeds`], in that order) on the pool under [`Settings::run_dir`], resuming or
/// reusing finished runs, while the validation probe watches.
pub fn pretrain_methods(
    experiments: &[(String, Vec<Experiment>)],
    data: &Data,
    pool: &Pool,
    settings: &Settings<'_>,
) -> Result<Pretrained> {
    let (profile, force, quiet) = (settings.profile, settings.force, settings.quiet);
    let Some(first) = experiments.first().and_then(|(_, e)| e.first()) else {
        bail!("no pretraining experiments")
    };
    let n_pool = pool.windows.num_windows();
    let (steps, _) = schedule_steps(first, n_pool)?;
    let probe =
        validation_probe(&data.prepared, &pool.plans, profile, steps, first.seed)?.map(Arc::new);
    if let Some(p) = &probe {
        eprintln!("      validation probe: {}", p.name);
    }
    let mut out = Pretrained {
        rows: Vec::new(),
        configs: Vec::new(),
        probe: probe.as_ref().map(|p| p.name.clone()),
        time_to_target: None,
        reused: Vec::new(),
    };
    let seeds = settings.seeds();
    let total = experiments.len() * seeds.len();
    let mut curves: Vec<(String, Vec<Vec<ProbePoint>>)> = Vec::new();
    for (method, exps) in experiments {
        if exps.len() != seeds.len() {
            bail!(
                "{method}: {} experiments for {} seeds",
                exps.len(),
                seeds.len()
            );
        }
        out.configs.push((method.clone(), exps[0].file.to_toml()));
        let mut method_curves = Vec::new();
        for (exp, &seed) in exps.iter().zip(&seeds) {
            let dir = settings.run_dir(method, seed);
            let stale = if force {
                None
            } else {
                trained_under_other_config(&dir, exp)?
            };
            if let Some(was) = &stale {
                eprintln!(
                    "      {method} seed {seed}: the run in {} was trained under config {was}, the profile's is now {}; training it again",
                    dir.display(),
                    exp.fingerprint()
                );
            }
            if (force || stale.is_some()) && dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            eprintln!(
                "[3/6] pretraining {method}, seed {seed} ({}/{total})",
                out.rows.len() + 1
            );
            let mut popts = PretrainOptions::new(&dir);
            popts.quiet = quiet;
            popts.resume = true;
            popts.validation = probe.clone();
            popts.device = settings.device.clone();
            let run = pretrain(exp, pool.windows.clone(), (0..n_pool).collect(), &popts)?;
            if run.losses.is_empty() && run.steps == run.total_steps {
                out.reused.push(format!("{method} seed {seed}"));
            }
            let history = RunHistory::read(&dir)?;
            let row = pretrain_row(method, seed, &history, n_pool, exp.file.train.batch_size);
            method_curves.push(row.validation.clone());
            out.rows.push(row);
        }
        curves.push((method.clone(), method_curves));
    }
    out.time_to_target = target_sweep(&curves, &THRESHOLDS, settings.seed)?;
    Ok(out)
}

/// The config fingerprint a cached run in `dir` was trained under, when it differs from `exp`'s
/// (the profile's config changed since, e.g. a new option): the study then trains it again
/// instead of refusing to resume. `None` when there is no checkpoint or it matches.
fn trained_under_other_config(dir: &Path, exp: &Experiment) -> Result<Option<String>> {
    let ckpt = dir.join("checkpoints").join("last.safetensors");
    if !ckpt.is_file() {
        return Ok(None);
    }
    let (_, meta) = crate::train::run::load_checkpoint(&ckpt, &candle_core::Device::Cpu)?;
    let now = exp.fingerprint();
    Ok((meta.config_fingerprint != now).then_some(meta.config_fingerprint))
}

/// Stage 4's output.
pub struct Downstream {
    /// One result per (dataset, comparator, mode, seed).
    pub results: Vec<ProtocolResult>,
    /// One summary per (dataset, comparator, mode) over seeds x folds, in result order.
    pub summaries: Vec<RunSummary>,
    /// `(label, resolved config as JSON)` of each distinct downstream config (first seed).
    pub configs: Vec<(String, String)>,
    /// How many results were reused from the cache.
    pub reused: usize,
}

/// The downstream comparators for one seed: every pretrained encoder of that seed (fine-tuned,
/// linear probe, kNN), the same encoder from random init trained supervised, and the random
/// forest on hand-crafted features.
pub fn downstream_grid(
    settings: &Settings<'_>,
    seed: u64,
    enc_cfg: &EncoderConfig,
) -> Vec<(String, EncoderSource, Mode)> {
    let mut grid = Vec::new();
    for method in METHODS {
        for mode in [Mode::FineTune, Mode::LinearProbe, Mode::Knn] {
            grid.push((
                method.to_string(),
                EncoderSource::Pretrained(
                    settings.run_dir(method, seed).join("encoder.safetensors"),
                ),
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

/// The stage key of one downstream run: the config, the store, the subjects and the encoder, in
/// their canonical serialisation; a pretrained encoder by its checkpoint's bytes.
fn downstream_key(
    dataset: &str,
    fingerprint: &str,
    subjects: &BTreeSet<i64>,
    method: &str,
    encoder: &EncoderSource,
    cfg: &crate::downstream::DownstreamConfig,
) -> Result<String> {
    let key = KeyBuilder::new()
        .text("stage version", &DOWNSTREAM_STAGE_VERSION.to_string())
        .text("stage", "downstream")
        .text("dataset", dataset)
        .text("store", fingerprint)
        .value("subjects", subjects)?
        .text("method", method)
        .value("config", cfg)?;
    let key = match encoder {
        EncoderSource::Pretrained(path) => {
            key.text("encoder", "pretrained").file("checkpoint", path)?
        }
        EncoderSource::Scratch(enc) => key.text("encoder", "scratch").value("architecture", enc)?,
        EncoderSource::None => key.text("encoder", "none"),
    };
    Ok(key.finish())
}

/// Stage 4: every comparator of [`downstream_grid`], once per seed, under the profile's protocol
/// on the labelled windows of each dataset's downstream subjects (results cached under
/// `work/downstream`), and each comparator's summary over seeds x folds.
pub fn downstream(
    data: &Data,
    plans: &[SubjectPlan],
    enc_cfg: &EncoderConfig,
    settings: &Settings<'_>,
) -> Result<Downstream> {
    let (profile, work, force) = (settings.profile, settings.work, settings.force);
    eprintln!("[4/6] downstream protocols");
    let mut out = Downstream {
        results: Vec::new(),
        summaries: Vec::new(),
        configs: Vec::new(),
        reused: 0,
    };
    for ((spec, p), plan) in data.prepared.iter().zip(plans) {
        let cap = profile.max_downstream_subjects().unwrap_or(usize::MAX);
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
        let protocol = profile.protocol_for(&spec.name, subjects.len());
        for seed in settings.seeds() {
            for (method, encoder, mode) in downstream_grid(settings, seed, enc_cfg) {
                let cfg = profile.downstream_config(mode, protocol, seed);
                let cfg_name = format!("{} ({})", mode.name(), protocol.label());
                if !out.configs.iter().any(|(n, _)| *n == cfg_name) {
                    out.configs
                        .push((cfg_name, serde_json::to_string_pretty(&cfg)?));
                }
                let key = downstream_key(
                    &spec.name,
                    &p.store.meta.fingerprint,
                    &subjects,
                    &method,
                    &encoder,
                    &cfg,
                )?;
                let cache_path = work
                    .join("downstream")
                    .join(&spec.name)
                    .join(format!("{method}-{}-seed-{seed}.pkl", mode.name()));
                let t = Instant::now();
                let (res, reused) = match (force, cache::load::<ProtocolResult>(&cache_path, &key))
                {
                    (false, Lookup::Hit(r)) => {
                        out.reused += 1;
                        (r, true)
                    }
                    _ => {
                        let res = run_protocol(
                            ws.clone(),
                            &encoder,
                            &cfg,
                            &ProtocolOptions {
                                device: settings.device.clone(),
                                ..ProtocolOptions::new(
                                    DatasetInfo::of_window_set(&ws),
                                    method.clone(),
                                )
                            },
                        )
                        .with_context(|| {
                            format!(
                                "downstream {} / {method} / {} / seed {seed}",
                                spec.name,
                                mode.name()
                            )
                        })?;
                        cache::store(&cache_path, &key, &res)?;
                        res.write_json(&cache_path.with_extension("json"))?;
                        (res, false)
                    }
                };
                eprintln!(
                    "      {} {} {} seed {seed}: macro F1 {:.3} ({})",
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
                out.results.push(res);
            }
        }
    }
    let rng = SeededRng::new(settings.seed).derive("downstream-summaries");
    for (i, group) in group_runs(&out.results).into_iter().enumerate() {
        out.summaries.push(summarise_runs(
            &group,
            &BootstrapConfig::default(),
            &mut rng.derive_indexed("group", i as u64),
        )?);
    }
    Ok(out)
}

/// The results grouped by (dataset, method, mode), in order of first appearance; each group
/// holds one run per seed.
pub fn group_runs(results: &[ProtocolResult]) -> Vec<Vec<&ProtocolResult>> {
    let mut groups: Vec<Vec<&ProtocolResult>> = Vec::new();
    for r in results {
        let same = |g: &Vec<&ProtocolResult>| {
            g[0].dataset == r.dataset
                && g[0].method == r.method
                && g[0].config.mode == r.config.mode
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups
}

/// Stage 5's output.
pub struct Generation {
    /// Quality and speed per sampler, flow vs diffusion.
    pub study: GenerationStudy,
    /// The study's resolved config as JSON.
    pub config: String,
    /// Whether the result came from the cache.
    pub reused: bool,
}

/// Stage 5: the generation study of the flow and diffusion runs in `runs_dir` on labelled
/// held-out windows of one dataset's downstream subjects, split by subject into conditioning and
/// reference sets (cached as `work/generation.pkl`).
pub fn generation(data: &Data, pool: &Pool, settings: &Settings<'_>) -> Result<Generation> {
    let (profile, seed, work, force) = (
        settings.profile,
        settings.seed,
        settings.work,
        settings.force,
    );
    eprintln!("[5/6] generation: flow vs diffusion");
    let device = settings.device.clone();
    let flow = TrainedModels::from_run_dir(&settings.run_dir("flowfm", seed), &device)?;
    let diffusion = TrainedModels::from_run_dir(&settings.run_dir("diffusion", seed), &device)?;
    let sets = held_out_windows(
        &data.prepared,
        &pool.plans,
        profile.generation_windows(),
        seed,
    )?;
    eprintln!("      {}", sets.description);
    let mut cfg = profile.study_config(&flow);
    cfg.seed = seed;
    // DDPM practice clips the predicted x0 to the data range; ours is the largest |x| (in g) of
    // the pretraining pool, so no real window of training would be clipped.
    let range =
        (pool.windows.x.iter()).fold(0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    cfg.diffusion_clip_x0 = Some((range as f64 * 10.0).ceil() / 10.0);
    let key = KeyBuilder::new()
        .text("stage version", &GENERATION_STAGE_VERSION.to_string())
        .text("stage", "generation")
        .file("flow encoder", &flow.encoder_path)?
        .file("flow generator", &flow.generator_path)?
        .file("diffusion encoder", &diffusion.encoder_path)?
        .file("diffusion generator", &diffusion.generator_path)?
        .floats("conditioning windows", &sets.conditioning.x)
        .floats("reference windows", &sets.reference.x)
        .value(
            "labels",
            &(&sets.conditioning.y, &sets.reference.y, &sets.description),
        )?
        .value("config", &cfg)?
        .finish();
    let cache_path: PathBuf = work.join("generation.pkl");
    let config = serde_json::to_string_pretty(&cfg)?;
    match (force, cache::load::<GenerationStudy>(&cache_path, &key)) {
        (false, Lookup::Hit(study)) => {
            eprintln!("      reused (same checkpoints, windows and sampler grid)");
            Ok(Generation {
                study,
                config,
                reused: true,
            })
        }
        _ => {
            let t = Instant::now();
            let mut study = generation_study(&flow, &diffusion, &sets, &cfg)?;
            study.wall_s = t.elapsed().as_secs_f64();
            eprintln!(
                "      {} samplers on {} windows each in {:.1} min",
                study.rows.len(),
                study.num_windows,
                t.elapsed().as_secs_f64() / 60.0
            );
            cache::store(&cache_path, &key, &study)?;
            Ok(Generation {
                study,
                config,
                reused: false,
            })
        }
    }
}

/// The comparators FlowFM is judged against, with the mode of theirs each FlowFM mode meets:
/// the other pretrained encoders in the same mode, the supervised encoder (fine-tuned) and the
/// random forest.
fn opponents<'a>(
    flow: &[&ProtocolResult],
    groups: &'a [Vec<&'a ProtocolResult>],
) -> Vec<&'a Vec<&'a ProtocolResult>> {
    let f = flow[0];
    groups
        .iter()
        .filter(|g| g[0].dataset == f.dataset && g[0].method != "flowfm")
        .filter(|g| match g[0].method.as_str() {
            "diffusion" | "ssl_multitask" => g[0].config.mode == f.config.mode,
            _ => true,
        })
        .collect()
}

/// Stage 4b: FlowFM against every comparator for every (dataset, mode), paired over the same
/// seeds and folds (Wilcoxon and bootstrap interval per pair, computed by `downstream::compare`),
/// seeded from `seed`.
pub fn verdicts(results: &[ProtocolResult], seed: u64) -> Result<Vec<FoldComparison>> {
    let rng = SeededRng::new(seed).derive("verdicts");
    let groups = group_runs(results);
    let mut out = Vec::new();
    for (i, flow) in groups
        .iter()
        .filter(|g| g[0].method == "flowfm")
        .enumerate()
    {
        for (j, other) in opponents(flow, &groups).into_iter().enumerate() {
            let mut r = rng.derive_indexed("pair", (i * 1000 + j) as u64);
            out.push(compare_runs(
                flow,
                other,
                &BootstrapConfig::default(),
                &mut r,
            )?);
        }
    }
    Ok(out)
}
