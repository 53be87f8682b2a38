//! A learned state-value baseline V(s) for environments with per-step
//! rewards: an MLP regressed on the realised cost-to-go of the states an
//! agent visited, used as the REINFORCE / PPO baseline (`critics.baseline`).

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::ensure_finite;
use crate::networks::{dense_stack, tanh_mlp, Dense, ValueModel};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::AgentError;

/// V(s): an MLP with tanh hidden layers, fitted by mean squared error.
pub struct StateValue {
    vs: VarStore,
    layers: Vec<Dense>,
    optimizer: Optimizer,
}

impl StateValue {
    /// A fresh baseline for observations of `obs_dim` values with hidden
    /// widths `hidden`, trained by `optimizer`.
    pub fn new(obs_dim: i64, hidden: &[i64], optimizer: OptimizerConfig, device: Device) -> Self {
        let vs = VarStore::new(device);
        let widths: Vec<i64> = std::iter::once(obs_dim)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(1))
            .collect();
        let layers = dense_stack(&vs.root(), &widths);
        let optimizer = optimizer.build(&vs);
        Self {
            vs,
            layers,
            optimizer,
        }
    }

    /// V of every row of `obs` (`[B]`).
    pub fn forward(&self, obs: &Tensor) -> Tensor {
        tanh_mlp(&self.layers, obs).squeeze_dim(-1)
    }

    /// `steps` optimiser steps of mean squared error between V(`obs`) and
    /// the `[N]` targets, on minibatches of `minibatch` rows drawn without
    /// replacement; returns the mean loss.
    pub fn fit(
        &mut self,
        obs: &Tensor,
        targets: &Tensor,
        steps: usize,
        minibatch: i64,
    ) -> Result<f64, AgentError> {
        let n = obs.size()[0];
        if n == 0 {
            return Ok(0.0);
        }
        let order = crate::buffer::minibatch_order(n, minibatch.min(n), steps, obs.device());
        let mut total = 0.0;
        for k in 0..steps as i64 {
            let rows = order.narrow(0, k * minibatch.min(n), minibatch.min(n));
            let loss = (self.forward(&obs.index_select(0, &rows)) - targets.index_select(0, &rows))
                .square()
                .mean(Kind::Float);
            self.optimizer.zero_grad();
            total += ensure_finite("baseline loss", loss.double_value(&[]))?;
            loss.backward();
            self.optimizer.step();
        }
        Ok(total / steps.max(1) as f64)
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
}

impl ValueModel for StateValue {
    /// V(s); the step index is not an input.
    fn value(&self, x: &Tensor, _index: &Tensor) -> Tensor {
        self.forward(x)
    }
}
