//! DDPM pretraining: denoising score matching, the "imitation" of the
//! backward process (the eps-prediction loss of Ho et al.).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::ensure_finite;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::policy::DiffusionPolicy;
use crate::AgentError;
use envs::schedule::{Schedule, StepCoefficients};

/// Settings of DDPM pretraining.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// The optimiser (the toy uses RMSprop, lr 1e-3).
    pub optimizer: OptimizerConfig,
    /// Clip the gradient's global norm at this value.
    pub grad_clip: Option<f64>,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerConfig::RmsProp { lr: 1e-3 },
            grad_clip: Some(1.0),
        }
    }
}

/// Trains a [`DiffusionPolicy`]'s eps-network on data by denoising score
/// matching over the model's training schedule (which may differ from the
/// sampler the policy steps with: a T = 1000 model sampled in 10 steps).
pub struct DdpmPretrainer {
    config: PretrainConfig,
    optimizer: Optimizer,
    training: StepCoefficients,
}

impl DdpmPretrainer {
    /// A pretrainer for `policy`, trained over the T steps of `training`.
    pub fn new(config: PretrainConfig, policy: &DiffusionPolicy, training: &Schedule) -> Self {
        Self {
            optimizer: config.optimizer.build(policy.var_store()),
            training: training.coefficients(policy.var_store().device()),
            config,
        }
    }

    /// The optimiser, for checkpoints.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    /// The loss E ||eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t)||^2
    /// on a batch `[B, ...]` of any element shape, with antithetic steps
    /// (t and T - 1 - t in each half).
    ///
    /// On several ranks ([`collective::current`]) `x0` is the global batch:
    /// every rank draws the steps and noise of all of it (so the draws do
    /// not depend on the world size) and evaluates the network on its own
    /// rows ([`collective::shard`]) only; its loss is its rows' share of the
    /// global mean, so the ranks' gradients sum to the one-process gradient.
    pub fn loss(&self, policy: &DiffusionPolicy, x0: &Tensor) -> Tensor {
        let coefs = &self.training;
        let steps = coefs.sigma.size()[0];
        let b = x0.size()[0];
        let half = Tensor::randint(steps, [b / 2 + 1], (Kind::Int64, x0.device()));
        let index = Tensor::cat(&[half.shallow_clone(), (steps - 1) - &half], 0).narrow(0, 0, b);
        let mut shape = vec![-1i64];
        shape.extend(std::iter::repeat_n(1, x0.dim() - 1));
        let a = coefs
            .sqrt_alpha_bar
            .index_select(0, &index)
            .view(shape.as_slice());
        let s = coefs
            .sqrt_one_minus_alpha_bar
            .index_select(0, &index)
            .view(shape.as_slice());
        let noise = x0.randn_like();
        let x = x0 * a + &noise * s;
        let net_times = coefs.network_times.index_select(0, &index);
        let (rows, weight) = crate::shares::own_rows_weighted(b);
        let loss = (rows.of(&noise)
            - policy.eps_at_network_steps(&rows.of(&x), &rows.of(&net_times)))
        .square()
        .mean(Kind::Float);
        if rows.is_all() {
            loss
        } else {
            loss * weight
        }
    }

    /// One optimisation step on a batch (the network in training mode:
    /// dropout on); returns the loss.
    pub fn step(&mut self, policy: &DiffusionPolicy, x0: &Tensor) -> Result<f64, AgentError> {
        self.optimizer.zero_grad();
        policy.set_training(true);
        let loss = self.loss(policy, x0);
        policy.set_training(false);
        let value = ensure_finite("pretraining loss", loss.double_value(&[]))?;
        loss.backward();
        self.optimizer.clip_grad_norm(self.config.grad_clip);
        self.optimizer.step();
        Ok(value)
    }
}
