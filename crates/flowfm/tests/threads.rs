//! Determinism across thread counts: the same seed gives bit-identical weights after N steps of
//! every pretraining method whether the binary runs on 1 thread or on 3 (`--threads`), on a
//! small real store (ADL/HMP from `../shared/datasets`; a counted skip without it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn datasets() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets");
    if p.join("adl_hmp").is_dir() {
        Some(p)
    } else {
        flowfm_core::testing::skip_or_fail(&format!("{} not found", p.display()));
        None
    }
}

fn flowfm(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowfm"))
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flowfm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(dir: &Path, method: &str) -> PathBuf {
    let path = dir.join(format!("{method}.toml"));
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"{method}\"\nmethod = \"{method}\"\nseed = 3\n\n[encoder]\nwidth = 0.125\n\n\
             [generator]\npreset = \"small\"\nbase_channels = 16\nchannel_mults = [1, 2]\n\n[diffusion]\nnum_steps = 100\n\n\
             [train]\nbatch_size = 32\nsteps = 6\nlr = 0.003\nwarmup_steps = 2\ncheckpoint_every = 6\nlog_every = 1\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn weights_after_n_steps_do_not_depend_on_the_thread_count() {
    let Some(data) = datasets() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("adl.h5");
    flowfm(&[
        "prepare",
        "--dataset",
        "adl_hmp",
        "--input",
        data.join("adl_hmp").to_str().unwrap(),
        "--output",
        store.to_str().unwrap(),
        "--classes",
        "climb_stairs,drink_glass,pour_water,walk,getup_bed",
    ]);
    for method in ["flowfm", "diffusion", "ssl_multitask"] {
        let cfg = config(tmp.path(), method);
        let mut files = Vec::new();
        for threads in ["1", "3"] {
            let run = tmp.path().join(format!("{method}-{threads}"));
            flowfm(&[
                "--threads",
                threads,
                "pretrain",
                "--config",
                cfg.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
                "--out",
                run.to_str().unwrap(),
            ]);
            files.push(std::fs::read(run.join("checkpoints/last.safetensors")).unwrap());
        }
        // The checkpoint holds every weight, the optimiser state and the step: byte equality
        // (its metadata is written in a fixed order) is bit equality of all of them.
        assert!(
            files[0] == files[1],
            "{method}: the checkpoint after 6 steps differs between 1 and 3 threads"
        );
    }
}
