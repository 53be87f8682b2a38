//! FastDPM (Kong & Ping 2021): STEP sub-sequences or VAR noise levels.

use serde::{Deserialize, Serialize};

use crate::check::Checker;
use crate::registry::Registered;
use crate::sampler::{
    fastdpm_var, one_based, spaced, DdpmDefaults, FastDpmKind, FastDpmSchedule, SamplerContext,
    SamplerKind, Spacing,
};
use crate::schedule::{Schedule, StepRule};
use crate::EnvError;

/// FastDPM: STEP or VAR, linear or quadratic, with kappa.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastDpmSampler {
    /// Sampling steps T'.
    pub steps: usize,
    /// VAR (continuous noise levels) or STEP (a sub-sequence).
    #[serde(default)]
    pub kind: FastDpmKind,
    /// Linear or quadratic spacing.
    #[serde(default)]
    pub schedule: FastDpmSchedule,
    /// The noise scale kappa in [0, 1] (1: DDPM-like, 0: deterministic).
    #[serde(default = "one")]
    pub kappa: f64,
}

fn one() -> f64 {
    1.0
}

impl SamplerKind for FastDpmSampler {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "FastDpm(steps: 10, kind: Var, schedule: Quadratic, kappa: 1.0)",
            summary: "FastDPM (Kong & Ping): VAR noise levels at real network times, or STEP sub-sequences; linear or quadratic; kappa scales the noise",
        }]
    }

    fn steps(&self, _training_steps: usize) -> usize {
        self.steps
    }

    fn describe(&self) -> String {
        format!(
            "FastDPM {:?} {:?}, kappa {}",
            self.kind, self.schedule, self.kappa
        )
    }

    fn validate(&self, check: &mut Checker, context: SamplerContext) {
        check.that(
            (0.0..=1.0).contains(&self.kappa),
            "kappa",
            format!("must lie in [0, 1], got {}", self.kappa),
        );
        if self.kind == FastDpmKind::Var {
            check.that(
                context.linear_schedule,
                "kind",
                "Var inverts a linear training schedule; this one is not linear (use Step)".into(),
            );
        }
    }

    fn build(&self, training_betas: &[f64], _defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
        match self.kind {
            FastDpmKind::Step => {
                let spacing = match self.schedule {
                    FastDpmSchedule::Linear => Spacing::Uniform,
                    FastDpmSchedule::Quadratic => Spacing::Quadratic,
                };
                let tau = spaced(spacing, training_betas.len(), self.steps)?;
                Schedule::generalized_subsample(training_betas, &one_based(&tau), self.kappa)
            }
            FastDpmKind::Var => {
                let (levels, times) = fastdpm_var(training_betas, self.steps, self.schedule)?;
                Schedule::from_levels(levels, times, StepRule::Generalized { kappa: self.kappa })
            }
        }
    }
}
