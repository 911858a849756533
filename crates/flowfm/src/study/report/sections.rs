//! The report's sections: each a heading, a Markdown body and the same numbers as JSON, built
//! from the study's typed rows. Sections format; they compute no metric.

use crate::downstream::compare::FoldComparison;
use crate::downstream::ProtocolResult;
use crate::generation::GenerationStudy;
use crate::study::plan::SubjectPlan;
use crate::study::rows::{DatasetRow, PretrainRow};
use crate::train::history::TimeToTargetSummary;
use anyhow::Result;
use flowfm_eval::markdown;
use flowfm_eval::stats::Verdict;
use serde_json::{json, Value};

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
    pub fn time_to_target(summary: Option<&TimeToTargetSummary>, probe: Option<&str>) -> Self {
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
    pub fn downstream(results: &[ProtocolResult]) -> Result<Self> {
        let mut md = String::new();
        let mut modes: Vec<&str> = results.iter().map(|r| r.config.mode.name()).collect();
        modes.dedup();
        let mut seen = std::collections::BTreeSet::new();
        modes.retain(|m| seen.insert(*m));
        for mode in modes {
            let rows: Vec<&ProtocolResult> = results
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
            md.push_str(&ProtocolResult::markdown_header());
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
        md.push_str(
            "Which differences are significant is in the Verdicts section at the top (paired tests over the same folds).\n",
        );
        Ok(Section {
            title: "Downstream activity recognition".into(),
            markdown: md,
            key: "downstream".into(),
            json: json!({ "results": results.iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect::<Vec<_>>() }),
        })
    }

    /// Generation quality and speed, flow vs diffusion.
    pub fn generation(study: &GenerationStudy) -> Self {
        Section {
            title: "Generation: flow vs diffusion".into(),
            markdown: study.to_markdown(),
            key: "generation".into(),
            json: serde_json::to_value(study).unwrap_or(Value::Null),
        }
    }
}

impl Section {
    /// The verdicts: FlowFM against each comparator on every dataset, from paired tests over the
    /// same folds. A sentence says "better" or "worse" only where the Wilcoxon p-value is below
    /// 0.05; otherwise "no significant difference".
    pub fn verdicts(comparisons: &[FoldComparison]) -> Self {
        let mut md = String::from(
            "FlowFM against each comparator, per dataset: the per-fold macro F1 of both on the same subject-disjoint folds, \
             the mean difference (FlowFM minus comparator) with its 95 % bootstrap interval, and the two-sided Wilcoxon \
             signed-rank p-value. \"Better\" and \"worse\" only where p < 0.05. With k folds the smallest attainable \
             p-value is 2 / 2^k (0.0625 at 5 folds), so few folds cannot show a difference; the column n says how many \
             pairs each test had.\n\n\
             | dataset | FlowFM | comparator | n | FlowFM F1 | comparator F1 | difference [95 % CI] | p | verdict |\n\
             |---|---|---|---:|---:|---:|---|---:|---|\n",
        );
        for c in comparisons {
            let p = &c.paired;
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.dataset,
                c.a,
                c.b,
                p.n,
                fmt(p.mean_a, 3),
                fmt(p.mean_b, 3),
                markdown::interval(&p.difference, 3),
                markdown::p_value(p.wilcoxon.p_value),
                p.verdict.label()
            ));
        }
        if comparisons.is_empty() {
            md.push_str(
                "\nNo comparisons: no dataset had FlowFM and a comparator on the same folds.\n",
            );
        } else {
            let count = |v: Verdict| comparisons.iter().filter(|c| c.paired.verdict == v).count();
            md.push_str(&format!(
                "\nOf {} comparisons, FlowFM is significantly better in {}, significantly worse in {}, and not significantly different in {}.\n",
                comparisons.len(),
                count(Verdict::Better),
                count(Verdict::Worse),
                count(Verdict::NoSignificantDifference)
            ));
        }
        Section {
            title: "Verdicts".into(),
            markdown: md,
            key: "verdicts".into(),
            json: json!({ "comparisons": comparisons }),
        }
    }
}
