//! flowfm-models: the networks of flowfm, built only from the gradient-checked ops of
//! `flowfm-ops` and initialised from seeded `VarBuilder`s (`flowfm_core::init`).
//!
//! - [`encoder`]: the SSL-Wearables ResNet-V2 encoder [`HarNet`] (implements
//!   [`flowfm_core::Encoder`]) with presets for 10 s, 30 s and 5 s windows and a width multiplier;
//! - [`unet`]: the conditional 1-D U-Net, as the flow-matching velocity field [`FlowUNet`]
//!   ([`flowfm_core::VelocityField`]) and the DDPM noise predictor [`DiffusionUNet`]
//!   ([`flowfm_core::Denoiser`]);
//! - [`heads`]: downstream classifier, linear probe, multi-task SSL heads, projection head;
//! - [`checkpoint`]: safetensors checkpoints with the config in the metadata;
//! - [`layers`]: shared blocks, the detached (graph-free) view of a `VarBuilder`, parameter
//!   counting.
//!
//! Parameter names equal the Rust field paths (`stages.0.blocks.1.bn1.running_mean`), so a
//! checkpoint is self-describing. Every network keeps a detached twin sharing its weights for
//! inference without an autograd graph (`encode_detached`, `FlowUNet::detached`).

pub mod checkpoint;
pub mod encoder;
pub mod error;
pub mod heads;
pub mod layers;
pub mod unet;

pub use checkpoint::{
    load_checkpoint, load_checkpoint_checked, read_checkpoint_metadata, save_checkpoint,
    CheckpointMetadata,
};
pub use encoder::{EncoderConfig, HarNet, StageConfig};
pub use error::ModelError;
pub use heads::{
    Classifier, ClassifierConfig, LinearProbe, MultiTaskHeads, MultiTaskLogits, ProjectionConfig,
    ProjectionHead,
};
pub use layers::{count_parameters, detached_var_builder, trainable_vars, NormKind, ParamCount};
pub use unet::{
    DetachedDenoiser, DetachedFlow, DiffusionUNet, Downsampling, FlowUNet, LengthPolicy, UNet1d,
    UNetConfig,
};
