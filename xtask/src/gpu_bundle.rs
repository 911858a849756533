//! `cargo xtask gpu-bundle [--compute-cap N]`: everything the GPU check of
//! `gpu/run.sh` needs, built on a CPU machine, in `.gpu-bundle/` (git-ignored), small enough to
//! travel to a lent GPU machine that has a driver, PyTorch and the CUDA libraries but no Rust and
//! no network (docs/cuda-build.md, "The GPU run"):
//!
//! - `bin.tar.xz`: stripped `--features cuda` builds of the `flowfm` binary, the throughput
//!   example, and the GPU test binaries (flowfm-ops' `portable_path`, flowfm-models'
//!   `device_parity`);
//! - `models.py`: the PyTorch peer models, copied from `../shared/bench/torchref/` (not part of
//!   the repository);
//! - `store.h5`: a window store for the short full-profile run, prepared by the CPU `flowfm`
//!   binary from `../shared/datasets/uci_hapt` (the run takes 60 steps of 256 windows).
//!
//! The bundle must stay under the device tool's 64 MiB; the command reports its size and fails
//! above that.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the device tool carries at most.
const LIMIT_BYTES: u64 = 64 << 20;

/// The GPU test binaries: (package, test target).
const TESTS: [(&str, &str); 2] = [
    ("flowfm-ops", "portable_path"),
    ("flowfm-models", "device_parity"),
];

/// Runs the command: builds, collects, compresses, checks the size.
pub fn run(args: &[String]) -> Result<()> {
    let mut cap = crate::cuda::DEFAULT_COMPUTE_CAP;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--compute-cap" => {
                cap = crate::cuda::parse_compute_cap(
                    it.next().context("--compute-cap needs a value, e.g. 90")?,
                )?
            }
            other => bail!(
                "gpu-bundle: unknown option `{other}` (usage: cargo xtask gpu-bundle [--compute-cap N])"
            ),
        }
    }
    let ws = crate::workspace_root();
    let shared = ws.join("../shared");
    let models = shared.join("bench/torchref/models.py");
    let hapt = shared.join("datasets/uci_hapt");
    if !models.is_file() || !hapt.is_dir() {
        bail!(
            "gpu-bundle needs ../shared beside the checkout ({} and {})",
            models.display(),
            hapt.display()
        );
    }
    let env = crate::cuda::toolchain(cap, true)?;
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut secs = crate::cuda::cargo_with(
        &env,
        &s(&[
            "build",
            "--release",
            "-p",
            "flowfm",
            "--features",
            "cuda",
            "--bin",
            "flowfm",
        ]),
    )?;
    secs += crate::cuda::cargo_with(
        &env,
        &s(&[
            "build",
            "--release",
            "-p",
            "flowfm-models",
            "--features",
            "cuda",
            "--example",
            "throughput",
        ]),
    )?;
    let target = crate::cuda::target_dir()?;
    let bundle = ws.join(".gpu-bundle");
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle)
            .with_context(|| format!("cannot clear {}", bundle.display()))?;
    }
    let bin = bundle.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    copy_stripped(&target.join("release/flowfm"), &bin.join("flowfm"))?;
    copy_stripped(
        &target.join("release/examples/throughput"),
        &bin.join("throughput"),
    )?;
    for (package, test) in TESTS {
        let (exe, t) = test_executable(&env, package, test)?;
        secs += t;
        copy_stripped(&exe, &bin.join(test))?;
    }
    eprintln!("xtask: cuda builds took {secs:.0} s");
    std::fs::copy(&models, bundle.join("models.py"))
        .with_context(|| format!("cannot copy {}", models.display()))?;
    // The store: the CPU build prepares it (the cuda binary would need the CUDA libraries on the
    // loader's path to start at all).
    crate::cargo(&["build", "--release", "-p", "flowfm", "--bin", "flowfm"])?;
    let store = bundle.join("store.h5");
    let status = Command::new(ws.join("target/release/flowfm"))
        .args(["prepare", "--dataset", "uci_hapt", "--input"])
        .arg(&hapt)
        .arg("--output")
        .arg(&store)
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .status()
        .context("cannot run target/release/flowfm prepare")?;
    if !status.success() {
        bail!("flowfm prepare of {} failed ({status})", hapt.display());
    }
    // xz: the four binaries (about 230 MB stripped, most of it candle's PTX and MoE library in
    // each) pack to about 28 MB, against 56 MB with gzip.
    let status = Command::new("tar")
        .arg("-cJf")
        .arg(bundle.join("bin.tar.xz"))
        .arg("-C")
        .arg(&bundle)
        .arg("bin")
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("tar of {} failed ({status})", bin.display());
    }
    std::fs::remove_dir_all(&bin).with_context(|| format!("cannot remove {}", bin.display()))?;
    let mut total = 0;
    for entry in std::fs::read_dir(&bundle)? {
        let entry = entry?;
        let len = entry.metadata()?.len();
        eprintln!(
            "  {:>8.1} MiB  {}",
            len as f64 / 1048576.0,
            entry.file_name().to_string_lossy()
        );
        total += len;
    }
    let tree = tracked_bytes(&ws)?;
    eprintln!(
        "xtask: {} holds {:.1} MiB, the tracked files {:.1} MiB; the device tool carries up to 64 MiB",
        bundle.display(),
        total as f64 / 1048576.0,
        tree as f64 / 1048576.0
    );
    if total + tree > LIMIT_BYTES {
        bail!(
            "the bundle and the working tree are {:.1} MiB, over the device tool's 64 MiB",
            (total + tree) as f64 / 1048576.0
        );
    }
    eprintln!("run on the GPU machine: bash gpu/run.sh   (carry: .gpu-bundle)");
    Ok(())
}

/// The bytes of the files git tracks (what travels with the bundle).
fn tracked_bytes(ws: &Path) -> Result<u64> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(ws)
        .output()
        .context("cannot run git ls-files")?;
    if !out.status.success() {
        bail!("git ls-files failed ({})", out.status);
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::fs::metadata(ws.join(String::from_utf8_lossy(p).as_ref())).ok())
        .map(|m| m.len())
        .sum())
}

/// Builds the test target `test` of `package` with the cuda feature and returns its executable
/// (from cargo's JSON messages) and the seconds the build took.
fn test_executable(
    env: &[(String, OsString)],
    package: &str,
    test: &str,
) -> Result<(PathBuf, f64)> {
    let start = std::time::Instant::now();
    let mut cmd = crate::cuda::cargo_command(
        env,
        &[
            "test",
            "--release",
            "--no-run",
            "-p",
            package,
            "--features",
            "cuda",
            "--test",
            test,
            "--message-format",
            "json-render-diagnostics",
        ],
    );
    cmd.stderr(std::process::Stdio::inherit());
    let out = cmd
        .output()
        .with_context(|| format!("cannot run cargo test --no-run for {package}"))?;
    if !out.status.success() {
        bail!("building the {package} test `{test}` with --features cuda failed");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The compiler-artifact message of the test target carries `"executable":"<path>"`.
    let exe = stdout
        .lines()
        .filter(|l| {
            l.contains("\"compiler-artifact\"") && l.contains(&format!("\"name\":\"{test}\""))
        })
        .find_map(|l| {
            let at = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = l[at..].find('"')?;
            Some(PathBuf::from(&l[at..at + end]))
        })
        .with_context(|| format!("cargo named no executable for the {package} test `{test}`"))?;
    Ok((exe, start.elapsed().as_secs_f64()))
}

/// Copies `from` to `to` and strips its symbols (`strip`; the copy stays unstripped if `strip`
/// is missing).
fn copy_stripped(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    match Command::new("strip").arg(to).status() {
        Ok(s) if s.success() => {}
        _ => eprintln!("xtask: could not strip {} (kept as is)", to.display()),
    }
    Ok(())
}
