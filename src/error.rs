//! Errors of the shortcut runner.
//!
//! One convention for every error type here: an error's `Display` says what
//! went wrong at its own level and does not repeat its cause; the cause is
//! its `source()`. [`report`] prints the whole chain once, as `rl-run` does.

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use crate::report::report;

/// A configuration file could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{file}:{line}:{column}: not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8")]
    NotUtf8 {
        /// The file.
        file: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based column (in bytes) of the first invalid byte.
        column: usize,
        /// The first invalid byte.
        byte: u8,
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
    /// A `--set FIELD=VALUE` of the command line names no field of the
    /// experiment or gives a value that does not fit it.
    #[error("{file}: --set {field}: {message}")]
    Override {
        /// The experiment file.
        file: PathBuf,
        /// The dotted field as given.
        field: String,
        /// What is wrong.
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
    /// Pretrained weights or their description could not be used.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightsError),
    /// A data set or pretrained model could not be fetched.
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    /// A checkpoint is missing, unreadable or does not fit.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// File-system trouble outside checkpoints.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A run diverged.
    #[error("{0}")]
    Diverged(String),
    /// The ranks of a data-parallel run hold different weights or
    /// optimiser states (fingerprints by rank), which equal updates rule out.
    #[error("after epoch {epoch} the ranks' weights differ (fingerprints by rank: {fingerprints:x?}); the checkpoint was not written")]
    RanksDiverged {
        /// Epochs done.
        epoch: usize,
        /// Each rank's [`crate::checkpoint::CheckpointWriter::fingerprint`].
        fingerprints: Vec<u64>,
    },
    /// A collective of a data-parallel run failed.
    #[error(transparent)]
    Collective(#[from] collective::CollectiveError),
    /// What a data-parallel run cannot do (yet).
    #[error("on {world} ranks: {message}")]
    DataParallel {
        /// The world size.
        world: usize,
        /// What and why.
        message: String,
    },
    /// libtorch could not allocate the memory one unit of work needed.
    #[error("out of memory in {what}: lower {setting} (now {value}); checkpoints already written are unchanged ({detail})")]
    OutOfMemory {
        /// The unit of work (a pretraining batch, a sampling chunk, ...).
        what: String,
        /// The setting that sizes it.
        setting: &'static str,
        /// Its value.
        value: usize,
        /// libtorch's message.
        detail: String,
    },
}

/// Reads a text file a user wrote (an experiment, an ablation): a missing or
/// unreadable file is [`ConfigError::Read`], bytes that are not UTF-8 are
/// [`ConfigError::NotUtf8`] with the line and column of the first bad byte.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let before = &bytes[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        ConfigError::NotUtf8 {
            file: path.to_path_buf(),
            line,
            column: at - line_start + 1,
            byte: bytes[at],
        }
    })
}
