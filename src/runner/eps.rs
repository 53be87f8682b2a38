//! `rl-run eps`: a network's noise prediction for inputs given as `.npy`
//! files, so that a user can hold our model against PyTorch's on their own
//! weights.

use std::path::Path;

use agents::unet::UNet;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::error::RunError;
use crate::weights::diffusers::DiffusersFolder;
use crate::weights::{import, WeightsError};

/// eps(x, t) of the U-Net in the diffusers folder `model`, for the
/// `N x C x H x W` float32 inputs in `x` and the `N` (or one) times in `t`.
pub fn predict(model: &Path, x_file: &Path, t: &Path) -> Result<Tensor, RunError> {
    let folder = DiffusersFolder::open(model)?;
    let vs = VarStore::new(Device::Cpu);
    let net = UNet::new(&vs.root(), &folder.config);
    import::load_strict(&folder.weights()?, &vs)?;
    let config = &folder.config;
    let x = read_npy(x_file)?;
    let expected = [config.in_channels, config.resolution, config.resolution];
    if x.dim() != 4 || x.size()[1..] != expected {
        return Err(WeightsError::Format {
            path: x_file.to_path_buf(),
            message: format!(
                "inputs must be N x {} x {} x {} for this model, got {:?}",
                expected[0],
                expected[1],
                expected[2],
                x.size()
            ),
        }
        .into());
    }
    let n = x.size()[0];
    let times = read_npy(t)?.to_kind(Kind::Float).flatten(0, -1);
    let times = match times.size()[0] {
        1 => times.expand([n], false),
        m if m == n => times,
        m => {
            return Err(WeightsError::Format {
                path: t.to_path_buf(),
                message: format!("expected {n} times (one per input) or one, got {m}"),
            }
            .into())
        }
    };
    Ok(tch::no_grad(|| {
        net.forward(&x.to_kind(Kind::Float), &times)
    }))
}

/// Reads a `.npy` file into a tensor, naming the file in errors.
pub fn read_npy(path: &Path) -> Result<Tensor, WeightsError> {
    if !path.is_file() {
        return Err(WeightsError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Tensor::read_npy(path).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        message: format!("not a readable .npy array: {e}"),
    })
}

/// Writes a tensor as a float32 `.npy` file.
pub fn write_npy(tensor: &Tensor, path: &Path) -> Result<(), RunError> {
    tensor
        .to_kind(Kind::Float)
        .contiguous()
        .write_npy(path)
        .map_err(|e| RunError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
}
