//! UniPC (Zhao et al. 2023): a multistep predictor (UniP) and a corrector
//! (UniC) that reuses the next step's network evaluation, on the data
//! prediction, with B(h) = e^-h - 1 (bh2) or -h (bh1): diffusers'
//! `UniPCMultistepScheduler` with `predict_x0`.
//!
//! At each grid point the corrector first refines the sample that the last
//! predictor step reached, with the new data prediction; the predictor then
//! steps from the refined sample. The order ramps up from 1 (warm-up) and
//! falls to the number of steps left at the end.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{data_prediction, History, NetworkSampler, NetworkSteps, SolverGrid};

/// UniPC's B(h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum UniPcVariant {
    /// B(h) = -h.
    Bh1,
    /// B(h) = e^-h - 1 (the authors' choice for few steps).
    #[default]
    Bh2,
}

/// UniPC of `order` on a grid.
#[derive(Debug, Clone, PartialEq)]
pub struct UniPc {
    grid: SolverGrid,
    order: usize,
    variant: UniPcVariant,
}

impl UniPc {
    /// UniPC-`order` (at least 1) with `variant` on `grid`.
    ///
    /// # Panics
    /// When `order` is 0.
    pub fn new(grid: SolverGrid, order: usize, variant: UniPcVariant) -> Self {
        assert!(order >= 1, "UniPC's order is at least 1");
        Self {
            grid,
            order,
            variant,
        }
    }
}

impl NetworkSampler for UniPc {
    fn grid(&self) -> &SolverGrid {
        &self.grid
    }

    fn start(&self) -> Box<dyn NetworkSteps + '_> {
        Box::new(UniPcSolve {
            solver: self,
            outputs: History::new(self.order),
            index: 0,
            warm: 0,
            last: None,
        })
    }
}

struct UniPcSolve<'a> {
    solver: &'a UniPc,
    /// Data predictions at the last grid points.
    outputs: History,
    index: usize,
    /// Earlier outputs the predictor may use (diffusers' lower_order_nums).
    warm: usize,
    /// The sample the last predictor step started from, and its order.
    last: Option<(Tensor, usize)>,
}

/// The weights rho solving R rho = b for UniPC's divided differences at
/// ratios `rks` (the last one 1), over a step of hh = -h.
struct Weights {
    /// e^hh - 1.
    h_phi_1: f64,
    /// B(h).
    b_h: f64,
    /// b_k = h phi_{k+1}(hh) k! / B(h), k = 1 .. order.
    b: Vec<f64>,
}

impl Weights {
    fn new(hh: f64, order: usize, variant: UniPcVariant) -> Self {
        let h_phi_1 = hh.exp_m1();
        let b_h = match variant {
            UniPcVariant::Bh1 => hh,
            UniPcVariant::Bh2 => hh.exp_m1(),
        };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        Self { h_phi_1, b_h, b }
    }
}

/// Solves the Vandermonde-type system sum_j rks_j^(i) rho_j = b_i
/// (i = 0 .. n-1) by Gaussian elimination with partial pivoting.
fn solve_powers(rks: &[f64], b: &[f64]) -> Vec<f64> {
    let n = rks.len();
    let mut a: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut row: Vec<f64> = rks.iter().map(|r| r.powi(i as i32)).collect();
            row.push(b[i]);
            row
        })
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .expect("a non-empty system");
        a.swap(col, pivot);
        let (top, below) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in below.iter_mut() {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
        }
    }
    let mut rho = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| a[i][k] * rho[k]).sum();
        rho[i] = (a[i][n] - s) / a[i][i];
    }
    rho
}

impl UniPcSolve<'_> {
    /// The ratios r_k = (lambda_{s0 - k} - lambda_s0)/h and divided
    /// differences D1_k = (m_k - m_0)/r_k (m_k: the k-th output before the
    /// last, at grid position s0 - k), k = 1 .. order - 1.
    fn differences(&self, order: usize, s0: usize, h: f64) -> (Vec<f64>, Vec<Tensor>) {
        let grid = &self.solver.grid;
        let lambda_s0 = grid.level(s0).lambda;
        let m0 = self.outputs.back(0);
        (1..order)
            .map(|k| {
                let r = (grid.level(s0 - k).lambda - lambda_s0) / h;
                (r, (self.outputs.back(k) - m0) * (1.0 / r))
            })
            .unzip()
    }

    /// UniC: the sample at the current point refined with its new data
    /// prediction `model_t`, from `last` (the previous point) at `order`.
    fn correct(&self, model_t: &Tensor, last: &Tensor, order: usize) -> Tensor {
        let grid = &self.solver.grid;
        let (t, s0) = (grid.level(self.index), grid.level(self.index - 1));
        let h = t.lambda - s0.lambda;
        let m0 = self.outputs.back(0);
        let (mut rks, d1s) = self.differences(order, self.index - 1, h);
        rks.push(1.0);
        let w = Weights::new(-h, order, self.solver.variant);
        let rhos = if order == 1 {
            vec![0.5]
        } else {
            solve_powers(&rks, &w.b)
        };
        let mut x = last * (t.sigma / s0.sigma) - m0 * (t.alpha * w.h_phi_1);
        let mut correction = (model_t - m0) * rhos[order - 1];
        for (rho, d) in rhos.iter().zip(&d1s) {
            correction += d * *rho;
        }
        x -= correction * (t.alpha * w.b_h);
        x
    }

    /// UniP: the step from `x` at the current point to the next at `order`.
    fn predict(&self, x: &Tensor, order: usize) -> Tensor {
        let grid = &self.solver.grid;
        let (t, s0) = (grid.level(self.index + 1), grid.level(self.index));
        let h = t.lambda - s0.lambda;
        let m0 = self.outputs.back(0);
        let mut next = x * (t.sigma / s0.sigma) - m0 * (t.alpha * (-h).exp_m1());
        if order > 1 {
            let (mut rks, d1s) = self.differences(order, self.index, h);
            rks.push(1.0);
            let w = Weights::new(-h, order, self.solver.variant);
            let rhos = if order == 2 {
                vec![0.5]
            } else {
                solve_powers(&rks[..order - 1], &w.b[..order - 1])
            };
            let mut prediction = d1s[0].zeros_like();
            for (rho, d) in rhos.iter().zip(&d1s) {
                prediction += d * *rho;
            }
            next -= prediction * (t.alpha * w.b_h);
        }
        next
    }
}

impl NetworkSteps for UniPcSolve<'_> {
    fn step(&mut self, eps: &Tensor, x: &Tensor) -> Tensor {
        let grid = &self.solver.grid;
        let model = data_prediction(grid.level(self.index), eps, x);
        let x = match self.last.take() {
            Some((last, order)) if self.index > 0 => self.correct(&model, &last, order),
            _ => x.shallow_clone(),
        };
        self.outputs.push(model);
        let left = grid.len() - self.index;
        let order = self.solver.order.min(left).min(self.warm + 1);
        let next = self.predict(&x, order);
        self.last = Some((x, order));
        self.warm = (self.warm + 1).min(self.solver.order);
        self.index += 1;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::solve_powers;

    #[test]
    fn the_small_systems_are_solved() {
        // rows: r^0, r^1, r^2 at r = (-1, 0.5, 1)
        let rks: [f64; 3] = [-1.0, 0.5, 1.0];
        let rho: [f64; 3] = [0.3, -0.2, 0.7];
        let b: Vec<f64> = (0..3i32)
            .map(|i| rks.iter().zip(&rho).map(|(r, p)| r.powi(i) * p).sum())
            .collect();
        let got = solve_powers(&rks, &b);
        for (g, want) in got.iter().zip(rho) {
            assert!((g - want).abs() < 1e-12, "{got:?}");
        }
    }
}
