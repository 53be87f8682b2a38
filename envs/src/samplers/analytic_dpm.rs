//! Analytic-DPM (Bao et al. 2022): DDPM on a sub-sequence with the optimal
//! variances, estimated from a trained model ([`crate::analytic`]).

use serde::{Deserialize, Serialize};

use crate::check::Checker;
use crate::registry::Registered;
use crate::sampler::{one_based, spaced, DdpmDefaults, SamplerContext, SamplerKind, Spacing};
use crate::schedule::{Schedule, Variance};
use crate::EnvError;

/// Analytic-DPM: DDPM on a sub-sequence with the optimal variances,
/// estimated from the trained model and its training data by Monte Carlo.
/// It samples trained models (`compare_samplers`, comparison files,
/// `rl-run sample --sampler`); it cannot be a training run's sampler.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticDpmSampler {
    /// Sampling steps T'.
    pub steps: usize,
    /// Which training steps.
    #[serde(default)]
    pub spacing: Spacing,
    /// Training images per step in the Monte Carlo estimate (all of
    /// them when fewer).
    #[serde(default = "analytic_mc_samples")]
    pub mc_samples: usize,
    /// The bound of the second-to-last step's noise, in pixel levels
    /// (the authors': 2 for linear schedules, 1 for cosine; 0: none).
    #[serde(default = "analytic_clip_pixel")]
    pub clip_pixel: f64,
}

fn analytic_mc_samples() -> usize {
    1000
}

fn analytic_clip_pixel() -> f64 {
    2.0
}

impl AnalyticDpmSampler {
    /// The DDPM sub-sequence (betatilde variances) whose variances
    /// [`crate::analytic::analytic_sigmas`] replaces.
    pub fn base(&self, training_betas: &[f64]) -> Result<Schedule, EnvError> {
        let tau = spaced(self.spacing, training_betas.len(), self.steps)?;
        Schedule::subsample(
            training_betas,
            &one_based(&tau),
            Variance::PosteriorBetaTilde,
        )
    }
}

impl SamplerKind for AnalyticDpmSampler {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "AnalyticDpm(steps: 10, spacing: Uniform, mc_samples: 1000, clip_pixel: 2.0)",
            summary: "Analytic-DPM (Bao et al.): DDPM sub-sequence with optimal variances estimated from the model and data; samples trained models only",
        }]
    }

    fn steps(&self, _training_steps: usize) -> usize {
        self.steps
    }

    fn describe(&self) -> String {
        format!("Analytic-DPM, {:?} steps", self.spacing)
    }

    fn validate(&self, check: &mut Checker, _context: SamplerContext) {
        check.that(
            self.mc_samples >= 1,
            "mc_samples",
            "Analytic-DPM needs at least one Monte Carlo sample per step".into(),
        );
        check.non_negative("clip_pixel", self.clip_pixel);
    }

    fn build(
        &self,
        _training_betas: &[f64],
        _defaults: DdpmDefaults,
    ) -> Result<Schedule, EnvError> {
        Err(EnvError::Invalid {
            field: "env.sampler",
            reason: "Analytic-DPM's variances are estimated from a trained model and its data: it samples trained models (compare_samplers, comparison files, rl-run sample --sampler), it cannot be a run's own sampler".into(),
        })
    }
}
