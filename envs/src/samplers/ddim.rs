//! DDIM (Song et al.) on a sub-sequence of the training steps.

use serde::{Deserialize, Serialize};

use crate::check::Checker;
use crate::registry::Registered;
use crate::sampler::{one_based, spaced, DdpmDefaults, SamplerContext, SamplerKind, Spacing};
use crate::schedule::Schedule;
use crate::EnvError;

/// DDIM on a sub-sequence: eta = 0 is deterministic, 1 is DDPM with the
/// betatilde variance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdimSampler {
    /// Sampling steps T'.
    pub steps: usize,
    /// The noise scale eta in [0, 1].
    #[serde(default)]
    pub eta: f64,
    /// Which training steps.
    #[serde(default)]
    pub spacing: Spacing,
}

impl SamplerKind for DdimSampler {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "Ddim(steps: 10, eta: 0.0, spacing: Uniform)",
            summary:
                "DDIM (Song et al.) on a sub-sequence; eta 0 deterministic, 1 = DDPM with betatilde",
        }]
    }

    fn steps(&self, _training_steps: usize) -> usize {
        self.steps
    }

    fn describe(&self) -> String {
        format!("DDIM eta {}, {:?} steps", self.eta, self.spacing)
    }

    fn validate(&self, check: &mut Checker, _context: SamplerContext) {
        check.that(
            (0.0..=1.0).contains(&self.eta),
            "eta",
            format!("must lie in [0, 1], got {}", self.eta),
        );
    }

    fn build(&self, training_betas: &[f64], _defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
        let tau = spaced(self.spacing, training_betas.len(), self.steps)?;
        Schedule::generalized_subsample(training_betas, &one_based(&tau), self.eta)
    }
}
