//! The study behind `cargo xtask reproduce`: obtain and prepare the datasets, split subjects into
//! a pretraining pool and downstream subjects, pretrain FlowFM, the diffusion baseline and
//! SSL-Wearables multi-task on the pool, evaluate the encoders downstream and the generators on
//! held-out windows, and write `report.md`, `report.json` and SVG plots. Every number in the
//! report comes from this run (or from a cached stage with the identical key).
//!
//! - [`profile`]: the study's scales; pretraining configs come from `configs/`;
//! - [`plan`]: the subject plan, the pool, the validation probe, held-out windows;
//! - [`stages`]: one function per stage, typed in and out;
//! - [`cache`]: stage results under a sha256 key of their canonical inputs;
//! - [`rows`], [`report`]: what the report shows, and the report itself.
//!
//! **Invariant:** `study` is the only module that writes the report or the cache, and it computes
//! no metric itself: every number comes from `train`, `downstream` or `generation`.

pub mod cache;
pub mod plan;
pub mod profile;
pub mod report;
pub mod rows;
pub mod stages;

pub use plan::{plan_subjects, SubjectPlan};
pub use profile::{Profile, METHODS};
pub use report::{check_report, Report, Section};

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of a reproduce run.
#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    /// Scale.
    pub profile: Profile,
    /// Extra raw datasets.
    pub data_dir: Option<PathBuf>,
    /// Where the pretraining configs are (`<method>-<profile>.toml`).
    pub config_dir: PathBuf,
    /// Where the report goes.
    pub report_dir: PathBuf,
    /// Seed of everything: subject plan, pretraining runs, folds, generation.
    pub seed: u64,
    /// Rerun stages whose outputs exist.
    pub force: bool,
    /// No progress bars.
    pub quiet: bool,
    /// Where the networks run (pretraining, downstream training, generation).
    pub device: flowfm_core::device::DeviceChoice,
}

impl ReproduceOptions {
    /// The command line that reproduces this run, for the report's header.
    pub fn command(&self) -> String {
        let mut cmd = String::from("cargo xtask reproduce");
        match self.profile {
            Profile::Quick => cmd.push_str(" --quick"),
            Profile::Default => {}
            Profile::Full => cmd.push_str(" --full"),
        }
        if let Some(d) = &self.data_dir {
            cmd.push_str(&format!(" --data-dir {}", d.display()));
        }
        if self.seed != 0 {
            cmd.push_str(&format!(" --seed {}", self.seed));
        }
        if self.device != flowfm_core::device::DeviceChoice::Cpu {
            cmd.push_str(&format!(" --device {}", self.device));
        }
        cmd
    }
}

/// Where a report directory keeps its working files.
pub fn work_dir(report_dir: &Path) -> PathBuf {
    report_dir.join("work")
}

/// Runs the study and writes its report.
pub fn run(opts: &ReproduceOptions) -> Result<()> {
    let started = Instant::now();
    let (profile, seed) = (opts.profile, opts.seed);
    let work = work_dir(&opts.report_dir);
    let device = (opts.device.open()).map_err(|e| anyhow::anyhow!("--device: {e}"))?;
    // Every config is read and validated before anything runs, one experiment per seed.
    let experiments = (METHODS.iter())
        .map(|m| {
            let per_seed = (0..profile.seeds() as u64)
                .map(|k| profile.experiment(&opts.config_dir, m, seed + k))
                .collect::<Result<Vec<_>>>()?;
            Ok((m.to_string(), per_seed))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut report = Report::new(
        &format!("flowfm study ({} profile)", profile.name()),
        profile.name(),
        seed,
    );
    report.set_command(opts.command());

    let data = stages::prepare_data(opts.data_dir.as_deref(), &work.join("stores"), opts.force)?;
    report.add(Section::datasets(&data.rows, &data.unavailable));

    let pool = stages::plan_pool(&data, seed, &work.join("stores"), opts.force)?;
    report.add(Section::subjects(
        &pool.plans,
        &pool.sources,
        pool.windows.num_windows(),
    ));

    let settings = stages::Settings {
        profile,
        seed,
        work: &work,
        force: opts.force,
        quiet: opts.quiet,
        device: &device,
    };
    let pre = stages::pretrain_methods(&experiments, &data, &pool, &settings)?;
    for method in &pre.reused {
        report.note_reused(format!(
            "pretraining of {method} (finished run in work/runs of the report folder)"
        ));
    }
    report.add(Section::pretraining(&pre.rows));
    report.add(Section::time_to_target(
        pre.time_to_target.as_ref(),
        pre.probe.as_deref(),
    ));
    report.plot_losses(&opts.report_dir, &pre.rows)?;
    report.plot_rankme(&opts.report_dir, &pre.rows)?;
    report.plot_validation(&opts.report_dir, &pre.rows)?;

    let enc_cfg = experiments[0].1[0].encoder.clone();
    let down = stages::downstream(&data, &pool.plans, &enc_cfg, &settings)?;
    if down.reused > 0 {
        report.note_reused(format!(
            "{} of {} downstream protocol runs",
            down.reused,
            down.results.len()
        ));
    }
    let comparisons = stages::verdicts(&down.results, seed)?;
    report.add(Section::downstream(
        &down.results,
        &down.summaries,
        &comparisons,
    )?);
    report.plot_f1(&opts.report_dir, &down.summaries)?;

    let gen = stages::generation(&data, &pool, &settings)?;
    if gen.reused {
        report.note_reused("the generation study".into());
    }
    report.add(Section::generation(&gen.study));
    report.add_at_top(Section::verdicts(
        &comparisons,
        pre.time_to_target.as_ref(),
        &gen.study,
    ));
    report.add(Section::stage_costs(&pre.rows, &down.results, &gen.study));
    report.add(Section::configs(&pre.configs, &down.configs, &gen.config));
    report.plot_nfe_quality(&opts.report_dir, &gen.study)?;
    report.plot_examples(&opts.report_dir, &gen.study)?;

    eprintln!("[6/6] report");
    report.finish(&opts.report_dir, started.elapsed().as_secs_f64())?;
    let problems = check_report(&opts.report_dir)?;
    if !problems.is_empty() {
        bail!(
            "the report in {} is incomplete:\n  {}",
            opts.report_dir.display(),
            problems.join("\n  ")
        );
    }
    match pre.time_to_target.as_ref() {
        Some(t) => {
            let (faster, slower, same) = t.counts();
            eprintln!(
                "time to the validation thresholds, flow vs diffusion: faster at {faster}, slower at {slower}, \
                 no significant difference at {same} of {} thresholds",
                t.thresholds.len()
            )
        }
        None => {
            eprintln!("time to the validation thresholds: no validation probe (see the report)")
        }
    }
    eprintln!("generation speed-up: {}", gen.study.speedup_note);
    eprintln!(
        "done in {:.1} min; report: {}",
        started.elapsed().as_secs_f64() / 60.0,
        opts.report_dir.join("report.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::device::DeviceChoice;

    #[test]
    fn the_reported_command_names_the_profile_seed_and_a_gpu() {
        let mut o = ReproduceOptions {
            profile: Profile::Full,
            data_dir: None,
            config_dir: "configs".into(),
            report_dir: "reports/full".into(),
            seed: 2,
            force: false,
            quiet: true,
            device: DeviceChoice::Cpu,
        };
        assert_eq!(o.command(), "cargo xtask reproduce --full --seed 2");
        o.device = DeviceChoice::Cuda(1);
        assert_eq!(
            o.command(),
            "cargo xtask reproduce --full --seed 2 --device cuda:1"
        );
    }
}
