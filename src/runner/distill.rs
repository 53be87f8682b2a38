//! Progressive distillation runs (Salimans & Ho 2022; `task: Distill`):
//! rounds of [`agents::distill::Distiller`] through the library's trainer,
//! with the same checkpoints, resume, TensorBoard and evaluations as every
//! task.

use std::path::{Path, PathBuf};

use agents::distill::Distiller;
use agents::policy::DiffusionPolicy;
use envs::sampler::{DdimEvenSampler, SamplerConfig};
use tch::{Device, Kind, Tensor};

use super::data::Data;
use super::evaluator::experiment_trainer;
use super::memory;
use crate::checkpoint::{Checkpoint, CheckpointWriter};
use crate::config::{DistillTask, Experiment};
use crate::error::RunError;
use crate::trainer::{EpochEnd, EpochLog, Training};

const PHASE: u64 = 3;

/// The checkpoint part holding the current round's teacher.
pub const TEACHER_WEIGHTS: &str = "teacher";

/// Distils `start` (the pretrained model on its first teacher's grid,
/// `DdimEven(steps: task.from_steps)`) into the experiment's sampler;
/// returns the run's final folder.
pub fn distill(
    exp: &Experiment,
    task: &DistillTask,
    start: DiffusionPolicy,
    run_dir: &Path,
    device: Device,
    resume: Option<&Checkpoint>,
    show_progress: bool,
) -> Result<PathBuf, RunError> {
    let data = Data::load(&exp.data, device)?;
    let reference = data.first(exp.eval.n as i64).to_device(Device::Cpu);
    let betas = exp.env.schedule.betas(exp.env.steps)?;
    let mut distillation = Distillation::new(task.clone(), start, betas, data)?;
    experiment_trainer(exp, run_dir, PHASE, reference, show_progress)?
        .run(&mut distillation, resume)
}

/// Progressive distillation as a [`Training`]: the run's epochs are the
/// rounds' in turn (`epochs_per_round` each); the first epoch of a round
/// makes the last student its teacher and a copy of it on half the steps
/// the new student, with a fresh optimiser. An epoch is one pass over the
/// data in random order, in batches; the learning rate falls linearly to 0
/// over a round when `anneal` is on.
pub struct Distillation {
    task: DistillTask,
    training_betas: Vec<f64>,
    /// The current round's teacher (none before the first round).
    teacher: Option<DiffusionPolicy>,
    /// The current round's student (before the first round: the
    /// pretrained model on the first teacher's grid).
    student: DiffusionPolicy,
    distiller: Option<Distiller>,
    round: Option<usize>,
    data: Data,
    /// Network evaluations of the teachers no longer held.
    retired_evaluations: u64,
}

impl Distillation {
    /// Distils `start` (on `DdimEven(steps: task.from_steps)`, a model
    /// trained with `training_betas`) on `data`.
    pub fn new(
        task: DistillTask,
        start: DiffusionPolicy,
        training_betas: Vec<f64>,
        data: Data,
    ) -> Result<Self, RunError> {
        if start.horizon() != task.from_steps {
            return Err(RunError::Env(envs::EnvError::Invalid {
                field: "task.from_steps",
                reason: format!(
                    "the start samples in {} steps, the first teacher's grid has {}",
                    start.horizon(),
                    task.from_steps
                ),
            }));
        }
        Ok(Self {
            task,
            training_betas,
            teacher: None,
            student: start,
            distiller: None,
            round: None,
            data,
            retired_evaluations: 0,
        })
    }

    /// The policy `like` on the even grid of `steps` steps.
    fn on_grid(&self, like: &DiffusionPolicy, steps: usize) -> Result<DiffusionPolicy, RunError> {
        let schedule = SamplerConfig::DdimEven(DdimEvenSampler { steps }).build(
            &self.training_betas,
            envs::schedule::Variance::PosteriorBetaTilde,
        )?;
        like.copy_on(&schedule).ok_or_else(|| {
            RunError::Env(envs::EnvError::Invalid {
                field: "model",
                reason: "distillation copies the network; a custom network cannot be copied".into(),
            })
        })
    }

    /// Begins round `round`: the student becomes the teacher, a copy on
    /// half its steps the student.
    fn start_round(&mut self, round: usize) -> Result<(), RunError> {
        let steps = self.task.student_steps_in(round);
        let student = self.on_grid(&self.student, steps)?;
        let mut teacher = std::mem::replace(&mut self.student, student);
        teacher.var_store_mut().freeze();
        if let Some(old) = self.teacher.replace(teacher) {
            self.retired_evaluations += old.network_evaluations();
        }
        self.distiller = Some(Distiller::new(
            self.task.distill_config(),
            &self.student,
            &self.training_betas,
            steps,
        ));
        self.round = Some(round);
        Ok(())
    }

    /// Batches per epoch.
    fn batches(&self) -> usize {
        (self.data.len() as usize).div_ceil(self.task.batch)
    }
}

impl Training for Distillation {
    fn epoch(&mut self, epoch: usize, log: &mut EpochLog<'_>) -> Result<EpochEnd, RunError> {
        let round = epoch / self.task.epochs_per_round;
        if self.round != Some(round) {
            self.start_round(round)?;
        }
        let per_round = self.task.epochs_per_round * self.batches();
        let first_update = (epoch % self.task.epochs_per_round) * self.batches();
        let lr0 = self.task.optimizer.lr();
        let n = self.data.len();
        let device = self.data.device();
        let order = Tensor::randperm(n, (Kind::Int64, device));
        let teacher = self.teacher.as_ref().expect("a round has a teacher");
        let distiller = self.distiller.as_mut().expect("a round has a distiller");
        let (mut loss_sum, mut lr) = (0.0, lr0);
        let mut batches = 0;
        for (i, start) in (0..n).step_by(self.task.batch).enumerate() {
            let idx = order.narrow(0, start, (self.task.batch as i64).min(n - start));
            if self.task.anneal {
                lr = lr0 * (1.0 - (first_update + i) as f64 / per_round as f64);
            }
            loss_sum += memory::guard(
                "a distillation batch",
                "task.batch",
                self.task.batch,
                || Ok(distiller.step(teacher, &self.student, &self.data.batch(&idx), lr)?),
            )?;
            batches += 1;
            *log.step += 1;
        }
        // Each rank's loss is its share of the batch's (conventions section 7).
        let loss_sum = collective::current().sum_f64(loss_sum)?;
        let loss = loss_sum / batches as f64;
        let steps = distiller.student_steps();
        log.recorder.scalar("distill/loss", loss, *log.step)?;
        log.recorder
            .scalar("distill/round", round as f64, *log.step)?;
        log.recorder
            .scalar("distill/student_steps", steps as f64, *log.step)?;
        log.recorder.scalar("distill/lr", lr, *log.step)?;
        Ok(EpochEnd::going_on(format!(
            "round {} ({} steps), loss {loss:.4}",
            round + 1,
            steps
        )))
    }

    fn checkpoint(&mut self) -> CheckpointWriter {
        let mut writer = CheckpointWriter::new().vars("generator", self.student.var_store());
        if let Some(teacher) = &self.teacher {
            writer = writer.vars(TEACHER_WEIGHTS, teacher.var_store());
        }
        if let Some(distiller) = &mut self.distiller {
            writer = writer.tensors("optim-generator", distiller.optimizer_mut().state());
        }
        writer
    }

    fn restore(&mut self, c: &Checkpoint) -> Result<(), RunError> {
        let done = c.state()?.epochs_done;
        if done == 0 {
            return Ok(());
        }
        // The round of the last epoch done: its teacher, student and optimiser.
        let round = (done - 1) / self.task.epochs_per_round;
        let mut teacher = self.on_grid(&self.student, self.task.from_steps >> round)?;
        c.load_vars(TEACHER_WEIGHTS, teacher.var_store_mut())?;
        teacher.var_store_mut().freeze();
        let mut student = self.on_grid(&self.student, self.task.student_steps_in(round))?;
        c.load_vars("generator", student.var_store_mut())?;
        let mut distiller = Distiller::new(
            self.task.distill_config(),
            &student,
            &self.training_betas,
            self.task.student_steps_in(round),
        );
        distiller
            .optimizer_mut()
            .load_state(&c.tensors("optim-generator")?)?;
        self.teacher = Some(teacher);
        self.student = student;
        self.distiller = Some(distiller);
        self.round = Some(round);
        Ok(())
    }

    fn sampler(&self) -> Option<&DiffusionPolicy> {
        Some(&self.student)
    }

    fn network_evaluations(&self) -> u64 {
        self.retired_evaluations
            + self.student.network_evaluations()
            + self
                .teacher
                .as_ref()
                .map_or(0, DiffusionPolicy::network_evaluations)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use agents::optim::OptimizerConfig;
    use envs::schedule::BetaSchedule;
    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::checkpoint::{CheckpointStore, RunFolderStore};
    use crate::recording::MemoryRecorder;
    use crate::trainer::{Trainer, TrainerConfig};

    const ROUNDS_OF: usize = 2;

    fn betas() -> Vec<f64> {
        BetaSchedule::Linear {
            start: 0.05,
            end: 0.6,
        }
        .betas(8)
        .unwrap()
    }

    /// 8 -> 4 -> 2 steps, two epochs a round, on a toy network.
    fn distillation() -> Distillation {
        let task = DistillTask {
            init: "unused".into(),
            from_steps: 8,
            epochs_per_round: ROUNDS_OF,
            batch: 40,
            optimizer: OptimizerConfig::Adam { lr: 1e-3 },
            anneal: true,
            grad_clip: Some(1.0),
            weighting: Default::default(),
        };
        tch::manual_seed(11);
        let schedule = SamplerConfig::DdimEven(DdimEvenSampler { steps: 8 })
            .build(&betas(), envs::schedule::Variance::PosteriorBetaTilde)
            .unwrap();
        let start = DiffusionPolicy::toy(&schedule, 2, 16, 8, Device::Cpu);
        let data = Data::from_values(
            Tensor::randn([120, 2], (Kind::Float, Device::Cpu)),
            false,
            false,
        );
        Distillation::new(task, start, betas(), data).unwrap()
    }

    fn run(dir: &Path, epochs: usize, training: &mut Distillation) -> PathBuf {
        let config = TrainerConfig {
            checkpoint_every: 1,
            ..TrainerConfig::new("distill", epochs, 5)
        };
        let store = RunFolderStore::new(dir);
        let resume = store.latest().unwrap();
        Trainer::new(config, Box::new(MemoryRecorder::default()), Box::new(store))
            .run(training, resume.as_ref())
            .unwrap()
    }

    fn bytes(dir: &Path) -> Vec<Vec<u8>> {
        ["generator", "teacher", "optim-generator"]
            .iter()
            .map(|part| std::fs::read(dir.join(format!("{part}.safetensors"))).unwrap())
            .collect()
    }

    #[test]
    fn a_run_cut_at_or_within_a_round_resumes_to_the_same_bytes() {
        let _rng = envs::testing::seeded(0);
        let root = std::env::temp_dir().join(format!("shortcut-distill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let whole = run(&root.join("whole"), 2 * ROUNDS_OF, &mut distillation());
        for cut in [ROUNDS_OF, ROUNDS_OF + 1] {
            let dir = root.join(format!("cut{cut}"));
            // Stopped after `cut` epochs (its last checkpoint), then resumed
            // by a fresh process.
            run(&dir, cut, &mut distillation());
            let resumed = run(&dir, 2 * ROUNDS_OF, &mut distillation());
            assert!(bytes(&resumed) == bytes(&whole), "cut after {cut} epochs");
        }
        let done = crate::checkpoint::Checkpoint::open(&whole).unwrap();
        assert_eq!(done.state().unwrap().cost.network_evaluations, 3 * 120 * 4);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
