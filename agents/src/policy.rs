//! A DDPM sampler as a Gaussian policy over the diffusion MDP.

use envs::diffusion::{ChainState, DiffusionEnv};
use envs::gaussian::{self, LogProbReduction};
use envs::ode::NetworkSampler;
use envs::rows::Rows;
use envs::schedule::{Schedule, StepCoefficients};
use envs::Step;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tch::nn::VarStore;

use tch::{Device, Kind, Tensor};

use crate::agent::Critics;
use crate::networks::{EpsModel, ToyEpsNet};
use crate::unet::{UNet, UNetConfig};
use crate::Learn;
use crate::{Agent, AgentError, UpdateStats};

/// Name of the learned per-step log standard deviation in the generator's variables.
pub const LOG_STD_VAR: &str = "variance.log_std";

/// How a policy's network was built, so that a copy can be made.
#[derive(Debug, Clone, PartialEq)]
enum Architecture {
    Toy {
        dim: i64,
        width: i64,
        network_steps: i64,
    },
    UNet(UNetConfig),
    Custom,
}

impl Architecture {
    /// A fresh network of this architecture under `vs`.
    fn build(&self, vs: &VarStore) -> Option<Box<dyn EpsModel>> {
        match self {
            Architecture::Toy {
                dim,
                width,
                network_steps,
            } => Some(Box::new(ToyEpsNet::new(
                &vs.root(),
                *dim,
                *width,
                *network_steps,
            ))),
            Architecture::UNet(config) => Some(Box::new(UNet::new(&vs.root(), config))),
            Architecture::Custom => None,
        }
    }
}

/// Which standard deviation the chains of a fine-tuning rollout are drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RolloutStd {
    /// The sampler's own (0 at a deterministic step), as evaluation draws them.
    #[default]
    Sampler,
    /// The std of the step's log-density: a deterministic step is drawn with
    /// [`envs::schedule::DETERMINISTIC_STEP_STD`] (the authors' finetune.py).
    Density,
}

/// The learned standard deviation: sigma_t = max(exp(log_std_t), floor).
struct LearnedStd {
    log_std: Tensor,
    floor: f64,
}

/// pi_theta(x_t | x_{t+1}) = N(mu_theta(x_{t+1}, t+1), Sigma_{t+1}): the mean from
/// an eps-predicting network; the variance fixed by the schedule or, after
/// [`DiffusionPolicy::learn_variance`], a learned per-step standard deviation.
pub struct DiffusionPolicy {
    vs: VarStore,
    net: Box<dyn EpsModel>,
    schedule: Schedule,
    coefficients: StepCoefficients,
    rollout_std: RolloutStd,
    architecture: Architecture,
    learned_std: Option<LearnedStd>,
    /// Chains whose noise prediction is computed at once when acting
    /// without gradients (`None`: the whole batch).
    act_chunk: Option<i64>,
    /// An ODE solver that samples instead of the schedule's steps.
    solver: Option<Arc<dyn NetworkSampler>>,
    /// Images the network has been evaluated on (forward passes).
    evaluations: AtomicU64,
}

impl DiffusionPolicy {
    /// A policy with the toy eps-network for `dim`-dimensional data, one
    /// embedding per step of `schedule`'s network time indices.
    pub fn toy(
        schedule: &Schedule,
        dim: i64,
        width: i64,
        network_steps: i64,
        device: Device,
    ) -> Self {
        let vs = VarStore::new(device);
        let net = ToyEpsNet::new(&vs.root(), dim, width, network_steps);
        Self {
            coefficients: schedule.coefficients(device),
            schedule: schedule.clone(),
            rollout_std: RolloutStd::Sampler,
            net: Box::new(net),
            vs,
            architecture: Architecture::Toy {
                dim,
                width,
                network_steps,
            },
            learned_std: None,
            act_chunk: None,
            solver: None,
            evaluations: AtomicU64::new(0),
        }
    }

    /// A policy with the DDPM U-Net of `config` (images of shape
    /// `[in_channels, resolution, resolution]`).
    pub fn unet(schedule: &Schedule, config: &UNetConfig, device: Device) -> Self {
        let vs = VarStore::new(device);
        let net = UNet::new(&vs.root(), config);
        Self {
            coefficients: schedule.coefficients(device),
            schedule: schedule.clone(),
            rollout_std: RolloutStd::Sampler,
            net: Box::new(net),
            vs,
            architecture: Architecture::UNet(config.clone()),
            learned_std: None,
            act_chunk: None,
            solver: None,
            evaluations: AtomicU64::new(0),
        }
    }

    /// A policy around any eps-model whose variables live in `vs`.
    pub fn with_model(schedule: &Schedule, vs: VarStore, net: Box<dyn EpsModel>) -> Self {
        Self {
            coefficients: schedule.coefficients(vs.device()),
            schedule: schedule.clone(),
            rollout_std: RolloutStd::Sampler,
            net,
            vs,
            architecture: Architecture::Custom,
            learned_std: None,
            act_chunk: None,
            solver: None,
            evaluations: AtomicU64::new(0),
        }
    }

    /// Replaces the sampler's per-step coefficients by those of `schedule`,
    /// keeping the network: how variances estimated for a trained model
    /// (Analytic-DPM's) reach it.
    ///
    /// # Panics
    /// When `schedule` has another number of steps than the policy.
    pub fn set_schedule(&mut self, schedule: &Schedule) {
        assert_eq!(
            schedule.len(),
            self.horizon(),
            "a schedule of {} steps for a policy of {}",
            schedule.len(),
            self.horizon()
        );
        self.coefficients = schedule.coefficients_as(self.vs.device(), self.coefficients.kind());
        self.schedule = schedule.clone();
    }

    /// Converts the network's variables and the sampler's coefficients to
    /// `kind` (`Kind::Double` for float64 sampling and gradients; the
    /// coefficients are computed in float64 and rounded once to `kind`).
    pub fn set_kind(&mut self, kind: Kind) {
        match kind {
            Kind::Double => self.vs.double(),
            Kind::Half => self.vs.half(),
            Kind::BFloat16 => self.vs.bfloat16(),
            _ => self.vs.float(),
        }
        self.coefficients = self.schedule.coefficients_as(self.vs.device(), kind);
    }

    /// The sampler's schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Which standard deviation [`DiffusionPolicy::act_in_rollout`] draws with.
    pub fn set_rollout_std(&mut self, rollout_std: RolloutStd) {
        self.rollout_std = rollout_std;
    }

    /// Whether sampler step `t` (1-based) draws no noise: a fixed variance
    /// of 0 (FastDPM's and DDIM's last step, betatilde_1, DDIM eta 0).
    pub fn is_deterministic_step(&self, t: usize) -> bool {
        self.learned_std.is_none() && self.schedule.sigma(t) == 0.0
    }

    /// Makes the standard deviation of every step a trainable variable
    /// ([`LOG_STD_VAR`], one log-std per step, shared by the data dimensions),
    /// initialised at the schedule's value and never below `floor`.
    pub fn learn_variance(&mut self, floor: f64) {
        if self.learned_std.is_some() {
            return;
        }
        let init = self.coefficients.log_prob_sigma.clamp_min(floor).log();
        let log_std = (self.vs.root() / "variance").var_copy("log_std", &init);
        self.learned_std = Some(LearnedStd { log_std, floor });
    }

    /// The floor of the learned standard deviation, if the variance is learned.
    pub fn variance_floor(&self) -> Option<f64> {
        self.learned_std.as_ref().map(|l| l.floor)
    }

    /// A copy with the same weights whose variables do not train (the
    /// reference of a KL penalty). Not available for custom models.
    pub fn frozen_copy(&self) -> Option<Self> {
        let mut copy = self.copy_on(&self.schedule)?;
        copy.vs.freeze();
        Some(copy)
    }

    /// A trainable copy with the same weights stepping through `schedule`
    /// instead (a distillation student on half its teacher's steps). Not
    /// available for custom models.
    pub fn copy_on(&self, schedule: &Schedule) -> Option<Self> {
        let vs = VarStore::new(self.vs.device());
        let net = self.architecture.build(&vs)?;
        let mut copy = Self {
            coefficients: schedule.coefficients_as(vs.device(), self.coefficients.kind()),
            schedule: schedule.clone(),
            rollout_std: self.rollout_std,
            net,
            vs,
            architecture: self.architecture.clone(),
            learned_std: None,
            act_chunk: self.act_chunk,
            solver: self.solver.clone(),
            evaluations: AtomicU64::new(0),
        };
        if let Some(floor) = self.variance_floor() {
            copy.learn_variance(floor);
        }
        copy.vs.copy(&self.vs).ok()?;
        Some(copy)
    }

    /// The generator's variables (theta).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Mutable access to the variables, e.g. to load weights.
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// The per-step coefficients of the sampler.
    pub fn coefficients(&self) -> &StepCoefficients {
        &self.coefficients
    }

    /// Number of sampler steps T'.
    pub fn horizon(&self) -> usize {
        self.coefficients.sigma.size()[0] as usize
    }

    /// The network's noise prediction at 1-based sampler steps `steps`.
    pub fn eps(&self, x: &Tensor, steps: &Tensor) -> Tensor {
        let net_times = self
            .coefficients
            .network_times
            .index_select(0, &(steps - 1));
        self.evaluate(x, &net_times)
    }

    /// Switches the network's training behaviour (dropout) on or off.
    pub fn set_training(&self, train: bool) {
        self.net.set_training(train);
    }

    /// The network's noise prediction at raw network times (used by pretraining).
    pub fn eps_at_network_steps(&self, x: &Tensor, net_steps: &Tensor) -> Tensor {
        self.evaluate(x, net_steps)
    }

    /// The network on `x` at `net_steps`, counted.
    fn evaluate(&self, x: &Tensor, net_steps: &Tensor) -> Tensor {
        self.evaluations
            .fetch_add(x.size()[0].max(0) as u64, Ordering::Relaxed);
        self.net.eps(x, net_steps)
    }

    /// The images the network has been evaluated on so far (one per row
    /// of every forward pass, with or without gradients): a training
    /// run's cost in network evaluations.
    pub fn network_evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
    }

    /// mu_theta(x, t) for a batch at 1-based sampler steps `steps` (tracks gradients).
    pub fn mean(&self, x: &Tensor, steps: &Tensor) -> Tensor {
        gaussian::mean_from_eps(&self.coefficients, x, &self.eps(x, steps), steps)
    }

    /// The standard deviation used to draw each row's next sample,
    /// broadcastable against `like` (tracks gradients when learned).
    pub fn sampling_std(&self, steps: &Tensor, like: &Tensor) -> Tensor {
        match &self.learned_std {
            Some(l) => Self::learned(l, steps, like),
            None => gaussian::per_row(&self.coefficients.sigma, steps, like),
        }
    }

    /// The standard deviation of each row's log-density (floored where the
    /// fixed schedule's step is deterministic).
    pub fn density_std(&self, steps: &Tensor, like: &Tensor) -> Tensor {
        match &self.learned_std {
            Some(l) => Self::learned(l, steps, like),
            None => gaussian::per_row(&self.coefficients.log_prob_sigma, steps, like),
        }
    }

    fn learned(l: &LearnedStd, steps: &Tensor, like: &Tensor) -> Tensor {
        gaussian::per_row(&l.log_std.exp().clamp_min(l.floor), steps, like)
    }

    /// Computes the noise prediction of at most `chunk` chains at once when
    /// acting without gradients (rollouts, sampling), bounding the network's
    /// activation memory; `None` evaluates the whole batch at once. The
    /// samples drawn do not depend on it (the noise is drawn for the whole
    /// batch).
    pub fn set_act_chunk(&mut self, chunk: Option<i64>) {
        self.act_chunk = chunk.filter(|&c| c > 0);
    }

    /// Samples with `solver` (an ODE solver on the model's training
    /// schedule) instead of the schedule's Gaussian steps: [`Self::sample`],
    /// [`Self::sample_from`] and [`Self::sample_path_from`] then run the
    /// solver, calling the network at its times. The Markov steps (`act`,
    /// `log_prob`) keep the schedule: a policy with a solver samples, it is
    /// not fine-tuned. `None` goes back to the schedule.
    pub fn set_solver(&mut self, solver: Option<Arc<dyn NetworkSampler>>) {
        self.solver = solver;
    }

    /// The steps sampling takes: the solver's grid when one is set, else
    /// the schedule's T'.
    pub fn sampling_steps(&self) -> usize {
        self.solver
            .as_ref()
            .map_or_else(|| self.horizon(), |s| s.grid().len())
    }

    /// The ODE solver that samples, if one was set.
    pub fn solver(&self) -> Option<&dyn NetworkSampler> {
        self.solver.as_deref()
    }

    /// The noise prediction at network time `time` for every row of `x`,
    /// without gradients, `act_chunk` rows at a time.
    fn eps_at_time_without_grad(&self, x: &Tensor, time: usize) -> Tensor {
        tch::no_grad(|| {
            let eps = |x: &Tensor| {
                let times = Tensor::full([x.size()[0]], time as f64, (Kind::Float, x.device()));
                self.evaluate(x, &times)
            };
            match self.act_chunk {
                Some(chunk) if x.size()[0] > chunk => {
                    Tensor::cat(&x.split(chunk, 0).iter().map(eps).collect::<Vec<_>>(), 0)
                }
                _ => eps(x),
            }
        })
    }

    /// mu_theta(x, t) without gradients, `act_chunk` rows at a time.
    fn mean_without_grad(&self, x: &Tensor, steps: &Tensor) -> Tensor {
        tch::no_grad(|| match self.act_chunk {
            Some(chunk) if x.size()[0] > chunk => {
                // One step for every row, or one per row.
                let per_row = steps.size()[0] > 1;
                let means: Vec<Tensor> = x
                    .split(chunk, 0)
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match per_row {
                        true => self.mean(x, &steps.narrow(0, i as i64 * chunk, x.size()[0])),
                        false => self.mean(x, steps),
                    })
                    .collect();
                Tensor::cat(&means, 0)
            }
            _ => self.mean(x, steps),
        })
    }

    /// Draws the next samples of the chains as the sampler does (evaluation,
    /// `rl-run sample`), without tracking gradients.
    pub fn act(&self, state: &ChainState) -> Tensor {
        tch::no_grad(|| {
            let steps = state.steps();
            let mean = self.mean_without_grad(&state.x, &steps);
            let std = self.sampling_std(&steps, &mean);
            let z = state.rows.randn_like(&mean);
            mean + std * z
        })
    }

    /// The standard deviation a fine-tuning rollout draws each row with
    /// (see [`RolloutStd`]), broadcastable against `like`.
    pub fn rollout_std(&self, steps: &Tensor, like: &Tensor) -> Tensor {
        match self.rollout_std {
            RolloutStd::Sampler => self.sampling_std(steps, like),
            RolloutStd::Density => self.density_std(steps, like),
        }
    }

    /// Draws the next samples of the chains of a fine-tuning rollout (with
    /// [`DiffusionPolicy::rollout_std`]), without tracking gradients.
    pub fn act_in_rollout(&self, state: &ChainState) -> Tensor {
        tch::no_grad(|| {
            let steps = state.steps();
            let mean = self.mean_without_grad(&state.x, &steps);
            let std = self.rollout_std(&steps, &mean);
            let z = state.rows.randn_like(&mean);
            mean + std * z
        })
    }

    /// Draws the next samples of a fine-tuning rollout without gradients,
    /// with their log-density under this policy (reduced by `reduction`):
    /// what ratio-based agents store.
    pub fn act_with_log_prob(
        &self,
        state: &ChainState,
        reduction: LogProbReduction,
    ) -> (Tensor, Tensor) {
        tch::no_grad(|| {
            let steps = state.steps();
            let mean = self.mean_without_grad(&state.x, &steps);
            let action = &mean + self.rollout_std(&steps, &mean) * state.rows.randn_like(&mean);
            let std = self.density_std(&steps, &mean);
            let log_prob = gaussian::log_prob_with_std(&action, &mean, &std, reduction);
            (action, log_prob)
        })
    }

    /// Draws the next samples with the reparameterisation kept differentiable
    /// (x_t = mu_theta(x_{t+1}) + sigma z), for pathwise estimators; z is
    /// drawn over the global batch of which `x` holds `rows`.
    pub fn act_reparameterized(&self, x: &Tensor, steps: &Tensor, rows: &Rows) -> Tensor {
        let mean = self.mean(x, steps);
        let std = self.sampling_std(steps, &mean);
        &mean + std * rows.randn_like(&mean)
    }

    /// log pi_theta(x_next | x) for a batch of transitions (tracks gradients).
    pub fn log_prob(
        &self,
        x: &Tensor,
        x_next: &Tensor,
        steps: &Tensor,
        reduction: LogProbReduction,
    ) -> Tensor {
        let mean = self.mean(x, steps);
        let std = self.density_std(steps, &mean);
        gaussian::log_prob_with_std(x_next, &mean, &std, reduction)
    }

    /// KL(pi_theta(. | x) || pi_ref(. | x)) per row, the per-step Gaussian KL
    /// to a reference policy (tracks gradients of this policy only).
    pub fn kl_to(
        &self,
        reference: &DiffusionPolicy,
        x: &Tensor,
        steps: &Tensor,
        reduction: LogProbReduction,
    ) -> Tensor {
        let mean = self.mean(x, steps);
        let std = self.density_std(steps, &mean);
        let (ref_mean, ref_std) = tch::no_grad(|| {
            let m = reference.mean(x, steps);
            let s = reference.density_std(steps, &m);
            (m, s)
        });
        gaussian::kl_divergence(&mean, &std, &ref_mean, &ref_std, reduction)
    }

    /// Runs `n` chains of samples of shape `shape` from x_T ~ N(0, I) to
    /// x_0 without gradients and returns x_0.
    pub fn sample(&self, n: i64, shape: &[i64]) -> Tensor {
        let mut size = vec![n];
        size.extend(shape);
        self.sample_from(Tensor::randn(
            size.as_slice(),
            (Kind::Float, self.vs.device()),
        ))
    }

    /// Runs the chains that start at `x_t` (`[n, ...]`, the initial noise)
    /// to x_0 without gradients; the step noise comes from libtorch's generator.
    pub fn sample_from(&self, x_t: Tensor) -> Tensor {
        self.run_chains(x_t, |_, _| {})
    }

    /// Whether [`Self::sample_rows`] gives each row what [`Self::sample`]
    /// gives it, for any split of the batch: true unless the sampler is a
    /// solver whose steps draw their own noise (SN-DDPM, NPR-DDPM).
    pub fn samples_split_exactly(&self) -> bool {
        self.solver.as_ref().is_none_or(|s| !s.draws_noise())
    }

    /// The rows `rows` of what [`Self::sample`] draws for `rows.global`
    /// chains (a data-parallel rank's share of an evaluation): x_T and the
    /// step noise are drawn for all of them, the network runs on `rows`.
    /// Exact when [`Self::samples_split_exactly`].
    pub fn sample_rows(&self, rows: Rows, shape: &[i64]) -> Tensor {
        let x_t = rows.randn(shape, Kind::Float, self.vs.device());
        if self.solver.is_some() {
            return self.sample_from(x_t);
        }
        tch::no_grad(|| {
            let mut env =
                DiffusionEnv::new(self.schedule.clone(), shape, rows.global, self.vs.device())
                    .expect("chains of at least one sample")
                    .holding(rows);
            let start = env
                .start_at(x_t)
                .expect("x_T fills the environment's share of the batch");
            let mut sampler = Sampler {
                policy: self,
                visit: |_: usize, _: &Tensor| {},
            };
            crate::drive(&mut env, &mut sampler, start, false)
                .expect("sampling steps a fresh environment with actions of its shape")
                .terminal
                .x
        })
    }

    /// [`DiffusionPolicy::sample_from`] keeping the states at the sampler
    /// positions `keep` (T' = x_T down to 0 = x_0; each on the CPU), in the
    /// order the chain reaches them: the path of the chains.
    pub fn sample_path_from(&self, x_t: Tensor, keep: &[usize]) -> Vec<Tensor> {
        let mut path = Vec::new();
        let _x0 = self.run_chains(x_t, |t, x| {
            if keep.contains(&t) {
                path.push(x.to_device(tch::Device::Cpu));
            }
        });
        path
    }

    /// Runs the chains from `x_t` to x_0 without gradients, showing each
    /// state (x_T included) with its sampler position to `visit`: the
    /// environment's chains driven by [`crate::drive`], the policy acting as
    /// the sampler does.
    fn run_chains(&self, x_t: Tensor, mut visit: impl FnMut(usize, &Tensor)) -> Tensor {
        if let Some(solver) = &self.solver {
            return tch::no_grad(|| {
                let x_t = x_t.to_device(self.vs.device());
                visit(solver.grid().len(), &x_t);
                envs::ode::solve(
                    solver.as_ref(),
                    x_t,
                    |x, time| self.eps_at_time_without_grad(x, time),
                    visit,
                )
            });
        }
        tch::no_grad(|| {
            let x_t = x_t.to_device(self.vs.device());
            let size = x_t.size();
            let mut env =
                DiffusionEnv::new(self.schedule.clone(), &size[1..], size[0], self.vs.device())
                    .expect("chains of at least one sample");
            let start = env
                .start_at(x_t)
                .expect("x_T fills the environment's batch");
            let mut sampler = Sampler {
                policy: self,
                visit,
            };
            (sampler.visit)(start.t, &start.x);
            crate::drive(&mut env, &mut sampler, start, false)
                .expect("sampling steps a fresh environment with actions of its shape")
                .terminal
                .x
        })
    }
}

/// The policy as the sampler: acts with [`DiffusionPolicy::act`] and shows
/// each new state to `visit`.
struct Sampler<'a, F> {
    policy: &'a DiffusionPolicy,
    visit: F,
}

impl<F: FnMut(usize, &Tensor)> Agent<DiffusionEnv> for Sampler<'_, F> {
    fn act(&mut self, obs: &ChainState) -> Result<Tensor, AgentError> {
        Ok(self.policy.act(obs))
    }

    fn observe(&mut self, _obs: &ChainState, _action: &Tensor, step: &Step<ChainState>) {
        (self.visit)(step.obs.t, &step.obs.x);
    }
}

impl<F: FnMut(usize, &Tensor)> Learn for Sampler<'_, F> {
    fn update(&mut self, _critics: &Critics<'_>) -> Result<UpdateStats, AgentError> {
        Err(AgentError::Unsupported("a sampler does not learn"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envs::schedule::{BetaSchedule, Variance};

    fn schedule() -> Schedule {
        Schedule::new(
            BetaSchedule::Linear {
                start: 0.01,
                end: 0.2,
            }
            .betas(4)
            .unwrap(),
            Variance::Beta,
        )
        .unwrap()
    }

    #[test]
    fn acting_in_chunks_draws_the_same_samples() {
        let s = schedule();
        let mut policy = DiffusionPolicy::toy(&s, 2, 16, 4, Device::Cpu);
        let state = ChainState::new(Tensor::randn([10, 2], (Kind::Float, Device::Cpu)), 3);
        let _rng = envs::testing::seeded(8);
        let whole = policy.act(&state);
        let (whole_lp_action, whole_lp) = policy.act_with_log_prob(&state, LogProbReduction::Sum);
        policy.set_act_chunk(Some(3));
        tch::manual_seed(8);
        let chunked = policy.act(&state);
        let (chunked_lp_action, chunked_lp) =
            policy.act_with_log_prob(&state, LogProbReduction::Sum);
        assert_eq!(whole.size(), [10, 2]);
        assert!(whole.allclose(&chunked, 1e-6, 1e-6, false));
        assert!(whole_lp_action.allclose(&chunked_lp_action, 1e-6, 1e-6, false));
        assert!(whole_lp.allclose(&chunked_lp, 1e-5, 1e-5, false));
        // Per-row steps are split with their rows.
        let steps = Tensor::from_slice(&[1i64, 2, 3, 4, 4, 1, 2, 3, 4, 1]);
        let per_row = policy.mean_without_grad(&state.x, &steps);
        assert!(per_row.allclose(&policy.mean(&state.x, &steps), 1e-6, 1e-6, false));
    }

    #[test]
    fn learned_variance_starts_at_the_schedule_and_respects_its_floor() {
        let _rng = envs::testing::seeded(3);
        let s = schedule();
        let mut policy = DiffusionPolicy::toy(&s, 2, 16, 4, Device::Cpu);
        let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let steps = Tensor::from_slice(&[1i64, 2, 3, 4, 4]);
        let fixed = policy.density_std(&steps, &x);
        policy.learn_variance(0.05);
        let learned = policy.density_std(&steps, &x);
        let expect = fixed.clamp_min(0.05);
        assert!((learned - &expect).abs().max().double_value(&[]) < 1e-6);
        // Push every log-std far down: the floor holds.
        tch::no_grad(|| {
            let _ = policy
                .learned_std
                .as_ref()
                .unwrap()
                .log_std
                .shallow_clone()
                .fill_(-20.0);
        });
        let floored = policy.sampling_std(&steps, &x);
        assert!((floored - 0.05).abs().max().double_value(&[]) < 1e-7);
        assert!(policy.var_store().variables().contains_key(LOG_STD_VAR));
    }

    #[test]
    fn a_frozen_copy_has_the_same_weights_and_zero_kl() {
        let _rng = envs::testing::seeded(4);
        let s = schedule();
        let mut policy = DiffusionPolicy::toy(&s, 2, 16, 4, Device::Cpu);
        policy.learn_variance(1e-3);
        let reference = policy.frozen_copy().unwrap();
        let x = Tensor::randn([6, 2], (Kind::Float, Device::Cpu));
        let steps = Tensor::from_slice(&[1i64, 2, 3, 4, 1, 2]);
        let kl = policy.kl_to(&reference, &x, &steps, LogProbReduction::Sum);
        assert!(kl.abs().max().double_value(&[]) < 1e-6);
        assert!(reference
            .var_store()
            .trainable_variables()
            .iter()
            .all(|v| !v.requires_grad()));
        // Moving the policy makes the KL positive; the reference stays put.
        tch::no_grad(|| {
            for mut v in policy.var_store().trainable_variables() {
                let _ = v.g_add_scalar_(0.05);
            }
        });
        let kl = policy.kl_to(&reference, &x, &steps, LogProbReduction::Sum);
        assert!(kl.min().double_value(&[]) > 0.0);
    }
}
