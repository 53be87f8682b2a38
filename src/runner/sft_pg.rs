//! One round of Algorithm 1 (SFT-PG): n_critic critic steps, each on fresh
//! chains sampled by the current generator and a data batch, then the
//! generator update from the trajectory buffer. Shared by fine-tuning runs
//! and the benchmark, so that both time the same code.

use agents::agent::Critics;
use agents::critic::AdversarialCritic;
use agents::{rollout, AgentError, FineTuneAgent, UpdateStats};
use envs::diffusion::DiffusionEnv;
use tch::{Kind, Tensor};

/// The generator (as an agent), the critic with its baseline, and the environment.
pub struct SftPg {
    /// The diffusion MDP, whose reward model is the critic.
    pub env: DiffusionEnv,
    /// The agent fine-tuning the sampler.
    pub agent: Box<dyn FineTuneAgent>,
    /// The adversarial critic and the baseline.
    pub critic: AdversarialCritic,
    n_critic: usize,
}

/// What one round reports: critic statistics summed over its critic steps
/// (with `rollout/return`), and the generator update's statistics.
pub struct RoundStats {
    /// Sums over the round's critic steps.
    pub critic: UpdateStats,
    /// The generator update.
    pub generator: UpdateStats,
}

impl SftPg {
    /// Fine-tuning from built parts: `agent` samples the chains of `env`
    /// (whose batch is the number of chains per critic step) and `critic`
    /// becomes the environment's reward model, fitting its baseline when
    /// the agent reads one. Any [`FineTuneAgent`] and any critic settings
    /// fit; a round runs `n_critic` critic steps.
    pub fn new(
        env: DiffusionEnv,
        agent: Box<dyn FineTuneAgent>,
        mut critic: AdversarialCritic,
        n_critic: usize,
    ) -> Self {
        critic.fit_baseline_if(agent.uses_baseline());
        let env = env.with_reward_model(critic.reward_model());
        Self {
            env,
            agent,
            critic,
            n_critic,
        }
    }

    /// Critic steps per round.
    pub fn n_critic(&self) -> usize {
        self.n_critic
    }

    /// One round; `real(i)` gives the data batch of the round's i-th critic step.
    pub fn round(&mut self, real: impl FnMut(usize) -> Tensor) -> Result<RoundStats, AgentError> {
        let critic = self.critic_steps(real)?;
        let generator = self.generator_update()?;
        Ok(RoundStats { critic, generator })
    }

    /// The round's n_critic critic steps, each on fresh chains (which the
    /// agent observes into its buffer) and the data batch `real(i)`; returns
    /// their summed statistics with `rollout/return`.
    ///
    /// When the environment holds a data-parallel rank's share of the
    /// chains ([`DiffusionEnv::holding`]), `real(i)` is still the global
    /// data batch: the rank takes the same rows of it, and the statistics
    /// are its share-weighted parts ([`UpdateStats::summed_over_ranks`]
    /// gives the global ones).
    pub fn critic_steps(
        &mut self,
        mut real: impl FnMut(usize) -> Tensor,
    ) -> Result<UpdateStats, AgentError> {
        let mut critic_stats = UpdateStats::default();
        let rows = self.env.rows();
        for i in 0..self.n_critic {
            let episode = rollout(&mut self.env, self.agent.as_mut(), None)?;
            let states: Vec<(Tensor, usize)> = episode
                .observations
                .iter()
                .map(|o| (o.x.shallow_clone(), o.t))
                .collect();
            let real = real(i);
            let mut stats =
                self.critic
                    .update_held(&states, &episode.terminal.x, &rows.of(&real), rows)?;
            stats.accumulate(
                "rollout/return",
                episode.total_reward.mean(Kind::Float).double_value(&[]),
            );
            critic_stats.add_weighted(&stats, rows.fraction());
        }
        Ok(critic_stats)
    }

    /// The round's generator update against the current critic and baseline.
    pub fn generator_update(&mut self) -> Result<UpdateStats, AgentError> {
        let critics = Critics {
            reward: self.critic.critic(),
            baseline: Some(self.critic.baseline()),
        };
        self.agent.update(&critics)
    }
}
