//! Fine-tunes a 10-step diffusion sampler against your own critic: the
//! cost f(x_0) is the squared distance of a 2-D sample from the unit circle,
//! and SFT-PG's REINFORCE agent lowers E[f(x_0)] over the chain's MDP.
//! `cargo run --release --example finetune_custom_critic` (`make test` runs it).
use std::rc::Rc;

use agents::generator::{Generator, GeneratorConfig};
use agents::reinforce::{Reinforce, ReinforceConfig};
use agents::{agent::Critics, optim::OptimizerConfig, policy::DiffusionPolicy, rollout, Learn};
use envs::{diffusion::DiffusionEnv, schedule::BetaSchedule, schedule::Schedule, RewardModel};
use tch::{Device, Kind, Tensor};

/// Your critic: any `RewardModel` (lower is better; the reward is -f(x_0)).
struct OffTheCircle;
impl RewardModel for OffTheCircle {
    fn value(&self, x: &Tensor) -> Tensor {
        (x.square().sum_dim_intlist(1, false, Kind::Float).sqrt() - 1.0).square()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tch::manual_seed(0);
    let betas = BetaSchedule::Linear {
        start: 0.05,
        end: 0.5,
    }
    .betas(10)?;
    let schedule = Schedule::new(betas, envs::schedule::Variance::Beta)?;
    let policy = DiffusionPolicy::toy(&schedule, 2, 128, 10, Device::Cpu); // or load weights
    let generator = GeneratorConfig {
        optimizer: OptimizerConfig::Adam { lr: 3e-3 },
        ..Default::default()
    };
    let agent_config = ReinforceConfig {
        use_baseline: false,
        normalize_advantage: true,
        ..Default::default()
    };
    let mut agent = Reinforce::new(agent_config, Generator::new(generator, policy)?, 1280);
    let mut env = DiffusionEnv::new(schedule, &[2], 128, Device::Cpu)?
        .with_reward_model(Rc::new(OffTheCircle));
    let critics = Critics {
        reward: &OffTheCircle,
        baseline: None,
    };
    let mut costs = Vec::new();
    for _ in 0..100 {
        costs.push(
            -rollout(&mut env, &mut agent, None)?
                .total_reward
                .mean(Kind::Float)
                .double_value(&[]),
        );
        agent.update(&critics)?;
    }
    println!("E[f(x_0)]: {:.3} -> {:.3}", costs[0], costs[99]);
    if costs[99] < 0.5 * costs[0] {
        Ok(())
    } else {
        Err("the critic's cost did not halve".into())
    }
}
