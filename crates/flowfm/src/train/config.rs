//! Experiment configs: TOML files with unknown keys rejected, validated into [`Experiment`], the
//! only thing training accepts. Every error names the field and why it is wrong.

use flowfm_core::schedule::NoiseScheduleConfig;
use flowfm_models::encoder::EncoderConfig;
use flowfm_models::unet::UNetConfig;
use flowfm_objectives::flow::TimeSampling;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A config error naming the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The cause is the error's source (shown once by callers that
    /// print the chain, such as `{:#}`).
    #[error("cannot read {path}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown keys / wrong types.
    #[error("{path}: {msg}")]
    Parse {
        /// File.
        path: String,
        /// What serde/toml said (includes the line).
        msg: String,
    },
    /// A value out of its domain.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// Dotted field path, e.g. `train.lr`.
        field: String,
        /// Why.
        reason: String,
    },
}

/// The pretraining method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Joint encoder + conditional flow matching (FlowFM).
    Flowfm,
    /// Joint encoder + conditional DDPM, same U-Net (the diffusion baseline).
    Diffusion,
    /// SSL-Wearables multi-task self-supervision (encoder only).
    SslMultitask,
}

impl Method {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Flowfm => "flowfm",
            Method::Diffusion => "diffusion",
            Method::SslMultitask => "ssl_multitask",
        }
    }
}

/// `[run]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Run name (directory name under the output folder).
    pub name: String,
    /// Pretraining method.
    pub method: Method,
    /// Run seed; every random stream derives from it.
    #[serde(default)]
    pub seed: u64,
}

/// `[encoder]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncoderSection {
    /// `harnet10` (10 s), `harnet10_30s` or `harnet5s`.
    #[serde(default = "default_encoder_preset")]
    pub preset: String,
    /// Width multiplier (1.0 = the paper's 10.46 M-parameter encoder).
    #[serde(default = "one")]
    pub width: f64,
    /// `batch` or `group`.
    #[serde(default = "default_norm")]
    pub norm: String,
}

/// `[generator]` (flowfm and diffusion).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSection {
    /// `paper` (about 3.2 M parameters) or `small`.
    #[serde(default = "default_generator_preset")]
    pub preset: String,
    /// Override: channels of the first level.
    pub base_channels: Option<usize>,
    /// Override: channel multipliers per level.
    pub channel_mults: Option<Vec<usize>>,
    /// Override: residual blocks per level.
    pub res_blocks: Option<usize>,
}

impl Default for GeneratorSection {
    fn default() -> Self {
        Self {
            preset: default_generator_preset(),
            base_channels: None,
            channel_mults: None,
            res_blocks: None,
        }
    }
}

/// `[flow]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowSection {
    /// Minimum noise of the path (0 = rectified flow).
    #[serde(default)]
    pub sigma_min: f64,
    /// `uniform` or `logit_normal`.
    #[serde(default = "default_time_sampling")]
    pub time_sampling: String,
    /// Mean of the logit-normal time density.
    #[serde(default)]
    pub logit_mean: f64,
    /// Standard deviation of the logit-normal time density.
    #[serde(default = "one")]
    pub logit_std: f64,
}

impl Default for FlowSection {
    fn default() -> Self {
        Self {
            sigma_min: 0.0,
            time_sampling: default_time_sampling(),
            logit_mean: 0.0,
            logit_std: 1.0,
        }
    }
}

/// `[diffusion]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiffusionSection {
    /// Number of steps `T`.
    #[serde(default = "default_num_steps")]
    pub num_steps: usize,
    /// `linear`, `scaled_linear` or `cosine`.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// First beta (linear schedules).
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    /// Last beta (linear schedules).
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
}

impl Default for DiffusionSection {
    fn default() -> Self {
        Self {
            num_steps: default_num_steps(),
            schedule: default_schedule(),
            beta_start: default_beta_start(),
            beta_end: default_beta_end(),
        }
    }
}

/// `[joint]`: options of joint encoder + generator pretraining (flowfm and diffusion).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JointSection {
    /// The encoder sees a randomly rotated and axis-permuted view of `x_1` (the generator still
    /// rebuilds the original window).
    #[serde(default)]
    pub encoder_augment: bool,
    /// Weight of the echo-contrast InfoNCE term (0 = off; flowfm only).
    #[serde(default)]
    pub echo_weight: f64,
    /// Temperature of the echo-contrast InfoNCE.
    #[serde(default = "default_echo_temperature")]
    pub echo_temperature: f64,
    /// Euler steps used to generate each echo.
    #[serde(default = "default_echo_steps")]
    pub echo_steps: usize,
    /// The echo term starts at this step (once the generator can rebuild windows).
    #[serde(default)]
    pub echo_start_step: u64,
    /// EMA decay of the encoder copy that encodes the echoes.
    #[serde(default = "default_echo_ema")]
    pub echo_ema_decay: f64,
}

impl Default for JointSection {
    fn default() -> Self {
        Self {
            encoder_augment: false,
            echo_weight: 0.0,
            echo_temperature: default_echo_temperature(),
            echo_steps: default_echo_steps(),
            echo_start_step: 0,
            echo_ema_decay: default_echo_ema(),
        }
    }
}

/// `[multitask]`: the SSL-Wearables recipe of `ssl_multitask` pretraining (Yuan et al., npj
/// Digital Medicine 2024, and their code OxWearables/ssl-wearables; see docs/decisions.md). The
/// defaults are the published recipe; the section is refused for the other methods.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MultitaskSection {
    /// How training windows are drawn: `movement` (with probability proportional to the window's
    /// standard deviation, so still windows are rarely drawn) or `uniform` (seeded shuffles).
    #[serde(default = "default_sampling")]
    pub sampling: String,
    /// A random rotation (uniform axis, angle uniform in [-pi, pi]) of every training window.
    #[serde(default = "yes")]
    pub rotation: bool,
    /// A random permutation of the x/y/z axes of every training window.
    #[serde(default = "yes")]
    pub axis_swap: bool,
    /// Time warping draws one speed curve per axis (else one per window).
    #[serde(default = "yes")]
    pub per_axis_warp: bool,
    /// Pool windows held out (never trained on) to score the three pretext tasks; at most a
    /// tenth of the pool is held out. 0 turns the scoring off.
    #[serde(default = "default_heldout")]
    pub heldout_windows: usize,
}

impl Default for MultitaskSection {
    fn default() -> Self {
        Self {
            sampling: default_sampling(),
            rotation: true,
            axis_swap: true,
            per_axis_warp: true,
            heldout_windows: default_heldout(),
        }
    }
}

fn default_sampling() -> String {
    "movement".into()
}
fn yes() -> bool {
    true
}
fn default_heldout() -> usize {
    512
}

fn default_echo_temperature() -> f64 {
    0.3
}
fn default_echo_steps() -> usize {
    2
}
fn default_echo_ema() -> f64 {
    0.99
}

/// `[train]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Windows per batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Number of optimizer steps (exclusive with `epochs`).
    pub steps: Option<u64>,
    /// Number of epochs over the pretraining pool (exclusive with `steps`).
    pub epochs: Option<u64>,
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    #[serde(default)]
    pub min_lr: f64,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Decoupled weight decay (not applied to biases and norm parameters).
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// AMSGrad: divide by the running maximum of the second moment (SSL-Wearables' optimiser,
    /// `Adam(amsgrad=True)`). Not written back when off, so the configs (and fingerprints) of
    /// runs without it are unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub amsgrad: bool,
    /// Gradient-norm clipping threshold (none when absent).
    pub grad_clip: Option<f64>,
    /// Decay of the EMA of generator weights used for sampling.
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    /// Write a checkpoint every this many steps (and at the end).
    #[serde(default = "default_ckpt")]
    pub checkpoint_every: u64,
    /// Log a metrics line every this many steps.
    #[serde(default = "default_log")]
    pub log_every: u64,
}

/// A whole experiment file as written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// `[run]`.
    pub run: RunSection,
    /// `[encoder]`.
    pub encoder: EncoderSection,
    /// `[generator]`.
    #[serde(default)]
    pub generator: GeneratorSection,
    /// `[flow]`.
    #[serde(default)]
    pub flow: FlowSection,
    /// `[diffusion]`.
    #[serde(default)]
    pub diffusion: DiffusionSection,
    /// `[joint]`.
    #[serde(default)]
    pub joint: JointSection,
    /// `[multitask]` (ssl_multitask only; absent: the published recipe). Not written back when
    /// absent, so the configs (and fingerprints) of the other methods are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multitask: Option<MultitaskSection>,
    /// `[train]`.
    pub train: TrainSection,
}

fn one() -> f64 {
    1.0
}
fn default_encoder_preset() -> String {
    "harnet10".into()
}
fn default_norm() -> String {
    "batch".into()
}
fn default_generator_preset() -> String {
    "paper".into()
}
fn default_time_sampling() -> String {
    "uniform".into()
}
fn default_num_steps() -> usize {
    1000
}
fn default_schedule() -> String {
    "linear".into()
}
fn default_beta_start() -> f64 {
    1e-4
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_batch() -> usize {
    64
}
fn default_lr() -> f64 {
    1e-3
}
fn default_wd() -> f64 {
    0.01
}
fn default_ema() -> f64 {
    0.999
}
fn default_ckpt() -> u64 {
    500
}
fn default_log() -> u64 {
    10
}

/// How long training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duration {
    /// A number of optimizer steps.
    Steps(u64),
    /// A number of epochs over the pool.
    Epochs(u64),
}

/// A validated experiment: the only input training accepts.
#[derive(Clone, Debug)]
pub struct Experiment {
    /// The file as written (serialised back into the run directory).
    pub file: ExperimentFile,
    /// The method.
    pub method: Method,
    /// Run seed.
    pub seed: u64,
    /// Encoder architecture.
    pub encoder: EncoderConfig,
    /// Generator architecture (conditioned on the encoder's representation).
    pub generator: UNetConfig,
    /// Flow-matching path `sigma_min`.
    pub sigma_min: f64,
    /// Flow time density.
    pub time_sampling: TimeSampling,
    /// Diffusion noise schedule.
    pub noise_schedule: NoiseScheduleConfig,
    /// Training duration.
    pub duration: Duration,
    /// The SSL-Wearables recipe (meaningful for ssl_multitask only).
    pub multitask: MultitaskRecipe,
}

/// How `ssl_multitask` draws its training windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSampling {
    /// Seeded shuffles, every window once per epoch.
    Uniform,
    /// Each step draws its batch without replacement with probability proportional to the
    /// windows' standard deviations.
    Movement,
}

/// The validated `[multitask]` section.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultitaskRecipe {
    /// Window sampling.
    pub sampling: WindowSampling,
    /// Random rotation of training windows.
    pub rotation: bool,
    /// Random axis permutation of training windows.
    pub axis_swap: bool,
    /// Settings of the three pretext transforms.
    pub tasks: flowfm_objectives::MultiTaskConfig,
    /// Held-out windows requested for pretext accuracy (0: none).
    pub heldout_windows: usize,
}

impl ExperimentFile {
    /// Parses TOML text (unknown keys are errors); `origin` names the source in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            msg: e.to_string(),
        })
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The file serialised back to TOML (what the run directory records).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

impl Experiment {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        ExperimentFile::load(path)?.validate()
    }

    /// A short stable fingerprint of the resolved config (FNV-1a of its TOML).
    pub fn fingerprint(&self) -> String {
        flowfm_core::hash::fnv1a64_hex(self.file.to_toml().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[run]
name = "t"
method = "flowfm"
seed = 3

[encoder]
width = 0.25

[generator]
preset = "small"

[train]
steps = 10
"#;

    #[test]
    fn a_minimal_config_validates_with_defaults() {
        let e = ExperimentFile::parse(MINIMAL, "inline")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(e.method, Method::Flowfm);
        assert_eq!(e.seed, 3);
        assert_eq!(e.duration, Duration::Steps(10));
        assert_eq!(e.generator.cond_dim, e.encoder.repr_dim());
        assert_eq!(e.noise_schedule.num_steps, 1000);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = MINIMAL.replace("seed = 3", "seed = 3\nlearning_rate = 0.1");
        let err = ExperimentFile::parse(&text, "exp.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exp.toml") && err.contains("learning_rate"),
            "{err}"
        );
    }

    #[test]
    fn run_names_that_would_escape_the_runs_folder_are_refused() {
        for bad in [
            "../escape_dir",
            "/abs/path",
            "",
            "a/b",
            ".hidden",
            "x\\y",
            "na me",
        ] {
            let text = MINIMAL.replace("name = \"t\"", &format!("name = {bad:?}"));
            let err = ExperimentFile::parse(&text, "exp.toml")
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains("run.name"), "{bad:?}: {err}");
        }
        let ok = MINIMAL.replace("name = \"t\"", "name = \"flowfm-default_2.b\"");
        assert!(ExperimentFile::parse(&ok, "exp.toml")
            .unwrap()
            .validate()
            .is_ok());
    }

    #[test]
    fn sizes_beyond_their_bounds_are_refused_before_anything_is_allocated() {
        let cases = [
            (
                "steps = 10",
                "steps = 10\n[diffusion]\nnum_steps = 1000000000000",
                "diffusion.num_steps",
            ),
            (
                "preset = \"small\"",
                "preset = \"small\"\nbase_channels = 100000",
                "generator.base_channels",
            ),
            (
                "preset = \"small\"",
                "preset = \"small\"\nchannel_mults = [1, 1000]",
                "generator.channel_mults",
            ),
            (
                "steps = 10",
                "steps = 10\nbatch_size = 100000000",
                "train.batch_size",
            ),
        ];
        for (from, to, field) in cases {
            let text = MINIMAL.replace(from, to);
            let err = ExperimentFile::parse(&text, "exp.toml")
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("width = 0.25", "width = -1.0", "encoder.width"),
            ("steps = 10", "steps = 10\nlr = -0.5", "train.lr"),
            (
                "steps = 10",
                "steps = 10\nbatch_size = 1",
                "train.batch_size",
            ),
            ("steps = 10", "epochs = 2\nsteps = 10", "train.steps"),
            (
                "preset = \"small\"",
                "preset = \"huge\"",
                "generator.preset",
            ),
            (
                "steps = 10",
                "steps = 10\n[flow]\ntime_sampling = \"beta\"",
                "flow.time_sampling",
            ),
            (
                "steps = 10",
                "steps = 10\nema_decay = 1.5",
                "train.ema_decay",
            ),
        ];
        for (from, to, field) in cases {
            let text = MINIMAL.replace(from, to);
            let err = match ExperimentFile::parse(&text, "x").and_then(|f| f.validate()) {
                Ok(_) => panic!("`{to}` should be rejected"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(field),
                "`{to}`: expected the error to name {field}, got: {err}"
            );
        }
    }

    #[test]
    fn omitted_sections_take_their_documented_defaults() {
        let text = MINIMAL.replace("[generator]\npreset = \"small\"\n", "");
        let e = ExperimentFile::parse(&text, "x")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(e.file.generator.preset, "paper");
        assert_eq!(e.file.flow.time_sampling, "uniform");
        assert_eq!(e.file.diffusion.schedule, "linear");
    }

    #[test]
    fn joint_options_are_validated() {
        let bad = |extra: &str, method: &str| {
            let text = format!(
                "{}\n[joint]\n{extra}\n",
                MINIMAL.replace("\"flowfm\"", &format!("\"{method}\""))
            );
            ExperimentFile::parse(&text, "x")
                .and_then(|f| f.validate())
                .err()
                .map(|e| e.to_string())
        };
        assert!(bad("echo_weight = -1.0", "flowfm")
            .unwrap()
            .contains("joint.echo_weight"));
        assert!(bad("echo_steps = 0", "flowfm")
            .unwrap()
            .contains("joint.echo_steps"));
        assert!(bad("echo_weight = 0.1", "diffusion")
            .unwrap()
            .contains("joint.echo_weight"));
        assert!(bad("encoder_augment = true", "ssl_multitask")
            .unwrap()
            .contains("joint.encoder_augment"));
        assert!(bad("echo_weight = 0.1\nencoder_augment = true", "flowfm").is_none());
    }

    #[test]
    fn unknown_method_is_a_parse_error() {
        let text = MINIMAL.replace("\"flowfm\"", "\"simclr\"");
        assert!(ExperimentFile::parse(&text, "x").is_err());
    }

    #[test]
    fn fingerprint_changes_with_the_config() {
        let a = ExperimentFile::parse(MINIMAL, "x")
            .unwrap()
            .validate()
            .unwrap();
        let b = ExperimentFile::parse(&MINIMAL.replace("seed = 3", "seed = 4"), "x")
            .unwrap()
            .validate()
            .unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.fingerprint(),
            ExperimentFile::parse(MINIMAL, "x")
                .unwrap()
                .validate()
                .unwrap()
                .fingerprint()
        );
    }
}
