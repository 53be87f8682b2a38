//! SFT-PG fine-tuning runs (Algorithm 1).

use std::path::{Path, PathBuf};

use agents::critic::AdversarialCritic;
use agents::generator::Generator;
use agents::policy::DiffusionPolicy;
use agents::shares::own_rows;
use agents::{FineTuneAgent, UpdateStats};
use envs::diffusion::DiffusionEnv;
use tch::{Device, Kind, Tensor};

use super::data::Data;
use super::evaluator::experiment_trainer;
use super::memory;
use super::model::{schedule, seed_initialisation};
use super::sft_pg::SftPg;
use crate::checkpoint::{Checkpoint, CheckpointWriter};
use crate::config::{Experiment, FineTuneTask};
use crate::error::RunError;
use crate::trainer::{EpochEnd, EpochLog, Training};

const PHASE: u64 = 2;

/// Fine-tunes `policy` (already holding the pretrained weights) against an
/// adversarial critic; returns the run's final folder.
pub fn finetune(
    exp: &Experiment,
    task: &FineTuneTask,
    mut policy: DiffusionPolicy,
    run_dir: &Path,
    device: Device,
    resume: Option<&Checkpoint>,
    show_progress: bool,
) -> Result<PathBuf, RunError> {
    let data = Data::load(&exp.data, device)?;
    let reference = data.first(exp.eval.n as i64).to_device(Device::Cpu);
    let shape = exp.data.set.element_shape();
    let batch = task.batch as i64;
    policy.set_act_chunk(task.rollout_chunk.map(|c| c as i64));
    seed_initialisation(exp, PHASE);
    let schedule = schedule(exp)?;
    // The critic's weights are drawn before the generator's settings take
    // the policy (the order every stored run was trained in).
    let critic =
        AdversarialCritic::new(task.critic.clone(), &shape, schedule.len() as i64, device)?;
    let agent = task
        .agent
        .build(Generator::new(task.generator, policy)?, batch, &shape);
    // On several ranks each holds its share of the chains
    // (docs/conventions.md section 7).
    let env = DiffusionEnv::new(schedule, &shape, batch, device)?.holding(own_rows(batch));
    let mut fine_tuning = FineTuning::new(SftPg::new(env, agent, critic, task.n_critic), data);
    experiment_trainer(exp, run_dir, PHASE, reference, show_progress)?.run(&mut fine_tuning, resume)
}

/// SFT-PG fine-tuning (Algorithm 1) as a [`Training`]: an epoch is as many
/// rounds as it takes the critic steps to see every data point about once
/// (ceil(n / (batch x n_critic)) rounds), on whole random permutations of
/// the data; a round's critic steps take the environment's batch of chains
/// and as many data points each.
pub struct FineTuning {
    sft: SftPg,
    data: Data,
}

impl FineTuning {
    /// Fine-tunes `sft`'s agent against its critic on `data` (the data's
    /// device gathers the batches).
    pub fn new(sft: SftPg, data: Data) -> Self {
        Self { sft, data }
    }

    /// The round's parts (agent, critic, environment).
    pub fn parts(&self) -> &SftPg {
        &self.sft
    }
}

impl Training for FineTuning {
    fn epoch(&mut self, epoch: usize, log: &mut EpochLog<'_>) -> Result<EpochEnd, RunError> {
        let n = self.data.len();
        let n_critic = self.sft.n_critic();
        // The global batch (a rank's environment holds its share of it).
        let batch = self.sft.env.rows().global;
        let device = self.data.device();
        let rounds_per_epoch = (n as usize).div_ceil(batch as usize * n_critic);
        let critic_steps = (rounds_per_epoch * n_critic) as i64;
        let order = data_order(n, critic_steps * batch, device);
        let mut epoch_stats = UpdateStats::default();
        let mut generator_stats = UpdateStats::default();
        for round in 0..rounds_per_epoch {
            let first = (round * n_critic) as i64;
            let (sft, data) = (&mut self.sft, &self.data);
            let stats = memory::guard("a fine-tuning round", "task.batch", batch as usize, || {
                Ok(sft.round(|i| data.batch(&order.narrow(0, (first + i as i64) * batch, batch)))?)
            })?;
            *log.step += n_critic as u64;
            for (name, value) in &stats.critic.values {
                epoch_stats.accumulate(name, *value);
            }
            for (name, value) in &stats.generator.values {
                generator_stats.accumulate(name, *value);
            }
        }
        // Each rank's parts of the statistics, summed (docs/conventions.md 7).
        let epoch_stats = epoch_stats
            .average(critic_steps as usize)
            .summed_over_ranks()?;
        let generator_stats = generator_stats
            .average(rounds_per_epoch)
            .summed_over_ranks()?;
        for (name, value) in epoch_stats.values.iter().chain(&generator_stats.values) {
            log.recorder.scalar(name, *value, *log.step)?;
        }
        let gap = epoch_stats.get("critic/gap").unwrap_or(f64::NAN);
        if !gap.is_finite() {
            return Err(RunError::Diverged(format!(
                "critic gap became {gap} in epoch {}",
                epoch + 1
            )));
        }
        Ok(EpochEnd::going_on(format!(
            "gap {gap:.4} gen {:.3}",
            generator_stats.get("generator/loss").unwrap_or(0.0)
        )))
    }

    fn checkpoint(&mut self) -> CheckpointWriter {
        let SftPg { agent, critic, .. } = &mut self.sft;
        let (critic_opt, baseline_opt) = critic.optimizers_mut();
        let (critic_state, baseline_state) = (critic_opt.state(), baseline_opt.state());
        let generator = agent.generator_mut();
        CheckpointWriter::new()
            .vars("generator", generator.policy().var_store())
            .tensors("optim-generator", generator.optimizer_mut().state())
            .vars("critic", critic.critic_vars())
            .tensors("optim-critic", critic_state)
            .vars("baseline", critic.baseline_vars())
            .tensors("optim-baseline", baseline_state)
    }

    fn restore(&mut self, c: &Checkpoint) -> Result<(), RunError> {
        load_state(c, self.sft.agent.as_mut(), &mut self.sft.critic)
    }

    fn sampler(&self) -> Option<&DiffusionPolicy> {
        Some(self.sft.agent.generator().policy())
    }

    /// The generator's networks: its policy and its KL reference.
    fn network_evaluations(&self) -> u64 {
        self.sft.agent.generator().network_evaluations()
    }
}

/// Indices of the data points used by the critic steps of one epoch: whole
/// random permutations of the training set, concatenated until long enough.
fn data_order(n: i64, needed: i64, device: Device) -> Tensor {
    let perms: Vec<Tensor> = (0..needed.div_euclid(n) + 1)
        .map(|_| Tensor::randperm(n, (Kind::Int64, device)))
        .collect();
    Tensor::cat(&perms, 0).narrow(0, 0, needed)
}

fn load_state(
    c: &Checkpoint,
    agent: &mut dyn FineTuneAgent,
    critic: &mut AdversarialCritic,
) -> Result<(), RunError> {
    // Variables are loaded in place, so the optimisers keep pointing at them.
    let generator = agent.generator_mut();
    c.load_vars("generator", generator.policy_mut().var_store_mut())?;
    generator
        .optimizer_mut()
        .load_state(&c.tensors("optim-generator")?)?;
    c.load_vars("critic", critic.critic_vars())?;
    c.load_vars("baseline", critic.baseline_vars())?;
    let (critic_opt, baseline_opt) = critic.optimizers_mut();
    critic_opt.load_state(&c.tensors("optim-critic")?)?;
    baseline_opt.load_state(&c.tensors("optim-baseline")?)?;
    Ok(())
}
