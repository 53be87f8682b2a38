//! The training loop every task shares, on built parts: a [`Training`]
//! (pretraining, SFT-PG fine-tuning, a control task, or yours) runs one
//! epoch at a time; the [`Trainer`] seeds each epoch, calls an
//! [`Evaluate`] when evaluations are due, records through any
//! [`Record`] and checkpoints through any [`CheckpointStore`], resumes from
//! a checkpoint and publishes the result. It knows nothing of experiment
//! files: `rl-run` builds the parts from one (`runner::pretrain`,
//! `runner::finetune`, `control::train`), a library user builds them in
//! Rust (`examples/trainer_from_parts.rs`).

use std::path::PathBuf;
use std::time::Instant;

use agents::policy::DiffusionPolicy;
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{Checkpoint, CheckpointStore, CheckpointWriter, RunState};
use crate::error::RunError;
use crate::recording::Record;

/// One kind of training, driven an epoch at a time by a [`Trainer`].
pub trait Training {
    /// Runs epoch `epoch` (counted from 0): its optimisation steps advance
    /// `log.step`, its scalars go to `log.recorder`.
    fn epoch(&mut self, epoch: usize, log: &mut EpochLog<'_>) -> Result<EpochEnd, RunError>;

    /// Everything a checkpoint of the training holds (weights, optimiser states).
    fn checkpoint(&mut self) -> CheckpointWriter;

    /// Loads what [`Training::checkpoint`] wrote, in place.
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), RunError>;

    /// The sampler evaluations measure, if the training has one.
    fn sampler(&self) -> Option<&DiffusionPolicy> {
        None
    }

    /// Images the training's diffusion networks have evaluated so far in
    /// this process (its cost in network evaluations; the trainer takes
    /// out what its evaluations spend). The count never falls: a training
    /// that drops a network keeps that network's count. By default the
    /// sampler's count.
    fn network_evaluations(&self) -> u64 {
        self.sampler()
            .map_or(0, DiffusionPolicy::network_evaluations)
    }
}

/// What an epoch's [`Training::epoch`] hands the trainer.
pub struct EpochLog<'a> {
    /// Where the epoch's scalars go.
    pub recorder: &'a mut dyn Record,
    /// Optimisation steps so far (the x axis of the logs); the epoch adds its own.
    pub step: &'a mut u64,
}

/// How an epoch ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochEnd {
    /// A short progress message (shown beside the progress bar).
    pub message: String,
    /// Stop after this epoch (a solved task): it is checkpointed and published.
    pub stop: bool,
}

impl EpochEnd {
    /// An epoch after which training goes on.
    pub fn going_on(message: String) -> Self {
        Self {
            message,
            stop: false,
        }
    }
}

/// Measures a sampler during training (sample quality, images, FID).
pub trait Evaluate {
    /// Whether every data-parallel rank calls [`Evaluate::evaluate`] (an
    /// evaluation that splits its sampling across the ranks, writing on
    /// rank 0 only); by default rank 0 alone evaluates.
    fn on_every_rank(&self) -> bool {
        false
    }

    /// Evaluates `sampler` after `epoch` epochs (0: before the first) at
    /// optimisation step `step`, recording to `recorder`; returns a short
    /// progress message.
    fn evaluate(
        &mut self,
        sampler: &DiffusionPolicy,
        epoch: usize,
        step: u64,
        recorder: &mut dyn Record,
    ) -> Result<String, RunError>;
}

/// How each epoch's random draws are seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochSeeds {
    /// The run's seed.
    pub seed: u64,
    /// The task (pretraining and fine-tuning of one seed draw differently).
    pub phase: u64,
}

impl EpochSeeds {
    /// The torch seed of `epoch` (SplitMix64 of seed, phase and epoch), so
    /// that a resumed run draws exactly what an uninterrupted one would.
    pub fn of(&self, epoch: usize) -> i64 {
        let mut z = self.seed
            ^ self.phase.rotate_left(32)
            ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 1) as i64
    }

    /// The seed of the draws before the first epoch (initial weights).
    pub fn of_initialisation(&self) -> i64 {
        self.of(usize::MAX)
    }
}

/// The trainer's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerConfig {
    /// The run's name (the progress bar's label).
    pub name: String,
    /// Epochs to train (fewer if an epoch says stop).
    pub epochs: usize,
    /// Checkpoint every this many epochs, and after the last.
    pub checkpoint_every: usize,
    /// Evaluate every this many epochs and after the last (with an [`Evaluate`]).
    pub eval_every: usize,
    /// Evaluate the starting point too, before the first epoch (fine-tuning).
    pub evaluate_start: bool,
    /// Seed each epoch (needed for exact resumption); `None` lets the
    /// draws run on from the generator's state.
    pub epoch_seeds: Option<EpochSeeds>,
    /// Draw a progress bar.
    pub show_progress: bool,
}

impl TrainerConfig {
    /// `epochs` epochs, checkpointed after the last, evaluated after the
    /// last, seeded from `seed`, without a progress bar.
    pub fn new(name: &str, epochs: usize, seed: u64) -> Self {
        Self {
            name: name.to_string(),
            epochs,
            checkpoint_every: epochs.max(1),
            eval_every: epochs.max(1),
            evaluate_start: false,
            epoch_seeds: Some(EpochSeeds { seed, phase: 0 }),
            show_progress: false,
        }
    }
}

/// Runs a [`Training`] epoch by epoch (see the module's documentation).
pub struct Trainer {
    config: TrainerConfig,
    recorder: Box<dyn Record>,
    store: Box<dyn CheckpointStore>,
    evaluator: Option<Box<dyn Evaluate>>,
    experiment_ron: String,
    state: RunState,
}

impl Trainer {
    /// A trainer recording to `recorder` and checkpointing to `store`.
    pub fn new(
        config: TrainerConfig,
        recorder: Box<dyn Record>,
        store: Box<dyn CheckpointStore>,
    ) -> Self {
        Self {
            config,
            recorder,
            store,
            evaluator: None,
            experiment_ron: String::new(),
            state: RunState::start(),
        }
    }

    /// Evaluates with `evaluator` when evaluations are due.
    pub fn with_evaluator(mut self, evaluator: Box<dyn Evaluate>) -> Self {
        self.evaluator = Some(evaluator);
        self
    }

    /// Stores `experiment_ron` (what produced the run) in every checkpoint.
    pub fn with_experiment(mut self, experiment_ron: String) -> Self {
        self.experiment_ron = experiment_ron;
        self
    }

    /// The run's progress: epochs done and optimisation steps so far.
    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// The recorder (to log more after training, or to read a memory recorder).
    pub fn recorder(&mut self) -> &mut dyn Record {
        self.recorder.as_mut()
    }

    /// Trains `training` from its start or, with `resume`, from that
    /// checkpoint (its weights and progress); returns where the store
    /// published the result.
    ///
    /// On several ranks ([`collective::current`]; docs/conventions.md,
    /// "Data-parallel training") every rank runs the epochs, rank 0 alone
    /// records, checkpoints and publishes, and evaluates (with the other
    /// ranks when the evaluator is [`Evaluate::on_every_rank`]), and before each
    /// checkpoint the ranks compare fingerprints of what it holds: a
    /// difference is an error and nothing is written.
    pub fn run(
        &mut self,
        training: &mut dyn Training,
        resume: Option<&Checkpoint>,
    ) -> Result<PathBuf, RunError> {
        let engine = collective::current();
        if engine.rank() != 0 {
            self.recorder = Box::new(crate::recording::NullRecorder);
            if !self.evaluator.as_ref().is_some_and(|e| e.on_every_rank()) {
                self.evaluator = None;
            }
        }
        self.state = match resume {
            Some(checkpoint) => {
                training.restore(checkpoint)?;
                checkpoint.state()?
            }
            None => RunState::start(),
        };
        let progress = self.progress_bar();
        // The cost so far, and this process's counts of network
        // evaluations: the training's, and those of the evaluations.
        let (cost_before, counted_before) = (self.state.cost, training.network_evaluations());
        let mut measuring = 0;
        if self.state.epochs_done == 0 && self.config.evaluate_start {
            measuring += self.evaluate_counted(training, 0)?.1;
        }
        for epoch in self.state.epochs_done..self.config.epochs {
            if let Some(seeds) = self.config.epoch_seeds {
                tch::manual_seed(seeds.of(epoch));
            }
            let started = Instant::now();
            let steps_before = self.state.global_step;
            let mut end = training.epoch(
                epoch,
                &mut EpochLog {
                    recorder: self.recorder.as_mut(),
                    step: &mut self.state.global_step,
                },
            )?;
            let elapsed = started.elapsed().as_secs_f64();
            self.state.cost.seconds += elapsed;
            let seconds = elapsed.max(1e-9);
            let done = epoch + 1;
            let last = done == self.config.epochs || end.stop;
            if done.is_multiple_of(self.config.eval_every) || last {
                let (message, spent) = self.evaluate_counted(training, done)?;
                end.message.push_str(&message);
                measuring += spent;
            }
            self.state.epochs_done = done;
            let counted = training.network_evaluations() - counted_before;
            debug_assert!(counted >= measuring, "evaluations count as training");
            // Every rank's evaluations of its share count (rank 0's
            // evaluations of the sampler do not).
            let own = counted.saturating_sub(measuring);
            let all = if engine.world_size() > 1 {
                engine.sum_f64(own as f64)?.round() as u64
            } else {
                own
            };
            self.state.cost.network_evaluations = cost_before.network_evaluations + all;
            self.recorder.scalar(
                "cost/network_evaluations",
                self.state.cost.network_evaluations as f64,
                self.state.global_step,
            )?;
            self.recorder.scalar(
                "cost/seconds",
                self.state.cost.seconds,
                self.state.global_step,
            )?;
            if engine.world_size() > 1 {
                self.recorder.scalar(
                    "cost/seconds_communicating",
                    engine.seconds_communicating(),
                    self.state.global_step,
                )?;
            }
            let steps = (self.state.global_step - steps_before) as f64;
            self.recorder.scalar(
                "speed/steps_per_sec",
                steps / seconds,
                self.state.global_step,
            )?;
            progress.set_message(end.message);
            progress.set_position(done as u64);
            if last || done.is_multiple_of(self.config.checkpoint_every) {
                let checkpoint = training.checkpoint();
                if engine.world_size() > 1 {
                    let fingerprints = engine.all_gather_u64(checkpoint.fingerprint())?;
                    if fingerprints.iter().any(|&f| f != fingerprints[0]) {
                        return Err(RunError::RanksDiverged {
                            epoch: done,
                            fingerprints,
                        });
                    }
                }
                if engine.rank() == 0 {
                    self.recorder.flush()?;
                    self.store
                        .save(&checkpoint, &self.state, &self.experiment_ron)?;
                }
            }
            if end.stop {
                break;
            }
        }
        self.recorder.flush()?;
        progress.finish();
        if engine.world_size() == 1 {
            return self.store.publish();
        }
        let published = if engine.rank() == 0 {
            Some(self.store.publish()?)
        } else {
            None
        };
        engine.barrier()?;
        match published {
            Some(dir) => Ok(dir),
            None => Ok(self
                .store
                .published()?
                .ok_or_else(|| RunError::DataParallel {
                    world: engine.world_size(),
                    message: "rank 0 published no result where this rank looks for it (the ranks need one shared file system)".into(),
                })?
                .dir()
                .to_path_buf()),
        }
    }

    /// [`Self::evaluate`], with the network evaluations it spent. On
    /// several ranks the others wait for rank 0's evaluation under the
    /// evaluation deadline ([`collective::Collective::evaluation_barrier`]),
    /// not the shorter one of a training step's collectives.
    fn evaluate_counted(
        &mut self,
        training: &dyn Training,
        epoch: usize,
    ) -> Result<(String, u64), RunError> {
        let before = training.network_evaluations();
        let message = self.evaluate(training, epoch)?;
        let engine = collective::current();
        if engine.world_size() > 1 {
            engine.evaluation_barrier()?;
        }
        Ok((message, training.network_evaluations() - before))
    }

    /// Evaluates the training's sampler after `epoch` epochs, if there are
    /// both an evaluator and a sampler; returns the progress message.
    fn evaluate(&mut self, training: &dyn Training, epoch: usize) -> Result<String, RunError> {
        match (&mut self.evaluator, training.sampler()) {
            (Some(evaluator), Some(sampler)) => evaluator.evaluate(
                sampler,
                epoch,
                self.state.global_step,
                self.recorder.as_mut(),
            ),
            _ => Ok(String::new()),
        }
    }

    fn progress_bar(&self) -> ProgressBar {
        let progress = if self.config.show_progress {
            ProgressBar::new(self.config.epochs as u64)
        } else {
            ProgressBar::hidden()
        };
        progress.set_style(
            ProgressStyle::with_template(
                "{prefix:>22} [{elapsed_precise}] {wide_bar} {pos}/{len} ep, ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        progress.set_prefix(self.config.name.clone());
        progress.set_position(self.state.epochs_done as u64);
        progress.reset_eta();
        progress
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::path::Path;
    use std::rc::Rc;

    use envs::schedule::{BetaSchedule, Schedule, Variance};
    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::checkpoint::RunFolderStore;
    use crate::recording::MemoryRecorder;

    /// A training whose epochs move the weights of a tiny sampler by random
    /// draws (so an epoch's seed shows in the result), stopping after
    /// `stop_after` epochs if set.
    struct Jitter {
        policy: DiffusionPolicy,
        stop_after: Option<usize>,
    }

    impl Jitter {
        fn new() -> Self {
            let betas = BetaSchedule::Linear {
                start: 0.1,
                end: 0.2,
            }
            .betas(3)
            .unwrap();
            let schedule = Schedule::new(betas, Variance::Beta).unwrap();
            tch::manual_seed(5);
            Self {
                policy: DiffusionPolicy::toy(&schedule, 2, 8, 3, Device::Cpu),
                stop_after: None,
            }
        }

        fn weights(&self) -> Vec<f64> {
            let mut named = self
                .policy
                .var_store()
                .variables()
                .into_iter()
                .collect::<Vec<_>>();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named
                .iter()
                .flat_map(|(_, t)| {
                    Vec::<f64>::try_from(t.flatten(0, -1).to_kind(Kind::Double)).unwrap()
                })
                .collect()
        }
    }

    impl Training for Jitter {
        fn epoch(&mut self, epoch: usize, log: &mut EpochLog<'_>) -> Result<EpochEnd, RunError> {
            tch::no_grad(|| {
                let mut named: Vec<_> = self.policy.var_store().variables().into_iter().collect();
                named.sort_by(|a, b| a.0.cmp(&b.0));
                for (_, mut t) in named {
                    let _ = t.g_add_(&(Tensor::randn_like(&t) * 0.1));
                }
            });
            *log.step += 10;
            log.recorder.scalar("epoch", epoch as f64, *log.step)?;
            Ok(EpochEnd {
                message: String::new(),
                stop: self.stop_after == Some(epoch + 1),
            })
        }

        fn checkpoint(&mut self) -> CheckpointWriter {
            CheckpointWriter::new().vars("generator", self.policy.var_store())
        }

        fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), RunError> {
            checkpoint.load_vars("generator", self.policy.var_store_mut())
        }

        fn sampler(&self) -> Option<&DiffusionPolicy> {
            Some(&self.policy)
        }
    }

    type Shared<T> = Rc<RefCell<Vec<T>>>;

    /// Notes the epoch and step of every evaluation.
    struct Calls(Rc<RefCell<Vec<(usize, u64)>>>);

    impl Evaluate for Calls {
        fn evaluate(
            &mut self,
            _sampler: &DiffusionPolicy,
            epoch: usize,
            step: u64,
            _recorder: &mut dyn Record,
        ) -> Result<String, RunError> {
            self.0.borrow_mut().push((epoch, step));
            Ok(String::new())
        }
    }

    /// Counts the saves of a run folder's store.
    struct Counting(RunFolderStore, Rc<RefCell<Vec<RunState>>>);

    impl CheckpointStore for Counting {
        fn save(
            &mut self,
            checkpoint: &CheckpointWriter,
            state: &RunState,
            experiment_ron: &str,
        ) -> Result<(), RunError> {
            self.1.borrow_mut().push(state.clone());
            self.0.save(checkpoint, state, experiment_ron)
        }
        fn latest(&self) -> Result<Option<Checkpoint>, RunError> {
            self.0.latest()
        }
        fn published(&self) -> Result<Option<Checkpoint>, RunError> {
            self.0.published()
        }
        fn publish(&mut self) -> Result<PathBuf, RunError> {
            self.0.publish()
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shortcut-trainer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn trainer(dir: &Path, epochs: usize) -> (Trainer, Shared<(usize, u64)>, Shared<RunState>) {
        let config = TrainerConfig {
            checkpoint_every: 2,
            eval_every: 3,
            evaluate_start: true,
            ..TrainerConfig::new("jitter", epochs, 7)
        };
        let (evals, saves) = (Rc::default(), Rc::default());
        let trainer = Trainer::new(
            config,
            Box::new(MemoryRecorder::default()),
            Box::new(Counting(RunFolderStore::new(dir), Rc::clone(&saves))),
        )
        .with_evaluator(Box::new(Calls(Rc::clone(&evals))));
        (trainer, evals, saves)
    }

    #[test]
    fn evaluations_and_checkpoints_follow_their_cadences_and_the_result_is_published() {
        let _rng = envs::testing::seeded(0);
        let dir = temp("cadence");
        let (mut trainer, evals, saves) = trainer(&dir, 7);
        let recorded = Rc::new(RefCell::new(MemoryRecorder::default()));
        trainer.recorder = Box::new(Rc::clone(&recorded));
        let mut training = Jitter::new();
        let published = trainer.run(&mut training, None).unwrap();
        // Before the first epoch, every third, and after the last.
        assert_eq!(*evals.borrow(), [(0, 0), (3, 30), (6, 60), (7, 70)]);
        let saved: Vec<usize> = saves.borrow().iter().map(|s| s.epochs_done).collect();
        assert_eq!(saved, [2, 4, 6, 7]);
        assert_eq!(recorded.borrow().series("epoch").len(), 7);
        assert_eq!(recorded.borrow().series("speed/steps_per_sec").len(), 7);
        let last = Checkpoint::open(&published).unwrap();
        let state = last.state().unwrap();
        assert_eq!((state.epochs_done, state.global_step), (7, 70));
        assert!(state.cost.seconds > 0.0);
        let mut fresh = Jitter::new();
        last.load_vars("generator", fresh.policy.var_store_mut())
            .unwrap();
        assert_eq!(fresh.weights(), training.weights());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
        let _rng = envs::testing::seeded(0);
        let (whole, cut) = (temp("whole"), temp("cut"));
        let mut uninterrupted = Jitter::new();
        trainer(&whole, 6).0.run(&mut uninterrupted, None).unwrap();
        // Stopped after 4 epochs (its last checkpoint), then resumed by a new process.
        trainer(&cut, 4).0.run(&mut Jitter::new(), None).unwrap();
        let checkpoint = RunFolderStore::new(&cut).latest().unwrap().unwrap();
        let mut resumed = Jitter::new();
        let (mut again, evals, saves) = trainer(&cut, 6);
        again.run(&mut resumed, Some(&checkpoint)).unwrap();
        assert_eq!(resumed.weights(), uninterrupted.weights());
        assert_ne!(resumed.weights(), Jitter::new().weights());
        // It starts at epoch 5: no evaluation of the start again.
        assert_eq!(*evals.borrow(), [(6, 60)]);
        assert_eq!(saves.borrow().last().unwrap().global_step, 60);
        std::fs::remove_dir_all(&whole).unwrap();
        std::fs::remove_dir_all(&cut).unwrap();
    }

    #[test]
    fn an_epoch_that_says_stop_is_evaluated_checkpointed_and_published() {
        let _rng = envs::testing::seeded(0);
        let dir = temp("stop");
        let (mut trainer, evals, saves) = trainer(&dir, 100);
        let mut training = Jitter::new();
        training.stop_after = Some(5);
        let published = trainer.run(&mut training, None).unwrap();
        assert_eq!(*evals.borrow(), [(0, 0), (3, 30), (5, 50)]);
        let saved: Vec<usize> = saves.borrow().iter().map(|s| s.epochs_done).collect();
        assert_eq!(saved, [2, 4, 5]);
        assert_eq!(trainer.state().epochs_done, 5);
        assert_eq!(
            Checkpoint::open(&published)
                .unwrap()
                .state()
                .unwrap()
                .epochs_done,
            5
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
