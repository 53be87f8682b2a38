//! Deterministic DDIM on S evenly spaced real times, the grid of
//! progressive distillation (Salimans & Ho 2022): step i (1 = nearest the
//! data) calls the network at time tau_i = i T / S - 1 (0-based, real
//! valued) and the last step lands on abar = 1, the data. Between training
//! steps, abar is interpolated log-linearly (with abar(-1) = 1).

use serde::{Deserialize, Serialize};

use crate::check::Checker;
use crate::registry::Registered;
use crate::sampler::{DdpmDefaults, SamplerContext, SamplerKind};
use crate::schedule::{Schedule, StepRule};
use crate::EnvError;

/// DDIM (eta 0) at the real times i T / S - 1, i = S .. 1: the sampler of
/// a progressively distilled student with S steps (and of its teachers,
/// with 2S, 4S, ...).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdimEvenSampler {
    /// Sampling steps S.
    pub steps: usize,
}

/// The network times of an S-step even grid on T training steps, step 1
/// (nearest the data) first: i T / S - 1.
pub fn even_times(training_steps: usize, steps: usize) -> Vec<f64> {
    (1..=steps)
        .map(|i| i as f64 * training_steps as f64 / steps as f64 - 1.0)
        .collect()
}

/// abar at the real 0-based time `tau` in [-1, T - 1] of a model trained
/// with `training_betas`: log abar interpolated linearly between the
/// training steps, abar(-1) = 1.
pub fn interpolated_alpha_bar(training_betas: &[f64], tau: f64) -> f64 {
    let last = training_betas.len() as f64 - 1.0;
    let tau = tau.clamp(-1.0, last);
    let below = tau.floor();
    // log abar at the whole time `below` (-1: nothing noised yet).
    let low: f64 = training_betas[..(below + 1.0) as usize]
        .iter()
        .map(|b| (1.0 - b).ln())
        .sum();
    if tau == below {
        return low.exp();
    }
    let high = low + (1.0 - training_betas[(below + 1.0) as usize]).ln();
    (low + (tau - below) * (high - low)).exp()
}

impl SamplerKind for DdimEvenSampler {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "DdimEven(steps: 8)",
            summary: "deterministic DDIM at the evenly spaced real times i T/S - 1: the grid of progressive distillation",
        }]
    }

    fn steps(&self, _training_steps: usize) -> usize {
        self.steps
    }

    fn describe(&self) -> String {
        "DDIM, even real times".into()
    }

    fn validate(&self, check: &mut Checker, context: SamplerContext) {
        check.at_least("steps", self.steps, 1);
        check.that(
            self.steps <= context.training_steps,
            "steps",
            format!(
                "the first time T/S - 1 must be a training time: at most {} steps, got {}",
                context.training_steps, self.steps
            ),
        );
    }

    fn build(&self, training_betas: &[f64], _defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
        let times = even_times(training_betas.len(), self.steps);
        let levels = times
            .iter()
            .map(|&tau| interpolated_alpha_bar(training_betas, tau))
            .collect();
        Schedule::from_levels(levels, times, StepRule::Generalized { kappa: 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{DdimSampler, Spacing};
    use crate::schedule::Variance;

    #[test]
    fn whole_times_have_the_training_levels_and_between_them_log_linear() {
        let betas: Vec<f64> = (0..10).map(|i| 0.01 + 0.02 * i as f64).collect();
        let bars: Vec<f64> = betas
            .iter()
            .scan(1.0, |a, b| {
                *a *= 1.0 - b;
                Some(*a)
            })
            .collect();
        assert_eq!(interpolated_alpha_bar(&betas, -1.0), 1.0);
        for (k, bar) in bars.iter().enumerate() {
            assert!((interpolated_alpha_bar(&betas, k as f64) - bar).abs() < 1e-15);
        }
        let mid = interpolated_alpha_bar(&betas, 2.5);
        assert!((mid - (bars[2] * bars[3]).sqrt()).abs() < 1e-15);
        assert_eq!(even_times(1000, 8)[..2], [124.0, 249.0]);
        assert_eq!(*even_times(1000, 16).last().unwrap(), 999.0);
    }

    #[test]
    fn where_the_grid_is_whole_it_is_ddim_on_the_trailing_steps() {
        let linear: Vec<f64> = (0..1000)
            .map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0)
            .collect();
        let defaults = DdpmDefaults::from(Variance::PosteriorBetaTilde);
        let even = DdimEvenSampler { steps: 8 }
            .build(&linear, defaults)
            .unwrap();
        let trailing = DdimSampler {
            steps: 8,
            eta: 0.0,
            spacing: Spacing::Trailing,
        }
        .build(&linear, defaults)
        .unwrap();
        for t in 1..=8 {
            assert_eq!(even.network_time(t), trailing.network_time(t));
            assert!((even.alpha_bar(t) - trailing.alpha_bar(t)).abs() < 1e-12);
            assert_eq!(even.sigma(t), 0.0);
        }
    }
}
