//! Control tasks: the policy-gradient agents that fine-tune diffusion
//! samplers (REINFORCE with a learned baseline, PPO-clip) trained on a
//! classic control environment (gymnasium's CartPole-v1) through the same
//! [`agents::Agent`] and [`envs::Env`] traits, with a categorical policy and
//! a state-value baseline. A `Control(...)` file describes the run
//! ([`ControlExperiment`]); [`train`] runs it until the task is solved.

mod train;

use std::path::Path;

use agents::categorical::CategoricalConfig;
use agents::optim::OptimizerConfig;
use agents::ppo::PpoConfig;
use agents::reinforce::ReinforceConfig;
use envs::check::Checker;
use serde::{Deserialize, Serialize};

use crate::config::{deserialize, locate_field, user_options, DeviceChoice};
use crate::error::ConfigError;
use crate::overrides::Overridable;

pub use train::{run, train, ControlReport};

/// One control run: environment, agent, policy, baseline and when to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Control")]
pub struct ControlExperiment {
    /// Run name: `runs/<name>/`.
    pub name: String,
    /// Seeds libtorch (weights, actions) and the environment's resets.
    pub seed: u64,
    /// Where the networks run.
    #[serde(default)]
    pub device: DeviceChoice,
    /// libtorch intra-op threads (1 is fastest for these small networks).
    #[serde(default = "one")]
    pub threads: usize,
    /// The environment.
    pub env: ControlEnv,
    /// The algorithm, as in a fine-tuning task's `agent:`.
    pub agent: ControlAgent,
    /// The categorical policy and its updates.
    #[serde(default)]
    pub policy: CategoricalConfig,
    /// The state-value baseline.
    #[serde(default)]
    pub baseline: BaselineFit,
    /// Transitions per minibatch of an update.
    pub minibatch: i64,
    /// At most this many updates (one batch of episodes each).
    pub updates: usize,
    /// When the task counts as solved (training stops there).
    #[serde(default)]
    pub solved: SolvedWhen,
    /// Where the run folder goes.
    #[serde(default = "runs")]
    pub dir: String,
}

fn one() -> usize {
    1
}

fn runs() -> String {
    "runs".into()
}

/// A control environment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ControlEnv {
    /// Gymnasium's CartPole-v1 ([`envs::cartpole`]), `episodes` at once:
    /// each update plays one episode per row.
    CartPole {
        /// Parallel episodes per update.
        episodes: i64,
    },
}

/// The agents a control run can use (those of fine-tuning, on a categorical policy).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ControlAgent {
    /// REINFORCE, with or without the learned baseline.
    Reinforce(ReinforceConfig),
    /// PPO-clip.
    Ppo(PpoConfig),
}

/// How the baseline V(s) is fitted after each update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineFit {
    /// Widths of the hidden layers (tanh).
    pub hidden: Vec<i64>,
    /// The baseline's optimiser.
    pub optimizer: OptimizerConfig,
    /// Optimiser steps per update.
    pub steps: usize,
    /// States per minibatch.
    pub minibatch: i64,
}

impl Default for BaselineFit {
    fn default() -> Self {
        Self {
            hidden: vec![64, 64],
            optimizer: OptimizerConfig::Adam { lr: 1e-2 },
            steps: 20,
            minibatch: 1024,
        }
    }
}

/// The solved criterion: a mean return over consecutive episodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SolvedWhen {
    /// The mean return to reach.
    pub mean_return: f64,
    /// Over this many consecutive training episodes.
    pub episodes: usize,
}

impl Default for SolvedWhen {
    /// CartPole-v1's: 475 over 100 episodes.
    fn default() -> Self {
        Self {
            mean_return: envs::cartpole::SOLVED_RETURN,
            episodes: envs::cartpole::SOLVED_EPISODES,
        }
    }
}

impl crate::overrides::Overridable for ControlExperiment {
    fn to_ron(&self) -> String {
        ControlExperiment::to_ron(self)
    }
    fn parse_unvalidated(text: &str, path: &Path) -> Result<Self, ConfigError> {
        deserialize(text, path, user_options())
    }
    fn check(&self) -> Result<(), (String, String)> {
        let mut check = Checker::new();
        self.validate(&mut check);
        check.result()
    }
}

impl ControlExperiment {
    /// Reads and validates a `Control(...)` file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&crate::error::read_text(path)?, path)
    }

    /// Parses and validates `text`; errors name `path`, the line and the field.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let experiment: Self = deserialize(text, path, user_options())?;
        experiment
            .check()
            .map_err(|(field, message)| ConfigError::Invalid {
                file: path.to_path_buf(),
                line: locate_field(text, &field),
                field,
                message,
            })?;
        Ok(experiment)
    }

    /// The run in RON, every field written out (stored with its weights).
    pub fn to_ron(&self) -> String {
        crate::config::to_ron(self)
    }

    /// Checks every part under its dotted name.
    pub fn validate(&self, check: &mut Checker) {
        check.that(
            !self.name.trim().is_empty()
                && self
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)),
            "name",
            format!(
                "must be non-empty letters, digits, '_', '-' and '.', got {:?}",
                self.name
            ),
        );
        check.at_least("threads", self.threads, 1);
        match self.env {
            ControlEnv::CartPole { episodes } => check.that(
                episodes >= 1,
                "env.episodes",
                format!("must be at least 1, got {episodes}"),
            ),
        }
        check.within("agent", |c| match &self.agent {
            ControlAgent::Reinforce(_) => {}
            ControlAgent::Ppo(p) => p.validate(c),
        });
        check.within("policy", |c| self.policy.validate(c));
        check.within("baseline", |c| {
            c.that(
                !self.baseline.hidden.is_empty() && self.baseline.hidden.iter().all(|&w| w >= 1),
                "hidden",
                format!(
                    "must list at least one positive width, got {:?}",
                    self.baseline.hidden
                ),
            );
            c.within("optimizer", |c| self.baseline.optimizer.validate(c));
            c.at_least("steps", self.baseline.steps, 1);
            c.that(
                self.baseline.minibatch >= 1,
                "minibatch",
                format!("must be at least 1, got {}", self.baseline.minibatch),
            );
        });
        check.that(
            self.minibatch >= 1,
            "minibatch",
            format!("must be at least 1, got {}", self.minibatch),
        );
        check.at_least("updates", self.updates, 1);
        check.at_least("solved.episodes", self.solved.episodes, 1);
    }

    /// Whether the agent subtracts the learned baseline.
    pub fn uses_baseline(&self) -> bool {
        match self.agent {
            ControlAgent::Reinforce(c) => c.use_baseline,
            ControlAgent::Ppo(c) => c.use_baseline,
        }
    }
}
