//! shortcut: reinforcement learning on the denoising chain of diffusion models.
//!
//! This root package holds what turns the `envs` and `agents` crates into a
//! tool: experiment [`config`]uration in RON, the [`trainer`] (the
//! training loop on built parts, behind traits for evaluation, recording
//! and checkpoint storage), the [`runner`] (pretraining, SFT-PG
//! fine-tuning, evaluation tables), [`recording`] to TensorBoard,
//! [`checkpoint`]s, the Wasserstein [`metrics`], pretrained [`weights`]
//! (diffusers and the original DDPM layout), [`fetch`]ing data sets and
//! weights on first use, the [`preflight`] check of an experiment's
//! inputs, [`control`] tasks (CartPole trained by the same agents), and
//! the `rl-run` binary.

pub mod ablation;
pub mod checkpoint;
pub mod comparison;
pub mod config;
pub mod control;
pub mod error;
pub mod fetch;
pub mod metrics;
pub mod overrides;
pub mod preflight;
pub mod recording;
pub mod report;
pub mod runner;
pub mod trainer;
pub mod weights;

pub use config::Experiment;
pub use error::{ConfigError, RunError};
