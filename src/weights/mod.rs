//! Weights from where users have them: diffusers `UNet2DModel` folders
//! (`config.json` + `diffusion_pytorch_model.safetensors`, the scheduler's
//! `scheduler_config.json` when present), and files written by
//! `scripts/convert_weights.py` from PyTorch pickles (diffusers `.bin`
//! files and the original DDPM/DDIM state dicts).
//!
//! Imports are strict both ways: a tensor in the file that the model lacks,
//! a tensor the model needs that the file lacks, or a shape mismatch is an
//! error naming the key.

pub mod diffusers;
pub mod error;
pub mod import;

pub use error::WeightsError;
