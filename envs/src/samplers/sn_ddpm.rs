//! SN-DDPM and NPR-DDPM (Bao et al. 2022, "Estimating the Optimal
//! Covariance with Imperfect Mean in Diffusion Probabilistic Models"): DDPM
//! on a sub-sequence whose per-pixel step variance comes from a covariance
//! head trained on the frozen model (`task: CovarianceHead`), as their code
//! (baofff/Extended-Analytic-DPM, `core/diffusion/dtdpm.py`) samples.
//!
//! From network time n to s (abar_n, abar_s; s = the data after the last
//! grid point, abar_s = 1), with beta = 1 - abar_n/abar_s:
//! - x0^ = clamp((x - sqrt(1 - abar_n) eps^)/sqrt(abar_n), -1, 1);
//! - mean = gamma x0^ + sqrt(abar_n/abar_s)(1 - abar_s)/(1 - abar_n) x,
//!   gamma = sqrt(abar_s) beta/(1 - abar_n);
//! - C = (1 - abar_n)/abar_n (h - eps^^2) for SN (h predicts eps^2), or
//!   (1 - abar_n)/abar_n g for NPR (g predicts (eps - eps^)^2), clamped to
//!   [0, 1], per pixel (eps^ unclipped);
//! - variance = betatilde + gamma^2 C, betatilde = beta (1 - abar_s)/(1 - abar_n);
//!   on the second-to-last step clamped to (clip_pixel 2/255 sqrt(pi/2))^2;
//! - x' = mean + sqrt(variance) z, and the last step x' = mean (= x0^).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::check::Checker;
use crate::ode::{FinalLevel, NetworkSampler, NetworkSteps, SolverGrid};
use crate::registry::Registered;
use crate::sampler::{spaced, DdpmDefaults, SamplerContext, SamplerKind, Spacing};
use crate::schedule::Schedule;
use crate::EnvError;

/// What a covariance head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CovarianceTarget {
    /// The squared noise eps^2 (SN-DDPM).
    SquaredNoise,
    /// The squared residual of the noise prediction (eps - eps^)^2 (NPR-DDPM).
    Residual,
}

/// The settings of SN-DDPM and NPR-DDPM: the steps of the sub-sequence
/// and the clip of the second-to-last step's noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnDdpmSampler {
    /// Sampling steps T' (network evaluations).
    pub steps: usize,
    /// Which training steps (Bao et al.'s even trajectory is `Uniform`).
    #[serde(default)]
    pub spacing: Spacing,
    /// The bound of the second-to-last step's noise, in pixel levels
    /// (theirs: 2 for linear schedules; 0: none).
    #[serde(default = "clip_pixel")]
    pub clip_pixel: f64,
}

fn clip_pixel() -> f64 {
    2.0
}

impl SnDdpmSampler {
    fn validate_settings(&self, check: &mut Checker, context: SamplerContext) {
        if let Err(EnvError::Invalid { reason, .. }) =
            spaced(self.spacing, context.training_steps, self.steps)
        {
            check.that(false, "steps", reason);
        }
        check.non_negative("clip_pixel", self.clip_pixel);
    }

    fn sampler(
        &self,
        training_betas: &[f64],
        target: CovarianceTarget,
    ) -> Result<Arc<dyn NetworkSampler>, EnvError> {
        let mut times = spaced(self.spacing, training_betas.len(), self.steps)?;
        times.reverse();
        Ok(Arc::new(CovarianceDdpm {
            grid: SolverGrid::from_times(training_betas, times, FinalLevel::Zero),
            target,
            clip_pixel: self.clip_pixel,
        }))
    }
}

fn needs_head(name: &str) -> EnvError {
    EnvError::Invalid {
        field: "env.sampler",
        reason: format!("{name} reads a covariance head trained on the model (task: CovarianceHead(...) with this sampler); it samples that run's model, it is not a schedule of its own"),
    }
}

/// SN-DDPM: the squared-noise head's variances.
#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnDdpm(pub SnDdpmSampler);

/// NPR-DDPM: the noise-prediction-residual head's variances.
#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NprDdpm(pub SnDdpmSampler);

/// Written as the settings are (`SnDdpmSampler { steps: .. }`), so that
/// the registry names the sampler `SnDdpm { steps: .. }`.
impl std::fmt::Debug for SnDdpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// As [`SnDdpm`]'s.
impl std::fmt::Debug for NprDdpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! covariance_sampler {
    ($kind:ident, $target:expr, $name:literal, $ron:literal, $summary:literal) => {
        impl SamplerKind for $kind {
            fn listed() -> &'static [Registered] {
                &[Registered {
                    ron: $ron,
                    summary: $summary,
                }]
            }

            fn steps(&self, _training_steps: usize) -> usize {
                self.0.steps
            }

            fn describe(&self) -> String {
                format!(concat!($name, ", {:?} steps"), self.0.spacing)
            }

            fn validate(&self, check: &mut Checker, context: SamplerContext) {
                self.0.validate_settings(check, context);
            }

            fn build(&self, _betas: &[f64], _defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
                Err(needs_head($name))
            }

            fn solver(
                &self,
                training_betas: &[f64],
            ) -> Option<Result<Arc<dyn NetworkSampler>, EnvError>> {
                Some(self.0.sampler(training_betas, $target))
            }

            fn covariance_target(&self) -> Option<CovarianceTarget> {
                Some($target)
            }
        }
    };
}

covariance_sampler!(
    SnDdpm,
    CovarianceTarget::SquaredNoise,
    "SN-DDPM",
    "SnDdpm(steps: 10, spacing: Uniform, clip_pixel: 2.0)",
    "SN-DDPM (Bao et al.): DDPM with per-pixel variances from a squared-noise head (task: CovarianceHead)"
);
covariance_sampler!(
    NprDdpm,
    CovarianceTarget::Residual,
    "NPR-DDPM",
    "NprDdpm(steps: 10, spacing: Uniform, clip_pixel: 2.0)",
    "NPR-DDPM (Bao et al.): DDPM with per-pixel variances from a noise-residual head (task: CovarianceHead)"
);

/// The sampler of SN-DDPM or NPR-DDPM on its grid.
#[derive(Debug, Clone, PartialEq)]
pub struct CovarianceDdpm {
    grid: SolverGrid,
    target: CovarianceTarget,
    clip_pixel: f64,
}

impl NetworkSampler for CovarianceDdpm {
    fn grid(&self) -> &SolverGrid {
        &self.grid
    }

    fn start(&self) -> Box<dyn NetworkSteps + '_> {
        Box::new(CovarianceSteps {
            sampler: self,
            index: 0,
        })
    }

    fn draws_noise(&self) -> bool {
        true
    }
}

struct CovarianceSteps<'a> {
    sampler: &'a CovarianceDdpm,
    index: usize,
}

impl NetworkSteps for CovarianceSteps<'_> {
    /// `output`: the noise prediction and the head's, concatenated on the
    /// channel axis.
    fn step(&mut self, output: &Tensor, x: &Tensor) -> Tensor {
        let grid = &self.sampler.grid;
        let steps = grid.len();
        let (now, next) = (grid.level(self.index), grid.level(self.index + 1));
        self.index += 1;
        let channels = x.size()[1];
        let eps = output.narrow(1, 0, channels);
        let head = output.narrow(1, channels, channels);
        let (a_n, a_s) = (now.alpha * now.alpha, next.alpha * next.alpha);
        let beta = 1.0 - a_n / a_s;
        let x0 = ((x - &eps * (1.0 - a_n).sqrt()) / a_n.sqrt()).clamp(-1.0, 1.0);
        let gamma = a_s.sqrt() * beta / (1.0 - a_n);
        let mean = &x0 * gamma + x * ((a_n / a_s).sqrt() * (1.0 - a_s) / (1.0 - a_n));
        if self.index == steps {
            return mean;
        }
        let residual = match self.sampler.target {
            CovarianceTarget::SquaredNoise => head - eps.square(),
            CovarianceTarget::Residual => head,
        };
        let cov = (residual * ((1.0 - a_n) / a_n)).clamp(0.0, 1.0);
        let betatilde = beta * (1.0 - a_s) / (1.0 - a_n);
        let mut variance = cov * (gamma * gamma) + betatilde;
        if self.index + 1 == steps && self.sampler.clip_pixel > 0.0 {
            let bound = self.sampler.clip_pixel * 2.0 / 255.0 * (std::f64::consts::PI / 2.0).sqrt();
            variance = variance.clamp(0.0, bound * bound);
        }
        mean + variance.sqrt() * x.randn_like()
    }
}
