//! Bring your own recordings, end to end through the binary: a folder of CSV files (subject and
//! activity in the file name) becomes a store with `prepare --dataset csv`; an encoder is
//! pretrained briefly, fine-tuned with `finetune --save`, and `predict --recording` labels a
//! held-out recording whose activity changes over time; the timeline's labels must beat chance.
//! Also: a model folder with an altered file, and a recording with the wrong channel count,
//! are clear errors that leave no output behind.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const RATE_HZ: f64 = 50.0;
const ACTIVITIES: [&str; 3] = ["rest", "walk", "shake"];

/// Three activities that a small encoder tells apart: still (gravity on z), a 2 Hz swing on x,
/// and a 6 Hz shake on all axes; plus deterministic noise.
fn sample(activity: usize, t: f64, k: u64) -> [f64; 3] {
    let noise = |j: u64| {
        let h = (k
            .wrapping_mul(6364136223846793005)
            .wrapping_add(j * 1442695040888963407))
            >> 33;
        (h as f64 / (1u64 << 31) as f64 - 0.5) * 0.05
    };
    let tau = std::f64::consts::TAU;
    let v = match activity {
        0 => [0.0, 0.0, 1.0],
        1 => [
            0.6 * (tau * 2.0 * t).sin(),
            0.1,
            1.0 + 0.2 * (tau * 4.0 * t).sin(),
        ],
        _ => [
            0.8 * (tau * 6.0 * t).sin(),
            0.8 * (tau * 6.0 * t + 1.0).sin(),
            1.0 + 0.8 * (tau * 6.0 * t + 2.0).sin(),
        ],
    };
    [v[0] + noise(1), v[1] + noise(2), v[2] + noise(3)]
}

/// A CSV recording `t_ms,acc_x,acc_y,acc_z` of the given activity segments `(activity, secs)`.
fn recording(segments: &[(usize, f64)], seed: u64) -> String {
    let mut out = String::from("t_ms,acc_x,acc_y,acc_z\n");
    let mut t = 0.0;
    let mut k = seed * 1_000_000;
    for &(a, secs) in segments {
        let n = (secs * RATE_HZ) as usize;
        for _ in 0..n {
            let v = sample(a, t, k);
            writeln!(out, "{:.1},{:.5},{:.5},{:.5}", t * 1000.0, v[0], v[1], v[2]).unwrap();
            t += 1.0 / RATE_HZ;
            k += 1;
        }
    }
    out
}

fn flowfm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flowfm"))
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = flowfm(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "flowfm {args:?} failed:\n{text}");
    text
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_csv_folder_trains_a_classifier_that_labels_a_held_out_recording() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phone");
    std::fs::create_dir_all(&data).unwrap();
    // 6 subjects x 3 activities, 240 s each (enough optimiser steps per epoch at batch 64).
    for s in 1..=6u64 {
        for (a, name) in ACTIVITIES.iter().enumerate() {
            let text = recording(&[(a, 240.0)], s * 10 + a as u64);
            std::fs::write(data.join(format!("{s}_{name}.csv")), text).unwrap();
        }
    }
    let spec = dir.path().join("phone.toml");
    std::fs::write(
        &spec,
        "name = \"phone\"\nchannels = [\"acc_x\", \"acc_y\", \"acc_z\"]\nunits = \"g\"\nrate_hz = 50.0\n\
         time_column = \"t_ms\"\ntime_unit = \"ms\"\nfile_pattern = \"{subject}_{label}.csv\"\n",
    )
    .unwrap();
    let store = dir.path().join("phone.h5");
    let prepared = ok(&[
        "prepare",
        "--dataset",
        "csv",
        "--input",
        p(&data),
        "--spec",
        p(&spec),
        "--output",
        p(&store),
    ]);
    assert!(prepared.contains("wrote"), "{prepared}");

    let cfg = dir.path().join("enc.toml");
    std::fs::write(
        &cfg,
        "[run]\nname = \"enc\"\nmethod = \"ssl_multitask\"\nseed = 1\n\n[encoder]\nwidth = 0.0625\n\n\
         [train]\nbatch_size = 16\nsteps = 6\nlr = 0.003\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    ok(&[
        "pretrain",
        "--config",
        p(&cfg),
        "--store",
        p(&store),
        "--out",
        p(&run),
    ]);
    let model = dir.path().join("model");
    let encoder = run.join("encoder.safetensors");
    let saved = ok(&[
        "finetune",
        "--encoder",
        p(&encoder),
        "--store",
        p(&store),
        // The default recipe, no training flags: it must train on a store this small.
        "--save",
        p(&model),
    ]);
    eprintln!("{saved}");
    for f in ["encoder.safetensors", "head.safetensors", "model.json"] {
        assert!(model.join(f).is_file(), "{f} missing");
    }

    // A held-out recording: 60 s of each activity, in another order, gzip'd.
    let order = [(2usize, 60.0), (0, 60.0), (1, 60.0)];
    let text = recording(&order, 99);
    let rec = dir.path().join("week.csv.gz");
    {
        use std::io::Write;
        let f = std::fs::File::create(&rec).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
    }
    let timeline = dir.path().join("timeline.csv");
    ok(&[
        "predict",
        "--model",
        p(&model),
        "--recording",
        p(&rec),
        "--spec",
        p(&spec),
        "--output",
        p(&timeline),
    ]);
    let csv = std::fs::read_to_string(&timeline).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("start_s,end_s,predicted,p_"), "{header}");
    let (mut right, mut total) = (0, 0);
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let start: f64 = f[0].parse().unwrap();
        let probs: f64 = f[3..].iter().map(|v| v.parse::<f64>().unwrap()).sum();
        assert!((probs - 1.0).abs() < 1e-3, "probabilities sum to {probs}");
        let truth = ACTIVITIES[order[((start / 60.0) as usize).min(2)].0];
        right += usize::from(f[2] == truth);
        total += 1;
    }
    assert!(total >= 15, "{total} windows");
    let accuracy = right as f64 / total as f64;
    assert!(
        accuracy > 0.5,
        "accuracy {accuracy} does not beat chance (1/3) clearly:\n{csv}"
    );

    // An altered weight file is refused, naming it, and nothing is written.
    let head = model.join("head.safetensors");
    let mut bytes = std::fs::read(&head).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&head, bytes).unwrap();
    let out2: PathBuf = dir.path().join("t2.csv");
    let refused = flowfm(&[
        "predict",
        "--model",
        p(&model),
        "--recording",
        p(&rec),
        "--spec",
        p(&spec),
        "--output",
        p(&out2),
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("head.safetensors") && err.contains("sha256"),
        "{err}"
    );
    assert!(!out2.exists());
}

#[test]
fn a_recording_with_a_malformed_line_fails_naming_the_line_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = recording(&[(1, 30.0)], 5);
    text.push_str("12345.0,0.1,oops,0.3\n");
    text.push_str(
        &recording(&[(1, 30.0)], 6)
            .lines()
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    let rec = dir.path().join("bad.csv");
    std::fs::write(&rec, text).unwrap();
    // A tiny encoder checkpoint to embed with.
    let cfg = dir.path().join("enc.toml");
    std::fs::write(
        &cfg,
        "[run]\nname = \"enc\"\nmethod = \"ssl_multitask\"\n\n[encoder]\nwidth = 0.0625\n\n[train]\nbatch_size = 4\nsteps = 1\n",
    )
    .unwrap();
    let out = dir.path().join("z.h5");
    // Embedding needs an encoder; without a store to pretrain on, write one from the good part.
    let data = dir.path().join("d");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("1_walk.csv"), recording(&[(1, 40.0)], 7)).unwrap();
    std::fs::write(data.join("2_walk.csv"), recording(&[(1, 40.0)], 8)).unwrap();
    let store = dir.path().join("s.h5");
    ok(&[
        "prepare",
        "--dataset",
        "csv",
        "--input",
        p(&data),
        "--csv-channels",
        "acc_x,acc_y,acc_z",
        "--csv-rate-hz",
        "50",
        "--csv-time-column",
        "t_ms",
        "--csv-time-unit",
        "ms",
        "--csv-file-pattern",
        "{subject}_{label}.csv",
        "--output",
        p(&store),
    ]);
    let run = dir.path().join("run");
    ok(&[
        "pretrain",
        "--config",
        p(&cfg),
        "--store",
        p(&store),
        "--out",
        p(&run),
    ]);
    let res = flowfm(&[
        "embed",
        "--encoder",
        p(&run.join("encoder.safetensors")),
        "--recording",
        p(&rec),
        "--csv-channels",
        "acc_x,acc_y,acc_z",
        "--csv-rate-hz",
        "50",
        "--csv-time-column",
        "t_ms",
        "--csv-time-unit",
        "ms",
        "--output",
        p(&out),
    ]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    // The bad row is line 1 (header) + 1500 samples + 1.
    assert!(err.contains("bad.csv") && err.contains("1502"), "{err}");
    assert!(!out.exists(), "a failed embed left {}", out.display());
}
