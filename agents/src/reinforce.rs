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
//!
//! The transitions are kept in a [`TransitionStore`]: every transition of
//! the round (`buffer: Full`) or a [`Reservoir`](crate::reservoir::Reservoir)
//! of only as many as the update reads, drawn with the same law (`buffer:
//! Reservoir`; memory flat in T').

use envs::gaussian::LogProbReduction;
use envs::{Env, Step};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::agent::{Critics, FineTuneAgent};
use crate::buffer::TransitionBatch;
use crate::generator::Generator;
use crate::learner::PolicyLearner;
use crate::registry::{AgentKind, Registered};
use crate::returns::Collector;
pub use crate::store::BufferKind;
use crate::store::TransitionStore;
use crate::Learn;
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
    /// Which transitions of a round are kept for the update.
    pub buffer: BufferKind,
}

impl Default for ReinforceConfig {
    fn default() -> Self {
        Self {
            use_baseline: true,
            normalize_advantage: false,
            buffer: BufferKind::Full,
        }
    }
}

/// The cost-to-go estimate of each transition, f(x_0) - V(x_{t+1}, t+1)
/// (or f(x_0) without a baseline), detached; lower is better. Normalised
/// over the minibatch's rows on every rank ([`crate::shares`]).
pub(crate) fn cost_advantage(
    batch: &TransitionBatch,
    critics: &Critics<'_>,
    use_baseline: bool,
    normalize: bool,
) -> Result<Tensor, AgentError> {
    let advantage = tch::no_grad(|| {
        let f = critics.reward.value(&batch.final_sample);
        match (use_baseline, critics.baseline) {
            (true, Some(v)) => f - v.value(&batch.state, &(&batch.step - 1)),
            _ => f,
        }
    });
    if normalize {
        crate::shares::standardized_over_ranks(&advantage, batch.share)
    } else {
        Ok(advantage)
    }
}

/// The pathwise term of noiseless last steps whose means are `mean` (`[B,
/// ...]`, tracking the generator's gradients): per row, g . mean with g the
/// critic's gradient at the detached mean, divided by the data dimensions
/// under `LogProbReduction::Mean`. Its gradient is that of f(mu_theta(x_1)),
/// the limit of the score-function term of a step drawn with std s as s goes
/// to 0 (Stein: E[f(mu + s z) z / s] -> grad f(mu)), and no gradient reaches
/// the critic's weights.
pub fn pathwise_last_step(
    critic: &dyn envs::RewardModel,
    mean: &Tensor,
    reduction: LogProbReduction,
) -> Tensor {
    let at = mean.detach().set_requires_grad(true);
    let value = critic.value(&at).sum(at.kind());
    let grad = Tensor::run_backward(&[value], &[&at], false, false)
        .pop()
        .expect("one input, one gradient");
    let dims: Vec<i64> = (1..mean.dim() as i64).collect();
    let term = (grad * mean).sum_dim_intlist(dims.as_slice(), false, mean.kind());
    match reduction {
        LogProbReduction::Sum => term,
        LogProbReduction::Mean => term / mean.size()[1..].iter().product::<i64>() as f64,
    }
}

/// Logs the mean and spread of a minibatch's advantages (its rows of
/// every rank's: `share` is this rank's part, [`crate::shares`]).
pub(crate) fn record_advantage(
    advantage: &Tensor,
    share: f64,
    stats: &mut UpdateStats,
) -> Result<(), AgentError> {
    let (mean, std) = crate::shares::moments_over_ranks(advantage, share)?;
    stats.accumulate("generator/advantage_mean", mean);
    stats.accumulate("generator/advantage_std", std);
    Ok(())
}

/// REINFORCE with a learned baseline over the transitions of a round (the
/// SFT-PG agent when `L` is the diffusion [`Generator`]; any
/// [`PolicyLearner`] trains the same way).
pub struct Reinforce<L: PolicyLearner = Generator> {
    config: ReinforceConfig,
    learner: L,
    collector: Collector,
    transitions: Box<dyn TransitionStore>,
    minibatch: i64,
}

impl<L: PolicyLearner> Reinforce<L> {
    /// An agent training `learner` with minibatches of `minibatch` transitions.
    pub fn new(config: ReinforceConfig, learner: L, minibatch: i64) -> Self {
        let n_generator = learner.n_generator().max(1) as i64;
        let transitions = config.buffer.build(n_generator * minibatch.max(1));
        Self {
            config,
            learner,
            collector: Collector::default(),
            transitions,
            minibatch,
        }
    }

    /// The policy being trained, with its optimiser.
    pub fn learner(&self) -> &L {
        &self.learner
    }

    /// Number of transitions waiting for the update (at most the
    /// reservoir's capacity with `buffer: Reservoir`).
    pub fn buffered(&self) -> i64 {
        self.transitions.len()
    }

    /// Bytes of tensor memory the transitions hold
    /// ([`TransitionStore::bytes`]); read by the round benchmark.
    pub fn buffer_bytes(&self) -> usize {
        self.transitions.bytes()
    }

    /// The Eq. 20 loss on `batch` (with the learner's penalty if any); its
    /// gradient is the policy-gradient estimate.
    pub fn surrogate_loss(
        &self,
        batch: &TransitionBatch,
        critics: &Critics<'_>,
        stats: &mut UpdateStats,
    ) -> Result<Tensor, AgentError> {
        let advantage = cost_advantage(
            batch,
            critics,
            self.config.use_baseline,
            self.config.normalize_advantage,
        )?;
        record_advantage(&advantage, batch.share, stats)?;
        let loss = self
            .learner
            .score_function_loss(batch, &advantage, critics, stats);
        Ok(self.learner.penalised(loss, batch, stats))
    }
}

impl<E, L> Agent<E> for Reinforce<L>
where
    E: Env<Action = Tensor>,
    L: PolicyLearner<Obs = E::Obs>,
{
    fn act(&mut self, obs: &E::Obs) -> Result<Tensor, AgentError> {
        Ok(self.learner.act(obs))
    }

    fn observe(&mut self, obs: &E::Obs, action: &Tensor, step: &Step<E::Obs>) {
        self.collector.observe(
            &self.learner,
            self.transitions.as_mut(),
            obs,
            action,
            None,
            step,
        );
    }
}

impl<L: PolicyLearner> Learn for Reinforce<L> {
    fn update(&mut self, critics: &Critics<'_>) -> Result<UpdateStats, AgentError> {
        if self.buffered() == 0 {
            return Err(AgentError::Empty(
                "generator update with an empty trajectory buffer",
            ));
        }
        let device = self.learner.device();
        let n_generator = self.learner.n_generator();
        let batches = self
            .transitions
            .minibatches(self.minibatch, n_generator, device);
        let mut stats = UpdateStats::default();
        for batch in &batches {
            let mut own = UpdateStats::default();
            let loss = self.surrogate_loss(batch, critics, &mut own)?;
            self.learner.descend(&loss, batch.share, &mut own)?;
            stats.add_weighted(&own, batch.share);
        }
        self.transitions.clear();
        Ok(stats.average(batches.len()))
    }
}

impl AgentKind for ReinforceConfig {
    fn listed() -> &'static [Registered] {
        &[
        Registered {
            ron: "Reinforce(use_baseline: true, normalize_advantage: false)",
            summary: "SFT-PG (Eq. 20): REINFORCE on the buffered transitions with the learned baseline V",
        },
        Registered {
            ron: "Reinforce(use_baseline: true, buffer: Reservoir)",
            summary: "the same update keeping only the n_generator x minibatch transitions it reads (a uniform reservoir, same law as buffer: Full): memory flat in T', for images",
        },
        Registered {
            ron: "Reinforce(use_baseline: false)",
            summary: "plain REINFORCE: the same without the baseline, for comparison",
        },
        ]
    }

    fn build(&self, generator: Generator, batch: i64, _shape: &[i64]) -> Box<dyn FineTuneAgent> {
        Box::new(Reinforce::new(*self, generator, batch))
    }

    fn label(&self) -> &'static str {
        if self.use_baseline {
            "SFT-PG"
        } else {
            "REINFORCE (no baseline)"
        }
    }

    fn takes_pathwise_term(&self) -> bool {
        true
    }
}

impl FineTuneAgent for Reinforce<Generator> {
    fn generator(&self) -> &Generator {
        &self.learner
    }
    fn generator_mut(&mut self) -> &mut Generator {
        &mut self.learner
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

    #[test]
    fn the_policy_gradient_from_a_reservoir_lowers_the_critic_value() {
        let _rng = envs::testing::seeded(11);
        let config = ReinforceConfig {
            use_baseline: false,
            buffer: BufferKind::Reservoir,
            ..ReinforceConfig::default()
        };
        // 64 chains x 3 steps offered per round, 64 kept.
        let mut agent = Reinforce::new(config, tiny_generator(3e-3), 64);
        improves_on_a_tiny_problem(&mut agent, 300);
        assert_eq!(
            agent.buffered(),
            0,
            "the reservoir is cleared after an update"
        );
    }

    #[test]
    fn a_reservoir_holding_the_whole_round_updates_exactly_as_the_full_buffer() {
        // With room for every transition the reservoir draws nothing while
        // filling, holds the transitions in the buffer's order and draws the
        // same permutation: the same minibatch, the same step.
        let _rng = envs::testing::seeded(12);
        let critics = Critics {
            reward: &crate::testing::DistanceToTarget,
            baseline: None,
        };
        let weights: Vec<Vec<(String, Tensor)>> = [BufferKind::Full, BufferKind::Reservoir]
            .into_iter()
            .map(|buffer| {
                tch::manual_seed(12);
                let config = ReinforceConfig {
                    use_baseline: false,
                    buffer,
                    ..ReinforceConfig::default()
                };
                // 64 chains x 3 steps = 192 transitions, one minibatch of all.
                let mut agent = Reinforce::new(config, tiny_generator(1e-2), 192);
                let mut env = crate::testing::tiny_env();
                crate::rollout(&mut env, &mut agent, Some(7)).unwrap();
                assert_eq!(agent.buffered(), 192);
                agent.update(&critics).unwrap();
                let mut named: Vec<(String, Tensor)> = agent
                    .generator()
                    .policy()
                    .var_store()
                    .variables()
                    .into_iter()
                    .collect();
                named.sort_by(|a, b| a.0.cmp(&b.0));
                named
            })
            .collect();
        assert!(!weights[0].is_empty());
        for ((name, full), (_, reservoir)) in weights[0].iter().zip(&weights[1]) {
            assert!(full.equal(reservoir), "{name} differs");
        }
        let start = {
            tch::manual_seed(12);
            tiny_generator(1e-2)
        };
        let moved = start
            .policy()
            .var_store()
            .variables()
            .iter()
            .any(|(name, t)| {
                let after = &weights[0].iter().find(|(n, _)| n == name).unwrap().1;
                !t.equal(after)
            });
        assert!(moved, "the update changed the weights");
    }
}
