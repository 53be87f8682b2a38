//! Deterministic ODE solvers of the probability-flow ODE on a model's
//! discrete training schedule: DPM-Solver (Lu et al. 2022, singlestep and
//! multistep, noise prediction), DPM-Solver++ (data prediction), UniPC
//! (Zhao et al. 2023, bh1/bh2) and iPNDM (Zhang & Chen 2023). They follow
//! diffusers' schedulers step for step (docs/conventions.md, section
//! "ODE solvers").
//!
//! A solver's next sample depends on earlier noise predictions, so it is
//! not a Markov policy: these solvers sample trained models (comparisons,
//! `rl-run sample --sampler`) and are refused as a run's own sampler.
//!
//! They are [`NetworkSampler`]s: samplers that drive the network
//! themselves, one evaluation per grid point, with what they remember of
//! earlier ones. SN-DDPM ([`crate::samplers::SnDdpmSampler`]), whose step
//! variance depends on the sample, is one too.
//!
//! Every solver runs on a [`SolverGrid`]: S network times t_0 > ... >
//! t_{S-1} (0-based training steps, one network evaluation each, so S is the
//! NFE) and S + 1 noise levels sigma_i = sqrt((1 - abar)/abar) at those
//! times, the last one the end of sampling (0, or the first training step's).
//! At a level, alpha = 1/sqrt(1 + sigma^2), the noise scale is sigma alpha
//! and the half log-SNR lambda = -ln sigma.

mod dpm_solver;
mod ipndm;
mod unipc;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::EnvError;

pub use dpm_solver::{DpmSolver, Prediction};
pub use ipndm::Ipndm;
pub use unipc::{UniPc, UniPcVariant};

/// Where a solver's network times lie among the T training steps (S of
/// them): diffusers' `timestep_spacing` of its multistep schedulers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SolverSpacing {
    /// round(linspace(0, T - 1, S + 1)) without its 0, from the top
    /// (diffusers' default).
    #[default]
    Linspace,
    /// i floor(T / (S + 1)) for i = S .. 1.
    Leading,
    /// round(T - i T / S) - 1 for i = 0 .. S - 1.
    Trailing,
    /// Karras et al.'s (EDM) polynomial levels, rho = 7: sigma_i =
    /// (smax^(1/7) + i/(S-1) (smin^(1/7) - smax^(1/7)))^7 between the noise
    /// levels of the last and first training steps, each at the training
    /// step nearest in log sigma (diffusers' `use_karras_sigmas`, whose
    /// sigmas we then take at those steps so that every level is the
    /// network's own). Even in sigma^(1/7), so near even in the ODE's own
    /// variable where Adams-Bashforth's fixed weights (iPNDM) need it.
    Karras,
}

/// The exponent of [`SolverSpacing::Karras`]'s polynomial (EDM's rho).
const KARRAS_RHO: f64 = 7.0;

impl SolverSpacing {
    /// The network times (0-based, decreasing) of `steps` evaluations on a
    /// model trained with `training_betas`.
    ///
    /// # Errors
    /// When there are no steps, more steps than training steps, or the
    /// spacing repeats a time.
    pub fn times(self, training_betas: &[f64], steps: usize) -> Result<Vec<usize>, EnvError> {
        let t = training_betas.len();
        let times = match self.index_times(t, steps)? {
            Some(times) => times,
            None => karras_times(training_betas, steps),
        };
        self.distinct(t, steps, times)
    }

    /// Checks what can be checked of `steps` evaluations on `t` training
    /// steps without the schedule (all of it, but for Karras's repeats).
    ///
    /// # Errors
    /// As [`SolverSpacing::times`].
    pub fn check(self, t: usize, steps: usize) -> Result<(), EnvError> {
        if let Some(times) = self.index_times(t, steps)? {
            self.distinct(t, steps, times)?;
        }
        Ok(())
    }

    /// The times of the spacings that depend on T alone (None for Karras).
    fn index_times(self, t: usize, steps: usize) -> Result<Option<Vec<usize>>, EnvError> {
        if steps == 0 || steps > t {
            return Err(EnvError::Invalid {
                field: "steps",
                reason: format!("an ODE solver needs between 1 and {t} steps, got {steps}"),
            });
        }
        let (tf, sf) = (t as f64, steps as f64);
        Ok(Some(match self {
            SolverSpacing::Linspace => {
                // numpy's linspace(0, T - 1, S + 1), rounded half to even.
                let step = (tf - 1.0) / sf;
                (1..=steps)
                    .rev()
                    .map(|i| {
                        let v = if i == steps {
                            tf - 1.0
                        } else {
                            i as f64 * step
                        };
                        v.round_ties_even() as usize
                    })
                    .collect()
            }
            SolverSpacing::Leading => {
                let ratio = t / (steps + 1);
                (1..=steps).rev().map(|i| i * ratio).collect()
            }
            SolverSpacing::Trailing => {
                let ratio = tf / sf;
                (0..steps)
                    .map(|i| ((tf - i as f64 * ratio).round_ties_even() as usize).saturating_sub(1))
                    .collect()
            }
            SolverSpacing::Karras => return Ok(None),
        }))
    }

    /// `times`, unless one repeats.
    fn distinct(self, t: usize, steps: usize, times: Vec<usize>) -> Result<Vec<usize>, EnvError> {
        if times.windows(2).any(|w| w[0] <= w[1]) {
            return Err(EnvError::Invalid {
                field: "steps",
                reason: format!("{self:?} spacing of {steps} steps over {t} repeats a time ({times:?}); use fewer steps or another spacing"),
            });
        }
        Ok(times)
    }
}

/// The training steps nearest (in log sigma) to Karras et al.'s `steps`
/// levels between the first and last training steps' noise levels.
fn karras_times(training_betas: &[f64], steps: usize) -> Vec<usize> {
    let log_sigmas: Vec<f64> = alpha_bars(training_betas)
        .into_iter()
        .map(|abar| ((1.0 - abar) / abar).sqrt().ln())
        .collect();
    let (low, high) = (log_sigmas[0], log_sigmas[log_sigmas.len() - 1]);
    let (min_inv, max_inv) = ((low / KARRAS_RHO).exp(), (high / KARRAS_RHO).exp());
    (0..steps)
        .map(|i| {
            let ramp = if steps == 1 {
                0.0
            } else {
                i as f64 / (steps - 1) as f64
            };
            let log_sigma = KARRAS_RHO * (max_inv + ramp * (min_inv - max_inv)).ln();
            // log sigma rises with t: interpolate the fractional step, then round.
            let upper = log_sigmas.partition_point(|&l| l < log_sigma);
            let fractional = match upper {
                0 => 0.0,
                u if u >= log_sigmas.len() => (log_sigmas.len() - 1) as f64,
                u => {
                    let (a, b) = (log_sigmas[u - 1], log_sigmas[u]);
                    (u - 1) as f64 + (log_sigma - a) / (b - a)
                }
            };
            fractional.round_ties_even() as usize
        })
        .collect()
}

/// abar_t = prod_{s <= t} (1 - beta_s) for every training step.
fn alpha_bars(training_betas: &[f64]) -> Vec<f64> {
    training_betas
        .iter()
        .scan(1.0, |acc, b| {
            *acc *= 1.0 - b;
            Some(*acc)
        })
        .collect()
}

/// Where sampling ends: diffusers' `final_sigmas_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FinalLevel {
    /// sigma = 0: the last step returns the predicted data.
    #[default]
    Zero,
    /// The first training step's noise level (DPM-Solver's end time).
    SigmaMin,
}

/// The times and noise levels a solver runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverGrid {
    /// Network times (0-based training steps), first evaluation first.
    pub times: Vec<usize>,
    /// sigma_i = sqrt((1 - abar)/abar) at each time, then the final level.
    pub sigmas: Vec<f64>,
}

impl SolverGrid {
    /// The grid of the network times `times` (0-based, decreasing) on a
    /// model trained with `training_betas`, ending at `last`.
    pub fn from_times(training_betas: &[f64], times: Vec<usize>, last: FinalLevel) -> Self {
        let alpha_bar = alpha_bars(training_betas);
        let level = |abar: f64| ((1.0 - abar) / abar).sqrt();
        let mut sigmas: Vec<f64> = times.iter().map(|&i| level(alpha_bar[i])).collect();
        sigmas.push(match last {
            FinalLevel::Zero => 0.0,
            FinalLevel::SigmaMin => level(alpha_bar[0]),
        });
        Self { times, sigmas }
    }

    /// The grid of `steps` network evaluations on a model trained with
    /// `training_betas`, spaced by `spacing`, ending at `last`.
    ///
    /// # Errors
    /// When there are no steps, more steps than training steps, or the
    /// spacing repeats a time.
    pub fn new(
        training_betas: &[f64],
        steps: usize,
        spacing: SolverSpacing,
        last: FinalLevel,
    ) -> Result<Self, EnvError> {
        let times = spacing.times(training_betas, steps)?;
        Ok(Self::from_times(training_betas, times, last))
    }

    /// Network evaluations (S).
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether the grid has no steps (never, once built).
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The level at grid position `i` (0 ..= S).
    pub fn level(&self, i: usize) -> Level {
        Level::of(self.sigmas[i])
    }
}

/// A noise level as the solvers use it.
#[derive(Debug, Clone, Copy)]
pub struct Level {
    /// sqrt(abar): the data's scale.
    pub alpha: f64,
    /// sqrt(1 - abar): the noise's scale.
    pub sigma: f64,
    /// ln(alpha / sigma) (+inf at the end of a grid that ends at 0).
    pub lambda: f64,
}

impl Level {
    fn of(ve_sigma: f64) -> Self {
        let alpha = 1.0 / (ve_sigma * ve_sigma + 1.0).sqrt();
        let sigma = ve_sigma * alpha;
        Self {
            alpha,
            sigma,
            lambda: alpha.ln() - sigma.ln(),
        }
    }
}

/// A sampler that drives the network itself on its grid (an ODE solver,
/// SN-DDPM), as opposed to a [`crate::schedule::Schedule`] of affine
/// Gaussian steps.
pub trait NetworkSampler: std::fmt::Debug + Send + Sync {
    /// The grid it runs on.
    fn grid(&self) -> &SolverGrid;

    /// A fresh solve of one batch of chains.
    fn start(&self) -> Box<dyn NetworkSteps + '_>;

    /// Whether its steps draw noise of their own (then a batch's rows
    /// depend on which rows are drawn together, and data-parallel ranks
    /// cannot split it exactly); deterministic solvers draw none.
    fn draws_noise(&self) -> bool {
        false
    }
}

/// One solve in progress: what it remembers of earlier steps.
pub trait NetworkSteps {
    /// The chains at the next grid position, given `x` at the current one
    /// (`i`-th call: position i, time `grid.times[i]`) and the network's
    /// noise prediction `eps` there.
    fn step(&mut self, eps: &Tensor, x: &Tensor) -> Tensor;
}

/// Runs `solver` from `x_t` (the chains at its first time), calling `eps`
/// with the chains and each network time, and `visit` with each new state
/// and its position from the end (S - 1 down to 0); returns the last state.
pub fn solve(
    solver: &dyn NetworkSampler,
    x_t: Tensor,
    mut eps: impl FnMut(&Tensor, usize) -> Tensor,
    mut visit: impl FnMut(usize, &Tensor),
) -> Tensor {
    let grid = solver.grid();
    let mut steps = solver.start();
    let mut x = x_t;
    for (i, &time) in grid.times.iter().enumerate() {
        let e = eps(&x, time);
        x = steps.step(&e, &x);
        visit(grid.len() - i - 1, &x);
    }
    x
}

/// The data predicted from `x` and its noise prediction at `level`.
pub(crate) fn data_prediction(level: Level, eps: &Tensor, x: &Tensor) -> Tensor {
    (x - eps * level.sigma) / level.alpha
}

/// A bounded history of the last outputs, most recent last.
#[derive(Debug)]
pub(crate) struct History {
    items: Vec<Tensor>,
    keep: usize,
}

impl History {
    pub fn new(keep: usize) -> Self {
        Self {
            items: Vec::with_capacity(keep),
            keep: keep.max(1),
        }
    }

    pub fn push(&mut self, item: Tensor) {
        if self.items.len() == self.keep {
            drop(self.items.remove(0));
        }
        self.items.push(item);
    }

    /// The `k`-th most recent (0: the last pushed).
    pub fn back(&self, k: usize) -> &Tensor {
        &self.items[self.items.len() - 1 - k]
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}
