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
    /// The episodes reached a terminal state.
    pub terminated: bool,
    /// The episodes were cut short by a time limit (never, for fixed horizons).
    pub truncated: bool,
    /// Diagnostics.
    pub info: Info,
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
    /// Applies one action to every episode.
    fn step(&mut self, action: &Self::Action) -> Result<Step<Self::Obs>, EnvError>;
}
