//! The critic and baseline networks, chosen in a run's configuration: the
//! toy MLPs on flattened samples, and the authors' convolutional image
//! critic (docs/conventions.md, section 5).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Path};
use tch::{Kind, Tensor};

use crate::networks::{ConditionalBaseline, MlpCritic, ValueModel};
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

impl CriticNetwork {
    /// Why this network cannot take samples of `shape`, if it cannot.
    pub fn check(&self, shape: &[i64]) -> Result<(), String> {
        let CriticNetwork::Conv { channels } = self else {
            return Ok(());
        };
        let [_, h, w] = shape[..] else {
            return Err(format!(
                "the conv critic takes images [C, H, W]; these samples are {shape:?} (use Mlp)"
            ));
        };
        if channels.is_empty() || channels.iter().any(|&c| c < 1) {
            return Err(format!(
                "channels must list at least one positive count, got {channels:?}"
            ));
        }
        let halvings = channels.len() as u32;
        let (fh, fw) = (h >> halvings, w >> halvings);
        if h % (1 << halvings) != 0 || w % (1 << halvings) != 0 || fh < 4 || fw < 4 {
            return Err(format!(
                "{h} x {w} images halved {halvings} times must stay whole and at least 4 x 4 for the last 4x4 convolution (got {fh} x {fw}); use fewer channels entries"
            ));
        }
        Ok(())
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

/// The baseline V for states of `shape` over `horizon` sampler steps: a
/// conditional-linear MLP over the flattened state with `hidden` widths
/// (the toy's `[width, width]`, the authors' image baseline
/// `[1024, 1024, 256]`).
pub fn build_baseline(
    path: &Path,
    shape: &[i64],
    hidden: &[i64],
    horizon: i64,
) -> Result<Box<dyn ValueModel>, AgentError> {
    if hidden.is_empty() || hidden.iter().any(|&w| w < 1) {
        return Err(AgentError::Invalid {
            field: "task.critic.baseline_hidden",
            reason: format!("must list at least one positive width, got {hidden:?}"),
        });
    }
    Ok(Box::new(ConditionalBaseline::new(
        path,
        shape.iter().product(),
        hidden,
        horizon,
    )))
}

/// The authors' image critic (see [`CriticNetwork::Conv`]).
#[derive(Debug)]
pub struct ConvCritic {
    halving: Vec<nn::Conv2D>,
    out: nn::Conv2D,
}

impl ConvCritic {
    /// A critic for images of `in_channels` channels.
    pub fn new(path: &Path, in_channels: i64, channels: &[i64]) -> Self {
        let mut c_in = in_channels;
        let halving = channels
            .iter()
            .enumerate()
            .map(|(i, &c_out)| {
                let layer = conv(path / format!("conv{i}"), c_in, c_out, 4, 2, 1);
                c_in = c_out;
                layer
            })
            .collect();
        Self {
            halving,
            out: conv(path / "out", c_in, 1, 4, 1, 0),
        }
    }
}

impl envs::RewardModel for ConvCritic {
    /// f of each image of `x` (`[B, C, H, W]`).
    fn value(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for layer in &self.halving {
            let a = h.apply(layer);
            // LeakyReLU(0.2): max(a, 0.2 a).
            h = a.maximum(&(&a * LEAKY_SLOPE));
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
