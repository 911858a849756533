//! Errors of the data layer: every message names the file (and line or field) at fault.

use std::path::PathBuf;

/// A data error. Bad input is always an `Err`, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O failure on a file.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A malformed line in a text file (1-based line number).
    #[error("{}:{line}: {msg}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A file whose structure is wrong (not line-specific).
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A checksum mismatch.
    #[error("{}: sha256 {actual} does not match the expected {expected}", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
    /// An invalid configuration value.
    #[error("invalid `{field}`: {msg}")]
    Config {
        /// The field name.
        field: String,
        /// Why it is invalid.
        msg: String,
    },
    /// A failure in the HDF5 library.
    #[error("{}: HDF5: {msg}", path.display())]
    Hdf5 {
        /// The file.
        path: PathBuf,
        /// The library's message.
        msg: String,
    },
    /// A failure of an external tool (e.g. `pip download`).
    #[error("{tool}: {msg}")]
    External {
        /// The tool.
        tool: String,
        /// What went wrong, with a hint how to fix it.
        msg: String,
    },
    /// A recording whose contents are inconsistent (lengths, labels, rates, channels).
    #[error("{dataset}/{session}: {msg}")]
    Recording {
        /// The dataset name.
        dataset: String,
        /// The recording's session (file name or experiment id).
        session: String,
        /// What is wrong.
        msg: String,
    },
}

impl DataError {
    /// A parse error at `path:line`.
    pub fn parse(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        DataError::Parse {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }

    /// A format error in `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<flowfm_core::fs::FsError> for DataError {
    fn from(e: flowfm_core::fs::FsError) -> Self {
        DataError::Io {
            path: e.path,
            source: std::io::Error::new(e.source.kind(), format!("{}: {}", e.action, e.source)),
        }
    }
}

/// Result alias of the data layer.
pub type Result<T> = std::result::Result<T, DataError>;
