//! The Gaussian policy step of a DDPM sampler: mean from predicted noise,
//! standard deviation, sampling and log-density (DESIGN.md section 3).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::schedule::StepCoefficients;

/// How a log-density is reduced over the data dimensions of one sample.
///
/// The paper's Eq. 15 sums. For REINFORCE a mean only rescales the gradient;
/// for ratio-based agents (PPO) a sum over thousands of dimensions turns small
/// per-dimension changes into overflowing ratios, so the choice is explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LogProbReduction {
    /// Sum over the data dimensions (the exact log-density).
    #[default]
    Sum,
    /// Mean over the data dimensions.
    Mean,
}

fn per_row(coef: &Tensor, steps: &Tensor, like: &Tensor) -> Tensor {
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, like.dim() - 1));
    coef.index_select(0, &(steps - 1)).view(shape.as_slice())
}

/// The mean mu(x_t, t) = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
/// for a batch `x` at the 1-based steps `steps` (`[B]`, int64).
pub fn mean_from_eps(coefs: &StepCoefficients, x: &Tensor, eps: &Tensor, steps: &Tensor) -> Tensor {
    let scale = per_row(&coefs.eps_scale, steps, x);
    let inv_sqrt_alpha = per_row(&coefs.inv_sqrt_alpha, steps, x);
    (x - scale * eps) * inv_sqrt_alpha
}

/// The sampling standard deviation of each row, broadcastable against `like`.
pub fn sigma(coefs: &StepCoefficients, steps: &Tensor, like: &Tensor) -> Tensor {
    per_row(&coefs.sigma, steps, like)
}

/// Draws x_{t-1} = mean + sigma_t * z.
pub fn sample(coefs: &StepCoefficients, mean: &Tensor, steps: &Tensor) -> Tensor {
    mean + sigma(coefs, steps, mean) * mean.randn_like()
}

/// The diagonal-Gaussian log-density of `x_next` under N(mean, sigma_t^2),
/// reduced over all but the batch dimension; a `[B]` tensor.
pub fn log_prob(
    coefs: &StepCoefficients,
    x_next: &Tensor,
    mean: &Tensor,
    steps: &Tensor,
    reduction: LogProbReduction,
) -> Tensor {
    let std = per_row(&coefs.log_prob_sigma, steps, mean);
    let z = (x_next - mean) / &std;
    let elementwise = z.square() * -0.5 - std.log() - 0.5 * (2.0 * std::f64::consts::PI).ln();
    let dims: Vec<i64> = (1..elementwise.dim() as i64).collect();
    match reduction {
        LogProbReduction::Sum => elementwise.sum_dim_intlist(dims.as_slice(), false, Kind::Float),
        LogProbReduction::Mean => elementwise.mean_dim(dims.as_slice(), false, Kind::Float),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{BetaSchedule, Schedule, Variance};
    use tch::Device;

    fn coefs() -> (Schedule, StepCoefficients) {
        let s = Schedule::new(
            BetaSchedule::Sigmoid {
                start: 1e-5,
                end: 1e-2,
            }
            .betas(10)
            .unwrap(),
            Variance::Beta,
        )
        .unwrap();
        let c = s.coefficients(Device::Cpu);
        (s, c)
    }

    #[test]
    fn mean_and_log_prob_match_a_hand_computation() {
        let (s, c) = coefs();
        let x = Tensor::from_slice(&[0.3f32, -0.2, 1.0, 2.0]).view([2, 2]);
        let eps = Tensor::from_slice(&[0.1f32, 0.4, -0.5, 0.0]).view([2, 2]);
        let steps = Tensor::from_slice(&[10i64, 3]);
        let mean = mean_from_eps(&c, &x, &eps, &steps);
        let m = Vec::<f32>::try_from(mean.flatten(0, -1)).unwrap();
        let hand = |xv: f64, e: f64, t: usize| {
            (xv - s.beta(t) / (1.0 - s.alpha_bar(t)).sqrt() * e) / (1.0 - s.beta(t)).sqrt()
        };
        let expect = [
            hand(0.3, 0.1, 10),
            hand(-0.2, 0.4, 10),
            hand(1.0, -0.5, 3),
            hand(2.0, 0.0, 3),
        ];
        for (a, b) in m.iter().zip(expect) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
        let x_next = Tensor::from_slice(&[0.25f32, -0.1, 0.9, 2.1]).view([2, 2]);
        let lp = Vec::<f32>::try_from(log_prob(&c, &x_next, &mean, &steps, LogProbReduction::Sum))
            .unwrap();
        let xn = [0.25, -0.1, 0.9, 2.1];
        for row in 0..2 {
            let t = if row == 0 { 10 } else { 3 };
            let sd = s.sigma(t);
            let hand_lp: f64 = (0..2)
                .map(|d| {
                    let z = (xn[row * 2 + d] - m[row * 2 + d] as f64) / sd;
                    -0.5 * z * z - sd.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
                })
                .sum();
            assert!(
                (lp[row] as f64 - hand_lp).abs() < 1e-3 * hand_lp.abs().max(1.0),
                "{} vs {hand_lp}",
                lp[row]
            );
        }
        let lp_mean =
            Vec::<f32>::try_from(log_prob(&c, &x_next, &mean, &steps, LogProbReduction::Mean))
                .unwrap();
        assert!((lp_mean[0] * 2.0 - lp[0]).abs() < 1e-3);
    }

    #[test]
    fn samples_have_the_step_standard_deviation() {
        let (s, c) = coefs();
        let _rng = crate::testing::seeded(7);
        let mean = Tensor::zeros([200_000, 2], (Kind::Float, Device::Cpu));
        let steps = Tensor::full([200_000], 10, (Kind::Int64, Device::Cpu));
        let x = sample(&c, &mean, &steps);
        let sd = x.std(true).double_value(&[]);
        assert!(
            (sd / s.sigma(10) - 1.0).abs() < 0.01,
            "{sd} vs {}",
            s.sigma(10)
        );
    }
}
