//! What a pretraining experiment will need before anything is allocated: parameter counts,
//! activations per batch and an estimate of peak memory, checked against the memory the machine
//! has available (`flowfm check-config` prints it; `pretrain` refuses to start when it does not
//! fit). Parameter counts are exact: the encoder's from its layer structure, the generator's from
//! three tiny U-Nets (every parameter count of the U-Net is a quadratic polynomial in
//! `base_channels`, so three points give it exactly). Activations are an estimate: the tensors a
//! training step keeps for the backward pass, counted per layer.

use super::config::{Experiment, Method};
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_models::unet::{FlowUNet, UNetConfig};
use flowfm_models::{EncoderConfig, NormKind};
use std::fmt;

/// Bytes of an f32.
const F32: u64 = 4;

/// Resources of one experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceEstimate {
    /// Encoder parameters and buffers (batch-norm running statistics included).
    pub encoder_params: u64,
    /// Generator parameters and buffers (0 for SSL multi-task).
    pub generator_params: u64,
    /// Activations kept for the backward pass per window (f32 elements).
    pub activations_per_window: u64,
    /// Windows per batch.
    pub batch_size: u64,
    /// Estimated peak resident bytes of a training step.
    pub peak_bytes: u64,
}

impl fmt::Display for ResourceEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        write!(
            f,
            "parameters: encoder {}, generator {}; activations per batch of {}: {:.2} GiB; estimated peak memory {:.2} GiB",
            self.encoder_params,
            self.generator_params,
            self.batch_size,
            gib(self.activations_per_window * self.batch_size * F32),
            gib(self.peak_bytes)
        )
    }
}

/// Parameter and buffer elements of an encoder with `cfg`, from its layer structure (a stage is a
/// bias-free convolution, residual blocks of two norms and two convolutions, and a norm).
pub fn encoder_params(cfg: &EncoderConfig) -> u64 {
    let per_norm = match cfg.norm {
        NormKind::Batch => 4, // weight, bias, running mean, running variance
        NormKind::Group { .. } => 2,
    };
    let k = cfg.kernel_size as u64;
    let mut c_in = cfg.in_channels as u64;
    let mut total = 0u64;
    for s in &cfg.stages {
        let c = ((s.channels as f64 * cfg.width).round() as u64).max(1);
        let blocks = s.res_blocks as u64;
        total += k * c_in * c + blocks * (2 * k * c * c + 2 * per_norm * c) + per_norm * c;
        c_in = c;
    }
    total
}

/// Activations (f32 elements) a training step keeps per window in the encoder: every stage's
/// convolution output, and per residual block its two norms, two activations and two
/// convolutions, at the stage's length.
fn encoder_activations(cfg: &EncoderConfig) -> u64 {
    let mut len = cfg.window_len as u64;
    let mut total = cfg.in_channels as u64 * len;
    for s in &cfg.stages {
        let c = ((s.channels as f64 * cfg.width).round() as u64).max(1);
        total += c * len * (3 + 6 * s.res_blocks as u64);
        len = (len / s.down_factor.max(1) as u64).max(1);
    }
    total
}

fn unet_params_built(cfg: &UNetConfig) -> Result<u64> {
    let vm = VarMap::new();
    FlowUNet::new(
        cfg.clone(),
        seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu),
    )?;
    let data = vm
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
    Ok(data
        .values()
        .map(|v| v.as_tensor().elem_count() as u64)
        .sum())
}

/// Parameter and buffer elements of a U-Net with `cfg`, without building it: the count is a
/// quadratic polynomial in `base_channels` (convolutions between levels are quadratic, embeddings
/// and norms linear), fitted through tiny U-Nets at 1, 2 and 3 times the group count.
pub fn unet_params(cfg: &UNetConfig) -> Result<u64> {
    let g = cfg.groups.max(2) as u64;
    let g = if g % 2 == 1 { 2 * g } else { g };
    let at = |b: u64| -> Result<u64> {
        let mut small = cfg.clone();
        small.base_channels = b as usize;
        unet_params_built(&small)
    };
    let (p1, p2, p3) = (at(g)? as i128, at(2 * g)? as i128, at(3 * g)? as i128);
    // Newton's forward differences through x = 1, 2, 3 (base = x g):
    // p(x) = p1 + (x - 1) d1 + (x - 1)(x - 2) d2 / 2, evaluated at x = base / g, which need not
    // be a whole number; multiplied through by g^2 to stay in integers.
    let (d1, d2) = (p2 - p1, p3 - 2 * p2 + p1);
    let (base, g) = (cfg.base_channels as i128, g as i128);
    let num = p1 * g * g + (base - g) * d1 * g + (base - g) * (base - 2 * g) * d2 / 2;
    Ok((num / (g * g)).max(0) as u64)
}

/// Activations (f32 elements) a training step keeps per window in the U-Net: per level and
/// residual block, on the way down and up, two norms, two activations, two convolutions and the
/// conditioning (at the level's length, which halves per level).
fn unet_activations(cfg: &UNetConfig, window_len: usize) -> u64 {
    let mut len = window_len as u64;
    let mut total = 0u64;
    for m in &cfg.channel_mults {
        let c = (cfg.base_channels * m) as u64;
        total += 2 * cfg.res_blocks.max(1) as u64 * 8 * c * len;
        len = len.div_ceil(2);
    }
    total
}

/// Bytes the machine has available now (`MemAvailable` of `/proc/meminfo`), if known.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl ResourceEstimate {
    /// The estimate of `exp` (builds only tiny U-Nets).
    pub fn of(exp: &Experiment) -> Result<Self> {
        let encoder_params = encoder_params(&exp.encoder);
        let joint = exp.method != Method::SslMultitask;
        let generator_params = if joint {
            unet_params(&exp.generator)?
        } else {
            0
        };
        let mut activations_per_window = encoder_activations(&exp.encoder);
        if joint {
            activations_per_window += unet_activations(&exp.generator, exp.encoder.window_len);
        }
        let batch_size = exp.file.train.batch_size as u64;
        // Weights, gradients and AdamW's two moments; an EMA copy of the generator; activations
        // and their gradients.
        let peak_bytes = F32
            * (4 * (encoder_params + generator_params)
                + generator_params
                + 2 * activations_per_window * batch_size)
            + (64 << 20); // the program itself
        Ok(Self {
            encoder_params,
            generator_params,
            activations_per_window,
            batch_size,
            peak_bytes,
        })
    }

    /// An error unless the estimate fits in `available` bytes, naming the fields that size it.
    pub fn check_fits(&self, available: Option<u64>) -> Result<()> {
        let Some(avail) = available else {
            return Ok(());
        };
        if self.peak_bytes > avail {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            bail!(
                "this experiment needs about {:.1} GiB ({self}), but {:.1} GiB are available; \
                 reduce train.batch_size, encoder.width or generator.base_channels / channel_mults",
                gib(self.peak_bytes),
                gib(avail)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_models::HarNet;

    fn built_encoder_params(cfg: &EncoderConfig) -> u64 {
        let vm = VarMap::new();
        HarNet::new(
            cfg.clone(),
            seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let data = vm.data().lock().unwrap();
        data.values()
            .map(|v| v.as_tensor().elem_count() as u64)
            .sum()
    }

    #[test]
    fn the_encoder_count_equals_the_built_encoder() {
        for width in [0.0625, 0.25, 0.5] {
            for norm in [NormKind::Batch, NormKind::Group { groups: 8 }] {
                let cfg = EncoderConfig::harnet10().with_width(width).with_norm(norm);
                assert_eq!(
                    encoder_params(&cfg),
                    built_encoder_params(&cfg),
                    "width {width}"
                );
            }
        }
    }

    #[test]
    fn the_unet_count_extrapolates_exactly_to_a_built_unet() {
        for (base, mults) in [(48, vec![1, 2, 4]), (40, vec![1, 2]), (64, vec![1, 1, 2])] {
            let mut cfg = UNetConfig::small().with_cond_dim(64);
            cfg.base_channels = base;
            cfg.channel_mults = mults;
            assert_eq!(
                unet_params(&cfg).unwrap(),
                unet_params_built(&cfg).unwrap(),
                "base {base}"
            );
        }
    }

    #[test]
    fn a_generator_too_large_for_the_machine_is_refused_before_allocating() {
        let text = r#"
[run]
name = "big"
method = "flowfm"
[encoder]
width = 0.25
[generator]
preset = "small"
base_channels = 8192
[train]
steps = 10
"#;
        let exp = super::super::config::ExperimentFile::parse(text, "big.toml")
            .unwrap()
            .validate()
            .unwrap();
        let est = ResourceEstimate::of(&exp).unwrap();
        assert!(est.generator_params > 1_000_000_000, "{est}");
        let err = est.check_fits(Some(24 << 30)).unwrap_err().to_string();
        assert!(err.contains("generator.base_channels"), "{err}");
    }
}
