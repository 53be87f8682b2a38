//! Comparison files: samplers of one pretrained model and fine-tuned
//! samplers, each sampled and measured by FID and KID against the training
//! and test images (the shape of the paper's Table 3).
//!
//! ```ron
//! Comparison(
//!     name: "table3_digits",
//!     model: "ddpm_digits.ron",
//!     samplers: [Full, Ddpm(steps: 10), AnalyticDpm(steps: 10)],
//!     fine_tuned: ["sft_pg_digits.ron"],
//!     n: 1000,
//!     features: Classifier(epochs: 30),
//! )
//! ```

use std::path::Path;

use envs::sampler::SamplerConfig;
use serde::{Deserialize, Serialize};

pub use crate::config::FeatureConfig;
use crate::config::{self, Checker};
use crate::error::ConfigError;

/// A comparison of samplers by FID and KID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// Its name; samples, statistics and the table go to
    /// `<the model's record.dir>/<name>/`.
    pub name: String,
    /// The pretrained model's experiment (relative to this file), trained
    /// first when it has not been; or a fine-tuning experiment that starts
    /// from a diffusers folder (`task.init`), whose pretrained model that
    /// folder then is (the CIFAR-10 and CelebA files).
    pub model: String,
    /// Samplers of the pretrained model, in table order.
    pub samplers: Vec<SamplerConfig>,
    /// Fine-tuning experiments (relative to this file) whose final samplers
    /// are rows too, trained first when they have not been.
    #[serde(default)]
    pub fine_tuned: Vec<String>,
    /// Samples per sampler (the paper: 50,000).
    pub n: usize,
    /// The feature network.
    pub features: FeatureConfig,
    /// KID: random subsets averaged.
    #[serde(default = "kid_subsets")]
    pub kid_subsets: usize,
    /// KID: images of each set per subset (all when fewer).
    #[serde(default = "kid_subset_size")]
    pub kid_subset_size: usize,
    /// Seed of the sampling noise (and of KID's subsets).
    #[serde(default)]
    pub seed: u64,
    /// Chains sampled at once.
    #[serde(default = "chunk")]
    pub chunk: usize,
    /// Images per forward pass of the feature network.
    #[serde(default = "batch")]
    pub batch: usize,
}

fn kid_subsets() -> usize {
    100
}

fn kid_subset_size() -> usize {
    1000
}

fn chunk() -> usize {
    1000
}

fn batch() -> usize {
    50
}

impl Comparison {
    /// Reads, parses and validates a comparison file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the line and the field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::error::read_text(path)?;
        let comparison: Comparison = config::deserialize(&text, path, config::user_options())?;
        comparison
            .validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                file: path.to_path_buf(),
                line: config::locate_field(&text, &field),
                field,
                message,
            })?;
        Ok(comparison)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let mut check = Checker::default();
        check.that(
            !self.name.is_empty()
                && self
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)),
            "name",
            format!(
                "must be non-empty letters, digits, '_' or '-', got {:?}",
                self.name
            ),
        );
        check.at_least("samplers", self.samplers.len() + self.fine_tuned.len(), 1);
        check.at_least("n", self.n, 2);
        check.at_least("kid_subsets", self.kid_subsets, 1);
        check.at_least("kid_subset_size", self.kid_subset_size, 2);
        check.at_least("chunk", self.chunk, 1);
        check.at_least("batch", self.batch, 1);
        if let FeatureConfig::Classifier { epochs } = self.features {
            check.at_least("features.epochs", epochs, 1);
        }
        check.result()
    }
}
