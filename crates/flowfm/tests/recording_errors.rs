//! Long recordings that are broken, through the binary (issue 13, item 5): a malformed line in the
//! middle of a gzip'd recording, a truncated gzip stream, a time column that goes backwards, and
//! a model folder with a missing file. Each is an error naming the file and the line (or the
//! file of the model), and leaves neither the output nor a temporary file behind.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HEADER: &str = "t_ms,acc_x,acc_y,acc_z\n";

/// `n` rows at 50 Hz from `t0_ms`: a 2 Hz swing with gravity on z.
fn rows(n: usize, t0_ms: f64) -> String {
    (0..n)
        .map(|i| {
            let t = t0_ms / 1000.0 + i as f64 / 50.0;
            let x = (std::f64::consts::TAU * 2.0 * t).sin() * 0.5;
            format!("{:.1},{x:.5},0.10000,1.00000\n", t * 1000.0)
        })
        .collect()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

fn flowfm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowfm"))
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) {
    let out = flowfm(args);
    assert!(
        out.status.success(),
        "flowfm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const CSV_FLAGS: [&str; 8] = [
    "--csv-channels",
    "acc_x,acc_y,acc_z",
    "--csv-rate-hz",
    "50",
    "--csv-time-column",
    "t_ms",
    "--csv-time-unit",
    "ms",
];

/// Names of the files in `dir` (to see that a failed command left nothing there).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs `args` (+ the CSV flags, + `--output OUT`), which must fail with a message containing
/// every one of `needles`, leaving the output folder as it was.
fn fails(args: &[&str], out_dir: &Path, out_name: &str, needles: &[&str]) {
    let before = listing(out_dir);
    let out = out_dir.join(out_name);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(CSV_FLAGS);
    all.extend(["--output", p(&out)]);
    let res = flowfm(&all);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "flowfm {all:?} succeeded");
    for n in needles {
        assert!(
            err.contains(n),
            "`{n}` missing from the error of {all:?}:\n{err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(listing(out_dir), before, "flowfm {all:?} left files behind");
}

#[test]
fn broken_recordings_and_models_are_clear_errors_that_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A small store, a one-step encoder and a one-epoch classifier (width 1/16: seconds).
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for s in 1..=3 {
        for (label, t0) in [("walk", 0.0), ("rest", 1e7)] {
            let text = format!("{HEADER}{}", rows(3000, t0 + s as f64));
            std::fs::write(data.join(format!("{s}_{label}.csv")), text).unwrap();
        }
    }
    let store = d.join("s.h5");
    let mut prep = vec!["prepare", "--dataset", "csv", "--input", p(&data)];
    prep.extend(CSV_FLAGS);
    prep.extend([
        "--csv-file-pattern",
        "{subject}_{label}.csv",
        "--output",
        p(&store),
    ]);
    ok(&prep);
    let cfg = d.join("enc.toml");
    std::fs::write(
        &cfg,
        "[run]\nname = \"enc\"\nmethod = \"ssl_multitask\"\n\n[encoder]\nwidth = 0.0625\n\n[train]\nbatch_size = 4\nsteps = 1\n",
    )
    .unwrap();
    let run = d.join("run");
    ok(&[
        "pretrain",
        "--config",
        p(&cfg),
        "--store",
        p(&store),
        "--out",
        p(&run),
    ]);
    let encoder = run.join("encoder.safetensors");
    let model = d.join("model");
    ok(&[
        "finetune",
        "--encoder",
        p(&encoder),
        "--store",
        p(&store),
        "--epochs",
        "1",
        "--save",
        p(&model),
    ]);
    let out_dir = d.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();

    // A malformed line in the middle of a long gzip'd recording: 30 000 good rows, the bad one
    // (line 30 002 with the header), 30 000 more.
    let mut text = format!("{HEADER}{}", rows(30_000, 0.0));
    text.push_str("600000.0,0.1,0.2,oops\n");
    text.push_str(&rows(30_000, 600_020.0));
    let bad_gz = d.join("long_bad.csv.gz");
    std::fs::write(&bad_gz, gzip(&text)).unwrap();
    for (cmd, flag, what) in [
        ("embed", "--encoder", &encoder),
        ("predict", "--model", &model),
    ] {
        fails(
            &[cmd, flag, p(what), "--recording", p(&bad_gz)],
            &out_dir,
            "o.out",
            &["long_bad.csv.gz", "30002"],
        );
    }

    // A truncated gzip stream (cut in the middle of the compressed data).
    let good = gzip(&format!("{HEADER}{}", rows(60_000, 0.0)));
    let cut = d.join("cut.csv.gz");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    for (cmd, flag, what) in [
        ("embed", "--encoder", &encoder),
        ("predict", "--model", &model),
    ] {
        fails(
            &[cmd, flag, p(what), "--recording", p(&cut)],
            &out_dir,
            "o.out",
            &["cut.csv.gz", "gzip"],
        );
    }

    // The time column going backwards at line 5 002.
    let mut text = format!("{HEADER}{}", rows(5_000, 0.0));
    text.push_str(&rows(5_000, 50_000.0));
    let back = d.join("back.csv");
    std::fs::write(&back, text).unwrap();
    for (cmd, flag, what) in [
        ("embed", "--encoder", &encoder),
        ("predict", "--model", &model),
    ] {
        fails(
            &[cmd, flag, p(what), "--recording", p(&back)],
            &out_dir,
            "o.out",
            &["back.csv", "5002", "backwards"],
        );
    }

    // A model folder missing one of its files, each in turn.
    let fine = d.join("fine.csv");
    std::fs::write(&fine, format!("{HEADER}{}", rows(3_000, 0.0))).unwrap();
    for f in ["model.json", "encoder.safetensors", "head.safetensors"] {
        let copy: PathBuf = d.join(format!("model-without-{f}"));
        std::fs::create_dir_all(&copy).unwrap();
        for e in std::fs::read_dir(&model).unwrap() {
            let e = e.unwrap();
            if e.file_name() != f {
                std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
            }
        }
        fails(
            &["predict", "--model", p(&copy), "--recording", p(&fine)],
            &out_dir,
            "t.csv",
            &[f],
        );
    }
    // And the intact model works on the same recording (so the failures above are the files).
    let mut args = vec!["predict", "--model", p(&model), "--recording", p(&fine)];
    args.extend(CSV_FLAGS);
    let t = out_dir.join("t.csv");
    args.extend(["--output", p(&t)]);
    ok(&args);
    assert!(std::fs::read_to_string(&t).unwrap().lines().count() > 5);
}
