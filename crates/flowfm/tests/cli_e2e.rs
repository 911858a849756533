//! End to end through the `flowfm` binary on a small real store (ADL/HMP, 5-class subset, from
//! `../shared/datasets`): prepare, pretrain each method for a few steps, embed; outputs exist,
//! have the right shapes, and losses go down; and the same seed gives the same checkpoint on 1
//! and 3 threads. Skips with a message when the data is absent.

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

fn flowfm(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flowfm"))
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "flowfm {args:?} failed:\n{text}");
    text
}

/// The sizes that differ between the tests' pretraining configs.
struct Sizes {
    seed: u64,
    width: f64,
    base_channels: usize,
    batch_size: usize,
    steps: usize,
    checkpoint_every: usize,
}

/// Writes a pretraining config of `method` with `sizes` to `dir/<file>.toml`.
fn write_config(dir: &Path, file: &str, method: &str, sizes: &Sizes) -> PathBuf {
    let Sizes {
        seed,
        width,
        base_channels,
        batch_size,
        steps,
        checkpoint_every,
    } = sizes;
    let path = dir.join(format!("{file}.toml"));
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"{method}\"\nmethod = \"{method}\"\nseed = {seed}\n\n[encoder]\nwidth = {width}\n\n\
             [generator]\npreset = \"small\"\nbase_channels = {base_channels}\nchannel_mults = [1, 2]\n\n[diffusion]\nnum_steps = 100\n\n\
             [train]\nbatch_size = {batch_size}\nsteps = {steps}\nlr = 0.003\nwarmup_steps = 2\ncheckpoint_every = {checkpoint_every}\nlog_every = 1\n"
        ),
    )
    .unwrap();
    path
}

fn config(dir: &Path, method: &str) -> PathBuf {
    let sizes = Sizes {
        seed: 1,
        width: 0.0625,
        base_channels: 8,
        batch_size: 16,
        steps: 24,
        checkpoint_every: 12,
    };
    write_config(dir, method, method, &sizes)
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn prepare_pretrain_and_embed_on_real_adl_data() {
    let Some(data) = datasets() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("adl5.h5");
    let adl = data.join("adl_hmp");
    let classes = "climb_stairs,drink_glass,pour_water,walk,getup_bed";
    let out = flowfm(&[
        "prepare",
        "--dataset",
        "adl_hmp",
        "--input",
        adl.to_str().unwrap(),
        "--output",
        store.to_str().unwrap(),
        "--classes",
        classes,
    ]);
    assert!(out.contains("wrote"), "{out}");
    // A second prepare with the same inputs reuses the store.
    let again = flowfm(&[
        "prepare",
        "--dataset",
        "adl_hmp",
        "--input",
        adl.to_str().unwrap(),
        "--output",
        store.to_str().unwrap(),
        "--classes",
        classes,
    ]);
    assert!(again.contains("reused"), "{again}");

    for method in ["flowfm", "diffusion", "ssl_multitask"] {
        let run = tmp.path().join(format!("run-{method}"));
        let cfg = config(tmp.path(), method);
        flowfm(&[
            "pretrain",
            "--config",
            cfg.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ]);
        for f in [
            "config.toml",
            "seed",
            "metrics.jsonl",
            "checkpoints/last.safetensors",
            "encoder.safetensors",
        ] {
            assert!(run.join(f).exists(), "{method}: {f} missing");
        }
        let l = losses(&run);
        assert_eq!(l.len(), 24);
        let (first, last) = (
            l[..6].iter().sum::<f64>() / 6.0,
            l[18..].iter().sum::<f64>() / 6.0,
        );
        assert!(
            last < first,
            "{method}: loss went from {first:.4} to {last:.4}"
        );
        if method != "ssl_multitask" {
            assert!(
                run.join("generator.safetensors").exists(),
                "{method}: generator missing"
            );
        }
    }

    let emb = tmp.path().join("emb.h5");
    let enc = tmp.path().join("run-flowfm/encoder.safetensors");
    let out = flowfm(&[
        "embed",
        "--encoder",
        enc.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--output",
        emb.to_str().unwrap(),
    ]);
    assert!(out.contains("dimension 64"), "{out}");
    let f = hdf5::File::open(&emb).unwrap();
    let z = f.dataset("z").unwrap();
    let n = f.dataset("y").unwrap().shape()[0];
    assert_eq!(z.shape(), vec![n, 64]);
    let values: Vec<f32> = z.read_raw().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));

    // Generate: reconstruct 8 windows with 4 Euler steps, and sample 5 new ones with DDIM.
    let gen = tmp.path().join("gen.h5");
    let out = flowfm(&[
        "generate",
        "--run",
        tmp.path().join("run-flowfm").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--output",
        gen.to_str().unwrap(),
        "--sampler",
        "euler",
        "--steps",
        "4",
        "--limit",
        "8",
    ]);
    assert!(out.contains("4 NFE per window"), "{out}");
    let g = flowfm_data::store::WindowStore::open(&gen).unwrap();
    assert_eq!(
        (g.num_windows(), g.meta.channels, g.meta.window_len),
        (8, 3, 300)
    );
    let sampled = tmp.path().join("sampled.h5");
    flowfm(&[
        "generate",
        "--run",
        tmp.path().join("run-diffusion").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--output",
        sampled.to_str().unwrap(),
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--sample",
        "5",
    ]);
    let s = flowfm_data::store::WindowStore::open(&sampled).unwrap();
    assert_eq!(s.num_windows(), 5);
    assert!(
        s.y.iter().all(|&y| y == -1),
        "sampled windows are unlabelled"
    );

    // Fine-tune and probe by subject-disjoint folds; the JSON records every fold.
    let ft = tmp.path().join("ft.json");
    let out = flowfm(&[
        "finetune",
        "--encoder",
        enc.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--protocol",
        "kfold:3",
        "--epochs",
        "1",
        "--output",
        ft.to_str().unwrap(),
    ]);
    assert!(out.contains("| 3 |"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ft).unwrap()).unwrap();
    assert_eq!(json["folds"].as_array().unwrap().len(), 3);
    let out = flowfm(&[
        "probe",
        "--knn",
        "--encoder",
        enc.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--protocol",
        "kfold:3",
    ]);
    assert!(out.contains("Macro F1"), "{out}");

    // eval from a config: two modes and the forest on the same folds.
    let cfg = tmp.path().join("eval.toml");
    std::fs::write(
        &cfg,
        "stores = [\"adl5.h5\"]\noutput_dir = \"eval\"\nmodes = [\"knn\", \"linear_probe\"]\nrandom_forest = true\n\n\
         [encoders]\nflowfm = \"run-flowfm/encoder.safetensors\"\n\n[downstream]\nprotocol = { kind = \"k_fold\", k = 3 }\nmax_epochs = 3\nforest_trees = 10\n",
    )
    .unwrap();
    flowfm(&["eval", "--config", cfg.to_str().unwrap()]);
    let md = std::fs::read_to_string(tmp.path().join("eval/results.md")).unwrap();
    assert_eq!(md.lines().count(), 5, "{md}");
    assert!(
        md.contains("flowfm (knn)") && md.contains("random_forest"),
        "{md}"
    );
}

#[test]
fn bad_config_is_rejected_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[run]\nname = \"x\"\nmethod = \"flowfm\"\n\n[encoder]\nwidth = 0.25\n\n[train]\nsteps = 5\nlr = -1.0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowfm"))
        .args([
            "pretrain",
            "--config",
            cfg.to_str().unwrap(),
            "--store",
            "missing.h5",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("train.lr"), "{err}");
}

/// `--device` is checked before anything runs: a malformed name, and in a build without the
/// `cuda` feature a GPU, are errors that say why, and no run directory or output is created.
#[test]
fn a_device_the_build_cannot_use_is_rejected_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "flowfm");
    let run_dir = tmp.path().join("run");
    let mut cases = vec![("tpu", "is not one of `cpu`, `cuda`, `cuda:N`")];
    if !cfg!(feature = "cuda") {
        cases.push(("cuda:1", "built without CUDA support"));
    }
    for (device, says) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_flowfm"))
            .args([
                "pretrain",
                "--config",
                cfg.to_str().unwrap(),
                "--store",
                "missing.h5",
                "--device",
                device,
                "--out",
                run_dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{device}");
        assert!(err.contains(says), "{device}: {err}");
        assert!(!run_dir.exists(), "{device}: a run directory was created");
        let gen_out = tmp.path().join("gen.h5");
        let out = Command::new(env!("CARGO_BIN_EXE_flowfm"))
            .args([
                "generate",
                "--run",
                run_dir.to_str().unwrap(),
                "--store",
                "missing.h5",
                "--output",
                gen_out.to_str().unwrap(),
                "--device",
                device,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "generate {device}: {err}"
        );
        assert!(!gen_out.exists());
    }
}

/// A 6-step config for the thread-count test (wider encoder and larger batch than [`config`], so
/// the GEMMs split over threads).
fn threads_config(dir: &Path, method: &str) -> PathBuf {
    let sizes = Sizes {
        seed: 3,
        width: 0.125,
        base_channels: 16,
        batch_size: 32,
        steps: 6,
        checkpoint_every: 6,
    };
    write_config(dir, &format!("{method}-threads"), method, &sizes)
}

/// Determinism across thread counts: the same seed gives bit-identical weights after N steps of
/// every pretraining method whether the binary runs on 1 thread or on 3 (`--threads`).
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
        let cfg = threads_config(tmp.path(), method);
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
