//! Pretraining loops for the three methods: joint FlowFM (encoder + velocity field on the
//! flow-matching loss, the encoder's gradient flowing through the conditioning), the diffusion
//! baseline (same U-Net and conditioning, DDPM loss) and SSL-Wearables multi-task (encoder alone).
//!
//! Every random draw of step `s` comes from the stream `derive_indexed("step", s)` of the run
//! seed, and batch `s` is batch `s % n` of epoch `s / n` of a seeded shuffle, so a run resumed
//! from a checkpoint continues exactly as an uninterrupted run would.

use super::resources::{available_memory_bytes, ResourceEstimate};
use crate::encode::encode_tensor;
use crate::train::config::{Duration, Experiment, Method};
use crate::train::run::{load_checkpoint, save_checkpoint, CheckpointMeta, MetricsRecord, RunDir};
use crate::train::ssl::{ssl_loss, SslData};
use crate::train::state::{restore, save_models, state_tensors};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::paths::LinearPath;
use flowfm_core::schedule::NoiseSchedule;
use flowfm_core::{Conditioning, ForwardMode, SeededRng};
use flowfm_data::augment::Compose;
use flowfm_data::batch::{BatchConfig, Batcher, WindowSource};
use flowfm_models::heads::MultiTaskHeads;
use flowfm_models::unet::{DiffusionUNet, FlowUNet};
use flowfm_models::HarNet;
use flowfm_objectives::ddpm::{ddpm_loss, sample_diffusion_steps};
use flowfm_objectives::flow::{flow_matching_loss, sample_flow_times};
use flowfm_ops::norm::is_buffer_name;
use flowfm_ops::optim::{clip_grad_norm, AdamW, AdamWConfig, Ema, WarmupCosine};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Options that are not part of the experiment (where, how loud, how to recover).
#[derive(Clone, Debug)]
pub struct PretrainOptions {
    /// Run directory.
    pub run_dir: PathBuf,
    /// Continue from the last checkpoint in the run directory.
    pub resume: bool,
    /// No progress bar.
    pub quiet: bool,
    /// Device.
    pub device: Device,
    /// Stop after this many steps in this session (simulates an interruption in tests).
    pub stop_after: Option<u64>,
    /// Test hook: make the loss of this step NaN (checks the divergence guard).
    pub inject_nan_at: Option<u64>,
    /// A labelled validation probe scored every `probe.every` steps (for time to target).
    pub validation: Option<Arc<ValidationProbe>>,
    /// Fingerprint of the training data (e.g. the stores' fingerprints), recorded in every
    /// checkpoint; `--resume` on data with another fingerprint is refused.
    pub data_fingerprint: Option<String>,
}

/// A labelled set, split by subject, on which the encoder's representations are scored with a
/// kNN classifier during pretraining: fit on the `fit` windows, macro F1 on the `eval` windows.
/// It only watches training (no gradient flows from it); its labels never train anything. The
/// score is logged as `val_knn_f1` in `metrics.jsonl`, next to `train_s`, the cumulative seconds
/// spent in training steps (probe, RankMe and checkpoint time excluded), so the time to reach a
/// validation target can be read off afterwards.
#[derive(Clone, Debug)]
pub struct ValidationProbe {
    /// Where the windows come from (for messages and reports).
    pub name: String,
    /// Windows the kNN classifier memorises, `(n_fit, channels, window_len)`.
    pub fit_x: Tensor,
    /// Their labels.
    pub fit_y: Vec<usize>,
    /// Windows it is scored on (other subjects), `(n_eval, channels, window_len)`.
    pub eval_x: Tensor,
    /// Their labels.
    pub eval_y: Vec<usize>,
    /// Number of classes.
    pub num_classes: usize,
    /// Score every this many steps (and at the last step).
    pub every: u64,
    /// Early in training, up to and including step `dense_until`, score every `dense_every`
    /// steps instead (the curve rises fastest there, so a coarse cadence would censor the time
    /// to the low thresholds at the first probe).
    pub dense_every: u64,
    /// The last step of the dense cadence (0: none).
    pub dense_until: u64,
}

impl ValidationProbe {
    /// Whether the probe scores after step `done` (1-based) of a run that ends at `last`.
    pub fn due(&self, done: u64, last: u64) -> bool {
        done == last
            || done % self.every.max(1) == 0
            || (done <= self.dense_until && done % self.dense_every.max(1) == 0)
    }

    /// Macro F1 of a 5-nearest-neighbour (cosine) classifier on `encoder`'s representations.
    pub fn score(&self, encoder: &HarNet) -> Result<f64> {
        let fit = encode_tensor(encoder, &self.fit_x, 128)?.to_device(&Device::Cpu)?;
        let eval = encode_tensor(encoder, &self.eval_x, 128)?.to_device(&Device::Cpu)?;
        let fit = flowfm_eval::Embeddings::from_tensor(&fit)?;
        let eval = flowfm_eval::Embeddings::from_tensor(&eval)?;
        let cfg = flowfm_eval::knn::KnnConfig {
            k: 5.min(fit.rows()),
            ..Default::default()
        };
        let knn = flowfm_eval::knn::KnnClassifier::fit(
            &fit,
            &self.fit_y,
            self.num_classes,
            cfg,
            &Device::Cpu,
        )?;
        let pred = knn.predict(&eval)?;
        let cm =
            flowfm_eval::ConfusionMatrix::from_predictions(&self.eval_y, &pred, self.num_classes)?;
        Ok(cm.macro_f1())
    }
}

impl PretrainOptions {
    /// Defaults for a run directory on the CPU.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            resume: false,
            quiet: true,
            device: Device::Cpu,
            stop_after: None,
            inject_nan_at: None,
            validation: None,
            data_fingerprint: None,
        }
    }
}

/// What a pretraining session did.
#[derive(Clone, Debug)]
pub struct PretrainOutcome {
    /// Steps completed in total (including earlier sessions).
    pub steps: u64,
    /// Total steps of the schedule.
    pub total_steps: u64,
    /// Loss of every step of this session.
    pub losses: Vec<f64>,
    /// Wall seconds of every epoch completed in this session.
    pub epoch_seconds: Vec<f64>,
    /// Mean training throughput of this session.
    pub windows_per_s: f64,
    /// RankMe of the encoder's representations of a fixed probe set at each checkpoint of this
    /// session: `(step, rankme)`.
    pub rankme: Vec<(u64, f64)>,
    /// Validation score at each probe of this session: `(step, train_s, val_knn_f1)`.
    pub validation: Vec<(u64, f64, f64)>,
    /// ssl_multitask: held-out accuracy of the pretext tasks (arrow of time, permutation, time
    /// warp) at each validation point of this session: `(step, [aot, permute, warp])`.
    pub pretext: Vec<(u64, [f64; 3])>,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// The networks of one method, each in its own `VarMap` (so checkpoints name tensors by field
/// path within the network).
pub struct Networks {
    /// Encoder variables.
    pub encoder_vars: VarMap,
    /// The encoder.
    pub encoder: HarNet,
    /// Generator variables (flowfm, diffusion).
    pub generator_vars: VarMap,
    /// The velocity field (flowfm).
    pub flow: Option<FlowUNet>,
    /// The denoiser (diffusion).
    pub denoiser: Option<DiffusionUNet>,
    /// Multi-task head variables (ssl_multitask).
    pub head_vars: VarMap,
    /// EMA copy of the encoder that encodes echoes (echo contrast only).
    pub echo_vars: VarMap,
    /// The EMA encoder (echo contrast only).
    pub echo_encoder: Option<HarNet>,
    /// The multi-task heads (ssl_multitask).
    pub heads: Option<MultiTaskHeads>,
}

impl Networks {
    /// Builds the networks of `exp.method`, initialised from the run seed.
    pub fn build(exp: &Experiment, device: &Device) -> Result<Self> {
        let root = SeededRng::new(exp.seed);
        let encoder_vars = VarMap::new();
        let encoder = HarNet::new(
            exp.encoder.clone(),
            seeded_var_builder(
                &encoder_vars,
                root.derive("encoder").seed(),
                DType::F32,
                device,
            ),
        )?;
        let generator_vars = VarMap::new();
        let head_vars = VarMap::new();
        let gen_vb = || {
            seeded_var_builder(
                &generator_vars,
                root.derive("generator").seed(),
                DType::F32,
                device,
            )
        };
        let (flow, denoiser, heads) = match exp.method {
            Method::Flowfm => (
                Some(FlowUNet::new(exp.generator.clone(), gen_vb())?),
                None,
                None,
            ),
            Method::Diffusion => (
                None,
                Some(DiffusionUNet::new(exp.generator.clone(), gen_vb())?),
                None,
            ),
            Method::SslMultitask => {
                let vb =
                    seeded_var_builder(&head_vars, root.derive("heads").seed(), DType::F32, device);
                (
                    None,
                    None,
                    Some(MultiTaskHeads::new(exp.encoder.repr_dim(), vb)?),
                )
            }
        };
        let echo_vars = VarMap::new();
        let echo_encoder = if exp.file.joint.echo_weight > 0.0 {
            let enc = HarNet::new(
                exp.encoder.clone(),
                seeded_var_builder(&echo_vars, 0, DType::F32, device),
            )?;
            copy_vars(&encoder_vars, &echo_vars, 0.0)?;
            Some(enc)
        } else {
            None
        };
        Ok(Self {
            encoder_vars,
            encoder,
            generator_vars,
            flow,
            denoiser,
            head_vars,
            heads,
            echo_vars,
            echo_encoder,
        })
    }

    /// Every variable with a component prefix (`encoder.`, `generator.`, `heads.`), sorted.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (prefix, vm) in [
            ("encoder", &self.encoder_vars),
            ("generator", &self.generator_vars),
            ("heads", &self.head_vars),
            ("echo_encoder", &self.echo_vars),
        ] {
            if let Ok(data) = vm.data().lock() {
                out.extend(
                    data.iter()
                        .map(|(n, v)| (format!("{prefix}.{n}"), v.clone())),
                );
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The trained variables (batch-norm buffers and the EMA echo encoder excluded).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.named_vars()
            .into_iter()
            .filter(|(n, _)| !is_buffer_name(n) && !n.starts_with("echo_encoder."))
            .collect()
    }
}

/// `dst = decay * dst + (1 - decay) * src` for every variable of `dst` (same names).
fn copy_vars(src: &VarMap, dst: &VarMap, decay: f64) -> Result<()> {
    let src = src
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
    let dst = dst
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
    for (name, d) in dst.iter() {
        let s = src
            .get(name)
            .with_context(|| format!("echo encoder: `{name}` has no counterpart"))?;
        let v = if decay == 0.0 {
            s.as_tensor().detach().copy()?
        } else {
            ((d.as_tensor().detach() * decay)? + (s.as_tensor().detach() * (1.0 - decay))?)?
        };
        d.set(&v)?;
    }
    Ok(())
}

/// The encoder's view of the batch: the batch itself, or a randomly rotated and axis-permuted
/// copy when `joint.encoder_augment` is on.
fn encoder_view(exp: &Experiment, x: &Tensor, rng: &mut SeededRng) -> Result<Tensor> {
    if !exp.file.joint.encoder_augment {
        return Ok(x.clone());
    }
    let (_, c, l) = x.dims3()?;
    let aug = Compose::ssl_wearables_finetune();
    let mut data: Vec<f32> = x.flatten_all()?.to_vec1()?;
    for w in data.chunks_mut(c * l) {
        aug.apply(w, c, rng)?;
    }
    Ok(Tensor::from_vec(data, x.shape(), x.device())?)
}

/// The loss of one training step on `x` (train mode), drawing noise and times from `rng`;
/// also the value of the echo-contrast term when it is active.
fn step_loss(
    exp: &Experiment,
    nets: &Networks,
    schedule: &NoiseSchedule,
    x: &Tensor,
    step: u64,
    rng: &mut SeededRng,
) -> Result<(Tensor, Option<f64>)> {
    let (b, _, _) = x.dims3()?;
    let dev = x.device();
    Ok(match exp.method {
        Method::Flowfm => {
            let field = nets
                .flow
                .as_ref()
                .context("flowfm run without a velocity field")?;
            let x_enc = encoder_view(exp, x, rng)?;
            let z = nets.encoder.forward(&x_enc, ForwardMode::Train)?;
            let x_0 = rng.normal_tensor(x.shape(), DType::F32, dev)?;
            let t = sample_flow_times(rng, b, exp.time_sampling, DType::F32, dev)?;
            let path = LinearPath::new(exp.sigma_min)?;
            let fm = flow_matching_loss(
                field,
                x,
                &x_0,
                &t,
                &Conditioning::Representation(z.clone()),
                &path,
            )?;
            let j = &exp.file.joint;
            match &nets.echo_encoder {
                Some(echo_enc) if j.echo_weight > 0.0 && step >= j.echo_start_step => {
                    // The echo: a few Euler steps from fresh noise, conditioned on the window's own
                    // (detached) representation, encoded by the EMA encoder; only `z` carries
                    // gradient.
                    let noise = rng.normal_tensor(x.shape(), DType::F32, dev)?;
                    let grid = flowfm_sampling::TimeGrid::noise_to_data(j.echo_steps)?;
                    let (echo, _) = flowfm_sampling::solve(
                        &field.detached(),
                        &noise,
                        &Conditioning::Representation(z.detach()),
                        &grid,
                        &flowfm_sampling::OdeMethod::Euler,
                    )?;
                    let z_echo = echo_enc.encode_detached(&echo)?;
                    let nce =
                        flowfm_objectives::contrastive::info_nce(&z, &z_echo, j.echo_temperature)?;
                    let value = scalar(&nce)?;
                    ((fm + (nce * j.echo_weight)?)?, Some(value))
                }
                _ => (fm, None),
            }
        }
        Method::Diffusion => {
            let den = nets
                .denoiser
                .as_ref()
                .context("diffusion run without a denoiser")?;
            let x_enc = encoder_view(exp, x, rng)?;
            let z = nets.encoder.forward(&x_enc, ForwardMode::Train)?;
            let eps = rng.normal_tensor(x.shape(), DType::F32, dev)?;
            let k = sample_diffusion_steps(rng, b, schedule)?;
            (
                ddpm_loss(den, x, &eps, &k, schedule, &Conditioning::Representation(z))?,
                None,
            )
        }
        Method::SslMultitask => {
            let heads = nets
                .heads
                .as_ref()
                .context("ssl_multitask run without heads")?;
            (ssl_loss(exp, &nets.encoder, heads, x, rng)?, None)
        }
    })
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Total steps and batches per epoch for a pool of `n` windows.
pub fn schedule_steps(exp: &Experiment, n: usize) -> Result<(u64, u64)> {
    let bs = exp.file.train.batch_size;
    let per_epoch = (n / bs) as u64;
    if per_epoch == 0 {
        bail!("the pretraining pool has {n} windows, fewer than one batch of {bs}");
    }
    let total = match exp.duration {
        Duration::Steps(s) => s,
        Duration::Epochs(e) => e * per_epoch,
    };
    Ok((total, per_epoch))
}

/// Pretrains `exp.method` on the windows `indices` of `source`.
pub fn pretrain<S: WindowSource + 'static>(
    exp: &Experiment,
    source: Arc<S>,
    indices: Vec<usize>,
    opts: &PretrainOptions,
) -> Result<PretrainOutcome> {
    let train = &exp.file.train;
    // Refuse, before anything is allocated, an experiment that cannot fit in memory.
    ResourceEstimate::of(exp)?.check_fits(available_memory_bytes())?;
    let run = RunDir::create(&opts.run_dir)?;
    // ssl_multitask sets its held-out pretext windows aside and draws by movement.
    let pool_indices = indices.clone();
    let ssl = match exp.method {
        Method::SslMultitask => Some(SslData::prepare(exp, &*source, indices, &opts.device)?),
        _ => None,
    };
    let indices = match &ssl {
        Some(d) => d.train_indices.clone(),
        None => pool_indices.clone(),
    };
    let (total_steps, per_epoch) = schedule_steps(exp, indices.len())?;
    let nets = Networks::build(exp, &opts.device)?;
    let trainable = nets.trainable();
    let trainable_vars: Vec<Var> = trainable.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = AdamW::new(
        trainable.clone(),
        AdamWConfig {
            weight_decay: train.weight_decay,
            amsgrad: train.amsgrad,
            ..AdamWConfig::default()
        },
    )?;
    let gen_params: Vec<(String, Var)> = trainable
        .iter()
        .filter(|(n, _)| n.starts_with("generator."))
        .cloned()
        .collect();
    let mut ema = if gen_params.is_empty() {
        None
    } else {
        Some(Ema::new(&gen_params, train.ema_decay)?)
    };
    let schedule = NoiseSchedule::new(&exp.noise_schedule)?;
    let lr = WarmupCosine {
        lr: train.lr,
        min_lr: train.min_lr,
        warmup_steps: train.warmup_steps,
        total_steps,
    };
    // A fixed probe set (up to 256 windows of the pool) for RankMe at every checkpoint.
    let probe = {
        let mut order = pool_indices;
        SeededRng::new(exp.seed)
            .derive("rankme-probe")
            .shuffle(&mut order);
        order.truncate(256);
        order.sort_unstable();
        let data = source.read_windows(&order)?;
        Tensor::from_vec(
            data,
            (order.len(), source.channels(), source.window_len()),
            &opts.device,
        )?
    };
    let batcher = Batcher::new(
        source.clone(),
        indices,
        None,
        BatchConfig {
            batch_size: train.batch_size,
            shuffle: true,
            drop_last: true,
            prefetch: 2,
            seed: SeededRng::new(exp.seed).derive("batches").seed(),
        },
        opts.device.clone(),
    )?;

    let mut start = 0u64;
    let mut wall_offset = 0.0;
    let mut train_offset = 0.0;
    if opts.resume && run.last_checkpoint().exists() {
        let (tensors, meta) = load_checkpoint(&run.last_checkpoint(), &opts.device)?;
        if meta.config_fingerprint != exp.fingerprint() {
            bail!(
                "{}: written for config {}, this config is {}; refusing to resume under another config",
                run.last_checkpoint().display(),
                meta.config_fingerprint,
                exp.fingerprint()
            );
        }
        if let (Some(was), Some(now)) = (&meta.data_fingerprint, &opts.data_fingerprint) {
            if was != now {
                bail!(
                    "{}: written while training on data {was}, these stores are {now}; refusing to resume on other data (use the run's stores, or start a new run)",
                    run.last_checkpoint().display()
                );
            }
        }
        restore(&nets, &tensors)?;
        opt.load_state(&tensors, meta.step)?;
        if let Some(e) = ema.as_mut() {
            e.load(&tensors)?;
            e.set_updates(meta.step);
        }
        start = meta.step;
        run.truncate_metrics(start)?;
        let last = run.read_metrics()?.last().cloned();
        wall_offset = last.as_ref().map(|r| r.wall_s).unwrap_or(0.0);
        train_offset = last
            .as_ref()
            .and_then(|r| r.extra.get("train_s").copied())
            .unwrap_or(0.0);
    } else {
        run.truncate_metrics(0)?;
    }
    run.write_config(&exp.file.to_toml(), exp.seed)?;

    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(total_steps);
        b.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix(format!("pretrain {}", exp.method.name()));
        b
    };
    bar.set_position(start);

    let root = SeededRng::new(exp.seed);
    let session = Instant::now();
    let mut epoch_start = Instant::now();
    let mut losses = Vec::new();
    let mut epoch_seconds = Vec::new();
    let mut rankme = Vec::new();
    let mut validation = Vec::new();
    let mut pretext = Vec::new();
    let pretext_every = opts
        .validation
        .as_deref()
        .map_or(train.checkpoint_every, |p| p.every)
        .max(1);
    let mut train_s = train_offset;
    let mut windows = 0usize;
    let mut last_loss = f64::NAN;
    let end = match opts.stop_after {
        Some(k) => (start + k).min(total_steps),
        None => total_steps,
    };
    for step in start..end {
        let step_start = Instant::now();
        let (epoch, b) = (step / per_epoch, (step % per_epoch) as usize);
        let drawn = match &ssl {
            Some(d) => d.batch(exp, &*source, step, &opts.device)?,
            None => None,
        };
        let x = match drawn {
            Some(x) => x,
            None => batcher.batch(epoch, b)?.x,
        };
        let mut rng = root.derive_indexed("step", step);
        let (mut loss, echo_loss) =
            flowfm_ops::on_worker(|| step_loss(exp, &nets, &schedule, &x, step, &mut rng))?;
        if opts.inject_nan_at == Some(step + 1) {
            loss = (loss * f64::NAN)?;
        }
        let loss_value = scalar(&loss)?;
        let (grads, grad_norm) = flowfm_ops::on_worker(|| -> Result<_> {
            let mut grads = loss.backward()?;
            let norm = clip_grad_norm(&mut grads, &trainable_vars, train.grad_clip)?;
            Ok((grads, norm))
        })?;
        if !loss_value.is_finite() || !grad_norm.is_finite() {
            bar.abandon();
            bail!(
                "training diverged at step {}: loss {loss_value}, gradient norm {grad_norm}; the last good checkpoint is kept at {}",
                step + 1,
                run.last_checkpoint().display()
            );
        }
        let rate = lr.at(step);
        flowfm_ops::on_worker(|| -> Result<()> {
            opt.step(&grads, rate)?;
            if let Some(e) = ema.as_mut() {
                e.update()?;
            }
            if nets.echo_encoder.is_some() {
                copy_vars(
                    &nets.encoder_vars,
                    &nets.echo_vars,
                    exp.file.joint.echo_ema_decay,
                )?;
            }
            Ok(())
        })?;
        let done = step + 1;
        train_s += step_start.elapsed().as_secs_f64();
        windows += x.dim(0)?;
        losses.push(loss_value);
        last_loss = loss_value;
        let elapsed = session.elapsed().as_secs_f64();
        let wps = windows as f64 / elapsed.max(1e-9);
        bar.set_position(done);
        bar.set_message(format!("loss {loss_value:.4} {wps:.1} win/s"));
        let epoch_done = done % per_epoch == 0;
        if epoch_done {
            epoch_seconds.push(epoch_start.elapsed().as_secs_f64());
            epoch_start = Instant::now();
        }
        let is_checkpoint =
            done % train.checkpoint_every == 0 || done == total_steps || done == end;
        let rank = if is_checkpoint && probe.dim(0)? > 1 {
            let z = nets.encoder.encode_detached(&probe)?;
            let r = flowfm_eval::rankme_tensor(&z)
                .map_err(|e| anyhow::anyhow!("RankMe at step {done}: {e}"))?;
            rankme.push((done, r));
            Some(r)
        } else {
            None
        };
        let val = match opts.validation.as_deref() {
            Some(p) if p.due(done, total_steps) || done == end => {
                let v = p
                    .score(&nets.encoder)
                    .with_context(|| format!("validation probe `{}` at step {done}", p.name))?;
                validation.push((done, train_s, v));
                Some(v)
            }
            _ => None,
        };
        let pretext_acc = match (ssl.as_ref().and_then(|d| d.probe.as_ref()), &nets.heads) {
            (Some(p), Some(h))
                if done % pretext_every == 0 || done == total_steps || done == end =>
            {
                let acc = p
                    .score(&nets.encoder, h)
                    .with_context(|| format!("held-out pretext accuracy at step {done}"))?;
                pretext.push((done, acc));
                Some(acc)
            }
            _ => None,
        };
        if done % train.log_every == 0
            || done == total_steps
            || epoch_done
            || is_checkpoint
            || val.is_some()
            || pretext_acc.is_some()
        {
            let mut extra = HashMap::new();
            extra.insert("train_s".to_string(), train_s);
            if let Some(v) = val {
                extra.insert("val_knn_f1".to_string(), v);
            }
            if let Some(r) = rank {
                extra.insert("rankme".to_string(), r);
            }
            if let Some(e) = echo_loss {
                extra.insert("echo_loss".to_string(), e);
            }
            if let Some(acc) = pretext_acc {
                for (key, v) in crate::train::history::PRETEXT_KEYS.iter().zip(acc) {
                    extra.insert(key.to_string(), v);
                }
            }
            if epoch_done {
                if let Some(s) = epoch_seconds.last() {
                    extra.insert("epoch_seconds".to_string(), *s);
                }
            }
            run.append_metrics(&MetricsRecord {
                step: done,
                epoch,
                loss: loss_value,
                lr: rate,
                grad_norm,
                windows_per_s: wps,
                wall_s: wall_offset + elapsed,
                extra,
            })?;
        }
        if is_checkpoint {
            let meta = CheckpointMeta {
                step: done,
                seed: exp.seed,
                rng_word_pos: "0".into(),
                config_fingerprint: exp.fingerprint(),
                flowfm_version: env!("CARGO_PKG_VERSION").into(),
                loss: loss_value,
                data_fingerprint: opts.data_fingerprint.clone(),
            };
            save_checkpoint(
                &run.last_checkpoint(),
                &state_tensors(&nets, &opt, ema.as_ref()),
                &meta,
            )?;
        }
    }
    bar.finish_and_clear();
    // A finished run that was only reopened keeps its model files byte for byte (later stages
    // key their cached results on those bytes).
    let reused = start == total_steps
        && run.path().join("encoder.safetensors").is_file()
        && (exp.method == Method::SslMultitask
            || run.path().join("generator.safetensors").is_file());
    if end == total_steps && !reused {
        save_models(exp, &nets, ema.as_ref(), run.path())?;
    }
    let secs = session.elapsed().as_secs_f64();
    if !opts.quiet && reused {
        eprintln!(
            "pretrain {}: finished run of {total_steps} steps reused from {}",
            exp.method.name(),
            run.path().display()
        );
    } else if !opts.quiet {
        eprintln!(
            "pretrain {}: {} steps, last loss {last_loss:.4}, {:.1} windows/s",
            exp.method.name(),
            end,
            windows as f64 / secs.max(1e-9)
        );
    }
    Ok(PretrainOutcome {
        steps: end,
        total_steps,
        losses,
        epoch_seconds,
        windows_per_s: windows as f64 / secs.max(1e-9),
        rankme,
        validation,
        pretext,
        run_dir: run.path().to_path_buf(),
    })
}
