//! The training data of a run: generated toy points (float) or images read
//! from files (kept as uint8 on the device and scaled to [-1, 1] one batch
//! at a time, with random horizontal flips when asked).

use envs::images::{self, Split};
use tch::{Device, Kind, Tensor};

use crate::config::{DataConfig, Experiment};
use crate::error::RunError;

/// Offset between the seed of the toy training set and that of a fresh sample
/// of the same distribution (the "data against fresh data" floor).
const FRESH_DATA_SEED_OFFSET: u64 = 1_000_003;

/// Offset between the seed of the toy training set and that of the held-out
/// set (far from the fresh samples' seeds, so the two never coincide).
const HELD_OUT_SEED_OFFSET: u64 = 2_000_029;

/// A run's training set.
pub struct Data {
    values: Tensor,
    images: bool,
    flip: bool,
}

impl Data {
    /// The training set `config` describes, on `device` (the data set's
    /// build step: generated toy points, or images read from its files).
    pub fn load(config: &DataConfig, device: Device) -> Result<Self, RunError> {
        let set = &config.set;
        let values = match set.toy() {
            Some(toy) => toy.generate(config.toy_points(), config.seed)?,
            None => {
                let all = set.load_images(Split::Train)?;
                let available = all.size()[0] as usize;
                match config.n {
                    Some(n) if n > available => {
                        return Err(RunError::Env(envs::EnvError::Invalid {
                            field: "data.n",
                            reason: format!(
                                "{n} training images asked for, {} has {available}",
                                set.name()
                            ),
                        }))
                    }
                    Some(n) => all.narrow(0, 0, n as i64),
                    None => all,
                }
            }
        };
        Ok(Self::from_values(
            values.to_device(device),
            set.is_images(),
            config.flips(),
        ))
    }

    /// A training set of `values` on their device: floats (`[n, ...]`),
    /// or, with `images`, uint8 pixels (`[n, C, H, W]`) scaled to [-1, 1]
    /// per batch and flipped left-right at random with `flip`.
    pub fn from_values(values: Tensor, images: bool, flip: bool) -> Self {
        Self {
            values,
            images,
            flip,
        }
    }

    /// The device the samples live on (where batches are gathered).
    pub fn device(&self) -> tch::Device {
        self.values.device()
    }

    /// Number of training samples.
    pub fn len(&self) -> i64 {
        self.values.size()[0]
    }

    /// Whether there are no samples (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `index` as floats (images in [-1, 1], flipped at
    /// random when the data set asks for it).
    pub fn batch(&self, index: &Tensor) -> Tensor {
        let rows = self.values.index_select(0, index);
        if !self.images {
            return rows;
        }
        let x = images::to_unit_range(&rows);
        if !self.flip {
            return x;
        }
        let n = x.size()[0];
        let flip = Tensor::rand([n, 1, 1, 1], (Kind::Float, x.device())).lt(0.5);
        x.flip([3]).where_self(&flip, &x)
    }

    /// The first `n` samples (all if fewer) as floats, without flips: what
    /// evaluations compare against.
    pub fn first(&self, n: i64) -> Tensor {
        let rows = self.values.narrow(0, 0, n.min(self.len()));
        if self.images {
            images::to_unit_range(&rows)
        } else {
            rows
        }
    }
}

/// The held-out set, never used for training: for toy sets as many points as
/// the training set from the same distribution under another seed; for
/// images the data set's test split, if it has one. `[n, ...]` floats on
/// the CPU.
pub fn held_out_data(exp: &Experiment) -> Result<Option<Tensor>, RunError> {
    let set = &exp.data.set;
    match set.toy() {
        Some(toy) => {
            let seed = exp.data.seed.wrapping_add(HELD_OUT_SEED_OFFSET);
            Ok(Some(toy.generate(exp.data.toy_points(), seed)?))
        }
        None if !set.has_test_split() => Ok(None),
        None => Ok(Some(images::to_unit_range(&set.load_images(Split::Test)?))),
    }
}

/// The `set`-th fresh sample of a toy distribution, independent of the
/// training set; `None` for images (no generator).
pub fn fresh_data(exp: &Experiment, n: usize, set: usize) -> Result<Option<Tensor>, RunError> {
    let Some(toy) = exp.data.set.toy() else {
        return Ok(None);
    };
    let seed = exp
        .data
        .seed
        .wrapping_add(FRESH_DATA_SEED_OFFSET)
        .wrapping_add(set as u64);
    Ok(Some(toy.generate(n, seed)?))
}
