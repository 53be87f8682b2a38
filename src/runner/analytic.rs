//! Analytic-DPM for a trained model: the Monte Carlo estimate of
//! Gamma_t = E ||eps_theta(x_t, t)||^2 / d over the training images, and the
//! policy that samples with the variances it gives
//! ([`envs::analytic::analytic_sigmas`]).

use agents::policy::DiffusionPolicy;
use envs::analytic::analytic_sigmas;
use envs::schedule::Schedule;
use tch::{Device, Kind, Tensor};

use crate::error::RunError;

/// Seed (xor the run's seed) of the Monte Carlo draws, so that a model's
/// Analytic-DPM variances are the same at every use.
const MONTE_CARLO_SEED: i64 = 0xA11A;

/// Gamma_t for each step t of `policy`'s sampler: the mean over `samples`
/// training images `data` (`[N, ...]` in [-1, 1]; all of them when fewer,
/// else a random subset per step) of ||eps_theta(x_t, t)||^2 / d, with
/// x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. `chunk` images go through
/// the network at once.
pub fn mean_square_eps(
    policy: &DiffusionPolicy,
    data: &Tensor,
    samples: usize,
    seed: i64,
    chunk: usize,
) -> Vec<f64> {
    tch::manual_seed(seed ^ MONTE_CARLO_SEED);
    let device = policy.var_store().device();
    let n = data.size()[0];
    let used = (samples as i64).min(n);
    let coefficients = policy.coefficients();
    let chunk = chunk.max(1) as i64;
    (1..=policy.horizon())
        .map(|t| {
            let rows = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).narrow(0, 0, used);
            let x0 = data.index_select(0, &rows).to_device(device);
            let index = Tensor::from_slice(&[t as i64 - 1]).to_device(device);
            let scale = |c: &Tensor| c.index_select(0, &index).double_value(&[0]);
            let (signal, noise) = (
                scale(&coefficients.sqrt_alpha_bar),
                scale(&coefficients.sqrt_one_minus_alpha_bar),
            );
            let mut total = 0.0;
            let mut start = 0;
            while start < used {
                let len = chunk.min(used - start);
                let part = x0.narrow(0, start, len);
                let x_t = &part * signal + part.randn_like() * noise;
                let steps = Tensor::full([len], t as i64, (Kind::Int64, device));
                let eps = tch::no_grad(|| policy.eps(&x_t, &steps));
                total += eps.square().sum(Kind::Double).double_value(&[]);
                start += len;
            }
            total / (used * data.numel() as i64 / n) as f64
        })
        .collect()
}

/// `policy` (loaded on the DDPM sub-sequence `base`) made to sample with
/// Analytic-DPM's variances, estimated from `data` (sigma_2 clipped to
/// `clip_pixel` pixel levels), and its predicted x_0
/// clamped to [-1, 1] in the mean, as the authors' sampler does.
///
/// # Errors
/// [`RunError::Env`] when the estimates are not finite (a diverged network).
pub fn with_analytic_variances(
    mut policy: DiffusionPolicy,
    base: Schedule,
    data: &Tensor,
    samples: usize,
    clip_pixel: f64,
    seed: i64,
    chunk: usize,
) -> Result<DiffusionPolicy, RunError> {
    let gammas = mean_square_eps(&policy, data, samples, seed, chunk);
    let sigmas = analytic_sigmas(&base, &gammas, clip_pixel)?;
    policy.set_schedule(&base.with_sigmas(sigmas)?.with_clipped_x0(1.0)?);
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agents::networks::EpsModel;
    use envs::sampler::{SamplerConfig, Spacing};
    use tch::nn::VarStore;

    const SCALE: f64 = 0.5;

    /// The exact noise prediction for data N(0, SCALE^2 I):
    /// E[eps | x_t] = sqrt(1 - a) x_t / (a SCALE^2 + 1 - a).
    struct GaussianOracle {
        alpha_bars: Vec<f64>,
    }

    impl EpsModel for GaussianOracle {
        fn eps(&self, x: &Tensor, net_steps: &Tensor) -> Tensor {
            let times = Vec::<f64>::try_from(net_steps.to_kind(Kind::Double)).unwrap();
            let factors: Vec<f32> = times
                .iter()
                .map(|&t| {
                    let a = self.alpha_bars[t as usize];
                    ((1.0 - a).sqrt() / (a * SCALE * SCALE + 1.0 - a)) as f32
                })
                .collect();
            x * Tensor::from_slice(&factors).view([-1, 1])
        }
    }

    #[test]
    fn gaussian_data_gets_its_exact_reverse_variances() {
        // libtorch's generator is shared: other tests draw only while they hold it.
        let _rng = envs::testing::seeded(3);
        let betas: Vec<f64> = (0..1000)
            .map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0)
            .collect();
        let alpha_bars: Vec<f64> = betas
            .iter()
            .scan(1.0, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc)
            })
            .collect();
        let sampler = SamplerConfig::AnalyticDpm(envs::sampler::AnalyticDpmSampler {
            steps: 10,
            spacing: Spacing::Uniform,
            mc_samples: 20_000,
            clip_pixel: 0.0,
        });
        let base = sampler.analytic_base(&betas).unwrap().unwrap();
        let vs = VarStore::new(Device::Cpu);
        let policy =
            DiffusionPolicy::with_model(&base, vs, Box::new(GaussianOracle { alpha_bars }));
        tch::manual_seed(3);
        let data = Tensor::randn([20_000, 4], (Kind::Float, Device::Cpu)) * SCALE;
        let gammas = mean_square_eps(&policy, &data, 20_000, 0, 5000);
        let policy =
            with_analytic_variances(policy, base.clone(), &data, 20_000, 0.0, 0, 5000).unwrap();
        // The policy samples with the variances of its estimates.
        let sigma =
            Vec::<f64>::try_from(policy.coefficients().sigma.to_kind(Kind::Double)).unwrap();
        let estimated = analytic_sigmas(&base, &gammas, 0.0).unwrap();
        for (ours, want) in sigma.iter().zip(&estimated) {
            assert!(
                (ours - want).abs() <= 1e-6 * want.max(1e-6),
                "{sigma:?} vs {estimated:?}"
            );
        }
        assert_eq!(sigma[0], 0.0, "the last step is deterministic");
        let s2 = SCALE * SCALE;
        let exact_gammas: Vec<f64> = (1..=10)
            .map(|t| {
                let a = base.alpha_bar(t);
                (1.0 - a) / (a * s2 + 1.0 - a)
            })
            .collect();
        // The Monte Carlo estimate (80,000 squared values per step).
        for (t, (g, exact)) in gammas.iter().zip(&exact_gammas).enumerate() {
            assert!(
                (g - exact).abs() < 0.01 * exact,
                "step {}: Gamma {g} vs {exact}",
                t + 1
            );
        }
        // With the exact Gammas, the variances are Var(x_{t-1} | x_t) of
        // Gaussian data, in closed form.
        let exact_sigmas = analytic_sigmas(&base, &exact_gammas, 0.0).unwrap();
        for t in 2..=10 {
            let (a, next) = (base.alpha_bar(t), base.alpha_bar(t - 1));
            let (v, v_next) = (a * s2 + 1.0 - a, next * s2 + 1.0 - next);
            let exact = v_next - a / next * v_next * v_next / v;
            let ours = exact_sigmas[t - 1].powi(2);
            assert!(
                (ours - exact).abs() < 1e-9 * exact,
                "t = {t}: sigma^2 {ours} vs {exact}"
            );
            // Above DDPM's betatilde wherever the data are not noise yet.
            assert!(ours > base.sigma(t).powi(2));
        }
    }
}
