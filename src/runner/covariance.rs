//! Covariance-head runs (`task: CovarianceHead`): SN-DDPM's or NPR-DDPM's
//! head trained on a frozen pretrained U-Net (Bao et al. 2022b), as a
//! [`Pretraining`] with the head's loss, through the library's trainer.

use std::path::{Path, PathBuf};

use agents::covariance::{load_trunk, CovarianceFitter};
use agents::policy::DiffusionPolicy;
use tch::Device;

use super::data::Data;
use super::evaluator::experiment_trainer;
use super::model::{build_policy, training_schedule};
use super::pretrain::Pretraining;
use crate::checkpoint::Checkpoint;
use crate::config::{CovarianceTask, Experiment};
use crate::error::RunError;

const PHASE: u64 = 4;

/// Trains the covariance head of the experiment's sampler on `pretrained`
/// (the model of `task.init`); returns the run's final folder. The head
/// starts at zero (Bao et al.'s initialisation), so nothing is drawn
/// before training.
pub fn fit(
    exp: &Experiment,
    task: &CovarianceTask,
    pretrained: DiffusionPolicy,
    run_dir: &Path,
    device: Device,
    resume: Option<&Checkpoint>,
    show_progress: bool,
) -> Result<PathBuf, RunError> {
    let data = Data::load(&exp.data, device)?;
    let reference = data.first(exp.eval.n as i64).to_device(Device::Cpu);
    let target = exp
        .env
        .sampler
        .covariance_target()
        .expect("validated: SN-DDPM or NPR-DDPM");
    let mut policy = build_policy(exp, device)?;
    load_trunk(&mut policy, pretrained.var_store())?;
    let fitter = CovarianceFitter::new(target, task.optimizer, &policy, &training_schedule(exp)?);
    let average = match task.ema > 0.0 {
        true => Some((build_policy(exp, device)?, task.ema)),
        false => None,
    };
    let mut fitting = Pretraining::new(policy, fitter, average, data, task.batch)?;
    experiment_trainer(exp, run_dir, PHASE, reference, show_progress)?.run(&mut fitting, resume)
}
