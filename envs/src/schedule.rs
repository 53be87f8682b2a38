//! Beta schedules of the forward process and the per-step coefficients of
//! the samplers built on them: DDPM chains (full or sub-sampled) and the
//! generalized DDIM / FastDPM update (docs/conventions.md, section 2).

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
    /// Nichol & Dhariwal's cosine schedule (diffusers' `squaredcos_cap_v2`):
    /// `abar(t) = cos^2((t / T + s) / (1 + s) pi / 2)`,
    /// `beta_i = min(1 - abar(i / T) / abar((i - 1) / T), max_beta)`. It
    /// reaches pure noise (abar_T = 0 up to the cap) at any T, so it suits
    /// models trained with few steps.
    Cosine {
        /// The offset s that keeps the first betas from vanishing.
        #[serde(default = "cosine_offset")]
        s: f64,
        /// The largest beta (the last step's, at any T).
        #[serde(default = "cosine_max_beta")]
        max_beta: f64,
    },
}

fn cosine_offset() -> f64 {
    0.008
}

fn cosine_max_beta() -> f64 {
    0.999
}

impl BetaSchedule {
    /// Checks the schedule's parameters (`start`, `end` in (0, 1); the
    /// cosine's `s >= 0` and `max_beta` in (0, 1)).
    pub fn validate(&self, check: &mut crate::check::Checker) {
        match *self {
            BetaSchedule::Sigmoid { start, end } | BetaSchedule::Linear { start, end } => {
                check.in_unit("start", start);
                check.in_unit("end", end);
            }
            BetaSchedule::Cosine { s, max_beta } => {
                check.that(
                    s >= 0.0 && s.is_finite(),
                    "s",
                    format!("must be at least 0, got {s}"),
                );
                check.in_unit("max_beta", max_beta);
            }
        }
    }

    /// The betas beta_1..beta_T of a `steps`-step forward process.
    pub fn betas(&self, steps: usize) -> Result<Vec<f64>, EnvError> {
        if steps == 0 {
            return Err(invalid("steps", "must be at least 1".into()));
        }
        let (start, end) = match *self {
            BetaSchedule::Sigmoid { start, end } | BetaSchedule::Linear { start, end } => {
                (start, end)
            }
            BetaSchedule::Cosine { s, max_beta } => return cosine_betas(s, max_beta, steps),
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
                _ => start + (end - start) * lin(i),
            })
            .collect())
    }
}

fn cosine_betas(s: f64, max_beta: f64, steps: usize) -> Result<Vec<f64>, EnvError> {
    if !(s >= 0.0 && s.is_finite()) {
        return Err(invalid(
            "schedule.s",
            format!("must be at least 0, got {s}"),
        ));
    }
    if !(max_beta > 0.0 && max_beta < 1.0) {
        return Err(invalid(
            "schedule.max_beta",
            format!("must lie in (0, 1), got {max_beta}"),
        ));
    }
    let alpha_bar = |t: f64| {
        ((t + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    Ok((0..steps)
        .map(|i| {
            let (t1, t2) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect())
}

/// The variance Sigma_t of each DDPM sampling step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Variance {
    /// Sigma_t = beta_t (the toy setting; noise at every step, the last included).
    #[default]
    Beta,
    /// Sigma_t = betatilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t (zero at t = 1).
    PosteriorBetaTilde,
}

/// The standard deviation of a step the sampler takes without noise
/// (betatilde_1 = 0, FastDPM's and DDIM's last step, an eta = 0 step) in
/// fine-tuning: its log-density uses it and, by default, rollouts draw the
/// step with it, as the authors' SFT-PG finetune.py does (`0.001`, in its
/// sampling loop and log-probability). FastDPM itself samples such a step
/// without noise, as evaluation here does.
pub const DETERMINISTIC_STEP_STD: f64 = 1e-3;

/// How each step's mean and standard deviation follow from the cumulative
/// alphas a = abar_t (now) and a' = abar_{t-1} (next; 1 after the last step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepRule {
    /// DDPM's posterior mean (x_t - beta_t / sqrt(1 - a) eps) / sqrt(alpha_t),
    /// with beta_t = 1 - a / a', and the standard deviation of `Variance`.
    Ddpm(Variance),
    /// The update of DDIM and FastDPM, with kappa (DDIM's eta) in [0, 1]:
    /// sigma = kappa sqrt((1 - a') / (1 - a) (1 - a / a')),
    /// x' = sqrt(a'/a) x + (sqrt(1 - a' - sigma^2) - sqrt(1 - a) sqrt(a'/a)) eps + sigma z.
    /// kappa = 1 is DDPM on the chain with the betatilde variance; 0 is deterministic.
    Generalized {
        /// The noise scale kappa (eta).
        kappa: f64,
    },
}

/// The schedule of a `T'`-step sampler: the cumulative alphas it steps
/// through, the network time of each step (real-valued: FastDPM's VAR calls
/// the network between integer times), and the rule of each step. Every
/// step is affine in x and eps: mean = (x - eps_scale eps) x_scale. Steps are
/// numbered 1..=T' as in the paper, step T' being the first one sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    betas: Vec<f64>,
    alpha_bars: Vec<f64>,
    network_times: Vec<f64>,
    rule: StepRule,
    /// Standard deviations set by [`Schedule::with_sigmas`] (Analytic-DPM's).
    sigmas: Option<Vec<f64>>,
    /// The bound of the predicted x_0, set by [`Schedule::with_clipped_x0`].
    clip_x0: Option<f64>,
}

impl Schedule {
    /// A full (not sub-sampled) DDPM schedule with the given betas.
    pub fn new(betas: Vec<f64>, variance: Variance) -> Result<Self, EnvError> {
        let network_times = (0..betas.len()).map(|i| i as f64).collect();
        Self::from_parts(betas, network_times, variance)
    }

    /// A DDPM sampler on the increasing subsequence `tau` (1-based steps of the full
    /// schedule `full_betas`): beta'_i = 1 - abar_{tau_i} / abar_{tau_{i-1}},
    /// and the network is called with its original index tau_i.
    pub fn subsample(
        full_betas: &[f64],
        tau: &[usize],
        variance: Variance,
    ) -> Result<Self, EnvError> {
        let (betas, times) = subsequence(full_betas, tau)?;
        Self::from_parts(betas, times, variance)
    }

    /// A DDIM / FastDPM-STEP sampler on the increasing subsequence `tau` of
    /// the full schedule (1-based steps, as in [`Schedule::subsample`]).
    pub fn generalized_subsample(
        full_betas: &[f64],
        tau: &[usize],
        kappa: f64,
    ) -> Result<Self, EnvError> {
        let full_bars = cumulative(full_betas);
        let (_, times) = subsequence(full_betas, tau)?;
        let levels = tau.iter().map(|&s| full_bars[s - 1]).collect();
        Self::from_levels(levels, times, StepRule::Generalized { kappa })
    }

    /// A sampler through the cumulative alphas `alpha_bars` (decreasing:
    /// abar_1 > ... > abar_T', each in (0, 1)) with the network called at
    /// `network_times` (one per step, in the same order).
    pub fn from_levels(
        alpha_bars: Vec<f64>,
        network_times: Vec<f64>,
        rule: StepRule,
    ) -> Result<Self, EnvError> {
        if alpha_bars.is_empty() || alpha_bars.len() != network_times.len() {
            return Err(invalid(
                "steps",
                format!(
                    "{} levels for {} network times (need one each, at least one)",
                    alpha_bars.len(),
                    network_times.len()
                ),
            ));
        }
        let mut previous = 1.0;
        for &a in &alpha_bars {
            if !(a > 0.0 && a < previous) {
                return Err(invalid(
                    "schedule",
                    format!(
                        "cumulative alphas must decrease within (0, 1), found {a} after {previous}"
                    ),
                ));
            }
            previous = a;
        }
        if let StepRule::Generalized { kappa } = rule {
            if !(0.0..=1.0).contains(&kappa) {
                return Err(invalid("kappa", format!("must lie in [0, 1], got {kappa}")));
            }
        }
        let betas = std::iter::once(1.0)
            .chain(alpha_bars.iter().copied())
            .zip(alpha_bars.iter())
            .map(|(prev, a)| 1.0 - a / prev)
            .collect();
        Ok(Self {
            betas,
            alpha_bars,
            network_times,
            rule,
            sigmas: None,
            clip_x0: None,
        })
    }

    fn from_parts(
        betas: Vec<f64>,
        network_times: Vec<f64>,
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
            network_times,
            rule: StepRule::Ddpm(variance),
            sigmas: None,
            clip_x0: None,
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

    /// beta_t = 1 - abar_t / abar_{t-1} for t in 1..=T'.
    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t - 1]
    }

    /// The betas beta_1..beta_T'.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// abar_t for t in 0..=T' (abar_0 = 1).
    pub fn alpha_bar(&self, t: usize) -> f64 {
        if t == 0 {
            1.0
        } else {
            self.alpha_bars[t - 1]
        }
    }

    /// The network's time at sampler step t in 1..=T' (0-based, as
    /// embeddings are; real-valued for FastDPM's VAR).
    pub fn network_time(&self, t: usize) -> f64 {
        self.network_times[t - 1]
    }

    /// Whether every network time is a whole number (what the toy network's
    /// per-step embeddings need).
    pub fn has_integer_times(&self) -> bool {
        self.network_times.iter().all(|t| t.fract() == 0.0)
    }

    /// The rule of the steps.
    pub fn rule(&self) -> StepRule {
        self.rule
    }

    /// The same steps with the sampling standard deviations `sigmas`
    /// (sigma_1..sigma_T') in place of the rule's. Only a DDPM rule takes
    /// them: its mean does not depend on sigma.
    ///
    /// # Errors
    /// [`EnvError::Invalid`] for a generalized rule, a count other than T',
    /// or a negative or non-finite value.
    pub fn with_sigmas(mut self, sigmas: Vec<f64>) -> Result<Self, EnvError> {
        if !matches!(self.rule, StepRule::Ddpm(_)) {
            return Err(invalid(
                "sigmas",
                "only DDPM steps take set variances (a generalized step's mean depends on its sigma)".into(),
            ));
        }
        if sigmas.len() != self.len() {
            return Err(invalid(
                "sigmas",
                format!("{} values for {} steps", sigmas.len(), self.len()),
            ));
        }
        if let Some(bad) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(invalid(
                "sigmas",
                format!("must be finite and at least 0, found {bad}"),
            ));
        }
        self.sigmas = Some(sigmas);
        Ok(self)
    }

    /// The same steps with the x_0 that eps predicts, (x - sqrt(1 - abar) eps)
    /// / sqrt(abar), clamped to [-limit, limit] before the mean is taken (the
    /// noise consistent with the clamped x_0 replaces eps), as Ho et al.'s and
    /// the DDIM code's DDPM sampling and Bao et al.'s Analytic-DPM do for
    /// images in [-1, 1]. The samplers use it where `env.clip_x0` (or a
    /// sampler's own `clip_x0`) asks and for Analytic-DPM; FastDPM and DDIM
    /// steps never clip. The step is then affine in x and eps only where
    /// nothing is clamped.
    ///
    /// # Errors
    /// [`EnvError::Invalid`] for a bound that is not positive and finite.
    pub fn with_clipped_x0(mut self, limit: f64) -> Result<Self, EnvError> {
        if !(limit.is_finite() && limit > 0.0) {
            return Err(invalid("clip_x0", format!("must be positive, got {limit}")));
        }
        self.clip_x0 = Some(limit);
        Ok(self)
    }

    /// The sampling standard deviation sigma_t of step t in 1..=T'.
    pub fn sigma(&self, t: usize) -> f64 {
        if let Some(sigmas) = &self.sigmas {
            return sigmas[t - 1];
        }
        let posterior =
            || ((1.0 - self.alpha_bar(t - 1)) / (1.0 - self.alpha_bar(t)) * self.beta(t)).sqrt();
        match self.rule {
            StepRule::Ddpm(Variance::Beta) => self.beta(t).sqrt(),
            StepRule::Ddpm(Variance::PosteriorBetaTilde) => posterior(),
            StepRule::Generalized { kappa } => kappa * posterior(),
        }
    }

    /// (x_scale, eps_scale) of step t: mean = (x - eps_scale eps) x_scale.
    fn affine(&self, t: usize) -> (f64, f64) {
        match self.rule {
            StepRule::Ddpm(_) => (
                1.0 / (1.0 - self.beta(t)).sqrt(),
                self.beta(t) / (1.0 - self.alpha_bar(t)).sqrt(),
            ),
            StepRule::Generalized { .. } => {
                let (a, next) = (self.alpha_bar(t), self.alpha_bar(t - 1));
                let sigma = self.sigma(t);
                let x_scale = (next / a).sqrt();
                let eps_coef =
                    (1.0 - next - sigma * sigma).max(0.0).sqrt() - (1.0 - a).sqrt() * x_scale;
                (x_scale, -eps_coef / x_scale)
            }
        }
    }

    /// The per-step coefficients as float32 tensors on `device`, for batched use.
    pub fn coefficients(&self, device: Device) -> StepCoefficients {
        self.coefficients_as(device, Kind::Float)
    }

    /// The per-step coefficients as `kind` tensors on `device` (computed in
    /// float64, rounded once to `kind`).
    pub fn coefficients_as(&self, device: Device, kind: Kind) -> StepCoefficients {
        let per_step = |f: &dyn Fn(usize) -> f64| {
            let v: Vec<f64> = (1..=self.len()).map(f).collect();
            Tensor::from_slice(&v).to_kind(kind).to_device(device)
        };
        StepCoefficients {
            eps_scale: per_step(&|t| self.affine(t).1),
            x_scale: per_step(&|t| self.affine(t).0),
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
            network_times: per_step(&|t| self.network_time(t)),
            clip_x0: self.clip_x0,
        }
    }
}

/// The betas and 0-based network times of the sub-chain `tau` (1-based,
/// strictly increasing) of `full_betas`.
fn subsequence(full_betas: &[f64], tau: &[usize]) -> Result<(Vec<f64>, Vec<f64>), EnvError> {
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
    Ok((betas, tau.iter().map(|&s| (s - 1) as f64).collect()))
}

/// Per-step coefficients, each a `[T']` tensor indexed by `t - 1`.
#[derive(Debug)]
pub struct StepCoefficients {
    /// The factor of the predicted noise in the mean: mean = (x - eps_scale eps) x_scale
    /// (beta_t / sqrt(1 - abar_t) for DDPM).
    pub eps_scale: Tensor,
    /// The factor of the mean (1 / sqrt(alpha_t) for DDPM, sqrt(a'/a) in general).
    pub x_scale: Tensor,
    /// Sampling standard deviation sigma_t.
    pub sigma: Tensor,
    /// Standard deviation used in log-densities (sigma_t, floored where the step is deterministic).
    pub log_prob_sigma: Tensor,
    /// sqrt(abar_t), the data factor of q(x_t | x_0).
    pub sqrt_alpha_bar: Tensor,
    /// sqrt(1 - abar_t), the noise factor of q(x_t | x_0).
    pub sqrt_one_minus_alpha_bar: Tensor,
    /// The network's time at each step (float; whole numbers for DDPM chains).
    pub network_times: Tensor,
    /// Where set, the mean uses the x_0 predicted from eps clamped to
    /// [-limit, limit] (the noise consistent with it in place of eps).
    pub clip_x0: Option<f64>,
}

impl StepCoefficients {
    /// The element kind of the coefficient tensors.
    pub fn kind(&self) -> Kind {
        self.eps_scale.kind()
    }

    /// Handles on the same tensors.
    pub fn shallow_clone(&self) -> Self {
        Self {
            eps_scale: self.eps_scale.shallow_clone(),
            x_scale: self.x_scale.shallow_clone(),
            sigma: self.sigma.shallow_clone(),
            log_prob_sigma: self.log_prob_sigma.shallow_clone(),
            sqrt_alpha_bar: self.sqrt_alpha_bar.shallow_clone(),
            sqrt_one_minus_alpha_bar: self.sqrt_one_minus_alpha_bar.shallow_clone(),
            network_times: self.network_times.shallow_clone(),
            clip_x0: self.clip_x0,
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
            assert_eq!(sub.network_time(i + 1), (s - 1) as f64);
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
