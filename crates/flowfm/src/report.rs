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
    pub fn datasets(rows: &[DatasetRow]) -> Self {
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
        Section {
            title: "Data".into(),
            markdown: md,
            key: "datasets".into(),
            json: serde_json::to_value(rows).unwrap_or(Value::Null),
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

    /// The pretraining table, with the flow/diffusion time ratio.
    pub fn pretraining(rows: &[PretrainRow]) -> Self {
        let mut md = String::from(
            "| method | steps | pool windows | wall time | s / epoch | windows / s | loss (first 10 %) | loss (last 10 %) | RankMe (final) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in rows {
            md.push_str(&format!(
                "| {} | {} | {} | {:.1} s | {} | {:.1} | {} | {} | {} |\n",
                r.method,
                r.steps,
                r.pool_windows,
                r.wall_s,
                r.epoch_s
                    .map(|e| format!("{e:.1}"))
                    .unwrap_or_else(|| "n/a (< 1 epoch)".into()),
                r.windows_per_s,
                fmt(r.loss_first, 4),
                fmt(r.loss_last, 4),
                r.rankme
                    .last()
                    .map(|(_, v)| fmt(*v, 2))
                    .unwrap_or_else(|| "n/a".into())
            ));
        }
        let flow = rows.iter().find(|r| r.method == "flowfm");
        let diff = rows.iter().find(|r| r.method == "diffusion");
        let ratio = match (flow, diff) {
            (Some(f), Some(d)) if d.wall_s > 0.0 => Some(f.wall_s / d.wall_s),
            _ => None,
        };
        if let Some(r) = ratio {
            md.push_str(&format!(
                "\nFlow matching took {:.1} % of the diffusion baseline's wall time for the same number of steps \
                 ({:+.1} %). Same encoder, same U-Net, same batches; the two objectives differ only in the noise \
                 target and the time input, so per-step cost is expected to be equal: the paper's 50.4 % saving \
                 comes from needing fewer steps to reach a target, which the downstream stage measures.\n",
                100.0 * r,
                100.0 * (r - 1.0)
            ));
        }
        Section {
            title: "Pretraining".into(),
            markdown: md,
            key: "pretraining".into(),
            json: json!({ "runs": rows, "flow_over_diffusion_wall_time": ratio }),
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
            let protocol = rows
                .first()
                .map(|r| r.config.protocol.label())
                .unwrap_or_default();
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
                "\nProtocol: {protocol} by subject on the downstream subjects{validation}.\n\n"
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
            profile: profile.into(),
            seed,
            sections: Vec::new(),
            plots: Vec::new(),
        }
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

    /// Writes `report.md` and `report.json`.
    pub fn finish(&self, dir: &Path, wall_s: f64) -> Result<()> {
        let rev = git_revision();
        let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
            std::thread::available_parallelism()
                .map(|n| n.get().to_string())
                .unwrap_or_else(|_| "1".into())
        });
        let machine = machine();
        let mut md = format!(
            "# {}\n\nGenerated by `cargo xtask reproduce` (profile `{}`) at git revision `{rev}`, seed {}, \
             {threads} threads, on {machine}; the whole run took {:.1} s. Every number below comes from this run.\n\n",
            self.title, self.profile, self.seed, wall_s
        );
        let mut js = serde_json::Map::new();
        js.insert(
            "meta".into(),
            json!({ "profile": self.profile, "git_revision": rev, "seed": self.seed, "threads": threads, "machine": machine, "wall_s": wall_s }),
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
