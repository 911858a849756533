//! The completeness check of a finished report (`flowfm check-report`, and the last step of
//! `reproduce`): every section present, every table cell filled, key numbers finite, every plot
//! written.

use anyhow::Result;
use serde_json::Value;
use std::path::Path;

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
        "verdicts",
        "stage_costs",
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
    if len(&js, "/verdicts/comparisons") == 0 {
        problems.push("the verdicts section has no comparison".into());
    }
    // Every stage's time is known, so the profile's cost can be read off the report.
    let costs = js
        .pointer("/stage_costs/rows")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    for row in &costs {
        let secs = row
            .get("wall_s")
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN);
        if !(secs.is_finite() && secs > 0.0) {
            problems.push(format!(
                "stage costs: `{}` has no wall time",
                row.get("what").and_then(|v| v.as_str()).unwrap_or("?")
            ));
        }
    }
    if len(&js, "/datasets/rows") == 0 {
        problems.push("no datasets".into());
    }
    let runs = js
        .pointer("/pretraining/runs")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    let quick = js.pointer("/meta/profile").and_then(|v| v.as_str()) == Some("quick");
    let min_seeds = if quick { 2 } else { 3 };
    for method in ["flowfm", "diffusion", "ssl_multitask"] {
        let n = runs.iter().filter(|r| r["method"] == method).count();
        if n < min_seeds {
            problems.push(format!(
                "pretraining has {n} seeds of `{method}`, fewer than {min_seeds}"
            ));
        }
    }
    for r in runs.iter().filter(|r| r["method"] == "ssl_multitask") {
        let ok = r
            .get("pretext")
            .and_then(|v| v.as_array())
            .map(|a| a.len() == 3 && a.iter().all(|v| v.as_f64().is_some_and(f64::is_finite)))
            .unwrap_or(false);
        if !ok {
            problems.push(format!(
                "pretraining ssl_multitask seed {}: no held-out pretext accuracies",
                r["seed"]
            ));
        }
    }
    if len(&js, "/subjects/pool_sources") == 0 {
        problems.push("the subjects section names no source of the pretraining pool".into());
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
        .pointer("/time_to_target/sweep")
        .map(|v| v.is_null())
        .unwrap_or(true)
    {
        problems.push("no time-to-target sweep".into());
    } else {
        if len(&js, "/time_to_target/sweep/methods") < 2 {
            problems.push("the time-to-target sweep lacks flow or diffusion".into());
        }
        if len(&js, "/time_to_target/sweep/flow_vs_diffusion") == 0 {
            problems.push("the time-to-target sweep has no threshold".into());
        }
    }
    if len(&js, "/downstream/summaries") == 0 {
        problems.push("no downstream summaries over seeds".into());
    }
    let summaries = js
        .pointer("/downstream/summaries")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    for method in ["flowfm", "diffusion", "ssl_multitask", "supervised"] {
        let label = format!("{method} fine_tune");
        if !summaries.iter().any(|s| s["label"] == label.as_str()) {
            problems.push(format!("no fine-tune row for `{method}`"));
        }
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
    let finite = |v: &Value, ptr: &str| {
        v.pointer(ptr)
            .and_then(|v| v.as_f64())
            .map(f64::is_finite)
            .unwrap_or(false)
    };
    const GENERATION_METRICS: [&str; 7] = [
        "frechet",
        "frechet_features",
        "mmd2",
        "discriminative",
        "spectral_l1",
        "spectral_db",
        "label_agreement",
    ];
    for r in &gen {
        let mut fields = vec!["/ms_per_window".to_string()];
        for m in GENERATION_METRICS {
            for end in ["estimate", "lower", "upper"] {
                fields.push(format!("/quality/{m}/{end}"));
            }
        }
        fields.push("/consistency/estimate".into());
        for f in fields {
            if !finite(r, &f) {
                problems.push(format!(
                    "generation {} {}: `{f}` is not a finite number",
                    r["method"], r["sampler"]
                ));
            }
        }
    }
    if !gen.is_empty() {
        for m in GENERATION_METRICS {
            if !finite(&js, &format!("/generation/floor/{m}/upper")) {
                problems.push(format!(
                    "generation: the real-vs-real floor of `{m}` is not a finite number"
                ));
            }
        }
        if js
            .pointer("/generation/speedup_note")
            .and_then(|v| v.as_str())
            .is_none_or(str::is_empty)
        {
            problems.push("generation: no speed-up note (matched speed-up or why none)".into());
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
            r#"{"meta": {}, "datasets": {"rows": [{"name": "x"}]}, "pretraining": {"runs": []},
                "stage_costs": {"rows": [{"what": "generation", "wall_s": 0.0}, {"what": "knn", "wall_s": 2.5}]}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("loss_curves.svg"), "<svg/>").unwrap();
        let p = check_report(dir.path()).unwrap();
        let has = |s: &str| p.iter().any(|m| m.contains(s));
        assert!(has("no `time_to_target` section"), "{p:?}");
        assert!(has("no `generation` section"), "{p:?}");
        assert!(has("no `verdicts` section"), "{p:?}");
        assert!(has("report.md line 5: an empty table cell"), "{p:?}");
        assert!(has("0 seeds of `flowfm`, fewer than 3"), "{p:?}");
        assert!(has("no fine-tune row for `ssl_multitask`"), "{p:?}");
        assert!(has("no source of the pretraining pool"), "{p:?}");
        assert!(has("no downstream result for `random_forest`"), "{p:?}");
        assert!(has("examples.svg is missing"), "{p:?}");
        assert!(has("stage costs: `generation` has no wall time"), "{p:?}");
        assert!(!has("`knn` has no wall time"), "{p:?}");
        assert!(!has("no `stage_costs` section"), "{p:?}");
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
