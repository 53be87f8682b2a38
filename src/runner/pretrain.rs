//! DDPM pretraining runs.

use std::path::{Path, PathBuf};

use agents::pretrain::DdpmPretrainer;
use tch::{Device, Kind, Tensor};

use super::evaluate::{quality, sample, to_vec};
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
    let dim = exp.data.set.dim();
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
        if session.epochs_done + 1 == task.epochs || (session.epochs_done + 1) % exp.eval.every == 0
        {
            let samples = sample(&policy, exp.eval.n, dim, exp.seed as i64 ^ 0xE7A1);
            let q = quality(
                &samples,
                &data,
                &exp.eval,
                1,
                exp.eval.exact_during_training,
            )?;
            session
                .recorder
                .scalar("eval/sliced_w2", q.sliced_w2, session.global_step)?;
            if let Some(e) = q.exact_w2 {
                session
                    .recorder
                    .scalar("eval/exact_w2", e, session.global_step)?;
            }
            session.recorder.samples_over_data(
                "eval/samples",
                &to_vec(&samples),
                &to_vec(&data),
                session.global_step,
            )?;
            message.push_str(&format!(" W2 {:.2}e-2", q.sliced_w2 * 100.0));
        }
        session.end_epoch(&message, || {
            CheckpointWriter::new()
                .vars("generator", policy.var_store())
                .tensors("optim-generator", trainer.optimizer_mut().state())
        })?;
    }
    session.finish()
}
