//! A categorical policy over discrete actions (an MLP from observation
//! vectors to action logits), as a [`PolicyLearner`]: what the same
//! REINFORCE and PPO agents that fine-tune diffusion samplers train on
//! control tasks such as CartPole. Costs are the realised discounted
//! cost-to-go ([`Outcome::CostToGo`]).

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::buffer::TransitionBatch;
use crate::error::ensure_finite;
use crate::learner::{Outcome, PolicyLearner};
use crate::networks::{dense_stack, tanh_mlp, Dense};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::{AgentError, UpdateStats};

/// Settings of a categorical policy and its updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategoricalConfig {
    /// Widths of the hidden layers (tanh).
    pub hidden: Vec<i64>,
    /// The policy's optimiser.
    pub optimizer: OptimizerConfig,
    /// Optimiser steps (minibatches) per update.
    pub n_generator: usize,
    /// Clip the global gradient norm at this value.
    pub grad_clip: Option<f64>,
    /// The discount gamma of the cost-to-go, in (0, 1].
    pub discount: f64,
}

impl Default for CategoricalConfig {
    fn default() -> Self {
        Self {
            hidden: vec![64, 64],
            optimizer: OptimizerConfig::Adam { lr: 3e-3 },
            n_generator: 1,
            grad_clip: Some(1.0),
            discount: 0.99,
        }
    }
}

impl CategoricalConfig {
    /// Checks the widths, the optimiser, n_generator, clipping and the discount.
    pub fn validate(&self, check: &mut envs::check::Checker) {
        check.that(
            !self.hidden.is_empty() && self.hidden.iter().all(|&w| w >= 1),
            "hidden",
            format!(
                "must list at least one positive width, got {:?}",
                self.hidden
            ),
        );
        check.within("optimizer", |c| self.optimizer.validate(c));
        check.at_least("n_generator", self.n_generator, 1);
        check.positive_opt("grad_clip", self.grad_clip);
        check.that(
            self.discount > 0.0 && self.discount <= 1.0,
            "discount",
            format!("must lie in (0, 1], got {}", self.discount),
        );
    }
}

/// pi_theta(a | s) = softmax(MLP_theta(s))_a, with its optimiser.
pub struct CategoricalLearner {
    config: CategoricalConfig,
    vs: VarStore,
    layers: Vec<Dense>,
    optimizer: Optimizer,
}

impl CategoricalLearner {
    /// A freshly initialised policy over `n_actions` actions for
    /// observations of `obs_dim` values, on `device`.
    pub fn new(config: CategoricalConfig, obs_dim: i64, n_actions: i64, device: Device) -> Self {
        let vs = VarStore::new(device);
        let widths: Vec<i64> = std::iter::once(obs_dim)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(n_actions))
            .collect();
        let layers = dense_stack(&vs.root(), &widths);
        let optimizer = config.optimizer.build(&vs);
        Self {
            config,
            vs,
            layers,
            optimizer,
        }
    }

    /// The action logits of every row of `obs` (`[B, obs_dim]` -> `[B, n_actions]`).
    pub fn logits(&self, obs: &Tensor) -> Tensor {
        tanh_mlp(&self.layers, obs)
    }

    /// The most likely action of every row (greedy evaluation).
    pub fn greedy(&self, obs: &Tensor) -> Tensor {
        tch::no_grad(|| self.logits(obs).argmax(-1, false))
    }

    /// The weights.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Mutable access to the weights, e.g. to load a checkpoint.
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// The optimiser, for checkpoints.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    /// The settings.
    pub fn config(&self) -> &CategoricalConfig {
        &self.config
    }
}

impl PolicyLearner for CategoricalLearner {
    type Obs = Tensor;

    fn outcome(&self) -> Outcome {
        Outcome::CostToGo {
            discount: self.config.discount,
        }
    }

    fn state(&self, obs: &Tensor) -> Tensor {
        obs.shallow_clone()
    }

    fn step_index(&self, _obs: &Tensor) -> Option<usize> {
        None
    }

    fn act(&self, obs: &Tensor) -> Tensor {
        tch::no_grad(|| {
            self.logits(obs)
                .softmax(-1, Kind::Float)
                .multinomial(1, true)
                .squeeze_dim(-1)
        })
    }

    fn act_with_log_prob(&self, obs: &Tensor) -> (Tensor, Tensor) {
        tch::no_grad(|| {
            let log_p = self.logits(obs).log_softmax(-1, Kind::Float);
            let action = log_p.exp().multinomial(1, true);
            let log_prob = log_p.gather(1, &action, false).squeeze_dim(-1);
            (action.squeeze_dim(-1), log_prob)
        })
    }

    fn log_prob(&self, batch: &TransitionBatch) -> Tensor {
        self.logits(&batch.state)
            .log_softmax(-1, Kind::Float)
            .gather(1, &batch.action.unsqueeze(-1), false)
            .squeeze_dim(-1)
    }

    fn descend(
        &mut self,
        loss: &Tensor,
        share: f64,
        stats: &mut UpdateStats,
    ) -> Result<(), AgentError> {
        self.optimizer.zero_grad();
        let value = if share == 0.0 {
            0.0
        } else {
            ensure_finite("policy loss", loss.double_value(&[]))?
        };
        crate::shares::backward_share(loss, share, self.optimizer.params());
        let grad_norm = ensure_finite(
            "policy gradient norm",
            self.optimizer.clip_grad_norm(self.config.grad_clip),
        )?;
        self.optimizer.step();
        stats.accumulate("generator/loss", value);
        stats.accumulate("generator/grad_norm", grad_norm);
        Ok(())
    }

    fn n_generator(&self) -> usize {
        self.config.n_generator
    }

    fn device(&self) -> Device {
        self.vs.device()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probs_are_those_of_the_softmax_and_actions_follow_it() {
        let _rng = envs::testing::seeded(1);
        let policy = CategoricalLearner::new(CategoricalConfig::default(), 4, 3, Device::Cpu);
        let obs = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let (action, log_prob) = policy.act_with_log_prob(&obs);
        assert_eq!(action.size(), [5]);
        assert_eq!(action.kind(), Kind::Int64);
        let probs = tch::no_grad(|| policy.logits(&obs).softmax(-1, Kind::Float));
        for i in 0..5 {
            let a = action.int64_value(&[i]);
            let p = probs.double_value(&[i, a]);
            assert!((log_prob.double_value(&[i]) - p.ln()).abs() < 1e-5);
        }
        let batch = TransitionBatch {
            state: obs.shallow_clone(),
            action: action.shallow_clone(),
            final_sample: Tensor::zeros([5, 1], (Kind::Float, Device::Cpu)),
            step: Tensor::ones([5], (Kind::Int64, Device::Cpu)),
            behaviour_log_prob: None,
            share: 1.0,
        };
        assert!(policy
            .log_prob(&batch)
            .detach()
            .allclose(&log_prob, 1e-6, 1e-6, false));
        // Frequencies of 20,000 draws in one state match its probabilities.
        let many = obs.get(0).unsqueeze(0).expand([20_000, 4], false);
        let counts = policy
            .act(&many)
            .bincount(None::<Tensor>, 3)
            .to_kind(Kind::Double)
            / 20_000.0;
        let expected = probs.get(0).to_kind(Kind::Double);
        assert!(
            (counts - expected).abs().max().double_value(&[]) < 0.015,
            "4 sd of a frequency is about 0.014"
        );
    }
}
