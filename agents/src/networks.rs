//! The networks of the paper's toy experiments: a conditional-linear
//! eps-predictor (2 -> 128 -> 128 -> 128, softplus, then linear to 2), an MLP
//! critic (2 -> 256 -> 256 -> 1, ReLU) and a conditional-linear baseline of
//! the critic's shape (docs/conventions.md, section 5). Initialisation follows
//! PyTorch's defaults as the reference code uses them.

use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::Tensor;

/// A network that predicts the noise eps of x_t at the (0-based) network time index.
pub trait EpsModel {
    /// eps_theta(x, t) for a batch `x` and `[B]` network times (int64
    /// indices for the toy network; any real values for the U-Net).
    fn eps(&self, x: &Tensor, net_steps: &Tensor) -> Tensor;

    /// Switches training behaviour (dropout) on or off; models without any
    /// ignore it. Models start in evaluation mode.
    fn set_training(&self, _train: bool) {}
}

/// A state-value model V(x_{t+1}, t+1), the baseline of REINFORCE.
pub trait ValueModel {
    /// The value of each row of `x` at the `[B]` int64 sampler positions `index` (0-based).
    fn value(&self, x: &Tensor, index: &Tensor) -> Tensor;
}

/// `[B, ...]` samples as `[B, D]` vectors (2-D input passes unchanged).
fn flat(x: &Tensor) -> Tensor {
    if x.dim() == 2 {
        x.shallow_clone()
    } else {
        x.flatten(1, -1)
    }
}

/// A dense layer with PyTorch's default initialisation (weights and bias
/// uniform in +-1/sqrt(fan_in)), or Xavier-normal weights when asked.
#[derive(Debug)]
pub struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    /// A `fan_in -> fan_out` layer under `path`.
    pub fn new(path: &Path, fan_in: i64, fan_out: i64, xavier_weights: bool) -> Self {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight_init = if xavier_weights {
            Init::Randn {
                mean: 0.0,
                stdev: (2.0 / (fan_in + fan_out) as f64).sqrt(),
            }
        } else {
            Init::Uniform {
                lo: -bound,
                up: bound,
            }
        };
        Self {
            weight: path.var("weight", &[fan_out, fan_in], weight_init),
            bias: path.var(
                "bias",
                &[fan_out],
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
        }
    }

    /// A handle on the same weights.
    pub fn share(&self) -> Self {
        Self {
            weight: self.weight.shallow_clone(),
            bias: self.bias.shallow_clone(),
        }
    }

    /// `x W^T + b`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}

/// A stack of dense layers `widths[0] -> widths[1] -> ...` under `path`
/// (`lin0`, `lin1`, ...), with PyTorch's default initialisation.
pub fn dense_stack(path: &Path, widths: &[i64]) -> Vec<Dense> {
    widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| Dense::new(&(path / format!("lin{i}")), w[0], w[1], false))
        .collect()
}

/// The dense `layers` applied in turn to `x` (as float32), tanh between
/// them and none after the last.
pub fn tanh_mlp(layers: &[Dense], x: &Tensor) -> Tensor {
    let last = layers.len() - 1;
    let h = layers[..last]
        .iter()
        .fold(x.to_kind(tch::Kind::Float), |h, layer| {
            layer.forward(&h).tanh()
        });
    layers[last].forward(&h)
}

/// gamma_t * (W x + b) with gamma_t a learned per-step vector (initialised U(0, 1)).
#[derive(Debug)]
pub struct ConditionalLinear {
    dense: Dense,
    embedding: Tensor,
}

impl ConditionalLinear {
    /// A `fan_in -> fan_out` layer with one gamma per step of `n_steps`.
    pub fn new(path: &Path, fan_in: i64, fan_out: i64, n_steps: i64) -> Self {
        Self {
            dense: Dense::new(&(path / "lin"), fan_in, fan_out, true),
            embedding: (path / "embed").var(
                "weight",
                &[n_steps, fan_out],
                Init::Uniform { lo: 0.0, up: 1.0 },
            ),
        }
    }

    /// The layer at the `[B]` int64 step indices.
    pub fn forward(&self, x: &Tensor, steps: &Tensor) -> Tensor {
        self.embedding.index_select(0, steps) * self.dense.forward(x)
    }
}

/// The toy eps-predictor: three conditional linear layers with softplus, then a plain linear layer.
#[derive(Debug)]
pub struct ToyEpsNet {
    hidden: Vec<ConditionalLinear>,
    out: Dense,
}

impl ToyEpsNet {
    /// A `dim -> width -> width -> width -> dim` network for `n_steps` time indices.
    pub fn new(path: &Path, dim: i64, width: i64, n_steps: i64) -> Self {
        Self {
            hidden: vec![
                ConditionalLinear::new(&(path / "lin1"), dim, width, n_steps),
                ConditionalLinear::new(&(path / "lin2"), width, width, n_steps),
                ConditionalLinear::new(&(path / "lin3"), width, width, n_steps),
            ],
            out: Dense::new(&(path / "lin4"), width, dim, false),
        }
    }
}

impl EpsModel for ToyEpsNet {
    /// Times are embedding rows: whole numbers (any numeric kind).
    fn eps(&self, x: &Tensor, net_steps: &Tensor) -> Tensor {
        let rows = net_steps.to_kind(tch::Kind::Int64);
        let h = self.hidden.iter().fold(x.shallow_clone(), |h, layer| {
            crate::cpu::softplus(layer.forward(&h, &rows))
        });
        self.out.forward(&h)
    }
}

/// The toy critic f: an MLP `dim -> width -> width -> 1` with ReLU.
#[derive(Debug)]
pub struct MlpCritic {
    layers: Vec<Dense>,
}

impl MlpCritic {
    /// A handle on the same weights (training one trains the other).
    pub fn share(&self) -> Self {
        Self {
            layers: self.layers.iter().map(Dense::share).collect(),
        }
    }

    /// A critic for `dim`-dimensional samples.
    pub fn new(path: &Path, dim: i64, width: i64) -> Self {
        Self {
            layers: vec![
                Dense::new(&(path / "lin1"), dim, width, false),
                Dense::new(&(path / "lin2"), width, width, false),
                Dense::new(&(path / "lin3"), width, 1, false),
            ],
        }
    }
}

impl envs::RewardModel for MlpCritic {
    /// f of each sample of `x` (`[B, ...]`, flattened to vectors).
    fn value(&self, x: &Tensor) -> Tensor {
        let x = flat(x);
        let h = self.layers[1]
            .forward(&self.layers[0].forward(&x).relu())
            .relu();
        self.layers[2].forward(&h).squeeze_dim(-1)
    }
}

/// The last layer of a baseline, the one that outputs V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BaselineHead {
    /// A conditional linear layer, indexed by the step like the hidden ones
    /// (the authors' toy baseline, `value` in toy_exp/models.py).
    Conditional,
    /// A plain linear layer with Xavier-normal weights and PyTorch's default
    /// bias (the authors' image baseline, `Value.lin4` in critic.py).
    Linear,
}

impl BaselineHead {
    /// The authors' head for samples of `shape`: `Linear` for images
    /// (`[C, H, W]`), `Conditional` for vectors.
    pub fn default_for(shape: &[i64]) -> Self {
        if shape.len() > 1 {
            BaselineHead::Linear
        } else {
            BaselineHead::Conditional
        }
    }
}

/// A built [`BaselineHead`].
#[derive(Debug)]
pub(crate) enum Head {
    Conditional(ConditionalLinear),
    Linear(Dense),
}

impl Head {
    /// A `fan_in -> fan_out` head under `path` for `n_steps` sampler positions.
    pub(crate) fn new(
        kind: BaselineHead,
        path: &Path,
        fan_in: i64,
        fan_out: i64,
        n_steps: i64,
    ) -> Self {
        match kind {
            BaselineHead::Conditional => {
                Head::Conditional(ConditionalLinear::new(path, fan_in, fan_out, n_steps))
            }
            BaselineHead::Linear => Head::Linear(Dense::new(path, fan_in, fan_out, true)),
        }
    }

    /// The head at the `[B]` int64 step indices.
    pub(crate) fn forward(&self, x: &Tensor, steps: &Tensor) -> Tensor {
        match self {
            Head::Conditional(layer) => layer.forward(x, steps),
            Head::Linear(layer) => layer.forward(x),
        }
    }
}

/// The baseline V: conditional linear layers `dim -> hidden...`, ReLU
/// after each, then the head to 1 (the toy's hidden widths are `[256, 256]`).
#[derive(Debug)]
pub struct ConditionalBaseline {
    hidden: Vec<ConditionalLinear>,
    head: Head,
}

impl ConditionalBaseline {
    /// A baseline for `dim`-dimensional states at `n_steps` sampler
    /// positions, with the given hidden widths (layers `lin1`, `lin2`, ...,
    /// the head last).
    pub fn new(path: &Path, dim: i64, hidden: &[i64], n_steps: i64, head: BaselineHead) -> Self {
        let widths: Vec<i64> = std::iter::once(dim).chain(hidden.iter().copied()).collect();
        let layer = |i: usize| path / format!("lin{}", i + 1);
        Self {
            hidden: widths
                .windows(2)
                .enumerate()
                .map(|(i, w)| ConditionalLinear::new(&layer(i), w[0], w[1], n_steps))
                .collect(),
            head: Head::new(
                head,
                &layer(hidden.len()),
                *widths.last().expect("the input width"),
                1,
                n_steps,
            ),
        }
    }
}

impl ValueModel for ConditionalBaseline {
    /// V of each state of `x` (`[B, ...]`, flattened to vectors).
    fn value(&self, x: &Tensor, index: &Tensor) -> Tensor {
        let h = self
            .hidden
            .iter()
            .fold(flat(x), |h, layer| layer.forward(&h, index).relu());
        self.head.forward(&h, index).squeeze_dim(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envs::RewardModel;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn shapes_and_parameter_counts() {
        let _rng = envs::testing::seeded(0);
        let vs = VarStore::new(Device::Cpu);
        let net = ToyEpsNet::new(&vs.root(), 2, 128, 10);
        let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0i64, 1, 2, 9, 4]);
        assert_eq!(net.eps(&x, &t).size(), vec![5, 2]);
        let n: i64 = vs
            .trainable_variables()
            .iter()
            .map(|v| v.numel() as i64)
            .sum();
        // 3 x (W, b, gamma) + (W, b).
        assert_eq!(
            n,
            (2 * 128 + 128 + 10 * 128) + 2 * (128 * 128 + 128 + 10 * 128) + (128 * 2 + 2)
        );
        let cvs = VarStore::new(Device::Cpu);
        let critic = MlpCritic::new(&cvs.root(), 2, 256);
        assert_eq!(critic.value(&x).size(), vec![5]);
        let bvs = VarStore::new(Device::Cpu);
        let baseline =
            ConditionalBaseline::new(&bvs.root(), 2, &[256, 256], 10, BaselineHead::Conditional);
        assert_eq!(baseline.value(&x, &t).size(), vec![5]);
    }

    #[test]
    fn the_step_embedding_conditions_the_output() {
        let _rng = envs::testing::seeded(0);
        let vs = VarStore::new(Device::Cpu);
        let net = ToyEpsNet::new(&vs.root(), 2, 16, 4);
        let x = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
        let a = net.eps(&x, &Tensor::from_slice(&[0i64]));
        let b = net.eps(&x, &Tensor::from_slice(&[3i64]));
        assert!((a - b).abs().sum(Kind::Float).double_value(&[]) > 1e-4);
    }
}
