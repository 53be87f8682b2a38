//! The gymnasium-style environment trait, batch-first.

use std::collections::BTreeMap;

use crate::{EnvError, Space};

/// Free-form diagnostics returned by `reset` and `step` (gymnasium's `info`).
pub type Info = BTreeMap<String, f64>;

/// What one call to [`Env::step`] returns.
#[derive(Debug)]
pub struct Step<O> {
    /// The next observation.
    pub obs: O,
    /// The reward of every parallel episode, a `[B]` tensor.
    pub reward: tch::Tensor,
    /// Which episodes reached a terminal state, a `[B]` bool tensor.
    pub terminated: tch::Tensor,
    /// Which episodes were cut short by a time limit, a `[B]` bool tensor
    /// (none, for fixed horizons).
    pub truncated: tch::Tensor,
    /// Diagnostics.
    pub info: Info,
}

impl<O> Step<O> {
    /// Which episodes ended (terminated or truncated), a `[B]` bool tensor.
    pub fn ended(&self) -> tch::Tensor {
        self.terminated.logical_or(&self.truncated)
    }

    /// Whether every episode ended at this step.
    pub fn all_ended(&self) -> bool {
        self.ended().all().int64_value(&[]) != 0
    }

    /// Whether some episode ended at this step.
    pub fn any_ended(&self) -> bool {
        self.ended().any().int64_value(&[]) != 0
    }
}

/// An environment holding `B` parallel episodes that advance in lock-step.
pub trait Env {
    /// What the agent observes.
    type Obs;
    /// What the agent does.
    type Action;

    /// The space of one observation.
    fn observation_space(&self) -> Space;
    /// The space of one action.
    fn action_space(&self) -> Space;
    /// Number of parallel episodes.
    fn num_envs(&self) -> i64;
    /// Starts new episodes; a seed makes the initial states repeatable.
    fn reset(&mut self, seed: Option<u64>) -> Result<(Self::Obs, Info), EnvError>;
    /// Applies one action to every episode. Stepping an episode that ended
    /// (and was not restarted) is an [`EnvError::NeedsReset`].
    fn step(&mut self, action: &Self::Action) -> Result<Step<Self::Obs>, EnvError>;
    /// Restarts the episodes whose entry of the `[B]` bool mask `ended` is
    /// true (as [`Step::ended`] gives it) and returns the observations of all
    /// episodes, the others continuing where they were. The default serves
    /// environments whose episodes end together: it restarts all of them
    /// with [`Env::reset`] when all ended, and refuses a partial mask.
    fn reset_ended(&mut self, ended: &tch::Tensor) -> Result<Self::Obs, EnvError> {
        if ended.numel() as i64 != self.num_envs() {
            return Err(EnvError::Shape {
                what: "ended",
                expected: vec![self.num_envs()],
                got: ended.size(),
            });
        }
        if ended.all().int64_value(&[]) == 0 {
            return Err(EnvError::Invalid {
                field: "ended",
                reason: "the episodes of this environment end together and restart together; \
                         got a mask with some episodes still running"
                    .into(),
            });
        }
        Ok(self.reset(None)?.0)
    }
}
