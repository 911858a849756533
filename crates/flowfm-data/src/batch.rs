//! Batching: per-epoch seeded shuffles, rayon-parallel augmentation and a background prefetch
//! thread feeding candle tensors `(batch, C, L)` through a bounded channel.
//!
//! Determinism: the order of epoch `e` comes from the stream `("shuffle", e)` of the seed, and the
//! augmentation of window `i` in epoch `e` from the stream `("augment", e)` -> `("window", i)`, so
//! the batches depend only on (seed, epoch), never on thread scheduling or prefetch depth.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use flowfm_core::SeededRng;
use rayon::prelude::*;

use crate::augment::Compose;
use crate::error::Result;
use crate::resample::config_err;
use crate::store::WindowStore;
use crate::window::WindowSet;
use crate::DataError;

/// Something windows can be read from: in memory or an HDF5 store.
pub trait WindowSource: Send + Sync {
    /// Number of windows `N`.
    fn num_windows(&self) -> usize;
    /// Channels per window `C`.
    fn channels(&self) -> usize;
    /// Samples per window `L`.
    fn window_len(&self) -> usize;
    /// Label of every window (`-1` = unlabelled).
    fn labels(&self) -> &[i64];
    /// Subject of every window.
    fn subjects(&self) -> &[i64];
    /// The windows at `indices`, `(len, C, L)` row-major, in the order given.
    fn read_windows(&self, indices: &[usize]) -> Result<Vec<f32>>;
}

impl WindowSource for WindowSet {
    fn num_windows(&self) -> usize {
        WindowSet::num_windows(self)
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn window_len(&self) -> usize {
        self.window_len
    }
    fn labels(&self) -> &[i64] {
        &self.y
    }
    fn subjects(&self) -> &[i64] {
        &self.subject
    }
    fn read_windows(&self, indices: &[usize]) -> Result<Vec<f32>> {
        let n = WindowSet::num_windows(self);
        let mut out = Vec::with_capacity(indices.len() * self.window_size());
        for &i in indices {
            if i >= n {
                return Err(config_err(
                    "indices",
                    format!("window {i} out of range (N = {n})"),
                ));
            }
            out.extend_from_slice(self.window(i));
        }
        Ok(out)
    }
}

impl WindowSource for WindowStore {
    fn num_windows(&self) -> usize {
        WindowStore::num_windows(self)
    }
    fn channels(&self) -> usize {
        self.meta.channels
    }
    fn window_len(&self) -> usize {
        self.meta.window_len
    }
    fn labels(&self) -> &[i64] {
        &self.y
    }
    fn subjects(&self) -> &[i64] {
        &self.subject
    }
    fn read_windows(&self, indices: &[usize]) -> Result<Vec<f32>> {
        self.read_x_subset(indices)
    }
}

/// Batching settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchConfig {
    /// Windows per batch.
    pub batch_size: usize,
    /// Shuffle the order every epoch.
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Batches prepared ahead by the background thread (bounded channel capacity, >= 1).
    pub prefetch: usize,
    /// Seed of the shuffles and augmentations.
    pub seed: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            shuffle: true,
            drop_last: false,
            prefetch: 2,
            seed: 0,
        }
    }
}

/// One batch.
#[derive(Debug)]
pub struct Batch {
    /// Windows, `(batch, C, L)` f32.
    pub x: Tensor,
    /// Labels, `(batch,)` i64, `-1` = unlabelled.
    pub y: Tensor,
    /// Subjects, `(batch,)` i64.
    pub subject: Tensor,
    /// The window indices in the source.
    pub indices: Vec<usize>,
    /// Per window, which augmentation steps were applied (empty without augmentation).
    pub applied: Vec<Vec<bool>>,
}

/// Produces batches of windows from a source, over a fixed subset of its indices.
pub struct Batcher<S: WindowSource + 'static> {
    source: Arc<S>,
    indices: Arc<Vec<usize>>,
    augment: Option<Arc<Compose>>,
    cfg: BatchConfig,
    device: Device,
}

impl<S: WindowSource + 'static> Batcher<S> {
    /// A batcher over `indices` of `source` (e.g. one side of a split), augmenting with
    /// `augment` when given, producing tensors on `device`.
    pub fn new(
        source: Arc<S>,
        indices: Vec<usize>,
        augment: Option<Compose>,
        cfg: BatchConfig,
        device: Device,
    ) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(config_err("batch_size", "must be >= 1"));
        }
        if cfg.prefetch == 0 {
            return Err(config_err("prefetch", "must be >= 1"));
        }
        let n = source.num_windows();
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            return Err(config_err(
                "indices",
                format!("window {i} out of range (N = {n})"),
            ));
        }
        if let Some(a) = &augment {
            a.validate(source.channels(), source.window_len())?;
        }
        Ok(Self {
            source,
            indices: Arc::new(indices),
            augment: augment.map(Arc::new),
            cfg,
            device,
        })
    }

    /// Number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.indices.len();
        let b = self.cfg.batch_size;
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The window order of `epoch` (before cutting into batches).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order = (*self.indices).clone();
        if self.cfg.shuffle {
            SeededRng::new(self.cfg.seed)
                .derive_indexed("shuffle", epoch)
                .shuffle(&mut order);
        }
        order
    }

    /// Builds batch `b` of `epoch` synchronously (what the background thread does).
    ///
    /// # Shapes
    /// - `x`: `(batch, C, L)` f32; `y`, `subject`: `(batch,)` i64.
    pub fn batch(&self, epoch: u64, b: usize) -> Result<Batch> {
        let order = self.order(epoch);
        make_batch(&*self.source, &order, b, &self.ctx(), epoch)
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            augment: self.augment.clone(),
            batch_size: self.cfg.batch_size,
            seed: self.cfg.seed,
            device: self.device.clone(),
        }
    }

    /// Iterates over the batches of `epoch`, prepared by a background thread up to
    /// `prefetch` batches ahead. Dropping the iterator stops the thread.
    ///
    /// # Shapes
    /// - `x`: `(batch, C, L)` f32; `y`, `subject`: `(batch,)` i64; the last batch is smaller
    ///   unless `drop_last`.
    pub fn epoch(&self, epoch: u64) -> BatchIter {
        let (tx, rx) = sync_channel(self.cfg.prefetch);
        let source = Arc::clone(&self.source);
        let order = self.order(epoch);
        let count = self.num_batches();
        let ctx = self.ctx();
        let handle = std::thread::spawn(move || {
            for b in 0..count {
                let r = make_batch(&*source, &order, b, &ctx, epoch);
                let stop = r.is_err();
                if tx.send(r).is_err() || stop {
                    return;
                }
            }
        });
        BatchIter {
            rx: Some(rx),
            handle: Some(handle),
        }
    }
}

struct Ctx {
    augment: Option<Arc<Compose>>,
    batch_size: usize,
    seed: u64,
    device: Device,
}

/// The per-window augmentation stream of `epoch`.
fn window_rng(seed: u64, epoch: u64, index: usize) -> SeededRng {
    SeededRng::new(seed)
        .derive_indexed("augment", epoch)
        .derive_indexed("window", index as u64)
}

fn make_batch<S: WindowSource + ?Sized>(
    source: &S,
    order: &[usize],
    b: usize,
    ctx: &Ctx,
    epoch: u64,
) -> Result<Batch> {
    let lo = b * ctx.batch_size;
    let hi = (lo + ctx.batch_size).min(order.len());
    if lo >= hi {
        return Err(config_err(
            "batch",
            format!("batch {b} is past the end of the epoch"),
        ));
    }
    let idx = &order[lo..hi];
    let (c, l) = (source.channels(), source.window_len());
    let mut x = source.read_windows(idx)?;
    let applied: Vec<Vec<bool>> = match &ctx.augment {
        None => Vec::new(),
        Some(aug) => x
            .par_chunks_mut((c * l).max(1))
            .zip(idx.par_iter())
            .map(|(w, &i)| aug.apply(w, c, &mut window_rng(ctx.seed, epoch, i)))
            .collect::<Result<_>>()?,
    };
    let labels = source.labels();
    let subjects = source.subjects();
    let y: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
    let s: Vec<i64> = idx.iter().map(|&i| subjects[i]).collect();
    let n = idx.len();
    let tensor_err = |e: candle_core::Error| DataError::External {
        tool: "candle".into(),
        msg: e.to_string(),
    };
    Ok(Batch {
        x: Tensor::from_vec(x, (n, c, l), &ctx.device).map_err(tensor_err)?,
        y: Tensor::from_vec(y, n, &ctx.device).map_err(tensor_err)?,
        subject: Tensor::from_vec(s, n, &ctx.device).map_err(tensor_err)?,
        indices: idx.to_vec(),
        applied,
    })
}

/// Batches of one epoch from the background thread.
pub struct BatchIter {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for BatchIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.as_ref()?.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                // The producer finished (or stopped after an error it already sent).
                self.rx = None;
                if let Some(h) = self.handle.take() {
                    if h.join().is_err() {
                        return Some(Err(DataError::External {
                            tool: "batch prefetch thread".into(),
                            msg: "panicked".into(),
                        }));
                    }
                }
                None
            }
        }
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        // Closing the receiver makes the producer's next send fail, so it exits.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
