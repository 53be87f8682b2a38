//! DDPM pretraining runs.

use std::path::{Path, PathBuf};

use agents::covariance::CovarianceFitter;
use agents::ema::WeightAverage;
use agents::optim::Optimizer;
use agents::policy::DiffusionPolicy;
use agents::pretrain::DdpmPretrainer;
use agents::AgentError;
use tch::{Device, Kind, Tensor};

use super::data::Data;
use super::evaluator::experiment_trainer;
use super::memory;
use super::model::{build_policy, seed_initialisation, training_schedule};
use crate::checkpoint::{Checkpoint, CheckpointWriter};
use crate::config::{Experiment, PretrainTask};
use crate::error::RunError;
use crate::trainer::{EpochEnd, EpochLog, Training};

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
    let data = Data::load(&exp.data, device)?;
    let reference = data.first(exp.eval.n as i64).to_device(Device::Cpu);
    seed_initialisation(exp, PHASE);
    let policy = build_policy(exp, device)?;
    let loss = DdpmPretrainer::new(task.pretrain_config(), &policy, &training_schedule(exp)?);
    // The average lives in a second generator of the same layout.
    let average = match task.ema_decay(&exp.model) {
        Some(decay) => Some((build_policy(exp, device)?, decay)),
        None => None,
    };
    let mut pretraining = Pretraining::new(policy, loss, average, data, task.batch)?;
    experiment_trainer(exp, run_dir, PHASE, reference, show_progress)?.run(&mut pretraining, resume)
}

/// A loss that trains a sampler's networks on batches of data, with its
/// optimiser: denoising score matching ([`DdpmPretrainer`]) or a covariance
/// head's ([`CovarianceFitter`]).
pub trait BatchLoss {
    /// One optimisation step on a batch; returns the loss.
    fn step(&mut self, policy: &DiffusionPolicy, x0: &Tensor) -> Result<f64, AgentError>;

    /// The optimiser, for checkpoints.
    fn optimizer_mut(&mut self) -> &mut Optimizer;

    /// The loss's TensorBoard tag.
    fn tag(&self) -> &'static str;
}

impl BatchLoss for DdpmPretrainer {
    fn step(&mut self, policy: &DiffusionPolicy, x0: &Tensor) -> Result<f64, AgentError> {
        DdpmPretrainer::step(self, policy, x0)
    }

    fn optimizer_mut(&mut self) -> &mut Optimizer {
        DdpmPretrainer::optimizer_mut(self)
    }

    fn tag(&self) -> &'static str {
        "pretrain/loss"
    }
}

impl BatchLoss for CovarianceFitter {
    fn step(&mut self, policy: &DiffusionPolicy, x0: &Tensor) -> Result<f64, AgentError> {
        CovarianceFitter::step(self, policy, x0)
    }

    fn optimizer_mut(&mut self) -> &mut Optimizer {
        CovarianceFitter::optimizer_mut(self)
    }

    fn tag(&self) -> &'static str {
        "covariance/loss"
    }
}

/// Denoising score matching of a sampler on a data set (the pretraining
/// task as a [`Training`]), or any [`BatchLoss`]: an epoch is one pass over
/// the data in random order, in batches.
pub struct Pretraining {
    policy: DiffusionPolicy,
    loss: Box<dyn BatchLoss>,
    average: Option<(DiffusionPolicy, WeightAverage)>,
    data: Data,
    batch: usize,
}

impl Pretraining {
    /// Trains `policy` by the denoising loss `loss` (with its optimiser)
    /// on `data` in batches of `batch` (the data's device gathers them);
    /// with `average` (a second policy of the same layout and a decay),
    /// that policy keeps the moving average of the weights and is the
    /// sampler evaluated and published.
    pub fn new(
        policy: DiffusionPolicy,
        loss: impl BatchLoss + 'static,
        average: Option<(DiffusionPolicy, f64)>,
        data: Data,
        batch: usize,
    ) -> Result<Self, RunError> {
        let average = match average {
            Some((shadow, decay)) => {
                let mut ema = WeightAverage::new(decay, policy.var_store(), shadow.var_store())?;
                ema.reset();
                Some((shadow, ema))
            }
            None => None,
        };
        Ok(Self {
            policy,
            loss: Box::new(loss),
            average,
            data,
            batch,
        })
    }
}

impl Training for Pretraining {
    fn epoch(&mut self, _epoch: usize, log: &mut EpochLog<'_>) -> Result<EpochEnd, RunError> {
        let n = self.data.len();
        let device = self.data.device();
        let order = Tensor::randperm(n, (Kind::Int64, device));
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for start in (0..n).step_by(self.batch) {
            let idx = order.narrow(0, start, (self.batch as i64).min(n - start));
            loss_sum += memory::guard("a pretraining batch", "task.batch", self.batch, || {
                Ok(self.loss.step(&self.policy, &self.data.batch(&idx))?)
            })?;
            if let Some((_, ema)) = &mut self.average {
                ema.update();
            }
            batches += 1;
            *log.step += 1;
        }
        // Each rank's loss is its share of the global batch's.
        let loss_sum = collective::current().sum_f64(loss_sum)?;
        let loss = loss_sum / batches as f64;
        log.recorder.scalar(self.loss.tag(), loss, *log.step)?;
        Ok(EpochEnd::going_on(format!("loss {loss:.4}")))
    }

    fn checkpoint(&mut self) -> CheckpointWriter {
        let writer = CheckpointWriter::new()
            .vars("generator", self.sampler_policy().var_store())
            .tensors("optim-generator", self.loss.optimizer_mut().state());
        if self.average.is_some() {
            writer.vars(TRAINED_WEIGHTS, self.policy.var_store())
        } else {
            writer
        }
    }

    fn restore(&mut self, c: &Checkpoint) -> Result<(), RunError> {
        match &mut self.average {
            Some((shadow, _)) => {
                c.load_vars(TRAINED_WEIGHTS, self.policy.var_store_mut())?;
                c.load_vars("generator", shadow.var_store_mut())?;
            }
            None => c.load_vars("generator", self.policy.var_store_mut())?,
        }
        self.loss
            .optimizer_mut()
            .load_state(&c.tensors("optim-generator")?)?;
        Ok(())
    }

    fn sampler(&self) -> Option<&DiffusionPolicy> {
        Some(self.sampler_policy())
    }

    /// The trained network's evaluations (the average's are evaluations').
    fn network_evaluations(&self) -> u64 {
        self.policy.network_evaluations()
            + self
                .average
                .as_ref()
                .map_or(0, |(shadow, _)| shadow.network_evaluations())
    }
}

impl Pretraining {
    /// The trained sampler (the weight average if there is one), to sample
    /// or fine-tune.
    pub fn into_sampler(self) -> DiffusionPolicy {
        match self.average {
            Some((shadow, _)) => shadow,
            None => self.policy,
        }
    }

    /// The sampler: the weight average if there is one, else the weights.
    fn sampler_policy(&self) -> &DiffusionPolicy {
        self.average
            .as_ref()
            .map_or(&self.policy, |(shadow, _)| shadow)
    }
}
