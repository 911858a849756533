//! The representation encoder: SSL-Wearables' 1-D ResNet-V2 ("HARNet", Yuan et al., npj Digital
//! Medicine 2024), with presets for 10 s, 30 s and 5 s windows at 30 Hz and a width multiplier.
//!
//! Each stage is `conv (k=5, circular) -> n pre-activation residual blocks -> norm -> ReLU ->
//! anti-aliased downsample`; a residual block is `x + conv2(relu(bn2(conv1(relu(bn1(x))))))`.
//! Convolutions have no bias. The blur downsampler of factor `f` and order `o` pads by
//! `o (f - 1) / 2` with a kernel of `o (f - 1) + f` taps, so it maps `L` samples to
//! `floor(L / f)`: the presets' factors multiply to the window length and end at length 1.

use crate::error::ModelError;
use crate::layers::{detached_var_builder, BatchNormRecorder, Norm, NormKind};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use flowfm_core::{Encoder, ForwardMode};
use flowfm_ops::fused_norm::Activation;
use flowfm_ops::{BlurDownsample, Conv1d, Conv1dConfig, Conv1dSpec, PaddingMode};
use serde::{Deserialize, Serialize};

/// One stage of the encoder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Output channels at width 1 (scaled by [`EncoderConfig::width`]).
    pub channels: usize,
    /// Number of residual blocks after the stage's first convolution.
    pub res_blocks: usize,
    /// Downsampling factor at the end of the stage (`>= 2`).
    pub down_factor: usize,
    /// B-spline order of the anti-aliasing blur; `down_order * (down_factor - 1)` must be even.
    pub down_order: usize,
}

impl StageConfig {
    const fn new(
        channels: usize,
        res_blocks: usize,
        down_factor: usize,
        down_order: usize,
    ) -> Self {
        Self {
            channels,
            res_blocks,
            down_factor,
            down_order,
        }
    }
}

fn default_width() -> f64 {
    1.0
}

/// Configuration of a [`HarNet`] encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Input channels (3 for a tri-axial accelerometer).
    pub in_channels: usize,
    /// Samples per window; the encoder accepts exactly this length.
    pub window_len: usize,
    /// Kernel size of every convolution (odd; circular padding `kernel_size / 2`).
    pub kernel_size: usize,
    /// The stages, in order.
    pub stages: Vec<StageConfig>,
    /// Normalisation (batch norm as SSL-Wearables, or group norm).
    pub norm: NormKind,
    /// Width multiplier: stage `i` has `max(1, round(stages[i].channels * width))` channels.
    #[serde(default = "default_width")]
    pub width: f64,
}

impl EncoderConfig {
    /// HARNet10: 10 s at 30 Hz (3 x 300), channels 64/128/256/512/1024, residual blocks
    /// 2/2/2/2/0, downsampling (factor, order) (2,2), (2,2), (5,1), (5,1), (3,1); lengths
    /// 300 -> 150 -> 75 -> 15 -> 3 -> 1; a 1024-d representation; 10,457,408 parameters.
    pub fn harnet10() -> Self {
        Self {
            in_channels: 3,
            window_len: 300,
            kernel_size: 5,
            stages: vec![
                StageConfig::new(64, 2, 2, 2),
                StageConfig::new(128, 2, 2, 2),
                StageConfig::new(256, 2, 5, 1),
                StageConfig::new(512, 2, 5, 1),
                StageConfig::new(1024, 0, 3, 1),
            ],
            norm: NormKind::Batch,
            width: 1.0,
        }
    }

    /// HARNet30: 30 s at 30 Hz (3 x 900), as SSL-Wearables: same channels and blocks as
    /// [`EncoderConfig::harnet10`], downsampling (3,1), (3,1), (5,1), (5,1), (4,0) (a box filter
    /// for the factor 4, since order 1 would need an odd padding); lengths
    /// 900 -> 300 -> 100 -> 20 -> 4 -> 1; a 1024-d representation.
    pub fn harnet10_30s() -> Self {
        let mut cfg = Self::harnet10();
        cfg.window_len = 900;
        let downs = [(3, 1), (3, 1), (5, 1), (5, 1), (4, 0)];
        for (stage, (f, o)) in cfg.stages.iter_mut().zip(downs) {
            stage.down_factor = f;
            stage.down_order = o;
        }
        cfg
    }

    /// HARNet5: 5 s at 30 Hz (3 x 150), as SSL-Wearables: channels 64/128/256/256/512, residual
    /// blocks 2/2/2/2/0, downsampling (2,2), (2,2), (3,1), (3,1), (3,1); lengths
    /// 150 -> 75 -> 37 -> 12 -> 4 -> 1; a 512-d representation.
    pub fn harnet5s() -> Self {
        Self {
            in_channels: 3,
            window_len: 150,
            kernel_size: 5,
            stages: vec![
                StageConfig::new(64, 2, 2, 2),
                StageConfig::new(128, 2, 2, 2),
                StageConfig::new(256, 2, 3, 1),
                StageConfig::new(256, 2, 3, 1),
                StageConfig::new(512, 0, 3, 1),
            ],
            norm: NormKind::Batch,
            width: 1.0,
        }
    }

    /// The same architecture with every stage's channels scaled by `width` (checked by
    /// [`EncoderConfig::validate`]).
    pub fn with_width(mut self, width: f64) -> Self {
        self.width = width;
        self
    }

    /// The same architecture with another normalisation.
    pub fn with_norm(mut self, norm: NormKind) -> Self {
        self.norm = norm;
        self
    }

    /// The channels of every stage after the width multiplier.
    pub fn stage_channels(&self) -> Vec<usize> {
        self.stages
            .iter()
            .map(|s| ((s.channels as f64 * self.width).round() as usize).max(1))
            .collect()
    }

    /// The sequence lengths: the window length, then the length after each stage.
    pub fn lengths(&self) -> Result<Vec<usize>> {
        self.validate()?;
        Ok(self.lengths_unchecked())
    }

    fn lengths_unchecked(&self) -> Vec<usize> {
        let mut lens = vec![self.window_len];
        let mut l = self.window_len;
        for s in &self.stages {
            l /= s.down_factor;
            lens.push(l);
        }
        lens
    }

    /// Dimension of the representation: last stage's channels times its output length.
    pub fn repr_dim(&self) -> usize {
        let last_len = self.lengths_unchecked().last().copied().unwrap_or(0);
        self.stage_channels().last().copied().unwrap_or(0) * last_len
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> std::result::Result<(), ModelError> {
        if self.in_channels == 0 {
            return Err(ModelError::config("in_channels", "must be > 0"));
        }
        if self.window_len == 0 {
            return Err(ModelError::config("window_len", "must be > 0"));
        }
        if self.kernel_size == 0 || self.kernel_size % 2 == 0 {
            return Err(ModelError::config(
                "kernel_size",
                format!(
                    "must be odd (length-preserving circular padding), got {}",
                    self.kernel_size
                ),
            ));
        }
        if !(self.width.is_finite() && self.width > 0.0) {
            return Err(ModelError::config(
                "width",
                format!("must be finite and > 0, got {}", self.width),
            ));
        }
        if self.stages.is_empty() {
            return Err(ModelError::config("stages", "needs at least one stage"));
        }
        if let NormKind::Group { groups: 0 } = self.norm {
            return Err(ModelError::config("norm.groups", "must be > 0"));
        }
        let pad = self.kernel_size / 2;
        let mut l = self.window_len;
        for (i, s) in self.stages.iter().enumerate() {
            if s.channels == 0 {
                return Err(ModelError::config(
                    format!("stages[{i}].channels"),
                    "must be > 0",
                ));
            }
            if s.down_factor < 2 {
                return Err(ModelError::config(
                    format!("stages[{i}].down_factor"),
                    format!("must be >= 2, got {}", s.down_factor),
                ));
            }
            if (s.down_order * (s.down_factor - 1)) % 2 != 0 {
                return Err(ModelError::config(
                    format!("stages[{i}].down_order"),
                    format!(
                        "order {} * (factor {} - 1) must be even (centred blur padding)",
                        s.down_order, s.down_factor
                    ),
                ));
            }
            if l < pad.max(1) || l < s.down_factor {
                return Err(ModelError::config(
                    format!("stages[{i}]"),
                    format!(
                        "input length {l} is too short for circular padding {pad} and downsampling by {} (window_len {})",
                        s.down_factor, self.window_len
                    ),
                ));
            }
            l /= s.down_factor;
        }
        Ok(())
    }
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self::harnet10()
    }
}

fn conv(c_in: usize, c_out: usize, kernel: usize, vb: VarBuilder) -> Result<Conv1d> {
    let cfg = Conv1dConfig {
        spec: Conv1dSpec {
            padding: kernel / 2,
            padding_mode: PaddingMode::Circular,
            ..Default::default()
        },
        bias: false,
    };
    Conv1d::new(c_in, c_out, kernel, cfg, vb)
}

/// A pre-activation residual block; fields `bn1`, `conv1`, `bn2`, `conv2`.
#[derive(Clone, Debug)]
struct ResBlock {
    bn1: Norm,
    conv1: Conv1d,
    bn2: Norm,
    conv2: Conv1d,
}

impl ResBlock {
    fn new(channels: usize, kernel: usize, norm: NormKind, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            bn1: Norm::new(norm, channels, vb.pp("bn1"))?,
            conv1: conv(channels, channels, kernel, vb.pp("conv1"))?,
            bn2: Norm::new(norm, channels, vb.pp("bn2"))?,
            conv2: conv(channels, channels, kernel, vb.pp("conv2"))?,
        })
    }

    fn forward(&self, x: &Tensor, mode: ForwardMode) -> Result<Tensor> {
        if mode == ForwardMode::Eval
            && flowfm_ops::uses_own_kernels(x.device())
            && !x.track_op()
            && !self.conv1.weight().track_op()
        {
            // No autograd graph: each norm and its ReLU are applied while the following
            // convolution copies its input, and the residual is added inside the second
            // convolution (`flowfm_ops::conv::conv1d_prepared`); the same values.
            let prep1 = self.bn1.row_affine(x, Activation::Relu)?;
            let h = self.conv1.forward_prepared(x, Some(&prep1), None)?;
            let prep2 = self.bn2.row_affine(&h, Activation::Relu)?;
            return self.conv2.forward_prepared(&h, Some(&prep2), Some(x));
        }
        if mode == ForwardMode::Train {
            if let (Norm::Batch(bn1), Norm::Batch(bn2)) = (&self.bn1, &self.bn2) {
                // The whole block as one op where it applies: the same values and gradients,
                // without an autograd node (and a gradient accumulator) per layer.
                if let Some(y) = flowfm_ops::block::batch_norm_block_train(
                    x,
                    (bn1, &self.conv1),
                    (bn2, &self.conv2),
                    Activation::Relu,
                )? {
                    return Ok(y);
                }
            }
        }
        let h = self
            .conv1
            .forward(&self.bn1.forward_act(x, mode, Activation::Relu)?)?;
        let h = self
            .conv2
            .forward(&self.bn2.forward_act(&h, mode, Activation::Relu)?)?;
        x + h
    }

    fn forward_recording(&self, x: &Tensor, rec: &mut BatchNormRecorder) -> Result<Tensor> {
        let h = self
            .conv1
            .forward(&self.bn1.forward_act_recording(x, Activation::Relu, rec)?)?;
        let h =
            self.conv2
                .forward(&self.bn2.forward_act_recording(&h, Activation::Relu, rec)?)?;
        x + h
    }
}

/// One stage; fields `conv`, `blocks`, `bn` (the blur downsampler has no parameters).
#[derive(Clone, Debug)]
struct Stage {
    conv: Conv1d,
    blocks: Vec<ResBlock>,
    bn: Norm,
    down: BlurDownsample,
}

impl Stage {
    fn forward(&self, x: &Tensor, mode: ForwardMode) -> Result<Tensor> {
        let mut h = self.conv.forward(x)?;
        for block in &self.blocks {
            h = block.forward(&h, mode)?;
        }
        let h = self.bn.forward_act(&h, mode, Activation::Relu)?;
        self.down.forward(&h)
    }

    fn forward_recording(&self, x: &Tensor, rec: &mut BatchNormRecorder) -> Result<Tensor> {
        let mut h = self.conv.forward(x)?;
        for block in &self.blocks {
            h = block.forward_recording(&h, rec)?;
        }
        let h = self.bn.forward_act_recording(&h, Activation::Relu, rec)?;
        self.down.forward(&h)
    }

    /// The norms in the order [`Stage::forward_recording`] visits them.
    fn norms(&self) -> impl Iterator<Item = &Norm> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.bn1, &b.bn2])
            .chain(std::iter::once(&self.bn))
    }
}

#[derive(Clone, Debug)]
struct Layers {
    stages: Vec<Stage>,
}

impl Layers {
    fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let channels = cfg.stage_channels();
        let mut c_in = cfg.in_channels;
        let mut stages = Vec::with_capacity(cfg.stages.len());
        for (i, (s, &c)) in cfg.stages.iter().zip(&channels).enumerate() {
            let vs = vb.pp("stages").pp(i);
            let blocks = (0..s.res_blocks)
                .map(|j| ResBlock::new(c, cfg.kernel_size, cfg.norm, vs.pp("blocks").pp(j)))
                .collect::<Result<Vec<_>>>()?;
            stages.push(Stage {
                conv: conv(c_in, c, cfg.kernel_size, vs.pp("conv"))?,
                blocks,
                bn: Norm::new(cfg.norm, c, vs.pp("bn"))?,
                down: BlurDownsample::new(s.down_factor, s.down_order)?,
            });
            c_in = c;
        }
        Ok(Self { stages })
    }

    fn forward(&self, x: &Tensor, mode: ForwardMode) -> Result<Tensor> {
        let mut h = x.clone();
        for stage in &self.stages {
            h = stage.forward(&h, mode)?;
        }
        h.flatten_from(1)
    }

    fn forward_recording(&self, x: &Tensor, rec: &mut BatchNormRecorder) -> Result<Tensor> {
        rec.start_batch();
        let mut h = x.clone();
        for stage in &self.stages {
            h = stage.forward_recording(&h, rec)?;
        }
        Ok(h)
    }

    fn norms(&self) -> impl Iterator<Item = &Norm> {
        self.stages.iter().flat_map(Stage::norms)
    }
}

/// The HARNet encoder. Parameter names follow the field paths: `stages.{i}.conv.weight`,
/// `stages.{i}.blocks.{j}.{bn1,conv1,bn2,conv2}.*`, `stages.{i}.bn.*`.
#[derive(Clone, Debug)]
pub struct HarNet {
    cfg: EncoderConfig,
    layers: Layers,
    /// The same weights, detached (see [`detached_var_builder`]), for graph-free inference.
    detached: Layers,
}

impl HarNet {
    /// Builds the encoder; weights come from `vb` (a seeded builder for a new model).
    pub fn new(cfg: EncoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let layers = Layers::new(&cfg, vb.clone())?;
        let detached = Layers::new(&cfg, detached_var_builder(&vb))?;
        Ok(Self {
            cfg,
            layers,
            detached,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let (_, c, l) = x.dims3()?;
        if c != self.cfg.in_channels || l != self.cfg.window_len {
            candle_core::bail!(
                "HarNet: expected input (batch, {}, {}), got {:?}",
                self.cfg.in_channels,
                self.cfg.window_len,
                x.dims()
            );
        }
        Ok(())
    }

    /// Encodes windows (gradients flow into the parameters).
    ///
    /// # Shapes
    /// - `x`: `(batch, in_channels, window_len)`
    /// - returns `(batch, repr_dim)`
    pub fn forward(&self, x: &Tensor, mode: ForwardMode) -> Result<Tensor> {
        self.check_input(x)?;
        flowfm_ops::on_worker(|| self.layers.forward(x, mode))
    }

    /// Encodes windows in evaluation mode without building an autograd graph: the input and
    /// every parameter are detached (the weights are shared, not copied). Use for inference,
    /// linear probes and feature extraction.
    ///
    /// # Shapes
    /// - `x`: `(batch, in_channels, window_len)`
    /// - returns `(batch, repr_dim)`
    pub fn encode_detached(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let x = x.detach();
        flowfm_ops::on_worker(|| {
            // Evaluation-mode norms use running statistics: windows do not interact, and chunks
            // of the batch run concurrently (`flowfm_ops::eval_in_chunks`).
            flowfm_ops::eval_in_chunks(x.dim(0)?, |start, len| {
                self.detached
                    .forward(&x.narrow(0, start, len)?, ForwardMode::Eval)
            })
        })
    }

    /// Recalibrates batch norm: sets every layer's running mean and (unbiased) running variance
    /// to the statistics of that layer's inputs over all windows of `batches`, pooled exactly
    /// (not a moving average, so the result does not depend on how the windows are batched for
    /// the first layer, and on the batching only through the batch statistics that normalise
    /// the deeper layers' inputs, as in training mode). The passes run on the detached twin in
    /// training mode (batch statistics), build no autograd graph and change no parameter.
    /// Returns the number of layers set (0 for a group-norm encoder, which has nothing to
    /// recalibrate). Call it on the training windows after the weights changed and before the
    /// network predicts in evaluation mode.
    ///
    /// # Shapes
    /// - every batch: `(batch, in_channels, window_len)`
    pub fn recalibrate_batch_norm<I>(&self, batches: I) -> Result<usize>
    where
        I: IntoIterator<Item = Result<Tensor>>,
    {
        if !self.detached.norms().any(Norm::is_batch) {
            return Ok(0);
        }
        let mut rec = BatchNormRecorder::default();
        let mut seen = 0usize;
        for x in batches {
            let x = x?;
            self.check_input(&x)?;
            self.detached.forward_recording(&x.detach(), &mut rec)?;
            seen += 1;
        }
        if seen == 0 {
            candle_core::bail!("batch-norm recalibration needs at least one batch of windows");
        }
        let norms: Vec<&Norm> = self.detached.norms().filter(|n| n.is_batch()).collect();
        if norms.len() != rec.layers.len() {
            candle_core::bail!(
                "batch-norm recalibration saw {} layers, the encoder has {}",
                rec.layers.len(),
                norms.len()
            );
        }
        for (norm, moments) in norms.iter().zip(&rec.layers) {
            let (mean, var) = moments.mean_and_unbiased_var()?;
            norm.set_running(&mean, &var)?;
        }
        Ok(norms.len())
    }
}

impl Encoder for HarNet {
    fn repr_dim(&self) -> usize {
        self.cfg.repr_dim()
    }

    fn encode(&self, x: &Tensor, mode: ForwardMode) -> Result<Tensor> {
        self.forward(x, mode)
    }
}
