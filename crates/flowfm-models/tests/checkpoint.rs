//! Safetensors checkpoints: round trips, metadata, mismatch messages, atomic writes, and
//! readability by the Python `safetensors` package.

mod common;

use candle_core::DType;
use common::*;
use flowfm_core::{ForwardMode, SeededRng, Tolerance};
use flowfm_models::checkpoint::{CONFIG_KEY, CRATE_VERSION, VERSION_KEY};
use flowfm_models::{
    load_checkpoint, load_checkpoint_checked, read_checkpoint_metadata, save_checkpoint,
    EncoderConfig, FlowUNet, HarNet, ModelError, NormKind, UNetConfig,
};
use std::path::Path;

fn encoder(cfg: &EncoderConfig, seed: u64) -> (candle_nn::VarMap, HarNet) {
    let (vm, vb) = seeded(seed, DType::F32);
    let net = HarNet::new(cfg.clone(), vb).unwrap();
    (vm, net)
}

fn small() -> EncoderConfig {
    EncoderConfig::harnet10().with_width(0.25)
}

#[test]
fn round_trip_restores_every_variable_and_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.safetensors");
    let mut rng = SeededRng::new(0);
    let (vm_a, net_a) = encoder(&small(), 1);
    // Move the running statistics away from their initial values so buffers are tested too.
    let x = randn(&mut rng, &[4, 3, 300], DType::F32);
    net_a.forward(&x, ForwardMode::Train).unwrap();
    save_checkpoint(&vm_a, &small(), &path).unwrap();

    let (vm_b, net_b) = encoder(&small(), 2);
    let md = load_checkpoint(&vm_b, &path).unwrap();
    let (a, b) = (values(&vm_a), values(&vm_b));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        Tolerance::new(0.0, 0.0).assert_close(vb, va);
    }
    assert_eq!(md.crate_version, CRATE_VERSION);
    assert_eq!(md.config::<EncoderConfig>().unwrap(), small());
    // The loaded weights are visible through the detached twin too.
    Tolerance::F32.assert_close(
        &flat(&net_b.encode_detached(&x).unwrap()),
        &flat(&net_a.encode_detached(&x).unwrap()),
    );
    let md2 = read_checkpoint_metadata(&path).unwrap();
    assert_eq!(md2, md);
}

#[test]
fn a_checkpoint_of_another_width_names_the_first_mismatching_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.safetensors");
    let (vm, _) = encoder(&small(), 1);
    save_checkpoint(&vm, &small(), &path).unwrap();
    let (vm_wide, _) = encoder(&EncoderConfig::harnet10().with_width(0.5), 1);
    let before = values(&vm_wide);
    let msg = load_checkpoint(&vm_wide, &path).unwrap_err().to_string();
    assert!(
        msg.contains("tensor `stages.0.blocks.0.bn1.bias`: expected shape [32], found shape [16]"),
        "{msg}"
    );
    assert!(msg.contains("enc.safetensors"), "{msg}");
    // Nothing was written.
    for ((_, a), (_, b)) in before.iter().zip(values(&vm_wide).iter()) {
        Tolerance::new(0.0, 0.0).assert_close(b, a);
    }
}

#[test]
fn missing_and_extra_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let gn = small().with_norm(NormKind::Group { groups: 4 });
    let gn_path = dir.path().join("gn.safetensors");
    let bn_path = dir.path().join("bn.safetensors");
    let (vm_gn, _) = encoder(&gn, 1);
    let (vm_bn, _) = encoder(&small(), 1);
    save_checkpoint(&vm_gn, &gn, &gn_path).unwrap();
    save_checkpoint(&vm_bn, &small(), &bn_path).unwrap();
    let missing = load_checkpoint(&vm_bn, &gn_path).unwrap_err().to_string();
    assert!(
        missing.contains(
            "tensor `stages.0.blocks.0.bn1.running_mean` (expected shape [16]) is missing"
        ),
        "{missing}"
    );
    let extra = load_checkpoint(&vm_gn, &bn_path).unwrap_err().to_string();
    assert!(
        extra.contains("tensor `stages.0.blocks.0.bn1.running_mean` (shape [16]) in the file is not a variable"),
        "{extra}"
    );
}

#[test]
fn checked_loading_names_the_first_differing_config_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unet.safetensors");
    let cfg = UNetConfig::small();
    let (vm, vb) = seeded(0, DType::F32);
    FlowUNet::new(cfg.clone(), vb).unwrap();
    save_checkpoint(&vm, &cfg, &path).unwrap();
    assert!(load_checkpoint_checked(&vm, &cfg, &path).is_ok());
    let mut other = cfg.clone();
    other.time_scale = 1.0; // same tensors, different behaviour
    let msg = load_checkpoint_checked(&vm, &other, &path)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("config.time_scale: expected 1.0, found 1000.0"),
        "{msg}"
    );
}

#[test]
fn saving_is_atomic_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.safetensors");
    let (vm1, _) = encoder(&small(), 1);
    let (vm2, _) = encoder(&small(), 2);
    save_checkpoint(&vm1, &small(), &path).unwrap();
    save_checkpoint(&vm2, &small(), &path).unwrap();
    let entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec!["enc.safetensors".to_string()]);
    let (vm3, _) = encoder(&small(), 3);
    load_checkpoint(&vm3, &path).unwrap();
    for ((_, a), (_, b)) in values(&vm2).iter().zip(values(&vm3).iter()) {
        Tolerance::new(0.0, 0.0).assert_close(b, a);
    }
    // A directory that does not exist is an I/O error naming the path.
    let bad = dir.path().join("missing").join("x.safetensors");
    let err = save_checkpoint(&vm1, &small(), &bad).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
}

#[test]
fn garbage_and_foreign_files_are_refused_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (vm, _) = encoder(&small(), 1);
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    let msg = load_checkpoint(&vm, &garbage).unwrap_err().to_string();
    assert!(
        msg.contains("garbage.safetensors") && msg.contains("not a safetensors file"),
        "{msg}"
    );
    // A valid safetensors file without flowfm metadata.
    let foreign = dir.path().join("foreign.safetensors");
    vm.save(&foreign).unwrap();
    let msg = load_checkpoint(&vm, &foreign).unwrap_err().to_string();
    assert!(msg.contains("__metadata__"), "{msg}");
}

fn python_has_safetensors() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import safetensors, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn python_safetensors_reads_names_shapes_and_metadata() {
    if !python_has_safetensors() {
        flowfm_core::testing::skip_or_fail(
            "python3 with the `safetensors` and `numpy` packages not found",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.safetensors");
    let (vm, _) = encoder(&small(), 1);
    save_checkpoint(&vm, &small(), &path).unwrap();
    let script = r#"
import json, sys
from safetensors import safe_open
with safe_open(sys.argv[1], framework="numpy") as f:
    meta = f.metadata()
    out = {k: [list(f.get_tensor(k).shape), str(f.get_tensor(k).dtype)] for k in f.keys()}
print(json.dumps({"tensors": out, "metadata": meta}))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = parsed["tensors"].as_object().unwrap();
    let expected = shapes(&vm);
    assert_eq!(tensors.len(), expected.len());
    for (name, shape) in &expected {
        let entry = &tensors[name.as_str()];
        let py_shape: Vec<usize> = entry[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(&py_shape, shape, "{name}");
        assert_eq!(entry[1], "float32", "{name}");
    }
    let meta = &parsed["metadata"];
    assert_eq!(meta[VERSION_KEY], CRATE_VERSION);
    let cfg: EncoderConfig = serde_json::from_str(meta[CONFIG_KEY].as_str().unwrap()).unwrap();
    assert_eq!(cfg, small());
    assert!(Path::new(&path).exists());
}
