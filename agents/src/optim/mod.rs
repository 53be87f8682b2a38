//! Optimisers whose whole state (moments and step count) can be saved and
//! restored, so that a resumed run continues exactly where it stopped.
//! The update rules are PyTorch's (`torch.optim.Adam`, `torch.optim.RMSprop`
//! with default betas/alpha/eps).

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

use crate::AgentError;

mod cpu;

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

    /// Checks the learning rate (`lr`: finite and above 0).
    pub fn validate(&self, check: &mut envs::check::Checker) {
        let lr = self.lr();
        check.that(
            lr.is_finite() && lr > 0.0,
            "lr",
            format!("learning rate must be > 0, got {lr}"),
        );
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
    /// The gradients of this step were summed over the ranks already.
    gradients_reduced: bool,
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
            gradients_reduced: false,
        }
    }

    /// Sums the gradients over the ranks of the installed collective
    /// ([`collective::current`]; docs/conventions.md, "Data-parallel
    /// training"): each rank's loss is its share of the global batch's, so
    /// the sum is the gradient one process would have. A parameter whose
    /// gradient some rank's loss reached and another's did not gets a zero
    /// gradient on the latter first (one all-reduce of a mask), so that
    /// the ranks reduce the same tensors. Done once per step, by
    /// [`Self::clip_grad_norm`] or [`Self::step`], whichever comes first;
    /// nothing on one rank.
    ///
    /// # Panics
    /// When the engine fails; on several ranks a panic ends the job (the
    /// engine's panic hook).
    pub fn reduce_gradients(&mut self) {
        if self.gradients_reduced {
            return;
        }
        self.gradients_reduced = true;
        let engine = collective::current();
        if engine.world_size() == 1 {
            return;
        }
        let reached: Vec<f32> = self
            .params
            .iter()
            .map(|p| f32::from(u8::from(p.grad().defined())))
            .collect();
        let mut union = [Tensor::from_slice(&reached)];
        engine
            .all_reduce_sum(&mut union)
            .unwrap_or_else(|e| panic!("agreeing on the parameters with gradients: {e}"));
        let union = Vec::<f32>::try_from(&union[0]).expect("float mask");
        let missing: Vec<Tensor> = self
            .params
            .iter()
            .zip(&union)
            .filter(|(p, &u)| u > 0.0 && !p.grad().defined())
            .map(|(p, _)| p.sum(p.kind()) * 0.0)
            .collect();
        if !missing.is_empty() {
            Tensor::stack(&missing, 0).sum(Kind::Float).backward();
        }
        let mut grads: Vec<Tensor> = self
            .params
            .iter()
            .zip(&union)
            .filter(|(_, &u)| u > 0.0)
            .map(|(p, _)| p.grad())
            .collect();
        engine
            .all_reduce_sum(&mut grads)
            .unwrap_or_else(|e| panic!("summing the gradients over the ranks: {e}"));
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
        self.gradients_reduced = false;
        for p in &self.params {
            let mut g = p.grad();
            match cpu::f32_slice(&g) {
                Some(values) => values.fill(0.0),
                None if g.defined() => {
                    let _ = g.detach_().zero_();
                }
                None => {}
            }
        }
    }

    /// Scales the gradients (summed over the ranks first) so that their
    /// global L2 norm is at most `max_norm` (as
    /// `torch.nn.utils.clip_grad_norm_`) and returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> f64 {
        self.reduce_gradients();
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total_value = Self::global_norm(&grads);
        if let Some(max_norm) = max_norm {
            let coef = (max_norm / (total_value + 1e-6)).min(1.0);
            if coef < 1.0 {
                tch::no_grad(|| {
                    for mut g in grads {
                        match cpu::f32_slice(&g) {
                            Some(values) => values.iter_mut().for_each(|v| *v *= coef as f32),
                            None => {
                                let _ = g.g_mul_scalar_(coef);
                            }
                        }
                    }
                });
            }
        }
        total_value
    }

    /// The L2 norm of all `grads` together.
    fn global_norm(grads: &[Tensor]) -> f64 {
        let mut sum = 0.0;
        let mut on_device = Vec::new();
        for g in grads {
            match cpu::f32_slice(g) {
                Some(values) => sum += cpu::sum_of_squares(values),
                None => on_device.push(g.norm()),
            }
        }
        if !on_device.is_empty() {
            sum += Tensor::stack(&on_device, 0)
                .square()
                .sum(Kind::Double)
                .double_value(&[]);
        }
        sum.sqrt()
    }

    /// One update of every parameter that has a gradient. Contiguous CPU
    /// float parameters are updated by a fused pass over their memory
    /// (`cpu`), others (CUDA) by libtorch operations; both apply the same rule.
    pub fn step(&mut self) {
        self.reduce_gradients();
        self.gradients_reduced = false;
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
                if !Self::fused_step(self.config, p, &g, m, v, lr, t) {
                    Self::tensor_step(self.config, p, &g, m, v, lr, t);
                }
            }
        });
    }

    /// The update of one parameter by libtorch operations (any device).
    fn tensor_step(
        config: OptimizerConfig,
        p: &Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        lr: f64,
        t: f64,
    ) {
        let mut p = p.shallow_clone();
        match config {
            OptimizerConfig::Adam { .. } => {
                let _ = m.lerp_(g, 1.0 - ADAM_BETA1);
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

    /// The update of one parameter by the fused CPU kernels; false (nothing
    /// done) when a tensor is not a contiguous CPU float tensor.
    fn fused_step(
        config: OptimizerConfig,
        p: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
        lr: f64,
        t: f64,
    ) -> bool {
        let (Some(p), Some(g), Some(m), Some(v)) = (
            cpu::f32_slice(p),
            cpu::f32_slice(g),
            cpu::f32_slice(m),
            cpu::f32_slice(v),
        ) else {
            return false;
        };
        match config {
            OptimizerConfig::Adam { .. } => cpu::adam(
                p,
                g,
                m,
                v,
                cpu::AdamStep {
                    one_minus_beta1: (1.0 - ADAM_BETA1) as f32,
                    one_minus_beta2: (1.0 - ADAM_BETA2) as f32,
                    step_size: (lr / (1.0 - ADAM_BETA1.powf(t))) as f32,
                    bias_correction2_sqrt: (1.0 - ADAM_BETA2.powf(t)).sqrt() as f32,
                    eps: EPS as f32,
                },
            ),
            OptimizerConfig::RmsProp { .. } => {
                cpu::rmsprop(p, g, v, (1.0 - RMSPROP_ALPHA) as f32, lr as f32, EPS as f32)
            }
        }
        true
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
    fn fused_cpu_updates_equal_the_libtorch_ones() {
        let _rng = envs::testing::seeded(5);
        let randn = || Tensor::randn([3000], (Kind::Float, Device::Cpu));
        for config in [
            OptimizerConfig::Adam { lr: 1e-3 },
            OptimizerConfig::RmsProp { lr: 1e-3 },
        ] {
            let (p, g) = (randn(), randn());
            let (m, v) = (randn() * 0.1, randn().square() * 0.1);
            let (p0, p2, mut m2, mut v2) = (p.copy(), p.copy(), m.copy(), v.copy());
            for t in [1.0, 7.0] {
                assert!(Optimizer::fused_step(config, &p, &g, &m, &v, 1e-3, t));
                Optimizer::tensor_step(config, &p2, &g, &mut m2, &mut v2, 1e-3, t);
            }
            for (ours, theirs) in [(&p, &p2), (&m, &m2), (&v, &v2)] {
                let diff = (ours - theirs).abs().max().double_value(&[]);
                let scale = theirs.abs().max().double_value(&[]);
                assert!(diff <= 1e-6 * scale, "{config:?}: {diff} of {scale}");
            }
            assert!(!p.equal(&p0), "the update moved the parameters");
        }
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
