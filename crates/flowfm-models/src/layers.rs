//! Building blocks shared by the networks: the choice of normalisation, sinusoidal time
//! embeddings, a graph-free ("detached") view of a `VarBuilder`, and parameter counting.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use flowfm_core::ForwardMode;
use flowfm_ops::fused_norm::{Activation, RowAffine};
use flowfm_ops::norm::is_buffer_name;
use flowfm_ops::{BatchNorm1d, BatchNormConfig, GroupNorm};
use serde::{Deserialize, Serialize};

/// Which normalisation a network uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NormKind {
    /// Batch normalisation with running statistics (SSL-Wearables' choice).
    Batch,
    /// Group normalisation with at most `groups` groups per layer: a layer of `c` channels uses
    /// the largest divisor of `c` that is `<= groups` (so narrow width multipliers still work).
    Group {
        /// Upper bound on the number of groups.
        groups: usize,
    },
}

/// The largest divisor of `channels` that is at most `max_groups` (at least 1).
pub fn group_count(channels: usize, max_groups: usize) -> usize {
    (1..=max_groups.min(channels).max(1))
        .rev()
        .find(|g| channels % g == 0)
        .unwrap_or(1)
}

/// A normalisation layer of either kind (parameters `weight`, `bias`, and for batch norm the
/// buffers `running_mean`, `running_var`).
#[derive(Clone, Debug)]
pub(crate) enum Norm {
    Batch(BatchNorm1d),
    Group(GroupNorm),
}

impl Norm {
    pub(crate) fn new(kind: NormKind, channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(match kind {
            NormKind::Batch => {
                Norm::Batch(BatchNorm1d::new(channels, BatchNormConfig::default(), vb)?)
            }
            NormKind::Group { groups } => Norm::Group(GroupNorm::new(
                group_count(channels, groups),
                channels,
                1e-5,
                vb,
            )?),
        })
    }

    /// The norm followed by `activation` (one fused op on the CPU).
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`; returns the same shape
    pub(crate) fn forward_act(
        &self,
        x: &Tensor,
        mode: ForwardMode,
        activation: Activation,
    ) -> Result<Tensor> {
        match self {
            Norm::Batch(bn) => bn.forward_act(x, mode, activation),
            Norm::Group(gn) => gn.forward_act(x, activation),
        }
    }
}

impl Norm {
    /// The evaluation-mode norm and `activation` as one transform per row, for a following
    /// `Conv1d::forward_prepared` (no autograd).
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`
    pub(crate) fn row_affine(&self, x: &Tensor, activation: Activation) -> Result<RowAffine> {
        match self {
            Norm::Batch(bn) => bn.row_affine(x, activation),
            Norm::Group(gn) => gn.row_affine(x, activation),
        }
    }

    /// The training-mode forward (batch statistics) that also adds this layer's input to
    /// `rec` when it is a batch norm; group norm has no running statistics and is applied as is.
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`; returns the same shape
    pub(crate) fn forward_act_recording(
        &self,
        x: &Tensor,
        activation: Activation,
        rec: &mut BatchNormRecorder,
    ) -> Result<Tensor> {
        match self {
            Norm::Batch(bn) => {
                rec.observe(x)?;
                bn.forward_act(x, ForwardMode::Train, activation)
            }
            Norm::Group(gn) => gn.forward_act(x, activation),
        }
    }

    /// Whether the layer keeps running statistics (batch norm).
    pub(crate) fn is_batch(&self) -> bool {
        matches!(self, Norm::Batch(_))
    }

    /// Overwrites the running mean and variance of a batch norm in place (the variables are
    /// shared with the `VarMap`, so checkpoints and the detached twin see the new values).
    pub(crate) fn set_running(&self, mean: &[f64], var: &[f64]) -> Result<()> {
        let Norm::Batch(bn) = self else {
            candle_core::bail!("set_running: group norm has no running statistics");
        };
        for (t, values, what) in [
            (bn.running_mean(), mean, "mean"),
            (bn.running_var(), var, "variance"),
        ] {
            if t.elem_count() != values.len() {
                candle_core::bail!(
                    "set_running: {} running {what} values for {} channels",
                    values.len(),
                    t.elem_count()
                );
            }
            let new = Tensor::from_slice(values, values.len(), t.device())?.to_dtype(t.dtype())?;
            // `Var::from_tensor` of a variable shares its storage: `set` writes the layer's buffer.
            Var::from_tensor(t)?.set(&new)?;
        }
        Ok(())
    }
}

/// Per-channel count, mean and sum of squared deviations of the values seen so far, pooled
/// over batches with the parallel update of Chan, Golub and LeVeque (exact, whatever the batch
/// sizes).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ChannelMoments {
    count: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl ChannelMoments {
    /// Adds every value of `x` `(batch, channels, samples)`, channel by channel.
    pub(crate) fn add(&mut self, x: &Tensor) -> Result<()> {
        let (b, c, l) = x.dims3()?;
        let n = (b * l) as f64;
        if n == 0.0 {
            return Ok(());
        }
        let xf = x.detach().to_dtype(DType::F64)?;
        let mean_t = xf.mean_keepdim(2)?.mean_keepdim(0)?;
        let m2_t = xf
            .broadcast_sub(&mean_t)?
            .sqr()?
            .sum_keepdim(2)?
            .sum_keepdim(0)?;
        let mean: Vec<f64> = mean_t.flatten_all()?.to_vec1()?;
        let m2: Vec<f64> = m2_t.flatten_all()?.to_vec1()?;
        if self.count == 0.0 {
            *self = Self { count: n, mean, m2 };
            return Ok(());
        }
        if self.mean.len() != c {
            candle_core::bail!(
                "batch-norm recalibration: {c} channels after {} (inputs changed shape)",
                self.mean.len()
            );
        }
        let total = self.count + n;
        for ((m, s), (bm, bs)) in self
            .mean
            .iter_mut()
            .zip(self.m2.iter_mut())
            .zip(mean.iter().zip(&m2))
        {
            let delta = bm - *m;
            *m += delta * n / total;
            *s += bs + delta * delta * self.count * n / total;
        }
        self.count = total;
        Ok(())
    }

    /// The mean and the unbiased variance (the convention of running variances), per channel;
    /// needs at least two values per channel.
    pub(crate) fn mean_and_unbiased_var(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        if self.count < 2.0 {
            candle_core::bail!(
                "batch-norm recalibration needs at least two values per channel, got {}",
                self.count
            );
        }
        let var = self.m2.iter().map(|s| s / (self.count - 1.0)).collect();
        Ok((self.mean.clone(), var))
    }
}

/// The inputs of every batch-norm layer of a network during recalibration passes, in the order
/// the forward visits them: one [`ChannelMoments`] per layer.
#[derive(Clone, Debug, Default)]
pub(crate) struct BatchNormRecorder {
    pub(crate) layers: Vec<ChannelMoments>,
    cursor: usize,
}

impl BatchNormRecorder {
    /// Call before each batch's forward.
    pub(crate) fn start_batch(&mut self) {
        self.cursor = 0;
    }

    fn observe(&mut self, x: &Tensor) -> Result<()> {
        if self.cursor == self.layers.len() {
            self.layers.push(ChannelMoments::default());
        }
        self.layers[self.cursor].add(x)?;
        self.cursor += 1;
        Ok(())
    }
}

/// Sinusoidal embedding of (possibly fractional) time values, as in "Attention is all you need"
/// and DDPM: `[sin(t w_0), .., sin(t w_{h-1}), cos(t w_0), .., cos(t w_{h-1})]` with
/// `w_j = 10000^(-j / h)` and `h = dim / 2`.
///
/// # Shapes
/// - `t`: `(batch,)`
/// - returns `(batch, dim)`; `dim` must be even
pub fn sinusoidal_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    if dim == 0 || dim % 2 != 0 {
        candle_core::bail!("sinusoidal_embedding: dim must be even and > 0, got {dim}");
    }
    let b = t.dims1()?;
    let half = dim / 2;
    let freqs: Vec<f64> = (0..half)
        .map(|j| (-(10000f64.ln()) * j as f64 / half as f64).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?.to_dtype(t.dtype())?;
    let args = t.reshape((b, 1))?.broadcast_mul(&freqs)?;
    Tensor::cat(&[&args.sin()?, &args.cos()?], 1)
}

/// A `VarBuilder` backend that hands out the tensors of another builder cut from the autograd
/// graph: parameters are `detach()`ed (sharing storage, so in-place optimiser updates stay
/// visible), batch-norm buffers are passed through unchanged so both views update the same
/// running statistics.
struct DetachedBackend<'a> {
    inner: VarBuilder<'a>,
}

impl SimpleBackend for DetachedBackend<'_> {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, _dev: &Device) -> Result<Tensor> {
        let t = self.inner.get_with_hints_dtype(s, name, h, dtype)?;
        Ok(if is_buffer_name(name) { t } else { t.detach() })
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> Result<Tensor> {
        let t = self.inner.get_unchecked_dtype(name, dtype)?;
        Ok(if is_buffer_name(name) { t } else { t.detach() })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// A builder over the same variables as `vb` (same prefix) whose parameters are detached.
///
/// A network built twice, once from `vb` and once from `detached_var_builder(&vb)`, shares its
/// weights between the two copies (no copy is made), but the second copy records no autograd
/// graph: candle has no global no-grad mode, and an op on a variable always records its inputs.
/// Optimisers and checkpoint loading update variables in place (`Var::set`), so the detached
/// copy always sees the current weights.
pub fn detached_var_builder<'a>(vb: &VarBuilder<'a>) -> VarBuilder<'a> {
    let prefix = vb.prefix();
    let root = VarBuilder::from_backend(
        Box::new(DetachedBackend { inner: vb.root() }),
        vb.dtype(),
        vb.device().clone(),
    );
    if prefix.is_empty() {
        root
    } else {
        root.pp(prefix)
    }
}

/// Parameter counts of a `VarMap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCount {
    /// Elements of trained parameters.
    pub trainable: usize,
    /// Elements of buffers (batch-norm running statistics), which the optimiser never touches.
    pub buffers: usize,
}

/// Counts the elements of every variable in `varmap`, split into parameters and buffers
/// (names recognised by [`flowfm_ops::norm::is_buffer_name`]).
pub fn count_parameters(varmap: &VarMap) -> Result<ParamCount> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    let mut count = ParamCount {
        trainable: 0,
        buffers: 0,
    };
    for (name, var) in data.iter() {
        let n = var.as_tensor().elem_count();
        if is_buffer_name(name) {
            count.buffers += n;
        } else {
            count.trainable += n;
        }
    }
    Ok(count)
}

/// The trainable variables of `varmap` (buffers excluded), sorted by name, for an optimiser.
pub fn trainable_vars(varmap: &VarMap) -> Result<Vec<candle_core::Var>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
    let mut named: Vec<(&String, &candle_core::Var)> = data
        .iter()
        .filter(|(name, _)| !is_buffer_name(name))
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    Ok(named.into_iter().map(|(_, v)| v.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    #[test]
    fn group_count_is_the_largest_divisor_not_above_the_bound() {
        assert_eq!(group_count(64, 8), 8);
        assert_eq!(group_count(12, 8), 6);
        assert_eq!(group_count(7, 8), 7);
        assert_eq!(group_count(7, 4), 1);
        assert_eq!(group_count(1, 32), 1);
    }

    #[test]
    fn sinusoidal_embedding_matches_closed_form() {
        let t = Tensor::new(&[0.0f64, 3.0], &Device::Cpu).unwrap();
        let e = sinusoidal_embedding(&t, 4).unwrap();
        let got: Vec<f64> = e.flatten_all().unwrap().to_vec1().unwrap();
        // h = 2: w_0 = 1, w_1 = 10000^(-1/2) = 0.01.
        let expected = [
            0.0,
            0.0,
            1.0,
            1.0,
            3f64.sin(),
            0.03f64.sin(),
            3f64.cos(),
            0.03f64.cos(),
        ];
        Tolerance::F64.assert_close(&got, &expected);
        assert!(sinusoidal_embedding(&t, 3).is_err());
    }
}
