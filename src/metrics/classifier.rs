//! A small convolutional classifier trained by the framework on a labelled
//! image set (digits, MNIST), whose penultimate layer is a feature network
//! for FID and KID on the CPU. FIDs it gives are "classifier FIDs": they are
//! comparable only with each other, on the same data set and classifier,
//! never with Inception FIDs.
//!
//! Network: pixels as [-1, 1]; conv 3x3 (C -> 32), ReLU; conv 3x3 stride 2
//! (32 -> 64), ReLU; conv 3x3 (64 -> 64), ReLU; average-pooled to 4 x 4;
//! linear 1024 -> 128, ReLU (the features, scaled by a constant fixed at
//! training: 1 / their root mean square over the training images);
//! linear 128 -> classes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::error::MetricError;

/// Features per image.
pub const FEATURES: i64 = 128;
/// Images per forward pass outside training.
const CHUNK: i64 = 1000;
/// The weights' file in a classifier's folder.
pub const WEIGHTS_FILE: &str = "classifier.safetensors";
/// The description's file in a classifier's folder.
pub const CONFIG_FILE: &str = "classifier.json";

/// What a trained classifier is, saved beside its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    /// The data set it was trained on (its name).
    pub data_set: String,
    /// Image channels.
    pub in_channels: i64,
    /// Number of classes.
    pub classes: i64,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
    /// Training epochs.
    pub epochs: usize,
    /// The factor applied to the features: 1 / their root mean square over
    /// the training images, so that features are of order 1 (as
    /// Inception's are) and KID's cubic kernel stays in a sensible range.
    #[serde(default = "unit_scale")]
    pub feature_scale: f64,
}

fn unit_scale() -> f64 {
    1.0
}

/// How a classifier is trained.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// Passes over the training images.
    pub epochs: usize,
    /// Images per step.
    pub batch: i64,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seed of the initialisation and the batches.
    pub seed: i64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch: 128,
            lr: 1e-3,
            seed: 0,
        }
    }
}

/// The classifier and its feature layer.
#[derive(Debug)]
pub struct Classifier {
    vs: nn::VarStore,
    body: nn::Sequential,
    head: nn::Linear,
    info: ClassifierInfo,
    path: PathBuf,
}

fn body(p: &nn::Path, in_channels: i64) -> nn::Sequential {
    let conv = |stride| nn::ConvConfig {
        stride,
        padding: 1,
        ..Default::default()
    };
    nn::seq()
        .add(nn::conv2d(p / "conv1", in_channels, 32, 3, conv(1)))
        .add_fn(|x| x.relu())
        .add(nn::conv2d(p / "conv2", 32, 64, 3, conv(2)))
        .add_fn(|x| x.relu())
        .add(nn::conv2d(p / "conv3", 64, 64, 3, conv(1)))
        .add_fn(|x| x.relu().adaptive_avg_pool2d([4, 4]).flatten(1, -1))
        .add(nn::linear(p / "fc1", 64 * 16, FEATURES, Default::default()))
        .add_fn(|x| x.relu())
}

fn unit_range(pixels: &Tensor, device: Device) -> Tensor {
    pixels.to_device(device).to_kind(Kind::Float) / 127.5 - 1.0
}

fn error(path: &Path, message: impl Into<String>) -> MetricError {
    MetricError::FeatureNetwork {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Classifier {
    fn new(info: ClassifierInfo, path: &Path, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let body = body(&vs.root(), info.in_channels);
        let head = nn::linear(
            vs.root() / "head",
            FEATURES,
            info.classes,
            Default::default(),
        );
        Self {
            vs,
            body,
            head,
            info,
            path: path.to_path_buf(),
        }
    }

    /// Trains a classifier on uint8 images `[N, C, H, W]` with int64
    /// `labels`, measures it on the test images, and saves it in the folder
    /// `dir` (weights, then the description, each written to a temporary
    /// file and renamed).
    ///
    /// # Errors
    /// [`MetricError::FeatureNetwork`] for inconsistent inputs or a failed write.
    pub fn train(
        dir: &Path,
        data_set: &str,
        train: (&Tensor, &Tensor),
        test: (&Tensor, &Tensor),
        settings: &TrainSettings,
        device: Device,
    ) -> Result<Self, MetricError> {
        let (images, labels) = train;
        if images.dim() != 4 || images.size()[0] != labels.size()[0] || images.size()[0] < 2 {
            return Err(error(
                dir,
                format!(
                    "training needs images [N, C, H, W] with N labels, got {:?} and {:?}",
                    images.size(),
                    labels.size()
                ),
            ));
        }
        tch::manual_seed(settings.seed);
        let classes = labels.max().int64_value(&[]) + 1;
        let info = ClassifierInfo {
            data_set: data_set.to_string(),
            in_channels: images.size()[1],
            classes,
            test_accuracy: 0.0,
            epochs: settings.epochs,
            feature_scale: 1.0,
        };
        let mut classifier = Self::new(info, dir, device);
        let mut opt = nn::Adam::default()
            .build(&classifier.vs, settings.lr)
            .map_err(|e| error(dir, e.to_string()))?;
        let x = unit_range(images, device);
        let y = labels.to_device(device);
        let n = x.size()[0];
        for _ in 0..settings.epochs {
            let order = Tensor::randperm(n, (Kind::Int64, device));
            for start in (0..n).step_by(settings.batch as usize) {
                let index = order.narrow(0, start, settings.batch.min(n - start));
                let logits = classifier.logits(&x.index_select(0, &index));
                let loss = logits.cross_entropy_for_logits(&y.index_select(0, &index));
                opt.backward_step(&loss);
            }
        }
        classifier.info.test_accuracy = classifier.accuracy(test.0, test.1);
        let mut square_sum = 0.0;
        for part in x.split(CHUNK, 0) {
            let features = tch::no_grad(|| classifier.body.forward(&part));
            square_sum += features.square().sum(Kind::Double).double_value(&[]);
        }
        let rms = (square_sum / (n * FEATURES) as f64).sqrt();
        classifier.info.feature_scale = if rms > 0.0 { 1.0 / rms } else { 1.0 };
        classifier.save(dir)?;
        Ok(classifier)
    }

    fn logits(&self, x: &Tensor) -> Tensor {
        self.head.forward(&self.body.forward(x))
    }

    /// The share of `images` classified as `labels`.
    pub fn accuracy(&self, images: &Tensor, labels: &Tensor) -> f64 {
        let device = self.vs.device();
        let mut right = 0;
        for (part, truth) in images.split(CHUNK, 0).iter().zip(labels.split(CHUNK, 0)) {
            let predicted =
                tch::no_grad(|| self.logits(&unit_range(part, device)).argmax(1, false));
            right += predicted
                .eq_tensor(&truth.to_device(device))
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        right as f64 / images.size()[0] as f64
    }

    fn save(&self, dir: &Path) -> Result<(), MetricError> {
        std::fs::create_dir_all(dir).map_err(|e| error(dir, format!("cannot create: {e}")))?;
        let weights = dir.join(WEIGHTS_FILE);
        // tch picks the format by the extension: keep `.safetensors` last.
        let part = dir.join(format!("partial-{}.{WEIGHTS_FILE}", std::process::id()));
        self.vs
            .save(&part)
            .map_err(|e| error(&part, format!("cannot write: {e}")))?;
        std::fs::rename(&part, &weights).map_err(|e| error(&weights, e.to_string()))?;
        let config = dir.join(CONFIG_FILE);
        let part = dir.join(format!("{CONFIG_FILE}.partial-{}", std::process::id()));
        let text = serde_json::to_string_pretty(&self.info).expect("serialisable");
        std::fs::write(&part, text).map_err(|e| error(&part, format!("cannot write: {e}")))?;
        std::fs::rename(&part, &config).map_err(|e| error(&config, e.to_string()))
    }

    /// Whether `dir` holds a saved classifier.
    pub fn is_saved(dir: &Path) -> bool {
        dir.join(WEIGHTS_FILE).is_file() && dir.join(CONFIG_FILE).is_file()
    }

    /// Loads the classifier saved in the folder `dir`.
    ///
    /// # Errors
    /// [`MetricError::FeatureNetwork`] when the folder lacks or cannot read
    /// its files, or the weights do not fit the description.
    pub fn load(dir: &Path, device: Device) -> Result<Self, MetricError> {
        let config = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config).map_err(|e| {
            error(
                &config,
                format!("cannot read a classifier description: {e}"),
            )
        })?;
        let info: ClassifierInfo = serde_json::from_str(&text)
            .map_err(|e| error(&config, format!("not a classifier description: {e}")))?;
        let mut classifier = Self::new(info, dir, device);
        let weights = dir.join(WEIGHTS_FILE);
        classifier.vs.load(&weights).map_err(|e| {
            error(
                &weights,
                format!("cannot load the classifier's weights: {e}"),
            )
        })?;
        Ok(classifier)
    }

    /// What it was trained on and how well it classifies.
    pub fn info(&self) -> &ClassifierInfo {
        &self.info
    }
}

impl super::features::Featurizer for Classifier {
    fn dim(&self) -> usize {
        FEATURES as usize
    }

    fn features(&self, pixels: &Tensor) -> Result<Tensor, MetricError> {
        let size = pixels.size();
        if size.len() != 4 || size[1] != self.info.in_channels || pixels.kind() != Kind::Uint8 {
            return Err(error(
                &self.path,
                format!(
                    "the {} classifier takes uint8 [N, {}, H, W]; got {:?} {size:?}",
                    self.info.data_set,
                    self.info.in_channels,
                    pixels.kind()
                ),
            ));
        }
        let x = unit_range(pixels, self.vs.device());
        let features = tch::no_grad(|| self.body.forward(&x)) * self.info.feature_scale;
        Ok(features.to_device(Device::Cpu))
    }

    fn weights_file(&self) -> PathBuf {
        self.path.join(WEIGHTS_FILE)
    }

    fn describe(&self) -> String {
        format!(
            "the {} classifier's {} features ({}, test accuracy {:.1}%)",
            self.info.data_set,
            FEATURES,
            self.path.display(),
            self.info.test_accuracy * 100.0
        )
    }
}
