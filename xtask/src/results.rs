//! `cargo xtask results [--name NAME]`: publishes a finished report as `docs/results.md` (plots
//! copied to `docs/results/`, image links rewritten), after checking it is complete. The data
//! stays out of the repository: only the report's text and plots are copied.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Copies `reports/<name>` into `docs/`.
pub fn run(args: &[String]) -> Result<()> {
    let mut name = "default".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--name" => match it.next() {
                Some(n) => name = n.clone(),
                None => bail!("--name needs a value"),
            },
            other => bail!("results: unknown option `{other}`"),
        }
    }
    let root = crate::workspace_root();
    let report = root.join("reports").join(&name);
    let bin = root.join("target/release/flowfm");
    let status = std::process::Command::new(&bin)
        .arg("check-report")
        .arg(&report)
        .status()
        .with_context(|| {
            format!(
                "running {} (build it with `cargo xtask reproduce` first)",
                bin.display()
            )
        })?;
    if !status.success() {
        bail!("{} is not a complete report", report.display());
    }
    let docs = root.join("docs");
    let plots = docs.join("results");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    let md = std::fs::read_to_string(report.join("report.md"))
        .with_context(|| format!("reading {}", report.join("report.md").display()))?;
    let mut out = md.clone();
    for entry in
        std::fs::read_dir(&report).with_context(|| format!("listing {}", report.display()))?
    {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("svg") {
            continue;
        }
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        write_atomic(&plots.join(file), &std::fs::read(&path)?)?;
        out = out.replace(&format!("]({file})"), &format!("](results/{file})"));
    }
    write_atomic(&docs.join("results.md"), out.as_bytes())?;
    println!("published {} as docs/results.md", report.display());
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
