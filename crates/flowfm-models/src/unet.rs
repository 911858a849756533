//! The conditional 1-D U-Net shared by the flow-matching velocity field ([`FlowUNet`]) and the
//! DDPM noise predictor ([`DiffusionUNet`]).
//!
//! Residual blocks are `GroupNorm -> SiLU -> conv -> adaptive GroupNorm -> SiLU -> conv` plus a
//! (1x1 when the width changes) skip. The adaptive norm scales and shifts every channel by
//! `(1 + scale, shift) = Linear(SiLU([time_emb, cond_emb]))` (FiLM / adaptive group norm, as in
//! Dhariwal & Nichol 2021), where `time_emb` is an MLP of a sinusoidal embedding of the time and
//! `cond_emb` an MLP of the representation `z`, or a learned null embedding (initialised to
//! zero) when the conditioning is [`Conditioning::None`].
//!
//! Lengths: the U-Net halves the length `levels - 1` times, so the length must be a multiple of
//! `2^(levels - 1)` (300 = 4 * 75 works exactly with 3 levels). Other lengths are refused with an
//! error under [`LengthPolicy::Exact`]; under [`LengthPolicy::ZeroPad`] the input is explicitly
//! zero-padded (split between both ends) to the next multiple and the output is cropped back to
//! the input length.

use crate::error::ModelError;
use crate::layers::{detached_var_builder, sinusoidal_embedding};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use flowfm_core::{Conditioning, Denoiser, DiffusionSteps, FlowTimes, VelocityField};
use flowfm_ops::activation::silu;
use flowfm_ops::fused_norm::Activation;
use flowfm_ops::resample::upsample_nearest1d;
use flowfm_ops::{BlurDownsample, Conv1d, Conv1dConfig, Conv1dSpec, GroupNorm, Linear};
use serde::{Deserialize, Serialize};

/// How the U-Net halves the length between levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downsampling {
    /// Anti-aliased blur (factor 2, order 2: kernel [1, 3, 3, 1] / 8); no parameters.
    Blur,
    /// A learned convolution with kernel 3, stride 2, zero padding 1.
    StridedConv,
}

/// What the U-Net does with a length that is not a multiple of `2^(levels - 1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthPolicy {
    /// Refuse it with an error.
    Exact,
    /// Zero-pad both ends to the next multiple and crop the output back (documented, explicit).
    ZeroPad,
}

/// Configuration of the U-Net.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels of the signal (3 for a tri-axial accelerometer).
    pub in_channels: usize,
    /// Channels of the first level; also the dimension of the sinusoidal embedding (even).
    pub base_channels: usize,
    /// Channel multiplier per level; `levels = channel_mults.len()`.
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level on the way down (and on the way up).
    pub res_blocks: usize,
    /// Width of the time-embedding MLP.
    pub time_embed_dim: usize,
    /// Dimension of the representation `z` (0: unconditional only).
    pub cond_dim: usize,
    /// Width of the representation-embedding MLP (and of the null embedding).
    pub cond_embed_dim: usize,
    /// Groups of every group norm (must divide every level's channels).
    pub groups: usize,
    /// Kernel size of the convolutions (odd, zero padding `kernel_size / 2`).
    pub kernel_size: usize,
    /// How the length is halved.
    pub downsampling: Downsampling,
    /// What happens to lengths that are not a multiple of `2^(levels - 1)`.
    pub length_policy: LengthPolicy,
    /// Flow time `t` in [0, 1] is multiplied by this before the sinusoidal embedding, so flow
    /// times and diffusion steps (0..1000) use the embedding's frequencies alike.
    pub time_scale: f64,
}

impl Default for UNetConfig {
    /// The paper-scale generator (about 3.2 M parameters with `cond_dim` 1024): base 48,
    /// multipliers 1/2/4 (48/96/192 channels), two blocks per level, time and representation
    /// embeddings of 160 each, 8 groups, blur downsampling, exact lengths (300 = 4 * 75).
    fn default() -> Self {
        Self {
            in_channels: 3,
            base_channels: 48,
            channel_mults: vec![1, 2, 4],
            res_blocks: 2,
            time_embed_dim: 160,
            cond_dim: 1024,
            cond_embed_dim: 160,
            groups: 8,
            kernel_size: 3,
            downsampling: Downsampling::Blur,
            length_policy: LengthPolicy::Exact,
            time_scale: 1000.0,
        }
    }
}

impl UNetConfig {
    /// A small generator for CPU runs, conditioned on a 256-d representation (HARNet10 at
    /// width 0.25): base 16, multipliers 1/2/2, one block per level.
    pub fn small() -> Self {
        Self {
            base_channels: 16,
            channel_mults: vec![1, 2, 2],
            res_blocks: 1,
            time_embed_dim: 64,
            cond_dim: 256,
            cond_embed_dim: 64,
            groups: 4,
            ..Self::default()
        }
    }

    /// The same network conditioned on representations of dimension `cond_dim`.
    pub fn with_cond_dim(mut self, cond_dim: usize) -> Self {
        self.cond_dim = cond_dim;
        self
    }

    /// The same network with another length policy.
    pub fn with_length_policy(mut self, policy: LengthPolicy) -> Self {
        self.length_policy = policy;
        self
    }

    /// Lengths must be a multiple of this (before any padding).
    pub fn length_multiple(&self) -> usize {
        1 << self.channel_mults.len().saturating_sub(1)
    }

    /// The length the network runs at for an input of `len` samples: `len` itself, or the
    /// next multiple of [`UNetConfig::length_multiple`] under [`LengthPolicy::ZeroPad`].
    pub fn padded_len(&self, len: usize) -> std::result::Result<usize, ModelError> {
        let m = self.length_multiple();
        if len == 0 {
            return Err(ModelError::config("length", "the input has 0 samples"));
        }
        if len % m == 0 {
            return Ok(len);
        }
        match self.length_policy {
            LengthPolicy::Exact => Err(ModelError::config(
                "length_policy",
                format!(
                    "input length {len} is not a multiple of {m} (2^(levels - 1) with {} levels); \
                     use lengths like {} or {}, fewer levels, or length_policy = \"zero_pad\"",
                    self.channel_mults.len(),
                    len / m * m,
                    len.div_ceil(m) * m
                ),
            )),
            LengthPolicy::ZeroPad => Ok(len.div_ceil(m) * m),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> std::result::Result<(), ModelError> {
        let positive = [
            ("in_channels", self.in_channels),
            ("base_channels", self.base_channels),
            ("res_blocks", self.res_blocks),
            ("time_embed_dim", self.time_embed_dim),
            ("cond_embed_dim", self.cond_embed_dim),
            ("groups", self.groups),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ModelError::config(field, "must be > 0"));
            }
        }
        if self.base_channels % 2 != 0 {
            return Err(ModelError::config(
                "base_channels",
                format!(
                    "must be even (it is the sinusoidal embedding dimension), got {}",
                    self.base_channels
                ),
            ));
        }
        if self.channel_mults.is_empty() {
            return Err(ModelError::config(
                "channel_mults",
                "needs at least one level",
            ));
        }
        for (i, &m) in self.channel_mults.iter().enumerate() {
            let c = m * self.base_channels;
            if m == 0 {
                return Err(ModelError::config(
                    format!("channel_mults[{i}]"),
                    "must be > 0",
                ));
            }
            if c % self.groups != 0 {
                return Err(ModelError::config(
                    "groups",
                    format!(
                        "{} groups do not divide the {c} channels of level {i}",
                        self.groups
                    ),
                ));
            }
        }
        if self.kernel_size % 2 == 0 {
            return Err(ModelError::config(
                "kernel_size",
                format!("must be odd, got {}", self.kernel_size),
            ));
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(ModelError::config(
                "time_scale",
                format!("must be finite and > 0, got {}", self.time_scale),
            ));
        }
        Ok(())
    }
}

fn conv(c_in: usize, c_out: usize, kernel: usize, stride: usize, vb: VarBuilder) -> Result<Conv1d> {
    let cfg = Conv1dConfig {
        spec: Conv1dSpec {
            stride,
            padding: kernel / 2,
            ..Default::default()
        },
        bias: true,
    };
    Conv1d::new(c_in, c_out, kernel, cfg, vb)
}

/// Two linear layers with a SiLU between; fields `fc1`, `fc2`.
#[derive(Clone, Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(d_in, d_out, true, vb.pp("fc1"))?,
            fc2: Linear::new(d_out, d_out, true, vb.pp("fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&silu(&self.fc1.forward(x)?)?)
    }
}

/// A residual block with adaptive group norm; fields `norm1`, `conv1`, `film`, `norm2`,
/// `conv2`, `skip`.
#[derive(Clone, Debug)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv1d,
    film: Linear,
    norm2: GroupNorm,
    conv2: Conv1d,
    skip: Option<Conv1d>,
    c_out: usize,
}

impl ResBlock {
    fn new(
        c_in: usize,
        c_out: usize,
        emb_dim: usize,
        cfg: &UNetConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let k = cfg.kernel_size;
        Ok(Self {
            norm1: GroupNorm::new(cfg.groups, c_in, 1e-5, vb.pp("norm1"))?,
            conv1: conv(c_in, c_out, k, 1, vb.pp("conv1"))?,
            film: Linear::new(emb_dim, 2 * c_out, true, vb.pp("film"))?,
            norm2: GroupNorm::new(cfg.groups, c_out, 1e-5, vb.pp("norm2"))?,
            conv2: conv(c_out, c_out, k, 1, vb.pp("conv2"))?,
            skip: if c_in == c_out {
                None
            } else {
                Some(conv(c_in, c_out, 1, 1, vb.pp("skip"))?)
            },
            c_out,
        })
    }

    /// `emb` is the already activated embedding `(batch, emb_dim)`.
    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        if evaluation_only(x, emb, self.conv1.weight()) {
            return self.forward_eval(x, emb);
        }
        let c = self.c_out;
        let ss = self.film.forward(emb)?;
        let scale = (ss.narrow(1, 0, c)?.contiguous()? + 1.0)?;
        let shift = ss.narrow(1, c, c)?.contiguous()?;
        // In training, the whole block as one op where it applies: the same values and
        // gradients, without an autograd node (and a gradient accumulator) per layer.
        if let Some(y) = flowfm_ops::block::group_norm_block_train(
            x,
            (&self.norm1, &self.conv1),
            (&self.norm2, &scale, &shift, &self.conv2),
            self.skip.as_ref(),
            Activation::Silu,
        )? {
            return Ok(y);
        }
        let h = self
            .conv1
            .forward(&self.norm1.forward_act(x, Activation::Silu)?)?;
        let h = self
            .norm2
            .forward_modulated(&h, &scale, &shift, Activation::Silu)?;
        let h = self.conv2.forward(&h)?;
        match &self.skip {
            None => x + h,
            Some(s) => s.forward(x)? + h,
        }
    }

    /// [`ResBlock::forward`] with no autograd graph: each norm and its SiLU are applied while
    /// the following convolution copies its input, and the residual is added inside the second
    /// convolution (`flowfm_ops::conv::conv1d_prepared`); the same values, fewer passes.
    fn forward_eval(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let c = self.c_out;
        let prep1 = self.norm1.row_affine(x, Activation::Silu)?;
        let h = self.conv1.forward_prepared(x, Some(&prep1), None)?;
        let ss = self.film.forward(emb)?;
        let scale = (ss.narrow(1, 0, c)?.contiguous()? + 1.0)?;
        let shift = ss.narrow(1, c, c)?.contiguous()?;
        let prep2 = self
            .norm2
            .row_affine_modulated(&h, &scale, &shift, Activation::Silu)?;
        let residual = match &self.skip {
            None => x.clone(),
            Some(s) => s.forward(x)?,
        };
        self.conv2
            .forward_prepared(&h, Some(&prep2), Some(&residual))
    }
}

/// Whether a forward can take the fused evaluation path: the CPU kernels run and neither the
/// inputs nor the weights are part of an autograd graph (the detached networks of generation
/// and embedding).
fn evaluation_only(x: &Tensor, emb: &Tensor, weight: &Tensor) -> bool {
    flowfm_ops::uses_own_kernels(x.device())
        && !x.track_op()
        && !emb.track_op()
        && !weight.track_op()
}

#[derive(Clone, Debug)]
enum Down {
    Blur(BlurDownsample),
    Conv(Conv1d),
}

/// A level on the way down; fields `blocks`, `downsample` (a strided conv, when used).
#[derive(Clone, Debug)]
struct DownLevel {
    blocks: Vec<ResBlock>,
    downsample: Option<Down>,
}

/// A level on the way up; fields `blocks`, `upsample` (nearest x2 then a conv).
#[derive(Clone, Debug)]
struct UpLevel {
    blocks: Vec<ResBlock>,
    upsample: Option<Conv1d>,
}

/// The conditional 1-D U-Net. Parameter names: `conv_in`, `time_mlp.{fc1,fc2}`,
/// `cond_mlp.{fc1,fc2}` (when `cond_dim > 0`), `null_cond`, `down.{i}.blocks.{j}.*`,
/// `down.{i}.downsample.*`, `mid.{j}.*`, `up.{i}.blocks.{j}.*`, `up.{i}.upsample.*`,
/// `out_norm`, `conv_out`.
#[derive(Clone, Debug)]
pub struct UNet1d {
    cfg: UNetConfig,
    conv_in: Conv1d,
    time_mlp: Mlp,
    cond_mlp: Option<Mlp>,
    null_cond: Tensor,
    down: Vec<DownLevel>,
    mid: Vec<ResBlock>,
    up: Vec<UpLevel>,
    out_norm: GroupNorm,
    conv_out: Conv1d,
}

impl UNet1d {
    /// Builds the network; weights come from `vb`.
    pub fn new(cfg: UNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let k = cfg.kernel_size;
        let base = cfg.base_channels;
        let emb_dim = cfg.time_embed_dim + cfg.cond_embed_dim;
        let levels = cfg.channel_mults.len();
        let conv_in = conv(cfg.in_channels, base, k, 1, vb.pp("conv_in"))?;
        let time_mlp = Mlp::new(base, cfg.time_embed_dim, vb.pp("time_mlp"))?;
        let cond_mlp = if cfg.cond_dim > 0 {
            Some(Mlp::new(
                cfg.cond_dim,
                cfg.cond_embed_dim,
                vb.pp("cond_mlp"),
            )?)
        } else {
            None
        };
        let null_cond =
            vb.get_with_hints(cfg.cond_embed_dim, "null_cond", flowfm_core::init::ZEROS)?;

        let mut ch = base;
        let mut skips = Vec::with_capacity(levels);
        let mut down = Vec::with_capacity(levels);
        for (i, &m) in cfg.channel_mults.iter().enumerate() {
            let vl = vb.pp("down").pp(i);
            let c = base * m;
            let mut blocks = Vec::with_capacity(cfg.res_blocks);
            for j in 0..cfg.res_blocks {
                blocks.push(ResBlock::new(ch, c, emb_dim, &cfg, vl.pp("blocks").pp(j))?);
                ch = c;
            }
            skips.push(ch);
            let downsample = if i + 1 < levels {
                Some(match cfg.downsampling {
                    Downsampling::Blur => Down::Blur(BlurDownsample::new(2, 2)?),
                    Downsampling::StridedConv => {
                        Down::Conv(conv(ch, ch, 3, 2, vl.pp("downsample"))?)
                    }
                })
            } else {
                None
            };
            down.push(DownLevel { blocks, downsample });
        }
        let mid = (0..2)
            .map(|j| ResBlock::new(ch, ch, emb_dim, &cfg, vb.pp("mid").pp(j)))
            .collect::<Result<Vec<_>>>()?;
        let mut up: Vec<UpLevel> = Vec::with_capacity(levels);
        for (i, &m) in cfg.channel_mults.iter().enumerate().rev() {
            let vl = vb.pp("up").pp(i);
            let c = base * m;
            let mut blocks = Vec::with_capacity(cfg.res_blocks);
            for j in 0..cfg.res_blocks {
                let c_in = if j == 0 { ch + skips[i] } else { ch };
                blocks.push(ResBlock::new(
                    c_in,
                    c,
                    emb_dim,
                    &cfg,
                    vl.pp("blocks").pp(j),
                )?);
                ch = c;
            }
            let upsample = if i > 0 {
                Some(conv(ch, ch, k, 1, vl.pp("upsample"))?)
            } else {
                None
            };
            up.push(UpLevel { blocks, upsample });
        }
        let out_norm = GroupNorm::new(cfg.groups, ch, 1e-5, vb.pp("out_norm"))?;
        let conv_out = conv(ch, cfg.in_channels, k, 1, vb.pp("conv_out"))?;
        Ok(Self {
            cfg,
            conv_in,
            time_mlp,
            cond_mlp,
            null_cond,
            down,
            mid,
            up,
            out_norm,
            conv_out,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The activated embedding `SiLU([time_mlp(sin(t)), cond_emb])`.
    fn embedding(&self, time_values: &Tensor, cond: &Conditioning, batch: usize) -> Result<Tensor> {
        let dtype = self.null_cond.dtype();
        let t = time_values.to_dtype(dtype)?;
        let temb = self
            .time_mlp
            .forward(&sinusoidal_embedding(&t, self.cfg.base_channels)?)?;
        let cemb = match cond {
            Conditioning::None => self
                .null_cond
                .unsqueeze(0)?
                .broadcast_as((batch, self.cfg.cond_embed_dim))?
                .contiguous()?,
            Conditioning::Representation(z) => {
                let Some(mlp) = &self.cond_mlp else {
                    candle_core::bail!(
                        "UNet1d: the network is unconditional (cond_dim = 0) but a representation was given"
                    );
                };
                let (bz, dz) = z.dims2()?;
                if bz != batch || dz != self.cfg.cond_dim {
                    candle_core::bail!(
                        "UNet1d: representation must have shape ({batch}, {}), got {:?}",
                        self.cfg.cond_dim,
                        z.dims()
                    );
                }
                mlp.forward(z)?
            }
        };
        silu(&Tensor::cat(&[&temb, &cemb], 1)?)
    }

    /// The network on raw time values (already scaled: `t * time_scale` for flow time, the
    /// step index for diffusion).
    ///
    /// # Shapes
    /// - `x`: `(batch, in_channels, samples)`
    /// - `time_values`: `(batch,)`
    /// - `cond`: `Conditioning::Representation` of `(batch, cond_dim)` or `None`
    /// - returns `(batch, in_channels, samples)`
    pub fn forward(&self, x: &Tensor, time_values: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        flowfm_ops::on_worker(|| {
            let batch = x.dim(0)?;
            let graph_free = !time_values.track_op()
                && !cond.representation().is_some_and(Tensor::track_op)
                && evaluation_only(x, x, self.conv_in.weight());
            if graph_free && batch > flowfm_ops::EVAL_CHUNK {
                // Windows do not interact (group norm is per window): chunks of the batch run
                // concurrently (`flowfm_ops::eval_in_chunks`).
                return flowfm_ops::eval_in_chunks(batch, |start, len| {
                    self.forward_on_worker(
                        &x.narrow(0, start, len)?,
                        &time_values.narrow(0, start, len)?,
                        &cond.narrow(start, len)?,
                    )
                });
            }
            self.forward_on_worker(x, time_values, cond)
        })
    }

    fn forward_on_worker(
        &self,
        x: &Tensor,
        time_values: &Tensor,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let (b, c, l) = x.dims3()?;
        if c != self.cfg.in_channels {
            candle_core::bail!(
                "UNet1d: expected {} input channels, got input {:?}",
                self.cfg.in_channels,
                x.dims()
            );
        }
        if time_values.dims1()? != b {
            candle_core::bail!(
                "UNet1d: {} time values for a batch of {b}",
                time_values.dims1()?
            );
        }
        let padded = self.cfg.padded_len(l)?;
        let left = (padded - l) / 2;
        let x = if padded == l {
            x.clone()
        } else {
            x.pad_with_zeros(2, left, padded - l - left)?
        };
        let emb = self.embedding(time_values, cond, b)?;

        let mut h = self.conv_in.forward(&x)?;
        let mut skips = Vec::with_capacity(self.down.len());
        for level in &self.down {
            for block in &level.blocks {
                h = block.forward(&h, &emb)?;
            }
            skips.push(h.clone());
            h = match &level.downsample {
                None => h,
                Some(Down::Blur(d)) => d.forward(&h)?,
                Some(Down::Conv(d)) => d.forward(&h)?,
            };
        }
        for block in &self.mid {
            h = block.forward(&h, &emb)?;
        }
        for level in &self.up {
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("UNet1d: skip stack underflow".into()))?;
            h = Tensor::cat(&[&h, &skip], 1)?;
            for block in &level.blocks {
                h = block.forward(&h, &emb)?;
            }
            if let Some(up) = &level.upsample {
                h = up.forward(&upsample_nearest1d(&h, 2)?)?;
            }
        }
        let out = if evaluation_only(&h, &emb, self.conv_out.weight()) {
            let prep = self.out_norm.row_affine(&h, Activation::Silu)?;
            self.conv_out.forward_prepared(&h, Some(&prep), None)?
        } else {
            self.conv_out
                .forward(&self.out_norm.forward_act(&h, Activation::Silu)?)?
        };
        if padded == l {
            Ok(out)
        } else {
            out.narrow(2, left, l)
        }
    }
}

/// A U-Net and a detached twin sharing its weights (see [`detached_var_builder`]).
#[derive(Clone, Debug)]
struct Twin {
    live: UNet1d,
    detached: UNet1d,
}

impl Twin {
    fn new(cfg: UNetConfig, vb: VarBuilder) -> Result<Self> {
        let live = UNet1d::new(cfg.clone(), vb.clone())?;
        let detached = UNet1d::new(cfg, detached_var_builder(&vb))?;
        Ok(Self { live, detached })
    }
}

/// The flow-matching velocity field `v(x_t, t | z)`: the U-Net with the flow time scaled by
/// [`UNetConfig::time_scale`] before the sinusoidal embedding.
#[derive(Clone, Debug)]
pub struct FlowUNet {
    net: Twin,
}

impl FlowUNet {
    /// Builds the field; weights come from `vb` (names as [`UNet1d`]).
    pub fn new(cfg: UNetConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            net: Twin::new(cfg, vb)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.net.live.cfg
    }

    fn times(&self, t: &FlowTimes) -> Result<Tensor> {
        t.tensor() * self.config().time_scale
    }

    /// The velocity (gradients flow into the parameters and through `cond` into the encoder).
    ///
    /// # Shapes
    /// - `x_t`: `(batch, in_channels, samples)`; `t`: `(batch,)`; `cond`: `(batch, cond_dim)`
    /// - returns the shape of `x_t`
    pub fn forward(&self, x_t: &Tensor, t: &FlowTimes, cond: &Conditioning) -> Result<Tensor> {
        self.net.live.forward(x_t, &self.times(t)?, cond)
    }

    /// The velocity without building an autograd graph (inputs, conditioning and weights
    /// detached), for sampling.
    ///
    /// # Shapes
    /// as [`FlowUNet::forward`]
    pub fn velocity_detached(
        &self,
        x_t: &Tensor,
        t: &FlowTimes,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        self.net
            .detached
            .forward(&x_t.detach(), &self.times(t)?.detach(), &cond.detach())
    }

    /// A view whose [`VelocityField`] implementation builds no autograd graph (for samplers).
    pub fn detached(&self) -> DetachedFlow<'_> {
        DetachedFlow(self)
    }
}

impl VelocityField for FlowUNet {
    fn velocity(&self, x_t: &Tensor, t: &FlowTimes, cond: &Conditioning) -> Result<Tensor> {
        self.forward(x_t, t, cond)
    }
}

/// A graph-free view of a [`FlowUNet`].
#[derive(Clone, Copy, Debug)]
pub struct DetachedFlow<'a>(&'a FlowUNet);

impl VelocityField for DetachedFlow<'_> {
    fn velocity(&self, x_t: &Tensor, t: &FlowTimes, cond: &Conditioning) -> Result<Tensor> {
        self.0.velocity_detached(x_t, t, cond)
    }
}

/// The DDPM noise predictor `eps(x_k, k | z)`: the same U-Net, embedding the integer step `k`
/// directly (no scaling). Same parameters as [`FlowUNet`] for the same config.
#[derive(Clone, Debug)]
pub struct DiffusionUNet {
    net: Twin,
}

impl DiffusionUNet {
    /// Builds the denoiser; weights come from `vb` (names as [`UNet1d`]).
    pub fn new(cfg: UNetConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            net: Twin::new(cfg, vb)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.net.live.cfg
    }

    fn steps(&self, x: &Tensor, k: &DiffusionSteps) -> Result<Tensor> {
        k.to_tensor(x.dtype(), x.device())
    }

    /// The predicted noise (gradients flow into the parameters and through `cond`).
    ///
    /// # Shapes
    /// - `x_k`: `(batch, in_channels, samples)`; `k`: `batch` steps; `cond`: `(batch, cond_dim)`
    /// - returns the shape of `x_k`
    pub fn forward(&self, x_k: &Tensor, k: &DiffusionSteps, cond: &Conditioning) -> Result<Tensor> {
        self.net.live.forward(x_k, &self.steps(x_k, k)?, cond)
    }

    /// The predicted noise without building an autograd graph, for sampling.
    ///
    /// # Shapes
    /// as [`DiffusionUNet::forward`]
    pub fn predict_noise_detached(
        &self,
        x_k: &Tensor,
        k: &DiffusionSteps,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        self.net
            .detached
            .forward(&x_k.detach(), &self.steps(x_k, k)?, &cond.detach())
    }

    /// A view whose [`Denoiser`] implementation builds no autograd graph (for samplers).
    pub fn detached(&self) -> DetachedDenoiser<'_> {
        DetachedDenoiser(self)
    }
}

impl Denoiser for DiffusionUNet {
    fn predict_noise(
        &self,
        x_k: &Tensor,
        k: &DiffusionSteps,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        self.forward(x_k, k, cond)
    }
}

/// A graph-free view of a [`DiffusionUNet`].
#[derive(Clone, Copy, Debug)]
pub struct DetachedDenoiser<'a>(&'a DiffusionUNet);

impl Denoiser for DetachedDenoiser<'_> {
    fn predict_noise(
        &self,
        x_k: &Tensor,
        k: &DiffusionSteps,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        self.0.predict_noise_detached(x_k, k, cond)
    }
}
