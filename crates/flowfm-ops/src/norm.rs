//! Normalisation layers: group norm (Wu & He 2018) and batch norm (Ioffe & Szegedy 2015) for
//! `(batch, channels, samples)` tensors, composed from candle primitives whose gradients are
//! verified in `tests/`.

use crate::fused_norm::{
    fused_norm_act, norm_row_affine, Activation, BatchStats, Grouping, RowAffine, Statistics,
};
use candle_core::{Result, Tensor, Var, D};
use candle_nn::VarBuilder;
use flowfm_core::ForwardMode;
use std::sync::Arc;

/// Group normalisation with an optional per-channel affine transform.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`; `gamma`, `beta`: `(channels,)`
/// - returns the shape of `x`
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (b, c, l) = x.dims3()?;
    if groups == 0 || c % groups != 0 {
        candle_core::bail!("group_norm: {c} channels are not divisible into {groups} groups");
    }
    let xg = x.contiguous()?.reshape((b, groups, (c / groups) * l))?;
    let mean = xg.mean_keepdim(D::Minus1)?;
    let centred = xg.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape((b, c, l))?;
    affine(&normed, gamma, beta)
}

/// `activation(x)` composed from candle ops (the path off the CPU).
fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::Identity => Ok(x.clone()),
        Activation::Relu => x.relu(),
        Activation::Silu => x.silu(),
    }
}

fn affine(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>) -> Result<Tensor> {
    let c = x.dim(1)?;
    let mut y = x.clone();
    if let Some(g) = gamma {
        y = y.broadcast_mul(&g.reshape((1, c, 1))?)?;
    }
    if let Some(bt) = beta {
        y = y.broadcast_add(&bt.reshape((1, c, 1))?)?;
    }
    Ok(y)
}

/// A group-norm layer; parameters `weight` (ones) and `bias` (zeros).
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// A layer over `channels` in `groups` groups (eps 1e-5, as PyTorch).
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || channels % groups != 0 {
            candle_core::bail!(
                "GroupNorm: {channels} channels are not divisible into {groups} groups"
            );
        }
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", flowfm_core::init::ONES)?,
            bias: vb.get_with_hints(channels, "bias", flowfm_core::init::ZEROS)?,
            groups,
            eps,
        })
    }

    /// # Shapes
    /// - `x`: `(batch, channels, samples)`; returns the same shape
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Identity)
    }

    /// The norm followed by `activation`, fused into one op on the CPU.
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`; returns the same shape
    pub fn forward_act(&self, x: &Tensor, activation: Activation) -> Result<Tensor> {
        if crate::uses_own_kernels(x.device()) {
            let (y, _) = fused_norm_act(
                x,
                &self.weight,
                &self.bias,
                Grouping::Groups(self.groups),
                Statistics::FromInput,
                self.eps,
                activation,
            )?;
            return Ok(y);
        }
        let y = group_norm(
            x,
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
        )?;
        activate(&y, activation)
    }

    /// The norm and `activation` as one transform per row, to be applied by the consumer
    /// ([`crate::conv::conv1d_prepared`]); evaluation only. CPU kernels only (an error on other
    /// devices).
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`
    pub fn row_affine(&self, x: &Tensor, activation: Activation) -> Result<RowAffine> {
        norm_row_affine(
            x,
            &self.weight,
            &self.bias,
            Grouping::Groups(self.groups),
            Statistics::FromInput,
            self.eps,
            activation,
        )
    }

    /// [`GroupNorm::forward_modulated`] as one transform per row (see [`GroupNorm::row_affine`]).
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`; `scale`, `shift`: `(batch, channels)`
    pub fn row_affine_modulated(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        activation: Activation,
    ) -> Result<RowAffine> {
        check_modulation(
            "GroupNorm::row_affine_modulated",
            batch_channels(x)?,
            scale,
            shift,
        )?;
        let (gamma, beta) = self.folded(scale, shift)?;
        norm_row_affine(
            x,
            &gamma,
            &beta,
            Grouping::Groups(self.groups),
            Statistics::FromInput,
            self.eps,
            activation,
        )
    }

    /// The trained `(weight, bias)`, the number of groups and `eps`, for ops that fuse the norm
    /// into more work.
    pub(crate) fn parts(&self) -> (&Tensor, &Tensor, usize, f64) {
        (&self.weight, &self.bias, self.groups, self.eps)
    }

    /// The modulation folded into the affine transform: `(gamma * scale, beta * scale + shift)`,
    /// both `(batch, channels)`.
    pub(crate) fn folded(&self, scale: &Tensor, shift: &Tensor) -> Result<(Tensor, Tensor)> {
        let gamma = self.weight.unsqueeze(0)?.broadcast_mul(scale)?;
        let beta = self.bias.unsqueeze(0)?.broadcast_mul(scale)?.add(shift)?;
        Ok((gamma, beta))
    }

    /// `activation(group_norm(x) * scale + shift)` with a per-sample, per-channel modulation
    /// (FiLM / adaptive group norm). On the CPU the modulation is folded into the norm's affine
    /// transform (`gamma * scale`, `beta * scale + shift`, small `(batch, channels)` tensors) and
    /// everything runs as one fused op.
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`; `scale`, `shift`: `(batch, channels)`
    /// - returns the shape of `x`
    pub fn forward_modulated(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        activation: Activation,
    ) -> Result<Tensor> {
        check_modulation(
            "GroupNorm::forward_modulated",
            batch_channels(x)?,
            scale,
            shift,
        )?;
        if crate::uses_own_kernels(x.device()) {
            let (gamma, beta) = self.folded(scale, shift)?;
            let (y, _) = fused_norm_act(
                x,
                &gamma,
                &beta,
                Grouping::Groups(self.groups),
                Statistics::FromInput,
                self.eps,
                activation,
            )?;
            return Ok(y);
        }
        let y = self
            .forward(x)?
            .broadcast_mul(&scale.unsqueeze(2)?)?
            .broadcast_add(&shift.unsqueeze(2)?)?;
        activate(&y, activation)
    }
}

/// That a FiLM modulation `scale`, `shift` is `(batch, channels)` of the normalised tensor;
/// `what` names the caller in the error.
pub(crate) fn check_modulation(
    what: &str,
    (b, c): (usize, usize),
    scale: &Tensor,
    shift: &Tensor,
) -> Result<()> {
    if scale.dims() != [b, c] || shift.dims() != [b, c] {
        candle_core::bail!(
            "{what}: scale {:?} and shift {:?} must be ({b}, {c})",
            scale.dims(),
            shift.dims()
        );
    }
    Ok(())
}

/// `(batch, channels)` of a `(batch, channels, samples)` tensor.
fn batch_channels(x: &Tensor) -> Result<(usize, usize)> {
    let (b, c, _) = x.dims3()?;
    Ok((b, c))
}

/// Batch statistics normalisation (training mode) without affine or running statistics.
/// Returns the normalised tensor, the batch mean and the biased batch variance `(channels,)`.
///
/// # Shapes
/// - `x`: `(batch, channels, samples)`
pub fn batch_norm_train(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _) = x.dims3()?;
    let mean = x.mean_keepdim(2)?.mean_keepdim(0)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(2)?.mean_keepdim(0)?;
    let normed = centred.broadcast_div(&(&var + eps)?.sqrt()?)?;
    Ok((normed, mean.reshape(c)?, var.reshape(c)?))
}

/// Configuration of [`BatchNorm1d`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch statistic in the running averages.
    pub momentum: f64,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

/// Batch normalisation over `(batch, samples)` per channel, with running statistics.
///
/// Parameters `weight`, `bias` (trained) and buffers `running_mean`, `running_var` (updated in
/// training mode from detached batch statistics; the running variance is unbiased, as in
/// PyTorch). Buffers live in the `VarMap` so checkpoints carry them; they never receive gradients.
#[derive(Clone, Debug)]
pub struct BatchNorm1d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    cfg: BatchNormConfig,
}

/// Whether a parameter name is a batch-norm buffer (not trained by the optimiser).
pub fn is_buffer_name(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

impl BatchNorm1d {
    /// A layer over `channels`.
    pub fn new(channels: usize, cfg: BatchNormConfig, vb: VarBuilder) -> Result<Self> {
        let running_mean = vb.get_with_hints(channels, "running_mean", flowfm_core::init::ZEROS)?;
        let running_var = vb.get_with_hints(channels, "running_var", flowfm_core::init::ONES)?;
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", flowfm_core::init::ONES)?,
            bias: vb.get_with_hints(channels, "bias", flowfm_core::init::ZEROS)?,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            cfg,
        })
    }

    /// The running mean `(channels,)`.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running variance `(channels,)`.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// # Shapes
    /// - `x`: `(batch, channels, samples)`; returns the same shape
    pub fn forward(&self, x: &Tensor, mode: ForwardMode) -> Result<Tensor> {
        self.forward_act(x, mode, Activation::Identity)
    }

    /// The norm followed by `activation`, fused into one op on the CPU.
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`; returns the same shape
    pub fn forward_act(
        &self,
        x: &Tensor,
        mode: ForwardMode,
        activation: Activation,
    ) -> Result<Tensor> {
        let (b, _, l) = x.dims3()?;
        if mode == ForwardMode::Train && b * l < 2 {
            candle_core::bail!(
                "BatchNorm1d: training needs more than one value per channel, got {b}x{l}"
            );
        }
        if !crate::uses_own_kernels(x.device()) {
            return activate(&self.forward_composed(x, mode)?, activation);
        }
        match mode {
            ForwardMode::Train => {
                let (y, stats) = fused_norm_act(
                    x,
                    &self.weight,
                    &self.bias,
                    Grouping::PerChannel,
                    Statistics::FromInput,
                    self.cfg.eps,
                    activation,
                )?;
                self.record_batch(stats, b * l)?;
                Ok(y)
            }
            ForwardMode::Eval => {
                let mean: Vec<f64> = self
                    .running_mean
                    .as_tensor()
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec1()?;
                let var: Vec<f64> = self
                    .running_var
                    .as_tensor()
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec1()?;
                let (y, _) = fused_norm_act(
                    x,
                    &self.weight,
                    &self.bias,
                    Grouping::PerChannel,
                    Statistics::Fixed {
                        mean: Arc::new(mean),
                        var: Arc::new(var),
                    },
                    self.cfg.eps,
                    activation,
                )?;
                Ok(y)
            }
        }
    }

    /// The evaluation-mode norm (running statistics) and `activation` as one transform per row,
    /// to be applied by the consumer ([`crate::conv::conv1d_prepared`]).
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`
    pub fn row_affine(&self, x: &Tensor, activation: Activation) -> Result<RowAffine> {
        let stats = |t: &Var| -> Result<Vec<f64>> {
            t.as_tensor().to_dtype(candle_core::DType::F64)?.to_vec1()
        };
        norm_row_affine(
            x,
            &self.weight,
            &self.bias,
            Grouping::PerChannel,
            Statistics::Fixed {
                mean: Arc::new(stats(&self.running_mean)?),
                var: Arc::new(stats(&self.running_var)?),
            },
            self.cfg.eps,
            activation,
        )
    }

    /// `running = (1 - momentum) * running + momentum * batch`, outside the autograd graph.
    /// The trained `(weight, bias)` and `eps`, for ops that fuse the norm into more work.
    pub(crate) fn parts(&self) -> (&Tensor, &Tensor, f64) {
        (&self.weight, &self.bias, self.cfg.eps)
    }

    /// Folds the batch statistics `(mean, biased variance)` of a training forward pass over `n`
    /// values per channel into the running averages (the variance made unbiased, as PyTorch).
    pub(crate) fn record_batch(&self, stats: Option<BatchStats>, n: usize) -> Result<()> {
        let Some((mean, var)) = stats else {
            candle_core::bail!("BatchNorm1d: the fused op returned no batch statistics");
        };
        let n = n as f64;
        let unbiased: Vec<f64> = var.iter().map(|v| v * n / (n - 1.0)).collect();
        self.update_running(&mean, &unbiased)
    }

    fn update_running(&self, mean: &[f64], unbiased_var: &[f64]) -> Result<()> {
        let m = self.cfg.momentum;
        let dev = self.running_mean.device().clone();
        let dt = self.running_mean.dtype();
        let bm = Tensor::from_slice(mean, mean.len(), &dev)?.to_dtype(dt)?;
        let bv = Tensor::from_slice(unbiased_var, unbiased_var.len(), &dev)?.to_dtype(dt)?;
        let rm = ((self.running_mean.as_tensor().detach() * (1.0 - m))? + (bm * m)?)?;
        let rv = ((self.running_var.as_tensor().detach() * (1.0 - m))? + (bv * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }

    /// The same layer composed from candle primitives (used on non-CPU devices, and as the
    /// reference the fused op is tested against).
    ///
    /// # Shapes
    /// - `x`: `(batch, channels, samples)`; returns the same shape
    pub fn forward_composed(&self, x: &Tensor, mode: ForwardMode) -> Result<Tensor> {
        let (b, c, l) = x.dims3()?;
        let normed = match mode {
            ForwardMode::Train => {
                let n = b * l;
                let (normed, mean, var) = batch_norm_train(x, self.cfg.eps)?;
                let unbiased = (var.detach() * (n as f64 / (n as f64 - 1.0)))?;
                let mean: Vec<f64> = mean.detach().to_dtype(candle_core::DType::F64)?.to_vec1()?;
                let unbiased: Vec<f64> = unbiased.to_dtype(candle_core::DType::F64)?.to_vec1()?;
                self.update_running(&mean, &unbiased)?;
                normed
            }
            ForwardMode::Eval => {
                let dt = x.dtype();
                let mean = self
                    .running_mean
                    .as_tensor()
                    .detach()
                    .to_dtype(dt)?
                    .reshape((1, c, 1))?;
                let var = self
                    .running_var
                    .as_tensor()
                    .detach()
                    .to_dtype(dt)?
                    .reshape((1, c, 1))?;
                x.broadcast_sub(&mean)?
                    .broadcast_div(&(var + self.cfg.eps)?.sqrt()?)?
            }
        };
        affine(&normed, Some(&self.weight), Some(&self.bias))
    }
}
