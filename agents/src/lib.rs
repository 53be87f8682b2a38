//! Agents for the diffusion MDP of the `envs` crate.
//!
//! - [`networks`]: the toy eps-predictor, critic and baseline of DESIGN.md.
//! - [`policy`]: a DDPM sampler as a Gaussian policy.
//! - [`agent`]: the [`Agent`] trait and a generic episode rollout.
//! - [`reinforce`]: REINFORCE with a learned baseline (SFT-PG, Eq. 20).
//! - [`critic`]: the adversarial IPM critic and the baseline, with their
//!   regularisers (baseline regularisation, Eq. 23; gradient penalty, Eq. 22).
//! - [`buffer`]: the trajectory buffer of Algorithm 1.
//! - [`pretrain`]: DDPM pretraining by denoising score matching.
//! - [`optim`]: Adam and RMSprop whose state can be saved and restored.

pub mod agent;
pub mod buffer;
pub mod critic;
pub mod error;
pub mod networks;
pub mod optim;
pub mod policy;
pub mod pretrain;
pub mod reinforce;

pub use agent::{rollout, Agent, Episode, UpdateStats};
pub use error::AgentError;
