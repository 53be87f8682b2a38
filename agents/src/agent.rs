//! The agent interface and a generic episode rollout.

use std::collections::BTreeMap;

use envs::diffusion::DiffusionEnv;
use envs::{Env, RewardModel, Step};
use tch::Tensor;

use crate::generator::Generator;
use crate::networks::ValueModel;
use crate::AgentError;

/// The learned scorers an agent may consult while updating: the reward model
/// (the critic f; reward = -f(x_0)) and, when one is trained, a baseline.
pub struct Critics<'a> {
    /// The critic whose value on final samples defines the reward.
    pub reward: &'a dyn RewardModel,
    /// The baseline V(x_{t+1}, t+1) estimating E[f(x_0) | x_{t+1}], if any.
    pub baseline: Option<&'a dyn ValueModel>,
}

/// Named scalars an update reports (for logging); averaged over its steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateStats {
    /// Metric name to value.
    pub values: BTreeMap<&'static str, f64>,
}

impl UpdateStats {
    /// Adds `value` to the running sum of `name`.
    pub fn accumulate(&mut self, name: &'static str, value: f64) {
        *self.values.entry(name).or_insert(0.0) += value;
    }

    /// Divides every sum by `n` (turns sums into means).
    pub fn average(mut self, n: usize) -> Self {
        for v in self.values.values_mut() {
            *v /= n.max(1) as f64;
        }
        self
    }

    /// The value of `name`, if reported.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// Adds every value of `other` times `weight` (a rank's share of the
    /// batch they were computed on; [`crate::shares`]). A share of 0 adds
    /// the names with value 0, so that every rank reports the same names.
    pub fn add_weighted(&mut self, other: &UpdateStats, weight: f64) {
        for (name, value) in &other.values {
            let weighted = if weight == 0.0 { 0.0 } else { value * weight };
            self.accumulate(name, weighted);
        }
    }

    /// Every value summed over the data-parallel ranks (one collective for
    /// all of them): the global statistic when each rank reported its
    /// share-weighted part ([`Self::add_weighted`]). Every rank must report
    /// the same names. Unchanged on one process.
    pub fn summed_over_ranks(mut self) -> Result<Self, AgentError> {
        let engine = collective::current();
        if engine.world_size() == 1 || self.values.is_empty() {
            return Ok(self);
        }
        let mut names: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.values.keys().flat_map(|k| k.bytes().chain([0])) {
            names = (names ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
        if engine.all_gather_u64(names)?.iter().any(|&n| n != names) {
            return Err(AgentError::Invalid {
                field: "statistics",
                reason: format!(
                    "rank {} reports other statistics than another rank ({:?})",
                    engine.rank(),
                    self.values.keys().collect::<Vec<_>>()
                ),
            });
        }
        let values: Vec<f64> = self.values.values().copied().collect();
        let mut sums = [Tensor::from_slice(&values)];
        engine.all_reduce_sum(&mut sums)?;
        let summed = Vec::<f64>::try_from(&sums[0]).expect("f64 sums");
        for (value, sum) in self.values.values_mut().zip(summed) {
            *value = sum;
        }
        Ok(self)
    }
}

/// Something that acts in an environment and learns from what it observed.
pub trait Agent<E: Env>: Learn {
    /// Actions for every parallel episode in `obs` (no gradient tracking).
    fn act(&mut self, obs: &E::Obs) -> Result<E::Action, AgentError>;
    /// Records the transition `obs --action--> step`.
    fn observe(&mut self, obs: &E::Obs, action: &E::Action, step: &Step<E::Obs>);
}

/// The update half of an [`Agent`], apart so that it names no environment:
/// `agent.update(&critics)` needs no annotation even for agents that can act
/// in several environments.
pub trait Learn {
    /// Updates the policy from the stored experience.
    fn update(&mut self, critics: &Critics<'_>) -> Result<UpdateStats, AgentError>;
}

/// An agent that fine-tunes a diffusion sampler: what the trainer needs
/// beyond [`Agent`] (the generator for checkpoints and evaluation, and
/// whether a baseline must be fitted for it).
pub trait FineTuneAgent: Agent<DiffusionEnv> {
    /// The generator (policy, optimiser, shared settings).
    fn generator(&self) -> &Generator;
    /// Mutable access to the generator, e.g. to load a checkpoint.
    fn generator_mut(&mut self) -> &mut Generator;
    /// Whether the update reads the baseline V (so the critic must fit it).
    fn uses_baseline(&self) -> bool;
}

/// One finished batch of episodes, one per row of the environment.
#[derive(Debug)]
pub struct Episode<O> {
    /// Every observation an action was taken in, first to last.
    pub observations: Vec<O>,
    /// The observation after the last step.
    pub terminal: O,
    /// Sum of the rewards of each row's episode, `[B]`.
    pub total_reward: tch::Tensor,
    /// Steps of each row's episode, `[B]` int64.
    pub length: tch::Tensor,
    /// The `[B]` rewards of every step, first to last (rows whose first
    /// episode ended hold their later episodes' rewards).
    pub rewards: Vec<tch::Tensor>,
    /// The `[B]` end flags (terminated or truncated) of every step.
    pub ended: Vec<tch::Tensor>,
}

/// Plays one batch of episodes of `env` with `agent`, one per row, letting
/// it observe each step. Episodes that end together (the diffusion chain)
/// end the batch; an episode that ends before the others is restarted with
/// [`Env::reset_ended`] and its row keeps acting, but only each row's first
/// episode counts in the returned totals (agents that record per-step
/// costs record only those, see [`crate::returns::Collector`]). The batch
/// ends once every row's first episode has ended.
pub fn rollout<E, A>(
    env: &mut E,
    agent: &mut A,
    seed: Option<u64>,
) -> Result<Episode<E::Obs>, AgentError>
where
    E: Env,
    A: Agent<E> + ?Sized,
{
    let (obs, _) = env.reset(seed)?;
    drive(env, agent, obs, true)
}

/// The episode driver every loop over an environment uses (rollouts,
/// evaluation sampling, the pathwise loss): from the observation `start`
/// the agent acts, the environment steps, the agent observes (its hooks:
/// [`Agent::act`] and [`Agent::observe`]), as [`rollout`] describes; the
/// observations acted in are kept in the returned episode only when
/// `keep_observations` (sampling many chains keeps none).
pub fn drive<E, A>(
    env: &mut E,
    agent: &mut A,
    start: E::Obs,
    keep_observations: bool,
) -> Result<Episode<E::Obs>, AgentError>
where
    E: Env,
    A: Agent<E> + ?Sized,
{
    let mut obs = start;
    let mut observations = Vec::new();
    let mut total_reward: Option<tch::Tensor> = None;
    let mut length: Option<tch::Tensor> = None;
    // Rows whose first episode is still running.
    let mut running: Option<tch::Tensor> = None;
    let mut rewards = Vec::new();
    let mut ends = Vec::new();
    loop {
        let action = agent.act(&obs)?;
        let step = env.step(&action)?;
        agent.observe(&obs, &action, &step);
        let ended = step.ended();
        let counted = running.take().unwrap_or_else(|| ended.ones_like());
        let reward = &step.reward * counted.to_kind(step.reward.kind());
        total_reward = Some(match total_reward {
            Some(r) => r + reward,
            None => reward,
        });
        let steps = counted.to_kind(tch::Kind::Int64);
        length = Some(match length {
            Some(l) => l + steps,
            None => steps,
        });
        let still = counted.logical_and(&ended.logical_not());
        rewards.push(step.reward.shallow_clone());
        ends.push(ended.shallow_clone());
        if keep_observations {
            observations.push(obs);
        }
        let all_done = still.any().int64_value(&[]) == 0;
        let some_ended = !all_done && step.any_ended();
        obs = step.obs;
        if all_done {
            break;
        }
        if some_ended {
            obs = env.reset_ended(&ended)?;
        }
        running = Some(still);
    }
    Ok(Episode {
        observations,
        terminal: obs,
        total_reward: total_reward.expect("at least one step"),
        length: length.expect("at least one step"),
        rewards,
        ended: ends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::categorical::{CategoricalConfig, CategoricalLearner};
    use crate::reinforce::{Reinforce, ReinforceConfig};
    use envs::cartpole::CartPole;

    #[test]
    fn a_rollout_counts_each_rows_first_episode_and_records_only_its_steps() {
        // An untrained policy on 8 CartPoles: episodes end apart; each row
        // counts the steps of its first episode, and the agent stores
        // exactly those transitions.
        let _rng = envs::testing::seeded(4);
        let learner = CategoricalLearner::new(CategoricalConfig::default(), 4, 2, tch::Device::Cpu);
        let mut agent = Reinforce::new(ReinforceConfig::default(), learner, 4096);
        let mut env = CartPole::new(8, tch::Device::Cpu).unwrap();
        let episode = rollout(&mut env, &mut agent, Some(2)).unwrap();
        let lengths = Vec::<i64>::try_from(&episode.length).unwrap();
        let first_end: Vec<i64> = (0..8)
            .map(|row| {
                1 + episode
                    .ended
                    .iter()
                    .position(|e| e.int64_value(&[row]) != 0)
                    .unwrap() as i64
            })
            .collect();
        assert_eq!(lengths, first_end);
        assert_eq!(
            episode.observations.len() as i64,
            *lengths.iter().max().unwrap()
        );
        assert!(lengths.iter().min() < lengths.iter().max(), "{lengths:?}");
        let totals = Vec::<f32>::try_from(&episode.total_reward).unwrap();
        assert_eq!(
            totals,
            lengths.iter().map(|&l| l as f32).collect::<Vec<_>>()
        );
        assert_eq!(agent.buffered(), lengths.iter().sum::<i64>());
    }
}
