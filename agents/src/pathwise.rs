//! SFT, the pathwise estimator (Eq. 14): the whole chain is reparameterised,
//! x_t = mu_theta(x_{t+1}, t+1) + sigma_{t+1} z, and mean f(x_0) is minimised by
//! back-propagating through all T' steps. Each generator step samples fresh
//! chains; the activations of every step are kept for the backward pass, so
//! memory grows linearly with T' (the paper's argument for SFT-PG).

use envs::diffusion::{ChainState, DiffusionEnv};
use envs::rows::Rows;
use envs::Step;
use tch::{Kind, Tensor};

use crate::agent::{Critics, FineTuneAgent};
use crate::generator::Generator;
use crate::policy::DiffusionPolicy;
use crate::registry::{AgentKind, Registered};
use crate::Learn;
use crate::{Agent, AgentError, UpdateStats};

/// The pathwise agent's registry entry (it has no settings of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathwiseKind;

impl AgentKind for PathwiseKind {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "Pathwise",
            summary: "SFT (Eq. 14): back-propagates mean f(x_0) through the reparameterised chain",
        }]
    }

    fn build(&self, generator: Generator, batch: i64, shape: &[i64]) -> Box<dyn FineTuneAgent> {
        Box::new(Pathwise::new(generator, batch, shape))
    }

    fn label(&self) -> &'static str {
        "SFT (pathwise)"
    }
}

/// The pathwise agent.
pub struct Pathwise {
    generator: Generator,
    chains: i64,
    shape: Vec<i64>,
}

impl Pathwise {
    /// An agent fine-tuning `generator` on `chains` fresh chains per step,
    /// of samples of shape `shape`.
    pub fn new(generator: Generator, chains: i64, shape: &[i64]) -> Self {
        Self {
            generator,
            chains,
            shape: shape.to_vec(),
        }
    }

    /// mean f(x_0) over fresh reparameterised chains (plus the KL penalty at
    /// their states if set); its gradient is the pathwise estimate. On
    /// several ranks the chains are this rank's `rows` of the global
    /// `chains` ([`crate::shares`]; their noise is drawn over all of them)
    /// and the loss is the mean over those.
    pub fn loss(
        &self,
        rows: Rows,
        critics: &Critics<'_>,
        stats: &mut UpdateStats,
    ) -> Result<Tensor, AgentError> {
        let policy = self.generator.policy();
        let device = policy.var_store().device();
        let x_t = rows.randn(&self.shape, Kind::Float, device);
        let mut env =
            DiffusionEnv::new(policy.schedule().clone(), &self.shape, self.chains, device)?
                .holding(rows);
        let start = env.start_at(x_t)?;
        let mut chains = Reparameterized {
            policy,
            chains: rows.len,
            states: self.generator.config().kl_weight > 0.0,
            kept: Vec::new(),
        };
        let x = crate::drive(&mut env, &mut chains, start, false)?
            .terminal
            .x;
        let loss = critics.reward.value(&x).mean(Kind::Float);
        if chains.states {
            let (xs, steps): (Vec<Tensor>, Vec<Tensor>) = chains.kept.into_iter().unzip();
            let (xs, steps) = (Tensor::cat(&xs, 0), Tensor::cat(&steps, 0));
            Ok(self.generator.penalised(loss, &xs, &steps, stats))
        } else {
            Ok(loss)
        }
    }
}

/// The policy acting through its reparameterisation, x_t = mu_theta(x_{t+1})
/// plus sigma z, differentiable in theta; it keeps each state and its steps
/// when a KL penalty needs them.
struct Reparameterized<'a> {
    policy: &'a DiffusionPolicy,
    chains: i64,
    states: bool,
    kept: Vec<(Tensor, Tensor)>,
}

impl Agent<DiffusionEnv> for Reparameterized<'_> {
    fn act(&mut self, obs: &ChainState) -> Result<Tensor, AgentError> {
        let device = obs.x.device();
        let steps = Tensor::full([self.chains], obs.t as i64, (Kind::Int64, device));
        if self.states {
            self.kept.push((obs.x.detach(), steps.shallow_clone()));
        }
        Ok(self.policy.act_reparameterized(&obs.x, &steps, &obs.rows))
    }

    fn observe(&mut self, _obs: &ChainState, _action: &Tensor, _step: &Step<ChainState>) {}
}

impl Learn for Reparameterized<'_> {
    fn update(&mut self, _critics: &Critics<'_>) -> Result<UpdateStats, AgentError> {
        Err(AgentError::Unsupported(
            "the chains of a pathwise loss do not learn",
        ))
    }
}

impl Agent<DiffusionEnv> for Pathwise {
    fn act(&mut self, obs: &ChainState) -> Result<Tensor, AgentError> {
        Ok(self.generator.policy().act(obs))
    }

    fn observe(&mut self, _obs: &ChainState, _action: &Tensor, _step: &Step<ChainState>) {}
}

impl Learn for Pathwise {
    fn update(&mut self, critics: &Critics<'_>) -> Result<UpdateStats, AgentError> {
        let n_generator = self.generator.config().n_generator;
        let mut stats = UpdateStats::default();
        let rows = crate::shares::own_rows(self.chains);
        if rows.len == 0 {
            return Err(AgentError::Invalid {
                field: "batch",
                reason: format!(
                    "{} chains leave a rank without any: give every rank at least one",
                    self.chains
                ),
            });
        }
        for _ in 0..n_generator {
            let mut own = UpdateStats::default();
            let loss = self.loss(rows, critics, &mut own)?;
            self.generator.descend(&loss, rows.fraction(), &mut own)?;
            stats.add_weighted(&own, rows.fraction());
        }
        Ok(stats.average(n_generator))
    }
}

impl FineTuneAgent for Pathwise {
    fn generator(&self) -> &Generator {
        &self.generator
    }
    fn generator_mut(&mut self) -> &mut Generator {
        &mut self.generator
    }
    fn uses_baseline(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{improves_on_a_tiny_problem, tiny_generator};

    #[test]
    fn the_pathwise_gradient_lowers_the_critic_value() {
        let _rng = envs::testing::seeded(14);
        let mut agent = Pathwise::new(tiny_generator(3e-3), 64, &[2]);
        improves_on_a_tiny_problem(&mut agent, 100);
    }
}
