//! REINFORCE with a learned baseline: the SFT-PG generator update (Eq. 20).
//!
//! For transitions (x_{t+1}, x_t, x_0, t+1) drawn from the buffer the loss is
//! mean[(f(x_0) - V(x_{t+1}, t+1)) log pi_theta(x_t | x_{t+1})] with the
//! advantage detached; descending it is ascending the return -f(x_0).
//! Without the baseline it is plain REINFORCE. The critic and baseline are
//! those of the moment of the update, as in the authors' code.
//!
//! The loss averages over transitions, so its gradient is (1/T') times the
//! gradient of E[f(x_0)] (Theorem 4.1 sums over the T' steps of a chain).

use envs::diffusion::{ChainState, DiffusionEnv};
use envs::Step;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::agent::{Critics, FineTuneAgent};
use crate::buffer::{EpisodeCollector, TransitionBatch};
use crate::generator::Generator;
use crate::{Agent, AgentError, UpdateStats};

/// Settings of the REINFORCE generator update (the shared ones are in
/// [`crate::generator::GeneratorConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReinforceConfig {
    /// Subtract the learned baseline from the return (SFT-PG); off: plain REINFORCE.
    pub use_baseline: bool,
    /// Normalise advantages to zero mean and unit variance per minibatch.
    pub normalize_advantage: bool,
}

impl Default for ReinforceConfig {
    fn default() -> Self {
        Self {
            use_baseline: true,
            normalize_advantage: false,
        }
    }
}

/// The cost-to-go estimate of each transition, f(x_0) - V(x_{t+1}, t+1)
/// (or f(x_0) without a baseline), detached; lower is better.
pub(crate) fn cost_advantage(
    batch: &TransitionBatch,
    critics: &Critics<'_>,
    use_baseline: bool,
    normalize: bool,
) -> Tensor {
    let advantage = tch::no_grad(|| {
        let f = critics.reward.value(&batch.final_sample);
        match (use_baseline, critics.baseline) {
            (true, Some(v)) => f - v.value(&batch.state, &(&batch.step - 1)),
            _ => f,
        }
    });
    if normalize {
        (&advantage - advantage.mean(Kind::Float)) / (advantage.std(true) + 1e-8)
    } else {
        advantage
    }
}

/// Logs the mean and spread of a minibatch's advantages.
pub(crate) fn record_advantage(advantage: &Tensor, stats: &mut UpdateStats) {
    stats.accumulate(
        "generator/advantage_mean",
        advantage.mean(Kind::Float).double_value(&[]),
    );
    stats.accumulate(
        "generator/advantage_std",
        advantage.std(true).double_value(&[]),
    );
}

/// The SFT-PG agent: the generator and the trajectory buffer.
pub struct Reinforce {
    config: ReinforceConfig,
    generator: Generator,
    episodes: EpisodeCollector,
    minibatch: i64,
}

impl Reinforce {
    /// An agent fine-tuning `generator` with minibatches of `minibatch` transitions.
    pub fn new(config: ReinforceConfig, generator: Generator, minibatch: i64) -> Self {
        Self {
            config,
            generator,
            episodes: EpisodeCollector::default(),
            minibatch,
        }
    }

    /// Number of transitions waiting in the buffer.
    pub fn buffered(&self) -> i64 {
        self.episodes.buffer.len()
    }

    /// Bytes of tensor memory the trajectory buffer holds (see
    /// [`crate::buffer::TrajectoryBuffer::bytes`]); read by the round benchmark.
    pub fn buffer_bytes(&self) -> usize {
        self.episodes.buffer.bytes()
    }

    /// The Eq. 20 loss on `batch` (with the KL penalty if set); its gradient
    /// is the policy-gradient estimate.
    pub fn surrogate_loss(
        &self,
        batch: &TransitionBatch,
        critics: &Critics<'_>,
        stats: &mut UpdateStats,
    ) -> Tensor {
        let advantage = cost_advantage(
            batch,
            critics,
            self.config.use_baseline,
            self.config.normalize_advantage,
        );
        let policy = self.generator.policy();
        let log_prob = policy.log_prob(
            &batch.state,
            &batch.action,
            &batch.step,
            self.generator.config().log_prob,
        );
        record_advantage(&advantage, stats);
        stats.accumulate(
            "generator/log_prob",
            log_prob.mean(Kind::Float).double_value(&[]),
        );
        let loss = (&advantage * &log_prob).mean(Kind::Float);
        self.generator
            .penalised(loss, &batch.state, &batch.step, stats)
    }
}

impl Agent<DiffusionEnv> for Reinforce {
    fn act(&mut self, obs: &ChainState) -> Result<Tensor, AgentError> {
        Ok(self.generator.policy().act(obs))
    }

    fn observe(&mut self, obs: &ChainState, action: &Tensor, step: &Step<ChainState>) {
        self.episodes.step(&obs.x, action, obs.t, None);
        if step.terminated || step.truncated {
            self.episodes.finish(&step.obs.x);
        }
    }

    fn update(&mut self, critics: &Critics<'_>) -> Result<UpdateStats, AgentError> {
        if self.episodes.buffer.is_empty() {
            return Err(AgentError::Empty(
                "generator update with an empty trajectory buffer",
            ));
        }
        let device = self.generator.policy().var_store().device();
        let n_generator = self.generator.config().n_generator;
        let batches = self
            .episodes
            .buffer
            .minibatches(self.minibatch, n_generator, device);
        let mut stats = UpdateStats::default();
        for batch in &batches {
            let loss = self.surrogate_loss(batch, critics, &mut stats);
            self.generator.descend(&loss, &mut stats)?;
        }
        self.episodes.buffer.clear();
        Ok(stats.average(batches.len()))
    }
}

impl FineTuneAgent for Reinforce {
    fn generator(&self) -> &Generator {
        &self.generator
    }
    fn generator_mut(&mut self) -> &mut Generator {
        &mut self.generator
    }
    fn uses_baseline(&self) -> bool {
        self.config.use_baseline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{improves_on_a_tiny_problem, tiny_generator};

    #[test]
    fn the_policy_gradient_lowers_the_critic_value() {
        let _rng = envs::testing::seeded(11);
        let config = ReinforceConfig {
            use_baseline: false,
            ..ReinforceConfig::default()
        };
        let mut agent = Reinforce::new(config, tiny_generator(3e-3), 64);
        improves_on_a_tiny_problem(&mut agent, 300);
        assert_eq!(agent.buffered(), 0, "the buffer is cleared after an update");
    }
}
