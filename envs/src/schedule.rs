//! Beta schedules of the forward process and the per-step coefficients of the
//! DDPM sampler built on them (docs/conventions.md, section 2).

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::EnvError;

/// How the betas of a `T`-step forward process are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum BetaSchedule {
    /// `beta = sigmoid(linspace(-6, 6, T)) * (end - start) + start`, the toy schedule.
    Sigmoid {
        /// Smallest beta (approached at the first step).
        start: f64,
        /// Largest beta (approached at the last step).
        end: f64,
    },
    /// `beta = linspace(start, end, T)`, Ho et al.'s schedule (1e-4 .. 0.02 for images).
    Linear {
        /// First beta.
        start: f64,
        /// Last beta.
        end: f64,
    },
}

impl BetaSchedule {
    /// The betas beta_1..beta_T of a `steps`-step forward process.
    pub fn betas(&self, steps: usize) -> Result<Vec<f64>, EnvError> {
        if steps == 0 {
            return Err(invalid("steps", "must be at least 1".into()));
        }
        let (start, end) = match *self {
            BetaSchedule::Sigmoid { start, end } | BetaSchedule::Linear { start, end } => {
                (start, end)
            }
        };
        if !(start > 0.0 && end > 0.0 && start < 1.0 && end < 1.0) {
            return Err(invalid(
                "schedule",
                format!("betas must lie in (0, 1), got start {start}, end {end}"),
            ));
        }
        let lin = |i: usize| {
            if steps == 1 {
                0.0
            } else {
                i as f64 / (steps - 1) as f64
            }
        };
        Ok((0..steps)
            .map(|i| match self {
                BetaSchedule::Sigmoid { .. } => {
                    let z = -6.0 + 12.0 * lin(i);
                    1.0 / (1.0 + (-z).exp()) * (end - start) + start
                }
                BetaSchedule::Linear { .. } => start + (end - start) * lin(i),
            })
            .collect())
    }
}

/// The variance Sigma_t of each sampling step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Variance {
    /// Sigma_t = beta_t (the toy setting; noise at every step, the last included).
    #[default]
    Beta,
    /// Sigma_t = betatilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t (zero at t = 1).
    PosteriorBetaTilde,
}

/// The standard deviation used in log-densities where the sampling step
/// itself is deterministic (betatilde_1 = 0), as FastDPM does.
pub const DETERMINISTIC_STEP_STD: f64 = 1e-3;

/// The schedule of a `T'`-step sampler: betas, cumulative alphas, step
/// variances and, for sub-sampled samplers, the time index the network was
/// trained with at each step. Steps are numbered 1..=T' as in the paper.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    betas: Vec<f64>,
    alpha_bars: Vec<f64>,
    network_steps: Vec<i64>,
    variance: Variance,
}

impl Schedule {
    /// A full (not sub-sampled) schedule with the given betas.
    pub fn new(betas: Vec<f64>, variance: Variance) -> Result<Self, EnvError> {
        let network_steps = (0..betas.len() as i64).collect();
        Self::from_parts(betas, network_steps, variance)
    }

    /// A sampler on the increasing subsequence `tau` (1-based steps of the full
    /// schedule `full_betas`): beta'_i = 1 - abar_{tau_i} / abar_{tau_{i-1}},
    /// and the network is called with its original index tau_i.
    pub fn subsample(
        full_betas: &[f64],
        tau: &[usize],
        variance: Variance,
    ) -> Result<Self, EnvError> {
        if tau.is_empty() {
            return Err(invalid("tau", "the subsequence is empty".into()));
        }
        if tau.windows(2).any(|w| w[0] >= w[1])
            || tau[0] == 0
            || *tau.last().unwrap() > full_betas.len()
        {
            return Err(invalid(
                "tau",
                format!(
                    "must be strictly increasing within 1..={}, got {tau:?}",
                    full_betas.len()
                ),
            ));
        }
        let full_bars = cumulative(full_betas);
        let mut previous = 1.0;
        let mut betas = Vec::with_capacity(tau.len());
        for &s in tau {
            let bar = full_bars[s - 1];
            betas.push(1.0 - bar / previous);
            previous = bar;
        }
        let network_steps = tau.iter().map(|&s| s as i64 - 1).collect();
        Self::from_parts(betas, network_steps, variance)
    }

    fn from_parts(
        betas: Vec<f64>,
        network_steps: Vec<i64>,
        variance: Variance,
    ) -> Result<Self, EnvError> {
        if betas.is_empty() {
            return Err(invalid("steps", "must be at least 1".into()));
        }
        if let Some(b) = betas.iter().find(|b| !(**b > 0.0 && **b < 1.0)) {
            return Err(invalid(
                "schedule",
                format!("every beta must lie in (0, 1), found {b}"),
            ));
        }
        let alpha_bars = cumulative(&betas);
        Ok(Self {
            betas,
            alpha_bars,
            network_steps,
            variance,
        })
    }

    /// Number of sampling steps T'.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// beta_t for t in 1..=T'.
    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t - 1]
    }

    /// abar_t for t in 0..=T' (abar_0 = 1).
    pub fn alpha_bar(&self, t: usize) -> f64 {
        if t == 0 {
            1.0
        } else {
            self.alpha_bars[t - 1]
        }
    }

    /// The network's time index at sampler step t in 1..=T' (0-based, as embeddings are).
    pub fn network_step(&self, t: usize) -> i64 {
        self.network_steps[t - 1]
    }

    /// The sampling standard deviation sigma_t of step t in 1..=T'.
    pub fn sigma(&self, t: usize) -> f64 {
        match self.variance {
            Variance::Beta => self.beta(t).sqrt(),
            Variance::PosteriorBetaTilde => {
                ((1.0 - self.alpha_bar(t - 1)) / (1.0 - self.alpha_bar(t)) * self.beta(t)).sqrt()
            }
        }
    }

    /// The variance convention of this schedule.
    pub fn variance(&self) -> Variance {
        self.variance
    }

    /// The per-step coefficients as tensors on `device`, for batched use.
    pub fn coefficients(&self, device: Device) -> StepCoefficients {
        let per_step = |f: &dyn Fn(usize) -> f64| {
            let v: Vec<f64> = (1..=self.len()).map(f).collect();
            Tensor::from_slice(&v)
                .to_kind(Kind::Float)
                .to_device(device)
        };
        StepCoefficients {
            eps_scale: per_step(&|t| self.beta(t) / (1.0 - self.alpha_bar(t)).sqrt()),
            inv_sqrt_alpha: per_step(&|t| 1.0 / (1.0 - self.beta(t)).sqrt()),
            sigma: per_step(&|t| self.sigma(t)),
            log_prob_sigma: per_step(&|t| {
                let s = self.sigma(t);
                if s > 0.0 {
                    s
                } else {
                    DETERMINISTIC_STEP_STD
                }
            }),
            sqrt_alpha_bar: per_step(&|t| self.alpha_bar(t).sqrt()),
            sqrt_one_minus_alpha_bar: per_step(&|t| (1.0 - self.alpha_bar(t)).sqrt()),
            network_steps: Tensor::from_slice(&self.network_steps).to_device(device),
        }
    }
}

/// Per-step coefficients, each a `[T']` tensor indexed by `t - 1`.
#[derive(Debug)]
pub struct StepCoefficients {
    /// beta_t / sqrt(1 - abar_t), the factor of the predicted noise in the mean.
    pub eps_scale: Tensor,
    /// 1 / sqrt(alpha_t).
    pub inv_sqrt_alpha: Tensor,
    /// Sampling standard deviation sigma_t.
    pub sigma: Tensor,
    /// Standard deviation used in log-densities (sigma_t, floored where the step is deterministic).
    pub log_prob_sigma: Tensor,
    /// sqrt(abar_t), the data factor of q(x_t | x_0).
    pub sqrt_alpha_bar: Tensor,
    /// sqrt(1 - abar_t), the noise factor of q(x_t | x_0).
    pub sqrt_one_minus_alpha_bar: Tensor,
    /// The network's time index at each step (int64).
    pub network_steps: Tensor,
}

impl StepCoefficients {
    /// Handles on the same tensors.
    pub fn shallow_clone(&self) -> Self {
        Self {
            eps_scale: self.eps_scale.shallow_clone(),
            inv_sqrt_alpha: self.inv_sqrt_alpha.shallow_clone(),
            sigma: self.sigma.shallow_clone(),
            log_prob_sigma: self.log_prob_sigma.shallow_clone(),
            sqrt_alpha_bar: self.sqrt_alpha_bar.shallow_clone(),
            sqrt_one_minus_alpha_bar: self.sqrt_one_minus_alpha_bar.shallow_clone(),
            network_steps: self.network_steps.shallow_clone(),
        }
    }
}

fn cumulative(betas: &[f64]) -> Vec<f64> {
    betas
        .iter()
        .scan(1.0, |acc, b| {
            *acc *= 1.0 - b;
            Some(*acc)
        })
        .collect()
}

fn invalid(field: &'static str, reason: String) -> EnvError {
    EnvError::Invalid { field, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_schedule_matches_the_toy_formula() {
        let betas = BetaSchedule::Sigmoid {
            start: 1e-5,
            end: 1e-2,
        }
        .betas(10)
        .unwrap();
        assert_eq!(betas.len(), 10);
        let expect_first = 1.0 / (1.0 + 6f64.exp()) * (1e-2 - 1e-5) + 1e-5;
        assert!((betas[0] - expect_first).abs() < 1e-15);
        assert!((betas[9] - (1e-2 - (1e-2 - 1e-5) / (1.0 + 6f64.exp()))).abs() < 1e-15);
        let s = Schedule::new(betas.clone(), Variance::Beta).unwrap();
        let abar: f64 = betas.iter().map(|b| 1.0 - b).product();
        assert!((s.alpha_bar(10) - abar).abs() < 1e-15);
        // "Case 1" of the paper: the prior is far from q(x_T) at T = 10.
        assert!(s.alpha_bar(10) > 0.94);
    }

    #[test]
    fn linear_schedule_ends_where_asked() {
        let betas = BetaSchedule::Linear {
            start: 1e-4,
            end: 0.02,
        }
        .betas(1000)
        .unwrap();
        assert!((betas[0] - 1e-4).abs() < 1e-18 && (betas[999] - 0.02).abs() < 1e-15);
    }

    #[test]
    fn subsampling_keeps_the_cumulative_alphas_of_the_chosen_steps() {
        let full = BetaSchedule::Linear {
            start: 1e-4,
            end: 0.02,
        }
        .betas(1000)
        .unwrap();
        let full_schedule = Schedule::new(full.clone(), Variance::Beta).unwrap();
        let tau: Vec<usize> = (1..=10).map(|i| i * 100).collect();
        let sub = Schedule::subsample(&full, &tau, Variance::Beta).unwrap();
        for (i, &s) in tau.iter().enumerate() {
            assert!((sub.alpha_bar(i + 1) - full_schedule.alpha_bar(s)).abs() < 1e-12);
            assert_eq!(sub.network_step(i + 1), s as i64 - 1);
        }
        // The full sequence as "sub-sample" is the schedule itself.
        let all: Vec<usize> = (1..=1000).collect();
        let same = Schedule::subsample(&full, &all, Variance::Beta).unwrap();
        for t in [1, 500, 1000] {
            assert!((same.beta(t) - full_schedule.beta(t)).abs() < 1e-12);
        }
    }

    #[test]
    fn posterior_variance_is_zero_at_the_first_step_and_below_beta() {
        let betas = BetaSchedule::Linear {
            start: 1e-4,
            end: 0.02,
        }
        .betas(100)
        .unwrap();
        let s = Schedule::new(betas, Variance::PosteriorBetaTilde).unwrap();
        assert_eq!(s.sigma(1), 0.0);
        for t in 2..=100 {
            assert!(s.sigma(t) > 0.0 && s.sigma(t) < s.beta(t).sqrt());
        }
    }

    #[test]
    fn rejects_impossible_settings() {
        assert!(BetaSchedule::Sigmoid {
            start: 1e-5,
            end: 1e-2
        }
        .betas(0)
        .is_err());
        assert!(BetaSchedule::Linear {
            start: -1.0,
            end: 0.02
        }
        .betas(10)
        .is_err());
        let full = vec![0.01; 10];
        assert!(Schedule::subsample(&full, &[3, 2], Variance::Beta).is_err());
        assert!(Schedule::subsample(&full, &[0, 2], Variance::Beta).is_err());
        assert!(Schedule::subsample(&full, &[2, 11], Variance::Beta).is_err());
    }
}
