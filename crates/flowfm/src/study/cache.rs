//! Stage outputs that `reproduce` keeps between runs. A value is stored together with the key
//! that produced it: a sha256 over the stage's configuration and the checksums of its inputs
//! (stores, checkpoints). A later run reuses the value only when its own key is identical, so a
//! changed config, dataset or checkpoint reruns the stage. Values are stored as pickle, which
//! keeps NaN metrics (JSON would turn them into `null`); files are written atomically.

use crate::output::write_file;
use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Version of the cache layout; bump when a cached type changes shape.
const CACHE_FORMAT: u32 = 1;

/// Builds a stage key from labelled parts (labels keep `("a", "bc")` apart from `("ab", "c")`).
#[derive(Clone, Default)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    /// An empty key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a labelled byte string.
    pub fn bytes(mut self, label: &str, bytes: &[u8]) -> Self {
        for part in [label.as_bytes(), bytes] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
        self
    }

    /// Adds a labelled text.
    pub fn text(self, label: &str, text: &str) -> Self {
        self.bytes(label, text.as_bytes())
    }

    /// Adds a value in its canonical serialisation: JSON with every object's keys sorted, so the
    /// key depends on the value only (never on field order or `Debug` output).
    pub fn value<T: Serialize + ?Sized>(self, label: &str, value: &T) -> Result<Self> {
        let v = serde_json::to_value(value)
            .with_context(|| format!("serialising `{label}` for a stage key"))?;
        Ok(self.text(label, &canonical_json(&v)))
    }

    /// Adds the sha256 of a file's contents.
    pub fn file(self, label: &str, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading {} for a stage key", path.display()))?;
        let digest = Sha256::digest(&bytes);
        Ok(self.bytes(label, &digest))
    }

    /// Adds f32 values (e.g. windows) bit for bit.
    pub fn floats(self, label: &str, values: &[f32]) -> Self {
        let mut h = Sha256::new();
        for v in values {
            h.update(v.to_le_bytes());
        }
        let digest = h.finalize();
        self.bytes(label, &digest)
    }

    /// The key as hex.
    pub fn finish(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct Cached<T> {
    format: u32,
    key: String,
    value: T,
}

/// `v` as compact JSON with the keys of every object in sorted order.
pub fn canonical_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String((*k).clone()),
                        canonical_json(&map[*k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Lookup<T> {
    /// A value written under the same key.
    Hit(T),
    /// Nothing usable, and why (absent, other key, unreadable).
    Miss(String),
}

/// Reads the value at `path` if it was stored under `key`. An absent file, another key, or a file
/// this version cannot read is a miss (the stage reruns and overwrites it), never an error.
pub fn load<T: DeserializeOwned>(path: &Path, key: &str) -> Lookup<T> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(_) => return Lookup::Miss("no earlier result".into()),
    };
    match serde_pickle::from_slice::<Cached<T>>(&bytes, serde_pickle::DeOptions::new()) {
        Ok(c) if c.format != CACHE_FORMAT => Lookup::Miss(format!(
            "{} was written by cache format {}, this is {CACHE_FORMAT}",
            path.display(),
            c.format
        )),
        Ok(c) if c.key != key => Lookup::Miss("config or inputs changed".into()),
        Ok(c) => Lookup::Hit(c.value),
        Err(e) => Lookup::Miss(format!("{} is unreadable ({e})", path.display())),
    }
}

/// Stores `value` under `key` at `path` atomically (creating the parent folder).
pub fn store<T: Serialize>(path: &Path, key: &str, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes = serde_pickle::to_vec(
        &Cached {
            format: CACHE_FORMAT,
            key: key.to_string(),
            value,
        },
        serde_pickle::SerOptions::new(),
    )
    .with_context(|| format!("encoding {}", path.display()))?;
    write_file(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Mode {
        Probe,
        Folds { k: usize },
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Value {
        name: String,
        score: f64,
        kappa: f64,
        sd: Option<f64>,
        modes: Vec<Mode>,
    }

    fn value() -> Value {
        Value {
            name: "wisdm".into(),
            score: 0.75,
            kappa: f64::NAN,
            sd: None,
            modes: vec![Mode::Probe, Mode::Folds { k: 5 }],
        }
    }

    #[test]
    fn a_value_comes_back_under_its_key_with_nan_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/result.pkl");
        let key = KeyBuilder::new().text("config", "a").finish();
        store(&path, &key, &value()).unwrap();
        match load::<Value>(&path, &key) {
            Lookup::Hit(v) => {
                assert_eq!(v.name, "wisdm");
                assert!((v.score - 0.75).abs() < 1e-15);
                assert!(v.kappa.is_nan());
                assert_eq!(v.sd, None);
                assert_eq!(v.modes, vec![Mode::Probe, Mode::Folds { k: 5 }]);
            }
            Lookup::Miss(why) => panic!("expected a hit, got a miss: {why}"),
        }
    }

    #[test]
    fn another_key_or_a_broken_file_is_a_miss_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.pkl");
        assert!(matches!(load::<Value>(&path, "k"), Lookup::Miss(_)));
        let key = KeyBuilder::new().text("config", "a").finish();
        store(&path, &key, &value()).unwrap();
        let other = KeyBuilder::new().text("config", "b").finish();
        assert!(matches!(load::<Value>(&path, &other), Lookup::Miss(w) if w.contains("changed")));
        std::fs::write(&path, b"not a pickle").unwrap();
        assert!(matches!(load::<Value>(&path, &key), Lookup::Miss(w) if w.contains("unreadable")));
    }

    #[test]
    fn keys_depend_on_labels_values_and_file_contents() {
        let a = KeyBuilder::new().text("a", "bc").finish();
        let b = KeyBuilder::new().text("ab", "c").finish();
        assert_ne!(a, b);
        assert_eq!(a, KeyBuilder::new().text("a", "bc").finish());
        assert_eq!(a.len(), 64);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ckpt");
        std::fs::write(&f, b"weights 1").unwrap();
        let k1 = KeyBuilder::new().file("ckpt", &f).unwrap().finish();
        std::fs::write(&f, b"weights 2").unwrap();
        let k2 = KeyBuilder::new().file("ckpt", &f).unwrap().finish();
        assert_ne!(k1, k2);
        assert!(KeyBuilder::new()
            .file("ckpt", &dir.path().join("absent"))
            .is_err());
        let w1 = KeyBuilder::new().floats("x", &[1.0, 2.0]).finish();
        let w2 = KeyBuilder::new().floats("x", &[1.0, 2.0000002]).finish();
        assert_ne!(w1, w2);
    }

    #[test]
    fn canonical_keys_ignore_field_order_but_not_values() {
        #[derive(Serialize)]
        struct Ab {
            a: u32,
            b: f64,
        }
        #[derive(Serialize)]
        struct Ba {
            b: f64,
            a: u32,
        }
        let ab = KeyBuilder::new()
            .value("cfg", &Ab { a: 1, b: 0.5 })
            .unwrap()
            .finish();
        let ba = KeyBuilder::new()
            .value("cfg", &Ba { b: 0.5, a: 1 })
            .unwrap()
            .finish();
        let other = KeyBuilder::new()
            .value("cfg", &Ab { a: 1, b: 0.25 })
            .unwrap()
            .finish();
        assert_eq!(ab, ba);
        assert_ne!(ab, other);
        assert_eq!(
            canonical_json(&serde_json::json!({"z": [1, {"y": 2, "x": 3}], "a": null})),
            r#"{"a":null,"z":[1,{"x":3,"y":2}]}"#
        );
    }
}
