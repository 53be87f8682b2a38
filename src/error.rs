//! Errors of the shortcut runner.

use std::path::PathBuf;

use thiserror::Error;

/// A configuration file could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid RON for an experiment (syntax, unknown field, wrong type).
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A value is outside its domain.
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line of the field.
        line: usize,
        /// Dotted path of the field.
        field: String,
        /// What was expected.
        message: String,
    },
}

/// Everything that can stop a run.
#[derive(Debug, Error)]
pub enum RunError {
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An agent or critic failed (including divergence to NaN).
    #[error(transparent)]
    Agent(#[from] agents::AgentError),
    /// An environment failed.
    #[error(transparent)]
    Env(#[from] envs::EnvError),
    /// A tensor operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Writing logs failed.
    #[error(transparent)]
    Recording(#[from] crate::recording::tensorboard::RecordingError),
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] crate::recording::curves::PlotError),
    /// A metric could not be computed.
    #[error(transparent)]
    Metric(#[from] crate::metrics::error::MetricError),
    /// A checkpoint is missing, unreadable or does not fit.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// File-system trouble outside checkpoints.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A run diverged.
    #[error("{0}")]
    Diverged(String),
}
