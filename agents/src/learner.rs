//! What a policy-gradient agent needs of the policy it trains: the
//! [`PolicyLearner`] trait. [`Reinforce`](crate::reinforce::Reinforce) and
//! [`Ppo`](crate::ppo::Ppo) are written against it, so the same update
//! rules train the diffusion sampler ([`Generator`], a Gaussian policy over
//! chain states) and a categorical policy over discrete actions
//! ([`crate::categorical::CategoricalLearner`], CartPole).

use envs::gaussian;
use envs::rows::Rows;
use tch::{Device, Kind, Tensor};

use crate::agent::Critics;
use crate::buffer::TransitionBatch;
use crate::generator::{DeterministicStep, Generator};
use crate::reinforce::pathwise_last_step;
use crate::{AgentError, UpdateStats};

/// How an agent turns what it observed into the cost of a transition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The episode's final observation, scored when the agent updates by
    /// the reward model of that moment (`critics.reward`): SFT-PG's
    /// f(x_0), with the critic of the update (the critic moves between a
    /// rollout and the update, as in the authors' code). Episodes of a
    /// batch end together.
    FinalObservation,
    /// The realised discounted cost-to-go, -sum_k gamma^k r_{t+k} over the
    /// rest of the episode, known once the episode ends (episodes may end
    /// apart); the reward model of the update is
    /// [`crate::returns::RealizedCost`], which reads it back.
    CostToGo {
        /// The discount gamma in (0, 1].
        discount: f64,
    },
}

/// A policy, its optimiser, and what the policy-gradient agents ask of them.
pub trait PolicyLearner {
    /// What the policy observes (the environment's observation type).
    type Obs;

    /// How the agents turn an episode into costs for this policy's task.
    fn outcome(&self) -> Outcome;
    /// The tensor of an observation that transitions store (`[B, ...]`).
    fn state(&self, obs: &Self::Obs) -> Tensor;
    /// Which rows of the global batch an observation holds (a
    /// data-parallel rank's share; all of them by default).
    fn rows(&self, obs: &Self::Obs) -> Rows {
        Rows::all(self.state(obs).size()[0])
    }
    /// The 1-based step of an observation (the sampler step of a chain
    /// state), if observations carry one; otherwise the [`crate::returns::Collector`]
    /// numbers the steps of an episode from 1.
    fn step_index(&self, obs: &Self::Obs) -> Option<usize>;
    /// Whether transitions taken in `obs` are left out of the update.
    fn excludes(&self, _obs: &Self::Obs) -> bool {
        false
    }
    /// Actions for every row of `obs` as a rollout draws them, without gradients.
    fn act(&self, obs: &Self::Obs) -> Tensor;
    /// Actions with their log-density under the current policy (what
    /// ratio-based agents store), without gradients.
    fn act_with_log_prob(&self, obs: &Self::Obs) -> (Tensor, Tensor);
    /// log pi_theta(action | state) of every row of `batch`, tracking gradients.
    fn log_prob(&self, batch: &TransitionBatch) -> Tensor;
    /// The REINFORCE loss on `batch` given the detached cost advantage of
    /// each row: mean(advantage x log pi) by default.
    fn score_function_loss(
        &self,
        batch: &TransitionBatch,
        advantage: &Tensor,
        _critics: &Critics<'_>,
        stats: &mut UpdateStats,
    ) -> Tensor {
        let log_prob = self.log_prob(batch);
        stats.accumulate(
            "generator/log_prob",
            log_prob.mean(Kind::Float).double_value(&[]),
        );
        let terms = advantage * &log_prob;
        terms.mean(terms.kind())
    }
    /// `loss` plus any penalty on the states of `batch` (none by default).
    fn penalised(
        &self,
        loss: Tensor,
        _batch: &TransitionBatch,
        _stats: &mut UpdateStats,
    ) -> Tensor {
        loss
    }
    /// One optimiser step on `loss`, the mean over rows that are `share` of
    /// the minibatch ([`TransitionBatch::share`]), reporting the loss and
    /// gradient norm.
    fn descend(
        &mut self,
        loss: &Tensor,
        share: f64,
        stats: &mut UpdateStats,
    ) -> Result<(), AgentError>;
    /// Optimiser steps (minibatches) per update.
    fn n_generator(&self) -> usize;
    /// Where the policy's weights live.
    fn device(&self) -> Device;
}

impl PolicyLearner for Generator {
    type Obs = envs::diffusion::ChainState;

    fn outcome(&self) -> Outcome {
        Outcome::FinalObservation
    }

    fn state(&self, obs: &Self::Obs) -> Tensor {
        obs.x.shallow_clone()
    }

    fn rows(&self, obs: &Self::Obs) -> Rows {
        obs.rows
    }

    fn step_index(&self, obs: &Self::Obs) -> Option<usize> {
        Some(obs.t)
    }

    fn excludes(&self, obs: &Self::Obs) -> bool {
        self.excludes_step(obs.t)
    }

    fn act(&self, obs: &Self::Obs) -> Tensor {
        self.policy().act_in_rollout(obs)
    }

    fn act_with_log_prob(&self, obs: &Self::Obs) -> (Tensor, Tensor) {
        self.policy().act_with_log_prob(obs, self.config().log_prob)
    }

    fn log_prob(&self, batch: &TransitionBatch) -> Tensor {
        self.policy().log_prob(
            &batch.state,
            &batch.action,
            &batch.step,
            self.config().log_prob,
        )
    }

    /// Eq. 20's loss; with `deterministic_step: Pathwise` the rows of the
    /// sampler's noiseless last step contribute the pathwise term of
    /// [`pathwise_last_step`] instead.
    fn score_function_loss(
        &self,
        batch: &TransitionBatch,
        advantage: &Tensor,
        critics: &Critics<'_>,
        stats: &mut UpdateStats,
    ) -> Tensor {
        let policy = self.policy();
        let reduction = self.config().log_prob;
        let mean = policy.mean(&batch.state, &batch.step);
        let std = policy.density_std(&batch.step, &mean);
        let log_prob = gaussian::log_prob_with_std(&batch.action, &mean, &std, reduction);
        stats.accumulate(
            "generator/log_prob",
            log_prob.mean(Kind::Float).double_value(&[]),
        );
        let score_terms = advantage * &log_prob;
        match pathwise_rows(self, batch) {
            None => score_terms.mean(score_terms.kind()),
            Some(rows) => {
                let rows_kept = score_terms.ones_like().index_fill(0, &rows, 0.0);
                let pathwise =
                    pathwise_last_step(critics.reward, &mean.index_select(0, &rows), reduction);
                let kind = score_terms.kind();
                ((score_terms * rows_kept).sum(kind) + pathwise.sum(kind))
                    / batch.step.size()[0] as f64
            }
        }
    }

    fn penalised(&self, loss: Tensor, batch: &TransitionBatch, stats: &mut UpdateStats) -> Tensor {
        Generator::penalised(self, loss, &batch.state, &batch.step, stats)
    }

    fn descend(
        &mut self,
        loss: &Tensor,
        share: f64,
        stats: &mut UpdateStats,
    ) -> Result<(), AgentError> {
        Generator::descend(self, loss, share, stats)
    }

    fn n_generator(&self) -> usize {
        self.config().n_generator
    }

    fn device(&self) -> Device {
        self.policy().var_store().device()
    }
}

/// The rows of `batch` whose step takes the pathwise term (`None` unless
/// `deterministic_step: Pathwise` and some row is such a step).
fn pathwise_rows(generator: &Generator, batch: &TransitionBatch) -> Option<Tensor> {
    if generator.config().deterministic_step != DeterministicStep::Pathwise {
        return None;
    }
    let policy = generator.policy();
    let steps = Vec::<i64>::try_from(&batch.step.to_device(Device::Cpu)).ok()?;
    let rows: Vec<i64> = steps
        .iter()
        .enumerate()
        .filter(|(_, &t)| policy.is_deterministic_step(t as usize))
        .map(|(row, _)| row as i64)
        .collect();
    (!rows.is_empty()).then(|| Tensor::from_slice(&rows).to_device(batch.step.device()))
}
