//! Errors of weight imports.

use std::path::PathBuf;

use thiserror::Error;

/// Why weights or a model description could not be used.
#[derive(Debug, Error)]
pub enum WeightsError {
    /// A file could not be read.
    #[error("{path}: cannot read")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what its name promises (JSON, safetensors, npy).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was expected.
        message: String,
    },
    /// A setting of a model description is missing, of the wrong type, or
    /// one this implementation does not have.
    #[error("{path}: {key}: {message}")]
    Config {
        /// The description file (`config.json`, `scheduler_config.json`).
        path: PathBuf,
        /// The setting.
        key: String,
        /// What was expected.
        message: String,
    },
    /// The file and the model disagree about a tensor.
    #[error("{path}: tensor {key}: {message}")]
    Tensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name (as the model calls it).
        key: String,
        /// What is wrong: missing, unexpected, or the two shapes.
        message: String,
    },
}
