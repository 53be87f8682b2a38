//! Samplers built on a model's training schedule: the full chain, DDPM on a
//! sub-sequence of T' steps, DDIM with eta, FastDPM's STEP and VAR (Kong &
//! Ping 2021) and Analytic-DPM. Each gives a [`Schedule`] of T' affine
//! Gaussian steps, which the diffusion environment and every agent accept.
//! This module holds what they share (spacings, FastDPM's noise levels,
//! the [`SamplerKind`] trait) and the registry that declares
//! [`SamplerConfig`]; each sampler's settings live in its own file of
//! [`crate::samplers`].
//!
//! Sub-sequences are 0-based network times tau_1 < ... < tau_S in [0, T-1],
//! in one of five spacings: FastDPM's `Uniform` (floor(i (T-1)/(S-1))) and
//! `Quadratic` (floor of linspace(0, sqrt(0.8 T), S)^2), and diffusers'
//! `Leading` (i floor(T/S)), `Trailing` (round(T - i T/S) - 1) and
//! `Linspace` (round(linspace(0, T-1, S))).
//!
//! FastDPM's VAR chooses S noise levels b_i, linear (linspace(beta_1, x, S))
//! or quadratic (beta_1 (1 + i x)^2), with x found by bisection so that
//! prod(1 - b_i) matches the training schedule's abar_T (relative 1e-4)
//! within FastDPM's search interval (for 10 quadratic levels on the linear
//! 1e-4..0.02 schedule the interval ends first, at prod = 0.0208); the
//! network is called at the real time where the continuous extension of the
//! linear schedule's log abar (Stirling's lnGamma) reaches each level.

use serde::{Deserialize, Serialize};

use crate::check::Checker;
use crate::registry::Registered;
pub use crate::samplers::{
    AnalyticDpmSampler, CovarianceTarget, DdimEvenSampler, DdimSampler, DdpmSampler,
    DpmSolverPpSampler, DpmSolverSampler, FastDpmSampler, FullChain, IpndmSampler, NprDdpm, SnDdpm,
    SnDdpmSampler, UniPcSampler,
};
use crate::schedule::{Schedule, Variance};
use crate::EnvError;

/// How the steps of a sub-sequence are spread over the training steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Spacing {
    /// floor(i (T - 1) / (S - 1)): FastDPM's linear STEP, first and last training step included.
    #[default]
    Uniform,
    /// floor(linspace(0, sqrt(0.8 T), S)^2): FastDPM's quadratic STEP, dense near the data.
    Quadratic,
    /// i floor(T / S): diffusers' "leading" (its DDPM/DDIM schedulers' default).
    Leading,
    /// round(T - i T / S) - 1: diffusers' "trailing".
    Trailing,
    /// round(linspace(0, T - 1, S)): diffusers' "linspace".
    Linspace,
}

/// FastDPM's two families of noise levels or steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FastDpmSchedule {
    /// Linearly spaced.
    Linear,
    /// Quadratically spaced (the paper's start for CIFAR-10 and CelebA).
    #[default]
    Quadratic,
}

/// FastDPM's approximation of the reverse process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FastDpmKind {
    /// Continuous noise levels; the network is called at real-valued times.
    #[default]
    Var,
    /// A sub-sequence of the training steps.
    Step,
}

/// What the DDPM samplers (`Full`, `Ddpm`) take from the environment
/// unless the sampler sets it: the step variance and whether the predicted
/// x_0 is clamped to [-1, 1]. A bare [`Variance`] converts with clipping off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdpmDefaults {
    /// `env.variance`.
    pub variance: Variance,
    /// `env.clip_x0`.
    pub clip_x0: bool,
}

impl From<Variance> for DdpmDefaults {
    fn from(variance: Variance) -> Self {
        Self {
            variance,
            clip_x0: false,
        }
    }
}

/// The bound of a clamped x_0: data in [-1, 1].
const X0_BOUND: f64 = 1.0;

/// What a sampler contributes to the registry, implemented by its settings
/// in the sampler's own file (`envs/src/samplers/`).
pub trait SamplerKind {
    /// Its RON forms with typical settings, each with one line on what it
    /// does (listed by `rl-run envs`).
    fn listed() -> &'static [Registered]
    where
        Self: Sized;

    /// Sampling steps T' on a model trained with `training_steps` steps.
    fn steps(&self, training_steps: usize) -> usize;

    /// A short description for tables: `full chain`, `DDPM, uniform`, ...
    fn describe(&self) -> String;

    /// Checks the sampler's own settings against the experiment around it
    /// (the step count is checked for every sampler).
    fn validate(&self, _check: &mut Checker, _context: SamplerContext) {}

    /// The sampler's schedule of T' affine Gaussian steps on a model
    /// trained with `training_betas` (`defaults`: the variance and x_0
    /// clipping of the environment, for samplers that take them).
    fn build(&self, training_betas: &[f64], defaults: DdpmDefaults) -> Result<Schedule, EnvError>;

    /// For an ODE solver (not a chain of Gaussian steps, so [`SamplerKind::build`]
    /// refuses it), the solver on a model trained with `training_betas`;
    /// `None` for the samplers that build a schedule.
    fn solver(
        &self,
        _training_betas: &[f64],
    ) -> Option<Result<std::sync::Arc<dyn crate::ode::NetworkSampler>, EnvError>> {
        None
    }

    /// For SN-DDPM and NPR-DDPM, what the covariance head they read
    /// predicts (the model must have one: `task: CovarianceHead`).
    fn covariance_target(&self) -> Option<CovarianceTarget> {
        None
    }
}

/// Declares [`SamplerConfig`] (one variant per sampler: `Name(Settings)`,
/// or `Name = Kind` for a sampler without settings, where `Kind` is a unit
/// struct) and [`samplers`], from one line per sampler.
macro_rules! sampler_registry {
    ($( $(#[$doc:meta])* $variant:ident $(($config:path))? $(= $unit:path)? ),* $(,)?) => {
        /// The sampler of an experiment (`env.sampler`). Each variant's
        /// settings implement [`SamplerKind`]. In RON a sampler is written
        /// `Name(field: value, ...)`, which needs RON's
        /// `unwrap_variant_newtypes` extension (experiment files enable it,
        /// and `shortcut::runner::sampling::parse_sampler` parses one).
        #[derive(Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
        pub enum SamplerConfig {
            $( $(#[$doc])* $variant $(($config))? ),*
        }

        impl SamplerConfig {
            /// The chosen sampler's part of the registry.
            pub fn kind(&self) -> &dyn SamplerKind {
                $( sampler_registry!(@kind self, $variant $(($config))? $(= $unit)?); )*
                unreachable!("every sampler is registered")
            }
        }

        /// Written as `Name { field: value, .. }` (the settings without
        /// their struct's name): comparison caches and sample file names
        /// are keyed by this text, so it stays what it was when the
        /// samplers were struct variants.
        impl std::fmt::Debug for SamplerConfig {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                $( sampler_registry!(@debug self, f, $variant $(($config))? $(= $unit)?); )*
                unreachable!("every sampler is registered")
            }
        }

        /// Every sampler (`env.sampler`), built on the model's training
        /// schedule (each sampler's [`SamplerKind::listed`], in registry order).
        pub fn samplers() -> Vec<Registered> {
            [$( sampler_registry!(@listed $(($config))? $(= $unit)?) ),*].concat()
        }
    };
    (@kind $self:ident, $variant:ident ($config:path)) => {
        if let SamplerConfig::$variant(config) = $self {
            return config;
        }
    };
    (@kind $self:ident, $variant:ident = $unit:path) => {
        if let SamplerConfig::$variant = $self {
            return &$unit;
        }
    };
    (@debug $self:ident, $f:ident, $variant:ident ($config:path)) => {
        if let SamplerConfig::$variant(config) = $self {
            let settings = format!("{config:?}");
            let fields = settings.split_once(' ').map_or("", |(_, fields)| fields);
            return write!($f, "{} {fields}", stringify!($variant));
        }
    };
    (@debug $self:ident, $f:ident, $variant:ident = $unit:path) => {
        if let SamplerConfig::$variant = $self {
            return write!($f, stringify!($variant));
        }
    };
    (@listed ($config:path)) => { <$config as SamplerKind>::listed() };
    (@listed = $unit:path) => { <$unit as SamplerKind>::listed() };
}

// The registry: one line per sampler (its file in `envs/src/samplers/`
// implements `SamplerKind`).
sampler_registry! {
    /// Every step of the training schedule with its DDPM variance (`env.variance`).
    #[default]
    Full = FullChain,
    /// DDPM on a sub-sequence of training steps.
    Ddpm(DdpmSampler),
    /// DDIM (Song et al.) on a sub-sequence.
    Ddim(DdimSampler),
    /// FastDPM (Kong & Ping 2021): STEP or VAR, linear or quadratic, with kappa.
    FastDpm(FastDpmSampler),
    /// Analytic-DPM (Bao et al. 2022): samples trained models only.
    AnalyticDpm(AnalyticDpmSampler),
    /// Deterministic DDIM at evenly spaced real times: progressive distillation's grid.
    DdimEven(DdimEvenSampler),
    /// DPM-Solver (Lu et al. 2022) on eps: an ODE solver, samples trained models only.
    DpmSolver(DpmSolverSampler),
    /// DPM-Solver++ (Lu et al. 2022b) on x_0: an ODE solver, samples trained models only.
    DpmSolverPp(DpmSolverPpSampler),
    /// UniPC (Zhao et al. 2023): an ODE solver, samples trained models only.
    UniPc(UniPcSampler),
    /// iPNDM (Zhang & Chen 2023): an ODE solver, samples trained models only.
    Ipndm(IpndmSampler),
    /// SN-DDPM (Bao et al. 2022b): variances from a squared-noise head.
    SnDdpm(SnDdpm),
    /// NPR-DDPM (Bao et al. 2022b): variances from a noise-residual head.
    NprDdpm(NprDdpm),
}

/// What a sampler's settings are checked against: the experiment around it.
#[derive(Debug, Clone, Copy)]
pub struct SamplerContext {
    /// The training steps T (`env.steps`).
    pub training_steps: usize,
    /// Whether the training schedule is linear (FastDPM VAR inverts it).
    pub linear_schedule: bool,
    /// Whether the samples are images (x_0 clipping is for images).
    pub images: bool,
}

impl SamplerConfig {
    /// Checks the sampler's settings against the experiment around it.
    pub fn validate(&self, check: &mut Checker, context: SamplerContext) {
        let steps = self.steps(context.training_steps);
        check.that(
            steps >= 1 && steps <= context.training_steps,
            "steps",
            format!(
                "must lie in 1..={} (the training steps env.steps), got {steps}",
                context.training_steps
            ),
        );
        self.kind().validate(check, context);
    }

    /// Sampling steps T' on a model trained with `training_steps` steps.
    pub fn steps(&self, training_steps: usize) -> usize {
        self.kind().steps(training_steps)
    }

    /// A short description for tables: `full chain`, `DDPM, uniform`, ...
    pub fn describe(&self) -> String {
        self.kind().describe()
    }

    /// For Analytic-DPM, the DDPM sub-sequence (betatilde variances) whose
    /// variances [`crate::analytic::analytic_sigmas`] replaces; `None` for
    /// the other samplers.
    pub fn analytic_base(&self, training_betas: &[f64]) -> Option<Result<Schedule, EnvError>> {
        match self {
            SamplerConfig::AnalyticDpm(analytic) => Some(analytic.base(training_betas)),
            _ => None,
        }
    }

    /// For SN-DDPM and NPR-DDPM, what their covariance head predicts.
    pub fn covariance_target(&self) -> Option<CovarianceTarget> {
        self.kind().covariance_target()
    }

    /// For an ODE solver, the solver on a model trained with
    /// `training_betas`; `None` for samplers that build a schedule.
    pub fn solver(
        &self,
        training_betas: &[f64],
    ) -> Option<Result<std::sync::Arc<dyn crate::ode::NetworkSampler>, EnvError>> {
        self.kind().solver(training_betas)
    }

    /// The sampler's schedule on a model trained with `training_betas`
    /// (`defaults`: the variance and x_0 clipping of the full chain and of
    /// DDPM sub-sequences that do not set their own).
    pub fn build(
        &self,
        training_betas: &[f64],
        defaults: impl Into<DdpmDefaults>,
    ) -> Result<Schedule, EnvError> {
        self.kind().build(training_betas, defaults.into())
    }
}

/// `schedule` with its predicted x_0 clamped to [-1, 1] where `clip` says.
pub(crate) fn clipped(schedule: Schedule, clip: bool) -> Result<Schedule, EnvError> {
    if clip {
        schedule.with_clipped_x0(X0_BOUND)
    } else {
        Ok(schedule)
    }
}

fn invalid(field: &'static str, reason: String) -> EnvError {
    EnvError::Invalid { field, reason }
}

/// 1-based training steps of 0-based ones.
pub(crate) fn one_based(tau: &[usize]) -> Vec<usize> {
    tau.iter().map(|t| t + 1).collect()
}

/// The 0-based training steps of an S-step sub-sequence of T, increasing.
pub fn spaced(spacing: Spacing, t: usize, s: usize) -> Result<Vec<usize>, EnvError> {
    if s == 0 || s > t {
        return Err(invalid(
            "steps",
            format!("a sub-sequence needs between 1 and {t} steps, got {s}"),
        ));
    }
    let (tf, sf) = (t as f64, s as f64);
    // numpy's linspace from 0: i * step, the last point exactly `end`.
    let linspace = |end: f64, i: usize| {
        if s == 1 {
            0.0
        } else if i == s - 1 {
            end
        } else {
            i as f64 * (end / (sf - 1.0))
        }
    };
    let mut tau: Vec<usize> = match spacing {
        Spacing::Uniform => {
            let c = (tf - 1.0) / (sf - 1.0).max(1.0);
            (0..s).map(|i| (i as f64 * c).floor() as usize).collect()
        }
        Spacing::Quadratic => (0..s)
            .map(|i| linspace((0.8 * tf).sqrt(), i).powi(2) as usize)
            .collect(),
        Spacing::Leading => (0..s).map(|i| i * (t / s)).collect(),
        Spacing::Trailing => (0..s)
            .map(|i| ((tf - i as f64 * tf / sf).round() as usize).saturating_sub(1))
            .collect(),
        Spacing::Linspace => (0..s)
            .map(|i| linspace(tf - 1.0, i).round() as usize)
            .collect(),
    };
    tau.sort_unstable();
    if tau.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(
            "steps",
            format!("{spacing:?} spacing of {s} steps over {t} repeats a step ({tau:?}); use fewer steps or another spacing"),
        ));
    }
    Ok(tau)
}

/// FastDPM's bisection: halves `domain` until `f(x)` lies within relative
/// `eps` of `target` on the side FastDPM accepts (f decreasing in x).
fn bisect(f: impl Fn(f64) -> f64, domain: (f64, f64), target: f64, eps: f64) -> f64 {
    let sign = if target < 0.0 { -1.0 } else { 1.0 };
    let (mut left, mut right) = domain;
    let mut x = (left + right) / 2.0;
    for _ in 0..1000 {
        x = (left + right) / 2.0;
        let y = f(x);
        if y < target {
            right = x;
        } else if y > (1.0 + sign * eps) * target {
            left = x;
        } else {
            break;
        }
    }
    x
}

/// ln Gamma(x) by Stirling's series, as FastDPM computes it.
fn log_gamma(x: f64) -> f64 {
    let y = x - 1.0;
    (2.0 * std::f64::consts::PI * y).ln() / 2.0 + y * (y.ln() - 1.0) + (1.0 + 1.0 / (12.0 * y)).ln()
}

/// The continuous extension of log abar(t) of the linear schedule
/// beta_0 .. beta_T over T steps (0-based time t).
fn log_continuous_alpha_bar(t: f64, beta_0: f64, beta_t: f64, steps: usize) -> f64 {
    let delta = (beta_t - beta_0) / (steps as f64 - 1.0);
    let c = (1.0 - beta_0) / delta;
    let t1 = t + 1.0;
    t1 * delta.ln() + log_gamma(c + 1.0) - log_gamma(c - t1 + 1.0)
}

/// FastDPM VAR: the cumulative alphas of the S noise levels (decreasing,
/// step 1 first) and the network time of each.
pub fn fastdpm_var(
    training_betas: &[f64],
    s: usize,
    schedule: FastDpmSchedule,
) -> Result<(Vec<f64>, Vec<f64>), EnvError> {
    let t = training_betas.len();
    if s < 2 || t < 2 {
        return Err(invalid(
            "steps",
            format!("FastDPM VAR needs at least 2 steps on a model of at least 2, got {s} on {t}"),
        ));
    }
    let (beta_0, beta_t) = (training_betas[0], training_betas[t - 1]);
    let delta = (beta_t - beta_0) / (t as f64 - 1.0);
    let linear = training_betas
        .iter()
        .enumerate()
        .all(|(i, b)| (b - (beta_0 + delta * i as f64)).abs() <= 1e-9 * beta_t.abs().max(1e-12));
    if !linear || delta <= 0.0 {
        return Err(invalid(
            "sampler",
            "FastDPM VAR needs a linear, increasing training schedule (it inverts that schedule's continuous abar)".into(),
        ));
    }
    let target: f64 = training_betas.iter().map(|b| 1.0 - b).product();
    let levels = |x: f64| -> Vec<f64> {
        match schedule {
            FastDpmSchedule::Linear => (0..s)
                .map(|i| beta_0 + (x - beta_0) * i as f64 / (s as f64 - 1.0))
                .collect(),
            FastDpmSchedule::Quadratic => (0..s)
                .map(|i| beta_0 * (1.0 + i as f64 * x).powi(2))
                .collect(),
        }
    };
    let domain = match schedule {
        FastDpmSchedule::Linear => (beta_0, 0.99),
        FastDpmSchedule::Quadratic => (0.0, 0.95 / beta_0.sqrt() / s as f64),
    };
    let product = |x: f64| levels(x).iter().map(|b| 1.0 - b).product::<f64>();
    let noise = levels(bisect(product, domain, target, 1e-4));
    let gamma_bar: Vec<f64> = noise
        .iter()
        .scan(1.0, |acc, b| {
            *acc *= 1.0 - b;
            Some(*acc)
        })
        .collect();
    let alpha_bar: Vec<f64> = training_betas
        .iter()
        .scan(1.0, |acc, b| {
            *acc *= 1.0 - b;
            Some(*acc)
        })
        .collect();
    let times = gamma_bar
        .iter()
        .map(|&g| {
            (0..t - 1)
                .find(|&i| alpha_bar[i] >= g && g > alpha_bar[i + 1])
                .map_or((t - 1) as f64, |i| {
                    bisect(
                        |x| log_continuous_alpha_bar(x, beta_0, beta_t, t),
                        (i as f64 - 0.01, i as f64 + 1.01),
                        g.ln(),
                        1e-8,
                    )
                })
        })
        .collect();
    Ok((gamma_bar, times))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::BetaSchedule;

    fn cifar_betas() -> Vec<f64> {
        BetaSchedule::Linear {
            start: 1e-4,
            end: 0.02,
        }
        .betas(1000)
        .unwrap()
    }

    /// FastDPM VAR's network times for 10 steps on the linear 1e-4..0.02
    /// schedule, first sampling step first, as the authors' finetune.py
    /// computes them (tests/authors_finetune_parity.rs checks them to 1e-9).
    #[test]
    fn fastdpm_var_times_match_the_reference_values() {
        let betas = cifar_betas();
        for (schedule, expected) in [
            (
                FastDpmSchedule::Quadratic,
                [
                    616.7, 494.0, 394.1, 308.9, 234.9, 170.3, 114.4, 66.9, 28.3, 0.0,
                ],
            ),
            (
                FastDpmSchedule::Linear,
                [
                    999.0, 802.8, 668.6, 554.6, 452.1, 357.5, 268.6, 184.0, 101.8, 0.0,
                ],
            ),
        ] {
            let (_, times) = fastdpm_var(&betas, 10, schedule).unwrap();
            let first_to_last: Vec<f64> = times.iter().rev().copied().collect();
            for (got, want) in first_to_last.iter().zip(expected) {
                assert!((got - want).abs() <= 0.5, "{schedule:?}: {first_to_last:?}");
            }
        }
    }

    #[test]
    fn var_levels_follow_fastdpm_including_its_capped_quadratic_search() {
        let betas = cifar_betas();
        let target: f64 = betas.iter().map(|b| 1.0 - b).product();
        // Linear levels reach the training schedule's abar_T.
        let (levels, _) = fastdpm_var(&betas, 10, FastDpmSchedule::Linear).unwrap();
        let last = *levels.last().unwrap();
        assert!((last / target - 1.0).abs() <= 1.1e-4, "{last} vs {target}");
        assert!(levels.windows(2).all(|w| w[1] < w[0]));
        // Ten quadratic levels cannot: FastDPM searches x only up to
        // 0.95 / sqrt(beta_1) / S, where prod(1 - b_i) is still 0.0208, and
        // samples from there (its first network time, 616.7, is where the
        // training schedule's abar is 0.0208).
        let (levels, _) = fastdpm_var(&betas, 10, FastDpmSchedule::Quadratic).unwrap();
        let capped: f64 = (0..10)
            .map(|i| 1.0 - 1e-4 * (1.0 + i as f64 * 9.5).powi(2))
            .product();
        let last = *levels.last().unwrap();
        assert!((last / capped - 1.0).abs() < 1e-6, "{last} vs {capped}");
        // A sigmoid schedule has no such continuous extension.
        let sigmoid = BetaSchedule::Sigmoid {
            start: 1e-5,
            end: 1e-2,
        }
        .betas(100)
        .unwrap();
        assert!(fastdpm_var(&sigmoid, 10, FastDpmSchedule::Linear).is_err());
    }

    #[test]
    fn spacings_follow_their_definitions() {
        assert_eq!(
            spaced(Spacing::Leading, 1000, 10).unwrap(),
            (0..10).map(|i| i * 100).collect::<Vec<_>>()
        );
        assert_eq!(
            spaced(Spacing::Trailing, 1000, 10).unwrap(),
            (1..=10).map(|i| i * 100 - 1).collect::<Vec<_>>()
        );
        let uniform = spaced(Spacing::Uniform, 1000, 10).unwrap();
        assert_eq!((uniform[0], uniform[9], uniform[1]), (0, 999, 111));
        let quadratic = spaced(Spacing::Quadratic, 1000, 10).unwrap();
        assert_eq!((quadratic[0], quadratic[1], quadratic[9]), (0, 9, 800));
        assert_eq!(
            spaced(Spacing::Linspace, 1000, 4).unwrap(),
            vec![0, 333, 666, 999]
        );
        assert!(spaced(Spacing::Quadratic, 20, 15).is_err());
        assert!(spaced(Spacing::Uniform, 10, 11).is_err());
    }

    #[test]
    fn ddim_with_eta_one_is_ddpm_with_the_posterior_variance() {
        let betas = cifar_betas();
        let ddim = SamplerConfig::Ddim(DdimSampler {
            steps: 10,
            eta: 1.0,
            spacing: Spacing::Quadratic,
        })
        .build(&betas, Variance::Beta)
        .unwrap();
        let ddpm = SamplerConfig::Ddpm(DdpmSampler {
            steps: 10,
            spacing: Spacing::Quadratic,
            variance: None,
            clip_x0: None,
        })
        .build(&betas, Variance::PosteriorBetaTilde)
        .unwrap();
        let (a, b) = (
            ddim.coefficients(tch::Device::Cpu),
            ddpm.coefficients(tch::Device::Cpu),
        );
        for (x, y) in [
            (&a.x_scale, &b.x_scale),
            (&a.eps_scale, &b.eps_scale),
            (&a.sigma, &b.sigma),
            (&a.network_times, &b.network_times),
        ] {
            let diff = (x - y).abs().max().double_value(&[]);
            assert!(
                diff <= 1e-5 * y.abs().max().double_value(&[]).max(1.0),
                "{diff}"
            );
        }
        // eta = 0 is deterministic; its log-density keeps the small fixed std.
        let deterministic = SamplerConfig::Ddim(DdimSampler {
            steps: 10,
            eta: 0.0,
            spacing: Spacing::Leading,
        })
        .build(&betas, Variance::Beta)
        .unwrap()
        .coefficients(tch::Device::Cpu);
        assert_eq!(deterministic.sigma.abs().max().double_value(&[]), 0.0);
        assert!(
            (deterministic.log_prob_sigma.min().double_value(&[])
                - crate::schedule::DETERMINISTIC_STEP_STD)
                .abs()
                < 1e-9
        );
    }

    #[test]
    fn samplers_print_as_the_struct_variants_they_were() {
        // Comparison caches and sample file names are keyed by this text.
        let ddim = SamplerConfig::Ddim(DdimSampler {
            steps: 10,
            eta: 0.5,
            spacing: Spacing::Trailing,
        });
        assert_eq!(
            format!("{ddim:?}"),
            "Ddim { steps: 10, eta: 0.5, spacing: Trailing }"
        );
        assert_eq!(format!("{:?}", SamplerConfig::Full), "Full");
    }

    #[test]
    fn the_full_sampler_is_the_training_chain() {
        let betas = BetaSchedule::Sigmoid {
            start: 1e-5,
            end: 1e-2,
        }
        .betas(10)
        .unwrap();
        let full = SamplerConfig::Full.build(&betas, Variance::Beta).unwrap();
        assert_eq!(full, Schedule::new(betas, Variance::Beta).unwrap());
        assert_eq!(SamplerConfig::Full.steps(10), 10);
    }
}
