//! `cargo xtask fuzz [--seconds N] [--targets a,b] [--skip a,b] [--no-seeds] [--sanitizer address]`:
//! builds the cargo-fuzz targets of `fuzz/` and runs each for N seconds (default 60), one after
//! the other.
//!
//! - cargo-fuzz is installed from crates.io (`cargo install cargo-fuzz --locked`) when missing.
//! - The build uses the current (stable) toolchain with `RUSTC_BOOTSTRAP=1` for libFuzzer's
//!   nightly flags. By default no sanitizer (`-s none`, what CI runs): panics, aborts, timeouts
//!   (`-timeout`) and memory beyond `-rss_limit_mb` are findings. `--sanitizer address` builds
//!   with AddressSanitizer (stable rustc ships its runtime; the standard library itself is not
//!   instrumented) and compiles the C code built with the application (HDF5, zlib) with
//!   `-fsanitize=address` too, so out-of-bounds reads and writes inside libhdf5 are findings;
//!   the targets then run with `ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0`.
//!   Its own target folder, `fuzz/target` (a sanitizer switch rebuilds it).
//! - Seed corpora are written before fuzzing: flowfm-data's `fuzz_seeds` test writes one valid
//!   input per format into `fuzz/corpus/<target>/`, and the `config` target gets the experiment
//!   files of `configs/`.
//! - Each run prints libFuzzer's executions (`-print_final_stats=1`); a target that crashes makes
//!   the command fail after all ran, its input left in `fuzz/artifacts/<target>/`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The targets that need only flowfm-data (one build).
const DATA_TARGETS: [&str; 6] = [
    "readers",
    "uea_ts",
    "csv",
    "csv_spec",
    "pickle",
    "store_open",
];
/// The target that needs the `flowfm` crate (feature `config` of the fuzz crate: it builds candle
/// instrumented, so it is a separate build).
const CONFIG_TARGET: &str = "config";

/// libFuzzer options every run gets.
const LIBFUZZER_OPTS: [&str; 3] = ["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"];

struct Options {
    seconds: u64,
    targets: Vec<String>,
    seeds: bool,
    sanitizer: &'static str,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        seconds: 60,
        targets: DATA_TARGETS
            .iter()
            .chain(std::iter::once(&CONFIG_TARGET))
            .map(|s| s.to_string())
            .collect(),
        seeds: true,
        sanitizer: "none",
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a value")?;
                o.seconds = v.parse().ok().filter(|s| *s > 0).with_context(|| {
                    format!("--seconds: expected a positive integer, got `{v}`")
                })?;
            }
            "--targets" => {
                let v = it.next().context("--targets needs a value")?;
                let all: Vec<&str> = DATA_TARGETS
                    .iter()
                    .copied()
                    .chain(std::iter::once(CONFIG_TARGET))
                    .collect();
                o.targets = v.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = o.targets.iter().find(|t| !all.contains(&t.as_str())) {
                    bail!(
                        "--targets: unknown target `{bad}` (known: {})",
                        all.join(", ")
                    );
                }
            }
            "--skip" => {
                let v = it.next().context("--skip needs a value")?;
                let skip: Vec<&str> = v.split(',').map(str::trim).collect();
                o.targets.retain(|t| !skip.contains(&t.as_str()));
            }
            "--no-seeds" => o.seeds = false,
            "--sanitizer" => {
                let v = it.next().context("--sanitizer needs a value")?;
                o.sanitizer = match v.as_str() {
                    "none" => "none",
                    "address" => "address",
                    other => bail!("--sanitizer: expected `none` or `address`, got `{other}`"),
                };
            }
            other => bail!("fuzz: unknown option `{other}`"),
        }
    }
    Ok(o)
}

/// Executions from libFuzzer's output: `stat::number_of_executed_units` with
/// `-print_final_stats=1`, else the `Done N runs` line.
pub(crate) fn executions(output: &str) -> Option<u64> {
    let stat = output.lines().find_map(|l| {
        l.trim()
            .strip_prefix("stat::number_of_executed_units:")
            .and_then(|v| v.trim().parse().ok())
    });
    stat.or_else(|| {
        output.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Done ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
    })
}

/// The artifact libFuzzer wrote (`Test unit written to PATH`), if any.
pub(crate) fn artifact(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        l.split_once("Test unit written to ")
            .map(|(_, p)| p.trim().to_string())
    })
}

fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn fuzz_cmd(fuzz_dir: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg("fuzz")
        .current_dir(fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1");
    c
}

/// `cargo fuzz build` with the sanitizer; under AddressSanitizer the C libraries that the build
/// compiles (HDF5 through CMake, zlib through cc) are instrumented as well.
fn build_cmd(fuzz_dir: &Path, sanitizer: &str) -> Command {
    let mut c = fuzz_cmd(fuzz_dir);
    c.args(["build", "-s", sanitizer]);
    if sanitizer == "address" {
        c.env("CFLAGS", "-fsanitize=address -fno-omit-frame-pointer");
    }
    c
}

fn run_status(mut c: Command, what: &str) -> Result<()> {
    let status = c.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// A valid CSV dataset spec (seed of the `csv_spec` target).
const CSV_SPEC_SEED: &str = "name = \"phone\"\nchannels = [\"acc_x\", \"acc_y\", \"acc_z\"]\n\
units = \"g\"\nrate_hz = 50.0\ntime_column = \"t\"\ntime_unit = \"ms\"\n\
label_column = \"label\"\nfile_pattern = \"{subject}_{*}.csv\"\n";

/// Seeds of the `config` target (every experiment file of `configs/`) and of `csv_spec`.
fn config_seeds(root: &Path, corpus: &Path) -> Result<()> {
    let spec_dir = corpus.join("csv_spec");
    std::fs::create_dir_all(&spec_dir)?;
    std::fs::write(spec_dir.join("seed-phone.toml"), CSV_SPEC_SEED)?;
    let dir = corpus.join(CONFIG_TARGET);
    std::fs::create_dir_all(&dir)?;
    let configs = root.join("configs");
    for e in
        std::fs::read_dir(&configs).with_context(|| format!("reading {}", configs.display()))?
    {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "toml") {
            if let Some(name) = p.file_name() {
                std::fs::copy(&p, dir.join(name))?;
            }
        }
    }
    Ok(())
}

struct Outcome {
    target: String,
    seconds: f64,
    executions: Option<u64>,
    finding: Option<String>,
}

/// Runs the fuzzing.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let root = crate::workspace_root();
    let fuzz_dir = root.join("fuzz");
    crate::deps::ensure_system_deps()?;
    if !has_cargo_fuzz() {
        eprintln!("xtask: installing cargo-fuzz with `cargo install cargo-fuzz --locked`");
        crate::cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    let corpus = fuzz_dir.join("corpus");
    if o.seeds {
        eprintln!("xtask: writing seed corpora to {}", corpus.display());
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            // `--workspace`, not `-p flowfm-data`: the same feature resolution as the test
            // build, so the test binary `cargo xtask test` made is reused (with `-p` cargo
            // rebuilt flowfm-data's dependencies: 3 min 31 s in a clean-clone CI run).
            .args(["test", "--release", "--workspace", "--test", "fuzz_seeds"])
            .env("FLOWFM_FUZZ_SEEDS", &corpus)
            .current_dir(&root)
            .status()?;
        if !status.success() {
            bail!("writing the seed corpora (flowfm-data's fuzz_seeds test) failed ({status})");
        }
        config_seeds(&root, &corpus)?;
    }
    let wants_data = o.targets.iter().any(|t| t != CONFIG_TARGET);
    let wants_config = o.targets.iter().any(|t| t == CONFIG_TARGET);
    let t = Instant::now();
    let san = o.sanitizer;
    if wants_data {
        run_status(
            build_cmd(&fuzz_dir, san),
            &format!("cargo fuzz build -s {san}"),
        )?;
    }
    if wants_config {
        let mut c = build_cmd(&fuzz_dir, san);
        c.args(["--features", "config", CONFIG_TARGET]);
        run_status(
            c,
            &format!("cargo fuzz build -s {san} --features config config"),
        )?;
    }
    eprintln!("xtask: fuzz build took {:.0} s", t.elapsed().as_secs_f64());
    let bin_dir = find_bin_dir(&fuzz_dir)?;
    let mut outcomes = Vec::new();
    for target in &o.targets {
        outcomes.push(run_target(
            &fuzz_dir,
            &bin_dir,
            target,
            o.seconds,
            o.sanitizer,
        )?);
    }
    println!("\n| target | seconds | executions | per second | found |");
    println!("|---|---:|---:|---:|---|");
    for r in &outcomes {
        let n = r.executions.map_or("?".into(), |n| n.to_string());
        let rate = r
            .executions
            .map_or("?".into(), |n| format!("{:.0}", n as f64 / r.seconds));
        println!(
            "| {} | {:.0} | {n} | {rate} | {} |",
            r.target,
            r.seconds,
            r.finding.as_deref().unwrap_or("nothing")
        );
    }
    let found: Vec<&Outcome> = outcomes.iter().filter(|r| r.finding.is_some()).collect();
    if !found.is_empty() {
        bail!(
            "{} fuzz target(s) found something: {}",
            found.len(),
            found
                .iter()
                .map(|r| r.target.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Where `cargo fuzz build` put the binaries (`fuzz/target/<triple>/release`).
fn find_bin_dir(fuzz_dir: &Path) -> Result<PathBuf> {
    let target = fuzz_dir.join("target");
    for e in std::fs::read_dir(&target).with_context(|| format!("reading {}", target.display()))? {
        let p = e?.path().join("release");
        if p.join("readers").is_file() || p.join(CONFIG_TARGET).is_file() {
            return Ok(p);
        }
    }
    bail!("no fuzz binaries under {}", target.display())
}

fn run_target(
    fuzz_dir: &Path,
    bin_dir: &Path,
    target: &str,
    seconds: u64,
    sanitizer: &str,
) -> Result<Outcome> {
    let bin = bin_dir.join(target);
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    let corpus = fuzz_dir.join("corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let mut prefix = artifacts.display().to_string();
    prefix.push('/');
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let t = Instant::now();
    let mut cmd = Command::new(&bin);
    if sanitizer == "address" {
        // As in production, a request no allocator can satisfy (libhdf5 asking for 2^58 bytes
        // on a corrupt size field) returns NULL, which the C code checks; by default ASan aborts
        // instead. Memory actually used is still bounded by -rss_limit_mb.
        // Leak checking is off: libhdf5 2.2.0 leaks 128 bytes (`H5O__pline_copy`) when opening
        // a dataset with a corrupt layout fails, once per such open; not ours to fix, and it
        // would end every `store_open` run within a minute (fuzz/README.md).
        cmd.env("ASAN_OPTIONS", "allocator_may_return_null=1:detect_leaks=0");
        // Under a sanitizer libFuzzer also fails any single malloc above -malloc_limit_mb
        // (default: the RSS limit). libhdf5 mallocs what a corrupt header claims (2 GiB) before
        // checking it against the file's end, and never touches it (the release binary peaks at
        // 22 MB on that input); memory actually used is still bounded by -rss_limit_mb.
        cmd.arg("-malloc_limit_mb=1048576");
    }
    let out = cmd
        .arg(&corpus)
        .arg(format!("-artifact_prefix={prefix}"))
        .arg(format!("-max_total_time={seconds}"))
        .args(LIBFUZZER_OPTS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let secs = t.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let n = executions(&text);
    let finding = if out.status.success() {
        None
    } else {
        // The tail of libFuzzer's report (the panic message or the kind of failure).
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        Some(match artifact(&text) {
            Some(a) => format!("FAILED ({}), input in {a}", out.status),
            None => format!("FAILED ({})", out.status),
        })
    };
    eprintln!(
        "xtask: {target}: {} executions in {secs:.0} s{}",
        n.map_or("?".into(), |n| n.to_string()),
        finding
            .as_deref()
            .map_or(String::new(), |f| format!(", {f}"))
    );
    Ok(Outcome {
        target: target.to_string(),
        seconds: secs,
        executions: n,
        finding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_reports() {
        let out = "#65536\tpulse  cov: 10\nDone 123456 runs in 61 second(s)\nstat::number_of_executed_units: 123457\nstat::peak_rss_mb: 80\n";
        assert_eq!(executions(out), Some(123457));
        assert_eq!(executions("Done 99 runs in 1 second(s)\n"), Some(99));
        assert_eq!(executions("nothing"), None);
        let crash = "==1== ERROR: libFuzzer: deadly signal\nartifact_prefix='fuzz/artifacts/pickle/'; Test unit written to fuzz/artifacts/pickle/crash-abc\n";
        assert_eq!(
            artifact(crash).as_deref(),
            Some("fuzz/artifacts/pickle/crash-abc")
        );
    }

    #[test]
    fn options() {
        let a = |v: &[&str]| parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let all = a(&[]).unwrap();
        assert_eq!(all.seconds, 60);
        assert_eq!(all.targets.len(), DATA_TARGETS.len() + 1);
        let o = a(&["--seconds", "5", "--targets", "pickle,config"]).unwrap();
        assert_eq!((o.seconds, o.targets.len()), (5, 2));
        assert!(a(&["--targets", "nope"]).is_err());
        let s = a(&["--skip", "store_open,config"]).unwrap();
        assert_eq!(s.targets.len(), DATA_TARGETS.len() - 1);
        assert!(!s.targets.iter().any(|t| t == "store_open"));
        assert!(a(&["--seconds", "0"]).is_err());
        assert_eq!(all.sanitizer, "none");
        assert_eq!(a(&["--sanitizer", "address"]).unwrap().sanitizer, "address");
        assert!(a(&["--sanitizer", "memory"]).is_err());
    }
}
