//! flowfm-objectives: the training objectives as pure tensor functions (noise, times and steps
//! come in as arguments; the trainer draws them from a seeded RNG).
//!
//! - [`flow`]: conditional flow matching on an affine path ([`flow_matching_loss`]) and the
//!   training-time samplers (uniform, logit-normal);
//! - [`ddpm`]: the DDPM noise-prediction loss ([`ddpm_loss`]) and its step sampler;
//! - [`multitask`]: the SSL-Wearables transforms (arrow of time, permutation, time warp) and
//!   their loss;
//! - [`contrastive`]: InfoNCE and NT-Xent for the echo-contrast term;
//! - [`classification`]: class-weighted cross-entropy and inverse-frequency weights.
//!
//! **Invariant**: objectives see networks only through `flowfm_core::{VelocityField, Denoiser}`
//! and never depend on `flowfm-models`, so each loss is tested against analytic fields.

pub mod classification;
pub mod contrastive;
pub mod ddpm;
pub mod flow;
pub mod multitask;

pub use classification::{inverse_frequency_weights, weighted_cross_entropy};
pub use contrastive::{info_nce, nt_xent};
pub use ddpm::{ddpm_loss, sample_diffusion_steps};
pub use flow::{flow_matching_loss, sample_flow_times, TimeSampling};
pub use multitask::{
    multitask_accuracy, multitask_loss, multitask_transform, MultiTaskBatch, MultiTaskConfig,
    MultiTaskTargets,
};
