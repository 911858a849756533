//! The study report: Markdown tables, a JSON twin with the same numbers, and SVG plots, written
//! atomically. The header records the git revision, seed, threads and machine.

use crate::reproduce::{DatasetRow, PretrainRow, SubjectPlan};
use crate::run::atomic_write;
use anyhow::Result;
use plotters::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

/// One section of the report.
pub struct Section {
    /// Heading.
    pub title: String,
    /// Markdown body.
    pub markdown: String,
    /// Key in `report.json`.
    pub key: String,
    /// The section's data.
    pub json: Value,
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".into()
    }
}

impl Section {
    /// The datasets table.
    pub fn datasets(rows: &[DatasetRow], unavailable: &[(String, String)]) -> Self {
        let mut md = String::from("| dataset | subjects | windows | labelled | classes | prepared in |\n|---|---:|---:|---:|---:|---|\n");
        for r in rows {
            let prep = if r.reused {
                "reused".to_string()
            } else {
                format!("{:.1} s", r.prepare_s)
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.name, r.subjects, r.windows, r.labelled, r.classes, prep
            ));
        }
        md.push_str("\nWindows: 10 s at 30 Hz (3 x 300, accelerometer in g), anti-aliased resampling, label by majority with purity >= 0.8.\n");
        for (name, why) in unavailable {
            md.push_str(&format!(
                "\nLeft out: `{name}` could not be obtained ({why}).\n"
            ));
        }
        Section {
            title: "Data".into(),
            markdown: md,
            key: "datasets".into(),
            json: json!({ "rows": rows, "unavailable": unavailable }),
        }
    }

    /// The subject plan.
    pub fn subjects(plans: &[SubjectPlan], pool: usize) -> Self {
        let mut md = String::from(
            "| dataset | pretraining subjects | downstream subjects |\n|---|---:|---:|\n",
        );
        for p in plans {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                p.dataset,
                p.pretrain_subjects.len(),
                p.downstream_subjects.len()
            ));
        }
        md.push_str(&format!(
            "\nPretraining pool: {pool} windows (all windows, labelled or not, of the pretraining subjects). \
             Downstream protocols use only the downstream subjects, so pretraining never sees a downstream test subject.\n"
        ));
        Section {
            title: "Subjects".into(),
            markdown: md,
            key: "subjects".into(),
            json: json!({ "plans": plans, "pool_windows": pool }),
        }
    }

    /// The pretraining table, with the flow/diffusion time-per-step ratio.
    pub fn pretraining(rows: &[PretrainRow]) -> Self {
        let mut md = String::from(
            "| method | steps | pool windows | training time | wall time | s / epoch | windows / s | loss (first 10 %) | loss (last 10 %) | RankMe (final) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in rows {
            md.push_str(&format!(
                "| {} | {} | {} | {:.1} s | {:.1} s | {} | {} | {} | {} | {} |\n",
                r.method,
                r.steps,
                r.pool_windows,
                r.train_s,
                r.wall_s,
                r.epoch_s
                    .map(|e| format!("{e:.1}"))
                    .unwrap_or_else(|| "n/a (< 1 epoch)".into()),
                fmt(r.windows_per_s, 1),
                fmt(r.loss_first, 4),
                fmt(r.loss_last, 4),
                r.rankme
                    .last()
                    .map(|(_, v)| fmt(*v, 2))
                    .unwrap_or_else(|| "n/a".into())
            ));
        }
        md.push_str("\nTraining time counts the optimisation steps only; wall time adds the validation probe, RankMe and checkpoints.\n");
        let flow = rows.iter().find(|r| r.method == "flowfm");
        let diff = rows.iter().find(|r| r.method == "diffusion");
        let ratio = match (flow, diff) {
            (Some(f), Some(d)) if d.train_s > 0.0 && f.steps == d.steps => {
                Some(f.train_s / d.train_s)
            }
            _ => None,
        };
        if let Some(r) = ratio {
            md.push_str(&format!(
                "\nPer step, flow matching took {:.1} % of the diffusion baseline's training time ({:+.1} %): same encoder, \
                 same U-Net, same batches, and the objectives differ only in the noise target and the time input, so equal \
                 cost per step is expected. Any saving has to come from needing fewer steps; the next section measures that.\n",
                100.0 * r,
                100.0 * (r - 1.0)
            ));
        }
        Section {
            title: "Pretraining".into(),
            markdown: md,
            key: "pretraining".into(),
            json: json!({ "runs": rows, "flow_over_diffusion_time_per_step": ratio }),
        }
    }

    /// Training time to a validation target, flow vs diffusion.
    pub fn time_to_target(
        summary: Option<&crate::history::TimeToTargetSummary>,
        probe: Option<&str>,
    ) -> Self {
        let mut md = String::new();
        match (summary, probe) {
            (Some(s), Some(probe)) => {
                md.push_str(&format!(
                    "Validation metric: macro F1 of a 5-NN (cosine) classifier on the encoder's representations, probed during pretraining on {probe}. \
                     Target: {:.0} % of the lower of flow's and diffusion's best scores = {:.3}.\n\n",
                    100.0 * s.fraction,
                    s.target
                ));
                md.push_str("| method | best val F1 | target reached at step | training time to target | training time of the run |\n|---|---:|---:|---:|---:|\n");
                for r in &s.rows {
                    md.push_str(&format!(
                        "| {} | {:.3} | {} | {} | {:.1} s |\n",
                        r.method,
                        r.best,
                        r.step.map(|v| v.to_string()).unwrap_or_else(|| "not reached".into()),
                        r.train_s.map(|v| format!("{v:.1} s")).unwrap_or_else(|| "not reached".into()),
                        r.total_train_s
                    ));
                }
                md.push('\n');
                match s.flow_over_diffusion {
                    Some(r) => md.push_str(&format!(
                        "Flow matching reached the target in {:.1} % of the diffusion baseline's training time ({:+.1} %; the paper reports -50.4 %).\n",
                        100.0 * r,
                        100.0 * (r - 1.0)
                    )),
                    None => md.push_str("No flow/diffusion ratio: one of the two never reached the target.\n"),
                }
            }
            _ => md.push_str("No validation probe: no dataset had labelled windows of at least two pretraining subjects, so no target could be set.\n"),
        }
        Section {
            title: "Training time to a validation target".into(),
            markdown: md,
            key: "time_to_target".into(),
            json: json!({ "probe": probe, "summary": summary }),
        }
    }

    /// The resolved configuration of every stage, so the report says exactly what ran.
    pub fn configs(
        pretraining: &[(String, String)],
        downstream: &[(String, String)],
        generation: &str,
    ) -> Self {
        let mut md = String::new();
        for (name, toml) in pretraining {
            md.push_str(&format!("<details><summary>pretraining: {name}</summary>\n\n```toml\n{toml}```\n\n</details>\n\n"));
        }
        for (name, cfg) in downstream {
            md.push_str(&format!("<details><summary>downstream: {name}</summary>\n\n```\n{cfg}\n```\n\n</details>\n\n"));
        }
        md.push_str(&format!("<details><summary>generation study</summary>\n\n```\n{generation}\n```\n\n</details>\n"));
        Section {
            title: "Configuration".into(),
            markdown: md,
            key: "configs".into(),
            json: json!({ "pretraining": pretraining, "downstream": downstream, "generation": generation }),
        }
    }
}

impl Section {
    /// Downstream results: one table per mode, rows dataset x method, macro F1 and kappa as
    /// mean +- sd over subject-disjoint folds.
    pub fn downstream(results: &[crate::protocol::ProtocolResult]) -> Result<Self> {
        let mut md = String::new();
        let mut modes: Vec<&str> = results.iter().map(|r| r.config.mode.name()).collect();
        modes.dedup();
        let mut seen = std::collections::BTreeSet::new();
        modes.retain(|m| seen.insert(*m));
        for mode in modes {
            let rows: Vec<&crate::protocol::ProtocolResult> = results
                .iter()
                .filter(|r| r.config.mode.name() == mode)
                .collect();
            // Each dataset has its own protocol (LOSO for ADL/HMP, k-fold elsewhere).
            let mut protocols: Vec<String> = Vec::new();
            for r in &rows {
                let p = format!("{} {}", r.dataset, r.config.protocol.label());
                if !protocols.contains(&p) {
                    protocols.push(p);
                }
            }
            let protocol = protocols.join(", ");
            md.push_str(&format!("### {mode}\n\n"));
            md.push_str(&crate::protocol::ProtocolResult::markdown_header());
            if !md.ends_with('\n') {
                md.push('\n');
            }
            for r in &rows {
                md.push_str(&r.markdown_row()?);
                if !md.ends_with('\n') {
                    md.push('\n');
                }
            }
            let validation = if matches!(mode, "fine_tune" | "linear_probe") {
                ", with a subject-wise validation split inside each training fold for early stopping"
            } else {
                ""
            };
            md.push_str(&format!(
                "\nProtocols (folds by subject, downstream subjects only): {protocol}{validation}.\n\n"
            ));
        }
        let best = results
            .iter()
            .filter(|r| r.method == "flowfm" || r.method == "ssl_multitask")
            .map(|r| {
                (
                    r.dataset.clone(),
                    r.config.mode.name(),
                    r.method.clone(),
                    r.mean_macro_f1(),
                )
            })
            .collect::<Vec<_>>();
        let mut comparison = Vec::new();
        for (ds, mode, m, f1) in &best {
            if m == "flowfm" {
                if let Some((_, _, _, ssl)) = best
                    .iter()
                    .find(|(d2, m2, meth, _)| d2 == ds && m2 == mode && meth == "ssl_multitask")
                {
                    comparison.push(json!({ "dataset": ds, "mode": mode, "flowfm": f1, "ssl_multitask": ssl, "flowfm_better": f1 > ssl }));
                }
            }
        }
        let wins = comparison
            .iter()
            .filter(|c| c["flowfm_better"].as_bool() == Some(true))
            .count();
        md.push_str(&format!(
            "FlowFM's mean macro F1 is above SSL-Wearables multi-task in {wins} of {} (dataset, mode) pairs of this run.\n",
            comparison.len()
        ));
        Ok(Section {
            title: "Downstream activity recognition".into(),
            markdown: md,
            key: "downstream".into(),
            json: json!({ "results": results.iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect::<Vec<_>>(), "flowfm_vs_ssl": comparison }),
        })
    }

    /// Generation quality and speed, flow vs diffusion.
    pub fn generation(study: &crate::generate::GenerationStudy) -> Self {
        Section {
            title: "Generation: flow vs diffusion".into(),
            markdown: study.to_markdown(),
            key: "generation".into(),
            json: serde_json::to_value(study).unwrap_or(Value::Null),
        }
    }
}

/// A report under construction.
pub struct Report {
    title: String,
    /// Git revision when the run started (commits made while it runs do not change it).
    revision: String,
    /// The command that produced the report.
    command: String,
    /// Stages whose results were reused from earlier invocations, with where they came from.
    reused: Vec<String>,
    profile: String,
    seed: u64,
    sections: Vec<Section>,
    plots: Vec<(String, String)>,
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .map(|rev| {
            // Tracked files changed since that commit: the code that ran is not exactly it.
            let dirty = std::process::Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        })
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0);
    match mem_gib {
        Some(m) => format!("{cpu}, {cores} cores, {m:.0} GiB"),
        None => format!("{cpu}, {cores} cores"),
    }
}

impl Report {
    /// An empty report.
    pub fn new(title: &str, profile: &str, seed: u64) -> Self {
        Self {
            title: title.into(),
            revision: git_revision(),
            command: format!("cargo xtask reproduce (profile {profile})"),
            reused: Vec::new(),
            profile: profile.into(),
            seed,
            sections: Vec::new(),
            plots: Vec::new(),
        }
    }

    /// Sets the command line shown in the header.
    pub fn set_command(&mut self, command: String) {
        self.command = command;
    }

    /// Notes a stage whose results were reused from an earlier invocation.
    pub fn note_reused(&mut self, what: String) {
        self.reused.push(what);
    }

    /// Appends a section.
    pub fn add(&mut self, s: Section) {
        self.sections.push(s);
    }

    /// Loss curves of the pretraining runs (`loss_curves.svg`).
    pub fn plot_losses(&mut self, dir: &Path, rows: &[PretrainRow]) -> Result<()> {
        let file = "loss_curves.svg";
        let mut svg = String::new();
        {
            let backend = SVGBackend::with_string(&mut svg, (900, 300));
            let root = backend.into_drawing_area();
            root.fill(&WHITE)?;
            let panels = root.split_evenly((1, rows.len().max(1)));
            for (panel, r) in panels.iter().zip(rows) {
                let n = r.losses.len().max(2);
                let finite: Vec<f64> = r.losses.iter().copied().filter(|v| v.is_finite()).collect();
                let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let (lo, hi) = if lo.is_finite() && hi > lo {
                    (lo, hi)
                } else {
                    (0.0, 1.0)
                };
                let mut chart = ChartBuilder::on(panel)
                    .caption(&r.method, ("sans-serif", 16))
                    .margin(8)
                    .x_label_area_size(28)
                    .y_label_area_size(44)
                    .build_cartesian_2d(1usize..n, lo..hi)?;
                chart
                    .configure_mesh()
                    .x_desc("step")
                    .y_desc("loss")
                    .draw()?;
                chart.draw_series(LineSeries::new(
                    r.losses.iter().enumerate().map(|(i, &l)| (i + 1, l)),
                    &BLUE,
                ))?;
            }
            root.present()?;
        }
        atomic_write(&dir.join(file), svg.as_bytes())?;
        self.plots
            .push((file.into(), "Pretraining loss per step".into()));
        Ok(())
    }

    /// Macro F1 per dataset and method (`f1.svg`), for the first mode of each method.
    pub fn plot_f1(
        &mut self,
        dir: &Path,
        results: &[crate::protocol::ProtocolResult],
    ) -> Result<()> {
        let file = "f1.svg";
        let mut bars: Vec<(String, f64, f64)> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for r in results {
            if seen.insert((r.dataset.clone(), r.method.clone())) {
                let sd = r.summary.macro_f1.sd.unwrap_or(0.0);
                bars.push((
                    format!("{} / {} ({})", r.dataset, r.method, r.config.mode.name()),
                    r.mean_macro_f1(),
                    sd,
                ));
            }
        }
        let mut svg = String::new();
        {
            let backend = SVGBackend::with_string(&mut svg, (900, (40 + 22 * bars.len()) as u32));
            let root = backend.into_drawing_area();
            root.fill(&WHITE)?;
            let n = bars.len().max(1);
            let mut chart = ChartBuilder::on(&root)
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(330)
                .caption("macro F1 (mean, bar; +- sd, line)", ("sans-serif", 16))
                .build_cartesian_2d(0f64..1f64, (0..n).into_segmented())?;
            chart
                .configure_mesh()
                .y_labels(n)
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => {
                        bars.get(*i).map(|b| b.0.clone()).unwrap_or_default()
                    }
                    _ => String::new(),
                })
                .draw()?;
            chart.draw_series(bars.iter().enumerate().map(|(i, (_, m, _))| {
                Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (m.max(0.0), SegmentValue::Exact(i + 1)),
                    ],
                    BLUE.mix(0.5).filled(),
                )
            }))?;
            chart.draw_series(bars.iter().enumerate().map(|(i, (_, m, sd))| {
                PathElement::new(
                    vec![
                        ((m - sd).max(0.0), SegmentValue::CenterOf(i)),
                        ((m + sd).min(1.0), SegmentValue::CenterOf(i)),
                    ],
                    BLACK,
                )
            }))?;
            root.present()?;
        }
        atomic_write(&dir.join(file), svg.as_bytes())?;
        self.plots.push((
            file.into(),
            "Downstream macro F1 per dataset and method".into(),
        ));
        Ok(())
    }

    /// RankMe of each encoder over pretraining (`rankme.svg`).
    pub fn plot_rankme(&mut self, dir: &Path, rows: &[PretrainRow]) -> Result<()> {
        let file = "rankme.svg";
        let max_step = rows
            .iter()
            .flat_map(|r| r.rankme.iter().map(|(s, _)| *s))
            .max()
            .unwrap_or(1)
            .max(1);
        let max_rank = rows
            .iter()
            .flat_map(|r| r.rankme.iter().map(|(_, v)| *v))
            .fold(1.0f64, f64::max);
        let mut svg = String::new();
        {
            let backend = SVGBackend::with_string(&mut svg, (600, 320));
            let root = backend.into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    "RankMe of the representations over pretraining",
                    ("sans-serif", 16),
                )
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0u64..max_step, 0f64..max_rank * 1.05)?;
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc("RankMe")
                .draw()?;
            for (i, r) in rows.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(r.rankme.iter().copied(), color))?
                    .label(r.method.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
        }
        atomic_write(&dir.join(file), svg.as_bytes())?;
        self.plots
            .push((file.into(), "RankMe over pretraining".into()));
        Ok(())
    }

    /// Validation score over training time, one line per method, with the target
    /// (`validation.svg`).
    pub fn plot_validation(
        &mut self,
        dir: &Path,
        rows: &[PretrainRow],
        summary: Option<&crate::history::TimeToTargetSummary>,
    ) -> Result<()> {
        let file = "validation.svg";
        let max_t = rows
            .iter()
            .flat_map(|r| r.validation.iter().map(|p| p.1))
            .fold(1e-3f64, f64::max);
        let max_v = rows
            .iter()
            .flat_map(|r| r.validation.iter().map(|p| p.2))
            .filter(|v| v.is_finite())
            .fold(0.05f64, f64::max);
        let mut svg = String::new();
        {
            let backend = SVGBackend::with_string(&mut svg, (640, 340));
            let root = backend.into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    "validation kNN macro F1 over training time",
                    ("sans-serif", 16),
                )
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..max_t * 1.02, 0f64..(max_v * 1.1).min(1.0))?;
            chart
                .configure_mesh()
                .x_desc("training time (s)")
                .y_desc("val macro F1")
                .draw()?;
            for (i, r) in rows.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(
                        r.validation.iter().map(|p| (p.1, p.2)),
                        color,
                    ))?
                    .label(r.method.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            if let Some(s) = summary {
                chart
                    .draw_series(LineSeries::new(
                        vec![(0.0, s.target), (max_t * 1.02, s.target)],
                        BLACK.mix(0.5),
                    ))?
                    .label(format!("target {:.3}", s.target))
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.5)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
        }
        atomic_write(&dir.join(file), svg.as_bytes())?;
        self.plots.push((
            file.into(),
            "Validation score over training time (time to target)".into(),
        ));
        Ok(())
    }

    /// Frechet distance against network evaluations per window, flow vs diffusion
    /// (`nfe_quality.svg`), with the real-vs-real noise floor.
    pub fn plot_nfe_quality(
        &mut self,
        dir: &Path,
        study: &crate::generate::GenerationStudy,
    ) -> Result<()> {
        let file = "nfe_quality.svg";
        let finite: Vec<&crate::generate::StudyRow> = study
            .rows
            .iter()
            .filter(|r| r.frechet.is_finite() && r.nfe > 0)
            .collect();
        let max_nfe = finite.iter().map(|r| r.nfe).max().unwrap_or(1).max(2) as f64;
        let hi = finite
            .iter()
            .map(|r| r.frechet)
            .chain(
                [study.real_halves_frechet]
                    .into_iter()
                    .filter(|v| v.is_finite()),
            )
            .fold(1e-6f64, f64::max);
        let mut svg = String::new();
        {
            let backend = SVGBackend::with_string(&mut svg, (640, 360));
            let root = backend.into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    "generation quality vs network evaluations",
                    ("sans-serif", 16),
                )
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(56)
                .build_cartesian_2d((0.8f64..max_nfe * 1.5).log_scale(), 0f64..hi * 1.1)?;
            chart
                .configure_mesh()
                .x_desc("NFE per window (log)")
                .y_desc("Frechet distance")
                .draw()?;
            for (i, method) in ["flowfm", "diffusion"].iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let mut pts: Vec<(f64, f64)> = finite
                    .iter()
                    .filter(|r| r.method == *method)
                    .map(|r| (r.nfe as f64, r.frechet))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(pts.clone(), color))?
                    .label(method.to_string())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            if study.real_halves_frechet.is_finite() {
                chart
                    .draw_series(LineSeries::new(
                        vec![
                            (0.8, study.real_halves_frechet),
                            (max_nfe * 1.5, study.real_halves_frechet),
                        ],
                        BLACK.mix(0.4),
                    ))?
                    .label("real vs real (noise floor)")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.4)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
        }
        atomic_write(&dir.join(file), svg.as_bytes())?;
        self.plots.push((
            file.into(),
            "Frechet distance vs NFE, flow vs diffusion".into(),
        ));
        Ok(())
    }

    /// A real window next to its reconstructions by the best flow setting and by DDPM
    /// (`examples.svg`): one panel per window, one line per channel.
    pub fn plot_examples(
        &mut self,
        dir: &Path,
        study: &crate::generate::GenerationStudy,
    ) -> Result<()> {
        let file = "examples.svg";
        let pick = |method: &str,
                    prefer: Option<&str>|
         -> Option<&crate::generate::ExampleWindow> {
            let rows: Vec<(&crate::generate::StudyRow, &crate::generate::ExampleWindow)> = study
                .rows
                .iter()
                .zip(study.examples.iter().skip(1))
                .filter(|(r, _)| r.method == method)
                .collect();
            prefer
                .and_then(|p| rows.iter().find(|(r, _)| r.sampler == p))
                .or_else(|| {
                    rows.iter()
                        .filter(|(r, _)| r.frechet.is_finite())
                        .min_by(|a, b| a.0.frechet.total_cmp(&b.0.frechet))
                })
                .map(|(_, e)| *e)
        };
        let flow_pref = study.speedup.as_ref().map(|s| s.flow_sampler.as_str());
        let ddpm = study
            .rows
            .iter()
            .find(|r| r.method == "diffusion" && r.sampler.starts_with("ddpm"))
            .map(|r| r.sampler.as_str());
        let mut panels: Vec<(String, &crate::generate::ExampleWindow)> = Vec::new();
        if let Some(real) = study.examples.first() {
            panels.push(("real window".into(), real));
        }
        if let Some(e) = pick("flowfm", flow_pref) {
            panels.push((format!("flowfm {} (from its representation)", e.sampler), e));
        }
        if let Some(e) = pick("diffusion", ddpm) {
            panels.push((
                format!("diffusion {} (from its representation)", e.sampler),
                e,
            ));
        }
        let mut svg = String::new();
        {
            let backend =
                SVGBackend::with_string(&mut svg, (800, (170 * panels.len().max(1)) as u32));
            let root = backend.into_drawing_area();
            root.fill(&WHITE)?;
            let areas = root.split_evenly((panels.len().max(1), 1));
            for (area, (title, e)) in areas.iter().zip(&panels) {
                let c = e.channels.max(1);
                let len = e.values.len() / c;
                // Each panel has its own range (a diverged sample would flatten the others);
                // the caption gives it so amplitudes stay comparable.
                let (lo, hi) = e
                    .values
                    .iter()
                    .copied()
                    .filter(|v| v.is_finite())
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
                        (a.min(v), b.max(v))
                    });
                let (lo, hi) = if lo.is_finite() && hi > lo {
                    (lo as f64, hi as f64)
                } else {
                    (-1.0, 1.0)
                };
                let title = format!("{title}: range {lo:.2} to {hi:.2} g");
                let mut chart = ChartBuilder::on(area)
                    .caption(title, ("sans-serif", 14))
                    .margin(6)
                    .x_label_area_size(22)
                    .y_label_area_size(44)
                    .build_cartesian_2d(0usize..len.max(2), lo..hi)?;
                chart.configure_mesh().x_desc("sample").y_desc("g").draw()?;
                for ch in 0..c {
                    let color = Palette99::pick(ch).to_rgba();
                    chart.draw_series(LineSeries::new(
                        e.values[ch * len..(ch + 1) * len]
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| (i, v as f64)),
                        color,
                    ))?;
                }
            }
            root.present()?;
        }
        atomic_write(&dir.join(file), svg.as_bytes())?;
        self.plots.push((
            file.into(),
            "A real window and its reconstructions (one line per axis)".into(),
        ));
        Ok(())
    }

    /// Writes `report.md` and `report.json`.
    pub fn finish(&self, dir: &Path, wall_s: f64) -> Result<()> {
        let rev = &self.revision;
        let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
            std::thread::available_parallelism()
                .map(|n| n.get().to_string())
                .unwrap_or_else(|_| "1".into())
        });
        let machine = machine();
        let mut md = format!(
            "# {}\n\nGenerated by `{}` (profile `{}`) at git revision `{rev}`, seed {}, \
             {threads} threads, on {machine}; this invocation took {:.1} s. Every number below comes from this run.\n\n",
            self.title, self.command, self.profile, self.seed, wall_s
        );
        if !self.reused.is_empty() {
            md.push_str(&format!(
                "Reused from earlier invocations with the same config and inputs (their own times are in the tables): {}.\n\n",
                self.reused.join("; ")
            ));
        }
        let mut js = serde_json::Map::new();
        js.insert(
            "meta".into(),
            json!({ "profile": self.profile, "command": self.command, "git_revision": rev, "seed": self.seed, "threads": threads, "machine": machine, "wall_s": wall_s, "reused": self.reused }),
        );
        for s in &self.sections {
            md.push_str(&format!("## {}\n\n{}\n", s.title, s.markdown));
            js.insert(s.key.clone(), s.json.clone());
        }
        if !self.plots.is_empty() {
            md.push_str("## Plots\n\n");
            for (file, caption) in &self.plots {
                md.push_str(&format!("![{caption}]({file})\n\n"));
            }
        }
        atomic_write(&dir.join("report.md"), md.as_bytes())?;
        atomic_write(
            &dir.join("report.json"),
            serde_json::to_string_pretty(&Value::Object(js))?.as_bytes(),
        )?;
        Ok(())
    }
}

/// What is missing from a report directory: every section present and non-empty, every table
/// row filled (no empty cells), the key numbers finite, every plot file present. An empty list
/// means the report is complete. `cargo xtask reproduce --check` and CI run this.
pub fn check_report(dir: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let md_path = dir.join("report.md");
    let json_path = dir.join("report.json");
    let md = match std::fs::read_to_string(&md_path) {
        Ok(s) => s,
        Err(e) => return Ok(vec![format!("{}: {e}", md_path.display())]),
    };
    let js: Value = match std::fs::read_to_string(&json_path)
        .map_err(anyhow::Error::from)
        .and_then(|s| Ok(serde_json::from_str(&s)?))
    {
        Ok(v) => v,
        Err(e) => return Ok(vec![format!("{}: {e}", json_path.display())]),
    };
    for key in [
        "meta",
        "datasets",
        "subjects",
        "pretraining",
        "time_to_target",
        "downstream",
        "generation",
        "configs",
    ] {
        if js.get(key).map(|v| v.is_null()).unwrap_or(true) {
            problems.push(format!("report.json has no `{key}` section"));
        }
    }
    let len = |v: &Value, ptr: &str| {
        v.pointer(ptr)
            .and_then(|a| a.as_array())
            .map(|a| a.len())
            .unwrap_or(0)
    };
    if len(&js, "/datasets/rows") == 0 {
        problems.push("no datasets".into());
    }
    if len(&js, "/pretraining/runs") != 3 {
        problems.push("the pretraining table does not have the three methods".into());
    }
    if let Some(runs) = js.pointer("/pretraining/runs").and_then(|a| a.as_array()) {
        for r in runs {
            for f in ["loss_first", "loss_last", "train_s"] {
                if !r
                    .get(f)
                    .and_then(|v| v.as_f64())
                    .map(f64::is_finite)
                    .unwrap_or(false)
                {
                    problems.push(format!(
                        "pretraining {}: `{f}` is not a finite number",
                        r["method"]
                    ));
                }
            }
        }
    }
    if js
        .pointer("/time_to_target/summary")
        .map(|v| v.is_null())
        .unwrap_or(true)
    {
        problems.push("no time-to-target summary".into());
    } else if len(&js, "/time_to_target/summary/rows") < 2 {
        problems.push("time to target lacks flow or diffusion".into());
    }
    let results = js
        .pointer("/downstream/results")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    if results.is_empty() {
        problems.push("no downstream results".into());
    }
    for method in [
        "flowfm",
        "diffusion",
        "ssl_multitask",
        "supervised",
        "random_forest",
    ] {
        if !results.iter().any(|r| r["method"] == method) {
            problems.push(format!("no downstream result for `{method}`"));
        }
    }
    for r in &results {
        if !r
            .pointer("/summary/macro_f1/mean")
            .and_then(|v| v.as_f64())
            .map(f64::is_finite)
            .unwrap_or(false)
        {
            problems.push(format!(
                "downstream {} / {}: macro F1 is not a finite number",
                r["dataset"], r["method"]
            ));
        }
    }
    let gen = js
        .pointer("/generation/rows")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    for method in ["flowfm", "diffusion"] {
        if !gen.iter().any(|r| r["method"] == method) {
            problems.push(format!("no generation rows for `{method}`"));
        }
    }
    for r in &gen {
        for f in ["ms_per_window", "frechet", "mmd2", "discriminative"] {
            if !r
                .get(f)
                .and_then(|v| v.as_f64())
                .map(f64::is_finite)
                .unwrap_or(false)
            {
                problems.push(format!(
                    "generation {} {}: `{f}` is not a finite number",
                    r["method"], r["sampler"]
                ));
            }
        }
    }
    for (i, line) in md.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('|') && (t.contains("||") || t.contains("| |")) {
            problems.push(format!("report.md line {}: an empty table cell", i + 1));
        }
    }
    for plot in [
        "loss_curves.svg",
        "rankme.svg",
        "validation.svg",
        "f1.svg",
        "nfe_quality.svg",
        "examples.svg",
    ] {
        if !md.contains(&format!("]({plot})")) {
            problems.push(format!("report.md does not show {plot}"));
        }
        if !dir.join(plot).is_file() {
            problems.push(format!("{plot} is missing"));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_names_missing_sections_empty_cells_and_missing_plots() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("report.md"),
            "# r\n\n| a | b |\n|---|---|\n| 1 | |\n\n![loss](loss_curves.svg)\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("report.json"),
            r#"{"meta": {}, "datasets": {"rows": [{"name": "x"}]}, "pretraining": {"runs": []}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("loss_curves.svg"), "<svg/>").unwrap();
        let p = check_report(dir.path()).unwrap();
        let has = |s: &str| p.iter().any(|m| m.contains(s));
        assert!(has("no `time_to_target` section"), "{p:?}");
        assert!(has("no `generation` section"), "{p:?}");
        assert!(has("report.md line 5: an empty table cell"), "{p:?}");
        assert!(has("three methods"), "{p:?}");
        assert!(has("no downstream result for `random_forest`"), "{p:?}");
        assert!(has("examples.svg is missing"), "{p:?}");
        assert!(!has("loss_curves.svg is missing"), "{p:?}");
        assert!(!has("no datasets"), "{p:?}");
    }

    #[test]
    fn the_check_reports_an_absent_report_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let p = check_report(dir.path()).unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("report.md"));
    }
}
