//! Errors of model configuration and checkpoint I/O.

use std::path::PathBuf;

/// What can go wrong when building a model from a config or reading/writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A config field is out of its domain.
    #[error("invalid model config: field `{field}`: {reason}")]
    InvalidConfig {
        /// The field path, as in the config (`stages[2].down_factor`).
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A checkpoint file is malformed or does not fit the model.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong, naming the tensor or metadata key.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl ModelError {
    /// An [`ModelError::InvalidConfig`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn checkpoint(path: &std::path::Path, reason: impl Into<String>) -> Self {
        ModelError::Checkpoint {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

impl From<ModelError> for candle_core::Error {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Tensor(e) => e,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}
