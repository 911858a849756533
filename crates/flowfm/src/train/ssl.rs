//! The SSL-Wearables recipe of `ssl_multitask` pretraining (Yuan et al., npj Digital Medicine
//! 2024; the sources of every choice are in docs/decisions.md): movement-weighted window sampling
//! (a window is drawn with probability proportional to its standard deviation, so still windows,
//! on which arrow of time and permutation cannot be told, are rarely drawn), the training batch
//! (the three pretext transforms, then a random axis swap and rotation), and the held-out pretext
//! accuracy: pool windows set aside before training, transformed once with a fixed seed and
//! scored by the heads at the validation cadence.

use crate::train::config::{Experiment, WindowSampling};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use flowfm_core::{ForwardMode, SeededRng};
use flowfm_data::augment::{Augmentation, Compose};
use flowfm_data::batch::WindowSource;
use flowfm_models::heads::MultiTaskHeads;
use flowfm_models::HarNet;
use flowfm_objectives::multitask::{
    multitask_accuracy, multitask_loss, multitask_transform, MultiTaskTargets,
};

/// Windows read at a time when computing movement weights.
const READ_CHUNK: usize = 2048;

/// The movement of one `(channels, len)` row-major window: its standard deviation over time
/// pooled over channels, `sqrt(mean_c var_c)` (population variances).
pub fn window_movement(window: &[f32], channels: usize) -> f64 {
    if channels == 0 || window.is_empty() || window.len() % channels != 0 {
        return 0.0;
    }
    let len = window.len() / channels;
    let mut total = 0.0;
    for row in window.chunks(len) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / len as f64;
        total += row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / len as f64;
    }
    let sd = (total / channels as f64).sqrt();
    if sd.is_finite() {
        sd
    } else {
        0.0
    }
}

/// The movement of each window of `indices` (read in chunks).
pub fn movement_weights<S: WindowSource + ?Sized>(
    source: &S,
    indices: &[usize],
) -> Result<Vec<f64>> {
    let (c, l) = (source.channels(), source.window_len());
    let mut out = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(READ_CHUNK) {
        let data = source.read_windows(chunk)?;
        out.extend(data.chunks(c * l).map(|w| window_movement(w, c)));
    }
    Ok(out)
}

/// Draws windows without replacement with probability proportional to their weights (a
/// window's chance of being the first draw is `w_i / sum w`). Weights are floored at `1e-9` of
/// their mean, so a still window stays possible but is practically never drawn, and a pool of
/// still windows only is drawn uniformly.
#[derive(Clone, Debug)]
pub struct MovementSampler {
    indices: Vec<usize>,
    weights: Vec<f64>,
}

impl MovementSampler {
    /// A sampler over `indices` with one weight each (finite, `>= 0`).
    pub fn new(indices: Vec<usize>, weights: Vec<f64>) -> Result<Self> {
        if indices.len() != weights.len() {
            bail!(
                "movement sampler: {} windows but {} weights",
                indices.len(),
                weights.len()
            );
        }
        if indices.is_empty() {
            bail!("movement sampler: no windows to draw from");
        }
        if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            bail!("movement sampler: weights must be finite and >= 0, got {w}");
        }
        let mean = weights.iter().sum::<f64>() / weights.len() as f64;
        let floor = if mean > 0.0 { 1e-9 * mean } else { 1.0 };
        let weights = weights.into_iter().map(|w| w.max(floor)).collect();
        Ok(Self { indices, weights })
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether there is no window (never: [`MovementSampler::new`] refuses it).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The probability of each window to be a single draw, `w_i / sum w` (floored weights), in
    /// the order of the indices given.
    pub fn probabilities(&self) -> Vec<f64> {
        let total: f64 = self.weights.iter().sum();
        self.weights.iter().map(|w| w / total).collect()
    }

    /// `k` distinct windows (all of them when `k` exceeds the pool), sorted. Efraimidis and
    /// Spirakis (2006): the `k` largest keys `ln(u_i) / w_i`, `u_i` uniform on (0, 1], are a
    /// weighted draw without replacement (the same law as drawing one at a time and
    /// renormalising).
    pub fn draw(&self, rng: &mut SeededRng, k: usize) -> Vec<usize> {
        let mut keys: Vec<(f64, usize)> = self
            .weights
            .iter()
            .zip(&self.indices)
            .map(|(w, &i)| ((1.0 - rng.uniform()).ln() / w, i))
            .collect();
        let k = k.min(keys.len());
        if k == 0 {
            return Vec::new();
        }
        if k < keys.len() {
            keys.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        let mut out: Vec<usize> = keys[..k].iter().map(|p| p.1).collect();
        out.sort_unstable();
        out
    }
}

/// Splits `indices` into (training, held out): `count` windows set aside with the run's seed,
/// drawn as training draws (movement-weighted or uniformly).
pub fn split_heldout(
    indices: &[usize],
    weights: Option<&[f64]>,
    count: usize,
    rng: &mut SeededRng,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let held = match weights {
        Some(w) => MovementSampler::new(indices.to_vec(), w.to_vec())?.draw(rng, count),
        None => {
            let mut order = indices.to_vec();
            rng.shuffle(&mut order);
            order.truncate(count);
            order.sort_unstable();
            order
        }
    };
    let set: std::collections::HashSet<usize> = held.iter().copied().collect();
    let train = indices
        .iter()
        .copied()
        .filter(|i| !set.contains(i))
        .collect();
    Ok((train, held))
}

/// The random axis swap and rotation of the published recipe, in their order (swap, then
/// rotation), each applied to every window; `None` when both are off.
pub fn augmentation(exp: &Experiment) -> Option<Compose> {
    let r = &exp.multitask;
    let mut steps = Vec::new();
    if r.axis_swap {
        steps.push((Augmentation::AxisPermutation, 1.0));
    }
    if r.rotation {
        steps.push((
            Augmentation::Rotation {
                max_angle_rad: Some(std::f64::consts::PI),
            },
            1.0,
        ));
    }
    (!steps.is_empty()).then_some(Compose { steps })
}

/// `x` `(b, C, L)` with the recipe's augmentation applied to every window, each its own draw
/// (unchanged when off). The published loader draws one per subject's windows; the law of each
/// window's transform is the same.
fn augment(exp: &Experiment, x: Tensor, rng: &mut SeededRng) -> Result<Tensor> {
    let Some(aug) = augmentation(exp) else {
        return Ok(x);
    };
    let (_, c, l) = x.dims3()?;
    let mut data: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    for w in data.chunks_mut(c * l) {
        aug.apply(w, c, rng)?;
    }
    Ok(Tensor::from_vec(data, x.shape(), x.device())?.to_dtype(x.dtype())?)
}

/// The multi-task loss of one training batch: the pretext transforms, then the augmentation,
/// then encoder and heads in train mode; all draws from `rng`.
pub fn ssl_loss(
    exp: &Experiment,
    encoder: &HarNet,
    heads: &MultiTaskHeads,
    x: &Tensor,
    rng: &mut SeededRng,
) -> Result<Tensor> {
    let mt = multitask_transform(x, rng, &exp.multitask.tasks)?;
    let xt = augment(exp, mt.x, rng)?;
    let z = encoder.forward(&xt, ForwardMode::Train)?;
    let logits = heads.forward(&z)?;
    Ok(multitask_loss(
        &logits.arrow_of_time,
        &logits.permutation,
        &logits.time_warp,
        &mt.targets,
    )?)
}

/// Held-out windows with fixed pretext transforms, scored by the heads.
#[derive(Clone, Debug)]
pub struct PretextProbe {
    /// The transformed windows, `(n, C, L)`.
    pub x: Tensor,
    /// What was applied to each.
    pub targets: MultiTaskTargets,
}

impl PretextProbe {
    /// Reads `indices` of `source` and transforms them once with `rng` as training batches are
    /// (pretext transforms, then the augmentation), so the score is the tasks' accuracy on the
    /// distribution trained on, on windows never trained on.
    pub fn build<S: WindowSource + ?Sized>(
        exp: &Experiment,
        source: &S,
        indices: &[usize],
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<Self> {
        let data = source.read_windows(indices)?;
        let x = Tensor::from_vec(
            data,
            (indices.len(), source.channels(), source.window_len()),
            device,
        )?;
        let mt = multitask_transform(&x, rng, &exp.multitask.tasks)
            .context("transforming the held-out pretext windows")?;
        Ok(Self {
            x: augment(exp, mt.x, rng)?,
            targets: mt.targets,
        })
    }

    /// Accuracy of the three heads (arrow of time, permutation, time warp) in eval mode.
    pub fn score(&self, encoder: &HarNet, heads: &MultiTaskHeads) -> Result<[f64; 3]> {
        let n = self.x.dim(0)?;
        let mut parts: [Vec<Tensor>; 3] = Default::default();
        let mut start = 0;
        while start < n {
            let len = 256.min(n - start);
            let z = encoder.encode_detached(&self.x.narrow(0, start, len)?)?;
            let l = heads.forward(&z)?;
            for (p, t) in parts
                .iter_mut()
                .zip([l.arrow_of_time, l.permutation, l.time_warp])
            {
                p.push(t.detach());
            }
            start += len;
        }
        let [a, p, w] = parts.map(|v| Tensor::cat(&v, 0));
        Ok(multitask_accuracy(&a?, &p?, &w?, &self.targets)?)
    }
}

/// How `ssl_multitask` pretraining reads its data: the windows it trains on (and how it draws
/// them) and the held-out pretext probe.
pub struct SslData {
    /// Movement sampler over the training windows (`None`: the seeded-shuffle batcher).
    pub sampler: Option<MovementSampler>,
    /// The held-out probe (`None`: turned off, or a pool too small to spare a window).
    pub probe: Option<PretextProbe>,
    /// The windows trained on (the pool less the held-out windows).
    pub train_indices: Vec<usize>,
}

impl SslData {
    /// Sets the held-out windows aside (at most a tenth of the pool) and builds the sampler.
    pub fn prepare<S: WindowSource + ?Sized>(
        exp: &Experiment,
        source: &S,
        indices: Vec<usize>,
        device: &Device,
    ) -> Result<Self> {
        let r = &exp.multitask;
        let root = SeededRng::new(exp.seed);
        let weights = match r.sampling {
            WindowSampling::Movement => Some(movement_weights(source, &indices)?),
            WindowSampling::Uniform => None,
        };
        let count = r.heldout_windows.min(indices.len() / 10);
        let (train_indices, held) = if count > 0 {
            split_heldout(
                &indices,
                weights.as_deref(),
                count,
                &mut root.derive("pretext-heldout"),
            )?
        } else {
            (indices.clone(), Vec::new())
        };
        let probe = if held.is_empty() {
            None
        } else {
            Some(PretextProbe::build(
                exp,
                source,
                &held,
                &mut root.derive("pretext-heldout-tasks"),
                device,
            )?)
        };
        let sampler = match weights {
            Some(w) => {
                let pos: std::collections::HashMap<usize, f64> =
                    indices.iter().copied().zip(w).collect();
                let tw = train_indices
                    .iter()
                    .map(|i| pos.get(i).copied().unwrap_or(0.0))
                    .collect();
                Some(MovementSampler::new(train_indices.clone(), tw)?)
            }
            None => None,
        };
        Ok(Self {
            sampler,
            probe,
            train_indices,
        })
    }

    /// The movement-weighted batch of `step` (its own stream of the run seed), `(b, C, L)`.
    pub fn batch<S: WindowSource + ?Sized>(
        &self,
        exp: &Experiment,
        source: &S,
        step: u64,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let Some(s) = &self.sampler else {
            return Ok(None);
        };
        let mut rng = SeededRng::new(exp.seed).derive_indexed("ssl-batch", step);
        let idx = s.draw(&mut rng, exp.file.train.batch_size);
        let data = source.read_windows(&idx)?;
        Ok(Some(Tensor::from_vec(
            data,
            (idx.len(), source.channels(), source.window_len()),
            device,
        )?))
    }
}
