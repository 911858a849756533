//! Safetensors checkpoints of a `VarMap`: tensor names equal parameter paths, the model config
//! (JSON) and this crate's version live in the file's `__metadata__`, files are written
//! atomically (through `flowfm_core::fs`) with a canonical header (sorted keys, so equal models
//! give byte-identical files), and loading checks every name and shape before touching a
//! variable.

use crate::error::ModelError;
use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Metadata key holding the config as JSON.
pub const CONFIG_KEY: &str = "flowfm.config";
/// Metadata key holding the version of `flowfm-models` that wrote the file.
pub const VERSION_KEY: &str = "flowfm.crate_version";
/// Metadata key holding the checkpoint format version.
pub const FORMAT_KEY: &str = "flowfm.format";
/// The checkpoint format written by this crate.
pub const FORMAT_VERSION: &str = "1";
/// This crate's version, as stored in checkpoints.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `__metadata__` of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMetadata {
    /// The config, as JSON.
    pub config_json: String,
    /// The version of `flowfm-models` that wrote the file.
    pub crate_version: String,
    /// Every other metadata entry (e.g. a training step written by the trainer).
    pub extra: BTreeMap<String, String>,
}

impl CheckpointMetadata {
    /// The config, deserialised.
    pub fn config<C: DeserializeOwned>(&self) -> Result<C, ModelError> {
        serde_json::from_str(&self.config_json).map_err(|e| ModelError::InvalidConfig {
            field: CONFIG_KEY.into(),
            reason: format!("stored config does not parse: {e}"),
        })
    }
}

fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, candle_core::Var)>, ModelError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    let mut vars: Vec<(String, candle_core::Var)> =
        data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Writes every variable of `varmap` (parameters and buffers) with `config` and this crate's
/// version in the metadata.
pub fn save_checkpoint<C: Serialize>(
    varmap: &VarMap,
    config: &C,
    path: &Path,
) -> Result<(), ModelError> {
    save_checkpoint_with_metadata(varmap, config, &BTreeMap::new(), path)
}

/// As [`save_checkpoint`], with extra metadata entries (keys must not start with `flowfm.`).
pub fn save_checkpoint_with_metadata<C: Serialize>(
    varmap: &VarMap,
    config: &C,
    extra: &BTreeMap<String, String>,
    path: &Path,
) -> Result<(), ModelError> {
    let config_json = serde_json::to_string(config)
        .map_err(|e| ModelError::checkpoint(path, format!("config does not serialise: {e}")))?;
    let mut metadata: HashMap<String, String> = HashMap::new();
    for (k, v) in extra {
        if k.starts_with("flowfm.") {
            return Err(ModelError::checkpoint(
                path,
                format!("extra metadata key `{k}` uses the reserved prefix `flowfm.`"),
            ));
        }
        metadata.insert(k.clone(), v.clone());
    }
    metadata.insert(CONFIG_KEY.into(), config_json);
    metadata.insert(VERSION_KEY.into(), CRATE_VERSION.into());
    metadata.insert(FORMAT_KEY.into(), FORMAT_VERSION.into());
    let tensors: Vec<(String, Tensor)> = sorted_vars(varmap)?
        .into_iter()
        .map(|(n, v)| {
            v.as_tensor()
                .to_device(&Device::Cpu)
                .and_then(|t| t.contiguous())
                .map(|t| (n, t))
        })
        .collect::<candle_core::Result<_>>()?;
    let bytes =
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
            .map_err(|e| ModelError::checkpoint(path, format!("serialisation failed: {e}")))?;
    let bytes = canonicalise_header(bytes)
        .map_err(|e| ModelError::checkpoint(path, format!("serialisation failed: {e}")))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` through the workspace's one atomic-write helper (temp file beside `path`, fsync,
/// rename; the temp file is removed on every error path).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    flowfm_core::fs::write_atomic(path, bytes).map_err(|e| ModelError::Io {
        path: e.path,
        source: std::io::Error::new(e.source.kind(), format!("{}: {}", e.action, e.source)),
    })
}

/// `value` as JSON with the keys of every object in sorted order (a canonical form: equal values
/// give equal bytes, whatever order a `HashMap` produced them in).
fn canonical_json(value: &serde_json::Value, out: &mut String) -> Result<(), serde_json::Error> {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k)?);
                out.push(':');
                canonical_json(&map[k], out)?;
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar)?),
    }
    Ok(())
}

/// Rewrites the JSON header of a serialised safetensors buffer in canonical form (sorted keys,
/// including those of `__metadata__`, which safetensors writes in `HashMap` order), so two
/// checkpoints of equal tensors and metadata are equal byte for byte. The tensor data and its
/// offsets (relative to the end of the header) are unchanged.
fn canonicalise_header(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    const N_LEN: usize = 8;
    let n = bytes
        .get(..N_LEN)
        .and_then(|b| <[u8; N_LEN]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or("buffer shorter than the header length")?;
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(N_LEN))
        .filter(|&e| e <= bytes.len())
        .ok_or("header length runs past the buffer")?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[N_LEN..end])
        .map_err(|e| format!("header is not JSON: {e}"))?;
    let mut text = String::new();
    canonical_json(&header, &mut text).map_err(|e| format!("header does not serialise: {e}"))?;
    let mut header_bytes = text.into_bytes();
    // safetensors pads the header with spaces to a multiple of 8 bytes (data alignment).
    header_bytes.resize(header_bytes.len().next_multiple_of(N_LEN), b' ');
    let mut out = Vec::with_capacity(N_LEN + header_bytes.len() + bytes.len() - end);
    out.extend_from_slice(&(header_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

fn parse_metadata(
    path: &Path,
    metadata: Option<&HashMap<String, String>>,
) -> Result<CheckpointMetadata, ModelError> {
    let Some(md) = metadata else {
        return Err(ModelError::checkpoint(
            path,
            "no __metadata__ (not a flowfm checkpoint)",
        ));
    };
    let get = |key: &str| {
        md.get(key)
            .cloned()
            .ok_or_else(|| ModelError::checkpoint(path, format!("metadata key `{key}` is missing")))
    };
    let format = get(FORMAT_KEY)?;
    if format != FORMAT_VERSION {
        return Err(ModelError::checkpoint(
            path,
            format!("format version `{format}` is not supported (expected `{FORMAT_VERSION}`)"),
        ));
    }
    Ok(CheckpointMetadata {
        config_json: get(CONFIG_KEY)?,
        crate_version: get(VERSION_KEY)?,
        extra: md
            .iter()
            .filter(|(k, _)| !k.starts_with("flowfm."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads only the metadata of a checkpoint (to rebuild the model from its stored config).
pub fn read_checkpoint_metadata(path: &Path) -> Result<CheckpointMetadata, ModelError> {
    let bytes = read_file(path)?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| ModelError::checkpoint(path, format!("not a safetensors file: {e}")))?;
    parse_metadata(path, md.metadata().as_ref())
}

/// Loads a checkpoint into the variables of `varmap` (built by constructing the model).
///
/// Every name and shape is checked before any variable is written: a missing tensor, an extra
/// tensor or a shape mismatch is an error naming the first offending tensor in name order
/// (with its expected and found shapes) and the number of problems. Values are converted to
/// each variable's dtype and device and written in place, so models built on the `VarMap`
/// (and their detached twins) see them.
pub fn load_checkpoint(varmap: &VarMap, path: &Path) -> Result<CheckpointMetadata, ModelError> {
    load(varmap, None, path)
}

/// As [`load_checkpoint`], and also checks that the stored config equals `expected`; the error
/// names the first differing config field (tensors are checked first, so a shape change is
/// reported by tensor name). Nothing is written unless both checks pass.
pub fn load_checkpoint_checked<C: Serialize>(
    varmap: &VarMap,
    expected: &C,
    path: &Path,
) -> Result<CheckpointMetadata, ModelError> {
    let expected = serde_json::to_value(expected)
        .map_err(|e| ModelError::checkpoint(path, format!("config does not serialise: {e}")))?;
    load(varmap, Some(&expected), path)
}

fn load(
    varmap: &VarMap,
    expected_config: Option<&serde_json::Value>,
    path: &Path,
) -> Result<CheckpointMetadata, ModelError> {
    let not_safetensors = |e: safetensors::SafeTensorError| {
        ModelError::checkpoint(path, format!("not a safetensors file: {e}"))
    };
    let bytes = read_file(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let metadata = parse_metadata(path, md.metadata().as_ref())?;

    let vars = sorted_vars(varmap)?;
    let expected: BTreeMap<&str, Vec<usize>> = vars
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_tensor().dims().to_vec()))
        .collect();
    let found: BTreeMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .map(|(n, view)| (n, view.shape().to_vec()))
        .collect();
    if let Some(problem) = first_tensor_mismatch(&expected, &found) {
        return Err(ModelError::checkpoint(
            path,
            format!("does not fit the model: {problem}"),
        ));
    }
    if let Some(expected) = expected_config {
        let stored: serde_json::Value = serde_json::from_str(&metadata.config_json)
            .map_err(|e| ModelError::checkpoint(path, format!("stored config is not JSON: {e}")))?;
        if let Some(d) = first_difference("config", expected, &stored) {
            return Err(ModelError::checkpoint(
                path,
                format!("config mismatch at {d}"),
            ));
        }
    }
    for (name, var) in &vars {
        let view = st
            .tensor(name)
            .map_err(|e| ModelError::checkpoint(path, format!("tensor `{name}`: {e}")))?;
        let t = view
            .load(&Device::Cpu)
            .and_then(|t| t.to_dtype(var.dtype()))
            .and_then(|t| t.to_device(var.device()))
            .map_err(|e| ModelError::checkpoint(path, format!("tensor `{name}`: {e}")))?;
        var.set(&t)?;
    }
    Ok(metadata)
}

/// The first (in name order) missing, extra or mis-shaped tensor, with the number of problems.
fn first_tensor_mismatch(
    expected: &BTreeMap<&str, Vec<usize>>,
    found: &BTreeMap<String, Vec<usize>>,
) -> Option<String> {
    let mut names: Vec<&str> = expected
        .keys()
        .copied()
        .chain(found.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let problems: Vec<String> = names
        .into_iter()
        .filter_map(|name| match (expected.get(name), found.get(name)) {
            (Some(e), Some(f)) if e != f => Some(format!(
                "tensor `{name}`: expected shape {e:?}, found shape {f:?}"
            )),
            (Some(e), None) => Some(format!(
                "tensor `{name}` (expected shape {e:?}) is missing from the file"
            )),
            (None, Some(f)) => Some(format!(
                "tensor `{name}` (shape {f:?}) in the file is not a variable of the model"
            )),
            _ => None,
        })
        .collect();
    let first = problems.first()?;
    Some(if problems.len() > 1 {
        format!("{first} ({} mismatching tensors in total)", problems.len())
    } else {
        first.clone()
    })
}

/// The path and values of the first difference between two JSON values.
fn first_difference(
    at: &str,
    expected: &serde_json::Value,
    found: &serde_json::Value,
) -> Option<String> {
    use serde_json::Value;
    match (expected, found) {
        (Value::Object(e), Value::Object(f)) => {
            let mut keys: Vec<&String> = e.keys().chain(f.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (e.get(k), f.get(k)) {
                (Some(a), Some(b)) => first_difference(&format!("{at}.{k}"), a, b),
                (Some(a), None) => Some(format!("{at}.{k}: expected {a}, missing in the file")),
                (None, Some(b)) => Some(format!("{at}.{k}: not expected, found {b}")),
                (None, None) => None,
            })
        }
        (Value::Array(e), Value::Array(f)) if e.len() == f.len() => e
            .iter()
            .zip(f)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(&format!("{at}[{i}]"), a, b)),
        (a, b) if a == b => None,
        (a, b) => Some(format!("{at}: expected {a}, found {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn varmap() -> VarMap {
        let vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        vb.get_with_hints((3, 4), "b.weight", candle_nn::Init::Const(0.5))
            .unwrap();
        vb.get_with_hints(5, "a.bias", candle_nn::Init::Const(-1.25))
            .unwrap();
        vm
    }

    /// Enough metadata entries that two `HashMap`s almost surely iterate them differently.
    fn extra() -> BTreeMap<String, String> {
        (0..32)
            .map(|i| (format!("key{i:02}"), format!("value {i}")))
            .collect()
    }

    #[test]
    fn identical_saves_give_byte_identical_files() {
        let dir = tempfile::tempdir().unwrap();
        let vm = varmap();
        let cfg = serde_json::json!({"width": 3, "name": "x", "blocks": [1, 2]});
        // Whole files compared byte for byte (stronger than comparing their sha256).
        let mut files = Vec::new();
        for i in 0..4 {
            let p = dir.path().join(format!("c{i}.safetensors"));
            save_checkpoint_with_metadata(&vm, &cfg, &extra(), &p).unwrap();
            files.push(std::fs::read(&p).unwrap());
        }
        for (i, f) in files.iter().enumerate() {
            assert!(f == &files[0], "save {i} differs from save 0");
        }
    }

    #[test]
    fn metadata_keys_are_written_in_sorted_order_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let vm = varmap();
        save_checkpoint_with_metadata(&vm, &serde_json::json!({"w": 1}), &extra(), &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "header must stay 8-byte aligned");
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        let mut keys: Vec<String> = extra().into_keys().collect();
        keys.extend([CONFIG_KEY, FORMAT_KEY, VERSION_KEY].map(String::from));
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| header.find(&format!("\"{k}\":")).unwrap())
            .collect();
        let mut by_position = keys.clone();
        by_position.sort_by_key(|k| positions[keys.iter().position(|x| x == k).unwrap()]);
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(by_position, sorted, "{header}");

        // The rewritten header still loads: same tensors, same metadata.
        let fresh = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&fresh, DType::F32, &Device::Cpu);
        vb.get_with_hints((3, 4), "b.weight", candle_nn::Init::Const(0.0))
            .unwrap();
        vb.get_with_hints(5, "a.bias", candle_nn::Init::Const(0.0))
            .unwrap();
        let md = load_checkpoint(&fresh, &p).unwrap();
        assert_eq!(md.extra, extra());
        let data = fresh.data().lock().unwrap();
        let w: Vec<f32> = data["b.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = data["a.bias"].as_tensor().to_vec1().unwrap();
        assert_eq!(w, vec![0.5; 12]);
        assert_eq!(b, vec![-1.25; 5]);
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_file_and_keeps_the_old_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        std::fs::write(&p, b"old").unwrap();
        let bad = BTreeMap::from([("flowfm.x".to_string(), "reserved".to_string())]);
        assert!(save_checkpoint_with_metadata(&varmap(), &1, &bad, &p).is_err());
        // A target that is a directory: the rename fails after the temp file was written.
        let as_dir = dir.path().join("d.safetensors");
        std::fs::create_dir(&as_dir).unwrap();
        std::fs::write(as_dir.join("inside"), b"x").unwrap();
        let e = save_checkpoint(&varmap(), &1, &as_dir).unwrap_err();
        assert!(e.to_string().contains("d.safetensors"), "{e}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["c.safetensors", "d.safetensors"]);
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }
}
