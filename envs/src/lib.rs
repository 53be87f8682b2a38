//! Gymnasium-style environments for shortcut.
//!
//! The centrepiece is [`diffusion::DiffusionEnv`]: the sampling chain of a
//! DDPM as a finite-horizon MDP (state `(x_{t+1}, t+1)`, action `x_t`, reward
//! `-f(x_0)` from a [`RewardModel`] at the last step). Around it live the
//! beta [`schedule`]s, the [`sampler`]s built on them (full chain, DDPM
//! sub-sequences, DDIM, FastDPM), the Gaussian policy step ([`gaussian`])
//! and the toy [`datasets`]. Nothing here knows an algorithm.
//!
//! [`cartpole`] is gymnasium's `CartPole-v1`, batch-first (`B` episodes that end at their own times).
//!
//! [`check`] is the [`check::Checker`] every configuration type validates
//! its own fields with.

pub mod analytic;
pub mod cartpole;
pub mod check;
pub mod datasets;
pub mod diffusion;
pub mod env;
pub mod error;
pub mod gaussian;
pub mod image_folder;
pub mod images;
pub mod ode;
pub mod registry;
pub mod rows;
pub mod sampler;
pub mod samplers;
pub mod schedule;
pub mod space;
pub mod testing;

pub use env::{Env, Info, Step};
pub use error::EnvError;
pub use space::Space;

/// A trainable scorer of final samples, consulted by an environment at the
/// terminal step. The reward of the diffusion MDP is `-value(x_0)`.
pub trait RewardModel {
    /// The critic's value f(x) for each row of the batch `x` (`[B, ...]`), as a `[B]` tensor.
    fn value(&self, x: &tch::Tensor) -> tch::Tensor;
}
