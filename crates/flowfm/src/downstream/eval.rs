//! `flowfm eval`: downstream protocols from a TOML config, for several encoders and comparators
//! on the same subject-disjoint folds, written as `results.json` and `results.md`.
//!
//! ```toml
//! stores = ["stores/adl_hmp5.h5"]
//! output_dir = "eval/adl"
//! modes = ["linear_probe", "knn", "fine_tune"]
//! supervised = true       # the same encoder from random init, fine-tuned
//! random_forest = true    # hand-crafted features
//!
//! [encoders]
//! flowfm = "runs/flowfm/encoder.safetensors"
//! ssl_multitask = "runs/ssl_multitask/encoder.safetensors"
//!
//! [downstream]            # flowfm::finetune::DownstreamConfig
//! protocol = { kind = "loso" }
//! max_epochs = 20
//! ```
//! Relative paths are taken from the directory of the config file.

use super::config::{DownstreamConfig, EncoderSource, Mode};
use super::protocol::{run_protocol, DatasetInfo, ProtocolOptions, ProtocolResult};
use crate::output::write_file;
use anyhow::{bail, Context, Result};
use flowfm_data::store::WindowStore;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An evaluation config as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalFile {
    /// Labelled window stores, one table block each.
    pub stores: Vec<PathBuf>,
    /// Where `results.json` and `results.md` go.
    pub output_dir: PathBuf,
    /// Modes run for every encoder (default: the `downstream.mode`).
    #[serde(default)]
    pub modes: Vec<Mode>,
    /// Pretrained encoders by name.
    #[serde(default)]
    pub encoders: BTreeMap<String, PathBuf>,
    /// Also fine-tune the first encoder's architecture from random initialisation.
    #[serde(default)]
    pub supervised: bool,
    /// Also run the random forest on hand-crafted features.
    #[serde(default)]
    pub random_forest: bool,
    /// Training and protocol settings.
    #[serde(default)]
    pub downstream: DownstreamConfig,
}

impl EvalFile {
    /// Reads, parses (unknown keys are errors) and validates a config; relative paths are
    /// resolved against its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut f: EvalFile =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        f.stores = f.stores.iter().map(resolve).collect();
        f.output_dir = resolve(&f.output_dir);
        for p in f.encoders.values_mut() {
            *p = resolve(p);
        }
        f.validate()?;
        Ok(f)
    }

    /// Checks the fields; errors name them.
    pub fn validate(&self) -> Result<()> {
        if self.stores.is_empty() {
            bail!("invalid `stores`: give at least one window store");
        }
        if self.encoders.is_empty() && !self.random_forest {
            bail!("invalid `encoders`: give at least one encoder (or set random_forest = true)");
        }
        if self.supervised && self.encoders.is_empty() {
            bail!("invalid `supervised`: needs an encoder in `encoders` to take its architecture from");
        }
        if self.modes.contains(&Mode::RandomForest) {
            bail!("invalid `modes`: use `random_forest = true` for the forest, modes are for encoders");
        }
        self.downstream.validate()?;
        Ok(())
    }
}

/// Runs every (store, encoder, mode) and the comparators; writes the results.
pub fn run_eval(f: &EvalFile, verbose: bool) -> Result<Vec<ProtocolResult>> {
    let modes = if f.modes.is_empty() {
        vec![f.downstream.mode]
    } else {
        f.modes.clone()
    };
    let mut results = Vec::new();
    for store_path in &f.stores {
        let store = Arc::new(
            WindowStore::open(store_path)
                .with_context(|| format!("opening {}", store_path.display()))?,
        );
        let info = DatasetInfo::of_store(&store);
        let mut jobs: Vec<(String, EncoderSource, Mode)> = Vec::new();
        for (name, path) in &f.encoders {
            for &m in &modes {
                jobs.push((name.clone(), EncoderSource::Pretrained(path.clone()), m));
            }
        }
        if f.supervised {
            if let Some(path) = f.encoders.values().next() {
                if let Some(cfg) = EncoderSource::Pretrained(path.clone()).config()? {
                    jobs.push((
                        "supervised".into(),
                        EncoderSource::Scratch(cfg),
                        Mode::FineTune,
                    ));
                }
            }
        }
        if f.random_forest {
            jobs.push((
                "random_forest".into(),
                EncoderSource::None,
                Mode::RandomForest,
            ));
        }
        for (name, encoder, mode) in jobs {
            let cfg = DownstreamConfig {
                mode,
                ..f.downstream.clone()
            };
            let label = if mode == Mode::RandomForest {
                name.clone()
            } else {
                format!("{name} ({})", mode.name())
            };
            let mut opts = ProtocolOptions::new(info.clone(), label);
            opts.verbose = verbose;
            let r = run_protocol(store.clone(), &encoder, &cfg, &opts)
                .with_context(|| format!("{} / {name} / {}", store_path.display(), mode.name()))?;
            if verbose {
                eprintln!(
                    "{} {name} {}: macro F1 {:.3}",
                    info.name,
                    mode.name(),
                    r.mean_macro_f1()
                );
            }
            results.push(r);
        }
    }
    std::fs::create_dir_all(&f.output_dir)
        .with_context(|| format!("creating {}", f.output_dir.display()))?;
    let json: Vec<serde_json::Value> = results
        .iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<_, _>>()?;
    write_file(
        &f.output_dir.join("results.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let mut md = ProtocolResult::markdown_header();
    if !md.ends_with('\n') {
        md.push('\n');
    }
    for r in &results {
        let row = r.markdown_row()?;
        md.push_str(&row);
        if !row.ends_with('\n') {
            md.push('\n');
        }
    }
    write_file(&f.output_dir.join("results.md"), md.as_bytes())?;
    Ok(results)
}
