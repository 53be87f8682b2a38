//! Fixtures shared by the agents' unit tests.

use envs::diffusion::DiffusionEnv;
use envs::schedule::{BetaSchedule, Schedule, Variance};
use envs::RewardModel;
use tch::{Device, Kind, Tensor};

use crate::agent::{Critics, FineTuneAgent};
use crate::generator::{Generator, GeneratorConfig};
use crate::optim::OptimizerConfig;
use crate::policy::DiffusionPolicy;
use crate::rollout;

/// f(x) = |x - (1, -1)|^2: the return -f(x_0) is highest at (1, -1).
pub struct DistanceToTarget;

impl RewardModel for DistanceToTarget {
    fn value(&self, x: &Tensor) -> Tensor {
        (x - Tensor::from_slice(&[1.0f32, -1.0]))
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
    }
}

/// A three-step linear schedule.
pub fn tiny_schedule() -> Schedule {
    Schedule::new(
        BetaSchedule::Linear {
            start: 0.05,
            end: 0.2,
        }
        .betas(3)
        .unwrap(),
        Variance::Beta,
    )
    .unwrap()
}

/// A small toy generator on the tiny schedule, Adam at `lr`.
pub fn tiny_generator(lr: f64) -> Generator {
    tiny_generator_with(GeneratorConfig {
        optimizer: OptimizerConfig::Adam { lr },
        ..GeneratorConfig::default()
    })
}

/// A small toy generator on the tiny schedule under `config`.
pub fn tiny_generator_with(config: GeneratorConfig) -> Generator {
    let policy = DiffusionPolicy::toy(&tiny_schedule(), 2, 32, 3, Device::Cpu);
    Generator::new(config, policy).unwrap()
}

/// The diffusion MDP of 64 two-dimensional chains on the tiny schedule.
pub fn tiny_env() -> DiffusionEnv {
    DiffusionEnv::new(tiny_schedule(), &[2], 64, Device::Cpu).unwrap()
}

/// E f(x_0) of the agent's policy over 2000 chains.
pub fn mean_cost(agent: &dyn FineTuneAgent) -> f64 {
    DistanceToTarget
        .value(&agent.generator().policy().sample(2000, &[2]))
        .mean(Kind::Float)
        .double_value(&[])
}

/// Trains `agent` against [`DistanceToTarget`] for `iterations` rounds of 64
/// chains and asserts that E f(x_0) at least halves.
pub fn improves_on_a_tiny_problem(agent: &mut dyn FineTuneAgent, iterations: usize) {
    let before = mean_cost(agent);
    let mut env = tiny_env();
    for _ in 0..iterations {
        rollout(&mut env, agent, None).unwrap();
        let stats = agent
            .update(&Critics {
                reward: &DistanceToTarget,
                baseline: None,
            })
            .unwrap();
        assert!(stats.get("generator/loss").unwrap().is_finite());
    }
    let after = mean_cost(agent);
    assert!(after < 0.5 * before, "E f(x_0): {before} -> {after}");
}
