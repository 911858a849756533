//! `cargo xtask bench-prepare --data-dir DIR`: prepares the whole WISDM 2019 watch accelerometer
//! folder to an HDF5 store with `flowfm prepare` and with the obvious pandas + numpy + h5py script
//! (`benches/scripts/prepare_wisdm_pandas.py`), in the same run, and prints MB/s, rows/s and the
//! ratio. A benchmark, not a test.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Uncompressed bytes of the watch accelerometer files, from the dataset's `FILES.tsv`.
fn original_bytes(wisdm: &Path) -> Result<u64> {
    let tsv = wisdm.join("FILES.tsv");
    let text =
        std::fs::read_to_string(&tsv).with_context(|| format!("reading {}", tsv.display()))?;
    let mut total = 0u64;
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() >= 4 && cols[0].contains("/watch/accel/") {
            total += cols[3]
                .parse::<u64>()
                .with_context(|| format!("{}: bad size in {line:?}", tsv.display()))?;
        }
    }
    Ok(total)
}

fn time_command(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Runs the comparison.
pub fn run(args: &[String]) -> Result<()> {
    let mut data_dir: Option<PathBuf> = None;
    let mut repeats = 3usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data-dir" => data_dir = it.next().map(PathBuf::from),
            "--repeats" => {
                repeats = it
                    .next()
                    .and_then(|r| r.parse().ok())
                    .context("--repeats needs a number")?
            }
            other => bail!("bench-prepare: unknown option `{other}`"),
        }
    }
    let data_dir =
        data_dir.context("bench-prepare needs --data-dir DIR (the folder holding wisdm2019/)")?;
    let wisdm = data_dir.join("wisdm2019");
    if !wisdm.is_dir() {
        bail!("{} not found", wisdm.display());
    }
    crate::deps::ensure_system_deps()?;
    crate::cargo(&["build", "--release", "-p", "flowfm"])?;
    let ok = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "pandas",
            "numpy",
            "h5py",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "could not install pandas, numpy and h5py with pip (needed for the comparison script)"
        );
    }
    let root = crate::workspace_root();
    let bin = root.join("target/release/flowfm");
    let script = root.join("benches/scripts/prepare_wisdm_pandas.py");
    let out_dir = std::env::temp_dir().join(format!("flowfm-bench-prepare-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir)?;
    let bytes = original_bytes(&wisdm)? as f64;
    let rows = 3_021_961f64; // lines in the 46 files (counted by the reader tests)
    let mut rust = Vec::new();
    let mut python = Vec::new();
    for i in 0..repeats {
        rust.push(time_command(
            Command::new(&bin)
                .args([
                    "--quiet",
                    "prepare",
                    "--dataset",
                    "wisdm2019",
                    "--force",
                    "--input",
                ])
                .arg(&wisdm)
                .arg("--output")
                .arg(out_dir.join("rust.h5")),
        )?);
        python.push(time_command(
            Command::new("python3")
                .arg(&script)
                .arg(&wisdm)
                .arg(out_dir.join("pandas.h5")),
        )?);
        eprintln!(
            "run {}: flowfm {:.2} s, pandas {:.2} s",
            i + 1,
            rust[i],
            python[i]
        );
    }
    let (r, p) = (median(rust), median(python));
    println!("WISDM 2019 watch accel: {:.1} MB of text, {rows:.0} rows; median of {repeats} runs, interleaved", bytes / 1e6);
    println!("| tool | seconds | MB/s | rows/s |\n|---|---:|---:|---:|");
    println!(
        "| flowfm prepare | {r:.2} | {:.1} | {:.2} M |",
        bytes / 1e6 / r,
        rows / 1e6 / r
    );
    println!(
        "| pandas + numpy + h5py | {p:.2} | {:.1} | {:.2} M |",
        bytes / 1e6 / p,
        rows / 1e6 / p
    );
    println!("speed-up: {:.1}x", p / r);
    std::fs::remove_dir_all(&out_dir).ok();
    Ok(())
}
