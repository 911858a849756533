//! The HDF5 window store read by h5py (skipped when python3 lacks h5py; CI installs it).
//!
//! Kept in its own test binary: the child process would otherwise inherit HDF5 file descriptors
//! (and their locks) of tests running concurrently in the same process.

use std::process::Command;

use flowfm_core::{SeededRng, Tolerance};
use flowfm_data::{write_store, WindowSet};

fn windows(n: usize, seed: u64) -> WindowSet {
    let mut rng = SeededRng::new(seed);
    let mut w = WindowSet::empty(
        "synthetic",
        30.0,
        vec!["acc_x".into(), "acc_y".into(), "acc_z".into()],
        300,
        vec!["walk".into(), "sit".into()],
    );
    w.source_checksums = vec![
        ("a.csv".into(), "ab".repeat(32)),
        ("b.csv".into(), "cd".repeat(32)),
    ];
    w.x = rng
        .normal_vec(n * 900)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    w.y = (0..n).map(|i| [0, 1, -1][i % 3]).collect();
    w.subject = (0..n).map(|i| 100 + (i / 4) as i64).collect();
    w.start_time_s = (0..n).map(|i| 10.0 * i as f64 + 0.25).collect();
    w
}

#[test]
fn h5py_reads_the_store() {
    let ok = Command::new("python3")
        .args(["-c", "import h5py"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        flowfm_core::testing::skip_or_fail("python3 with h5py not available (pip install h5py)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.h5");
    let w = windows(37, 11);
    write_store(&path, &w, 3, "fp-abc", "cfg").unwrap();
    let script = r#"
import sys, h5py
f = h5py.File(sys.argv[1], "r")
x, y, s, t = f["x"], f["y"], f["subject"], f["start_time"]
assert x.shape == (37, 3, 300) and x.dtype == "float32", (x.shape, x.dtype)
assert y.shape == (37,) and y.dtype == "int64"
assert s.shape == (37,) and s.dtype == "int64"
assert t.shape == (37,) and t.dtype == "float64"
assert x.compression == "gzip" and x.shuffle and x.chunks is not None
a = f.attrs
def st(v):
    return v.decode() if isinstance(v, bytes) else str(v)
assert st(a["format"]) == "flowfm-window-store"
assert float(a["sample_rate_hz"]) == 30.0
assert int(a["window_len"]) == 300
assert int(a["format_version"]) == 2
assert [st(c) for c in f["class_names"][()]] == ["walk", "sit"]
assert [st(c) for c in f["channel_names"][()]] == ["acc_x", "acc_y", "acc_z"]
assert [st(c) for c in f["source_files"][()]] == ["a.csv", "b.csv"]
assert [st(c) for c in f["source_sha256"][()]] == ["ab" * 32, "cd" * 32]
assert [st(c) for c in f["config"][()]] == ["cfg"]
assert int(a["preprocessing_version"]) == 3
assert st(a["fingerprint"]) == "fp-abc"
assert st(a["dataset"]) == "synthetic"
print(repr(float(x[5, 1, 17])), int(y[4]), int(s[9]), repr(float(t[2])))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "h5py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts.len(), 4, "{line}");
    let x517: f64 = parts[0].parse().unwrap();
    assert!(Tolerance::new(0.0, 0.0).close(x517, f64::from(w.x[5 * 900 + 300 + 17])));
    assert_eq!(parts[1].parse::<i64>().unwrap(), w.y[4]);
    assert_eq!(parts[2].parse::<i64>().unwrap(), w.subject[9]);
    assert!(Tolerance::F64.close(parts[3].parse().unwrap(), w.start_time_s[2]));
}
