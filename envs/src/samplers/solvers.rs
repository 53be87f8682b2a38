//! The ODE solvers of [`crate::ode`] as samplers: DPM-Solver,
//! DPM-Solver++, UniPC and iPNDM. Their steps use earlier noise
//! predictions, so they are not Markov chains of Gaussian steps: they
//! sample trained models (comparisons, `rl-run sample --sampler`) and
//! are refused as a run's own sampler.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::check::Checker;
use crate::ode::{
    DpmSolver, FinalLevel, Ipndm, NetworkSampler, Prediction, SolverGrid, SolverSpacing, UniPc,
    UniPcVariant,
};
use crate::registry::Registered;
use crate::sampler::{DdpmDefaults, SamplerContext, SamplerKind};
use crate::schedule::Schedule;
use crate::EnvError;

/// The refusal of a solver as a run's own sampler.
fn sampling_only(name: &str) -> EnvError {
    EnvError::Invalid {
        field: "env.sampler",
        reason: format!("{name} is an ODE solver whose steps use earlier noise predictions, not a chain of Gaussian steps (a Markov policy): it samples trained models (compare_samplers, comparison files, rl-run sample --sampler), it cannot be a run's own sampler"),
    }
}

/// Checks a solver's steps, spacing and order (within `orders`).
fn validate_solver(
    check: &mut Checker,
    context: SamplerContext,
    steps: usize,
    spacing: SolverSpacing,
    order: usize,
    orders: std::ops::RangeInclusive<usize>,
) {
    if let Err(EnvError::Invalid { reason, .. }) = spacing.check(context.training_steps, steps) {
        check.that(false, "steps", reason);
    }
    check.that(
        orders.contains(&order),
        "order",
        format!(
            "must lie in {}..={}, got {order}",
            orders.start(),
            orders.end()
        ),
    );
}

fn grid(
    training_betas: &[f64],
    steps: usize,
    spacing: SolverSpacing,
    last: FinalLevel,
) -> Result<SolverGrid, EnvError> {
    SolverGrid::new(training_betas, steps, spacing, last)
}

fn default_true() -> bool {
    true
}

fn order_two() -> usize {
    2
}

fn order_three() -> usize {
    3
}

/// DPM-Solver (Lu et al. 2022) on the noise prediction, ending at the
/// first training step's noise level. The default, singlestep order 3,
/// is DPM-Solver-fast's orders at 10 NFE (3, 3, 3, 1), the paper's 4.70
/// row, with its stages on diffusers' grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpmSolverSampler {
    /// Network evaluations (NFE).
    pub steps: usize,
    /// Order 1 to 3 (1 is DDIM).
    #[serde(default = "order_three")]
    pub order: usize,
    /// Multistep (earlier grid points) instead of singlestep (stages).
    #[serde(default)]
    pub multistep: bool,
    /// Where the network times lie.
    #[serde(default)]
    pub spacing: SolverSpacing,
}

impl SamplerKind for DpmSolverSampler {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "DpmSolver(steps: 10, order: 3, multistep: false, spacing: Linspace)",
            summary: "DPM-Solver (Lu et al.) on eps: singlestep order 3 is DPM-Solver-fast; an ODE solver, samples trained models only",
        }]
    }

    fn steps(&self, _training_steps: usize) -> usize {
        self.steps
    }

    fn describe(&self) -> String {
        let form = if self.multistep {
            "multistep"
        } else {
            "singlestep"
        };
        format!("DPM-Solver-{} ({form}), {:?}", self.order, self.spacing)
    }

    fn validate(&self, check: &mut Checker, context: SamplerContext) {
        validate_solver(check, context, self.steps, self.spacing, self.order, 1..=3);
    }

    fn build(&self, _betas: &[f64], _defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
        Err(sampling_only("DPM-Solver"))
    }

    fn solver(&self, training_betas: &[f64]) -> Option<Result<Arc<dyn NetworkSampler>, EnvError>> {
        Some(
            grid(
                training_betas,
                self.steps,
                self.spacing,
                FinalLevel::SigmaMin,
            )
            .map(|grid| {
                Arc::new(DpmSolver::new(
                    grid,
                    self.order,
                    self.multistep,
                    Prediction::Noise,
                )) as Arc<dyn NetworkSampler>
            }),
        )
    }
}

/// DPM-Solver++ (Lu et al. 2022b) on the data prediction, ending at 0.
/// The default is the multistep order 2 of diffusers and of most users
/// ("DPM-Solver++(2M)").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpmSolverPpSampler {
    /// Network evaluations (NFE).
    pub steps: usize,
    /// Order 1 to 3.
    #[serde(default = "order_two")]
    pub order: usize,
    /// Multistep (earlier grid points) instead of singlestep (stages).
    #[serde(default = "default_true")]
    pub multistep: bool,
    /// Where the network times lie.
    #[serde(default)]
    pub spacing: SolverSpacing,
}

impl SamplerKind for DpmSolverPpSampler {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "DpmSolverPp(steps: 10, order: 2, multistep: true, spacing: Linspace)",
            summary: "DPM-Solver++ (Lu et al.) on the data prediction, (2M) by default; an ODE solver, samples trained models only",
        }]
    }

    fn steps(&self, _training_steps: usize) -> usize {
        self.steps
    }

    fn describe(&self) -> String {
        let form = if self.multistep { "M" } else { "S" };
        format!("DPM-Solver++({}{form}), {:?}", self.order, self.spacing)
    }

    fn validate(&self, check: &mut Checker, context: SamplerContext) {
        validate_solver(check, context, self.steps, self.spacing, self.order, 1..=3);
    }

    fn build(&self, _betas: &[f64], _defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
        Err(sampling_only("DPM-Solver++"))
    }

    fn solver(&self, training_betas: &[f64]) -> Option<Result<Arc<dyn NetworkSampler>, EnvError>> {
        Some(
            grid(training_betas, self.steps, self.spacing, FinalLevel::Zero).map(|grid| {
                Arc::new(DpmSolver::new(
                    grid,
                    self.order,
                    self.multistep,
                    Prediction::Data,
                )) as Arc<dyn NetworkSampler>
            }),
        )
    }
}

/// UniPC (Zhao et al. 2023): predictor and corrector on the data
/// prediction, ending at 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniPcSampler {
    /// Network evaluations (NFE).
    pub steps: usize,
    /// Order 1 to 3.
    #[serde(default = "order_two")]
    pub order: usize,
    /// B(h): bh2 (the default) or bh1.
    #[serde(default)]
    pub variant: UniPcVariant,
    /// Where the network times lie.
    #[serde(default)]
    pub spacing: SolverSpacing,
}

impl SamplerKind for UniPcSampler {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "UniPc(steps: 10, order: 2, variant: Bh2, spacing: Linspace)",
            summary: "UniPC (Zhao et al.): multistep predictor-corrector; an ODE solver, samples trained models only",
        }]
    }

    fn steps(&self, _training_steps: usize) -> usize {
        self.steps
    }

    fn describe(&self) -> String {
        format!(
            "UniPC-{} ({:?}), {:?}",
            self.order, self.variant, self.spacing
        )
    }

    fn validate(&self, check: &mut Checker, context: SamplerContext) {
        validate_solver(check, context, self.steps, self.spacing, self.order, 1..=3);
    }

    fn build(&self, _betas: &[f64], _defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
        Err(sampling_only("UniPC"))
    }

    fn solver(&self, training_betas: &[f64]) -> Option<Result<Arc<dyn NetworkSampler>, EnvError>> {
        Some(
            grid(training_betas, self.steps, self.spacing, FinalLevel::Zero).map(|grid| {
                Arc::new(UniPc::new(grid, self.order, self.variant)) as Arc<dyn NetworkSampler>
            }),
        )
    }
}

/// iPNDM (Zhang & Chen 2023): DDIM steps with Adams-Bashforth noise, up
/// to order 4, ending at 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpndmSampler {
    /// Network evaluations (NFE).
    pub steps: usize,
    /// The highest Adams-Bashforth order, 1 to 4. The default is 3, not
    /// diffusers' 4: at 10 NFE the fourth order diverged on our digits
    /// model on both the even and Karras grids (docs/decisions.md).
    #[serde(default = "order_three")]
    pub order: usize,
    /// Where the network times lie.
    #[serde(default)]
    pub spacing: SolverSpacing,
}

impl SamplerKind for IpndmSampler {
    fn listed() -> &'static [Registered] {
        &[Registered {
            ron: "Ipndm(steps: 10, order: 3, spacing: Linspace)",
            summary: "iPNDM (Zhang & Chen): DDIM steps with Adams-Bashforth noise; an ODE solver, samples trained models only",
        }]
    }

    fn steps(&self, _training_steps: usize) -> usize {
        self.steps
    }

    fn describe(&self) -> String {
        format!("iPNDM-{}, {:?}", self.order, self.spacing)
    }

    fn validate(&self, check: &mut Checker, context: SamplerContext) {
        validate_solver(check, context, self.steps, self.spacing, self.order, 1..=4);
    }

    fn build(&self, _betas: &[f64], _defaults: DdpmDefaults) -> Result<Schedule, EnvError> {
        Err(sampling_only("iPNDM"))
    }

    fn solver(&self, training_betas: &[f64]) -> Option<Result<Arc<dyn NetworkSampler>, EnvError>> {
        Some(
            grid(training_betas, self.steps, self.spacing, FinalLevel::Zero)
                .map(|grid| Arc::new(Ipndm::new(grid, self.order)) as Arc<dyn NetworkSampler>),
        )
    }
}
