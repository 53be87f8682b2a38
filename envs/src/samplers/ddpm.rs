//! DDPM on a sub-sequence of the training steps.

use serde::{Deserialize, Serialize};

use crate::check::Checker;
use crate::registry::Registered;
use crate::sampler::{
    clipped, one_based, spaced, DdpmDefaults, SamplerContext, SamplerKind, Spacing,
};
use crate::schedule::{Schedule, Variance};
use crate::EnvError;

/// DDPM on a sub-sequence of `steps` training steps, with the sub-sampled
/// betas and `env.variance` (beta or betatilde).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdpmSampler {
    /// Sampling steps T'.
    pub steps: usize,
    /// Which training steps.
    #[serde(default)]
    pub spacing: Spacing,
    /// The step variance (default: `env.variance`).
    #[serde(default)]
    pub variance: Option<Variance>,
    /// Clamp the predicted x_0 to [-1, 1] in each step's mean, as Ho et
    /// al.'s and the DDIM code's DDPM samplers do for images (default:
    /// `env.clip_x0`).
    #[serde(default)]
    pub clip_x0: Option<bool>,
}

impl SamplerKind for DdpmSampler {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "Ddpm(steps: 10, spacing: Uniform)",
            summary: "DDPM on a sub-sequence: sub-sampled betas; spacing Uniform | Quadratic | Leading | Trailing | Linspace; variance and clip_x0 default to env.variance and env.clip_x0",
        }]
    }

    fn steps(&self, _training_steps: usize) -> usize {
        self.steps
    }

    fn describe(&self) -> String {
        let mut text = format!("DDPM, {:?} steps", self.spacing);
        if let Some(variance) = self.variance {
            text.push_str(match variance {
                Variance::Beta => ", beta",
                Variance::PosteriorBetaTilde => ", betatilde",
            });
        }
        match self.clip_x0 {
            Some(true) => text.push_str(", x_0 clipped"),
            Some(false) => text.push_str(", x_0 not clipped"),
            None => {}
        }
        text
    }

    fn validate(&self, check: &mut Checker, context: SamplerContext) {
        check.that(
            self.clip_x0 != Some(true) || context.images,
            "clip_x0",
            "clips x_0 to [-1, 1], the range of images; this data set is a toy distribution".into(),
        );
    }

    fn build(&self, training_betas: &[f64], defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
        let tau = spaced(self.spacing, training_betas.len(), self.steps)?;
        clipped(
            Schedule::subsample(
                training_betas,
                &one_based(&tau),
                self.variance.unwrap_or(defaults.variance),
            )?,
            self.clip_x0.unwrap_or(defaults.clip_x0),
        )
    }
}
