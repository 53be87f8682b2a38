//! DDPM pretraining runs.

use std::path::{Path, PathBuf};

use agents::ema::WeightAverage;
use agents::policy::DiffusionPolicy;
use agents::pretrain::DdpmPretrainer;
use tch::{Device, Kind, Tensor};

use super::data::Data;
use super::memory;
use super::model::{build_policy, seed_initialisation, training_schedule};
use super::session::Session;
use crate::checkpoint::{Checkpoint, CheckpointWriter};
use crate::config::{Experiment, PretrainTask};
use crate::error::RunError;

const PHASE: u64 = 1;

/// The checkpoint part holding the trained (not averaged) weights of a run
/// with a weight average; `generator` then holds the average, the sampler
/// that evaluations, fine-tuning and `rl-run sample` use.
pub const TRAINED_WEIGHTS: &str = "generator-trained";

/// Trains the experiment's generator by denoising score matching; returns its
/// final folder. With `task.ema`, the published generator is the moving
/// average of the weights.
pub fn pretrain(
    exp: &Experiment,
    task: &PretrainTask,
    run_dir: &Path,
    device: Device,
    resume: Option<&Checkpoint>,
    show_progress: bool,
) -> Result<PathBuf, RunError> {
    let data = Data::load(exp, device)?;
    let reference = data.first(exp.eval.n as i64).to_device(Device::Cpu);
    seed_initialisation(exp, PHASE);
    let mut policy = build_policy(exp, device)?;
    let mut trainer =
        DdpmPretrainer::new(task.pretrain_config(), &policy, &training_schedule(exp)?);
    // The average lives in a second generator of the same layout.
    let mut average = match task.ema_decay(&exp.model) {
        Some(decay) => {
            let shadow = build_policy(exp, device)?;
            let mut ema = WeightAverage::new(decay, policy.var_store(), shadow.var_store())?;
            ema.reset();
            Some((shadow, ema))
        }
        None => None,
    };
    if let Some(c) = resume {
        match &mut average {
            Some((shadow, _)) => {
                c.load_vars(TRAINED_WEIGHTS, policy.var_store_mut())?;
                c.load_vars("generator", shadow.var_store_mut())?;
            }
            None => c.load_vars("generator", policy.var_store_mut())?,
        }
        trainer
            .optimizer_mut()
            .load_state(&c.tensors("optim-generator")?)?;
    }
    let mut session = Session::start(exp, run_dir, resume, show_progress)?;
    let n = data.len();
    for epoch in session.epochs_done..task.epochs {
        session.begin_epoch(epoch, PHASE);
        let order = Tensor::randperm(n, (Kind::Int64, device));
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for start in (0..n).step_by(task.batch) {
            let idx = order.narrow(0, start, (task.batch as i64).min(n - start));
            loss_sum += memory::guard("a pretraining batch", "task.batch", task.batch, || {
                Ok(trainer.step(&policy, &data.batch(&idx))?)
            })?;
            if let Some((_, ema)) = &mut average {
                ema.update();
            }
            batches += 1;
            session.global_step += 1;
        }
        let loss = loss_sum / batches as f64;
        session
            .recorder
            .scalar("pretrain/loss", loss, session.global_step)?;
        let mut message = format!("loss {loss:.4}");
        let sampler: &DiffusionPolicy = average.as_ref().map_or(&policy, |(shadow, _)| shadow);
        if session.eval_due() {
            message.push_str(&session.evaluate(sampler, &reference)?);
        }
        session.end_epoch(&message, || {
            let writer = CheckpointWriter::new()
                .vars("generator", sampler.var_store())
                .tensors("optim-generator", trainer.optimizer_mut().state());
            if average.is_some() {
                writer.vars(TRAINED_WEIGHTS, policy.var_store())
            } else {
                writer
            }
        })?;
    }
    session.finish()
}
