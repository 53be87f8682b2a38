//! The DDPM U-Net of Ho et al. (2020), the eps-predictor of every public
//! image diffusion checkpoint the paper starts from (CIFAR-10, CelebA 64).
//!
//! The network is the one diffusers calls `UNet2DModel` with its DDPM
//! configuration, and its variables carry diffusers' names
//! (`down_blocks.1.attentions.0.to_q.weight`, ...), so that a diffusers
//! folder loads tensor for tensor and the original DDPM/DDIM layout loads
//! after renaming (scripts/convert_weights.py). Built from a [`UNetConfig`]
//! in Ho et al.'s terms (base channels, channel multipliers, residual blocks
//! per level, attention resolutions, dropout, convolutional resampling), so
//! the CIFAR-10 model (35,746,307 parameters) and the CelebA 64 model
//! (78,700,803) are the same code.
//!
//! Structure (channels `c_i` = channels x channel_mult\[i\], L levels):
//! - time: sinusoidal embedding of the (real-valued) time, then
//!   linear -> SiLU -> linear to 4 x channels;
//! - `conv_in` 3x3 to c_0;
//! - per level i: `res_blocks` residual blocks (each followed by a
//!   single-head self-attention where the level's resolution is an attention
//!   resolution), then a stride-2 downsampling except at the last level;
//! - middle: residual block, attention, residual block;
//! - per level, deepest first: `res_blocks + 1` residual blocks on the
//!   concatenation with the matching skip activation (plus attention as on
//!   the way down), then a nearest-neighbour x2 upsampling and 3x3 conv
//!   except at the top;
//! - GroupNorm -> SiLU -> `conv_out` 3x3.
//!
//! Residual block: GroupNorm -> SiLU -> conv3x3, plus a projection of
//! SiLU(time embedding), GroupNorm -> SiLU -> dropout -> conv3x3, added to
//! the input (through a 1x1 conv where the channels change).

use std::cell::Cell;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Path};
use tch::{Kind, Tensor};

use crate::networks::EpsModel;

/// The U-Net's settings, in Ho et al.'s terms. The default is the CIFAR-10
/// model of the paper (google/ddpm-cifar10-32).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UNetConfig {
    /// Channels of the images (3 for RGB, 1 for MNIST and digits).
    pub in_channels: i64,
    /// Height and width of the images the network was built for.
    pub resolution: i64,
    /// Base channel count (`ch`): the first level's width.
    pub channels: i64,
    /// Width of each level as a multiple of `channels` (`ch_mult`), starting
    /// with 1; its length is the number of levels.
    pub channel_mult: Vec<i64>,
    /// Residual blocks per level on the way down (`num_res_blocks`); the way
    /// up has one more per level.
    pub res_blocks: i64,
    /// Resolutions (height in pixels) at which every residual block is
    /// followed by self-attention (`attn_resolutions`).
    pub attention_resolutions: Vec<i64>,
    /// Self-attention between the two middle residual blocks.
    pub mid_attention: bool,
    /// Channels per attention head; `None`: one head over all channels (DDPM).
    pub attention_head_dim: Option<i64>,
    /// Dropout inside residual blocks while training.
    pub dropout: f64,
    /// Down- and upsample with convolutions (`resamp_with_conv`); without,
    /// 2x2 average pooling and plain nearest-neighbour upsampling.
    pub conv_resample: bool,
    /// Padding of the downsampling conv: 0 pads only right and bottom by one
    /// (the original DDPM code), 1 pads every side.
    pub downsample_padding: i64,
    /// Groups of every GroupNorm.
    pub norm_groups: i64,
    /// Epsilon of every GroupNorm.
    pub norm_eps: f64,
    /// Order of the time embedding's halves: `false` is sin then cos (DDPM).
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the time embedding: frequencies are
    /// exp(-ln(10000) i / (half - shift)); 1 in DDPM.
    pub freq_shift: f64,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self::cifar10()
    }
}

impl UNetConfig {
    /// The CIFAR-10 model of Ho et al.: ch 128, ch_mult (1, 2, 2, 2), 2 blocks,
    /// attention at 16x16, dropout 0.1; 35,746,307 parameters.
    pub fn cifar10() -> Self {
        Self {
            in_channels: 3,
            resolution: 32,
            channels: 128,
            channel_mult: vec![1, 2, 2, 2],
            res_blocks: 2,
            attention_resolutions: vec![16],
            mid_attention: true,
            attention_head_dim: None,
            dropout: 0.1,
            conv_resample: true,
            downsample_padding: 0,
            norm_groups: 32,
            norm_eps: 1e-6,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
        }
    }

    /// The CelebA 64 model of the DDIM code: ch 128, ch_mult (1, 2, 2, 2, 4),
    /// 2 blocks, attention at 16x16; 78,700,803 parameters.
    pub fn celeba64() -> Self {
        Self {
            resolution: 64,
            channel_mult: vec![1, 2, 2, 2, 4],
            ..Self::cifar10()
        }
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.channel_mult.len()
    }

    /// Output channels of level `i`.
    pub fn level_channels(&self, i: usize) -> i64 {
        self.channels * self.channel_mult[i]
    }

    /// Whether the blocks of level `i` (at resolution / 2^i) have attention.
    pub fn level_attention(&self, i: usize) -> bool {
        self.attention_resolutions
            .contains(&(self.resolution >> i as u32))
    }

    /// Width of the time embedding (4 x channels).
    pub fn time_embedding_channels(&self) -> i64 {
        4 * self.channels
    }

    /// Checks the settings; returns the field at fault and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = |field, v: i64| {
            if v >= 1 {
                Ok(())
            } else {
                Err((field, format!("must be at least 1, got {v}")))
            }
        };
        positive("in_channels", self.in_channels)?;
        positive("channels", self.channels)?;
        positive("res_blocks", self.res_blocks)?;
        positive("norm_groups", self.norm_groups)?;
        if self.channel_mult.first() != Some(&1) || self.channel_mult.iter().any(|&m| m < 1) {
            return Err((
                "channel_mult",
                format!(
                    "must list positive multipliers starting with 1 (the first level is `channels` wide), got {:?}",
                    self.channel_mult
                ),
            ));
        }
        let shrink = 1i64 << (self.levels() - 1);
        if self.resolution < 1 || self.resolution % shrink != 0 {
            return Err((
                "resolution",
                format!(
                    "must be divisible by {shrink} ({} levels halve it {} times), got {}",
                    self.levels(),
                    self.levels() - 1,
                    self.resolution
                ),
            ));
        }
        for i in 0..self.levels() {
            let c = self.level_channels(i);
            if c % self.norm_groups != 0 {
                return Err((
                    "norm_groups",
                    format!(
                        "{} does not divide level {i}'s {c} channels",
                        self.norm_groups
                    ),
                ));
            }
            if let Some(d) = self.attention_head_dim {
                if d < 1 || c % d != 0 {
                    return Err((
                        "attention_head_dim",
                        format!("{d} does not divide level {i}'s {c} channels"),
                    ));
                }
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err((
                "dropout",
                format!("must lie in [0, 1), got {}", self.dropout),
            ));
        }
        if !(self.downsample_padding == 0 || self.downsample_padding == 1) {
            return Err((
                "downsample_padding",
                format!("must be 0 or 1, got {}", self.downsample_padding),
            ));
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            return Err(("norm_eps", format!("must be > 0, got {}", self.norm_eps)));
        }
        Ok(())
    }
}

/// A square convolution with PyTorch's default initialisation.
pub(crate) fn conv(
    path: Path,
    c_in: i64,
    c_out: i64,
    k: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding,
        ..torch_default_conv(c_in * k * k)
    };
    nn::conv2d(path, c_in, c_out, k, config)
}

/// PyTorch's default initialisation of a conv or linear layer: weights and
/// bias uniform in +-1/sqrt(fan_in).
fn torch_default_conv(fan_in: i64) -> nn::ConvConfig {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::ConvConfig {
        ws_init: nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
        bs_init: nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
        ..Default::default()
    }
}

fn linear(path: Path, c_in: i64, c_out: i64) -> nn::Linear {
    let bound = 1.0 / (c_in as f64).sqrt();
    nn::linear(
        path,
        c_in,
        c_out,
        nn::LinearConfig {
            ws_init: nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            bs_init: Some(nn::Init::Uniform {
                lo: -bound,
                up: bound,
            }),
            bias: true,
        },
    )
}

/// GroupNorm with an affine weight (ones) and bias (zeros).
#[derive(Debug)]
pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub(crate) fn new(path: Path, groups: i64, channels: i64, eps: f64) -> Self {
        Self {
            weight: path.var("weight", &[channels], nn::Init::Const(1.0)),
            bias: path.var("bias", &[channels], nn::Init::Const(0.0)),
            groups,
            eps,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// The residual block (diffusers' `ResnetBlock2D`).
#[derive(Debug)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: nn::Conv2D,
    time_emb_proj: nn::Linear,
    norm2: GroupNorm,
    conv2: nn::Conv2D,
    conv_shortcut: Option<nn::Conv2D>,
    dropout: f64,
}

impl ResBlock {
    fn new(path: &Path, c_in: i64, c_out: i64, config: &UNetConfig) -> Self {
        let (g, eps) = (config.norm_groups, config.norm_eps);
        Self {
            norm1: GroupNorm::new(path / "norm1", g, c_in, eps),
            conv1: conv(path / "conv1", c_in, c_out, 3, 1, 1),
            time_emb_proj: linear(
                path / "time_emb_proj",
                config.time_embedding_channels(),
                c_out,
            ),
            norm2: GroupNorm::new(path / "norm2", g, c_out, eps),
            conv2: conv(path / "conv2", c_out, c_out, 3, 1, 1),
            conv_shortcut: (c_in != c_out)
                .then(|| conv(path / "conv_shortcut", c_in, c_out, 1, 1, 0)),
            dropout: config.dropout,
        }
    }

    fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let h = self.norm1.forward(x).silu().apply(&self.conv1);
        let t = temb
            .silu()
            .apply(&self.time_emb_proj)
            .unsqueeze(-1)
            .unsqueeze(-1);
        let h = self.norm2.forward(&(h + t)).silu();
        let h = h.dropout(self.dropout, train).apply(&self.conv2);
        let skip = match &self.conv_shortcut {
            Some(c) => x.apply(c),
            None => x.shallow_clone(),
        };
        skip + h
    }
}

/// Self-attention over the pixels (diffusers' `Attention` with a GroupNorm
/// and a residual connection).
#[derive(Debug)]
struct SelfAttention {
    group_norm: GroupNorm,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
}

impl SelfAttention {
    fn new(path: &Path, channels: i64, config: &UNetConfig) -> Self {
        let head_dim = config.attention_head_dim.unwrap_or(channels);
        Self {
            group_norm: GroupNorm::new(
                path / "group_norm",
                config.norm_groups,
                channels,
                config.norm_eps,
            ),
            to_q: linear(path / "to_q", channels, channels),
            to_k: linear(path / "to_k", channels, channels),
            to_v: linear(path / "to_v", channels, channels),
            to_out: linear(path / "to_out" / "0", channels, channels),
            heads: channels / head_dim,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("a [B, C, H, W] activation");
        let head_dim = c / self.heads;
        let pixels = self
            .group_norm
            .forward(&x.view([b, c, h * w]))
            .transpose(1, 2);
        let split = |t: Tensor| t.view([b, h * w, self.heads, head_dim]).transpose(1, 2);
        let q = split(pixels.apply(&self.to_q));
        let k = split(pixels.apply(&self.to_k));
        let v = split(pixels.apply(&self.to_v));
        let attended = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let out = attended
            .transpose(1, 2)
            .reshape([b, h * w, c])
            .apply(&self.to_out)
            .transpose(1, 2)
            .reshape([b, c, h, w]);
        out + x
    }
}

/// One level of the way down or up: residual blocks, attention after each
/// where the level has it, then the resampling (if any).
#[derive(Debug)]
struct Level {
    resnets: Vec<ResBlock>,
    attentions: Vec<SelfAttention>,
    resample: Option<Option<nn::Conv2D>>,
}

/// The DDPM U-Net: an [`EpsModel`] on `[B, C, H, W]` images at real-valued times.
#[derive(Debug)]
pub struct UNet {
    config: UNetConfig,
    conv_in: nn::Conv2D,
    time_linear_1: nn::Linear,
    time_linear_2: nn::Linear,
    down: Vec<Level>,
    mid_resnets: [ResBlock; 2],
    mid_attention: Option<SelfAttention>,
    up: Vec<Level>,
    conv_norm_out: GroupNorm,
    conv_out: nn::Conv2D,
    train: Cell<bool>,
}

impl UNet {
    /// A freshly initialised U-Net under `path` (PyTorch's default
    /// initialisation, as diffusers builds it). Check the config with
    /// [`UNetConfig::validate`] first.
    pub fn new(path: &Path, config: &UNetConfig) -> Self {
        let levels = config.levels();
        let c0 = config.channels;
        let temb = config.time_embedding_channels();
        let mut down = Vec::with_capacity(levels);
        let mut out_c = c0;
        for i in 0..levels {
            let p = path / "down_blocks" / i;
            let in_c = out_c;
            out_c = config.level_channels(i);
            let resnets = (0..config.res_blocks)
                .map(|j| {
                    let c = if j == 0 { in_c } else { out_c };
                    ResBlock::new(&(&p / "resnets" / j), c, out_c, config)
                })
                .collect();
            let attentions = if config.level_attention(i) {
                (0..config.res_blocks)
                    .map(|j| SelfAttention::new(&(&p / "attentions" / j), out_c, config))
                    .collect()
            } else {
                Vec::new()
            };
            let resample = (i + 1 < levels).then(|| {
                config.conv_resample.then(|| {
                    conv(
                        &p / "downsamplers" / 0 / "conv",
                        out_c,
                        out_c,
                        3,
                        2,
                        config.downsample_padding,
                    )
                })
            });
            down.push(Level {
                resnets,
                attentions,
                resample,
            });
        }
        let deepest = config.level_channels(levels - 1);
        let mid = path / "mid_block";
        let mid_resnets = [
            ResBlock::new(&(&mid / "resnets" / 0), deepest, deepest, config),
            ResBlock::new(&(&mid / "resnets" / 1), deepest, deepest, config),
        ];
        let mid_attention = config
            .mid_attention
            .then(|| SelfAttention::new(&(&mid / "attentions" / 0), deepest, config));
        let mut up = Vec::with_capacity(levels);
        let mut out_c = deepest;
        for i in 0..levels {
            let level = levels - 1 - i;
            let p = path / "up_blocks" / i;
            let prev_c = out_c;
            out_c = config.level_channels(level);
            let skip_in = config.level_channels(level.saturating_sub(1));
            let blocks = config.res_blocks + 1;
            let resnets = (0..blocks)
                .map(|j| {
                    let skip = if j == blocks - 1 { skip_in } else { out_c };
                    let c = if j == 0 { prev_c } else { out_c };
                    ResBlock::new(&(&p / "resnets" / j), c + skip, out_c, config)
                })
                .collect();
            let attentions = if config.level_attention(level) {
                (0..blocks)
                    .map(|j| SelfAttention::new(&(&p / "attentions" / j), out_c, config))
                    .collect()
            } else {
                Vec::new()
            };
            let resample = (level > 0).then(|| {
                config
                    .conv_resample
                    .then(|| conv(&p / "upsamplers" / 0 / "conv", out_c, out_c, 3, 1, 1))
            });
            up.push(Level {
                resnets,
                attentions,
                resample,
            });
        }
        Self {
            config: config.clone(),
            conv_in: conv(path / "conv_in", config.in_channels, c0, 3, 1, 1),
            time_linear_1: linear(path / "time_embedding" / "linear_1", c0, temb),
            time_linear_2: linear(path / "time_embedding" / "linear_2", temb, temb),
            down,
            mid_resnets,
            mid_attention,
            up,
            conv_norm_out: GroupNorm::new(
                path / "conv_norm_out",
                config.norm_groups,
                c0,
                config.norm_eps,
            ),
            conv_out: conv(path / "conv_out", c0, config.in_channels, 3, 1, 1),
            train: Cell::new(false),
        }
    }

    /// The settings it was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The sinusoidal embedding of real-valued times `t` (`[B]`), computed in
    /// float32 in the order diffusers computes it.
    pub fn time_features(&self, t: &Tensor) -> Tensor {
        let half = self.config.channels / 2;
        let device = t.device();
        let exponent = Tensor::arange(half, (Kind::Float, device)) * -(10000f64.ln())
            / (half as f64 - self.config.freq_shift);
        let angles = t.to_kind(Kind::Float).unsqueeze(1) * exponent.exp().unsqueeze(0);
        let (sin, cos) = (angles.sin(), angles.cos());
        let emb = if self.config.flip_sin_to_cos {
            Tensor::cat(&[cos, sin], -1)
        } else {
            Tensor::cat(&[sin, cos], -1)
        };
        if self.config.channels % 2 == 1 {
            emb.constant_pad_nd([0, 1])
        } else {
            emb
        }
    }

    fn downsample(&self, conv: &Option<nn::Conv2D>, x: &Tensor) -> Tensor {
        match conv {
            Some(c) if self.config.downsample_padding == 0 => {
                x.constant_pad_nd([0, 1, 0, 1]).apply(c)
            }
            Some(c) => x.apply(c),
            None => x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>),
        }
    }

    fn upsample(conv: &Option<nn::Conv2D>, x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.size4().expect("a [B, C, H, W] activation");
        let up = x.upsample_nearest2d([2 * h, 2 * w], None, None);
        match conv {
            Some(c) => up.apply(c),
            None => up,
        }
    }

    /// eps(x, t) for `[B, C, H, W]` images `x` and `[B]` times `t` (any
    /// numeric kind; real values are fine).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Tensor {
        self.output(&self.features(x, t))
    }

    /// The last up block's feature map (`[B, channels, H, W]`), which the
    /// output block (GroupNorm, SiLU, `conv_out`) turns into eps.
    pub fn features(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let train = self.train.get();
        // In float32, then in the network's kind, as diffusers does.
        let temb = self
            .time_features(t)
            .to_kind(x.kind())
            .apply(&self.time_linear_1)
            .silu()
            .apply(&self.time_linear_2);
        let mut h = x.apply(&self.conv_in);
        let mut skips = vec![h.shallow_clone()];
        for level in &self.down {
            for (j, block) in level.resnets.iter().enumerate() {
                h = block.forward(&h, &temb, train);
                if let Some(attn) = level.attentions.get(j) {
                    h = attn.forward(&h);
                }
                skips.push(h.shallow_clone());
            }
            if let Some(conv) = &level.resample {
                h = self.downsample(conv, &h);
                skips.push(h.shallow_clone());
            }
        }
        h = self.mid_resnets[0].forward(&h, &temb, train);
        if let Some(attn) = &self.mid_attention {
            h = attn.forward(&h);
        }
        h = self.mid_resnets[1].forward(&h, &temb, train);
        for level in &self.up {
            for (j, block) in level.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up block");
                h = block.forward(&Tensor::cat(&[h, skip], 1), &temb, train);
                if let Some(attn) = level.attentions.get(j) {
                    h = attn.forward(&h);
                }
            }
            if let Some(conv) = &level.resample {
                h = Self::upsample(conv, &h);
            }
        }
        h
    }

    /// The output block on [`UNet::features`]: eps.
    pub fn output(&self, features: &Tensor) -> Tensor {
        self.conv_norm_out
            .forward(features)
            .silu()
            .apply(&self.conv_out)
    }
}

impl EpsModel for UNet {
    fn eps(&self, x: &Tensor, net_steps: &Tensor) -> Tensor {
        self.forward(x, net_steps)
    }

    fn set_training(&self, train: bool) {
        self.train.set(train);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    fn count(config: &UNetConfig) -> i64 {
        let vs = VarStore::new(Device::Cpu);
        let _net = UNet::new(&vs.root(), config);
        vs.trainable_variables()
            .iter()
            .map(|v| v.numel() as i64)
            .sum()
    }

    #[test]
    fn the_paper_models_have_their_published_sizes() {
        assert_eq!(count(&UNetConfig::cifar10()), 35_746_307);
        assert_eq!(count(&UNetConfig::celeba64()), 78_700_803);
    }

    #[test]
    fn shapes_go_through_and_dropout_follows_the_mode() {
        let config = UNetConfig {
            in_channels: 1,
            resolution: 8,
            channels: 16,
            channel_mult: vec![1, 2],
            res_blocks: 1,
            attention_resolutions: vec![4],
            norm_groups: 8,
            dropout: 0.5,
            ..UNetConfig::cifar10()
        };
        config.validate().unwrap();
        let vs = VarStore::new(Device::Cpu);
        let net = UNet::new(&vs.root(), &config);
        let x = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0.0f32, 12.5, 999.0]);
        let a = net.forward(&x, &t);
        assert_eq!(a.size(), vec![3, 1, 8, 8]);
        // Evaluation mode is deterministic; training mode drops units.
        assert!(a.equal(&net.forward(&x, &t)));
        net.set_training(true);
        assert!(!a.equal(&net.forward(&x, &t)));
    }

    #[test]
    fn impossible_settings_are_named() {
        let bad = UNetConfig {
            resolution: 30,
            ..UNetConfig::cifar10()
        };
        assert_eq!(bad.validate().unwrap_err().0, "resolution");
        let bad = UNetConfig {
            norm_groups: 48,
            ..UNetConfig::cifar10()
        };
        assert_eq!(bad.validate().unwrap_err().0, "norm_groups");
    }
}
