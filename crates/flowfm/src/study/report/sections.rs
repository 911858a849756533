//! The report's sections: each a heading, a Markdown body and the same numbers as JSON, built
//! from the study's typed rows. Sections format; they compute no metric.

use crate::downstream::compare::{FoldComparison, RunSummary};
use crate::downstream::ProtocolResult;
use crate::generation::GenerationStudy;
use crate::study::plan::SubjectPlan;
use crate::study::profile::is_transfer;
use crate::study::rows::{DatasetRow, PoolSource, PretrainRow};
use crate::train::target::TargetSweep;
use anyhow::Result;
use flowfm_eval::markdown;
use flowfm_eval::stats::Verdict;
use flowfm_eval::AcrossSeeds;
use serde_json::{json, Value};

/// Held-out pretext accuracy a learned SSL multi-task task should reach (issue: each task at
/// least 0.65, else the report says the baseline is undertrained).
pub const PRETEXT_TARGET: f64 = 0.65;

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

/// A dataset's name in a table, marked when it took no part in pretraining.
fn dataset_cell(name: &str) -> String {
    if is_transfer(name) {
        format!("{name} (transfer)")
    } else {
        name.to_string()
    }
}

/// A quantity over seeds: `mean [lower, upper]`, or the mean alone without an interval.
fn across_seeds(a: &AcrossSeeds, digits: usize) -> String {
    match &a.interval {
        Some(iv) => format!(
            "{} [{}, {}]",
            fmt(a.mean_sd.mean, digits),
            fmt(iv.lower, digits),
            fmt(iv.upper, digits)
        ),
        None => fmt(a.mean_sd.mean, digits),
    }
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

    /// The subject plan and the pretraining pool's sources.
    pub fn subjects(plans: &[SubjectPlan], sources: &[PoolSource], pool: usize) -> Self {
        let mut md = String::from(
            "| dataset | role | pretraining subjects | downstream subjects |\n|---|---|---:|---:|\n",
        );
        for p in plans {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                p.dataset,
                if p.transfer {
                    "transfer (never in pretraining)"
                } else {
                    "within-dataset (subjects split)"
                },
                p.pretrain_subjects.len(),
                p.downstream_subjects.len()
            ));
        }
        md.push_str(
            "\nA transfer dataset takes no part in pretraining: all its subjects are downstream, as in the paper's and \
             SSL-Wearables' cross-dataset evaluation. A within-dataset one gives half its subjects (seeded) to the pool; \
             its downstream protocols use only the other half, so pretraining never sees a downstream test subject.\n\n\
             | pool source | subjects | windows | of which unlabelled | hop |\n|---|---:|---:|---:|---:|\n",
        );
        for src in sources {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} s |\n",
                src.dataset, src.subjects, src.windows, src.unlabelled, src.hop_secs
            ));
        }
        md.push_str(&format!(
            "\nPretraining pool: {pool} windows: every accelerometer stream of the pretraining subjects cut into windows that \
             overlap by half, unlabelled stretches (transitions, gaps) included.\n"
        ));
        Section {
            title: "Subjects".into(),
            markdown: md,
            key: "subjects".into(),
            json: json!({ "plans": plans, "pool_sources": sources, "pool_windows": pool }),
        }
    }

    /// What each stage cost when it ran: pretraining per method, downstream per mode, the
    /// generation study, and their sum (data preparation excluded: the Data table has it). A
    /// reused result keeps the time of the invocation that made it, so the sum is what a fresh
    /// run of the profile costs on the machine that made the results.
    pub fn stage_costs(
        pretraining: &[PretrainRow],
        downstream: &[ProtocolResult],
        generation: &GenerationStudy,
    ) -> Self {
        let mut rows: Vec<(String, String, usize, f64)> = Vec::new();
        let mut methods: Vec<&str> = Vec::new();
        for r in pretraining {
            if !methods.contains(&r.method.as_str()) {
                methods.push(&r.method);
            }
        }
        for m in methods {
            let runs: Vec<&PretrainRow> = pretraining.iter().filter(|r| r.method == m).collect();
            let steps = runs.first().map(|r| r.steps).unwrap_or(0);
            rows.push((
                "pretraining".into(),
                format!("{m}: {} seeds x {steps} steps, probes included", runs.len()),
                runs.len(),
                runs.iter().map(|r| r.wall_s).sum(),
            ));
        }
        let mut modes: Vec<&str> = Vec::new();
        for r in downstream {
            if !modes.contains(&r.config.mode.name()) {
                modes.push(r.config.mode.name());
            }
        }
        for mode in modes {
            let runs: Vec<&ProtocolResult> = downstream
                .iter()
                .filter(|r| r.config.mode.name() == mode)
                .collect();
            let folds: usize = runs.iter().map(|r| r.folds.len()).sum();
            rows.push((
                "downstream".into(),
                format!("{mode}: {} protocol runs, {folds} folds", runs.len()),
                runs.len(),
                runs.iter().map(|r| r.wall_s).sum(),
            ));
        }
        rows.push((
            "generation".into(),
            format!(
                "{} sampler settings x {} windows, metrics and intervals",
                generation.rows.len(),
                generation.num_windows
            ),
            1,
            generation.wall_s,
        ));
        let total: f64 = rows.iter().map(|r| r.3).sum();
        let total_runs: usize = rows.iter().map(|r| r.2).sum();
        let mut md = String::from("| stage | what | runs | wall time |\n|---|---|---:|---:|\n");
        for (stage, what, runs, secs) in &rows {
            md.push_str(&format!(
                "| {stage} | {what} | {runs} | {:.1} min |\n",
                secs / 60.0
            ));
        }
        md.push_str(&format!(
            "| **total** | every stage above | {total_runs} | **{:.1} min ({:.2} h)** |\n\nEach time is that of the invocation that produced the result (a reused stage keeps its own), so the total is what a fresh run of this profile costs on the machine in the header, data preparation excluded. Fine-tuning trains the folds of a protocol concurrently, one per core.\n",
            total / 60.0,
            total / 3600.0
        ));
        let json_rows: Vec<Value> = rows
            .iter()
            .map(|(stage, what, runs, secs)| {
                json!({ "stage": stage, "what": what, "runs": runs, "wall_s": secs })
            })
            .collect();
        Self {
            title: "Stage costs".into(),
            markdown: md,
            key: "stage_costs".into(),
            json: json!({ "rows": json_rows, "total_s": total }),
        }
    }

    /// The pretraining table, with the flow/diffusion time-per-step ratio.
    pub fn pretraining(rows: &[PretrainRow]) -> Self {
        let mut md = String::from(
            "| method | seed | steps | pool windows | training time | wall time | s / epoch | windows / s | loss (first 10 %) | loss (last 10 %) | RankMe (final) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in rows {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} s | {:.1} s | {} | {} | {} | {} | {} |\n",
                r.method,
                r.seed,
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
        let pretext: Vec<&PretrainRow> = rows.iter().filter(|r| r.pretext.is_some()).collect();
        if !pretext.is_empty() {
            md.push_str(
                "\nHeld-out pretext accuracy of SSL-Wearables multi-task at the end of pretraining (windows of the pool set \
                 aside before training; 0.5 is chance for each task):\n\n\
                 | method | seed | arrow of time | permutation | time warp |\n|---|---:|---:|---:|---:|\n",
            );
            let mut below = Vec::new();
            for r in &pretext {
                let a = r.pretext.unwrap_or([f64::NAN; 3]);
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    r.method,
                    r.seed,
                    fmt(a[0], 3),
                    fmt(a[1], 3),
                    fmt(a[2], 3)
                ));
                for (task, v) in ["arrow of time", "permutation", "time warp"].iter().zip(a) {
                    if (v.is_nan() || v < PRETEXT_TARGET) && !below.contains(task) {
                        below.push(*task);
                    }
                }
            }
            if below.is_empty() {
                md.push_str(&format!(
                    "\nEvery task ends at or above {PRETEXT_TARGET} held-out in every seed: the baseline learned its pretext tasks.\n"
                ));
            } else {
                md.push_str(&format!(
                    "\n**The SSL multi-task baseline is undertrained at this profile**: {} ended below {PRETEXT_TARGET} held-out \
                     in at least one seed. At CPU scale it trains with batches of 64 for a few hundred steps, against \
                     SSL-Wearables' batches of 6,000 over many epochs of 700,000 person-days; read its downstream rows with that \
                     in mind (docs/decisions.md, \"The SSL-Wearables recipe\").\n",
                    below.join(", ")
                ));
            }
        }
        // Summed over seeds: the same steps per run for both methods.
        let total = |m: &str| -> (u64, f64) {
            (rows.iter().filter(|r| r.method == m))
                .fold((0, 0.0), |(s, t), r| (s + r.steps, t + r.train_s))
        };
        let (flow, diff) = (total("flowfm"), total("diffusion"));
        let ratio = (diff.1 > 0.0 && flow.0 == diff.0 && flow.0 > 0).then(|| flow.1 / diff.1);
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

    /// Training time to the fixed validation thresholds, flow vs diffusion, over seeds.
    pub fn time_to_target(sweep: Option<&TargetSweep>, probe: Option<&str>) -> Self {
        let mut md = String::new();
        match (sweep, probe) {
            (Some(s), Some(probe)) => {
                md.push_str(&format!(
                    "Validation metric: macro F1 of a 5-NN (cosine) classifier on the encoder's representations, probed during \
                     pretraining on {probe}. The thresholds are fixed in advance ({} to {} in steps of 0.05), never derived \
                     from the runs. Times are training seconds (probes excluded) at the first probe reaching a threshold; the \
                     ratio is flow's geometric-mean time over diffusion's with its 95 % interval and the p-value of Welch's \
                     t-test on log times over seeds. A threshold is tested only when every seed of both methods reached it.\n\n",
                    fmt(s.thresholds.first().copied().unwrap_or(f64::NAN), 2),
                    fmt(s.thresholds.last().copied().unwrap_or(f64::NAN), 2),
                ));
                let methods: Vec<&str> = s.methods.iter().map(|m| m.method.as_str()).collect();
                md.push_str("| threshold |");
                for m in &methods {
                    md.push_str(&format!(" {m}: seeds reaching, mean s [95 % CI] |"));
                }
                md.push_str(" flow / diffusion time [95 % CI] | p | verdict for flow |\n|---:|");
                for _ in &methods {
                    md.push_str("---|");
                }
                md.push_str("---|---:|---|\n");
                for (i, t) in s.flow_vs_diffusion.iter().enumerate() {
                    md.push_str(&format!("| {} |", fmt(t.threshold, 2)));
                    for m in &s.methods {
                        let th = &m.summary.thresholds[i];
                        let secs = th
                            .secs
                            .as_ref()
                            .map(|a| across_seeds(a, 1))
                            .unwrap_or_else(|| "-".into());
                        md.push_str(&format!(" {}/{}, {} |", th.reached, m.summary.seeds, secs));
                    }
                    match (&t.test, t.verdict) {
                        (Some(x), Some(v)) => md.push_str(&format!(
                            " {} [{}, {}] | {} | {} |\n",
                            fmt(x.ratio, 3),
                            fmt(x.low, 3),
                            fmt(x.high, 3),
                            markdown::p_value(x.welch.p_value),
                            if v == Verdict::Better { "faster" } else if v == Verdict::Worse { "slower" } else { v.label() }
                        )),
                        _ => md.push_str(" not tested | - | - |\n"),
                    }
                }
                let (faster, slower, same) = s.counts();
                md.push_str(&format!(
                    "\nOf {} thresholds, {} were reached by every seed of both; flow matching got there significantly faster at \
                     {faster}, significantly slower at {slower}, with no significant difference at {same}.\n",
                    s.thresholds.len(),
                    faster + slower + same
                ));
                md.push_str(&flat_curve_reading(s));
                md.push_str("\n| method | seeds | area under the validation curve (mean score over training seconds) [95 % CI] |\n|---|---:|---|\n");
                for m in &s.methods {
                    let a = &m.summary.area_secs;
                    md.push_str(&format!(
                        "| {} | {} | {} |\n",
                        m.method,
                        m.summary.seeds,
                        across_seeds(a, 3)
                    ));
                }
                if let Some(area) = &s.area {
                    match (&area.test, area.verdict) {
                        (Some(t), Some(v)) => md.push_str(&format!(
                            "\nArea, flow minus diffusion: {} [{}, {}], Welch p = {}: {}.\n",
                            fmt(t.difference, 3),
                            fmt(t.low, 3),
                            fmt(t.high, 3),
                            markdown::p_value(t.p_value),
                            v.label()
                        )),
                        _ => md.push_str("\nArea, flow against diffusion: no test (the areas do not vary over seeds).\n"),
                    }
                }
            }
            _ => md.push_str("No validation probe: no dataset had labelled windows of at least two subjects outside the pretraining pool.\n"),
        }
        Section {
            title: "Training time to validation thresholds".into(),
            markdown: md,
            key: "time_to_target".into(),
            json: json!({ "probe": probe, "sweep": sweep }),
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
    /// mean +- sd over seeds x subject-disjoint folds with 95 % bootstrap intervals, and the
    /// p-value of the paired test against FlowFM in the same mode.
    pub fn downstream(
        results: &[ProtocolResult],
        summaries: &[RunSummary],
        comparisons: &[FoldComparison],
    ) -> Result<Self> {
        let mut md = String::new();
        let mode_of = |label: &str| label.rsplit(' ').next().unwrap_or("").to_string();
        let mut modes: Vec<String> = Vec::new();
        for s in summaries {
            let m = mode_of(&s.label);
            if !modes.contains(&m) {
                modes.push(m);
            }
        }
        for mode in &modes {
            md.push_str(&format!(
                "### {mode}\n\n| dataset | method | seeds x folds | macro F1 | macro F1 95 % CI | kappa | kappa 95 % CI | p vs FlowFM {mode} |\n\
                 |---|---|---:|---:|---|---:|---|---:|\n"
            ));
            for r in summaries.iter().filter(|s| mode_of(&s.label) == *mode) {
                let p = comparisons
                    .iter()
                    .find(|c| c.dataset == r.dataset && c.b == r.label && mode_of(&c.a) == *mode)
                    .map(|c| markdown::p_value(c.paired.wilcoxon.p_value))
                    .unwrap_or_else(|| "-".into());
                md.push_str(&format!(
                    "| {} | {} | {} x {} | {} | {} | {} | {} | {} |\n",
                    dataset_cell(&r.dataset),
                    r.label,
                    r.seeds,
                    r.folds,
                    markdown::mean_sd(&r.macro_f1, 3),
                    markdown::interval(&r.macro_f1_interval, 3),
                    r.kappa
                        .as_ref()
                        .map(|k| markdown::mean_sd(k, 3))
                        .unwrap_or_else(|| "n/a".into()),
                    r.kappa_interval
                        .as_ref()
                        .map(|k| markdown::interval(k, 3))
                        .unwrap_or_else(|| "n/a".into()),
                    p
                ));
            }
            md.push('\n');
        }
        let mut protocols: Vec<String> = Vec::new();
        for r in results {
            let p = format!("{} {}", r.dataset, r.config.protocol.label());
            if !protocols.contains(&p) {
                protocols.push(p);
            }
        }
        md.push_str(&format!(
            "Protocols (folds by subject, downstream subjects only): {}. Fine-tuning and the linear probe stop early on a \
             validation split of the training subjects. \"(transfer)\" marks datasets that took no part in pretraining. \
             The p-value is the two-sided Wilcoxon signed-rank test of FlowFM against that row, paired seed by seed and fold \
             by fold; the Verdicts section reads them.\n",
            protocols.join(", ")
        ));
        Ok(Section {
            title: "Downstream activity recognition".into(),
            markdown: md,
            key: "downstream".into(),
            json: json!({
                "summaries": summaries,
                "results": results.iter().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect::<Vec<_>>()
            }),
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
    /// The verdicts: FlowFM against diffusion in training time to the validation thresholds and
    /// in generation speed at matched quality, and against each comparator on every dataset and
    /// mode from paired tests over the same seeds and folds. A sentence says "better" or "worse"
    /// only where the p-value is below 0.05; otherwise "no significant difference".
    pub fn verdicts(
        comparisons: &[FoldComparison],
        sweep: Option<&TargetSweep>,
        generation: &GenerationStudy,
    ) -> Self {
        let mut md = String::from("### FlowFM against the diffusion baseline\n\n");
        match sweep {
            Some(s) => {
                let (faster, slower, same) = s.counts();
                md.push_str(&format!(
                    "- **Training time to a validation threshold**: of the {} fixed thresholds that every seed of both reached, \
                     flow matching was significantly faster at {faster}, significantly slower at {slower} and not significantly \
                     different at {same} (Welch's t-test on log times over seeds, p < 0.05).",
                    faster + slower + same
                ));
                for t in s.tested() {
                    if let Some(x) = &t.test {
                        md.push_str(&format!(
                            " At {}: ratio {} [{}, {}], p = {}.",
                            fmt(t.threshold, 2),
                            fmt(x.ratio, 2),
                            fmt(x.low, 2),
                            fmt(x.high, 2),
                            markdown::p_value(x.welch.p_value)
                        ));
                    }
                }
                md.push('\n');
                if let Some(area) = &s.area {
                    if let (Some(t), Some(v)) = (&area.test, area.verdict) {
                        md.push_str(&format!(
                            "- **Area under the validation curve** (mean score over training time): flow minus diffusion {} [{}, {}], \
                             p = {}: {}.\n",
                            fmt(t.difference, 3),
                            fmt(t.low, 3),
                            fmt(t.high, 3),
                            markdown::p_value(t.p_value),
                            v.label()
                        ));
                    }
                }
            }
            None => md.push_str("- **Training time to a validation threshold**: not measured (no validation probe).\n"),
        }
        // The note names the setting, the factor with its interval and what "matched" meant, or
        // why no speed-up is claimed.
        let (_, note) = generation.speedup_at_matched_quality();
        md.push_str(&format!(
            "- **Generation speed at matched quality**: {note}.\n\n"
        ));
        md.push_str(
            "### FlowFM against every comparator, per dataset and mode\n\n\
             Macro F1 paired seed by seed and fold by fold: the mean difference (FlowFM minus comparator) with its 95 % bootstrap \
             interval and the two-sided Wilcoxon signed-rank p-value; n is the number of pairs (seeds x folds).\n\n",
        );
        let mut by_comparator: Vec<(String, [usize; 3])> = Vec::new();
        for c in comparisons {
            let key = c.b.split(' ').next().unwrap_or("").to_string();
            let i = match c.paired.verdict {
                Verdict::Better => 0,
                Verdict::Worse => 1,
                Verdict::NoSignificantDifference => 2,
            };
            match by_comparator.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => n[i] += 1,
                None => {
                    let mut n = [0; 3];
                    n[i] = 1;
                    by_comparator.push((key, n));
                }
            }
        }
        for (who, n) in &by_comparator {
            md.push_str(&format!(
                "- **vs {who}**: FlowFM better in {}, worse in {}, no significant difference in {} of {} (dataset, mode) pairs.\n",
                n[0],
                n[1],
                n[2],
                n.iter().sum::<usize>()
            ));
        }
        md.push_str(
            "\n| dataset | FlowFM | comparator | n | FlowFM F1 | comparator F1 | difference [95 % CI] | p | verdict |\n\
             |---|---|---|---:|---:|---:|---|---:|---|\n",
        );
        for c in comparisons {
            let p = &c.paired;
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                dataset_cell(&c.dataset),
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
            json: json!({
                "comparisons": comparisons,
                "time_to_target": sweep.map(|s| json!({ "counts": s.counts(), "tested": s.tested().collect::<Vec<_>>(), "area": s.area })),
                "generation_speedup": generation.speedup_at_matched_quality().0,
                "generation_speedup_note": generation.speedup_note,
            }),
        }
    }
}

/// A paragraph for the time-to-threshold section when the thresholds that every seed reached
/// measure nothing but the first probe: every seed of flow and of diffusion was already at or
/// above each of them at its first probe. Gives each method's mean first-probe and best scores; empty otherwise.
fn flat_curve_reading(s: &TargetSweep) -> String {
    let tested: Vec<usize> = s
        .flow_vs_diffusion
        .iter()
        .enumerate()
        .filter(|(_, t)| t.reached == t.seeds && t.seeds.0 > 0 && t.seeds.1 > 0)
        .map(|(i, _)| i)
        .collect();
    let get = |m: &str| s.methods.iter().find(|x| x.method == m);
    let (Some(flow), Some(diff)) = (get("flowfm"), get("diffusion")) else {
        return String::new();
    };
    if tested.is_empty()
        || !tested
            .iter()
            .all(|&i| flow.reached_at_first_probe(i) && diff.reached_at_first_probe(i))
    {
        return String::new();
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let levels: Vec<String> = s
        .methods
        .iter()
        .filter(|m| !m.first_probe.is_empty())
        .map(|m| {
            let firsts: Vec<f64> = m.first_probe.iter().map(|f| f.1).collect();
            let steps: Vec<String> = m.first_probe.iter().map(|f| f.0.to_string()).collect();
            format!(
                "{} {} at its first probe (step {}), best {}",
                m.method,
                fmt(mean(&firsts), 3),
                steps.join("/"),
                fmt(mean(&m.best), 3)
            )
        })
        .collect();
    format!(
        "\n**Reading: the curve is flat at this profile.** Every seed of both methods was already at or above every \
         threshold that all seeds reached at its first probe, so these times are the cost of the first probe interval, not of learning, \
         and cannot separate the methods. Mean validation F1 over seeds: {}. After its first few steps the encoder is \
         already nearly as good a kNN feature extractor as at the end, so pretraining within this budget adds little to \
         it; the area under the curve (below) compares the levels instead.\n",
        levels.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::target::{target_sweep, ProbePoint, THRESHOLDS};

    /// Ten probes 5 steps and 1 s apart, from `first` rising linearly to `last`.
    fn curve(first: f64, last: f64) -> Vec<ProbePoint> {
        (0..10)
            .map(|i| {
                let f = i as f64 / 9.0;
                (5 * (i + 1), (i + 1) as f64, first + (last - first) * f)
            })
            .collect()
    }

    fn section(flow: Vec<Vec<ProbePoint>>, diff: Vec<Vec<ProbePoint>>) -> String {
        let s = target_sweep(
            &[("flowfm".into(), flow), ("diffusion".into(), diff)],
            &THRESHOLDS,
            4,
        )
        .unwrap()
        .unwrap();
        Section::time_to_target(Some(&s), Some("probe")).markdown
    }

    #[test]
    fn a_flat_curve_is_called_flat_and_a_rising_one_is_not() {
        // Already 0.31-0.33 at the first probe, 0.34 at the end: 0.10-0.30 are reached at once.
        let flat = |a: f64| vec![curve(a, 0.34), curve(a + 0.01, 0.34), curve(a + 0.02, 0.35)];
        let md = section(flat(0.31), flat(0.31));
        assert!(md.contains("the curve is flat"), "{md}");
        assert!(
            md.contains("flowfm 0.320 at its first probe (step 5/5/5)"),
            "{md}"
        );
        // Rising from 0.05 to 0.6: the thresholds are crossed at later probes.
        let rising = vec![curve(0.05, 0.6), curve(0.06, 0.6), curve(0.05, 0.62)];
        let md = section(rising.clone(), rising);
        assert!(!md.contains("the curve is flat"), "{md}");
    }
}
