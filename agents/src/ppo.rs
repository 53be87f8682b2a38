//! PPO-clip over the transitions of Algorithm 1's buffer.
//!
//! Each stored transition keeps log pi_old(x_t | x_{t+1}) of the policy that
//! sampled it. The update runs `epochs` passes; each pass draws n_generator
//! fresh disjoint minibatches from the round's buffer (not a sweep over the
//! whole buffer, and not the same minibatches again), so a round takes
//! epochs x n_generator generator steps where REINFORCE takes n_generator:
//! compare PPO with REINFORCE at n_generator x epochs for equal steps. Each
//! step descends
//! mean[max(r c, clip(r, 1 - eps, 1 + eps) c)] with r = pi_theta / pi_old and
//! c = f(x_0) - V(x_{t+1}, t+1) the cost advantage (the PPO objective with
//! advantage -c). It logs the approximate KL E[(r - 1) - log r] and the
//! fraction of clipped ratios, and stops a pass early once the KL exceeds
//! 1.5 x `target_kl` when one is set.
//!
//! The ratio is exp of a difference of log-densities. Summed over D data
//! dimensions that difference grows with D, so in images (D = 3072) tiny
//! per-pixel changes give ratios of 0 or infinity: every sample is clipped
//! and the gradient vanishes. Set `log_prob: Mean` in the generator settings
//! there; it is the geometric mean of the per-dimension ratios.
//!
//! The transitions wait in a [`TransitionStore`] chosen by `buffer`: every
//! transition of the round (`Full`, the default), or a uniform reservoir of
//! n_generator x minibatch of them (`Reservoir`, memory flat in T'), which
//! every pass then permutes afresh: the passes revisit one uniform subset
//! of the round instead of drawing new transitions from all of it.

use envs::{Env, Step};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::agent::{Critics, FineTuneAgent};
use crate::buffer::TransitionBatch;
use crate::generator::Generator;
use crate::learner::PolicyLearner;
use crate::registry::{AgentKind, Registered};
use crate::reinforce::{cost_advantage, record_advantage};
use crate::returns::Collector;
use crate::store::{BufferKind, TransitionStore};
use crate::Learn;
use crate::{Agent, AgentError, UpdateStats};

/// Settings of PPO-clip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// The ratio is clipped to [1 - clip, 1 + clip].
    pub clip: f64,
    /// Passes per critic round, each drawing n_generator fresh disjoint
    /// minibatches from the buffer: epochs x n_generator generator steps.
    pub epochs: usize,
    /// Subtract the learned baseline from the return.
    pub use_baseline: bool,
    /// Normalise advantages per minibatch (the usual PPO choice: the critic's
    /// scale drifts during adversarial training, the clip range does not).
    pub normalize_advantage: bool,
    /// Stop a round's passes once the approximate KL exceeds 1.5 x this.
    pub target_kl: Option<f64>,
    /// Which transitions of a round are kept for the update.
    pub buffer: BufferKind,
}

impl PpoConfig {
    /// Checks the clip range (0, 1), the number of passes and the KL target.
    pub fn validate(&self, check: &mut envs::check::Checker) {
        check.that(
            self.clip > 0.0 && self.clip < 1.0,
            "clip",
            format!("must lie in (0, 1), got {}", self.clip),
        );
        check.at_least("epochs", self.epochs, 1);
        check.positive_opt("target_kl", self.target_kl);
    }
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            clip: 0.2,
            epochs: 4,
            use_baseline: true,
            normalize_advantage: true,
            target_kl: None,
            buffer: BufferKind::Full,
        }
    }
}

/// The PPO-clip agent, for any [`PolicyLearner`] (the diffusion
/// [`Generator`] by default).
pub struct Ppo<L: PolicyLearner = Generator> {
    config: PpoConfig,
    learner: L,
    collector: Collector,
    /// The behaviour log-density of the last actions drawn, until observed.
    last_log_prob: Option<Tensor>,
    transitions: Box<dyn TransitionStore>,
    minibatch: i64,
}

/// What one minibatch step computed.
pub struct PpoLoss {
    /// The clipped surrogate (plus the KL penalty if set).
    pub loss: Tensor,
    /// E[(r - 1) - log r], an estimate of KL(pi_old || pi_theta).
    pub approx_kl: f64,
    /// Fraction of ratios outside the clip range.
    pub clip_fraction: f64,
}

impl<L: PolicyLearner> Ppo<L> {
    /// A PPO agent training `learner` with minibatches of `minibatch` transitions.
    pub fn new(config: PpoConfig, learner: L, minibatch: i64) -> Self {
        let n_generator = learner.n_generator().max(1) as i64;
        Self {
            config,
            transitions: config.buffer.build(n_generator * minibatch.max(1)),
            learner,
            collector: Collector::default(),
            last_log_prob: None,
            minibatch,
        }
    }

    /// The policy being trained, with its optimiser.
    pub fn learner(&self) -> &L {
        &self.learner
    }

    /// The clipped surrogate loss on `batch` (which must carry behaviour log-densities).
    pub fn surrogate_loss(
        &self,
        batch: &TransitionBatch,
        critics: &Critics<'_>,
        stats: &mut UpdateStats,
    ) -> Result<PpoLoss, AgentError> {
        let old = batch.behaviour_log_prob.as_ref().ok_or(AgentError::Empty(
            "PPO transitions without behaviour log-densities",
        ))?;
        let cost = cost_advantage(
            batch,
            critics,
            self.config.use_baseline,
            self.config.normalize_advantage,
        )?;
        let log_prob = self.learner.log_prob(batch);
        let log_ratio = &log_prob - old;
        let ratio = log_ratio.exp();
        let (lo, hi) = (1.0 - self.config.clip, 1.0 + self.config.clip);
        let loss = (&ratio * &cost)
            .maximum(&(ratio.clamp(lo, hi) * &cost))
            .mean(Kind::Float);
        let (approx_kl, clip_fraction) = tch::no_grad(|| {
            let kl = ((&ratio - 1.0) - &log_ratio).mean(Kind::Float);
            let clipped = (&ratio - 1.0)
                .abs()
                .gt(self.config.clip)
                .to_kind(Kind::Float)
                .mean(Kind::Float);
            (kl.double_value(&[]), clipped.double_value(&[]))
        });
        // Every rank stops early on the same, global, KL estimate.
        let approx_kl = crate::shares::mean_over_ranks(approx_kl, batch.share)?;
        record_advantage(&cost, batch.share, stats)?;
        let loss = self.learner.penalised(loss, batch, stats);
        Ok(PpoLoss {
            loss,
            approx_kl,
            clip_fraction,
        })
    }
}

impl<E, L> Agent<E> for Ppo<L>
where
    E: Env<Action = Tensor>,
    L: PolicyLearner<Obs = E::Obs>,
{
    fn act(&mut self, obs: &E::Obs) -> Result<Tensor, AgentError> {
        let (action, log_prob) = self.learner.act_with_log_prob(obs);
        self.last_log_prob = Some(log_prob);
        Ok(action)
    }

    fn observe(&mut self, obs: &E::Obs, action: &Tensor, step: &Step<E::Obs>) {
        let log_prob = self.last_log_prob.take();
        self.collector.observe(
            &self.learner,
            self.transitions.as_mut(),
            obs,
            action,
            log_prob,
            step,
        );
    }
}

impl<L: PolicyLearner> Learn for Ppo<L> {
    fn update(&mut self, critics: &Critics<'_>) -> Result<UpdateStats, AgentError> {
        if self.transitions.is_empty() {
            return Err(AgentError::Empty(
                "generator update with an empty trajectory buffer",
            ));
        }
        let device = self.learner.device();
        let n_generator = self.learner.n_generator();
        let mut stats = UpdateStats::default();
        let mut steps = 0;
        'passes: for _ in 0..self.config.epochs {
            let batches = self
                .transitions
                .minibatches(self.minibatch, n_generator, device);
            for batch in &batches {
                let mut own = UpdateStats::default();
                let step = self.surrogate_loss(batch, critics, &mut own)?;
                own.accumulate("generator/approx_kl", step.approx_kl);
                own.accumulate("generator/clip_fraction", step.clip_fraction);
                self.learner.descend(&step.loss, batch.share, &mut own)?;
                stats.add_weighted(&own, batch.share);
                steps += 1;
                if self
                    .config
                    .target_kl
                    .is_some_and(|target| step.approx_kl > 1.5 * target)
                {
                    break 'passes;
                }
            }
        }
        self.transitions.clear();
        Ok(stats.average(steps))
    }
}

impl AgentKind for PpoConfig {
    fn listed() -> &'static [Registered] {
        &[
        Registered {
            ron: "Ppo(clip: 0.2, epochs: 4, use_baseline: true, normalize_advantage: true, target_kl: None)",
            summary: "PPO-clip over the buffer: epochs passes of n_generator fresh minibatches (epochs x n_generator steps per round); logs approx-KL and clip fraction",
        },
        Registered {
            ron: "Ppo(clip: 0.2, epochs: 4, buffer: Reservoir)",
            summary: "PPO-clip from a uniform reservoir of n_generator x minibatch transitions with their behaviour log-densities (memory flat in T'); every pass permutes the same subset",
        },
        ]
    }

    fn build(&self, generator: Generator, batch: i64, _shape: &[i64]) -> Box<dyn FineTuneAgent> {
        Box::new(Ppo::new(*self, generator, batch))
    }

    fn validate(&self, check: &mut envs::check::Checker) {
        PpoConfig::validate(self, check)
    }

    fn label(&self) -> &'static str {
        "PPO-clip"
    }
}

impl FineTuneAgent for Ppo<Generator> {
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
    use crate::testing::{improves_on_a_tiny_problem, tiny_generator, DistanceToTarget};

    #[test]
    fn ppo_lowers_the_critic_value() {
        let _rng = envs::testing::seeded(12);
        let config = PpoConfig {
            use_baseline: false,
            ..PpoConfig::default()
        };
        let mut agent = Ppo::new(config, tiny_generator(3e-3), 64);
        improves_on_a_tiny_problem(&mut agent, 150);
    }

    #[test]
    fn ppo_from_a_reservoir_lowers_the_critic_value() {
        let _rng = envs::testing::seeded(12);
        let config = PpoConfig {
            use_baseline: false,
            buffer: BufferKind::Reservoir,
            ..PpoConfig::default()
        };
        let mut agent = Ppo::new(config, tiny_generator(3e-3), 64);
        improves_on_a_tiny_problem(&mut agent, 150);
        assert!(agent.transitions.is_empty(), "cleared after an update");
    }

    #[test]
    fn ratios_start_at_one_and_clipping_is_reported() {
        let _rng = envs::testing::seeded(13);
        let config = PpoConfig {
            use_baseline: false,
            clip: 0.01,
            epochs: 3,
            ..PpoConfig::default()
        };
        let mut agent = Ppo::new(config, tiny_generator(3e-2), 64);
        let mut env = crate::testing::tiny_env();
        crate::rollout(&mut env, &mut agent, None).unwrap();
        let critics = Critics {
            reward: &DistanceToTarget,
            baseline: None,
        };
        let batch = &agent.transitions.minibatches(64, 1, tch::Device::Cpu)[0];
        let first = agent
            .surrogate_loss(batch, &critics, &mut UpdateStats::default())
            .unwrap();
        assert!(first.approx_kl.abs() < 1e-6, "{}", first.approx_kl);
        assert_eq!(first.clip_fraction, 0.0);
        let stats = agent.update(&critics).unwrap();
        assert!(stats.get("generator/clip_fraction").unwrap() > 0.0);
        assert!(stats.get("generator/approx_kl").unwrap() > 0.0);
        assert_eq!(agent.generator().steps(), 3, "epochs x n_generator steps");
    }
}
