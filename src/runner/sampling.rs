//! `rl-run sample`: final samples of a checkpoint, optionally from given
//! initial noise and with another sampler, written as `.npy` (`N x shape`,
//! float32) and, for images, as a PNG grid beside it.

use std::path::{Path, PathBuf};

use envs::sampler::SamplerConfig;
use tch::{Device, Kind, Tensor};

use super::evaluate::sample;
use super::model::{load_policy, load_policy_with_sampler};
use crate::config::Experiment;
use crate::error::RunError;
use crate::weights::WeightsError;

/// What `rl-run sample` was asked for.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    /// The checkpoint folder.
    pub checkpoint: PathBuf,
    /// Number of samples (ignored when `noise` gives the initial samples).
    pub n: usize,
    /// Seed of the noise.
    pub seed: i64,
    /// Initial samples x_T (`N x shape` float32 .npy) instead of drawn ones.
    pub noise: Option<PathBuf>,
    /// Another sampler than the checkpoint's, in RON (`Ddim(steps: 10, eta: 0.0)`).
    pub sampler: Option<String>,
    /// Chains sampled at once.
    pub chunk: usize,
}

/// Parses a sampler written as in RON files (`--sampler "Ddim(steps: 10)"`).
pub fn parse_sampler(text: &str) -> Result<SamplerConfig, RunError> {
    crate::config::deserialize(text, Path::new("--sampler"), crate::config::user_options())
        .map_err(RunError::Config)
}

/// The samples asked for, on the CPU, with the experiment that made the checkpoint.
pub fn sample_checkpoint(request: &SampleRequest) -> Result<(Experiment, Tensor), RunError> {
    let (exp, mut policy) = load_policy(&request.checkpoint, Device::Cpu)?;
    if let Some(text) = &request.sampler {
        policy = load_policy_with_sampler(&request.checkpoint, parse_sampler(text)?, Device::Cpu)?;
    }
    let shape = exp.data.set.element_shape();
    let samples = match &request.noise {
        None => sample(
            &policy,
            request.n,
            &shape,
            request.seed,
            request.chunk,
            "--chunk",
        )?,
        Some(path) => {
            let noise = super::eps::read_npy(path)?.to_kind(Kind::Float);
            if noise.dim() < 1 || noise.size()[1..] != shape[..] {
                return Err(WeightsError::Format {
                    path: path.clone(),
                    message: format!(
                        "initial noise must be N x {shape:?} for {}, got {:?}",
                        exp.name,
                        noise.size()
                    ),
                }
                .into());
            }
            tch::manual_seed(request.seed);
            let chunk = request.chunk.max(1) as i64;
            let parts: Vec<Tensor> = (0..noise.size()[0])
                .step_by(chunk as usize)
                .map(|start| {
                    let len = chunk.min(noise.size()[0] - start);
                    policy
                        .sample_from(noise.narrow(0, start, len))
                        .to_device(Device::Cpu)
                })
                .collect();
            Tensor::cat(&parts, 0)
        }
    };
    Ok((exp, samples))
}

/// Writes samples as float32 `.npy` and, for images, a PNG grid of the
/// first 64 beside it (`<out>.png`); returns the PNG's path if written.
pub fn write_samples(
    exp: &Experiment,
    samples: &Tensor,
    out: &Path,
) -> Result<Option<PathBuf>, RunError> {
    super::eps::write_npy(samples, out)?;
    if !exp.data.set.is_images() {
        return Ok(None);
    }
    let png = crate::recording::grid::samples_png(samples)?;
    let path = out.with_extension("png");
    std::fs::write(&path, png).map_err(|source| RunError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(Some(path))
}
