//! What every generator-updating agent shares: the policy, its optimiser and
//! the trust-region knobs of Section 4.2 (n_generator steps per critic round,
//! grad-norm clipping at gamma), the optional KL penalty to the pretrained
//! sampler and the optional learned variance. Agents compute a loss; the
//! [`Generator`] turns it into a clipped optimiser step, so every agent
//! honours the same settings.

use envs::gaussian::LogProbReduction;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::ensure_finite;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::policy::{DiffusionPolicy, RolloutStd};
use crate::{AgentError, UpdateStats};

/// The step variance of the fine-tuned policy.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum VarianceConfig {
    /// Fixed by the schedule; only the mean is fine-tuned (the paper).
    #[default]
    Fixed,
    /// A learned per-step log-std, initialised at the schedule's value and
    /// trained with the mean; the standard deviation never drops below `floor`.
    Learned {
        /// Smallest standard deviation a step may take.
        floor: f64,
        /// Learning rate of the log-stds (default: the generator's). The
        /// generator's 5e-5 moves a log-std by at most about 0.1 in a toy run.
        #[serde(default)]
        lr: Option<f64>,
    },
}

/// How a step that the sampler takes without noise (a fixed sigma of 0:
/// the last step of FastDPM and DDIM-type samplers, betatilde_1 of a DDPM
/// sub-sequence, every step of DDIM eta 0) enters fine-tuning. Its
/// log-density uses the std [`envs::schedule::DETERMINISTIC_STEP_STD`]
/// (1e-3); evaluation and `rl-run sample` draw it without noise whatever
/// the setting (docs/conventions.md, section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeterministicStep {
    /// Rollouts draw it from the Gaussian of its log-density, N(mean,
    /// 1e-3^2), like every other step: the authors' finetune.py (the paper's
    /// runs). Its score term is z / 1e-3 per dimension.
    #[default]
    Noisy,
    /// Rollouts draw it without noise; its log-density keeps std 1e-3. The
    /// action is then the rollout's own mean, so the step's score term is 0
    /// on a round's first minibatch and afterwards only pulls the mean back
    /// to the rollout's. shortcut before schema 3; kept for comparison.
    Noiseless,
    /// Part of the environment: drawn without noise and left out of the
    /// agent's transitions, so no loss term trains the network there.
    Excluded,
    /// Drawn without noise; its term is the pathwise gradient of f through
    /// the step, f(mu_theta(x_1)) (divided by the data dimensions under
    /// `log_prob: Mean`), which is the limit of the noisy step's expected
    /// score-function term as its std goes to 0, without its variance
    /// (REINFORCE only, and only for the sampler's last step).
    Pathwise,
}

/// Settings of the generator update that every agent honours.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Optimiser of the generator (theta).
    pub optimizer: OptimizerConfig,
    /// Generator steps per critic round (each on its own disjoint minibatch,
    /// or its own fresh chains for the pathwise agent).
    pub n_generator: usize,
    /// Clip the gradient's global norm at this value (gamma); none: no clipping.
    pub grad_clip: Option<f64>,
    /// Reduction of log-densities and KL terms over the data dimensions.
    /// Sum is the exact density (Eq. 15); Mean keeps PPO's ratios sane in
    /// high dimensions (see [`LogProbReduction`]).
    pub log_prob: LogProbReduction,
    /// Weight of the per-step Gaussian KL(pi_theta || pi_pretrained) added to
    /// the loss, averaged over the states of the update (DPOK); 0: off.
    pub kl_weight: f64,
    /// Fixed or learned step variance.
    pub variance: VarianceConfig,
    /// How a step the sampler takes without noise is drawn and trained.
    pub deterministic_step: DeterministicStep,
}

impl GeneratorConfig {
    /// Checks the settings every generator update shares (the optimiser,
    /// n_generator, clipping, the KL weight, a learned variance's floor and
    /// learning rate, and that a learned variance leaves no step of fixed
    /// std 0 to special-case).
    pub fn validate(&self, check: &mut envs::check::Checker) {
        check.within("optimizer", |c| self.optimizer.validate(c));
        check.at_least("n_generator", self.n_generator, 1);
        check.positive_opt("grad_clip", self.grad_clip);
        check.non_negative("kl_weight", self.kl_weight);
        if let VarianceConfig::Learned { floor, lr } = self.variance {
            check.positive_opt("variance.floor", Some(floor));
            check.positive_opt("variance.lr", lr);
            check.that(
                matches!(
                    self.deterministic_step,
                    DeterministicStep::Noisy | DeterministicStep::Noiseless
                ),
                "deterministic_step",
                format!(
                    "{:?} concerns steps of fixed std 0; a learned variance has none (use Noisy)",
                    self.deterministic_step
                ),
            );
        }
    }
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerConfig::Adam { lr: 5e-5 },
            n_generator: 1,
            grad_clip: None,
            log_prob: LogProbReduction::Sum,
            kl_weight: 0.0,
            variance: VarianceConfig::Fixed,
            deterministic_step: DeterministicStep::Noisy,
        }
    }
}

/// Why `setting` cannot train `policy`'s sampler, if it cannot: `Pathwise`
/// takes only a noiseless last step (a noiseless step before it would need
/// the gradient through the rest of the chain), `Excluded` must leave some
/// step to train.
fn check_deterministic_steps(
    setting: DeterministicStep,
    policy: &DiffusionPolicy,
) -> Result<(), AgentError> {
    let noiseless: Vec<usize> = (1..=policy.horizon())
        .filter(|&t| policy.is_deterministic_step(t))
        .collect();
    let reason = match setting {
        DeterministicStep::Pathwise if noiseless.iter().any(|&t| t > 1) => format!(
            "Pathwise differentiates f through a noiseless last step only; this sampler has noiseless steps {noiseless:?} (1 is the last): use Noisy or Noiseless"
        ),
        DeterministicStep::Excluded if noiseless.len() == policy.horizon() => {
            "Excluded leaves out every step of this sampler (all are noiseless): use Noisy".into()
        }
        _ => return Ok(()),
    };
    Err(AgentError::Invalid {
        field: "task.generator.deterministic_step",
        reason,
    })
}

/// The policy being fine-tuned, its optimiser and the shared update rules.
pub struct Generator {
    config: GeneratorConfig,
    policy: DiffusionPolicy,
    optimizer: Optimizer,
    reference: Option<DiffusionPolicy>,
}

impl Generator {
    /// Takes `policy` (holding its starting weights) under `config`: learns
    /// its variance if asked, and keeps a frozen copy when a KL penalty is set.
    pub fn new(config: GeneratorConfig, mut policy: DiffusionPolicy) -> Result<Self, AgentError> {
        if let VarianceConfig::Learned { floor, .. } = config.variance {
            policy.learn_variance(floor);
        }
        check_deterministic_steps(config.deterministic_step, &policy)?;
        policy.set_rollout_std(match config.deterministic_step {
            DeterministicStep::Noisy => RolloutStd::Density,
            _ => RolloutStd::Sampler,
        });
        let reference = if config.kl_weight > 0.0 {
            Some(policy.frozen_copy().ok_or(AgentError::Unsupported(
                "a KL penalty needs a policy that can be copied (the toy network)",
            ))?)
        } else {
            None
        };
        let mut optimizer = config.optimizer.build(policy.var_store());
        if let VarianceConfig::Learned { lr: Some(lr), .. } = config.variance {
            optimizer.set_learning_rate(crate::policy::LOG_STD_VAR, lr);
        }
        Ok(Self {
            config,
            policy,
            optimizer,
            reference,
        })
    }

    /// Whether the transitions of sampler step `t` are left out of the
    /// update (`deterministic_step: Excluded` and a noiseless step).
    pub fn excludes_step(&self, t: usize) -> bool {
        self.config.deterministic_step == DeterministicStep::Excluded
            && self.policy.is_deterministic_step(t)
    }

    /// The settings.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Images the generator's networks have evaluated: the policy's and,
    /// with a KL penalty, its frozen reference's.
    pub fn network_evaluations(&self) -> u64 {
        self.policy.network_evaluations()
            + self
                .reference
                .as_ref()
                .map_or(0, DiffusionPolicy::network_evaluations)
    }

    /// The policy being trained.
    pub fn policy(&self) -> &DiffusionPolicy {
        &self.policy
    }

    /// Mutable access to the policy, e.g. to load weights in place.
    pub fn policy_mut(&mut self) -> &mut DiffusionPolicy {
        &mut self.policy
    }

    /// The optimiser, for checkpoints.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> i64 {
        self.optimizer.steps()
    }

    /// `loss` plus the KL penalty at the states `x` (1-based `steps`), if one is set.
    pub fn penalised(
        &self,
        loss: Tensor,
        x: &Tensor,
        steps: &Tensor,
        stats: &mut UpdateStats,
    ) -> Tensor {
        match &self.reference {
            Some(reference) => {
                let kl = self
                    .policy
                    .kl_to(reference, x, steps, self.config.log_prob)
                    .mean(Kind::Float);
                stats.accumulate("generator/kl_to_pretrained", kl.double_value(&[]));
                loss + kl * self.config.kl_weight
            }
            None => loss,
        }
    }

    /// One descent step on `loss`, the mean over this rank's rows, which are
    /// `share` of the batch (1 on one process; [`crate::shares`]):
    /// back-propagates it weighted by `share`, clips the global gradient
    /// norm (of the gradient summed over the ranks) at gamma, steps the
    /// optimiser, and reports the loss and the gradient norm before
    /// clipping. Stops on a non-finite loss or gradient.
    pub fn descend(
        &mut self,
        loss: &Tensor,
        share: f64,
        stats: &mut UpdateStats,
    ) -> Result<(), AgentError> {
        self.optimizer.zero_grad();
        let value = if share == 0.0 {
            0.0
        } else {
            ensure_finite("generator loss", loss.double_value(&[]))?
        };
        crate::shares::backward_share(loss, share, self.optimizer.params());
        let grad_norm = ensure_finite(
            "generator gradient norm",
            self.optimizer.clip_grad_norm(self.config.grad_clip),
        )?;
        self.optimizer.step();
        stats.accumulate("generator/loss", value);
        stats.accumulate("generator/grad_norm", grad_norm);
        if let Some(floor) = self.policy.variance_floor() {
            let std = tch::no_grad(|| {
                let steps = Tensor::arange_start(
                    1,
                    self.policy.horizon() as i64 + 1,
                    (Kind::Int64, self.policy.var_store().device()),
                );
                self.policy.density_std(&steps, &steps.to_kind(Kind::Float))
            });
            stats.accumulate(
                "generator/std_mean",
                std.mean(Kind::Float).double_value(&[]),
            );
            stats.accumulate(
                "generator/std_at_floor",
                std.le(floor * (1.0 + 1e-6))
                    .to_kind(Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[]),
            );
        }
        Ok(())
    }

    /// The global norm of the gradients the last step applied (after clipping).
    pub fn applied_grad_norm(&self) -> f64 {
        self.optimizer
            .params()
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() {
                    g.square().sum(Kind::Float).double_value(&[])
                } else {
                    0.0
                }
            })
            .sum::<f64>()
            .sqrt()
    }
}
