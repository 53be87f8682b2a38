//! Optimisers whose whole state (moments and step count) can be saved and
//! restored, so that a resumed run continues exactly where it stopped.
//! The update rules are PyTorch's (`torch.optim.Adam`, `torch.optim.RMSprop`
//! with default betas/alpha/eps).

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

use crate::AgentError;

/// Which optimiser, with its learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Adam with betas (0.9, 0.999), eps 1e-8.
    Adam {
        /// Learning rate.
        lr: f64,
    },
    /// RMSprop with alpha 0.99, eps 1e-8, no momentum.
    RmsProp {
        /// Learning rate.
        lr: f64,
    },
}

impl OptimizerConfig {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerConfig::Adam { lr } | OptimizerConfig::RmsProp { lr } => lr,
        }
    }

    /// An optimiser over the trainable variables of `vs`.
    pub fn build(&self, vs: &VarStore) -> Optimizer {
        Optimizer::new(*self, vs)
    }
}

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const RMSPROP_ALPHA: f64 = 0.99;
const EPS: f64 = 1e-8;

/// A first-order optimiser over a fixed, named list of parameters.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    first_moments: Vec<Tensor>,
    second_moments: Vec<Tensor>,
    learning_rates: Vec<f64>,
    steps: i64,
}

impl Optimizer {
    /// An optimiser over the trainable variables of `vs`, ordered by name.
    pub fn new(config: OptimizerConfig, vs: &VarStore) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, params): (Vec<_>, Vec<_>) = named.into_iter().unzip();
        let zeros = |p: &Tensor| p.zeros_like().detach();
        let first_moments = params.iter().map(zeros).collect();
        let second_moments = params.iter().map(zeros).collect();
        let learning_rates = vec![config.lr(); names.len()];
        Self {
            config,
            names,
            params,
            first_moments,
            second_moments,
            learning_rates,
            steps: 0,
        }
    }

    /// Gives the parameters whose names start with `prefix` their own
    /// learning rate; returns how many there are.
    pub fn set_learning_rate(&mut self, prefix: &str, lr: f64) -> usize {
        let mut count = 0;
        for (name, rate) in self.names.iter().zip(&mut self.learning_rates) {
            if name.starts_with(prefix) {
                *rate = lr;
                count += 1;
            }
        }
        count
    }

    /// The parameters this optimiser updates.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Number of updates taken so far.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// Clears the gradients of every parameter.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Scales the gradients so that their global L2 norm is at most `max_norm`
    /// (as `torch.nn.utils.clip_grad_norm_`) and returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let total_value = total.double_value(&[]);
        if let Some(max_norm) = max_norm {
            let coef = (max_norm / (total_value + 1e-6)).min(1.0);
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            });
        }
        total_value
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self) {
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| {
            for (((p, m), v), &lr) in self
                .params
                .iter()
                .zip(&mut self.first_moments)
                .zip(&mut self.second_moments)
                .zip(&self.learning_rates)
            {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut p = p.shallow_clone();
                match self.config {
                    OptimizerConfig::Adam { .. } => {
                        let _ = m.lerp_(&g, 1.0 - ADAM_BETA1);
                        let _ = v.lerp_(&g.square(), 1.0 - ADAM_BETA2);
                        let step_size = lr / (1.0 - ADAM_BETA1.powf(t));
                        let denom = v.sqrt() / (1.0 - ADAM_BETA2.powf(t)).sqrt() + EPS;
                        let _ = p.addcdiv_(&(&*m * -step_size), &denom);
                    }
                    OptimizerConfig::RmsProp { .. } => {
                        let _ = v.lerp_(&g.square(), 1.0 - RMSPROP_ALPHA);
                        let denom = v.sqrt() + EPS;
                        let _ = p.addcdiv_(&(g * -lr), &denom);
                    }
                }
            }
        });
    }

    /// The optimiser state as named tensors (`m/<param>`, `v/<param>`, `steps`).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.names.len() + 1);
        for ((name, m), v) in self
            .names
            .iter()
            .zip(&self.first_moments)
            .zip(&self.second_moments)
        {
            out.push((format!("m/{name}"), m.shallow_clone()));
            out.push((format!("v/{name}"), v.shallow_clone()));
        }
        out.push(("steps".to_string(), Tensor::from_slice(&[self.steps])));
        out
    }

    /// Restores a state written by [`Optimizer::state`]; every moment must be present with the right shape.
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<(), AgentError> {
        let find = |key: &str| {
            state
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, t)| t)
                .ok_or_else(|| AgentError::State(format!("missing entry {key}")))
        };
        let steps = find("steps")?;
        self.steps = steps.int64_value(&[0]);
        for i in 0..self.names.len() {
            for (prefix, target) in [
                ("m", &mut self.first_moments[i]),
                ("v", &mut self.second_moments[i]),
            ] {
                let key = format!("{prefix}/{}", self.names[i]);
                let saved = find(&key)?;
                if saved.size() != target.size() {
                    return Err(AgentError::State(format!(
                        "{key}: saved shape {:?}, parameter shape {:?}",
                        saved.size(),
                        target.size()
                    )));
                }
                tch::no_grad(|| {
                    target.copy_(&saved.to_kind(Kind::Float).to_device(target.device()))
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::Init, Device};

    fn quadratic_descends(config: OptimizerConfig) -> f64 {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], Init::Const(1.0));
        let mut opt = config.build(&vs);
        for _ in 0..200 {
            opt.zero_grad();
            w.square().sum(Kind::Float).backward();
            opt.step();
        }
        w.square().sum(Kind::Float).double_value(&[])
    }

    #[test]
    fn both_optimisers_minimise_a_quadratic() {
        assert!(quadratic_descends(OptimizerConfig::Adam { lr: 0.05 }) < 1e-2);
        assert!(quadratic_descends(OptimizerConfig::RmsProp { lr: 0.01 }) < 1e-2);
    }

    #[test]
    fn first_adam_step_moves_each_weight_by_lr() {
        // With bias correction the first Adam step is lr * sign(g).
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], Init::Const(1.0));
        let mut opt = OptimizerConfig::Adam { lr: 0.1 }.build(&vs);
        (&w * Tensor::from_slice(&[3.0f32, -0.5]))
            .sum(Kind::Float)
            .backward();
        opt.step();
        let after = Vec::<f32>::try_from(w.detach()).unwrap();
        assert!(
            (after[0] - 0.9).abs() < 1e-6 && (after[1] - 1.1).abs() < 1e-6,
            "{after:?}"
        );
    }

    #[test]
    fn a_prefix_can_have_its_own_learning_rate() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[1], Init::Const(1.0));
        let s = (vs.root() / "variance").var("log_std", &[1], Init::Const(1.0));
        let mut opt = OptimizerConfig::Adam { lr: 0.1 }.build(&vs);
        assert_eq!(opt.set_learning_rate("variance.", 0.01), 1);
        (&w * 2.0 + &s * 2.0).sum(Kind::Float).backward();
        opt.step();
        assert!((w.double_value(&[0]) - 0.9).abs() < 1e-6);
        assert!((s.double_value(&[0]) - 0.99).abs() < 1e-6);
    }

    #[test]
    fn clipping_bounds_the_gradient_norm() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], Init::Const(0.0));
        let mut opt = OptimizerConfig::Adam { lr: 0.1 }.build(&vs);
        (&w * Tensor::from_slice(&[3.0f32, 4.0]))
            .sum(Kind::Float)
            .backward();
        let before = opt.clip_grad_norm(Some(1.0));
        assert!((before - 5.0).abs() < 1e-6);
        assert!((w.grad().norm().double_value(&[]) - 1.0).abs() < 1e-4);
    }

    #[test]
    fn state_round_trips_and_resumes_identically() {
        let run = |split: Option<usize>| {
            let _rng = envs::testing::seeded(1);
            let vs = VarStore::new(Device::Cpu);
            let w = vs.root().var(
                "w",
                &[4],
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            );
            let mut opt = OptimizerConfig::Adam { lr: 0.01 }.build(&vs);
            for i in 0..10 {
                if Some(i) == split {
                    let saved: Vec<_> = opt
                        .state()
                        .into_iter()
                        .map(|(k, t)| (k, t.copy()))
                        .collect();
                    opt = OptimizerConfig::Adam { lr: 0.01 }.build(&vs);
                    opt.load_state(&saved).unwrap();
                }
                opt.zero_grad();
                w.pow_tensor_scalar(3).sum(Kind::Float).backward();
                opt.step();
            }
            w.detach().copy()
        };
        assert!(run(None).equal(&run(Some(5))));
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().var("w", &[4], Init::Const(0.0));
        let mut opt = OptimizerConfig::Adam { lr: 0.01 }.build(&vs);
        let bad = vec![
            ("steps".to_string(), Tensor::from_slice(&[1i64])),
            (
                "m/w".to_string(),
                Tensor::zeros([3], (Kind::Float, Device::Cpu)),
            ),
            (
                "v/w".to_string(),
                Tensor::zeros([4], (Kind::Float, Device::Cpu)),
            ),
        ];
        let err = opt.load_state(&bad).unwrap_err().to_string();
        assert!(err.contains("m/w") && err.contains("[3]"), "{err}");
    }
}
