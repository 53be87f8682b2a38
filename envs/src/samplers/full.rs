//! The full chain: every training step.

use crate::registry::Registered;
use crate::sampler::{clipped, DdpmDefaults, SamplerKind};
use crate::schedule::Schedule;
use crate::EnvError;

/// Every step of the training schedule with its DDPM variance
/// (`env.variance`), x_0 clipped where `env.clip_x0` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullChain;

impl SamplerKind for FullChain {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "Full",
            summary: "every training step, DDPM with env.variance, x_0 clipped to [-1, 1] where env.clip_x0 (default: images)",
        }]
    }

    fn steps(&self, training_steps: usize) -> usize {
        training_steps
    }

    fn describe(&self) -> String {
        "full chain".into()
    }

    fn build(&self, training_betas: &[f64], defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
        clipped(
            Schedule::new(training_betas.to_vec(), defaults.variance)?,
            defaults.clip_x0,
        )
    }
}
