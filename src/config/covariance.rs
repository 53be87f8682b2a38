//! Covariance-head settings (`task: CovarianceHead(...)`): SN-DDPM's or
//! NPR-DDPM's head trained on a frozen pretrained U-Net (Bao et al. 2022b),
//! sampled by the experiment's `env.sampler` (`SnDdpm` or `NprDdpm`, which
//! also says what the head predicts).

use agents::optim::OptimizerConfig;
use envs::check::Checker;
use envs::sampler::SamplerConfig;
use serde::{Deserialize, Serialize};

/// Trains a covariance head on the model of `init`, as Bao et al.'s code
/// does: Adam (lr 1e-4), batch 128, no clipping, a moving average of the
/// weights (0.9999), the trunk frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CovarianceTask {
    /// The pretrained model: an experiment file (trained first if it has
    /// not been) or a diffusers folder, relative to this file.
    pub init: String,
    /// Passes over the training set.
    pub epochs: usize,
    /// Minibatch size.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The head's optimiser.
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerConfig,
    /// The decay of the weights' moving average, which samples (0: none).
    #[serde(default = "default_ema")]
    pub ema: f64,
}

fn default_batch() -> usize {
    128
}

fn default_optimizer() -> OptimizerConfig {
    OptimizerConfig::Adam { lr: 1e-4 }
}

fn default_ema() -> f64 {
    0.9999
}

impl CovarianceTask {
    /// Checks the sizes, the optimiser, the average and that `sampler` is
    /// SN-DDPM or NPR-DDPM and the network a U-Net (`unet`).
    pub fn validate(&self, check: &mut Checker, sampler: &SamplerConfig, unet: bool) {
        check.that(
            !self.init.trim().is_empty(),
            "init",
            "must name the pretrained model's experiment file or diffusers folder".into(),
        );
        check.at_least("epochs", self.epochs, 1);
        check.at_least("batch", self.batch, 1);
        check.within("optimizer", |c| self.optimizer.validate(c));
        check.that(
            (0.0..1.0).contains(&self.ema),
            "ema",
            format!(
                "the decay must lie in [0, 1) (0: no average), got {}",
                self.ema
            ),
        );
        check.that(
            sampler.covariance_target().is_some(),
            "",
            format!("trains the head that SnDdpm(...) or NprDdpm(...) samples with: env.sampler must be one of them, got {sampler:?}"),
        );
        check.that(
            unet,
            "",
            "a covariance head reads a U-Net's feature map: the model must be UNet(...)".into(),
        );
    }
}
