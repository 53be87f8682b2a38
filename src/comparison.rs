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
//!     also: [Inception],             // further tables on the same samples
//!     protocol: Jpeg(quality: 75),   // the paper's; Lossless by default
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
    /// Samples per sampler. The paper's Table 3 says 50K; its `generate.py`
    /// draws 50,048 (391 batches of 128) for CIFAR-10 and CelebA.
    pub n: usize,
    /// The feature network.
    pub features: FeatureConfig,
    /// Further feature networks: each gives a table of its own, on the
    /// same samples, after the first (e.g. Inception, the paper's, beside
    /// the framework's classifier on MNIST).
    #[serde(default)]
    pub also: Vec<FeatureConfig>,
    /// How samples become the images that are measured: [`FidProtocol`].
    #[serde(default)]
    pub protocol: FidProtocol,
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

/// How a comparison's sampled images are measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FidProtocol {
    /// The uint8 pixels the samples are (as a PNG holds them): the default.
    #[default]
    Lossless,
    /// The paper's protocol (Fan and Lee's `generate.py` and `FID.py`):
    /// every sample written as a JPEG file by torchvision's `save_image`
    /// (PIL at this quality, 4:2:0; theirs is PIL's default, 75) and read
    /// back by pytorch-fid. It applies to every sampled row and to the
    /// floor row's test images (they stand for a sampler that draws the
    /// data's law exactly, and such a sampler's images would be saved as
    /// JPEG too); the reference images (training and test columns) are
    /// measured as they are, as the authors' folder of training images is.
    Jpeg {
        /// JPEG quality, 1 to 100.
        quality: u8,
    },
}

impl FidProtocol {
    /// The JPEG quality samples are written at, if any.
    pub fn jpeg_quality(self) -> Option<u8> {
        match self {
            Self::Lossless => None,
            Self::Jpeg { quality } => Some(quality),
        }
    }
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
        for (i, also) in self.also.iter().enumerate() {
            if let FeatureConfig::Classifier { epochs } = also {
                check.at_least("also.epochs", *epochs, 1);
            }
            check.that(
                !std::iter::once(&self.features)
                    .chain(&self.also[..i])
                    .any(|f| f == also),
                "also",
                format!("{also:?} is measured already; each feature network once"),
            );
        }
        if let FidProtocol::Jpeg { quality } = self.protocol {
            check.that(
                (1..=100).contains(&quality),
                "protocol.quality",
                format!("must lie in 1..=100 (the paper's, PIL's default, is 75), got {quality}"),
            );
        }
        check.result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"Comparison(
    name: "t",
    model: "m.ron",
    samplers: [Full],
    n: 10,
    features: Inception,
    PROTOCOL
)
"#;

    fn load(protocol: &str) -> Result<Comparison, ConfigError> {
        let dir = std::env::temp_dir().join(format!("shortcut-protocol-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("c{k}.ron"));
        std::fs::write(&path, FILE.replace("PROTOCOL", protocol)).unwrap();
        let loaded = Comparison::load(&path);
        std::fs::remove_file(path).unwrap();
        loaded
    }

    #[test]
    fn the_protocol_is_lossless_unless_jpeg_is_asked_for() {
        assert_eq!(load("").unwrap().protocol, FidProtocol::Lossless);
        assert_eq!(
            load("protocol: Lossless,").unwrap().protocol.jpeg_quality(),
            None
        );
        assert_eq!(
            load("protocol: Jpeg(quality: 75),")
                .unwrap()
                .protocol
                .jpeg_quality(),
            Some(75)
        );
    }

    #[test]
    fn a_bad_jpeg_quality_names_the_field() {
        let message = load("protocol: Jpeg(quality: 0),").unwrap_err().to_string();
        assert!(
            message.contains("protocol.quality") && message.contains("got 0"),
            "{message}"
        );
        assert!(load("protocol: Jpeg(quality: 300),").is_err());
        assert!(load("protocol: Png,").is_err());
    }

    #[test]
    fn further_feature_networks_are_each_measured_once() {
        let also = load("also: [Classifier(epochs: 3), TorchScript(\"f.pt\")],").unwrap();
        assert_eq!(
            also.also,
            vec![
                FeatureConfig::Classifier { epochs: 3 },
                FeatureConfig::TorchScript("f.pt".into())
            ]
        );
        assert!(load("").unwrap().also.is_empty());
        for (text, want) in [
            ("also: [Inception],", "Inception is measured already"),
            (
                "also: [Classifier(epochs: 2), Classifier(epochs: 2)],",
                "measured already",
            ),
            ("also: [Classifier(epochs: 0)],", "also.epochs"),
        ] {
            let message = load(text).unwrap_err().to_string();
            assert!(message.contains(want), "{text}: {message}");
        }
    }
}
