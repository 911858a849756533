//! Safetensors checkpoints of a `VarMap`: tensor names equal parameter paths, the model config
//! (JSON) and this crate's version live in the file's `__metadata__`, files are written
//! atomically (temp file in the same directory, then rename), and loading checks every name and
//! shape before touching a variable.

use crate::error::ModelError;
use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
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
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temp file beside `path`, syncs it and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| ModelError::checkpoint(path, "the path has no file name"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: never leave a half-written temp file behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
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
