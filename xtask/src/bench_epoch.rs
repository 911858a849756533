//! `cargo xtask bench-epoch --data-dir DIR`: how long one pretraining epoch over the WISDM 2019
//! watch store takes, for every method at width 1.0 (HARNet10 with the paper-size U-Net) and 0.25
//! (the default profile's networks), measured with `flowfm pretrain --stop-after N` on the real
//! store and extrapolated from the steady steps. The README's epoch table comes from here. A
//! benchmark, not a test.
//!
//! Each configuration is `configs/<method>-default.toml` with the width (and the generator preset)
//! replaced, checkpoints only at the stop; the rate is read from the run's `metrics.jsonl`
//! (`train_s`: seconds inside training steps, data loading included, checkpoints and probes not)
//! between the end of the warm-up steps and the last step.

use anyhow::{bail, ensure, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The methods, as named in `configs/<method>-default.toml`.
const METHODS: [&str; 3] = ["flowfm", "diffusion", "ssl_multitask"];

struct Options {
    data_dir: PathBuf,
    steps: usize,
    warmup: usize,
    rounds: usize,
    widths: Vec<f64>,
    build: bool,
    work: PathBuf,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut data_dir = None;
    let mut steps = 10usize;
    let mut warmup = 2usize;
    let mut rounds = 3usize;
    let mut widths = vec![1.0, 0.25];
    let mut build = true;
    let mut work = crate::workspace_root().join("target/bench-epoch");
    let mut it = args.iter();
    let number = |v: Option<&String>, what: &str| -> Result<usize> {
        v.and_then(|s| s.parse().ok())
            .with_context(|| format!("{what} needs a whole number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data-dir" => data_dir = it.next().map(PathBuf::from),
            "--steps" => steps = number(it.next(), "--steps")?,
            "--warmup" => warmup = number(it.next(), "--warmup")?,
            "--rounds" => rounds = number(it.next(), "--rounds")?,
            "--widths" => {
                let v = it.next().context("--widths needs a list such as 1,0.25")?;
                widths = v
                    .split(',')
                    .map(|w| {
                        w.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|w| *w > 0.0 && *w <= 4.0)
                            .with_context(|| format!("--widths: `{w}` is not a width in (0, 4]"))
                    })
                    .collect::<Result<_>>()?;
            }
            "--work" => {
                work = it
                    .next()
                    .map(PathBuf::from)
                    .context("--work needs a folder")?
            }
            "--no-build" => build = false,
            other => bail!("bench-epoch: unknown option `{other}`"),
        }
    }
    let data_dir =
        data_dir.context("bench-epoch needs --data-dir DIR (the folder holding wisdm2019/)")?;
    ensure!(rounds >= 1, "--rounds must be at least 1");
    ensure!(
        steps >= warmup + 2,
        "--steps ({steps}) must leave at least 2 timed steps after --warmup ({warmup})"
    );
    Ok(Options {
        data_dir,
        steps,
        warmup,
        rounds,
        widths,
        build,
        work,
    })
}

/// `configs/<method>-default.toml` at another width: the encoder's `width` line replaced, the
/// generator the paper-size U-Net from width 1.0 up, and a checkpoint only when the run stops.
pub(crate) fn config_at_width(default_toml: &str, width: f64) -> Result<String> {
    let mut out = String::with_capacity(default_toml.len());
    let (mut widths, mut presets, mut checkpoints) = (0, 0, 0);
    let mut section = String::new();
    for line in default_toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_string();
        }
        let key = t.split('=').next().unwrap_or("").trim();
        let replaced = match (section.as_str(), key) {
            ("[encoder]", "width") => {
                widths += 1;
                format!("width = {width:?}")
            }
            ("[generator]", "preset") => {
                presets += 1;
                let p = if width >= 1.0 { "paper" } else { "small" };
                format!("preset = \"{p}\"")
            }
            ("[train]", "checkpoint_every") => {
                checkpoints += 1;
                "checkpoint_every = 1000000".to_string()
            }
            _ => line.to_string(),
        };
        out.push_str(&replaced);
        out.push('\n');
    }
    ensure!(
        widths == 1 && presets == 1 && checkpoints == 1,
        "the default config should hold one [encoder] width, one [generator] preset and one \
         [train] checkpoint_every (found {widths}, {presets}, {checkpoints})"
    );
    Ok(out)
}

/// Windows per second between the end of step `warmup` and the last step of `metrics.jsonl`,
/// from its cumulative `train_s`, at `batch` windows per step.
pub(crate) fn steady_rate(metrics_jsonl: &str, warmup: usize, batch: usize) -> Result<f64> {
    let mut at = Vec::new();
    for (i, line) in metrics_jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let step = json_number(line, "\"step\":")
            .with_context(|| format!("metrics.jsonl line {}: no step", i + 1))?;
        let secs = json_number(line, "\"train_s\":")
            .with_context(|| format!("metrics.jsonl line {}: no train_s", i + 1))?;
        at.push((step as usize, secs));
    }
    let start = at
        .iter()
        .find(|(s, _)| *s == warmup)
        .with_context(|| format!("metrics.jsonl has no record of step {warmup}"))?;
    let end = at.last().context("metrics.jsonl is empty")?;
    ensure!(
        end.0 > start.0 && end.1 > start.1,
        "metrics.jsonl: the last step ({}) is not after step {warmup}",
        end.0
    );
    Ok(((end.0 - start.0) * batch) as f64 / (end.1 - start.1))
}

fn json_number(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `train.batch_size` of a config.
fn batch_size(toml: &str) -> Result<usize> {
    toml.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("batch_size"))
        .and_then(|r| r.trim_start().strip_prefix('='))
        .and_then(|v| v.trim().parse().ok())
        .context("the config has no batch_size")
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The number after `dataset NAME: ` in `flowfm prepare`'s summary.
fn windows_in_summary(summary: &str) -> Option<usize> {
    let line = summary.lines().find(|l| l.starts_with("dataset "))?;
    let rest = line.split_once(": ")?.1;
    rest.split_whitespace().next()?.parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let wisdm = o.data_dir.join("wisdm2019");
    if !wisdm.is_dir() {
        bail!("{} not found", wisdm.display());
    }
    let root = crate::workspace_root();
    if o.build {
        crate::deps::ensure_system_deps()?;
        crate::cargo(&["build", "--release", "-p", "flowfm"])?;
    }
    let flowfm = root.join("target/release/flowfm");
    ensure!(flowfm.is_file(), "{} is not built", flowfm.display());
    std::fs::create_dir_all(&o.work).with_context(|| format!("creating {}", o.work.display()))?;
    let store = o.work.join("wisdm_watch.h5");
    let summary = run_ok(
        Command::new(&flowfm)
            .args(["prepare", "--quiet", "--force", "--dataset", "wisdm2019"])
            .arg("--input")
            .arg(&wisdm)
            .arg("--output")
            .arg(&store),
    )?;
    let windows = windows_in_summary(&summary)
        .with_context(|| format!("no window count in the prepare summary:\n{summary}"))?;
    let mut rows = Vec::new();
    for &width in &o.widths {
        for method in METHODS {
            let path = root.join(format!("configs/{method}-default.toml"));
            let default = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let toml = config_at_width(&default, width)?;
            let batch = batch_size(&toml)?;
            let config = o.work.join(format!("{method}-w{width}.toml"));
            std::fs::write(&config, &toml)
                .with_context(|| format!("writing {}", config.display()))?;
            let mut rates = Vec::new();
            for round in 0..o.rounds {
                let run_dir = o.work.join(format!("run-{method}-w{width}"));
                if run_dir.exists() {
                    std::fs::remove_dir_all(&run_dir)
                        .with_context(|| format!("removing {}", run_dir.display()))?;
                }
                run_ok(
                    Command::new(&flowfm)
                        .args(["pretrain", "--quiet", "--config"])
                        .arg(&config)
                        .arg("--store")
                        .arg(&store)
                        .arg("--out")
                        .arg(&run_dir)
                        .args(["--stop-after", &o.steps.to_string()]),
                )?;
                let metrics = run_dir.join("metrics.jsonl");
                let text = std::fs::read_to_string(&metrics)
                    .with_context(|| format!("reading {}", metrics.display()))?;
                let rate = steady_rate(&text, o.warmup, batch)
                    .with_context(|| format!("{}", metrics.display()))?;
                println!(
                    "{method} width {width}: round {} {rate:.1} windows/s",
                    round + 1
                );
                rates.push(rate);
            }
            rows.push((method, width, batch, rates));
        }
    }
    let mut md =
        format!(
        "One epoch over the WISDM 2019 watch store ({windows} windows), `cargo xtask bench-epoch \
         --data-dir DIR --steps {} --rounds {}`: steps {}..{} of `flowfm pretrain --stop-after \
         {}` timed (`train_s` of metrics.jsonl), median of {} rounds.\n\n\
         | method | width | batch | windows/s (rounds) | one epoch |\n|---|---:|---:|---|---:|\n",
        o.steps, o.rounds, o.warmup + 1, o.steps, o.steps, o.rounds
    );
    for (method, width, batch, rates) in &rows {
        let m = median(rates.clone());
        let each: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
        md.push_str(&format!(
            "| {method} | {width} | {batch} | {m:.1} ({}) | {:.1} min |\n",
            each.join(", "),
            windows as f64 / m / 60.0
        ));
    }
    let out = o.work.join("summary.md");
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    println!("\n{md}\nwritten to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "[run]\nname = \"x\"\n[encoder]\npreset = \"harnet10\"\nwidth = 0.25\n\
        [generator]\npreset = \"small\"\n[train]\nbatch_size = 64\ncheckpoint_every = 75\n";

    #[test]
    fn replaces_width_preset_and_checkpoints_only_in_their_sections() {
        let c = config_at_width(DEFAULT, 1.0).unwrap();
        assert!(c.contains("width = 1.0\n"), "{c}");
        assert!(c.contains("preset = \"harnet10\""), "{c}");
        assert!(c.contains("preset = \"paper\""), "{c}");
        assert!(c.contains("checkpoint_every = 1000000"), "{c}");
        let c = config_at_width(DEFAULT, 0.25).unwrap();
        assert!(c.contains("width = 0.25\n") && c.contains("preset = \"small\""));
        assert_eq!(batch_size(&c).unwrap(), 64);
        let parsed: toml::Value = toml::from_str(&c).unwrap();
        assert_eq!(parsed["encoder"]["width"].as_float(), Some(0.25));
        assert!(config_at_width("[encoder]\npreset = \"harnet10\"\n", 1.0).is_err());
    }

    #[test]
    fn rate_between_warmup_and_last_step() {
        let m = "{\"step\":1,\"loss\":1.0,\"extra\":{\"train_s\":5.0}}\n\
                 {\"step\":2,\"loss\":1.0,\"extra\":{\"train_s\":6.5}}\n\
                 {\"step\":3,\"loss\":1.0,\"extra\":{\"train_s\":7.5}}\n\
                 {\"step\":4,\"loss\":1.0,\"extra\":{\"rankme\":3.0,\"train_s\":8.5}}\n";
        let r = steady_rate(m, 2, 64).unwrap();
        assert!((r - 64.0).abs() < 1e-9, "{r}");
        assert!(steady_rate(m, 4, 64).is_err());
        assert!(steady_rate(m, 9, 64).is_err());
        assert!(steady_rate("{\"step\":1}\n", 1, 64).is_err());
    }

    #[test]
    fn reads_the_window_count_and_rejects_bad_options() {
        assert_eq!(
            windows_in_summary("dataset w: 14017 windows of 300 samples\n"),
            Some(14017)
        );
        assert_eq!(windows_in_summary("nothing\n"), None);
        let a = |v: &[&str]| parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(a(&[]).is_err());
        assert!(a(&["--data-dir", "d", "--steps", "3"]).is_err());
        assert!(a(&["--data-dir", "d", "--widths", "0"]).is_err());
        assert!(a(&["--data-dir", "d", "--bogus"]).is_err());
        let o = a(&["--data-dir", "d", "--widths", "0.5", "--rounds", "2"]).unwrap();
        assert_eq!((o.widths, o.rounds), (vec![0.5], 2));
    }
}
