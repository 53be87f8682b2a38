//! The adversarial IPM critic f_alpha and the baseline V_omega, trained
//! together (Algorithm 1, inner loop). The critic ascends
//! g = E_p[f(x_0)] - E_q[f(x)] minus a regulariser:
//! baseline regularisation (Eq. 23, R_B flows into both f and V), the WGAN
//! gradient penalty (Eq. 22, V fitted on its own), or nothing.

use std::rc::Rc;

use envs::rows::Rows;
use envs::RewardModel;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::critic_networks::{BaselineNetwork, CriticNetwork};
use crate::error::ensure_finite;
use crate::networks::{BaselineHead, ValueModel};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::shares::backward_weighted;
use crate::{AgentError, UpdateStats};

/// How the critic is kept in check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum CriticRegularizer {
    /// Baseline regularisation (B): critic and baseline ascend g - lambda R_B.
    Baseline {
        /// The weight lambda of R_B, the paper's: R_B is the sum over the T'
        /// sampler steps of the mean over chains of (f(x_0) - V(x_{t+1}, t+1))^2
        /// (Eq. 23). The paper's toy runs use 0.1 at T' = 10 (the authors'
        /// toy code averages over the steps with weight 1, the same thing),
        /// its image runs 1.0.
        lambda: f64,
    },
    /// Gradient penalty (GP): the critic ascends g - eta E[(|grad f(xhat)| - 1)^2].
    GradientPenalty {
        /// The weight eta of the penalty.
        eta: f64,
    },
    /// No regulariser (the baseline is still fitted, on its own).
    None,
}

/// Settings of the critic and the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriticConfig {
    /// Optimiser of the critic f.
    pub optimizer: OptimizerConfig,
    /// Optimiser of the baseline V.
    pub baseline_optimizer: OptimizerConfig,
    /// Hidden width of the MLP critic, and of the baseline unless
    /// `baseline_hidden` is given.
    pub width: i64,
    /// The critic's network: `Mlp` (the toy's) or `Conv(channels: [...])`
    /// (the authors' image critic).
    pub network: CriticNetwork,
    /// The baseline's network: `Mlp` (conditional-linear, widths
    /// `baseline_hidden`) or `Conv(channels: [...])`.
    pub baseline: BaselineNetwork,
    /// The MLP baseline's hidden widths (default `[width, width]`; the
    /// authors' image baseline is `[1024, 1024, 256]`).
    pub baseline_hidden: Option<Vec<i64>>,
    /// The baseline's last layer. Default: the authors' for the data, a
    /// plain `Linear` for images (critic.py) and `Conditional` for vectors
    /// (toy_exp/models.py); see [`BaselineHead::default_for`].
    pub baseline_head: Option<BaselineHead>,
    /// The regulariser.
    pub regularizer: CriticRegularizer,
    /// Largest number of chain states whose R_B is back-propagated at once
    /// (bounds memory for long chains; the gradient does not depend on it).
    pub chunk_rows: i64,
}

impl CriticConfig {
    /// Checks the optimisers, the width, that the critic and baseline
    /// networks take samples of `shape`, and the regulariser's weight.
    pub fn validate(&self, check: &mut envs::check::Checker, shape: &[i64]) {
        check.within("optimizer", |c| self.optimizer.validate(c));
        check.within("baseline_optimizer", |c| {
            self.baseline_optimizer.validate(c)
        });
        check.that(
            self.width >= 1,
            "width",
            format!("must be at least 1, got {}", self.width),
        );
        if let Err(reason) = self.network.check(shape) {
            check.that(false, "network", reason);
        }
        if let Err(reason) = self.baseline.check(shape, self.baseline_hidden.as_deref()) {
            check.that(false, "baseline", reason);
        }
        match self.regularizer {
            CriticRegularizer::Baseline { lambda } => {
                check.non_negative("regularizer.lambda", lambda)
            }
            CriticRegularizer::GradientPenalty { eta } => {
                check.non_negative("regularizer.eta", eta)
            }
            CriticRegularizer::None => {}
        }
    }
}

impl Default for CriticConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerConfig::Adam { lr: 1e-3 },
            baseline_optimizer: OptimizerConfig::Adam { lr: 1e-3 },
            width: 256,
            network: CriticNetwork::Mlp,
            baseline: BaselineNetwork::Mlp,
            baseline_hidden: None,
            baseline_head: None,
            regularizer: CriticRegularizer::Baseline { lambda: 0.1 },
            chunk_rows: 8192,
        }
    }
}

/// The critic f, the baseline V and their optimisers.
pub struct AdversarialCritic {
    config: CriticConfig,
    critic_vs: VarStore,
    critic: Rc<dyn RewardModel>,
    baseline_vs: VarStore,
    baseline: Box<dyn ValueModel>,
    critic_opt: Optimizer,
    baseline_opt: Optimizer,
    fit_baseline: bool,
}

impl AdversarialCritic {
    /// A fresh critic for samples of `shape` and a baseline over `horizon`
    /// sampler steps; an error if the configured networks cannot take that
    /// shape.
    pub fn new(
        config: CriticConfig,
        shape: &[i64],
        horizon: i64,
        device: Device,
    ) -> Result<Self, AgentError> {
        let critic_vs = VarStore::new(device);
        let critic: Rc<dyn RewardModel> = config
            .network
            .build(&critic_vs.root(), shape, config.width)?
            .into();
        let baseline_vs = VarStore::new(device);
        let baseline = config.baseline.build(
            &baseline_vs.root(),
            shape,
            config.baseline_hidden.as_deref(),
            config.width,
            horizon,
            config
                .baseline_head
                .unwrap_or_else(|| BaselineHead::default_for(shape)),
        )?;
        let critic_opt = config.optimizer.build(&critic_vs);
        let baseline_opt = config.baseline_optimizer.build(&baseline_vs);
        Ok(Self {
            config,
            critic_vs,
            critic,
            baseline_vs,
            baseline,
            critic_opt,
            baseline_opt,
            fit_baseline: true,
        })
    }

    /// Whether R_B is computed at all: always under baseline regularisation;
    /// otherwise only when an agent reads the baseline (`needed`). Skipping it
    /// saves the baseline's passes over all T' x m chain states.
    pub fn fit_baseline_if(&mut self, needed: bool) {
        self.fit_baseline =
            needed || matches!(self.config.regularizer, CriticRegularizer::Baseline { .. });
    }

    /// The critic's variables (alpha).
    pub fn critic_vars(&mut self) -> &mut VarStore {
        &mut self.critic_vs
    }

    /// The baseline's variables (omega).
    pub fn baseline_vars(&mut self) -> &mut VarStore {
        &mut self.baseline_vs
    }

    /// The critic f as a reward model (a handle on the same weights).
    pub fn reward_model(&self) -> Rc<dyn RewardModel> {
        Rc::clone(&self.critic)
    }

    /// The critic f.
    pub fn critic(&self) -> &dyn RewardModel {
        self.critic.as_ref()
    }

    /// The baseline V.
    pub fn baseline(&self) -> &dyn ValueModel {
        self.baseline.as_ref()
    }

    /// The optimisers (critic, baseline), for checkpoints.
    pub fn optimizers_mut(&mut self) -> (&mut Optimizer, &mut Optimizer) {
        (&mut self.critic_opt, &mut self.baseline_opt)
    }

    /// g = mean f(fake) - mean f(real), without gradients.
    pub fn gap(&self, fake: &Tensor, real: &Tensor) -> f64 {
        tch::no_grad(|| {
            self.critic.value(fake).mean(Kind::Float) - self.critic.value(real).mean(Kind::Float)
        })
        .double_value(&[])
    }

    /// One ascent step of critic and baseline on a batch of chains.
    ///
    /// `states` are the chain states x_{t+1} (each `[B, D]`) with their 1-based
    /// steps, `fake` the chains' final samples x_0 and `real` a data batch.
    /// R_B is back-propagated in chunks of at most `chunk_rows` states (whole
    /// steps), so memory does not grow with the horizon; the gradient is the
    /// same as in one pass. Reports `critic/gap` (g), `critic/r_b` (R_B) and
    /// `critic/gp` when used.
    pub fn update(
        &mut self,
        states: &[(Tensor, usize)],
        fake: &Tensor,
        real: &Tensor,
    ) -> Result<UpdateStats, AgentError> {
        self.update_held(states, fake, real, Rows::all(fake.size()[0]))
    }

    /// [`Self::update`] on a data-parallel rank's share of the batch
    /// (docs/conventions.md section 7; [`crate::shares`]): the chains and
    /// the data rows are `rows` of the global batch's (the same rows of
    /// both), each loss is the mean over them back-propagated weighted by
    /// `rows.fraction()`, the gradient penalty's mixing weights are drawn
    /// over the global batch, and the optimisers sum the gradients over the
    /// ranks. The statistics are this rank's means (weight them by the
    /// fraction and sum over the ranks for the global ones).
    pub fn update_held(
        &mut self,
        states: &[(Tensor, usize)],
        fake: &Tensor,
        real: &Tensor,
        rows: Rows,
    ) -> Result<UpdateStats, AgentError> {
        let stats = self.backward_held(states, fake, real, rows)?;
        self.critic_opt.step();
        if self.fit_baseline {
            self.baseline_opt.step();
        }
        Ok(stats)
    }

    /// The gradients of [`Self::update_held`] (this rank's weighted part of
    /// them, before the sum over the ranks), left in the critic's and the
    /// baseline's variables; no step.
    pub fn backward_held(
        &mut self,
        states: &[(Tensor, usize)],
        fake: &Tensor,
        real: &Tensor,
        rows: Rows,
    ) -> Result<UpdateStats, AgentError> {
        let share = rows.fraction();
        if states.is_empty() {
            return Err(AgentError::Empty("critic update without chain states"));
        }
        self.critic_opt.zero_grad();
        self.baseline_opt.zero_grad();
        let mut stats = UpdateStats::default();

        // g and the gradient penalty.
        let gap =
            self.critic.value(fake).mean(Kind::Float) - self.critic.value(real).mean(Kind::Float);
        let mut loss = -&gap;
        if let CriticRegularizer::GradientPenalty { eta } = self.config.regularizer {
            let gp = self.gradient_penalty(fake, real, rows);
            stats.accumulate("critic/gp", gp.double_value(&[]));
            loss += gp * eta;
        }
        ensure_finite("critic loss", loss.double_value(&[]))?;
        stats.accumulate("critic/gap", gap.double_value(&[]));
        backward_weighted(&loss, share);
        if !self.fit_baseline {
            return Ok(stats);
        }

        // R_B, chunk by chunk: under B its gradient reaches f through f(x_0).
        // Each chunk's squares are summed and divided by all rows (the mean
        // over steps and chains); the paper's R_B sums over the steps, so it
        // is that mean times the number of steps, which the weight carries.
        let steps = states.len() as f64;
        let (weight, into_critic) = match self.config.regularizer {
            CriticRegularizer::Baseline { lambda } => (lambda * steps, true),
            _ => (1.0, false),
        };
        let rows: i64 = states.iter().map(|(x, _)| x.size()[0]).sum();
        let per_chunk = (self.config.chunk_rows / fake.size()[0].max(1)).max(1) as usize;
        let mut r_b = 0.0;
        for chunk in states.chunks(per_chunk) {
            let f_fake = if into_critic {
                self.critic.value(fake)
            } else {
                tch::no_grad(|| self.critic.value(fake))
            };
            let x = Tensor::cat(
                &chunk
                    .iter()
                    .map(|(x, _)| x.shallow_clone())
                    .collect::<Vec<_>>(),
                0,
            );
            let index = Tensor::cat(
                &chunk
                    .iter()
                    .map(|(x, t)| {
                        Tensor::full([x.size()[0]], *t as i64 - 1, (Kind::Int64, x.device()))
                    })
                    .collect::<Vec<_>>(),
                0,
            );
            let target = f_fake.repeat([chunk.len() as i64]);
            let squared = (self.baseline.value(&x, &index) - target)
                .square()
                .sum(Kind::Float)
                / rows as f64;
            r_b += ensure_finite("R_B", squared.double_value(&[]))?;
            backward_weighted(&(squared * weight), share);
        }
        stats.accumulate("critic/r_b", r_b * steps);
        Ok(stats)
    }

    fn gradient_penalty(&self, fake: &Tensor, real: &Tensor, rows: Rows) -> Tensor {
        let m = fake.size()[0].min(real.size()[0]);
        let fake = fake.narrow(0, 0, m).detach();
        let real = real.narrow(0, 0, m).detach();
        // One mixing weight per sample, broadcast over its elements, drawn
        // over the global batch when this is a share of it.
        let mixed = if rows.is_all() {
            Rows::all(m)
        } else {
            assert_eq!(m, rows.len, "a share holds its rows of both batches");
            rows
        };
        let shape = vec![1; fake.dim() - 1];
        let w = mixed.rand(&shape, Kind::Float, fake.device());
        let mix: Tensor = &w * &fake + (1.0 - &w) * &real;
        let xhat = mix.set_requires_grad(true);
        let out = self.critic.value(&xhat).sum(Kind::Float);
        let grads = Tensor::run_backward(&[out], &[&xhat], true, true);
        let elements: Vec<i64> = (1..grads[0].dim() as i64).collect();
        let norm = (grads[0]
            .square()
            .sum_dim_intlist(elements.as_slice(), false, Kind::Float)
            + 1e-12)
            .sqrt();
        (norm - 1.0).square().mean(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critic_separates_two_distributions() {
        let _rng = envs::testing::seeded(0);
        for regularizer in [
            CriticRegularizer::Baseline { lambda: 0.1 },
            CriticRegularizer::GradientPenalty { eta: 1.0 },
            CriticRegularizer::None,
        ] {
            let config = CriticConfig {
                regularizer,
                ..CriticConfig::default()
            };
            let mut c = AdversarialCritic::new(config, &[2], 3, Device::Cpu).unwrap();
            let fake = || Tensor::randn([64, 2], (Kind::Float, Device::Cpu)) + 1.0;
            let real = || Tensor::randn([64, 2], (Kind::Float, Device::Cpu)) - 1.0;
            let (f, r) = (fake(), real());
            let before = c.gap(&f, &r);
            for _ in 0..100 {
                let x0 = fake();
                let states: Vec<(Tensor, usize)> = (1..=3).map(|t| (x0.randn_like(), t)).collect();
                c.update(&states, &x0, &real()).unwrap();
            }
            let after = c.gap(&f, &r);
            assert!(
                after > before + 0.5,
                "{regularizer:?}: gap {before} -> {after}"
            );
        }
    }

    #[test]
    fn chunking_r_b_does_not_change_the_update() {
        let run = |chunk_rows: i64| {
            let _rng = envs::testing::seeded(4);
            let config = CriticConfig {
                chunk_rows,
                ..CriticConfig::default()
            };
            let mut c = AdversarialCritic::new(config, &[2], 5, Device::Cpu).unwrap();
            tch::manual_seed(5);
            let x0 = Tensor::randn([16, 2], (Kind::Float, Device::Cpu));
            let states: Vec<(Tensor, usize)> = (1..=5).map(|t| (x0.randn_like(), t)).collect();
            let stats = c.update(&states, &x0, &x0.randn_like()).unwrap();
            let mut params: Vec<(String, Tensor)> =
                c.critic_vars().variables().into_iter().collect();
            params.extend(
                c.baseline_vars()
                    .variables()
                    .into_iter()
                    .map(|(k, v)| (format!("v.{k}"), v)),
            );
            params.sort_by(|a, b| a.0.cmp(&b.0));
            (stats.get("critic/r_b").unwrap(), params)
        };
        let (r_one, one_pass) = run(10_000);
        let (r_chunked, chunked) = run(16);
        assert!(
            (r_one - r_chunked).abs() < 1e-5 * r_one.abs().max(1.0),
            "{r_one} vs {r_chunked}"
        );
        for ((name, a), (_, b)) in one_pass.iter().zip(&chunked) {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{name} differs by {diff}");
        }
    }

    #[test]
    fn baseline_regularisation_fits_the_critic_value() {
        let _rng = envs::testing::seeded(1);
        let mut c = AdversarialCritic::new(CriticConfig::default(), &[2], 2, Device::Cpu).unwrap();
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..200 {
            let x0 = Tensor::randn([64, 2], (Kind::Float, Device::Cpu)) * 0.1;
            let states = vec![(&x0 + 0.1, 1), (&x0 + 0.2, 2)];
            let s = c
                .update(
                    &states,
                    &x0,
                    &(Tensor::randn([64, 2], (Kind::Float, Device::Cpu)) * 0.1),
                )
                .unwrap();
            last = s.get("critic/r_b").unwrap();
            first.get_or_insert(last);
        }
        assert!(
            last < first.unwrap() || last < 1e-3,
            "R_B {first:?} -> {last}"
        );
    }
}
