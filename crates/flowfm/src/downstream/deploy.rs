//! A saved activity classifier: fine-tune an encoder with the SSL-Wearables head on every
//! labelled window of a store (a subject-wise validation split for early stopping), save it as a
//! model folder (`encoder.safetensors`, `head.safetensors`, `model.json`), load it back and
//! predict class probabilities for windows.
//!
//! `model.json` records what the model reads (class names, window length, sample rate, channels,
//! normalisation) and the training data's fingerprint, plus the sha256 of both weight files: a
//! folder with a missing or altered file is an error naming the file. A model folder is written
//! under a temporary name and renamed into place only when complete.

use super::config::{DownstreamConfig, EncoderSource, Mode};
use super::finetune::{finetune_fold_with_model, FoldSplit};
use crate::encode::load_encoder;
use crate::recording::{for_each_batch, stream_config, Expect};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::SeededRng;
use flowfm_data::batch::WindowSource;
use flowfm_data::readers::CsvFolderSpec;
use flowfm_data::split::{validation_split, SubjectSet};
use flowfm_models::checkpoint::load_checkpoint_checked;
use flowfm_models::heads::{Classifier, ClassifierConfig};
use flowfm_models::HarNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version of the model folder layout.
pub const MODEL_FORMAT: u32 = 1;

/// What a saved classifier reads and how it was made (`model.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Layout version ([`MODEL_FORMAT`]).
    pub format: u32,
    /// Class names, in the order of the probabilities.
    pub class_names: Vec<String>,
    /// Samples per window.
    pub window_len: usize,
    /// Sample rate of the windows in Hz.
    pub sample_rate_hz: f64,
    /// Channel names, in order.
    pub channels: Vec<String>,
    /// How windows are normalised before the encoder.
    pub normalisation: String,
    /// Fingerprint of the training store.
    pub training_fingerprint: String,
    /// Training store (as given).
    pub training_store: String,
    /// Labelled windows the model was trained on (validation windows excluded).
    pub training_windows: usize,
    /// Subjects used for training (the rest of the store's subjects validated).
    pub training_subjects: Vec<i64>,
    /// Subjects of the validation split (early stopping).
    pub validation_subjects: Vec<i64>,
    /// Macro F1 on the validation windows with the saved weights.
    pub validation_macro_f1: f64,
    /// sha256 of `encoder.safetensors`.
    pub encoder_sha256: String,
    /// sha256 of `head.safetensors`.
    pub head_sha256: String,
}

/// What the training data looks like, for the card.
#[derive(Clone, Debug)]
pub struct TrainingData {
    /// Class names.
    pub class_names: Vec<String>,
    /// Sample rate in Hz.
    pub sample_rate_hz: f64,
    /// Channel names.
    pub channels: Vec<String>,
    /// Fingerprint of the store.
    pub fingerprint: String,
    /// The store as given.
    pub store: String,
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Fine-tunes `encoder` with a fresh head on every labelled window of `source` (about
/// `cfg.val_fraction` of its subjects validate, for early stopping) and saves the model to `dir`.
/// `dir` must not exist yet.
pub fn train_and_save<S: WindowSource + 'static>(
    source: &Arc<S>,
    data: &TrainingData,
    encoder: &EncoderSource,
    cfg: &DownstreamConfig,
    dir: &Path,
) -> Result<ModelCard> {
    ensure!(
        cfg.mode == Mode::FineTune,
        "a saved classifier is fine-tuned (mode fine_tune), got {}",
        cfg.mode.name()
    );
    if dir.exists() {
        bail!(
            "--save {}: already exists; give a new folder (a model is never written over another)",
            dir.display()
        );
    }
    let num_classes = data.class_names.len();
    ensure!(
        num_classes >= 2,
        "the store has {num_classes} classes; a classifier needs at least 2"
    );
    let labels = source.labels();
    let labelled: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] >= 0).collect();
    ensure!(!labelled.is_empty(), "the store has no labelled window");
    let all = SubjectSet {
        subjects: {
            let mut s: Vec<i64> = labelled.iter().map(|&i| source.subjects()[i]).collect();
            s.sort_unstable();
            s.dedup();
            s
        },
        indices: labelled.clone(),
    };
    let (train, val) = validation_split(source.subjects(), &all, cfg.val_fraction, cfg.seed)
        .context("splitting subjects for early stopping (needs at least 2 labelled subjects)")?;
    // The validation windows double as the "test" side of the fold: their predictions give the
    // validation score recorded on the card.
    let split = FoldSplit {
        train: train.indices.clone(),
        val: val.indices.clone(),
        test: val.indices.clone(),
    };
    let rng = SeededRng::new(cfg.seed).derive("deploy");
    let (outcome, model) = finetune_fold_with_model(
        source,
        &split,
        encoder,
        num_classes,
        cfg,
        &rng,
        &Device::Cpu,
    )?;
    let f1 = flowfm_eval::ConfusionMatrix::from_predictions(
        &outcome.truth,
        &outcome.predicted,
        num_classes,
    )?
    .macro_f1();
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .context("--save needs a folder name")?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<ModelCard> {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        model.save(&tmp)?;
        let card = ModelCard {
            format: MODEL_FORMAT,
            class_names: data.class_names.clone(),
            window_len: source.window_len(),
            sample_rate_hz: data.sample_rate_hz,
            channels: data.channels.clone(),
            normalisation: "none: windows in g (accelerometer) as prepared".into(),
            training_fingerprint: data.fingerprint.clone(),
            training_store: data.store.clone(),
            training_windows: train.indices.len(),
            training_subjects: train.subjects.clone(),
            validation_subjects: val.subjects.clone(),
            validation_macro_f1: f1,
            encoder_sha256: sha256_file(&tmp.join("encoder.safetensors"))?,
            head_sha256: sha256_file(&tmp.join("head.safetensors"))?,
        };
        crate::output::write_file(
            &tmp.join("model.json"),
            serde_json::to_string_pretty(&card)?.as_bytes(),
        )?;
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
        Ok(card)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// A saved classifier, loaded.
pub struct SavedClassifier {
    /// What it reads.
    pub card: ModelCard,
    /// The fine-tuned encoder (evaluation mode through `encode_detached`).
    pub encoder: HarNet,
    /// The head.
    pub head: Classifier,
}

impl SavedClassifier {
    /// Loads a model folder written by [`train_and_save`], checking every file against the card.
    pub fn load(dir: &Path) -> Result<Self> {
        let card_path = dir.join("model.json");
        let text = std::fs::read_to_string(&card_path).with_context(|| {
            format!("{}: not a saved classifier (no model.json)", dir.display())
        })?;
        let card: ModelCard = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid model card", card_path.display()))?;
        ensure!(
            card.format == MODEL_FORMAT,
            "{}: format {} (this flowfm reads {MODEL_FORMAT})",
            card_path.display(),
            card.format
        );
        for (file, want) in [
            ("encoder.safetensors", &card.encoder_sha256),
            ("head.safetensors", &card.head_sha256),
        ] {
            let p = dir.join(file);
            if !p.is_file() {
                bail!("{}: missing (the model folder is incomplete)", p.display());
            }
            let got = sha256_file(&p)?;
            if &got != want {
                bail!(
                    "{}: sha256 {got} does not match {want} recorded in {} (the file was altered or replaced)",
                    p.display(),
                    card_path.display()
                );
            }
        }
        let device = Device::Cpu;
        let encoder = load_encoder(&dir.join("encoder.safetensors"), &device)?;
        let meta =
            flowfm_models::checkpoint::read_checkpoint_metadata(&dir.join("head.safetensors"))?;
        let head_cfg: ClassifierConfig = meta.config()?;
        let vm = VarMap::new();
        let head = Classifier::new(
            head_cfg.clone(),
            seeded_var_builder(&vm, 0, DType::F32, &device),
        )?;
        load_checkpoint_checked(&vm, &head_cfg, &dir.join("head.safetensors"))?;
        ensure!(
            head_cfg.classes == card.class_names.len(),
            "{}: the head predicts {} classes, the card names {}",
            dir.display(),
            head_cfg.classes,
            card.class_names.len()
        );
        Ok(Self {
            card,
            encoder,
            head,
        })
    }

    /// An error unless windows of `window_len` samples at `rate_hz` with `channels` are what the
    /// model reads (never a silent resample of the wrong thing).
    pub fn check_input(
        &self,
        what: &str,
        window_len: usize,
        rate_hz: f64,
        channels: usize,
    ) -> Result<()> {
        let c = &self.card;
        if window_len != c.window_len
            || (rate_hz - c.sample_rate_hz).abs() > 1e-6 * c.sample_rate_hz
            || channels != c.channels.len()
        {
            bail!(
                "{what}: windows of {window_len} samples at {rate_hz} Hz with {channels} channels, but the model reads {} samples at {} Hz with {} channels ({})",
                c.window_len,
                c.sample_rate_hz,
                c.channels.len(),
                c.channels.join(", ")
            );
        }
        Ok(())
    }

    /// Class probabilities of a batch of windows.
    ///
    /// # Shapes
    /// - `x`: `(N, channels, window_len)`; returns `N` rows of `classes` probabilities.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        let z = self.encoder.encode_detached(x)?;
        let logits = self.head.forward(&z)?;
        let p = candle_nn::ops::softmax_last_dim(&logits)?;
        Ok(p.to_vec2::<f32>()?)
    }
}

/// One predicted window of a timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineRow {
    /// Start of the window in seconds.
    pub start_s: f64,
    /// End of the window in seconds.
    pub end_s: f64,
    /// Class probabilities (order of the card's class names).
    pub probabilities: Vec<f32>,
}

impl SavedClassifier {
    /// Predicts the windows `indices` of `source` in batches of `batch`; `start_s[i]` is the
    /// start time of window `i` of the source.
    pub fn predict_source<S: WindowSource + ?Sized>(
        &self,
        source: &S,
        indices: &[usize],
        start_s: &[f64],
        batch: usize,
    ) -> Result<Vec<TimelineRow>> {
        let (c, l) = (source.channels(), source.window_len());
        let secs = l as f64 / self.card.sample_rate_hz;
        let mut rows = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(batch.max(1)) {
            let x = Tensor::from_vec(
                source.read_windows(chunk)?,
                (chunk.len(), c, l),
                &Device::Cpu,
            )?;
            for (&i, p) in chunk.iter().zip(self.predict(&x)?) {
                let t0 = start_s.get(i).copied().unwrap_or(i as f64 * secs);
                rows.push(TimelineRow {
                    start_s: t0,
                    end_s: t0 + secs,
                    probabilities: p,
                });
            }
        }
        Ok(rows)
    }

    /// The timeline's CSV header: `start_s,end_s,predicted,p_<class>...`.
    pub fn timeline_header(&self) -> String {
        let mut out = String::from("start_s,end_s,predicted");
        for c in &self.card.class_names {
            out.push_str(&format!(",p_{}", c.replace([',', '\n', '"'], "_")));
        }
        out.push('\n');
        out
    }

    /// The timeline's CSV rows, one per window: start, end, predicted class, every probability.
    pub fn timeline_rows(&self, rows: &[TimelineRow]) -> String {
        let mut out = String::new();
        for r in rows {
            let best = (r.probabilities.iter().enumerate())
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k)
                .unwrap_or(0);
            let name = self
                .card
                .class_names
                .get(best)
                .map(String::as_str)
                .unwrap_or("?");
            out.push_str(&format!(
                "{:.3},{:.3},{}",
                r.start_s,
                r.end_s,
                name.replace([',', '\n', '"'], "_")
            ));
            for p in &r.probabilities {
                out.push_str(&format!(",{p:.5}"));
            }
            out.push('\n');
        }
        out
    }

    /// The whole timeline as CSV: the header, then the rows.
    pub fn timeline_csv(&self, rows: &[TimelineRow]) -> String {
        self.timeline_header() + &self.timeline_rows(rows)
    }
}

impl SavedClassifier {
    /// Streams the recording at `rec` (read as `spec` says) through the classifier and writes the
    /// timeline CSV to `output` as it goes, atomically (nothing at `output` unless it completes).
    /// Returns the number of windows.
    pub fn predict_recording(
        &self,
        rec: &Path,
        spec: &CsvFolderSpec,
        output: &Path,
        batch: usize,
        progress: bool,
    ) -> Result<usize> {
        use std::io::Write;
        let card = &self.card;
        let cfg = stream_config(card.window_len, card.sample_rate_hz, batch);
        let expect = Expect {
            window_len: card.window_len,
            channels: card.channels.len(),
            what: "the model".into(),
        };
        if let Some(dir) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut n = 0usize;
        flowfm_core::fs::write_atomic_with(output, |tmp: &Path| -> Result<()> {
            let mut w = std::io::BufWriter::new(std::fs::File::create(tmp)?);
            w.write_all(self.timeline_header().as_bytes())?;
            for_each_batch(rec, spec, &cfg, &expect, progress, |b| {
                let x =
                    Tensor::from_slice(&b.x, (b.len(), b.channels, b.window_len), &Device::Cpu)?;
                let rows: Vec<TimelineRow> = (self.predict(&x)?.into_iter().enumerate())
                    .map(|(i, p)| TimelineRow {
                        start_s: b.start_time_s[i],
                        end_s: b.end_time_s[i],
                        probabilities: p,
                    })
                    .collect();
                w.write_all(self.timeline_rows(&rows).as_bytes())?;
                n += rows.len();
                Ok(())
            })?;
            w.flush()?;
            Ok(())
        })?;
        Ok(n)
    }
}
