//! The denoising chain of a DDPM sampler as a finite-horizon MDP, holding
//! `B` parallel chains: state (x_{t+1}, t+1), action x_t, reward 0 until the
//! last step and -f(x_0) from the critic there, terminated at t = 0, never
//! truncated (docs/conventions.md, section 1).

use std::rc::Rc;

use tch::{Device, Kind, Tensor};

use crate::rows::Rows;
use crate::schedule::{Schedule, StepCoefficients};
use crate::{Env, EnvError, Info, RewardModel, Space, Step};

/// State of the chains: the current samples and their 1-based step index
/// (`t + 1` in the paper's notation; `0` once the chains have terminated).
#[derive(Debug)]
pub struct ChainState {
    /// The current samples, `[B, ...]`.
    pub x: Tensor,
    /// The step index shared by all chains: T' at reset, 0 at the end.
    pub t: usize,
    /// Which rows of the global batch of chains `x` holds (all of them on
    /// one process): the noise of a step is drawn over the global batch
    /// ([`Rows`]), so a chain's noise does not depend on the world size.
    pub rows: Rows,
}

impl Clone for ChainState {
    fn clone(&self) -> Self {
        Self {
            x: self.x.shallow_clone(),
            t: self.t,
            rows: self.rows,
        }
    }
}

impl ChainState {
    /// All the chains `x` at 1-based step `t` (one process's whole batch).
    pub fn new(x: Tensor, t: usize) -> Self {
        let rows = Rows::all(x.size()[0]);
        Self { x, t, rows }
    }

    /// The shared step index as a `[1]` int64 tensor, which the batched
    /// policy functions broadcast over the `B` chains: a per-step lookup is
    /// then one row, not `B` copies of it (the same values, less memory
    /// traffic; it matters for 10K-chain evaluations).
    pub fn steps(&self) -> Tensor {
        Tensor::full([1], self.t as i64, (Kind::Int64, self.x.device()))
    }
}

/// The diffusion MDP: reset draws x_T ~ N(0, I); an action is the next sample
/// x_{t}; the reward is 0 until the last step and `-f(x_0)` there, with `f` the
/// current [`RewardModel`] (none: reward 0, useful for plain sampling).
pub struct DiffusionEnv {
    schedule: Schedule,
    coefficients: StepCoefficients,
    element_shape: Vec<i64>,
    num_envs: i64,
    rows: Rows,
    device: Device,
    reward_model: Option<Rc<dyn RewardModel>>,
    state: Option<ChainState>,
}

impl DiffusionEnv {
    /// An environment of `num_envs` chains whose samples have shape `element_shape`.
    pub fn new(
        schedule: Schedule,
        element_shape: &[i64],
        num_envs: i64,
        device: Device,
    ) -> Result<Self, EnvError> {
        if num_envs < 1 {
            return Err(EnvError::Invalid {
                field: "num_envs",
                reason: format!("must be at least 1, got {num_envs}"),
            });
        }
        let coefficients = schedule.coefficients(device);
        Ok(Self {
            schedule,
            coefficients,
            element_shape: element_shape.to_vec(),
            num_envs,
            rows: Rows::all(num_envs),
            device,
            reward_model: None,
            state: None,
        })
    }

    /// Sets the model whose value on x_0 is the (negated) terminal reward.
    pub fn with_reward_model(mut self, model: Rc<dyn RewardModel>) -> Self {
        self.reward_model = Some(model);
        self
    }

    /// Changes the number of parallel chains (takes effect at the next reset).
    pub fn set_num_envs(&mut self, num_envs: i64) {
        self.num_envs = num_envs;
        self.rows = Rows::all(num_envs);
        self.state = None;
    }

    /// Holds only `rows` of the environment's chains (a data-parallel
    /// rank's share, docs/conventions.md section 7): it steps `rows.len`
    /// chains and draws x_T over all `rows.global` of them, keeping its own.
    ///
    /// # Panics
    /// When `rows.global` is not the environment's number of chains or the
    /// share is empty.
    pub fn holding(mut self, rows: Rows) -> Self {
        assert_eq!(
            rows.global, self.num_envs,
            "a share of the environment's own chains"
        );
        assert!(rows.len >= 1, "a share of at least one chain");
        self.num_envs = rows.len;
        self.rows = rows;
        self.state = None;
        self
    }

    /// Which of the global batch's chains the environment holds.
    pub fn rows(&self) -> Rows {
        self.rows
    }

    /// The sampler's schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The per-step coefficients on this environment's device.
    pub fn coefficients(&self) -> &StepCoefficients {
        &self.coefficients
    }

    /// Number of steps of one episode, T'.
    pub fn horizon(&self) -> usize {
        self.schedule.len()
    }

    /// The device the chains live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Starts the chains at the given x_T (`[B, ...]` in the environment's
    /// batch shape) instead of drawing it: sampling from chosen noise.
    pub fn start_at(&mut self, x: Tensor) -> Result<ChainState, EnvError> {
        if x.size() != self.batch_shape() {
            return Err(EnvError::Shape {
                what: "x_T",
                expected: self.batch_shape(),
                got: x.size(),
            });
        }
        let state = ChainState {
            x,
            t: self.schedule.len(),
            rows: self.rows,
        };
        self.state = Some(state.clone());
        Ok(state)
    }

    fn batch_shape(&self) -> Vec<i64> {
        let mut shape = vec![self.num_envs];
        shape.extend_from_slice(&self.element_shape);
        shape
    }
}

impl Env for DiffusionEnv {
    type Obs = ChainState;
    type Action = Tensor;

    fn observation_space(&self) -> Space {
        Space::Tuple(vec![
            Space::real(&self.element_shape),
            Space::Discrete(self.schedule.len() as i64 + 1),
        ])
    }

    fn action_space(&self) -> Space {
        Space::real(&self.element_shape)
    }

    fn num_envs(&self) -> i64 {
        self.num_envs
    }

    fn reset(&mut self, seed: Option<u64>) -> Result<(ChainState, Info), EnvError> {
        if let Some(seed) = seed {
            tch::manual_seed(seed as i64);
        }
        let x = self
            .rows
            .randn(&self.element_shape, Kind::Float, self.device);
        let state = ChainState {
            x,
            t: self.schedule.len(),
            rows: self.rows,
        };
        self.state = Some(state.clone());
        Ok((state, Info::new()))
    }

    fn step(&mut self, action: &Tensor) -> Result<Step<ChainState>, EnvError> {
        let Some(state) = self.state.as_ref() else {
            return Err(EnvError::NeedsReset("no episode in progress".into()));
        };
        if state.t == 0 {
            return Err(EnvError::NeedsReset(
                "the chains already reached x_0".into(),
            ));
        }
        if action.size() != self.batch_shape() {
            return Err(EnvError::Shape {
                what: "action",
                expected: self.batch_shape(),
                got: action.size(),
            });
        }
        let t = state.t - 1;
        let terminated = t == 0;
        let reward = match (&self.reward_model, terminated) {
            (Some(model), true) => tch::no_grad(|| -model.value(action)),
            _ => Tensor::zeros([self.num_envs], (Kind::Float, self.device)),
        };
        let next = ChainState {
            x: action.shallow_clone(),
            t,
            rows: self.rows,
        };
        self.state = if terminated {
            Some(ChainState {
                x: next.x.shallow_clone(),
                t: 0,
                rows: self.rows,
            })
        } else {
            Some(next.clone())
        };
        let mut info = Info::new();
        info.insert("t".into(), t as f64);
        let mask =
            |value: bool| Tensor::full([self.num_envs], value as i64, (Kind::Bool, self.device));
        Ok(Step {
            obs: next,
            reward,
            terminated: mask(terminated),
            truncated: mask(false),
            info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{BetaSchedule, Variance};

    struct SumCritic;
    impl RewardModel for SumCritic {
        fn value(&self, x: &Tensor) -> Tensor {
            x.sum_dim_intlist(1, false, Kind::Float)
        }
    }

    fn env(b: i64) -> DiffusionEnv {
        let s = Schedule::new(
            BetaSchedule::Sigmoid {
                start: 1e-5,
                end: 1e-2,
            }
            .betas(3)
            .unwrap(),
            Variance::Beta,
        )
        .unwrap();
        DiffusionEnv::new(s, &[2], b, Device::Cpu)
            .unwrap()
            .with_reward_model(Rc::new(SumCritic))
    }

    #[test]
    fn episode_has_horizon_steps_and_reward_only_at_the_end() {
        let _rng = crate::testing::seeded(0);
        let mut e = env(4);
        let (obs, _) = e.reset(Some(1)).unwrap();
        assert_eq!(obs.t, 3);
        assert_eq!(obs.x.size(), vec![4, 2]);
        for k in 0..3 {
            let action = Tensor::ones([4, 2], (Kind::Float, Device::Cpu)) * (k + 1) as f64;
            let step = e.step(&action).unwrap();
            assert_eq!(step.obs.t, 2 - k);
            assert_eq!(step.truncated.any().int64_value(&[]), 0);
            assert_eq!(step.terminated.size(), vec![4]);
            let r = Vec::<f32>::try_from(&step.reward).unwrap();
            if k < 2 {
                assert!(!step.any_ended());
                assert!(r.iter().all(|&r| r == 0.0));
            } else {
                assert!(step.all_ended());
                assert!(r.iter().all(|&r| r == -6.0), "{r:?}");
            }
        }
        assert!(matches!(
            e.step(&Tensor::zeros([4, 2], (Kind::Float, Device::Cpu))),
            Err(EnvError::NeedsReset(_))
        ));
        // The chains end together, so they restart together: a full mask
        // starts new chains at t = T', a partial one is refused.
        let all = Tensor::ones([4], (Kind::Bool, Device::Cpu));
        let some = Tensor::from_slice(&[true, false, true, true]);
        assert!(e.reset_ended(&some).is_err());
        assert_eq!(e.reset_ended(&all).unwrap().t, 3);
        assert!(e
            .reset_ended(&Tensor::ones([3], (Kind::Bool, Device::Cpu)))
            .is_err());
    }

    #[test]
    fn reset_with_a_seed_repeats_and_bad_actions_are_refused() {
        let _rng = crate::testing::seeded(0);
        let mut e = env(5);
        let (a, _) = e.reset(Some(9)).unwrap();
        let (b, _) = e.reset(Some(9)).unwrap();
        assert!(a.x.equal(&b.x));
        let err = e
            .step(&Tensor::zeros([5, 3], (Kind::Float, Device::Cpu)))
            .unwrap_err();
        assert!(err.to_string().contains("expected shape [5, 2]"), "{err}");
        let mut fresh = env(2);
        assert!(fresh
            .step(&Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)))
            .is_err());
    }
}
