//! The `flowfm` binary under hostile but fair use (issue "Hostile input, crashes and
//! concurrency"): closed pipes, run names that would escape the runs folder, configs sized to
//! exhaust memory, a run directory held by another process, output paths that are directories,
//! negative numbers. Each case checks the exit status and that the message names the field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn flowfm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowfm"));
    c.arg("--quiet");
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn shipped_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(name)
}

/// A small synthetic store of 3 x 300 windows (sines plus noise) for runs that need one.
fn synthetic_store(path: &Path, n: usize) {
    let mut ws = flowfm_data::window::WindowSet::empty(
        "synthetic",
        30.0,
        vec!["x".into(), "y".into(), "z".into()],
        300,
        vec!["a".into(), "b".into()],
    );
    for i in 0..n {
        for c in 0..3 {
            for t in 0..300 {
                let phase = (t as f32) * 0.1 * (1.0 + (i % 3) as f32) + c as f32;
                ws.x.push(phase.sin());
            }
        }
        ws.y.push((i % 2) as i64);
        ws.subject.push((i % 4) as i64);
        ws.start_time_s.push(i as f64 * 10.0);
    }
    flowfm_data::store::write_store(path, &ws, 1, "synthetic-fingerprint", "{}").unwrap();
}

fn write_config(dir: &Path, file: &str, run_name: &str, extra: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(
        &path,
        format!(
            "[run]\nname = {run_name:?}\nmethod = \"flowfm\"\n\n[encoder]\nwidth = 0.0625\n\n\
             [generator]\npreset = \"small\"\nbase_channels = 8\nchannel_mults = [1, 2]\n{extra}\n\
             [train]\nbatch_size = 8\nsteps = 4\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_closed_stdout_ends_the_command_quietly_with_its_status() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // every write to stdout now fails with EPIPE
    let out = flowfm()
        .arg("check-config")
        .arg(shipped_config("flowfm-quick.toml"))
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}

#[test]
fn run_names_that_escape_the_runs_folder_are_refused_naming_run_name() {
    let dir = tempfile::tempdir().unwrap();
    for (i, name) in ["../escape_dir", "/tmp/abs", ""].iter().enumerate() {
        let cfg = write_config(dir.path(), &format!("c{i}.toml"), name, "");
        let out = flowfm().arg("check-config").arg(&cfg).output().unwrap();
        assert!(!out.status.success(), "{name:?} accepted");
        assert!(text(&out).contains("run.name"), "{name:?}: {}", text(&out));
    }
}

#[test]
fn configs_sized_beyond_memory_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let steps = write_config(
        dir.path(),
        "steps.toml",
        "x",
        "\n[diffusion]\nnum_steps = 1000000000000\n",
    );
    let out = flowfm().arg("check-config").arg(&steps).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("diffusion.num_steps"), "{}", text(&out));
    // Within the bound, but far beyond any machine's memory: refused by the estimate.
    let wide = dir.path().join("wide.toml");
    std::fs::write(
        &wide,
        std::fs::read_to_string(write_config(dir.path(), "w0.toml", "x", ""))
            .unwrap()
            .replace("base_channels = 8", "base_channels = 16384"),
    )
    .unwrap();
    let out = flowfm().arg("check-config").arg(&wide).output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("generator.base_channels") && t.contains("GiB"),
        "{t}"
    );
}

#[test]
fn check_config_prints_the_resource_estimate() {
    let out = flowfm()
        .arg("check-config")
        .arg(shipped_config("flowfm-default.toml"))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("parameters: encoder") && t.contains("estimated peak memory"),
        "{t}"
    );
}

#[test]
fn a_run_directory_held_by_a_live_process_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // This test process is alive: its lock must be respected.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into()));
    std::fs::write(
        run.join(".lock"),
        format!("pid={}\nhost={host}\n", std::process::id()),
    )
    .unwrap();
    let store = dir.path().join("s.h5");
    synthetic_store(&store, 24);
    let cfg = write_config(dir.path(), "c.toml", "x", "");
    let out = flowfm()
        .arg("pretrain")
        .arg("--config")
        .arg(&cfg)
        .arg("--store")
        .arg(&store)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("is in use by process") && t.contains(&std::process::id().to_string()),
        "{t}"
    );
    assert!(
        !run.join("metrics.jsonl").exists(),
        "the second writer wrote"
    );
    assert!(
        run.join(".lock").exists(),
        "another process's lock was removed"
    );
    // Once the holder is gone (lock removed), the same command trains.
    std::fs::remove_file(run.join(".lock")).unwrap();
    let out = flowfm()
        .arg("pretrain")
        .arg("--config")
        .arg(&cfg)
        .arg("--store")
        .arg(&store)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!run.join(".lock").exists(), "the lock outlived its run");
}

#[test]
fn resuming_on_other_stores_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.h5"), dir.path().join("b.h5"));
    synthetic_store(&a, 24);
    synthetic_store(&b, 24);
    // Another fingerprint for b.
    let mut ws = flowfm_data::store::WindowStore::open(&b)
        .unwrap()
        .load()
        .unwrap();
    ws.x[0] += 1.0;
    flowfm_data::store::write_store(&b, &ws, 1, "other-fingerprint", "{}").unwrap();
    let cfg = write_config(dir.path(), "c.toml", "x", "");
    let run = dir.path().join("run");
    let pretrain = |store: &Path, resume: bool| {
        let mut c = flowfm();
        c.arg("pretrain")
            .arg("--config")
            .arg(&cfg)
            .arg("--store")
            .arg(store);
        c.arg("--out").arg(&run);
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    let first = pretrain(&a, false);
    assert!(first.status.success(), "{}", text(&first));
    let again = pretrain(&b, true);
    let t = text(&again);
    assert!(!again.status.success(), "resumed on other data: {t}");
    assert!(
        t.contains("synthetic-fingerprint") && t.contains("other-fingerprint"),
        "{t}"
    );
}

#[test]
fn an_output_that_is_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = flowfm()
        .args(["prepare", "--dataset", "seglearn_watch", "--output"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("is a directory"), "{}", text(&out));
}

#[test]
fn negative_rates_and_hops_get_our_error_not_clap_s() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [("--rate-hz", "-30"), ("--hop-secs", "-1")] {
        let out = flowfm()
            .args([
                "prepare",
                "--dataset",
                "seglearn_watch",
                flag,
                value,
                "--output",
            ])
            .arg(dir.path().join("x.h5"))
            .output()
            .unwrap();
        let t = text(&out);
        assert!(!out.status.success());
        assert!(!t.contains("unexpected argument"), "{flag}: {t}");
        assert!(t.contains("rate") || t.contains("hop"), "{flag}: {t}");
    }
}

#[test]
fn embed_refuses_non_finite_windows_unless_told_to_skip_them() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, dirty) = (dir.path().join("clean.h5"), dir.path().join("dirty.h5"));
    synthetic_store(&clean, 24);
    let mut ws = flowfm_data::store::WindowStore::open(&clean)
        .unwrap()
        .load()
        .unwrap();
    ws.x[3 * 900 + 10] = f32::NAN; // window 3
    ws.x[7 * 900 + 500] = f32::INFINITY; // window 7
    flowfm_data::store::write_store(&dirty, &ws, 1, "dirty", "{}").unwrap();
    let cfg = write_config(dir.path(), "c.toml", "x", "");
    let run = dir.path().join("run");
    let out = flowfm()
        .arg("pretrain")
        .arg("--config")
        .arg(&cfg)
        .arg("--store")
        .arg(&clean)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let embed = |skip: bool| {
        let mut c = flowfm();
        c.arg("embed")
            .arg("--encoder")
            .arg(run.join("encoder.safetensors"))
            .arg("--store")
            .arg(&dirty)
            .arg("--output")
            .arg(dir.path().join("z.h5"));
        if skip {
            c.arg("--skip-nonfinite");
        }
        c.output().unwrap()
    };
    let refused = embed(false);
    let t = text(&refused);
    assert!(!refused.status.success(), "{t}");
    assert!(t.contains("dirty.h5") && t.contains('3'), "{t}");
    assert!(
        !dir.path().join("z.h5").exists(),
        "a refused run left an output"
    );
    let skipped = embed(true);
    let t = text(&skipped);
    assert!(skipped.status.success(), "{t}");
    assert!(t.contains("left out 2 windows"), "{t}");
    let f = hdf5::File::open(dir.path().join("z.h5")).unwrap();
    let rows: Vec<i64> = f.dataset("window_index").unwrap().read_raw().unwrap();
    assert_eq!(rows.len(), 22);
    assert!(!rows.contains(&3) && !rows.contains(&7));
}

#[test]
fn an_os_error_is_printed_once() {
    let out = flowfm()
        .args(["check-config", "/nonexistent/flowfm-config.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}
