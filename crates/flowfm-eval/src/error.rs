//! Errors of the evaluation crate: bad inputs (named by field) and failures of the backends.

/// Why an evaluation could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An input that is out of its domain; `field` names the argument or config field.
    #[error("invalid `{field}`: {reason}")]
    InvalidInput {
        /// The argument or config field at fault (e.g. `labels[12]`, `config.k`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two inputs whose shapes must agree do not.
    #[error("shape mismatch between `{left}` and `{right}`: {reason}")]
    ShapeMismatch {
        /// The first input.
        left: String,
        /// The second input.
        right: String,
        /// The disagreement, with both shapes.
        reason: String,
    },
    /// The random-forest backend (smartcore) failed.
    #[error("random forest ({stage}): {message}")]
    Forest {
        /// `fit` or `predict`.
        stage: &'static str,
        /// The backend's message.
        message: String,
    },
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl EvalError {
    /// An [`EvalError::InvalidInput`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        EvalError::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`EvalError::ShapeMismatch`] between `left` and `right`.
    pub fn mismatch(
        left: impl Into<String>,
        right: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        EvalError::ShapeMismatch {
            left: left.into(),
            right: right.into(),
            reason: reason.into(),
        }
    }
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
