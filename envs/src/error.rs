//! The error type of the environments crate.

use thiserror::Error;

/// Everything that can go wrong inside an environment.
#[derive(Debug, Error)]
pub enum EnvError {
    /// `step` was called before `reset`, or after an episode ended (which
    /// episodes, and how to restart them, in the message).
    #[error("step called on an environment that needs a reset ({0})")]
    NeedsReset(String),
    /// An action or observation had the wrong shape.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// What was being checked.
        what: &'static str,
        /// The shape that was expected.
        expected: Vec<i64>,
        /// The shape that was given.
        got: Vec<i64>,
    },
    /// A schedule or data-set setting is out of its domain.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting at fault.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A data file is missing, truncated or malformed.
    #[error("{path}: {message}")]
    Data {
        /// The file (or the folder where it was expected).
        path: std::path::PathBuf,
        /// What was expected.
        message: String,
    },
    /// A tensor operation failed inside libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
