//! The error type of the agents crate.

use thiserror::Error;

/// Everything that can go wrong while acting or learning.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The environment refused a step.
    #[error(transparent)]
    Env(#[from] envs::EnvError),
    /// A tensor operation failed inside libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A loss or gradient became NaN or infinite.
    #[error("{what} is not finite ({value}); lower the learning rate or enable grad clipping")]
    NonFinite {
        /// Which quantity diverged.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// An update was asked for with nothing to learn from.
    #[error("{0}")]
    Empty(&'static str),
    /// A setting that this policy or agent cannot honour.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A network setting that does not fit the samples or is out of its domain.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Saved optimiser state does not fit the parameters.
    #[error("optimiser state: {0}")]
    State(String),
    /// A collective operation between data-parallel ranks failed.
    #[error(transparent)]
    Collective(#[from] collective::CollectiveError),
}

/// Returns `value` if finite, else a [`AgentError::NonFinite`] naming `what`.
pub fn ensure_finite(what: &'static str, value: f64) -> Result<f64, AgentError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(AgentError::NonFinite { what, value })
    }
}
