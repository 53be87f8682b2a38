//! The control trainer: batches of episodes played by the agent, an agent
//! update against the realised costs and the baseline, then the baseline
//! fitted to those costs; TensorBoard scalars, a CSV of returns, a plot of
//! the learning curve and the final weights in `runs/<name>/`.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use agents::agent::Critics;
use agents::categorical::CategoricalLearner;
use agents::ppo::Ppo;
use agents::reinforce::Reinforce;
use agents::returns::{cost_to_go, RealizedCost};
use agents::state_value::StateValue;
use agents::{rollout, Agent};
use envs::cartpole::CartPole;
use envs::{Env, Space};
use tch::{Kind, Tensor};

use super::{ControlAgent, ControlEnv, ControlExperiment};
use crate::checkpoint::{Checkpoint, CheckpointStore, CheckpointWriter, RunFolderStore};
use crate::error::RunError;
use crate::recording::curves::{plot_curves, Curve};
use crate::recording::Recorder;
use crate::runner::lock::RunLock;
use crate::runner::RunOptions;
use crate::trainer::{EpochEnd, EpochLog, Trainer, TrainerConfig, Training};

/// What a control run did.
#[derive(Debug, Clone)]
pub struct ControlReport {
    /// The run folder.
    pub dir: PathBuf,
    /// The batch of episodes whose window first met the solved criterion,
    /// if one did (the policy that played it, after one update fewer, is
    /// the one saved).
    pub solved_at_batch: Option<usize>,
    /// Episodes played until then (or in all).
    pub episodes: usize,
    /// Seconds of training until then (or in all).
    pub seconds: f64,
    /// The last mean return over the criterion's window.
    pub mean_return: f64,
}

/// Runs `exp` as `rl-run` does: a run that already finished is reported
/// from its `returns.csv` (with `--retrain`, its folder is kept aside and
/// the run starts afresh); a run being trained by another process is
/// refused (the run folder's lock, as for experiments).
pub fn run(
    exp: &ControlExperiment,
    experiment_ron: &str,
    options: &RunOptions,
) -> Result<ControlReport, RunError> {
    let dir = Path::new(&exp.dir).join(&exp.name);
    let lock = RunLock::acquire(&dir, false)?;
    if RunFolderStore::new(&dir).published()?.is_some() {
        if !options.retrain {
            return finished(exp, &dir);
        }
        drop(lock);
        crate::runner::set_aside(&dir, &exp.name)?;
        let _lock = RunLock::acquire(&dir, false)?;
        return train(exp, experiment_ron, !options.show_progress);
    }
    train(exp, experiment_ron, !options.show_progress)
}

/// The report of a finished run, from the last row of its `returns.csv`.
fn finished(exp: &ControlExperiment, dir: &Path) -> Result<ControlReport, RunError> {
    use crate::overrides::Overridable;
    let stored = RunFolderStore::new(dir)
        .published()?
        .and_then(|c| c.experiment_ron().ok())
        .and_then(|text| ControlExperiment::parse_unvalidated(&text, dir).ok());
    if stored.is_some_and(|stored| stored != *exp) {
        eprintln!(
            "rl-run: warning: {} was trained with other settings than {} now has; reporting it anyway (--retrain trains again)",
            dir.display(),
            exp.name
        );
    }
    let path = dir.join("returns.csv");
    let text = std::fs::read_to_string(&path).map_err(|source| RunError::Io {
        path: path.clone(),
        source,
    })?;
    let last: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split(',')
        .filter_map(|cell| cell.parse().ok())
        .collect();
    let [batch, episodes, seconds, _, window_mean] = last[..] else {
        return Err(RunError::Checkpoint {
            path,
            message: "expected rows of batch,episodes,seconds,batch_mean_return,window_mean_return"
                .into(),
        });
    };
    eprintln!(
        "rl-run: {} has already finished (--retrain trains it again)",
        exp.name
    );
    let solved = episodes as usize >= exp.solved.episodes && window_mean >= exp.solved.mean_return;
    Ok(ControlReport {
        dir: dir.to_path_buf(),
        solved_at_batch: solved.then_some(batch as usize),
        episodes: episodes as usize,
        seconds,
        mean_return: window_mean,
    })
}

/// Trains `exp` until its solved criterion is met or its updates run out;
/// `experiment_ron` (the file, or the experiment as `--set` changed it) is
/// stored with the weights. Each batch of episodes is an epoch of the
/// library's [`Trainer`], which records and checkpoints (the checkpoint's
/// `epochs_done` counts the batches played, the last one included); the
/// run is seeded once, at its start, and always starts afresh.
pub fn train(
    exp: &ControlExperiment,
    experiment_ron: &str,
    quiet: bool,
) -> Result<ControlReport, RunError> {
    crate::runner::configure_threads(exp.threads);
    let device = exp.device.resolve();
    tch::manual_seed(exp.seed as i64);
    let dir = Path::new(&exp.dir).join(&exp.name);
    std::fs::create_dir_all(&dir).map_err(|source| RunError::Io {
        path: dir.clone(),
        source,
    })?;
    let ControlEnv::CartPole { episodes } = exp.env;
    let env = CartPole::new(episodes, device)?;
    let (obs_dim, n_actions) = policy_shape(&env)?;
    let learner = CategoricalLearner::new(exp.policy.clone(), obs_dim, n_actions, device);
    let agent: Box<dyn LearningAgent> = match exp.agent {
        ControlAgent::Reinforce(c) => Box::new(Reinforce::new(c, learner, exp.minibatch)),
        ControlAgent::Ppo(c) => Box::new(Ppo::new(c, learner, exp.minibatch)),
    };
    let baseline = StateValue::new(
        obs_dim,
        &exp.baseline.hidden,
        exp.baseline.optimizer,
        device,
    );
    let mut control = ControlTraining::new(exp, env, agent, baseline, &dir)?;
    let config = TrainerConfig {
        name: exp.name.clone(),
        epochs: exp.updates,
        checkpoint_every: exp.updates,
        eval_every: exp.updates,
        evaluate_start: false,
        epoch_seeds: None,
        show_progress: !quiet,
    };
    Trainer::new(
        config,
        Box::new(Recorder::create(&dir)?),
        Box::new(RunFolderStore::new(&dir)),
    )
    .with_experiment(experiment_ron.to_string())
    .run(&mut control, None)?;
    Ok(control.report)
}

/// A control run as a [`Training`]: each epoch plays one batch of
/// episodes, logs their returns (TensorBoard and `returns.csv`), and,
/// unless the window of the last episodes meets the solved criterion,
/// updates the agent against the realised costs and fits the baseline.
struct ControlTraining {
    exp: ControlExperiment,
    env: CartPole,
    agent: Box<dyn LearningAgent>,
    baseline: StateValue,
    csv: std::fs::File,
    csv_path: PathBuf,
    recent: VecDeque<f64>,
    played: usize,
    curve: Vec<(f64, f64, f64)>,
    started: Instant,
    report: ControlReport,
}

impl ControlTraining {
    fn new(
        exp: &ControlExperiment,
        env: CartPole,
        agent: Box<dyn LearningAgent>,
        baseline: StateValue,
        dir: &Path,
    ) -> Result<Self, RunError> {
        let csv_path = dir.join("returns.csv");
        let io = |source| RunError::Io {
            path: csv_path.clone(),
            source,
        };
        let mut csv = std::fs::File::create(&csv_path).map_err(io)?;
        writeln!(
            csv,
            "update,episodes,seconds,batch_mean_return,window_mean_return"
        )
        .map_err(io)?;
        Ok(Self {
            exp: exp.clone(),
            env,
            agent,
            baseline,
            csv,
            csv_path,
            recent: VecDeque::new(),
            played: 0,
            curve: Vec::new(),
            started: Instant::now(),
            report: ControlReport {
                dir: dir.to_path_buf(),
                solved_at_batch: None,
                episodes: 0,
                seconds: 0.0,
                mean_return: 0.0,
            },
        })
    }
}

impl Training for ControlTraining {
    fn epoch(&mut self, epoch: usize, log: &mut EpochLog<'_>) -> Result<EpochEnd, RunError> {
        let exp = &self.exp;
        let batch = epoch + 1;
        let seed = (batch == 1).then_some(exp.seed);
        let episode = rollout(&mut self.env, self.agent.as_agent(), seed)?;
        let returns = Vec::<f64>::try_from(episode.total_reward.to_kind(Kind::Double))?;
        let window = exp.solved.episodes;
        for r in &returns {
            if self.recent.len() == window {
                self.recent.pop_front();
            }
            self.recent.push_back(*r);
        }
        self.played += returns.len();
        let batch_mean = returns.iter().sum::<f64>() / returns.len() as f64;
        let window_mean = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        // Solved by the policy that played this batch: it is the one kept.
        let solved = self.recent.len() == window && window_mean >= exp.solved.mean_return;
        *log.step = self.played as u64;
        let step = *log.step;
        log.recorder.scalar("rollout/return", batch_mean, step)?;
        log.recorder
            .scalar("rollout/return_window", window_mean, step)?;
        if !solved {
            let critics = Critics {
                reward: &RealizedCost,
                baseline: exp.uses_baseline().then_some(&self.baseline as _),
            };
            let stats = self.agent.as_agent().update(&critics)?;
            for (name, value) in &stats.values {
                log.recorder.scalar(name, *value, step)?;
            }
            if exp.uses_baseline() {
                let (states, costs) = visited(&episode, exp.policy.discount);
                let loss = self.baseline.fit(
                    &states,
                    &costs,
                    exp.baseline.steps,
                    exp.baseline.minibatch,
                )?;
                log.recorder.scalar("baseline/loss", loss, step)?;
            }
        }
        let seconds = self.started.elapsed().as_secs_f64();
        writeln!(
            self.csv,
            "{batch},{},{seconds:.3},{batch_mean},{window_mean}",
            self.played
        )
        .map_err(|source| RunError::Io {
            path: self.csv_path.clone(),
            source,
        })?;
        self.curve.push((self.played as f64, window_mean, 0.0));
        self.report.episodes = self.played;
        self.report.seconds = seconds;
        self.report.mean_return = window_mean;
        if solved {
            self.report.solved_at_batch = Some(batch);
        }
        if solved || batch == exp.updates {
            // Drawn before the trainer publishes the run.
            plot_curves(
                &self.report.dir.join("returns.png"),
                &format!("{}: mean return over the last {window} episodes", exp.name),
                "episodes",
                "return",
                &[Curve {
                    label: exp.name.clone(),
                    points: self.curve.clone(),
                }],
                (800, 450),
            )?;
        }
        Ok(EpochEnd {
            message: format!(
                "{} episodes, mean return {batch_mean:.1} (last {}: {window_mean:.1})",
                self.played,
                self.recent.len()
            ),
            stop: solved,
        })
    }

    fn checkpoint(&mut self) -> CheckpointWriter {
        CheckpointWriter::new()
            .vars("policy", self.agent.learner().var_store())
            .vars("baseline", self.baseline.var_store())
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), RunError> {
        Err(RunError::Checkpoint {
            path: checkpoint.dir().to_path_buf(),
            message: "a control run does not resume; it starts afresh (--retrain)".into(),
        })
    }
}

/// The observation size and the number of actions of a categorical policy
/// for `env`, read from its spaces (vector observations, discrete actions).
fn policy_shape<E: Env>(env: &E) -> Result<(i64, i64), RunError> {
    match (env.observation_space(), env.action_space()) {
        (Space::Box { shape, .. }, Space::Discrete(n)) if shape.len() == 1 => Ok((shape[0], n)),
        (obs, action) => Err(RunError::Env(envs::EnvError::Invalid {
            field: "env",
            reason: format!(
                "a categorical policy takes vector observations and discrete actions; this environment has {obs:?} and {action:?}"
            ),
        })),
    }
}

/// The states each row's first episode visited, with their costs-to-go.
fn visited(episode: &agents::Episode<Tensor>, discount: f64) -> (Tensor, Tensor) {
    let (states, costs): (Vec<Tensor>, Vec<Tensor>) =
        cost_to_go(&episode.rewards, &episode.ended, discount)
            .into_iter()
            .zip(&episode.observations)
            .map(|((cost, alive), obs)| {
                let rows = alive.nonzero().reshape([-1]);
                (obs.index_select(0, &rows), cost.index_select(0, &rows))
            })
            .unzip();
    (Tensor::cat(&states, 0), Tensor::cat(&costs, 0))
}

/// An agent on the categorical policy, whichever algorithm it runs.
trait LearningAgent {
    /// The agent, to act and update.
    fn as_agent(&mut self) -> &mut dyn Agent<CartPole>;
    /// The policy being trained.
    fn learner(&self) -> &CategoricalLearner;
}

impl LearningAgent for Reinforce<CategoricalLearner> {
    fn as_agent(&mut self) -> &mut dyn Agent<CartPole> {
        self
    }
    fn learner(&self) -> &CategoricalLearner {
        Reinforce::learner(self)
    }
}

impl LearningAgent for Ppo<CategoricalLearner> {
    fn as_agent(&mut self) -> &mut dyn Agent<CartPole> {
        self
    }
    fn learner(&self) -> &CategoricalLearner {
        Ppo::learner(self)
    }
}
