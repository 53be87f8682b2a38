//! Agents for the diffusion MDP of the `envs` crate.
//!
//! - [`networks`]: the toy eps-predictor, critic and baseline of the paper's
//!   toy experiments (docs/conventions.md, section 5).
//! - [`unet`]: the DDPM U-Net of Ho et al. (diffusers' `UNet2DModel`).
//! - [`policy`]: a DDPM sampler as a Gaussian policy.
//! - [`agent`]: the [`Agent`] trait and a generic episode rollout.
//! - [`generator`]: what every generator update shares (optimiser,
//!   n_generator, grad clipping, KL penalty, learned variance).
//! - [`learner`]: the [`learner::PolicyLearner`] trait the policy-gradient
//!   agents train through (the diffusion generator, a categorical policy).
//! - [`returns`]: from observed steps to stored transitions and their costs.
//! - [`categorical`]: a categorical policy over discrete actions (CartPole),
//!   and [`state_value`]: the state-value baseline V(s) fitted beside it.
//! - [`reinforce`]: REINFORCE with a learned baseline (SFT-PG, Eq. 20).
//! - [`ppo`]: PPO-clip over the buffer.
//! - [`pathwise`]: SFT, the pathwise gradient through the chain (Eq. 14).
//! - [`registry`]: the agents and regularisers by name; building an agent.
//! - [`critic`]: the adversarial IPM critic and the baseline, with their
//!   regularisers (baseline regularisation, Eq. 23; gradient penalty, Eq. 22).
//! - [`store`]: the [`store::TransitionStore`] trait agents keep their
//!   transitions in, and the setting that picks one of the two below.
//! - [`buffer`]: the trajectory buffer of Algorithm 1.
//! - [`reservoir`]: a uniform reservoir of the transitions one generator
//!   update reads, in memory flat in T'.
//! - [`pretrain`]: DDPM pretraining by denoising score matching.
//! - [`ema`]: an exponential moving average of a network's weights.
//! - [`optim`]: Adam and RMSprop whose state can be saved and restored.

pub mod agent;
pub mod buffer;
pub mod categorical;
pub mod covariance;
mod cpu;
pub mod critic;
pub mod critic_networks;
pub mod distill;
pub mod ema;
pub mod error;
pub mod generator;
pub mod learner;
pub mod networks;
pub mod optim;
pub mod pathwise;
pub mod policy;
pub mod ppo;
pub mod pretrain;
pub mod registry;
pub mod reinforce;
pub mod reservoir;
pub mod returns;
pub mod shares;
pub mod state_value;
pub mod store;
#[cfg(test)]
mod testing;
pub mod unet;

pub use agent::{drive, rollout, Agent, Episode, FineTuneAgent, Learn, UpdateStats};
pub use error::AgentError;
