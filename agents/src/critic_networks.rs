//! The critic and baseline networks, chosen in a run's configuration: the
//! toy MLPs on flattened samples, and the authors' convolutional image
//! critic (docs/conventions.md, section 5).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Path};
use tch::{Kind, Tensor};

use crate::networks::{BaselineHead, ConditionalBaseline, Head, MlpCritic, ValueModel};
use crate::unet::conv;
use crate::AgentError;

/// The negative slope of the image critic's LeakyReLU.
const LEAKY_SLOPE: f64 = 0.2;

/// Which network the critic f is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum CriticNetwork {
    /// The toy critic: an MLP over the flattened sample, `width -> width ->
    /// 1` with ReLU (`critic.width`).
    #[default]
    Mlp,
    /// The authors' image critic: 4x4 convolutions of stride 2 and padding 1
    /// to each of `channels` in turn (each halving the resolution), LeakyReLU
    /// 0.2 after each, then a 4x4 convolution of stride 1 to one channel,
    /// averaged over space. The authors' code uses [128, 256, 512]; the
    /// paper's text says [256, 512, 1024].
    Conv {
        /// Output channels of the halving convolutions.
        #[serde(default = "image_critic_channels")]
        channels: Vec<i64>,
    },
}

fn image_critic_channels() -> Vec<i64> {
    vec![128, 256, 512]
}

/// Why a stack of halving convolutions to `channels` cannot take samples
/// of `shape` when its last map must be at least `min` x `min`, if it cannot.
fn check_halvings(shape: &[i64], channels: &[i64], min: i64, who: &str) -> Result<(), String> {
    let [_, h, w] = shape[..] else {
        return Err(format!(
            "the conv {who} takes images [C, H, W]; these samples are {shape:?} (use Mlp)"
        ));
    };
    if channels.is_empty() || channels.iter().any(|&c| c < 1) {
        return Err(format!(
            "channels must list at least one positive count, got {channels:?}"
        ));
    }
    let halvings = channels.len() as u32;
    let (fh, fw) = (h >> halvings, w >> halvings);
    if h % (1 << halvings) != 0 || w % (1 << halvings) != 0 || fh < min || fw < min {
        let why = if min > 1 {
            format!("at least {min} x {min} for the last {min}x{min} convolution")
        } else {
            "at least 1 x 1".into()
        };
        return Err(format!(
            "{h} x {w} images halved {halvings} times must stay whole and {why} (got {fh} x {fw}); use fewer channels entries"
        ));
    }
    Ok(())
}

/// How the weights of a convolution are initialised (biases always take
/// PyTorch's default, uniform in +-1/sqrt(fan_in)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvInit {
    /// PyTorch's default: uniform in +-1/sqrt(fan_in).
    Default,
    /// `nn.init.kaiming_normal_` with its defaults (fan_in, gain sqrt(2)):
    /// N(0, 2 / fan_in), as the authors' critic.py initialises every
    /// convolution of their image critic.
    KaimingNormal,
}

/// A square convolution under `path` initialised by `init`.
fn init_conv(
    path: Path,
    c_in: i64,
    c_out: i64,
    (k, stride, padding): (i64, i64, i64),
    init: ConvInit,
) -> nn::Conv2D {
    match init {
        ConvInit::Default => conv(path, c_in, c_out, k, stride, padding),
        ConvInit::KaimingNormal => {
            let fan_in = (c_in * k * k) as f64;
            let bound = 1.0 / fan_in.sqrt();
            let config = nn::ConvConfig {
                stride,
                padding,
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: (2.0 / fan_in).sqrt(),
                },
                bs_init: nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                ..Default::default()
            };
            nn::conv2d(path, c_in, c_out, k, config)
        }
    }
}

/// 4x4 convolutions of stride 2 and padding 1 from `in_channels` to each of
/// `channels` in turn (layers `conv0`, `conv1`, ...); returns them and the
/// last channel count.
fn halving_convs(
    path: &Path,
    in_channels: i64,
    channels: &[i64],
    init: ConvInit,
) -> (Vec<nn::Conv2D>, i64) {
    let mut c_in = in_channels;
    let layers = channels
        .iter()
        .enumerate()
        .map(|(i, &c_out)| {
            let layer = init_conv(path / format!("conv{i}"), c_in, c_out, (4, 2, 1), init);
            c_in = c_out;
            layer
        })
        .collect();
    (layers, c_in)
}

/// LeakyReLU(0.2): max(a, 0.2 a).
fn leaky(a: &Tensor) -> Tensor {
    a.maximum(&(a * LEAKY_SLOPE))
}

impl CriticNetwork {
    /// Why this network cannot take samples of `shape`, if it cannot.
    pub fn check(&self, shape: &[i64]) -> Result<(), String> {
        match self {
            CriticNetwork::Mlp => Ok(()),
            CriticNetwork::Conv { channels } => check_halvings(shape, channels, 4, "critic"),
        }
    }

    /// The critic for samples of `shape` under `path` (`width` for the MLP).
    pub fn build(
        &self,
        path: &Path,
        shape: &[i64],
        width: i64,
    ) -> Result<Box<dyn envs::RewardModel>, AgentError> {
        self.check(shape).map_err(|reason| AgentError::Invalid {
            field: "task.critic.network",
            reason,
        })?;
        Ok(match self {
            CriticNetwork::Mlp => Box::new(MlpCritic::new(path, shape.iter().product(), width)),
            CriticNetwork::Conv { channels } => Box::new(ConvCritic::new(path, shape[0], channels)),
        })
    }
}

/// Which network the baseline V(x_{t+1}, t+1) is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum BaselineNetwork {
    /// A conditional-linear MLP over the flattened state (widths
    /// `critic.baseline_hidden`, default `[width, width]`; the authors'
    /// image baseline is `[1024, 1024, 256]`).
    #[default]
    Mlp,
    /// A convolutional baseline of the critic's shape: 4x4 convolutions of
    /// stride 2 to each of `channels`, each scaled per channel by a learned
    /// per-step gain (the conditional-linear idea for feature maps) before
    /// LeakyReLU 0.2, then the mean over space and a conditional-linear
    /// layer to one value.
    Conv {
        /// Output channels of the halving convolutions.
        #[serde(default = "image_critic_channels")]
        channels: Vec<i64>,
    },
}

impl BaselineNetwork {
    /// Why this baseline cannot take states of `shape` with MLP widths
    /// `hidden` (if given), if it cannot.
    pub fn check(&self, shape: &[i64], hidden: Option<&[i64]>) -> Result<(), String> {
        match (self, hidden) {
            (BaselineNetwork::Mlp, Some(h)) if h.is_empty() || h.iter().any(|&w| w < 1) => Err(
                format!("baseline_hidden must list at least one positive width, got {h:?}"),
            ),
            (BaselineNetwork::Mlp, _) => Ok(()),
            (BaselineNetwork::Conv { .. }, Some(_)) => Err(
                "baseline_hidden sets the widths of the Mlp baseline; the Conv baseline takes channels".into(),
            ),
            (BaselineNetwork::Conv { channels }, None) => {
                check_halvings(shape, channels, 1, "baseline")
            }
        }
    }

    /// The baseline for states of `shape` over `horizon` sampler steps under
    /// `path` (`hidden`: the MLP's widths; `head`: its last layer).
    pub fn build(
        &self,
        path: &Path,
        shape: &[i64],
        hidden: Option<&[i64]>,
        width: i64,
        horizon: i64,
        head: BaselineHead,
    ) -> Result<Box<dyn ValueModel>, AgentError> {
        self.check(shape, hidden)
            .map_err(|reason| AgentError::Invalid {
                field: "task.critic.baseline",
                reason,
            })?;
        Ok(match self {
            BaselineNetwork::Mlp => Box::new(ConditionalBaseline::new(
                path,
                shape.iter().product(),
                hidden.unwrap_or(&[width, width]),
                horizon,
                head,
            )),
            BaselineNetwork::Conv { channels } => {
                Box::new(ConvBaseline::new(path, shape[0], channels, horizon, head))
            }
        })
    }
}

/// The convolutional baseline (see [`BaselineNetwork::Conv`]).
#[derive(Debug)]
pub struct ConvBaseline {
    halving: Vec<nn::Conv2D>,
    /// Per-step channel gains of each halving layer, `[steps, channels]`.
    gains: Vec<Tensor>,
    out: Head,
}

impl ConvBaseline {
    /// A baseline for images of `in_channels` channels at `n_steps` sampler
    /// positions, with `head` as its last layer.
    pub fn new(
        path: &Path,
        in_channels: i64,
        channels: &[i64],
        n_steps: i64,
        head: BaselineHead,
    ) -> Self {
        let (halving, last) = halving_convs(path, in_channels, channels, ConvInit::Default);
        let gains = channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                (path / format!("gain{i}")).var(
                    "weight",
                    &[n_steps, c],
                    nn::Init::Uniform { lo: 0.0, up: 1.0 },
                )
            })
            .collect();
        Self {
            halving,
            gains,
            out: Head::new(head, &(path / "out"), last, 1, n_steps),
        }
    }
}

impl ValueModel for ConvBaseline {
    /// V of each state of `x` (`[B, C, H, W]`) at the 0-based positions `index`.
    fn value(&self, x: &Tensor, index: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for (layer, gain) in self.halving.iter().zip(&self.gains) {
            let g = gain.index_select(0, index);
            let [b, c] = g.size()[..] else { unreachable!() };
            h = leaky(&(h.apply(layer) * g.view([b, c, 1, 1])));
        }
        let pooled = h.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        self.out.forward(&pooled, index).squeeze_dim(-1)
    }
}

/// The authors' image critic (see [`CriticNetwork::Conv`]).
#[derive(Debug)]
pub struct ConvCritic {
    halving: Vec<nn::Conv2D>,
    out: nn::Conv2D,
}

impl ConvCritic {
    /// A critic for images of `in_channels` channels, every convolution
    /// Kaiming-normal initialised as in the authors' critic.py.
    pub fn new(path: &Path, in_channels: i64, channels: &[i64]) -> Self {
        let init = ConvInit::KaimingNormal;
        let (halving, last) = halving_convs(path, in_channels, channels, init);
        Self {
            halving,
            out: init_conv(path / "out", last, 1, (4, 1, 0), init),
        }
    }
}

impl envs::RewardModel for ConvCritic {
    /// f of each image of `x` (`[B, C, H, W]`).
    fn value(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for layer in &self.halving {
            h = leaky(&h.apply(layer));
        }
        h.apply(&self.out)
            .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envs::RewardModel;
    use tch::nn::VarStore;
    use tch::Device;

    fn parameters(vs: &VarStore) -> i64 {
        vs.trainable_variables()
            .iter()
            .map(|v| v.numel() as i64)
            .sum()
    }

    #[test]
    fn the_image_critic_has_the_authors_layers() {
        let vs = VarStore::new(Device::Cpu);
        let critic = CriticNetwork::Conv {
            channels: image_critic_channels(),
        }
        .build(&vs.root(), &[3, 32, 32], 0)
        .unwrap();
        let x = Tensor::randn([5, 3, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!(critic.value(&x).size(), vec![5]);
        // 4x4 kernels: 3 -> 128 -> 256 -> 512, then 512 -> 1.
        let conv = |i: i64, o: i64| i * o * 16 + o;
        assert_eq!(
            parameters(&vs),
            conv(3, 128) + conv(128, 256) + conv(256, 512) + conv(512, 1)
        );
        // At 64 x 64 the last map is 5 x 5, averaged.
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(critic.value(&x).size(), vec![2]);
    }

    #[test]
    fn the_image_critic_computes_leaky_convolutions_and_averages() {
        let vs = VarStore::new(Device::Cpu);
        let critic = ConvCritic::new(&vs.root(), 1, &[1]);
        tch::no_grad(|| {
            for (name, mut v) in vs.variables() {
                // The halving conv sums its 4x4 window less 12; the last averages.
                let value = match name.as_str() {
                    "conv0.weight" => 1.0,
                    "conv0.bias" => -12.0,
                    "out.weight" => 1.0 / 16.0,
                    _ => 0.0,
                };
                let _ = v.fill_(value);
            }
        });
        // An 8 x 8 image of ones, zero-padded: the 4 x 4 map after the
        // halving conv has 9 - 12 = -3 at the corners (LeakyReLU: -0.6),
        // 12 - 12 = 0 on the other border cells and 16 - 12 = 4 inside, so
        // f = (4 x -0.6 + 4 x 4) / 16 = 0.85.
        let x = Tensor::ones([1, 1, 8, 8], (Kind::Float, Device::Cpu));
        let f = critic.value(&x).double_value(&[0]);
        assert!((f - 0.85).abs() < 1e-6, "{f}");
    }

    #[test]
    fn the_image_critic_is_kaiming_normal_initialised_as_the_authors() {
        let _rng = envs::testing::seeded(5);
        let vs = VarStore::new(Device::Cpu);
        let _critic = ConvCritic::new(&vs.root(), 3, &image_critic_channels());
        // kaiming_normal_: N(0, 2 / fan_in); biases PyTorch's default.
        for (name, fan_in) in [
            ("conv0", 3 * 16),
            ("conv1", 128 * 16),
            ("conv2", 256 * 16),
            ("out", 512 * 16),
        ] {
            let w = &vs.variables()[&format!("{name}.weight")];
            let want = (2.0 / fan_in as f64).sqrt();
            let std = w.std(true).double_value(&[]);
            let tolerance = if w.numel() > 10_000 { 0.02 } else { 0.1 };
            assert!(
                (std / want - 1.0).abs() < tolerance,
                "{name}: {std} vs {want}"
            );
            assert!(
                w.mean(Kind::Float).double_value(&[]).abs()
                    < 3.0 * want / (w.numel() as f64).sqrt() + 1e-9
            );
            let bias = vs.variables()[&format!("{name}.bias")]
                .abs()
                .max()
                .double_value(&[]);
            assert!(bias <= 1.0 / (fan_in as f64).sqrt(), "{name}: bias {bias}");
        }
    }

    #[test]
    fn the_conv_baseline_is_of_the_mlp_baselines_size_class_and_step_conditioned() {
        let _rng = envs::testing::seeded(4);
        let shape = [3i64, 32, 32];
        let conv_vs = VarStore::new(Device::Cpu);
        let conv = BaselineNetwork::Conv {
            channels: image_critic_channels(),
        }
        .build(
            &conv_vs.root(),
            &shape,
            None,
            256,
            10,
            BaselineHead::Conditional,
        )
        .unwrap();
        let mlp_vs = VarStore::new(Device::Cpu);
        let hidden = [1024i64, 1024, 256];
        let _mlp = BaselineNetwork::Mlp
            .build(
                &mlp_vs.root(),
                &shape,
                Some(&hidden),
                256,
                10,
                BaselineHead::default_for(&shape),
            )
            .unwrap();
        let convs = |i: i64, o: i64| i * o * 16 + o;
        let gains = 10 * (128 + 256 + 512);
        let head = 512 + 1 + 10;
        assert_eq!(
            parameters(&conv_vs),
            convs(3, 128) + convs(128, 256) + convs(256, 512) + gains + head
        );
        let lin = |i: i64, o: i64| i * o + o + 10 * o;
        // The authors' image baseline ends in a plain linear layer.
        assert_eq!(
            parameters(&mlp_vs),
            lin(3072, 1024) + lin(1024, 1024) + lin(1024, 256) + 256 + 1
        );
        assert!(mlp_vs.variables().contains_key("lin4.weight"));
        // Millions both: 2.6M against 4.5M.
        let ratio = parameters(&conv_vs) as f64 / parameters(&mlp_vs) as f64;
        assert!((0.5..1.0).contains(&ratio), "{ratio}");
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let early = conv.value(&x, &Tensor::from_slice(&[0i64, 0, 0, 0]));
        let late = conv.value(&x, &Tensor::from_slice(&[9i64, 9, 9, 9]));
        assert_eq!(early.size(), vec![4]);
        assert!((early - late).abs().max().double_value(&[]) > 1e-6);
        // Gradients reach every layer.
        let loss = conv
            .value(&x, &Tensor::from_slice(&[1i64, 2, 3, 4]))
            .sum(Kind::Float);
        loss.backward();
        for (name, v) in conv_vs.variables() {
            assert!(v.grad().defined(), "{name} has no gradient");
        }
    }

    #[test]
    fn baselines_that_cannot_take_the_shape_are_refused() {
        let conv = BaselineNetwork::Conv {
            channels: vec![8, 8, 8, 8],
        };
        assert!(conv.check(&[1, 16, 16], None).is_ok());
        let err = conv.check(&[1, 8, 8], None).unwrap_err();
        assert!(err.contains("at least 1 x 1"), "{err}");
        let err = conv.check(&[3, 32, 32], Some(&[64])).unwrap_err();
        assert!(err.contains("takes channels"), "{err}");
        assert!(BaselineNetwork::Mlp.check(&[2], Some(&[])).is_err());
        assert!(BaselineNetwork::Mlp.check(&[2], None).is_ok());
    }

    #[test]
    fn shapes_the_conv_critic_cannot_take_are_refused() {
        let conv = CriticNetwork::Conv {
            channels: image_critic_channels(),
        };
        assert!(conv.check(&[3, 32, 32]).is_ok());
        let err = conv.check(&[1, 8, 8]).unwrap_err();
        assert!(err.contains("use fewer channels entries"), "{err}");
        assert!(CriticNetwork::Conv { channels: vec![64] }
            .check(&[1, 8, 8])
            .is_ok());
        assert!(conv.check(&[2]).unwrap_err().contains("use Mlp"));
        assert!(CriticNetwork::Mlp.check(&[2]).is_ok());
    }
}
