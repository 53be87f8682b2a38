//! DDPM pretraining: denoising score matching, the "imitation" of the
//! backward process (the eps-prediction loss of Ho et al.).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::ensure_finite;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::policy::DiffusionPolicy;
use crate::AgentError;

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

/// Trains a [`DiffusionPolicy`]'s eps-network on data by denoising score matching.
pub struct DdpmPretrainer {
    config: PretrainConfig,
    optimizer: Optimizer,
}

impl DdpmPretrainer {
    /// A pretrainer for `policy`.
    pub fn new(config: PretrainConfig, policy: &DiffusionPolicy) -> Self {
        Self {
            optimizer: config.optimizer.build(policy.var_store()),
            config,
        }
    }

    /// The optimiser, for checkpoints.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    /// The loss E ||eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t)||^2
    /// on a batch, with antithetic steps (t and T - 1 - t in each half).
    pub fn loss(policy: &DiffusionPolicy, x0: &Tensor) -> Tensor {
        let coefs = policy.coefficients();
        let steps = coefs.sigma.size()[0];
        let b = x0.size()[0];
        let half = Tensor::randint(steps, [b / 2 + 1], (Kind::Int64, x0.device()));
        let index = Tensor::cat(&[half.shallow_clone(), (steps - 1) - &half], 0).narrow(0, 0, b);
        let a = coefs.sqrt_alpha_bar.index_select(0, &index).unsqueeze(-1);
        let s = coefs
            .sqrt_one_minus_alpha_bar
            .index_select(0, &index)
            .unsqueeze(-1);
        let noise = x0.randn_like();
        let x = x0 * a + &noise * s;
        let net_steps = coefs.network_steps.index_select(0, &index);
        (noise - policy.eps_at_network_steps(&x, &net_steps))
            .square()
            .mean(Kind::Float)
    }

    /// One optimisation step on a batch; returns the loss.
    pub fn step(&mut self, policy: &DiffusionPolicy, x0: &Tensor) -> Result<f64, AgentError> {
        self.optimizer.zero_grad();
        let loss = Self::loss(policy, x0);
        let value = ensure_finite("pretraining loss", loss.double_value(&[]))?;
        loss.backward();
        self.optimizer.clip_grad_norm(self.config.grad_clip);
        self.optimizer.step();
        Ok(value)
    }
}
