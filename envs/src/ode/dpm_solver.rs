//! DPM-Solver (Lu et al. 2022: integrates the noise prediction) and
//! DPM-Solver++ (Lu et al. 2022b: the data prediction), singlestep or
//! multistep, orders 1 to 3, in the "midpoint" form: diffusers'
//! `DPMSolverSinglestepScheduler` and `DPMSolverMultistepScheduler`.
//!
//! With h = lambda_t - lambda_s, a first-order step is
//! x_t = (alpha_t/alpha_s) x_s - sigma_t (e^h - 1) eps_s (noise), or
//! x_t = (sigma_t/sigma_s) x_s - alpha_t (e^-h - 1) x0_s (data);
//! higher orders add divided differences of earlier outputs. A multistep
//! solver takes them from the previous grid points; a singlestep one
//! restarts from the sample of its last first-order step, so that an order-k
//! step spans k grid intervals whose inner points are its stages (orders
//! [1, 2, 3] repeat: DPM-Solver-3 with its stages on the grid).

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{data_prediction, History, Level, NetworkSampler, NetworkSteps, SolverGrid};

/// What a DPM-Solver integrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prediction {
    /// The noise prediction eps (DPM-Solver).
    Noise,
    /// The data prediction x0 = (x - sigma eps)/alpha (DPM-Solver++).
    Data,
}

/// DPM-Solver or DPM-Solver++ on a grid.
#[derive(Debug, Clone, PartialEq)]
pub struct DpmSolver {
    grid: SolverGrid,
    order: usize,
    multistep: bool,
    prediction: Prediction,
    /// The order of each step (singlestep only).
    orders: Vec<usize>,
}

impl DpmSolver {
    /// A solver of `order` (1 to 3) integrating `prediction` on `grid`, at
    /// lower orders where diffusers lowers them: a multistep solver at the
    /// last steps of a short grid (fewer than 15) and on the step to a zero
    /// level; a singlestep one where the steps do not divide into its
    /// order's cycles or the last step ends at zero.
    ///
    /// # Panics
    /// When `order` is not 1, 2 or 3.
    pub fn new(grid: SolverGrid, order: usize, multistep: bool, prediction: Prediction) -> Self {
        assert!((1..=3).contains(&order), "DPM-Solver orders are 1 to 3");
        let orders = singlestep_orders(grid.len(), order, *grid.sigmas.last().unwrap() == 0.0);
        Self {
            grid,
            order,
            multistep,
            prediction,
            orders,
        }
    }
}

/// The order of each singlestep step: [1, 2, 3] (or [1, 2]) repeated;
/// when the steps do not divide evenly or the last step ends at 0, the
/// remainder at lower order and the last step first-order at 0 (diffusers'
/// `get_order_list`, whose `lower_order_final` is forced on in those cases).
fn singlestep_orders(steps: usize, order: usize, ends_at_zero: bool) -> Vec<usize> {
    let cycle: Vec<usize> = (1..=order).collect();
    let lower = !steps.is_multiple_of(order) || ends_at_zero;
    let mut orders = cycle.repeat(steps / order);
    if lower {
        match (order, steps % order) {
            (1, _) => {}
            (_, 0) => {
                orders.truncate(orders.len().saturating_sub(order));
                orders.extend(&cycle[..order - 1]);
                orders.push(1);
            }
            (_, rest) => orders.extend(&cycle[..rest]),
        }
    }
    if ends_at_zero {
        if let Some(last) = orders.last_mut() {
            *last = 1;
        }
    }
    orders
}

impl NetworkSampler for DpmSolver {
    fn grid(&self) -> &SolverGrid {
        &self.grid
    }

    fn start(&self) -> Box<dyn NetworkSteps + '_> {
        Box::new(DpmSolve {
            solver: self,
            outputs: History::new(self.order),
            index: 0,
            warm: 0,
            restart: None,
        })
    }
}

struct DpmSolve<'a> {
    solver: &'a DpmSolver,
    /// The converted outputs (eps or x0) of the last steps.
    outputs: History,
    index: usize,
    /// Earlier outputs a multistep step may use (diffusers' lower_order_nums).
    warm: usize,
    /// A singlestep solver's sample at its last first-order step.
    restart: Option<Tensor>,
}

impl DpmSolve<'_> {
    /// The order of the step at `index` of a multistep solver.
    fn multistep_order(&self) -> usize {
        let steps = self.solver.grid.len();
        let lower = steps < 15;
        let ends_at_zero = *self.solver.grid.sigmas.last().unwrap() == 0.0;
        let last = self.index == steps - 1 && (lower || ends_at_zero);
        let second_last = self.index + 2 == steps && lower;
        if self.solver.order == 1 || self.warm < 1 || last {
            1
        } else if self.solver.order == 2 || self.warm < 2 || second_last {
            2
        } else {
            3
        }
    }

    /// The step from `x` at grid position `from` (the start of the step)
    /// to `index + 1`, of `order`, with the last `order` outputs whose
    /// positions are `index`, `index - 1`, ...
    fn update(&self, x: &Tensor, order: usize, from: usize) -> Tensor {
        let grid = &self.solver.grid;
        let t = grid.level(self.index + 1);
        let s = grid.level(from);
        let h = t.lambda - s.lambda;
        // The start and its output: for a singlestep step the oldest stage.
        let (base, terms) = match self.solver.prediction {
            Prediction::Noise => (
                x * (t.alpha / s.alpha),
                // x_t = base - sigma_t (e^h - 1) D0 - ...
                Coefficients::noise(t, h),
            ),
            Prediction::Data => (x * (t.sigma / s.sigma), Coefficients::data(t, h)),
        };
        let m = |k: usize| self.outputs.back(k);
        let level = |k: usize| grid.level(self.index - k);
        match order {
            1 => base - m(0) * terms.phi1,
            2 if self.solver.multistep => {
                let r0 = (s.lambda - level(1).lambda) / h;
                let d1 = (m(0) - m(1)) * (1.0 / r0);
                base - m(0) * terms.phi1 - d1 * (0.5 * terms.phi1)
            }
            2 => {
                // Singlestep: from the oldest stage s1 = position index - 1.
                let s0 = level(0);
                let r0 = (s0.lambda - s.lambda) / h;
                let d1 = (m(0) - m(1)) * (1.0 / r0);
                base - m(1) * terms.phi1 - d1 * (0.5 * terms.phi1)
            }
            _ if self.solver.multistep => {
                let (s1, s2) = (level(1), level(2));
                let (h0, h1) = (s.lambda - s1.lambda, s1.lambda - s2.lambda);
                let (r0, r1) = (h0 / h, h1 / h);
                let d1_0 = (m(0) - m(1)) * (1.0 / r0);
                let d1_1 = (m(1) - m(2)) * (1.0 / r1);
                let d1 = &d1_0 + (&d1_0 - &d1_1) * (r0 / (r0 + r1));
                let d2 = (&d1_0 - &d1_1) * (1.0 / (r0 + r1));
                base - m(0) * terms.phi1 - d1 * terms.phi2 - d2 * terms.phi3
            }
            _ => {
                // Singlestep: stages at positions index - 1 and index, the
                // start at index - 2; the midpoint form uses the last stage.
                let s0 = level(0);
                let r0 = (s0.lambda - s.lambda) / h;
                let d1_1 = (m(0) - m(2)) * (1.0 / r0);
                base - m(2) * terms.phi1 - d1_1 * terms.phi2
            }
        }
    }
}

/// The factors of D0, D1 and D2 in a step to level t over h (subtracted).
struct Coefficients {
    phi1: f64,
    phi2: f64,
    phi3: f64,
}

impl Coefficients {
    /// sigma_t (e^h - 1), sigma_t ((e^h - 1)/h - 1), sigma_t ((e^h - 1 - h)/h^2 - 1/2).
    fn noise(t: Level, h: f64) -> Self {
        let e = h.exp_m1();
        Self {
            phi1: t.sigma * e,
            phi2: t.sigma * (e / h - 1.0),
            phi3: t.sigma * ((e - h) / (h * h) - 0.5),
        }
    }

    /// alpha_t (e^-h - 1), -alpha_t ((e^-h - 1)/h + 1), alpha_t ((e^-h - 1 + h)/h^2 - 1/2).
    fn data(t: Level, h: f64) -> Self {
        let e = (-h).exp_m1();
        Self {
            phi1: t.alpha * e,
            phi2: -t.alpha * (e / h + 1.0),
            phi3: t.alpha * ((e + h) / (h * h) - 0.5),
        }
    }
}

impl NetworkSteps for DpmSolve<'_> {
    fn step(&mut self, eps: &Tensor, x: &Tensor) -> Tensor {
        let level = self.solver.grid.level(self.index);
        let output = match self.solver.prediction {
            Prediction::Noise => eps.shallow_clone(),
            Prediction::Data => data_prediction(level, eps, x),
        };
        self.outputs.push(output);
        let next = if self.solver.multistep {
            let order = self.multistep_order();
            let next = self.update(x, order, self.index);
            self.warm = (self.warm + 1).min(self.solver.order);
            next
        } else {
            let mut order = self.solver.orders[self.index];
            while order > self.outputs.len() {
                order -= 1;
            }
            if order == 1 {
                self.restart = Some(x.shallow_clone());
            }
            let start = self
                .restart
                .as_ref()
                .expect("a first-order step comes first");
            self.update(start, order, self.index + 1 - order)
        };
        self.index += 1;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::singlestep_orders;

    #[test]
    fn singlestep_orders_follow_diffusers() {
        assert_eq!(
            singlestep_orders(10, 3, false),
            [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]
        );
        assert_eq!(singlestep_orders(9, 3, false), [1, 2, 3, 1, 2, 3, 1, 2, 3]);
        assert_eq!(singlestep_orders(9, 3, true), [1, 2, 3, 1, 2, 3, 1, 2, 1]);
        assert_eq!(singlestep_orders(8, 3, true), [1, 2, 3, 1, 2, 3, 1, 1]);
        assert_eq!(singlestep_orders(6, 2, false), [1, 2, 1, 2, 1, 2]);
        assert_eq!(singlestep_orders(6, 2, true), [1, 2, 1, 2, 1, 1]);
        assert_eq!(singlestep_orders(5, 2, false), [1, 2, 1, 2, 1]);
        assert_eq!(singlestep_orders(4, 1, true), [1, 1, 1, 1]);
    }
}
