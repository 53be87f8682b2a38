//! REINFORCE with a learned baseline: the SFT-PG generator update (Eq. 20).
//!
//! For transitions (x_{t+1}, x_t, x_0, t+1) drawn from the buffer the loss is
//! mean[(f(x_0) - V(x_{t+1}, t+1)) log pi_theta(x_t | x_{t+1})] with the
//! advantage detached; descending it is ascending the return -f(x_0).
//! The critic and baseline are those of the moment of the update, as in the
//! authors' code.

use envs::diffusion::{ChainState, DiffusionEnv};
use envs::gaussian::LogProbReduction;
use envs::Step;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::agent::Critics;
use crate::buffer::{TrajectoryBuffer, TransitionBatch};
use crate::error::ensure_finite;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::policy::DiffusionPolicy;
use crate::{Agent, AgentError, UpdateStats};

/// Settings of the REINFORCE generator update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReinforceConfig {
    /// Optimiser of the generator (theta).
    pub optimizer: OptimizerConfig,
    /// Subtract the learned baseline from the return (SFT-PG); off: plain REINFORCE.
    pub use_baseline: bool,
    /// Reduction of the log-density over data dimensions.
    pub log_prob: LogProbReduction,
    /// Generator steps per critic round, each on its own disjoint minibatch.
    pub n_generator: usize,
    /// Clip the gradient's global norm at this value (gamma); none: no clipping.
    pub grad_clip: Option<f64>,
    /// Normalise advantages to zero mean and unit variance per minibatch.
    pub normalize_advantage: bool,
}

impl Default for ReinforceConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerConfig::Adam { lr: 5e-5 },
            use_baseline: true,
            log_prob: LogProbReduction::Sum,
            n_generator: 1,
            grad_clip: None,
            normalize_advantage: false,
        }
    }
}

/// The SFT-PG agent: a diffusion policy, its optimiser and the trajectory buffer.
pub struct Reinforce {
    config: ReinforceConfig,
    policy: DiffusionPolicy,
    optimizer: Optimizer,
    buffer: TrajectoryBuffer,
    pending: Vec<(Tensor, Tensor, usize)>,
    minibatch: i64,
}

impl Reinforce {
    /// An agent fine-tuning `policy` with minibatches of `minibatch` transitions.
    pub fn new(config: ReinforceConfig, policy: DiffusionPolicy, minibatch: i64) -> Self {
        let optimizer = config.optimizer.build(policy.var_store());
        Self {
            config,
            policy,
            optimizer,
            buffer: TrajectoryBuffer::new(),
            pending: Vec::new(),
            minibatch,
        }
    }

    /// The policy being trained.
    pub fn policy(&self) -> &DiffusionPolicy {
        &self.policy
    }

    /// Mutable access to the policy, e.g. to load weights in place.
    pub fn policy_mut(&mut self) -> &mut DiffusionPolicy {
        &mut self.policy
    }

    /// The generator optimiser, for checkpoints.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    /// Number of transitions waiting in the buffer.
    pub fn buffered(&self) -> i64 {
        self.buffer.len()
    }

    fn step_on(
        &mut self,
        batch: &TransitionBatch,
        critics: &Critics<'_>,
        stats: &mut UpdateStats,
    ) -> Result<(), AgentError> {
        let advantage = tch::no_grad(|| {
            let f = critics.reward.value(&batch.final_sample);
            match (self.config.use_baseline, critics.baseline) {
                (true, Some(v)) => f - v.value(&batch.state, &(&batch.step - 1)),
                _ => f,
            }
        });
        let advantage = if self.config.normalize_advantage {
            (&advantage - advantage.mean(Kind::Float)) / (advantage.std(true) + 1e-8)
        } else {
            advantage
        };
        self.optimizer.zero_grad();
        let log_prob = self.policy.log_prob(
            &batch.state,
            &batch.action,
            &batch.step,
            self.config.log_prob,
        );
        let loss = (&advantage * &log_prob).mean(Kind::Float);
        let loss_value = ensure_finite("generator loss", loss.double_value(&[]))?;
        loss.backward();
        let grad_norm = ensure_finite(
            "generator gradient norm",
            self.optimizer.clip_grad_norm(self.config.grad_clip),
        )?;
        self.optimizer.step();
        stats.accumulate("generator/loss", loss_value);
        stats.accumulate("generator/grad_norm", grad_norm);
        stats.accumulate(
            "generator/advantage_mean",
            advantage.mean(Kind::Float).double_value(&[]),
        );
        stats.accumulate(
            "generator/advantage_std",
            advantage.std(true).double_value(&[]),
        );
        stats.accumulate(
            "generator/log_prob",
            log_prob.mean(Kind::Float).double_value(&[]),
        );
        Ok(())
    }
}

impl Agent<DiffusionEnv> for Reinforce {
    fn act(&mut self, obs: &ChainState) -> Result<Tensor, AgentError> {
        Ok(self.policy.act(obs))
    }

    fn observe(&mut self, obs: &ChainState, action: &Tensor, step: &Step<ChainState>) {
        self.pending
            .push((obs.x.shallow_clone(), action.shallow_clone(), obs.t));
        if step.terminated || step.truncated {
            let final_sample = step.obs.x.shallow_clone();
            for (state, action, t) in self.pending.drain(..) {
                let n = state.size()[0];
                self.buffer.push(TransitionBatch {
                    step: Tensor::full([n], t as i64, (Kind::Int64, state.device())),
                    state,
                    action,
                    final_sample: final_sample.shallow_clone(),
                });
            }
        }
    }

    fn update(&mut self, critics: &Critics<'_>) -> Result<UpdateStats, AgentError> {
        if self.buffer.is_empty() {
            return Err(AgentError::Empty(
                "generator update with an empty trajectory buffer",
            ));
        }
        let device = self.policy.var_store().device();
        let batches = self
            .buffer
            .minibatches(self.minibatch, self.config.n_generator, device);
        let mut stats = UpdateStats::default();
        for batch in &batches {
            self.step_on(batch, critics, &mut stats)?;
        }
        self.buffer.clear();
        Ok(stats.average(batches.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout;
    use envs::schedule::{BetaSchedule, Schedule, Variance};
    use envs::RewardModel;
    use tch::Device;

    /// f(x) = |x - (1, -1)|^2: the return -f(x_0) is highest at (1, -1).
    struct DistanceToTarget;
    impl RewardModel for DistanceToTarget {
        fn value(&self, x: &Tensor) -> Tensor {
            (x - Tensor::from_slice(&[1.0f32, -1.0]))
                .square()
                .sum_dim_intlist(1, false, Kind::Float)
        }
    }

    fn mean_cost(policy: &DiffusionPolicy) -> f64 {
        DistanceToTarget
            .value(&policy.sample(2000, 2))
            .mean(Kind::Float)
            .double_value(&[])
    }

    #[test]
    fn the_policy_gradient_lowers_the_critic_value() {
        let _rng = envs::testing::seeded(11);
        let schedule = Schedule::new(
            BetaSchedule::Linear {
                start: 0.05,
                end: 0.2,
            }
            .betas(3)
            .unwrap(),
            Variance::Beta,
        )
        .unwrap();
        let policy = DiffusionPolicy::toy(&schedule, 2, 32, 3, Device::Cpu);
        let before = mean_cost(&policy);
        let config = ReinforceConfig {
            optimizer: OptimizerConfig::Adam { lr: 3e-3 },
            ..ReinforceConfig::default()
        };
        let mut agent = Reinforce::new(config, policy, 64);
        let mut env = DiffusionEnv::new(schedule, &[2], 64, Device::Cpu).unwrap();
        for _ in 0..300 {
            rollout(&mut env, &mut agent, None).unwrap();
            let stats = agent
                .update(&Critics {
                    reward: &DistanceToTarget,
                    baseline: None,
                })
                .unwrap();
            assert!(stats.get("generator/loss").unwrap().is_finite());
            assert_eq!(agent.buffered(), 0, "the buffer is cleared after an update");
        }
        let after = mean_cost(agent.policy());
        assert!(after < 0.5 * before, "E f(x_0): {before} -> {after}");
    }
}
