//! A covariance head on a frozen DDPM U-Net (Bao et al. 2022b, SN-DDPM and
//! NPR-DDPM), built and trained as their code does
//! (baofff/Extended-Analytic-DPM: `libs/iddpm/customized.py`,
//! `core/criterions/ddpm.py`): a new output block (GroupNorm, SiLU, a 3x3
//! conv initialised to zero) reads the U-Net's last feature map beside the
//! pretrained output block; only the new block trains.
//!
//! Its loss, for x_n = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps at n uniform
//! over the T training steps: the pixel sum of (eps^2 - h)^2 for the
//! squared noise (SN), of ((eps - eps^)^2 - g)^2 for the residual (NPR,
//! eps^ detached), averaged over the batch. The frozen trunk keeps its
//! dropout on while the head trains (their `models.train()`).

use envs::samplers::CovarianceTarget;
use envs::schedule::{Schedule, StepCoefficients};
use tch::nn::{self, Module, Path, VarStore};
use tch::{Kind, Tensor};

use crate::error::ensure_finite;
use crate::networks::EpsModel;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::policy::DiffusionPolicy;
use crate::unet::{GroupNorm, UNet, UNetConfig};
use crate::AgentError;

/// Where the head's variables live in the policy's variables.
pub const HEAD_PREFIX: &str = "covariance_head";

/// The new output block: GroupNorm, SiLU, and a zero-initialised 3x3 conv
/// to the image channels.
#[derive(Debug)]
struct CovarianceHead {
    norm: GroupNorm,
    conv: nn::Conv2D,
}

impl CovarianceHead {
    fn new(path: Path, config: &UNetConfig) -> Self {
        let zeros = nn::ConvConfig {
            padding: 1,
            ws_init: nn::Init::Const(0.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        Self {
            norm: GroupNorm::new(
                &path / "norm",
                config.norm_groups,
                config.channels,
                config.norm_eps,
            ),
            conv: nn::conv2d(
                &path / "conv",
                config.channels,
                config.in_channels,
                3,
                zeros,
            ),
        }
    }

    fn forward(&self, features: &Tensor) -> Tensor {
        self.conv.forward(&self.norm.forward(features).silu())
    }
}

/// The U-Net with a covariance head: its output is the noise prediction
/// and the head's, concatenated on the channel axis (`2 C` channels).
struct CovarianceUNet {
    unet: UNet,
    head: CovarianceHead,
}

impl EpsModel for CovarianceUNet {
    fn eps(&self, x: &Tensor, net_steps: &Tensor) -> Tensor {
        let features = self.unet.features(x, net_steps);
        Tensor::cat(
            &[self.unet.output(&features), self.head.forward(&features)],
            1,
        )
    }

    fn set_training(&self, train: bool) {
        self.unet.set_training(train);
    }
}

/// A policy of the U-Net of `config` with a covariance head, stepping
/// through `schedule` (sampled by SN-DDPM or NPR-DDPM once their sampler is
/// set); the network's output has twice the image channels.
pub fn covariance_policy(
    schedule: &Schedule,
    config: &UNetConfig,
    device: tch::Device,
) -> DiffusionPolicy {
    let vs = VarStore::new(device);
    let net = CovarianceUNet {
        unet: UNet::new(&vs.root(), config),
        head: CovarianceHead::new(vs.root() / HEAD_PREFIX, config),
    };
    DiffusionPolicy::with_model(schedule, vs, Box::new(net))
}

/// Copies the U-Net's weights of `pretrained` into `policy` (a
/// [`covariance_policy`] of the same U-Net) and freezes them: only the head
/// trains.
///
/// # Errors
/// When a variable of the U-Net is missing from `pretrained` or has
/// another shape.
pub fn load_trunk(policy: &mut DiffusionPolicy, pretrained: &VarStore) -> Result<(), AgentError> {
    let source = pretrained.variables();
    for (name, mut var) in policy.var_store().variables() {
        if name.starts_with(HEAD_PREFIX) {
            continue;
        }
        let Some(value) = source.get(&name) else {
            return Err(AgentError::State(format!(
                "the pretrained U-Net lacks {name}"
            )));
        };
        if value.size() != var.size() {
            return Err(AgentError::State(format!(
                "{name}: the pretrained U-Net's is {:?}, the head's trunk {:?}",
                value.size(),
                var.size()
            )));
        }
        tch::no_grad(|| var.copy_(value));
        let _ = var.set_requires_grad(false);
    }
    Ok(())
}

/// The loss of a covariance head (summed over an image's pixels, averaged
/// over the batch) for the true noise `noise` and the network's output
/// `output` (noise prediction, then the head's).
pub fn covariance_loss(target: CovarianceTarget, noise: &Tensor, output: &Tensor) -> Tensor {
    let channels = noise.size()[1];
    let eps = output.narrow(1, 0, channels);
    let head = output.narrow(1, channels, channels);
    let aim = match target {
        CovarianceTarget::SquaredNoise => noise.square(),
        CovarianceTarget::Residual => (noise - eps).detach().square(),
    };
    let dims: Vec<i64> = (1..noise.dim() as i64).collect();
    (aim - head)
        .square()
        .sum_dim_intlist(dims.as_slice(), false, Kind::Float)
        .mean(Kind::Float)
}

/// Trains a covariance head (Adam by default, lr 1e-4, no clipping).
pub struct CovarianceFitter {
    target: CovarianceTarget,
    optimizer: Optimizer,
    training: StepCoefficients,
}

impl CovarianceFitter {
    /// A fitter of `policy`'s head (built by [`covariance_policy`], its
    /// trunk frozen by [`load_trunk`]) for `target`, over the T steps of
    /// `training`.
    pub fn new(
        target: CovarianceTarget,
        optimizer: OptimizerConfig,
        policy: &DiffusionPolicy,
        training: &Schedule,
    ) -> Self {
        Self {
            target,
            optimizer: optimizer.build(policy.var_store()),
            training: training.coefficients(policy.var_store().device()),
        }
    }

    /// The optimiser, for checkpoints.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    /// The head's loss on a batch of images `x0`. On several ranks `x0` is
    /// the global batch, the draws are made for all of it and the loss is
    /// this rank's rows' share of the global mean, as
    /// [`crate::pretrain::DdpmLoss::loss`] (docs/conventions.md section 7).
    pub fn loss(&self, policy: &DiffusionPolicy, x0: &Tensor) -> Tensor {
        let coefs = &self.training;
        let steps = coefs.sigma.size()[0];
        let b = x0.size()[0];
        let index = Tensor::randint(steps, [b], (Kind::Int64, x0.device()));
        let mut shape = vec![-1i64];
        shape.extend(std::iter::repeat_n(1, x0.dim() - 1));
        let a = coefs
            .sqrt_alpha_bar
            .index_select(0, &index)
            .view(shape.as_slice());
        let s = coefs
            .sqrt_one_minus_alpha_bar
            .index_select(0, &index)
            .view(shape.as_slice());
        let noise = x0.randn_like();
        let x = x0 * a + &noise * s;
        let (rows, weight) = crate::shares::own_rows_weighted(b);
        let times = coefs.network_times.index_select(0, &index);
        let output = policy.eps_at_network_steps(&rows.of(&x), &rows.of(&times));
        let loss = covariance_loss(self.target, &rows.of(&noise), &output);
        if rows.is_all() {
            loss
        } else {
            loss * weight
        }
    }

    /// One step of the head on a batch (the trunk's dropout on, as theirs);
    /// returns the loss.
    pub fn step(&mut self, policy: &DiffusionPolicy, x0: &Tensor) -> Result<f64, AgentError> {
        self.optimizer.zero_grad();
        policy.set_training(true);
        let loss = self.loss(policy, x0);
        policy.set_training(false);
        let value = ensure_finite("covariance head loss", loss.double_value(&[]))?;
        loss.backward();
        self.optimizer.step();
        Ok(value)
    }
}
