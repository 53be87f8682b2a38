//! A DDPM sampler as a Gaussian policy over the diffusion MDP.

use envs::diffusion::ChainState;
use envs::gaussian::{self, LogProbReduction};
use envs::schedule::{Schedule, StepCoefficients};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::networks::{EpsModel, ToyEpsNet};

/// pi_theta(x_t | x_{t+1}) = N(mu_theta(x_{t+1}, t+1), Sigma_{t+1}): the mean from
/// an eps-predicting network, the variance fixed by the schedule.
pub struct DiffusionPolicy {
    vs: VarStore,
    net: Box<dyn EpsModel>,
    coefficients: StepCoefficients,
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
            net: Box::new(net),
            vs,
        }
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

    /// The network's noise prediction at 1-based sampler steps `steps`.
    pub fn eps(&self, x: &Tensor, steps: &Tensor) -> Tensor {
        let net_steps = self
            .coefficients
            .network_steps
            .index_select(0, &(steps - 1));
        self.net.eps(x, &net_steps)
    }

    /// The network's noise prediction at raw network time indices (used by pretraining).
    pub fn eps_at_network_steps(&self, x: &Tensor, net_steps: &Tensor) -> Tensor {
        self.net.eps(x, net_steps)
    }

    /// mu_theta(x, t) for a batch at 1-based sampler steps `steps` (tracks gradients).
    pub fn mean(&self, x: &Tensor, steps: &Tensor) -> Tensor {
        gaussian::mean_from_eps(&self.coefficients, x, &self.eps(x, steps), steps)
    }

    /// Draws the next samples of the chains, without tracking gradients.
    pub fn act(&self, state: &ChainState) -> Tensor {
        tch::no_grad(|| {
            let steps = state.steps();
            gaussian::sample(&self.coefficients, &self.mean(&state.x, &steps), &steps)
        })
    }

    /// Draws the next samples with the reparameterisation kept differentiable
    /// (x_t = mu_theta(x_{t+1}) + sigma z), for pathwise estimators.
    pub fn act_reparameterized(&self, x: &Tensor, steps: &Tensor) -> Tensor {
        gaussian::sample(&self.coefficients, &self.mean(x, steps), steps)
    }

    /// log pi_theta(x_next | x) for a batch of transitions (tracks gradients).
    pub fn log_prob(
        &self,
        x: &Tensor,
        x_next: &Tensor,
        steps: &Tensor,
        reduction: LogProbReduction,
    ) -> Tensor {
        gaussian::log_prob(
            &self.coefficients,
            x_next,
            &self.mean(x, steps),
            steps,
            reduction,
        )
    }

    /// Runs `n` chains from x_T ~ N(0, I) to x_0 without gradients and returns x_0.
    pub fn sample(&self, n: i64, dim: i64) -> Tensor {
        tch::no_grad(|| {
            let mut state = ChainState {
                x: Tensor::randn([n, dim], (tch::Kind::Float, self.vs.device())),
                t: self.coefficients.sigma.size()[0] as usize,
            };
            while state.t > 0 {
                state = ChainState {
                    x: self.act(&state),
                    t: state.t - 1,
                };
            }
            state.x
        })
    }
}
