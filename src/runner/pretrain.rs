//! DDPM pretraining runs.

use std::path::{Path, PathBuf};

use agents::pretrain::DdpmPretrainer;
use tch::{Device, Kind, Tensor};

use super::model::{build_policy, seed_initialisation, training_data};
use super::session::Session;
use crate::checkpoint::{Checkpoint, CheckpointWriter};
use crate::config::{Experiment, PretrainTask};
use crate::error::RunError;

const PHASE: u64 = 1;

/// Trains the experiment's generator by denoising score matching; returns its final folder.
pub fn pretrain(
    exp: &Experiment,
    task: &PretrainTask,
    run_dir: &Path,
    device: Device,
    resume: Option<&Checkpoint>,
    show_progress: bool,
) -> Result<PathBuf, RunError> {
    let data = training_data(exp, device)?;
    seed_initialisation(exp, PHASE);
    let mut policy = build_policy(exp, device)?;
    let mut trainer = DdpmPretrainer::new(task.pretrain_config(), &policy);
    if let Some(c) = resume {
        c.load_vars("generator", policy.var_store_mut())?;
        trainer
            .optimizer_mut()
            .load_state(&c.tensors("optim-generator")?)?;
    }
    let mut session = Session::start(exp, run_dir, resume, show_progress)?;
    let n = data.size()[0];
    for epoch in session.epochs_done..task.epochs {
        session.begin_epoch(epoch, PHASE);
        let order = Tensor::randperm(n, (Kind::Int64, device));
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for start in (0..n).step_by(task.batch) {
            let idx = order.narrow(0, start, (task.batch as i64).min(n - start));
            loss_sum += trainer.step(&policy, &data.index_select(0, &idx))?;
            batches += 1;
            session.global_step += 1;
        }
        let loss = loss_sum / batches as f64;
        session
            .recorder
            .scalar("pretrain/loss", loss, session.global_step)?;
        let mut message = format!("loss {loss:.4}");
        if session.eval_due() {
            message.push_str(&session.evaluate(&policy, &data)?);
        }
        session.end_epoch(&message, || {
            CheckpointWriter::new()
                .vars("generator", policy.var_store())
                .tensors("optim-generator", trainer.optimizer_mut().state())
        })?;
    }
    session.finish()
}
