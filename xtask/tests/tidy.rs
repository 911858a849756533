//! Repository linter ("tidy"), run by `cargo test`: architecture invariants and hygiene rules
//! that the compiler cannot check.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Internal (workspace) dependencies of each crate: normal dependencies only.
fn internal_edges() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    let mut manifests: Vec<PathBuf> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("Cargo.toml"))
        .filter(|p| p.exists())
        .collect();
    manifests.push(root().join("xtask/Cargo.toml"));
    for m in manifests {
        let doc: toml::Table = fs::read_to_string(&m).unwrap().parse().unwrap();
        let name = doc["package"]["name"].as_str().unwrap().to_string();
        let deps: BTreeSet<String> = doc
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        edges.insert(name, deps);
    }
    edges
}

/// The allowed internal dependencies of every crate (ARCHITECTURE.md, "Architecture Invariant").
fn allowed(krate: &str) -> Option<&'static [&'static str]> {
    Some(match krate {
        "flowfm-core" => &[],
        "flowfm-ops" => &["flowfm-core"],
        "flowfm-data" => &["flowfm-core"],
        "flowfm-models" => &["flowfm-core", "flowfm-ops"],
        "flowfm-objectives" => &["flowfm-core", "flowfm-ops"],
        "flowfm-sampling" => &["flowfm-core"],
        "flowfm-eval" => &["flowfm-core"],
        "flowfm" => &[
            "flowfm-core",
            "flowfm-ops",
            "flowfm-data",
            "flowfm-models",
            "flowfm-objectives",
            "flowfm-sampling",
            "flowfm-eval",
        ],
        "xtask" => &[],
        _ => return None,
    })
}

fn violations(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (krate, deps) in edges {
        let Some(ok) = allowed(krate) else {
            out.push(format!(
                "{krate}: crate unknown to the tidy test; add it to `allowed`"
            ));
            continue;
        };
        for d in deps {
            let internal = d.starts_with("flowfm");
            if internal && !ok.contains(&d.as_str()) {
                out.push(format!("{krate} -> {d} is a forbidden dependency edge"));
            }
            if krate == "xtask" && d.starts_with("candle") {
                out.push(format!("xtask -> {d}: xtask must not link candle"));
            }
        }
    }
    out
}

#[test]
fn crates_only_depend_downwards() {
    let v = violations(&internal_edges());
    assert!(
        v.is_empty(),
        "architecture invariants violated:\n{}",
        v.join("\n")
    );
}

#[test]
fn the_dependency_check_catches_a_forbidden_edge() {
    let mut edges = internal_edges();
    edges
        .get_mut("flowfm-sampling")
        .unwrap()
        .insert("flowfm-models".into());
    edges
        .get_mut("flowfm-eval")
        .unwrap()
        .insert("flowfm-data".into());
    let v = violations(&edges);
    assert!(v
        .iter()
        .any(|s| s.contains("flowfm-sampling -> flowfm-models")));
    assert!(v.iter().any(|s| s.contains("flowfm-eval -> flowfm-data")));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "target" || n == "fixtures")
            {
                continue;
            }
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in ["crates", "xtask", "benches"] {
        rust_files(&root().join(d), &mut files);
    }
    files
}

#[test]
fn every_rust_file_starts_with_a_module_doc_line() {
    let missing: Vec<String> = all_rust_files()
        .into_iter()
        .filter(|p| {
            !fs::read_to_string(p)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` line:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_unseeded_candle_randomness_and_no_ignored_tests() {
    // Built by concatenation so this file does not flag itself.
    let banned = [
        ["Tensor::", "randn("].concat(),
        ["Tensor::", "rand("].concat(),
        [".randn", "_like("].concat(),
        [".rand", "_like("].concat(),
        ["#[", "ignore"].concat(),
    ];
    let mut hits = Vec::new();
    for p in all_rust_files() {
        let text = fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            for b in &banned {
                if line.contains(b.as_str()) {
                    hits.push(format!(
                        "{}:{}: `{b}`",
                        p.strip_prefix(root()).unwrap().display(),
                        i + 1
                    ));
                }
            }
            // The one ignore allowed: a GPU test in a build without the `cuda` feature
            // (`#[cfg_attr(not(feature = "cuda"), ignore = "needs a GPU: ...")]`), which is how
            // libtest counts it as not run. Any other conditional ignore is flagged.
            let ignore_attr = ["ignore", " = \""].concat();
            if line.trim_start().starts_with(&ignore_attr)
                && !(line.contains("needs a GPU:") && text.contains("not(feature = \"cuda\")"))
            {
                hits.push(format!(
                    "{}:{}: a conditional ignore that is not a GPU test's",
                    p.strip_prefix(root()).unwrap().display(),
                    i + 1
                ));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "banned patterns (use flowfm_core::SeededRng; no ignored tests):\n{}",
        hits.join("\n")
    );
}

#[test]
fn pure_crates_do_not_touch_the_filesystem() {
    // Only data, models (checkpoints) and the CLI crate read or write files, through
    // flowfm-core's `fs` (atomic writes) where they replace a file.
    let pure = [
        "flowfm-core",
        "flowfm-ops",
        "flowfm-objectives",
        "flowfm-sampling",
        "flowfm-eval",
    ];
    let mut hits = Vec::new();
    for krate in pure {
        let mut files = Vec::new();
        rust_files(&root().join("crates").join(krate).join("src"), &mut files);
        for p in files {
            // flowfm-core's one file helper (atomic writes, stale temporary files) is the
            // exception every crate that writes files goes through.
            if p.ends_with("flowfm-core/src/fs.rs") {
                continue;
            }
            let text = fs::read_to_string(&p).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.contains("std::fs")
                    || line.contains("File::create")
                    || line.contains("File::open")
                {
                    hits.push(format!(
                        "{}:{}",
                        p.strip_prefix(root()).unwrap().display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "filesystem access in a pure crate:\n{}",
        hits.join("\n")
    );
}

/// Whether `line` holds an absolute path starting with `root` (e.g. a machine root folder), as
/// opposed to a relative path that merely contains it (`reports/quick` + root + `runs`).
fn has_absolute_path(line: &str, root: &str) -> bool {
    line.match_indices(root).any(|(i, _)| {
        line[..i]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || "`\"'(=:,[".contains(c))
    })
}

#[test]
fn the_absolute_path_check_tells_absolute_from_relative() {
    let root = ["/wo", "rk/"].concat();
    assert!(has_absolute_path(&format!("see {root}main/x"), &root));
    assert!(has_absolute_path(&format!("`{root}shared`"), &root));
    assert!(has_absolute_path(&format!("{root}x"), &root));
    assert!(!has_absolute_path(
        &format!("reports/quick{root}runs"),
        &root
    ));
}

#[test]
fn no_machine_specific_absolute_paths_in_sources_or_docs() {
    let needles = [
        ["/wo", "rk/"].concat(),
        ["/ro", "ot/"].concat(),
        ["/ho", "me/"].concat(),
    ];
    let mut files = all_rust_files();
    for f in ["README.md", "ARCHITECTURE.md", ".ci/run"] {
        files.push(root().join(f));
    }
    if let Ok(rd) = fs::read_dir(root().join("docs")) {
        files.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "md")),
        );
    }
    let mut hits = Vec::new();
    for p in files {
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            for n in &needles {
                if has_absolute_path(line, n) {
                    hits.push(format!("{}:{}", p.display(), i + 1));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "absolute paths of a machine:\n{}",
        hits.join("\n")
    );
}
