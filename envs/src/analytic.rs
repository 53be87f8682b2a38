//! Analytic-DPM (Bao et al. 2022): the reverse variances that maximise the
//! likelihood of a DDPM sampler given its noise-prediction network, in
//! closed form up to one scalar per step estimated by Monte Carlo,
//!
//! Gamma_t = E_{x_0 ~ data, x_t ~ q(x_t | x_0)} ||eps_theta(x_t, t)||^2 / d.
//!
//! On a sub-sequence with cumulative alphas a = abar_t and a' = abar_{t-1}
//! (beta = 1 - a / a'), with the DDPM mean and lambda^2 = betatilde =
//! beta (1 - a') / (1 - a) (Analytic-DDPM), Theorem 1 gives
//!
//! sigma*^2 = lambda^2 + (sqrt((1 - a) / alpha) - sqrt(1 - a' - lambda^2))^2 (1 - Gamma_t),
//!
//! which is lambda^2 plus the variance of the predicted x_0,
//! (1 - a) / a (1 - Gamma_t), carried by the mean's x_0 coefficient
//! sqrt(a') beta / (1 - a). As in the authors' code, that variance is
//! clipped to [0, 1] (Theorem 2's bounds for data in [-1, 1]), the last
//! step (t = 1) outputs its mean without noise, and the second-to-last
//! step's standard deviation is clipped so that its noise stays within
//! `clip_pixel` pixel levels on average: sigma_2 <= clip_pixel 2/255
//! sqrt(pi/2) (their `clip_sigma_idx = 1`; `clip_pixel` 2 for linear and 1
//! for cosine schedules in their CIFAR-10 runs). The last step does not
//! denoise what that step adds.
//!
//! As in the authors' sampler, the runner also clamps the predicted x_0 to
//! [-1, 1] inside the mean ([`crate::schedule::Schedule::with_clipped_x0`]).

use crate::schedule::Schedule;
use crate::EnvError;

/// Analytic-DPM's standard deviations sigma_1..sigma_T' for the DDPM
/// sub-sequence `schedule`, from the Monte Carlo means `mean_square_eps`
/// (Gamma_1..Gamma_T', one per step); `clip_pixel` > 0 clips sigma_2 to
/// `clip_pixel` 2/255 sqrt(pi/2) (0: no clip).
///
/// # Errors
/// [`EnvError::Invalid`] when there is not one finite, non-negative Gamma
/// per step.
pub fn analytic_sigmas(
    schedule: &Schedule,
    mean_square_eps: &[f64],
    clip_pixel: f64,
) -> Result<Vec<f64>, EnvError> {
    if mean_square_eps.len() != schedule.len() {
        return Err(EnvError::Invalid {
            field: "mean_square_eps",
            reason: format!(
                "{} estimates for {} steps",
                mean_square_eps.len(),
                schedule.len()
            ),
        });
    }
    if let Some(bad) = mean_square_eps
        .iter()
        .find(|g| !(g.is_finite() && **g >= 0.0))
    {
        return Err(EnvError::Invalid {
            field: "mean_square_eps",
            reason: format!(
                "must be finite and at least 0, found {bad} (did the network diverge?)"
            ),
        });
    }
    Ok((1..=schedule.len())
        .map(|t| {
            if t == 1 {
                return 0.0;
            }
            let (a, next) = (schedule.alpha_bar(t), schedule.alpha_bar(t - 1));
            let beta = 1.0 - a / next;
            let lambda2 = beta * (1.0 - next) / (1.0 - a);
            let x0_variance = ((1.0 - a) / a * (1.0 - mean_square_eps[t - 1])).clamp(0.0, 1.0);
            let x0_coefficient2 = next * beta * beta / ((1.0 - a) * (1.0 - a));
            let sigma = (lambda2 + x0_coefficient2 * x0_variance).sqrt();
            if t == 2 && clip_pixel > 0.0 {
                sigma.min(clip_pixel * 2.0 / 255.0 * std::f64::consts::FRAC_PI_2.sqrt())
            } else {
                sigma
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Variance;

    fn sub_sequence() -> Schedule {
        let betas: Vec<f64> = (0..1000)
            .map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0)
            .collect();
        let tau: Vec<usize> = (0..10).map(|i| 1 + i * 111).collect();
        Schedule::subsample(&betas, &tau, Variance::PosteriorBetaTilde).unwrap()
    }

    #[test]
    fn equals_theorem_one_where_unclipped() {
        let s = sub_sequence();
        // 1 - Gamma at half the largest value that leaves the x_0 variance unclipped.
        let gammas: Vec<f64> = (1..=10)
            .map(|t| {
                let a = s.alpha_bar(t);
                1.0 - 0.5 * (a / (1.0 - a)).min(1.0)
            })
            .collect();
        let sigmas = analytic_sigmas(&s, &gammas, 0.0).unwrap();
        assert_eq!(sigmas[0], 0.0);
        for t in 2..=10 {
            let (a, next) = (s.alpha_bar(t), s.alpha_bar(t - 1));
            let alpha = a / next;
            let lambda2 = s.sigma(t).powi(2);
            let x0_variance = (1.0 - a) / a * (1.0 - gammas[t - 1]);
            assert!(
                x0_variance < 1.0,
                "t = {t} must be unclipped for this check"
            );
            let theorem = lambda2
                + (((1.0 - a) / alpha).sqrt() - (1.0 - next - lambda2).sqrt()).powi(2)
                    * (1.0 - gammas[t - 1]);
            let ours = sigmas[t - 1].powi(2);
            assert!(
                (ours - theorem).abs() <= 1e-12 * theorem,
                "t = {t}: {ours} vs {theorem}"
            );
        }
    }

    #[test]
    fn lies_between_the_bounds() {
        let s = sub_sequence();
        // A perfect noise predictor's magnitude (Gamma = 1): the lower bound betatilde.
        let low = analytic_sigmas(&s, &[1.0; 10], 0.0).unwrap();
        // Gamma = 0: the x_0 variance clipped at 1, the upper bound.
        let high = analytic_sigmas(&s, &[0.0; 10], 0.0).unwrap();
        for t in 2..=10 {
            assert!((low[t - 1] - s.sigma(t)).abs() < 1e-15);
            let (a, next) = (s.alpha_bar(t), s.alpha_bar(t - 1));
            let beta = 1.0 - a / next;
            let bound = s.sigma(t).powi(2)
                + next * beta * beta / (1.0 - a).powi(2) * ((1.0 - a) / a).min(1.0);
            assert!((high[t - 1].powi(2) - bound).abs() < 1e-12);
            assert!(high[t - 1] > low[t - 1]);
        }
        assert!(analytic_sigmas(&s, &[1.0; 9], 0.0).is_err());
        assert!(analytic_sigmas(&s, &[f64::NAN; 10], 0.0).is_err());
    }

    #[test]
    fn the_second_to_last_step_is_clipped_to_the_pixel_bound() {
        let s = sub_sequence();
        let free = analytic_sigmas(&s, &[0.5; 10], 0.0).unwrap();
        let clipped = analytic_sigmas(&s, &[0.5; 10], 2.0).unwrap();
        let bound = 2.0 * 2.0 / 255.0 * (std::f64::consts::PI / 2.0).sqrt();
        assert!(
            free[1] > bound,
            "this schedule's sigma_2 {} exceeds the bound",
            free[1]
        );
        assert!((clipped[1] - bound).abs() < 1e-15);
        for t in [0, 2, 3, 9] {
            assert_eq!(clipped[t], free[t]);
        }
    }
}
