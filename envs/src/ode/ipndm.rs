//! iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with
//! Exponential Integrator"; PNDM of Liu et al. 2022 with lower-order
//! Adams-Bashforth warm-up instead of Runge-Kutta): DDIM steps whose noise
//! prediction is the Adams-Bashforth combination of the last (up to four)
//! ones, 1, (3, -1)/2, (23, -16, 5)/12, (55, -59, 37, -9)/24, the form of
//! diffusers' `IPNDMScheduler` on this model's noise levels.
//!
//! In the DDIM variables xbar = x/alpha, s = sigma/alpha the step is
//! xbar_{i+1} = xbar_i + (s_{i+1} - s_i) e: explicit Adams-Bashforth on
//! d xbar / d s = eps.

use tch::Tensor;

use super::{History, NetworkSampler, NetworkSteps, SolverGrid};

/// The Adams-Bashforth weights of orders 1 to 4, newest first.
const ADAMS_BASHFORTH: [&[f64]; 4] = [
    &[1.0],
    &[3.0 / 2.0, -1.0 / 2.0],
    &[23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
    &[55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
];

/// iPNDM of at most `order` (1 to 4) on a grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Ipndm {
    grid: SolverGrid,
    order: usize,
}

impl Ipndm {
    /// iPNDM on `grid` with Adams-Bashforth up to `order` (diffusers: 4).
    ///
    /// # Panics
    /// When `order` is not 1 to 4.
    pub fn new(grid: SolverGrid, order: usize) -> Self {
        assert!((1..=4).contains(&order), "iPNDM's orders are 1 to 4");
        Self { grid, order }
    }
}

impl NetworkSampler for Ipndm {
    fn grid(&self) -> &SolverGrid {
        &self.grid
    }

    fn start(&self) -> Box<dyn NetworkSteps + '_> {
        Box::new(IpndmSolve {
            solver: self,
            eps: History::new(self.order),
            index: 0,
        })
    }
}

struct IpndmSolve<'a> {
    solver: &'a Ipndm,
    eps: History,
    index: usize,
}

impl NetworkSteps for IpndmSolve<'_> {
    fn step(&mut self, eps: &Tensor, x: &Tensor) -> Tensor {
        self.eps.push(eps.shallow_clone());
        let weights = ADAMS_BASHFORTH[self.eps.len() - 1];
        let mut combined = self.eps.back(0) * weights[0];
        for (k, w) in weights.iter().enumerate().skip(1) {
            combined += self.eps.back(k) * *w;
        }
        let grid = &self.solver.grid;
        let (s, t) = (grid.level(self.index), grid.level(self.index + 1));
        let data = (x - &combined * s.sigma) / s.alpha;
        self.index += 1;
        data * t.alpha + combined * t.sigma
    }
}
