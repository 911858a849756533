//! Layout rules of `crates/flowfm` (ARCHITECTURE.md, "Code map"): which job module may name
//! which, no import cycles between files or modules (there and in flowfm-eval), and no file of
//! the CLI crate above 800 lines. Each rule is a function over `(path, text)` pairs, so the tests
//! below also show that it catches a violation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`, as (path relative to `dir` with `/`, text).
fn sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// The code of `text` without comments (`//` to the end of a line) and without the test module
/// (tests may name anything).
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start() == "#[cfg(test)]" {
            break;
        }
        let code = match line.find("//") {
            Some(k) => &line[..k],
            None => line,
        };
        if !code.trim().is_empty() {
            out.push((i + 1, code.to_string()));
        }
    }
    out
}

/// The job module a file of `crates/flowfm/src` belongs to (`train`, `downstream`, ...), or the
/// file stem for top-level files.
fn module_of(rel: &str) -> &str {
    match rel.split_once('/') {
        Some((dir, _)) => dir,
        None => rel.trim_end_matches(".rs"),
    }
}

/// What each module of `crates/flowfm/src` must never name: `(module, forbidden, why)`.
const NEVER_NAMES: &[(&str, &str, &str)] = &[
    ("train", "crate::downstream", "train never names downstream"),
    ("train", "crate::generation", "train never names generation"),
    ("train", "crate::study", "train never names study"),
    (
        "downstream",
        "crate::train",
        "downstream never sees pretraining (train)",
    ),
    (
        "downstream",
        "crate::generation",
        "downstream never names generation",
    ),
    ("downstream", "crate::study", "downstream never names study"),
    ("generation", "crate::study", "generation never names study"),
    (
        "generation",
        "crate::downstream",
        "generation never names downstream",
    ),
    (
        "generation",
        "crate::train::pretrain",
        "generation never names the training loops",
    ),
    (
        "generation",
        "save_checkpoint",
        "generation reads checkpoints and never writes one",
    ),
    (
        "generation",
        "save_varmap",
        "generation reads checkpoints and never writes one",
    ),
    (
        "encode",
        "crate::train",
        "encode is shared: it names no job",
    ),
    (
        "encode",
        "crate::downstream",
        "encode is shared: it names no job",
    ),
    (
        "encode",
        "crate::generation",
        "encode is shared: it names no job",
    ),
    (
        "encode",
        "crate::study",
        "encode is shared: it names no job",
    ),
    (
        "datasets",
        "crate::train",
        "datasets is shared: it names no job",
    ),
    (
        "datasets",
        "crate::downstream",
        "datasets is shared: it names no job",
    ),
    (
        "datasets",
        "crate::generation",
        "datasets is shared: it names no job",
    ),
    (
        "datasets",
        "crate::study",
        "datasets is shared: it names no job",
    ),
];

/// Names that only `study` may use: it alone writes the report and the cache.
const STUDY_ONLY: &[&str] = &["KeyBuilder", "cache::store", "Report::new", "report.md"];

fn layout_violations(files: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, text) in files {
        let module = module_of(rel);
        for (n, line) in code_lines(text) {
            for (m, forbidden, why) in NEVER_NAMES {
                if *m == module && line.contains(forbidden) {
                    out.push(format!(
                        "crates/flowfm/src/{rel}:{n}: names `{forbidden}` ({why})"
                    ));
                }
            }
            if module != "study" && module != "main" {
                for name in STUDY_ONLY {
                    if line.contains(name) {
                        out.push(format!(
                            "crates/flowfm/src/{rel}:{n}: `{name}` outside study (only study writes the report and the cache)"
                        ));
                    }
                }
            }
        }
    }
    out
}

/// File-level import edges: `use super::x` (a sibling file) and `use crate::x` (a top-level
/// module file) of `files`, keyed by the importing file. Re-exports through `mod.rs`/`lib.rs`
/// are not followed (they are the modules' faces, not dependencies).
fn file_edges(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let entry = edges.entry(rel.clone()).or_default();
        for (_, line) in code_lines(text) {
            for (prefix, base) in [("super::", dir), ("crate::", "")] {
                let mut rest = line.as_str();
                while let Some(k) = rest.find(prefix) {
                    let after = &rest[k + prefix.len()..];
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    // `super::` inside a top-level file or `mod.rs` is not a sibling reference.
                    let is_mod = rel.ends_with("mod.rs") || !rel.contains('/');
                    let sibling_ref = prefix == "crate::" || !is_mod;
                    if sibling_ref && !name.is_empty() {
                        let target = if base.is_empty() {
                            format!("{name}.rs")
                        } else {
                            format!("{base}/{name}.rs")
                        };
                        if known.contains(target.as_str()) && &target != rel {
                            entry.insert(target);
                        }
                    }
                    rest = after;
                }
            }
        }
    }
    edges
}

/// Directory-level edges: module `a` names module `b` (`crate::b`), for the folders of a crate.
fn module_edges(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = files.iter().map(|(r, _)| module_of(r)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let from = module_of(rel);
        let entry = edges.entry(from.to_string()).or_default();
        for (_, line) in code_lines(text) {
            for m in &modules {
                if *m != from && line.contains(&format!("crate::{m}::")) {
                    entry.insert(m.to_string());
                }
            }
        }
    }
    edges
}

/// Every cycle of `edges`, each as `a -> b -> ... -> a` (one per strongly connected part).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for start in edges.keys() {
        // Depth-first search for a path back to `start`.
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen: BTreeSet<String> = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    let members: BTreeSet<String> = path.iter().cloned().collect();
                    let id = members.iter().cloned().collect::<Vec<_>>().join(",");
                    if reported.insert(id) {
                        out.push(format!("{} -> {start}", path.join(" -> ")));
                    }
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    out
}

#[test]
fn flowfm_job_modules_never_name_what_they_must_not() {
    let files = sources(&root().join("crates/flowfm/src"));
    let v = layout_violations(&files);
    assert!(v.is_empty(), "layout rules violated:\n{}", v.join("\n"));
}

#[test]
fn the_layout_rule_catches_a_violation() {
    let files = vec![
        (
            "train/pretrain.rs".to_string(),
            "//! x\nuse crate::generation::TrainedModels;\n// crate::study in a comment is fine\n"
                .to_string(),
        ),
        (
            "downstream/probe.rs".to_string(),
            "//! x\nfn f() { let k = KeyBuilder::new(); }\n#[cfg(test)]\nmod tests { use crate::study::x; }\n"
                .to_string(),
        ),
        (
            "generation/job.rs".to_string(),
            "//! x\nfn f() { save_checkpoint(a, b); }\n".to_string(),
        ),
    ];
    let v = layout_violations(&files);
    assert!(
        v.iter()
            .any(|s| s.contains("train/pretrain.rs:2") && s.contains("crate::generation")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|s| s.contains("downstream/probe.rs:2") && s.contains("KeyBuilder")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|s| s.contains("generation/job.rs:2") && s.contains("save_checkpoint")),
        "{v:?}"
    );
    assert_eq!(v.len(), 3, "comments and tests are not code: {v:?}");
}

#[test]
fn no_import_cycles_between_files_or_modules() {
    let mut found = Vec::new();
    for krate in [
        "flowfm",
        "flowfm-eval",
        "flowfm-data",
        "flowfm-models",
        "flowfm-core",
        "flowfm-ops",
    ] {
        let files = sources(&root().join("crates").join(krate).join("src"));
        for c in cycles(&file_edges(&files)) {
            found.push(format!("{krate} files: {c}"));
        }
        for c in cycles(&module_edges(&files)) {
            found.push(format!("{krate} modules: {c}"));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_check_catches_file_and_module_cycles() {
    let files = vec![
        (
            "classification.rs".to_string(),
            "use crate::markdown::x;".to_string(),
        ),
        (
            "markdown.rs".to_string(),
            "use crate::folds::MeanSd;".to_string(),
        ),
        (
            "folds.rs".to_string(),
            "use crate::classification::Report;".to_string(),
        ),
        ("stats.rs".to_string(), "use crate::folds::x;".to_string()),
        (
            "a/x.rs".to_string(),
            "use super::y::f; use crate::b::g;".to_string(),
        ),
        ("a/y.rs".to_string(), "fn f() {}".to_string()),
        ("b/z.rs".to_string(), "use crate::a::x::h;".to_string()),
    ];
    let c = cycles(&file_edges(&files));
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(
        c[0].contains("classification.rs") && c[0].contains("folds.rs"),
        "{c:?}"
    );
    // Modules are folders and top-level files alike: the same three files form a module cycle,
    // and folders `a` and `b` name each other.
    let m = cycles(&module_edges(&files));
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m.iter().any(|c| c == "a -> b -> a" || c == "b -> a -> b"),
        "{m:?}"
    );
}

#[test]
fn no_file_of_the_cli_crate_is_above_800_lines() {
    let long: Vec<String> = sources(&root().join("crates/flowfm/src"))
        .into_iter()
        .filter(|(_, t)| t.lines().count() > 800)
        .map(|(r, t)| format!("crates/flowfm/src/{r}: {} lines", t.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}
