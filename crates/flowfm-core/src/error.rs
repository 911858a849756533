//! Errors of the core vocabulary (invalid times, steps and schedule parameters).

/// An invalid value handed to a core type.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CoreError {
    /// A flow time outside [0, 1] or not finite.
    #[error("flow time {0} is outside [0, 1] (noise at 0, data at 1)")]
    InvalidFlowTime(f64),
    /// A diffusion step at or beyond the number of steps of the schedule.
    #[error("diffusion step {step} is out of range for a schedule of {num_steps} steps")]
    InvalidDiffusionStep {
        /// The offending step.
        step: usize,
        /// The schedule length `T`.
        num_steps: usize,
    },
    /// A parameter of a path, schedule or grid that is out of its domain.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// Parameter name, as in the config.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

impl From<CoreError> for candle_core::Error {
    fn from(e: CoreError) -> Self {
        candle_core::Error::Msg(e.to_string())
    }
}
