//! Validation of an [`ExperimentFile`] into an [`Experiment`], the only input training accepts:
//! every field is checked against its domain and an upper bound (so no size can grow without
//! limit before anything is allocated), and every error names the field.

use super::config::{
    ConfigError, Duration, Experiment, ExperimentFile, Method, MultitaskRecipe, WindowSampling,
};
use flowfm_core::schedule::{BetaSchedule, NoiseScheduleConfig};
use flowfm_models::encoder::EncoderConfig;
use flowfm_models::layers::NormKind;
use flowfm_models::unet::UNetConfig;
use flowfm_objectives::flow::TimeSampling;

/// Largest `generator.base_channels` accepted (the paper's U-Net has 48).
pub const MAX_BASE_CHANNELS: usize = 16_384;
/// Largest `diffusion.num_steps` accepted (the paper's DDPM has 1000).
pub const MAX_DIFFUSION_STEPS: usize = 100_000;
/// Largest `train.batch_size` accepted.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Largest `multitask.heldout_windows` accepted.
pub const MAX_HELDOUT_WINDOWS: usize = 100_000;

/// A run name is one path component of letters, digits, `-`, `_` and `.` (not starting with a
/// dot), at most 128 characters: it names a directory under the runs folder and must never
/// escape it (`../x`, `/abs`) or be empty.
pub fn validate_run_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "run.name",
            format!(
                "{name:?} is not a safe directory name: use 1-128 letters, digits, `-`, `_` or `.`, not starting with `.`"
            ),
        ))
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl ExperimentFile {
    /// Validates every field into an [`Experiment`].
    pub fn validate(self) -> Result<Experiment, ConfigError> {
        validate_run_name(&self.run.name)?;
        let e = &self.encoder;
        let base = match e.preset.as_str() {
            "harnet10" => EncoderConfig::harnet10(),
            "harnet10_30s" => EncoderConfig::harnet10_30s(),
            "harnet5s" => EncoderConfig::harnet5s(),
            other => {
                return Err(invalid(
                    "encoder.preset",
                    format!("unknown preset `{other}` (harnet10 | harnet10_30s | harnet5s)"),
                ))
            }
        };
        if !(e.width.is_finite() && e.width > 0.0 && e.width <= 4.0) {
            return Err(invalid(
                "encoder.width",
                format!("must be in (0, 4], got {}", e.width),
            ));
        }
        let norm = match e.norm.as_str() {
            "batch" => NormKind::Batch,
            "group" => NormKind::Group { groups: 8 },
            other => {
                return Err(invalid(
                    "encoder.norm",
                    format!("unknown norm `{other}` (batch | group)"),
                ))
            }
        };
        let encoder = base.with_width(e.width).with_norm(norm);
        encoder
            .validate()
            .map_err(|err| invalid("encoder", err.to_string()))?;

        let g = &self.generator;
        let mut generator = match g.preset.as_str() {
            "paper" => UNetConfig::default(),
            "small" => UNetConfig::small(),
            other => {
                return Err(invalid(
                    "generator.preset",
                    format!("unknown preset `{other}` (paper | small)"),
                ))
            }
        };
        // Upper bounds keep every size finite before anything is computed from it; whether a
        // configuration fits the machine is `train::resources`' question.
        if let Some(c) = g.base_channels {
            if !(1..=MAX_BASE_CHANNELS).contains(&c) {
                return Err(invalid(
                    "generator.base_channels",
                    format!("must be in 1..={MAX_BASE_CHANNELS}, got {c}"),
                ));
            }
            generator.base_channels = c;
        }
        if let Some(m) = &g.channel_mults {
            if m.is_empty() || m.len() > 8 || m.iter().any(|&v| !(1..=64).contains(&v)) {
                return Err(invalid(
                    "generator.channel_mults",
                    format!("needs 1 to 8 multipliers, each in 1..=64, got {m:?}"),
                ));
            }
        }
        if let Some(r) = g.res_blocks {
            if r > 16 {
                return Err(invalid(
                    "generator.res_blocks",
                    format!("must be at most 16, got {r}"),
                ));
            }
        }
        if let Some(m) = &g.channel_mults {
            generator.channel_mults = m.clone();
        }
        if let Some(r) = g.res_blocks {
            generator.res_blocks = r;
        }
        generator.in_channels = encoder.in_channels;
        generator = generator.with_cond_dim(encoder.repr_dim());
        generator
            .validate()
            .map_err(|err| invalid("generator", err.to_string()))?;
        generator.padded_len(encoder.window_len).map_err(|err| {
            invalid(
                "generator",
                format!("cannot run on {}-sample windows: {err}", encoder.window_len),
            )
        })?;

        let f = &self.flow;
        if !(f.sigma_min.is_finite() && (0.0..1.0).contains(&f.sigma_min)) {
            return Err(invalid(
                "flow.sigma_min",
                format!("must be in [0, 1), got {}", f.sigma_min),
            ));
        }
        let time_sampling = match f.time_sampling.as_str() {
            "uniform" => TimeSampling::Uniform,
            "logit_normal" => {
                if !(f.logit_std.is_finite() && f.logit_std > 0.0) {
                    return Err(invalid(
                        "flow.logit_std",
                        format!("must be > 0, got {}", f.logit_std),
                    ));
                }
                if !f.logit_mean.is_finite() {
                    return Err(invalid("flow.logit_mean", "must be finite"));
                }
                TimeSampling::LogitNormal {
                    mean: f.logit_mean,
                    std: f.logit_std,
                }
            }
            other => {
                return Err(invalid(
                    "flow.time_sampling",
                    format!("unknown `{other}` (uniform | logit_normal)"),
                ))
            }
        };

        let d = &self.diffusion;
        let betas = match d.schedule.as_str() {
            "linear" => BetaSchedule::Linear {
                beta_start: d.beta_start,
                beta_end: d.beta_end,
            },
            "scaled_linear" => BetaSchedule::ScaledLinear {
                beta_start: d.beta_start,
                beta_end: d.beta_end,
            },
            "cosine" => BetaSchedule::Cosine {
                s: 0.008,
                max_beta: 0.999,
            },
            other => {
                return Err(invalid(
                    "diffusion.schedule",
                    format!("unknown `{other}` (linear | scaled_linear | cosine)"),
                ))
            }
        };
        if !(1..=MAX_DIFFUSION_STEPS).contains(&d.num_steps) {
            return Err(invalid(
                "diffusion.num_steps",
                format!("must be in 1..={MAX_DIFFUSION_STEPS}, got {}", d.num_steps),
            ));
        }
        let noise_schedule = NoiseScheduleConfig {
            num_steps: d.num_steps,
            betas,
        };
        flowfm_core::schedule::NoiseSchedule::new(&noise_schedule)
            .map_err(|err| invalid("diffusion", err.to_string()))?;

        let j = &self.joint;
        if !(j.echo_weight.is_finite() && j.echo_weight >= 0.0) {
            return Err(invalid(
                "joint.echo_weight",
                format!("must be >= 0, got {}", j.echo_weight),
            ));
        }
        if j.echo_weight > 0.0 && self.run.method != Method::Flowfm {
            return Err(invalid(
                "joint.echo_weight",
                "echo contrast needs the flow generator (method = \"flowfm\")",
            ));
        }
        if !(j.echo_temperature.is_finite() && j.echo_temperature > 0.0) {
            return Err(invalid(
                "joint.echo_temperature",
                format!("must be > 0, got {}", j.echo_temperature),
            ));
        }
        if j.echo_steps == 0 {
            return Err(invalid("joint.echo_steps", "must be >= 1"));
        }
        if !(j.echo_ema_decay.is_finite() && (0.0..1.0).contains(&j.echo_ema_decay)) {
            return Err(invalid(
                "joint.echo_ema_decay",
                format!("must be in [0, 1), got {}", j.echo_ema_decay),
            ));
        }
        if j.encoder_augment && self.run.method == Method::SslMultitask {
            return Err(invalid(
                "joint.encoder_augment",
                "applies to joint training (flowfm, diffusion) only",
            ));
        }

        let t = &self.train;
        if t.batch_size > MAX_BATCH_SIZE {
            return Err(invalid(
                "train.batch_size",
                format!("must be at most {MAX_BATCH_SIZE}, got {}", t.batch_size),
            ));
        }
        if t.batch_size < 2 {
            return Err(invalid(
                "train.batch_size",
                format!("must be >= 2 (batch norm needs it), got {}", t.batch_size),
            ));
        }
        let duration = match (t.steps, t.epochs) {
            (Some(s), None) if s > 0 => Duration::Steps(s),
            (None, Some(e)) if e > 0 => Duration::Epochs(e),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "train.steps",
                    "give either `steps` or `epochs`, not both",
                ))
            }
            (None, None) => return Err(invalid("train.steps", "give `steps` or `epochs`")),
            _ => return Err(invalid("train.steps", "must be > 0")),
        };
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(invalid("train.lr", format!("must be > 0, got {}", t.lr)));
        }
        if !(t.min_lr.is_finite() && t.min_lr >= 0.0 && t.min_lr <= t.lr) {
            return Err(invalid(
                "train.min_lr",
                format!("must be in [0, lr], got {}", t.min_lr),
            ));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return Err(invalid(
                "train.weight_decay",
                format!("must be >= 0, got {}", t.weight_decay),
            ));
        }
        if let Some(c) = t.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(invalid("train.grad_clip", format!("must be > 0, got {c}")));
            }
        }
        if !(t.ema_decay.is_finite() && (0.0..1.0).contains(&t.ema_decay)) {
            return Err(invalid(
                "train.ema_decay",
                format!("must be in [0, 1), got {}", t.ema_decay),
            ));
        }
        if t.checkpoint_every == 0 {
            return Err(invalid("train.checkpoint_every", "must be > 0"));
        }
        if t.log_every == 0 {
            return Err(invalid("train.log_every", "must be > 0"));
        }
        let multitask = validate_multitask(&self, encoder.window_len)?;
        Ok(Experiment {
            multitask,
            method: self.run.method,
            seed: self.run.seed,
            encoder,
            generator,
            sigma_min: f.sigma_min,
            time_sampling,
            noise_schedule,
            duration,
            file: self,
        })
    }
}

/// Validates `[multitask]`: only ssl_multitask may have one; every field within its domain.
fn validate_multitask(
    file: &ExperimentFile,
    window_len: usize,
) -> Result<MultitaskRecipe, ConfigError> {
    if file.multitask.is_some() && file.run.method != Method::SslMultitask {
        return Err(invalid(
            "multitask",
            format!(
                "the [multitask] section applies to ssl_multitask only, this run is {}",
                file.run.method.name()
            ),
        ));
    }
    let m = file.multitask.clone().unwrap_or_default();
    let sampling = match m.sampling.as_str() {
        "movement" => WindowSampling::Movement,
        "uniform" => WindowSampling::Uniform,
        other => {
            return Err(invalid(
                "multitask.sampling",
                format!("unknown `{other}` (movement | uniform)"),
            ))
        }
    };
    if m.heldout_windows > MAX_HELDOUT_WINDOWS {
        return Err(invalid(
            "multitask.heldout_windows",
            format!(
                "must be at most {MAX_HELDOUT_WINDOWS}, got {}",
                m.heldout_windows
            ),
        ));
    }
    let tasks = flowfm_objectives::MultiTaskConfig {
        per_axis_warp: m.per_axis_warp,
        ..Default::default()
    };
    if file.run.method == Method::SslMultitask {
        tasks
            .validate(window_len)
            .map_err(|err| invalid("multitask", err.to_string()))?;
    }
    Ok(MultitaskRecipe {
        sampling,
        rotation: m.rotation,
        axis_swap: m.axis_swap,
        tasks,
        heldout_windows: m.heldout_windows,
    })
}
