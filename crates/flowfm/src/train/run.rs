//! Run directories: the resolved config, the seed, `metrics.jsonl` and atomically written
//! training checkpoints (safetensors: parameters, optimizer moments, EMA, plus JSON metadata).

use crate::lock::Lock;
use crate::output::write_file;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use flowfm_core::rng::RngState;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a training checkpoint records beside its tensors.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointMeta {
    /// Optimizer steps completed.
    pub step: u64,
    /// Seed of the run.
    pub seed: u64,
    /// Word position of the training RNG stream (for exact resumption).
    pub rng_word_pos: String,
    /// Fingerprint of the resolved config; resuming under another config is refused.
    pub config_fingerprint: String,
    /// flowfm version that wrote the file.
    pub flowfm_version: String,
    /// Last training loss.
    pub loss: f64,
    /// Fingerprint of the training data (the stores' fingerprints), when the caller gave one;
    /// resuming on other data is refused. Absent in checkpoints of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
}

impl CheckpointMeta {
    /// The RNG state recorded in the checkpoint.
    pub fn rng_state(&self) -> Result<RngState> {
        Ok(RngState {
            seed: self.seed,
            word_pos: self
                .rng_word_pos
                .parse()
                .context("checkpoint field `rng_word_pos`")?,
        })
    }
}

/// Saves named tensors with metadata atomically.
pub fn save_checkpoint(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
) -> Result<()> {
    let mut info = HashMap::new();
    info.insert(
        "flowfm_train_state".to_string(),
        serde_json::to_string(meta)?,
    );
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let bytes =
        safetensors::tensor::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(info))
            .map_err(|e| anyhow::anyhow!("serialising checkpoint {}: {e}", path.display()))?;
    write_file(path, &bytes)
}

/// Loads a checkpoint written by [`save_checkpoint`].
pub fn load_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, CheckpointMeta)> {
    let bytes = fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors checkpoint: {e}", path.display()))?;
    let Some(raw) = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("flowfm_train_state"))
    else {
        bail!(
            "{}: no `flowfm_train_state` metadata; not a flowfm training checkpoint",
            path.display()
        );
    };
    let meta: CheckpointMeta =
        serde_json::from_str(raw).with_context(|| format!("{}: metadata", path.display()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("{}: tensors", path.display()))?;
    Ok((tensors, meta))
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MetricsRecord {
    /// Optimizer step (1-based: the number of updates done).
    pub step: u64,
    /// Epoch (0-based).
    pub epoch: u64,
    /// Training loss of the step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Training throughput.
    pub windows_per_s: f64,
    /// Seconds since the start of the run (including earlier sessions when resumed).
    pub wall_s: f64,
    /// Extra named values (e.g. RankMe, validation metrics).
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub extra: HashMap<String, f64>,
}

/// A run directory. One opened for writing ([`RunDir::create`]) holds its lock (`.lock`) until
/// dropped, so two training processes never interleave their checkpoints and metrics.
pub struct RunDir {
    root: PathBuf,
    _lock: Option<Lock>,
}

impl RunDir {
    /// Creates (or reopens) a run directory for writing, taking its lock: a second writer gets
    /// an error naming the process that holds it.
    pub fn create(root: &Path) -> Result<Self> {
        fs::create_dir_all(root.join("checkpoints"))
            .with_context(|| format!("creating run directory {}", root.display()))?;
        let lock = Lock::acquire(
            &root.join(".lock"),
            &format!("run directory {}", root.display()),
        )?;
        // Temporary files of writers that were killed (ours, by prefix and dead PID) go now.
        for dir in [root.to_path_buf(), root.join("checkpoints")] {
            for f in flowfm_core::fs::remove_stale_temp_files(&dir)? {
                eprintln!("flowfm: removed {} (left by a killed writer)", f.display());
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// Opens an existing run directory to read it (no lock taken, nothing written).
    pub fn open_read(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            anyhow::bail!("{}: no such run directory", root.display());
        }
        Ok(Self {
            root: root.to_path_buf(),
            _lock: None,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Path of the latest checkpoint.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.root.join("checkpoints").join("last.safetensors")
    }

    /// Path of the final model (written at the end of training).
    pub fn final_checkpoint(&self) -> PathBuf {
        self.root.join("checkpoints").join("final.safetensors")
    }

    /// Writes the resolved config and the seed.
    pub fn write_config(&self, resolved_toml: &str, seed: u64) -> Result<()> {
        write_file(&self.root.join("config.toml"), resolved_toml.as_bytes())?;
        write_file(&self.root.join("seed"), format!("{seed}\n").as_bytes())
    }

    /// Appends a record to `metrics.jsonl`.
    pub fn append_metrics(&self, rec: &MetricsRecord) -> Result<()> {
        let path = self.root.join("metrics.jsonl");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(rec)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads `metrics.jsonl`, keeping only records up to `max_step` (used after a resume so that
    /// records of steps that were lost with an interrupted session are not duplicated).
    pub fn read_metrics(&self) -> Result<Vec<MetricsRecord>> {
        let path = self.root.join("metrics.jsonl");
        let Ok(text) = fs::read_to_string(&path) else {
            return Ok(Vec::new());
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{}:{}: bad metrics record", path.display(), i + 1))
            })
            .collect()
    }

    /// Drops the records with `step > max_step` from `metrics.jsonl`. Kept lines are copied
    /// verbatim (re-serialising would change floats in their last digit), and a file with
    /// nothing to drop is left untouched.
    pub fn truncate_metrics(&self, max_step: u64) -> Result<()> {
        let path = self.root.join("metrics.jsonl");
        let Ok(text) = fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut kept = String::with_capacity(text.len());
        let mut dropped = false;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: MetricsRecord = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: bad metrics record", path.display(), i + 1))?;
            if r.step <= max_step {
                kept.push_str(line);
                kept.push('\n');
            } else {
                dropped = true;
            }
        }
        if dropped || kept.len() != text.len() {
            write_file(&path, kept.as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn checkpoint_round_trips_tensors_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let t = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let meta = CheckpointMeta {
            step: 7,
            seed: 3,
            rng_word_pos: "12345678901234567890".into(),
            config_fingerprint: "abc".into(),
            flowfm_version: "0.1.0".into(),
            loss: 0.5,
            data_fingerprint: Some("stores-123".into()),
        };
        save_checkpoint(&path, &[("a.weight".into(), t.clone())], &meta).unwrap();
        let (tensors, back) = load_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.rng_state().unwrap().word_pos, 12345678901234567890u128);
        assert_eq!(
            tensors["a.weight"]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            t.to_vec2::<f32>().unwrap()
        );
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_truncated_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let meta = CheckpointMeta {
            step: 1,
            seed: 0,
            rng_word_pos: "0".into(),
            config_fingerprint: String::new(),
            flowfm_version: String::new(),
            loss: 0.0,
            data_fingerprint: None,
        };
        save_checkpoint(
            &path,
            &[(
                "x".into(),
                Tensor::zeros(100, DType::F32, &Device::Cpu).unwrap(),
            )],
            &meta,
        )
        .unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_checkpoint(&path, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ck.safetensors"), "{err}");
    }

    #[test]
    fn metrics_truncation_drops_records_after_the_resume_point() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        for step in 1..=5 {
            run.append_metrics(&MetricsRecord {
                step,
                epoch: 0,
                loss: 1.0 / step as f64,
                lr: 0.1,
                grad_norm: 1.0,
                windows_per_s: 10.0,
                wall_s: step as f64,
                extra: HashMap::new(),
            })
            .unwrap();
        }
        run.truncate_metrics(3).unwrap();
        let steps: Vec<u64> = run.read_metrics().unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![1, 2, 3]);
    }

    #[test]
    fn a_run_directory_has_one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunDir::create(dir.path()).unwrap();
        let err = match RunDir::create(dir.path()) {
            Ok(_) => panic!("a second writer got the run directory"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("is in use by process"), "{err}");
        // Readers need no lock.
        assert!(RunDir::open_read(dir.path()).is_ok());
        drop(first);
        assert!(RunDir::create(dir.path()).is_ok());
    }
}
