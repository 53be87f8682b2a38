//! The Gaussian policy step of a DDPM sampler: mean from predicted noise,
//! standard deviation, sampling and log-density (docs/conventions.md,
//! section 2).

use serde::{Deserialize, Serialize};
use tch::Tensor;

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

/// The per-step coefficients `coef` (`[T]`) picked for each row's 1-based
/// step and shaped to broadcast against `like` (`[B, 1, ...]`).
pub fn per_row(coef: &Tensor, steps: &Tensor, like: &Tensor) -> Tensor {
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, like.dim() - 1));
    coef.index_select(0, &(steps - 1)).view(shape.as_slice())
}

/// The mean (x_t - eps_scale_t eps) x_scale_t of a batch `x` at the 1-based
/// steps `steps` (`[B]`, int64); for DDPM, (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t).
/// With `clip_x0`, eps is first replaced by the noise consistent with the
/// clamped prediction of x_0.
pub fn mean_from_eps(coefs: &StepCoefficients, x: &Tensor, eps: &Tensor, steps: &Tensor) -> Tensor {
    let scale = per_row(&coefs.eps_scale, steps, x);
    let x_scale = per_row(&coefs.x_scale, steps, x);
    match coefs.clip_x0 {
        None => (x - scale * eps) * x_scale,
        Some(limit) => {
            let signal = per_row(&coefs.sqrt_alpha_bar, steps, x);
            let noise = per_row(&coefs.sqrt_one_minus_alpha_bar, steps, x);
            let x0 = ((x - &noise * eps) / &signal).clamp(-limit, limit);
            let eps = (x - signal * x0) / noise;
            (x - scale * eps) * x_scale
        }
    }
}

/// The sampling standard deviation of each row, broadcastable against `like`.
pub fn sigma(coefs: &StepCoefficients, steps: &Tensor, like: &Tensor) -> Tensor {
    per_row(&coefs.sigma, steps, like)
}

/// Draws x_{t-1} = mean + sigma_t * z.
pub fn sample(coefs: &StepCoefficients, mean: &Tensor, steps: &Tensor) -> Tensor {
    sample_with_std(mean, &sigma(coefs, steps, mean))
}

/// Draws mean + std * z with `std` broadcastable against `mean`
/// (differentiable in both: the reparameterisation).
pub fn sample_with_std(mean: &Tensor, std: &Tensor) -> Tensor {
    mean + std * mean.randn_like()
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
    log_prob_with_std(x_next, mean, &std, reduction)
}

/// The diagonal-Gaussian log-density of `x_next` under N(mean, std^2) with
/// `std` broadcastable against `mean`, reduced to `[B]`.
pub fn log_prob_with_std(
    x_next: &Tensor,
    mean: &Tensor,
    std: &Tensor,
    reduction: LogProbReduction,
) -> Tensor {
    let z = (x_next - mean) / std;
    let elementwise = z.square() * -0.5 - std.log() - 0.5 * (2.0 * std::f64::consts::PI).ln();
    reduce(&elementwise, reduction)
}

/// KL(N(mean, std^2) || N(ref_mean, ref_std^2)) of diagonal Gaussians,
/// reduced over all but the batch dimension; a `[B]` tensor.
pub fn kl_divergence(
    mean: &Tensor,
    std: &Tensor,
    ref_mean: &Tensor,
    ref_std: &Tensor,
    reduction: LogProbReduction,
) -> Tensor {
    let ratio = (std / ref_std).square();
    let shift = ((mean - ref_mean) / ref_std).square();
    let elementwise = (ratio.shallow_clone() + shift - 1.0 - ratio.log()) * 0.5;
    reduce(&elementwise.expand_as(mean), reduction)
}

fn reduce(elementwise: &Tensor, reduction: LogProbReduction) -> Tensor {
    let dims: Vec<i64> = (1..elementwise.dim() as i64).collect();
    match reduction {
        LogProbReduction::Sum => {
            elementwise.sum_dim_intlist(dims.as_slice(), false, elementwise.kind())
        }
        LogProbReduction::Mean => elementwise.mean_dim(dims.as_slice(), false, elementwise.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{BetaSchedule, Schedule, Variance};
    use tch::{Device, Kind};

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

    #[test]
    fn kl_matches_the_closed_form_and_vanishes_at_equality() {
        let mean = Tensor::from_slice(&[0.5f32, -1.0]).view([1, 2]);
        let std = Tensor::from_slice(&[0.2f32]).view([1, 1]);
        let ref_mean = Tensor::from_slice(&[0.0f32, -1.0]).view([1, 2]);
        let ref_std = Tensor::from_slice(&[0.4f32]).view([1, 1]);
        let kl = kl_divergence(&mean, &std, &ref_mean, &ref_std, LogProbReduction::Sum)
            .double_value(&[0]);
        let per_dim = |dm: f64| (0.4f64 / 0.2).ln() + (0.04 + dm * dm) / (2.0 * 0.16) - 0.5;
        let hand = per_dim(0.5) + per_dim(0.0);
        assert!((kl - hand).abs() < 1e-5, "{kl} vs {hand}");
        let zero =
            kl_divergence(&mean, &std, &mean, &std, LogProbReduction::Mean).double_value(&[0]);
        assert!(zero.abs() < 1e-7);
    }

    #[test]
    fn a_clipped_x0_gives_the_posterior_mean_of_the_clamped_prediction() {
        let betas: Vec<f64> = (0..100).map(|i| 1e-4 + 0.02 * i as f64 / 99.0).collect();
        let tau = [1, 34, 67, 100];
        let plain = Schedule::subsample(&betas, &tau, Variance::PosteriorBetaTilde).unwrap();
        let clipped = plain.clone().with_clipped_x0(1.0).unwrap();
        let (c, k) = (
            plain.coefficients(Device::Cpu),
            clipped.coefficients(Device::Cpu),
        );
        tch::manual_seed(0);
        let x = Tensor::randn([6, 3], (tch::Kind::Float, Device::Cpu)) * 2.0;
        let eps = Tensor::randn([6, 3], (tch::Kind::Float, Device::Cpu));
        for t in 1..=4i64 {
            let steps = Tensor::full([6], t, (tch::Kind::Int64, Device::Cpu));
            let (a, next) = (plain.alpha_bar(t as usize), plain.alpha_bar(t as usize - 1));
            let beta = 1.0 - a / next;
            let x0 = ((&x - (1.0 - a).sqrt() * &eps) / a.sqrt()).clamp(-1.0, 1.0);
            // DDPM's posterior mean from x_0 and x_t.
            let want = &x0 * (next.sqrt() * beta / (1.0 - a))
                + &x * ((1.0 - beta).sqrt() * (1.0 - next) / (1.0 - a));
            let got = mean_from_eps(&k, &x, &eps, &steps);
            let error = (&got - &want).abs().max().double_value(&[]);
            assert!(error < 1e-5, "t = {t}: {error}");
            // Without clamping the two rules agree where nothing is clamped.
            let inside = x0.abs().lt(1.0).all().int64_value(&[]) == 1;
            if inside {
                assert!(mean_from_eps(&c, &x, &eps, &steps).allclose(&got, 1e-5, 1e-5, false));
            }
        }
    }
}
