//! The agent interface and a generic episode rollout.

use std::collections::BTreeMap;

use envs::diffusion::DiffusionEnv;
use envs::{Env, RewardModel, Step};

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
}

/// Something that acts in an environment and learns from what it observed.
pub trait Agent<E: Env> {
    /// Actions for every parallel episode in `obs` (no gradient tracking).
    fn act(&mut self, obs: &E::Obs) -> Result<E::Action, AgentError>;
    /// Records the transition `obs --action--> step`.
    fn observe(&mut self, obs: &E::Obs, action: &E::Action, step: &Step<E::Obs>);
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

/// One finished batch of episodes.
#[derive(Debug)]
pub struct Episode<O> {
    /// Every observation an action was taken in, first to last.
    pub observations: Vec<O>,
    /// The terminal observation.
    pub terminal: O,
    /// Sum of the rewards of each episode, `[B]`.
    pub total_reward: tch::Tensor,
}

/// Plays one batch of episodes of `env` with `agent`, letting it observe each step.
pub fn rollout<E, A>(
    env: &mut E,
    agent: &mut A,
    seed: Option<u64>,
) -> Result<Episode<E::Obs>, AgentError>
where
    E: Env,
    E::Obs: Clone,
    A: Agent<E> + ?Sized,
{
    let (mut obs, _) = env.reset(seed)?;
    let mut observations = Vec::new();
    let mut total_reward: Option<tch::Tensor> = None;
    loop {
        let action = agent.act(&obs)?;
        let step = env.step(&action)?;
        agent.observe(&obs, &action, &step);
        total_reward = Some(match total_reward {
            Some(r) => r + &step.reward,
            None => step.reward.shallow_clone(),
        });
        observations.push(obs);
        // Episodes run in lock-step: all end together, or none does.
        let done = step.all_ended();
        if !done && step.any_ended() {
            return Err(AgentError::Invalid {
                field: "env",
                reason: "some episodes ended before the others; rollout drives episodes of one length in lock-step".into(),
            });
        }
        obs = step.obs;
        if done {
            break;
        }
    }
    Ok(Episode {
        observations,
        terminal: obs,
        total_reward: total_reward.expect("at least one step"),
    })
}
