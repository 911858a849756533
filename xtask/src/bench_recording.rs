//! `cargo xtask bench-recording [--days D] [--rounds R] [--work DIR] [--batch N] [--no-build]`: long recordings
//! through `flowfm embed --recording` and `flowfm predict --recording`.
//!
//! Writes the deterministic synthetic recording of `flowfm_data::synthetic` (D days at 100 Hz, 3
//! axes, gzip'd CSV; example `stream_recording --write`) once into the work folder (default
//! `target/bench-recording`), makes an encoder of the default profile's architecture (the
//! `[encoder]` table of `configs/flowfm-default.toml`, one pretraining step of `ssl_multitask` on a
//! small synthetic labelled store) and a classifier saved by `finetune --save` (one epoch), both
//! cached in the work folder, and then measures in one run, side by side:
//!
//! - `encoder_eval`: the encoder's own evaluation forward (example `throughput -- --json --only
//!   encoder_forward_eval`, at the default encoder's width and the commands' batch size), the
//!   ceiling;
//! - `stream`: reading, unit conversion, resampling and windowing alone (example
//!   `stream_recording`), no encoder;
//! - `embed` and `predict` of the `flowfm` binary on the whole recording.
//!
//! Each under `/usr/bin/time -v` for the peak resident memory (installed with apt-get when missing
//! and root, like libhdf5). `embed` and `predict` are measured in `R` rounds (default 3), each
//! command between two measurements of the encoder's rate (encoder, embed, encoder, predict,
//! encoder, embed, ...) and judged against their mean; the verdict uses the median over rounds of
//! each round's ratio (the machine's speed drifts by tens of percent within minutes on a shared
//! VM).
//! Prints one JSON object per measurement and round, a Markdown table of medians, and says whether
//! the targets hold (peak RSS <= 1 GiB, throughput within 10 % of the encoder's). A benchmark, not
//! a test: missed targets are reported, not failed.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Peak resident memory allowed for a recording (the target).
const RSS_TARGET_MIB: f64 = 1024.0;
/// Throughput allowed below the encoder's own evaluation throughput.
const THROUGHPUT_SLACK: f64 = 0.10;

struct Options {
    days: f64,
    rounds: usize,
    work: PathBuf,
    batch: usize,
    build: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        days: 7.0,
        rounds: 3,
        work: crate::workspace_root().join("target/bench-recording"),
        batch: 256,
        build: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--days" => {
                let v = value("--days")?;
                o.days = v
                    .parse()
                    .ok()
                    .filter(|d: &f64| d.is_finite() && *d > 0.0)
                    .with_context(|| format!("--days: expected a positive number, got `{v}`"))?;
            }
            "--rounds" => {
                let v = value("--rounds")?;
                o.rounds =
                    v.parse().ok().filter(|r| *r > 0).with_context(|| {
                        format!("--rounds: expected a positive integer, got `{v}`")
                    })?;
            }
            "--work" => o.work = PathBuf::from(value("--work")?),
            "--batch" => {
                let v = value("--batch")?;
                o.batch =
                    v.parse().ok().filter(|b| *b > 0).with_context(|| {
                        format!("--batch: expected a positive integer, got `{v}`")
                    })?;
            }
            "--no-build" => o.build = false,
            other => bail!("bench-recording: unknown option `{other}`"),
        }
    }
    Ok(o)
}

/// What one measured command did.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Measured {
    pub wall_s: f64,
    pub peak_rss_mib: Option<f64>,
    pub stdout: String,
    pub stderr: String,
}

/// The peak resident set size in MiB from `/usr/bin/time -v`'s report.
pub(crate) fn parse_peak_rss_mib(time_report: &str) -> Option<f64> {
    time_report.lines().find_map(|l| {
        let (key, value) = l.trim().rsplit_once(':')?;
        (key.trim() == "Maximum resident set size (kbytes)")
            .then(|| value.trim().parse::<f64>().ok())
            .flatten()
            .map(|kb| kb / 1024.0)
    })
}

/// The first unsigned integer after `prefix` in `text` (e.g. `wrote 123 predicted`).
pub(crate) fn number_after(text: &str, prefix: &str) -> Option<usize> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `windows_per_s` of the `encoder_forward_eval` record at `width` in the throughput example's
/// JSON lines.
pub(crate) fn encoder_eval_windows_per_s(json_lines: &str, width: f64) -> Option<f64> {
    json_lines.lines().find_map(|l| {
        if !l.contains("\"encoder_forward_eval\"") {
            return None;
        }
        let w = json_number(l, "width")?;
        ((w - width).abs() < 1e-9).then(|| json_number(l, "windows_per_s"))?
    })
}

/// The number of `"key": <number>` in one flat JSON object line.
fn json_number(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let rest = line[line.find(&pat)? + pat.len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The `[encoder]` table of a profile's TOML, verbatim (so the benchmark's encoder has the
/// profile's architecture without xtask parsing TOML).
pub(crate) fn encoder_table(profile_toml: &str) -> Option<String> {
    let mut out = String::new();
    let mut inside = false;
    for line in profile_toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if inside {
                break;
            }
            inside = t == "[encoder]";
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Runs `cmd` under `/usr/bin/time -v`, failing with its output when it fails.
fn measure(program: &Path, args: &[&str]) -> Result<Measured> {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(program)
        .args(args)
        .output()
        .with_context(|| format!("running /usr/bin/time -v {}", program.display()))?;
    let wall_s = t.elapsed().as_secs_f64();
    let m = Measured {
        wall_s,
        peak_rss_mib: None,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{}{}",
            program.display(),
            args.join(" "),
            out.status,
            m.stdout,
            m.stderr
        );
    }
    Ok(Measured {
        peak_rss_mib: parse_peak_rss_mib(&m.stderr),
        ..m
    })
}

fn run_ok(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{text}",
            program.display(),
            args.join(" "),
            out.status
        );
    }
    Ok(text)
}

fn s(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// The spec that reads the synthetic recording (`flowfm_data::synthetic::synthetic_csv_spec`).
const SPEC_TOML: &str = "name = \"synthetic\"\nchannels = [\"acc_x\", \"acc_y\", \"acc_z\"]\n\
units = \"g\"\nrate_hz = 100.0\ntime_column = \"t_ms\"\ntime_unit = \"ms\"\n\
label_column = \"activity\"\nfile_pattern = \"{subject}_{*}.csv\"\n\
classes = [\"sleep\", \"sit\", \"stand\", \"walk\", \"run\"]\n";

struct Tools {
    flowfm: PathBuf,
    stream: PathBuf,
    throughput: PathBuf,
}

/// Makes (or reuses) the encoder checkpoint and the saved classifier in `dir`.
fn models(
    tools: &Tools,
    dir: &Path,
    spec: &Path,
    encoder_toml: &str,
) -> Result<(PathBuf, PathBuf)> {
    let encoder = dir.join("run/encoder.safetensors");
    let model = dir.join("model");
    let stamp = dir.join("encoder.toml");
    let cfg = format!(
        "[run]\nname = \"bench-recording\"\nmethod = \"ssl_multitask\"\nseed = 0\n\n{encoder_toml}\n\
         [train]\nbatch_size = 8\nsteps = 1\n"
    );
    // Reused only when made from the same encoder table.
    let same = std::fs::read_to_string(&stamp).ok().as_deref() == Some(cfg.as_str());
    if same && encoder.is_file() && model.join("model.json").is_file() {
        return Ok((encoder, model));
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let train = dir.join("train");
    std::fs::create_dir_all(&train)?;
    // Two subjects (the classifier's early stopping holds out a subject), 0.02 days each.
    for subject in ["1", "2"] {
        let f = train.join(format!("{subject}_synthetic.csv.gz"));
        run_ok(&tools.stream, &[s(&f)?, "--write", "0.02"])?;
    }
    let store = dir.join("train.h5");
    run_ok(
        &tools.flowfm,
        &[
            "--quiet",
            "prepare",
            "--dataset",
            "csv",
            "--input",
            s(&train)?,
            "--spec",
            s(spec)?,
            "--output",
            s(&store)?,
        ],
    )?;
    let cfg_path = dir.join("pretrain.toml");
    std::fs::write(&cfg_path, &cfg)?;
    run_ok(
        &tools.flowfm,
        &[
            "--quiet",
            "pretrain",
            "--config",
            s(&cfg_path)?,
            "--store",
            s(&store)?,
            "--out",
            s(&dir.join("run"))?,
        ],
    )?;
    run_ok(
        &tools.flowfm,
        &[
            "--quiet",
            "finetune",
            "--encoder",
            s(&encoder)?,
            "--store",
            s(&store)?,
            "--epochs",
            "1",
            "--save",
            s(&model)?,
        ],
    )?;
    std::fs::write(&stamp, &cfg)?;
    Ok((encoder, model))
}

/// One row of the report.
#[derive(Clone)]
struct Row {
    what: &'static str,
    windows: Option<usize>,
    wall_s: f64,
    windows_per_s: f64,
    peak_rss_mib: Option<f64>,
}

impl Row {
    /// A command's row from its measurement (the window count from its `wrote N` line).
    fn of(what: &'static str, m: &Measured) -> Self {
        let windows = number_after(&m.stdout, "wrote");
        Self {
            what,
            windows,
            wall_s: m.wall_s,
            windows_per_s: per_s(windows, m.wall_s),
            peak_rss_mib: m.peak_rss_mib,
        }
    }

    /// One JSON line; `round` is `None` for the medians.
    fn json(&self, days: f64, ceiling: f64, batch: usize, round: Option<usize>) -> String {
        let opt = |v: Option<f64>| v.map_or("null".to_string(), |x| format!("{x:.1}"));
        format!(
            "{{\"what\": \"bench_recording\", \"step\": \"{}\", \"round\": {}, \"days\": {days}, \"batch\": {batch}, \"windows\": {}, \"wall_s\": {:.2}, \"windows_per_s\": {:.1}, \"ratio_to_encoder_eval\": {:.3}, \"peak_rss_mib\": {}}}",
            self.what,
            round.map_or("\"median\"".to_string(), |r| r.to_string()),
            self.windows.map_or("null".to_string(), |n| n.to_string()),
            self.wall_s,
            self.windows_per_s,
            self.windows_per_s / ceiling,
            opt(self.peak_rss_mib)
        )
    }
}

/// Runs the benchmark.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    crate::deps::ensure_system_deps()?;
    crate::deps::ensure_gnu_time()?;
    let root = crate::workspace_root();
    if o.build {
        crate::cargo(&[
            "build",
            "--release",
            "-p",
            "flowfm",
            "--bin",
            "flowfm",
            "-p",
            "flowfm-data",
            "--example",
            "stream_recording",
            "-p",
            "flowfm-models",
            "--example",
            "throughput",
        ])?;
    }
    let release = root.join("target/release");
    let tools = Tools {
        flowfm: release.join("flowfm"),
        stream: release.join("examples/stream_recording"),
        throughput: release.join("examples/throughput"),
    };
    for t in [&tools.flowfm, &tools.stream, &tools.throughput] {
        if !t.is_file() {
            bail!("{} not built (run without --no-build)", t.display());
        }
    }
    std::fs::create_dir_all(&o.work).with_context(|| format!("creating {}", o.work.display()))?;
    let spec = o.work.join("synthetic.toml");
    std::fs::write(&spec, SPEC_TOML)?;
    let profile = root.join("configs/flowfm-default.toml");
    let profile_text = std::fs::read_to_string(&profile)
        .with_context(|| format!("reading {}", profile.display()))?;
    let encoder_toml = encoder_table(&profile_text)
        .with_context(|| format!("{}: no [encoder] table", profile.display()))?;
    let width = encoder_toml
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "width").then(|| v.trim().parse::<f64>().ok())?
        })
        .unwrap_or(1.0);

    eprintln!(
        "xtask: encoder and classifier (cached in {})",
        o.work.display()
    );
    let (encoder, model) = models(&tools, &o.work.join("models"), &spec, &encoder_toml)?;

    // Named by the gzip level it is written at (files of level 1, before session 12, are not
    // reused).
    let rec = o
        .work
        .join(format!("synthetic-{}d-100hz-gz6.csv.gz", o.days));
    let mut write_note = String::new();
    let stream = if rec.is_file() {
        eprintln!("xtask: streaming the cached {}", rec.display());
        measure(&tools.stream, &[s(&rec)?])?
    } else {
        eprintln!("xtask: writing {} (once) and streaming it", rec.display());
        let days = o.days.to_string();
        let m = measure(&tools.stream, &[s(&rec)?, "--write", &days])?;
        write_note = m.stdout.lines().next().unwrap_or_default().to_string();
        m
    };
    let stream_wps = stream
        .stdout
        .lines()
        .find(|l| l.starts_with("streamed"))
        .and_then(|l| {
            let w = number_after(l, "into")? as f64;
            Some(w)
        });
    let stream_windows = stream_wps.map(|w| w as usize);
    // The stream's own timing covers only streaming (not writing): take it from its line.
    let stream_secs = stream
        .stdout
        .lines()
        .find(|l| l.starts_with("streamed"))
        .and_then(|l| {
            let i = l.find(" in ")? + 4;
            l[i..].split(' ').next()?.parse::<f64>().ok()
        })
        .unwrap_or(stream.wall_s);

    let batch = o.batch.to_string();
    let z = o.work.join("z.h5");
    let timeline = o.work.join("timeline.csv");
    let embed_args = [
        "embed",
        "--encoder",
        s(&encoder)?,
        "--recording",
        s(&rec)?,
        "--spec",
        s(&spec)?,
        "--batch",
        &batch,
        "--output",
        s(&z)?,
    ];
    let predict_args = [
        "predict",
        "--model",
        s(&model)?,
        "--recording",
        s(&rec)?,
        "--spec",
        s(&spec)?,
        "--batch",
        &batch,
        "--output",
        s(&timeline)?,
    ];
    // At the commands' batch size: the encoder's rate depends on it (about 15 % higher at 256
    // than at 64 for the default encoder), and the ratio must compare like with like.
    let width_arg = width.to_string();
    let encoder_rate = |r: usize| -> Result<f64> {
        eprintln!(
            "xtask: round {r}/{}: encoder evaluation (example throughput --json)",
            o.rounds
        );
        let tp = run_ok(
            &tools.throughput,
            &[
                "--json",
                "--only",
                "encoder_forward_eval",
                "--width",
                &width_arg,
                "--batch",
                &batch,
            ],
        )?;
        encoder_eval_windows_per_s(&tp, width).with_context(|| {
            format!(
                "no encoder_forward_eval record at width {width} in the throughput output:\n{tp}"
            )
        })
    };
    // Each command runs between two measurements of the encoder and is judged against their
    // mean: the machine's speed drifts within a minute, and a command of the 7-day size runs
    // for about as long.
    let mut rounds = Vec::with_capacity(o.rounds);
    let mut before = encoder_rate(1)?;
    for r in 1..=o.rounds {
        eprintln!("xtask: round {r}/{}: flowfm embed --recording", o.rounds);
        let embed = measure(&tools.flowfm, &embed_args)?;
        let between = encoder_rate(r)?;
        eprintln!("xtask: round {r}/{}: flowfm predict --recording", o.rounds);
        let predict = measure(&tools.flowfm, &predict_args)?;
        let after = encoder_rate(r)?;
        std::fs::remove_file(&z).ok();
        std::fs::remove_file(&timeline).ok();
        let round = Round {
            encoder: [before, between, after],
            embed: Row::of("embed", &embed),
            predict: Row::of("predict", &predict),
        };
        println!(
            "{}",
            round
                .embed
                .json(o.days, round.embed_ceiling(), o.batch, Some(r))
        );
        println!(
            "{}",
            round
                .predict
                .json(o.days, round.predict_ceiling(), o.batch, Some(r))
        );
        rounds.push(round);
        before = after;
    }

    let stream_row = Row {
        what: "stream",
        windows: stream_windows,
        wall_s: stream_secs,
        windows_per_s: per_s(stream_windows, stream_secs),
        peak_rss_mib: stream.peak_rss_mib,
    };
    let summary = Summary::of(&rounds);
    let ceiling = summary.ceiling;
    let windows = rounds
        .iter()
        .find_map(|r| r.embed.windows.or(r.predict.windows))
        .or(stream_windows);
    if !write_note.is_empty() {
        println!("{write_note}");
    }
    let rows = [
        Row {
            what: "encoder_eval",
            windows: None,
            wall_s: f64::NAN,
            windows_per_s: ceiling,
            peak_rss_mib: None,
        },
        stream_row,
        summary.embed.row.clone(),
        summary.predict.row.clone(),
    ];
    for r in &rows {
        println!("{}", r.json(o.days, ceiling, o.batch, None));
    }
    println!(
        "\n{} days at 100 Hz ({} windows of the encoder), HARNet10 width {width}, batch {}; medians of {} rounds (each command between two measurements of the encoder)",
        o.days,
        windows.map_or("?".into(), |n| n.to_string()),
        o.batch,
        o.rounds
    );
    println!("| step | windows | wall s | windows/s | of encoder eval (median of rounds' ratios) | peak RSS MiB (max) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let ratios = [
        None,
        Some(stream_row_ratio(&rows[1], ceiling)),
        Some(summary.embed.ratio),
        Some(summary.predict.ratio),
    ];
    for (r, ratio) in rows.iter().zip(ratios) {
        println!(
            "| {} | {} | {} | {:.1} | {:.0} % | {} |",
            r.what,
            r.windows.map_or("".into(), |n| n.to_string()),
            if r.wall_s.is_finite() {
                format!("{:.1}", r.wall_s)
            } else {
                String::new()
            },
            r.windows_per_s,
            100.0 * ratio.unwrap_or(1.0),
            r.peak_rss_mib.map_or(String::new(), |m| format!("{m:.0}"))
        );
    }
    for (name, c) in [("embed", &summary.embed), ("predict", &summary.predict)] {
        let rss_ok = c.row.peak_rss_mib.is_some_and(|m| m <= RSS_TARGET_MIB);
        let tp_ok = c.ratio >= 1.0 - THROUGHPUT_SLACK;
        let per_round: Vec<String> = c
            .ratios
            .iter()
            .map(|x| format!("{:.0} %", 100.0 * x))
            .collect();
        println!(
            "{name}: peak RSS {} (target <= {RSS_TARGET_MIB:.0} MiB), throughput {} (target >= {:.0} % of the encoder's; rounds {})",
            if rss_ok { "met" } else { "MISSED" },
            if tp_ok { "met" } else { "MISSED" },
            100.0 * (1.0 - THROUGHPUT_SLACK),
            per_round.join(", ")
        );
    }
    Ok(())
}

/// The stream's rate against the encoder's (one measurement, informative only).
fn stream_row_ratio(row: &Row, ceiling: f64) -> f64 {
    row.windows_per_s / ceiling
}

/// Windows per second, NaN when the count is unknown.
fn per_s(n: Option<usize>, secs: f64) -> f64 {
    n.map_or(f64::NAN, |n| n as f64 / secs)
}

/// One round: the encoder's rate and the two commands measured right after it.
struct Round {
    /// The encoder's rate before `embed`, between the commands, and after `predict`.
    encoder: [f64; 3],
    embed: Row,
    predict: Row,
}

impl Round {
    /// What `embed` is judged against: the mean of the encoder's rates around it.
    fn embed_ceiling(&self) -> f64 {
        0.5 * (self.encoder[0] + self.encoder[1])
    }

    /// What `predict` is judged against.
    fn predict_ceiling(&self) -> f64 {
        0.5 * (self.encoder[1] + self.encoder[2])
    }
}

/// One command over all rounds.
struct CommandSummary {
    /// Median wall time and rate, maximum peak RSS.
    row: Row,
    /// Each round's rate over that round's encoder rate.
    ratios: Vec<f64>,
    /// The median of `ratios`.
    ratio: f64,
}

struct Summary {
    ceiling: f64,
    embed: CommandSummary,
    predict: CommandSummary,
}

impl Summary {
    fn of(rounds: &[Round]) -> Self {
        let command = |pick: fn(&Round) -> (&Row, f64)| {
            let rows: Vec<&Row> = rounds.iter().map(|r| pick(r).0).collect();
            let ratios: Vec<f64> = rounds
                .iter()
                .map(|r| {
                    let (row, ceiling) = pick(r);
                    row.windows_per_s / ceiling
                })
                .collect();
            CommandSummary {
                row: Row {
                    what: rows[0].what,
                    windows: rows[0].windows,
                    wall_s: median(rows.iter().map(|r| r.wall_s).collect()),
                    windows_per_s: median(rows.iter().map(|r| r.windows_per_s).collect()),
                    peak_rss_mib: rows.iter().filter_map(|r| r.peak_rss_mib).reduce(f64::max),
                },
                ratio: median(ratios.clone()),
                ratios,
            }
        };
        Self {
            ceiling: median(
                rounds
                    .iter()
                    .flat_map(|r| [r.embed_ceiling(), r.predict_ceiling()])
                    .collect(),
            ),
            embed: command(|r| (&r.embed, r.embed_ceiling())),
            predict: command(|r| (&r.predict, r.predict_ceiling())),
        }
    }
}

/// The median (the mean of the middle two for an even count; NaN when empty).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gnu_time_and_binary_outputs() {
        let report = "\tCommand being timed: \"x\"\n\tMaximum resident set size (kbytes): 204800\n\tExit status: 0\n";
        assert_eq!(parse_peak_rss_mib(report), Some(200.0));
        assert_eq!(parse_peak_rss_mib("nothing"), None);
        assert_eq!(
            number_after("wrote 6048 predicted windows to t.csv", "wrote"),
            Some(6048)
        );
        assert_eq!(number_after("wrote nothing", "wrote"), None);
        let tp = "{\"what\": \"encoder_forward_eval\", \"width\": 1, \"batch\": 64, \"windows_per_s\": 50.0}\n\
                  {\"what\": \"encoder_forward_eval\", \"width\": 0.25, \"batch\": 64, \"s_per_step\": 0.2, \"windows_per_s\": 307.5}\n";
        assert_eq!(encoder_eval_windows_per_s(tp, 0.25), Some(307.5));
        assert_eq!(encoder_eval_windows_per_s(tp, 1.0), Some(50.0));
        assert_eq!(encoder_eval_windows_per_s(tp, 0.5), None);
    }

    #[test]
    fn copies_the_encoder_table_only() {
        let t = "[run]\nseed = 0\n\n[encoder]\npreset = \"harnet10\"\nwidth = 0.25\n\n[generator]\npreset = \"small\"\n";
        assert_eq!(
            encoder_table(t).as_deref(),
            Some("[encoder]\npreset = \"harnet10\"\nwidth = 0.25\n\n")
        );
        assert_eq!(encoder_table("[run]\n"), None);
    }

    #[test]
    fn rejects_bad_options() {
        let a = |v: &[&str]| parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(a(&["--days", "0"]).is_err());
        assert!(a(&["--days"]).is_err());
        assert!(a(&["--batch", "x"]).is_err());
        assert!(a(&["--frobnicate"]).is_err());
        assert!(a(&["--rounds", "0"]).is_err());
        let o = a(&["--days", "1", "--batch", "64", "--no-build"]).unwrap();
        assert_eq!((o.days, o.batch, o.build, o.rounds), (1.0, 64, false, 3));
        assert_eq!(a(&["--rounds", "5"]).unwrap().rounds, 5);
    }

    #[test]
    // Exact: medians pick (or average two of) the inputs, and the ratios are correctly rounded
    // quotients of small integers, as the literals are.
    #[allow(clippy::float_cmp)]
    fn medians_and_per_round_ratios() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
        let row = |wps: f64, rss: f64| Row {
            what: "embed",
            windows: Some(100),
            wall_s: 100.0 / wps,
            windows_per_s: wps,
            peak_rss_mib: Some(rss),
        };
        // The machine runs fast, slow, fast: each command is judged against its own round.
        // Each command is judged against the mean of the encoder's rates around it.
        let rounds = [
            Round {
                encoder: [1000.0, 1000.0, 1000.0],
                embed: row(950.0, 150.0),
                predict: row(800.0, 160.0),
            },
            Round {
                encoder: [600.0, 400.0, 600.0],
                embed: row(480.0, 170.0),
                predict: row(400.0, 150.0),
            },
            Round {
                encoder: [1000.0, 800.0, 1000.0],
                embed: row(700.0, 140.0),
                predict: row(880.0, 155.0),
            },
        ];
        let s = Summary::of(&rounds);
        // Ceilings 1000, 1000, 500, 500, 900, 900: the median of the six.
        assert_eq!(s.ceiling, 900.0);
        assert_eq!(s.embed.ratios, vec![0.95, 0.96, 700.0 / 900.0]);
        assert_eq!(s.embed.ratio, 0.95);
        assert_eq!(s.embed.row.windows_per_s, 700.0);
        assert_eq!(s.embed.row.peak_rss_mib, Some(170.0));
        assert_eq!(s.predict.ratio, 0.8);
        assert_eq!(s.predict.row.peak_rss_mib, Some(160.0));
    }
}
