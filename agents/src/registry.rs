//! The agents and critic regularisers a run can choose by name, and how an
//! agent is built from its configuration.

pub use envs::registry::Registered;
use serde::{Deserialize, Serialize};

use crate::agent::FineTuneAgent;
use crate::generator::Generator;
use crate::pathwise::PathwiseKind;
use crate::ppo::PpoConfig;
use crate::reinforce::ReinforceConfig;

/// What an agent contributes to the registry, implemented by its
/// configuration in the agent's own file: how it is built, checked,
/// labelled and listed.
pub trait AgentKind {
    /// Its RON forms with typical settings, each with one line on what it
    /// does (listed by `rl-run agents`).
    fn listed() -> &'static [Registered]
    where
        Self: Sized;

    /// Builds the agent around `generator`; `batch` is the number of
    /// transitions per minibatch (or chains per pathwise step) and `shape`
    /// the shape of one sample.
    fn build(&self, generator: Generator, batch: i64, shape: &[i64]) -> Box<dyn FineTuneAgent>;

    /// Checks the agent's own settings, under `check`'s current prefix.
    fn validate(&self, _check: &mut envs::check::Checker) {}

    /// The estimator's name as the paper writes it ("SFT-PG", "SFT", ...).
    fn label(&self) -> &'static str;

    /// Whether the update has a REINFORCE loss the pathwise last-step term
    /// (`deterministic_step: Pathwise`) can be part of.
    fn takes_pathwise_term(&self) -> bool {
        false
    }
}

/// Declares [`AgentConfig`] (one variant per agent: `Name(Config)`, or
/// `Name = Kind` for an agent without settings, where `Kind` is a unit
/// struct) and [`agents`], from one line per agent.
macro_rules! agent_registry {
    ($( $(#[$doc:meta])* $variant:ident $(($config:path))? $(= $unit:path)? ),* $(,)?) => {
        /// The algorithm that updates the generator; swap algorithms by
        /// changing this one value. Each variant's settings implement
        /// [`AgentKind`].
        #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
        pub enum AgentConfig {
            $( $(#[$doc])* $variant $(($config))? ),*
        }

        impl AgentConfig {
            /// The chosen agent's part of the registry.
            pub fn kind(&self) -> &dyn AgentKind {
                $( agent_registry!(@kind self, $variant $(($config))? $(= $unit)?); )*
                unreachable!("every agent is registered")
            }
        }

        /// Every agent, as `agent:` in a fine-tuning task takes it (each
        /// agent's [`AgentKind::listed`], in registry order).
        pub fn agents() -> Vec<Registered> {
            [$( agent_registry!(@listed $(($config))? $(= $unit)?) ),*].concat()
        }
    };
    (@kind $self:ident, $variant:ident ($config:path)) => {
        if let AgentConfig::$variant(config) = $self {
            return config;
        }
    };
    (@kind $self:ident, $variant:ident = $unit:path) => {
        if let AgentConfig::$variant = $self {
            return &$unit;
        }
    };
    (@listed ($config:path)) => { <$config as AgentKind>::listed() };
    (@listed = $unit:path) => { <$unit as AgentKind>::listed() };
}

// The registry: one line per agent (its file implements `AgentKind`).
agent_registry! {
    /// REINFORCE over the buffer (SFT-PG, Eq. 20), with or without the learned baseline.
    Reinforce(ReinforceConfig),
    /// PPO-clip over the buffer.
    Ppo(PpoConfig),
    /// SFT: the pathwise gradient through the reparameterised chain (Eq. 14).
    Pathwise = PathwiseKind,
}

impl AgentConfig {
    /// Builds the agent around `generator` ([`AgentKind::build`]).
    pub fn build(&self, generator: Generator, batch: i64, shape: &[i64]) -> Box<dyn FineTuneAgent> {
        self.kind().build(generator, batch, shape)
    }

    /// Checks the agent's own settings ([`AgentKind::validate`]).
    pub fn validate(&self, check: &mut envs::check::Checker) {
        self.kind().validate(check)
    }

    /// Whether the update can carry the pathwise last-step term
    /// ([`AgentKind::takes_pathwise_term`]).
    pub fn takes_pathwise_term(&self) -> bool {
        self.kind().takes_pathwise_term()
    }

    /// The estimator's name as the paper writes it ([`AgentKind::label`]).
    pub fn label(&self) -> &'static str {
        self.kind().label()
    }
}

/// Every critic regulariser, as `critic.regularizer:` takes it.
pub const CRITIC_REGULARIZERS: &[Registered] = &[
    Registered {
        ron: "Baseline(lambda: 0.1)",
        summary: "B (Eq. 23): critic and baseline ascend g - lambda R_B together; R_B sums the T' steps' mean squared errors, lambda is the paper's (0.1 toy, 1.0 images)",
    },
    Registered {
        ron: "GradientPenalty(eta: 0.001)",
        summary: "GP (Eq. 22): critic ascends g - eta E[(|grad f(xhat)| - 1)^2]",
    },
    Registered {
        ron: "None",
        summary: "no regulariser (the baseline is fitted on its own when an agent uses it)",
    },
];

/// Every critic network and baseline shape, as `critic:` takes them.
pub const CRITIC_NETWORKS: &[Registered] = &[
    Registered {
        ron: "network: Mlp",
        summary: "the toy critic: MLP over the flattened sample, width -> width -> 1, ReLU (critic.width)",
    },
    Registered {
        ron: "network: Conv(channels: [128, 256, 512])",
        summary: "the authors' image critic: 4x4 stride-2 convs to each width (LeakyReLU 0.2), a 4x4 conv to 1, mean over space; the paper's text says [256, 512, 1024]",
    },
    Registered {
        ron: "baseline_hidden: Some([1024, 1024, 256])",
        summary: "the baseline's hidden widths (conditional-linear, indexed by sampler step; default [width, width]); this is the authors' image baseline",
    },
    Registered {
        ron: "baseline: Conv(channels: [128, 256, 512])",
        summary: "a convolutional baseline: the critic's 4x4 stride-2 convs with per-step channel gains (LeakyReLU 0.2), mean over space, then the head to 1",
    },
    Registered {
        ron: "baseline_head: Linear",
        summary: "the baseline's last layer: Linear (plain, the authors' image baseline; the default for images) or Conditional (indexed by step, their toy baseline; the default for vectors)",
    },
];

/// Settings every agent shares, as `generator:` takes them.
pub const GENERATOR_SETTINGS: &[Registered] = &[
    Registered {
        ron: "n_generator: 1, grad_clip: None",
        summary: "trust region of Section 4.2: steps per critic round, grad-norm clip gamma",
    },
    Registered {
        ron: "log_prob: Sum",
        summary: "Sum (exact, Eq. 15) or Mean over data dimensions (for PPO in high dimensions)",
    },
    Registered {
        ron: "kl_weight: 0.0",
        summary: "weight of the per-step KL to the pretrained sampler (DPOK)",
    },
    Registered {
        ron: "variance: Fixed",
        summary:
            "Fixed, or Learned(floor: 1e-3, lr: 1e-3): a trained per-step log-std, floored, own lr",
    },
    Registered {
        ron: "deterministic_step: Noisy",
        summary: "a noiseless sampler step (FastDPM's last) in fine-tuning: Noisy (drawn with the std 1e-3 of its log-density, the authors'), Noiseless, Excluded (left to the environment), Pathwise (grad f through the last step)",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Critics;
    use crate::generator::{GeneratorConfig, VarianceConfig};
    use crate::optim::OptimizerConfig;
    use crate::rollout;
    use crate::testing::DistanceToTarget;
    use crate::testing::{improves_on_a_tiny_problem, tiny_generator_with};
    use envs::gaussian::LogProbReduction;
    use tch::{Device, Kind, Tensor};

    fn every_agent() -> Vec<AgentConfig> {
        vec![
            AgentConfig::Reinforce(ReinforceConfig::default()),
            AgentConfig::Reinforce(ReinforceConfig {
                use_baseline: false,
                ..ReinforceConfig::default()
            }),
            AgentConfig::Ppo(PpoConfig {
                epochs: 2,
                ..PpoConfig::default()
            }),
            AgentConfig::Pathwise,
        ]
    }

    #[test]
    fn every_agent_honours_n_generator_and_gamma() {
        let _rng = envs::testing::seeded(21);
        for config in every_agent() {
            let generator = tiny_generator_with(GeneratorConfig {
                optimizer: OptimizerConfig::Adam { lr: 1e-3 },
                n_generator: 3,
                grad_clip: Some(1e-3),
                ..GeneratorConfig::default()
            });
            let mut agent = config.build(generator, 64, &[2]);
            let mut env = crate::testing::tiny_env();
            for _ in 0..2 {
                rollout(&mut env, agent.as_mut(), None).unwrap();
            }
            let stats = agent
                .update(&Critics {
                    reward: &DistanceToTarget,
                    baseline: None,
                })
                .unwrap();
            let passes = if let AgentConfig::Ppo(p) = config {
                p.epochs as i64
            } else {
                1
            };
            assert_eq!(agent.generator().steps(), 3 * passes, "{config:?}");
            let raw = stats.get("generator/grad_norm").unwrap();
            let applied = agent.generator().applied_grad_norm();
            assert!(
                raw > 1e-2,
                "{config:?}: the test needs a gradient to clip ({raw})"
            );
            assert!(
                applied <= 1e-3 * (1.0 + 1e-4),
                "{config:?}: applied gradient norm {applied} above gamma"
            );
        }
    }

    #[test]
    fn learned_variance_trains_towards_a_point_target_and_keeps_its_floor() {
        let _rng = envs::testing::seeded(22);
        let floor = 0.05;
        for config in [
            AgentConfig::Reinforce(ReinforceConfig {
                use_baseline: false,
                ..ReinforceConfig::default()
            }),
            AgentConfig::Pathwise,
        ] {
            let generator = tiny_generator_with(GeneratorConfig {
                optimizer: OptimizerConfig::Adam { lr: 3e-3 },
                variance: VarianceConfig::Learned {
                    floor,
                    lr: Some(3e-2),
                },
                ..GeneratorConfig::default()
            });
            let steps = Tensor::from_slice(&[1i64, 2, 3]);
            let like = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
            let std_before = generator.policy().sampling_std(&steps, &like);
            let mut agent = config.build(generator, 64, &[2]);
            improves_on_a_tiny_problem(agent.as_mut(), 300);
            let std_after = agent.generator().policy().sampling_std(&steps, &like);
            // The target is a point: the spread of the last step should shrink.
            let (b, a) = (
                std_before.double_value(&[0, 0]),
                std_after.double_value(&[0, 0]),
            );
            assert!(a < b, "{config:?}: last-step std {b} -> {a}");
            assert!(std_after.min().double_value(&[]) >= floor * (1.0 - 1e-6));
        }
    }

    #[test]
    fn the_kl_penalty_keeps_the_sampler_near_the_pretrained_one() {
        let kl_after = |kl_weight: f64| {
            let _rng = envs::testing::seeded(23);
            let generator = tiny_generator_with(GeneratorConfig {
                optimizer: OptimizerConfig::Adam { lr: 3e-3 },
                kl_weight,
                ..GeneratorConfig::default()
            });
            let reference = generator.policy().frozen_copy().unwrap();
            let mut agent = AgentConfig::Pathwise.build(generator, 64, &[2]);
            let mut env = crate::testing::tiny_env();
            for _ in 0..100 {
                rollout(&mut env, agent.as_mut(), None).unwrap();
                agent
                    .update(&Critics {
                        reward: &DistanceToTarget,
                        baseline: None,
                    })
                    .unwrap();
            }
            let x = Tensor::randn([512, 2], (Kind::Float, Device::Cpu));
            let steps = Tensor::full([512], 3, (Kind::Int64, Device::Cpu));
            agent
                .generator()
                .policy()
                .kl_to(&reference, &x, &steps, LogProbReduction::Sum)
                .mean(Kind::Float)
                .double_value(&[])
        };
        let free = kl_after(0.0);
        let held = kl_after(1.0);
        assert!(
            held < 0.5 * free,
            "KL to the start: free {free}, penalised {held}"
        );
    }
}
