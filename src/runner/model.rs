//! Building the pieces of a run from its experiment: schedule, policy, data.

use std::path::{Path, PathBuf};

use agents::policy::DiffusionPolicy;
use envs::schedule::Schedule;
use tch::Device;

use crate::checkpoint::{Checkpoint, EXPERIMENT_FILE};
use crate::config::{Experiment, ModelConfig, Task};
use crate::error::RunError;
use crate::weights::diffusers::DiffusersFolder;
use crate::weights::import;
use agents::generator::VarianceConfig;
use agents::unet::UNetConfig;

/// The schedule of the experiment's sampler (`env.sampler` on the training schedule).
pub fn schedule(exp: &Experiment) -> Result<Schedule, RunError> {
    let betas = exp.env.schedule.betas(exp.env.steps)?;
    Ok(exp.env.sampler.build(&betas, exp.env.ddpm_defaults())?)
}

/// The model's training schedule: all `env.steps` steps of `env.schedule`.
pub fn training_schedule(exp: &Experiment) -> Result<Schedule, RunError> {
    let betas = exp.env.schedule.betas(exp.env.steps)?;
    Ok(Schedule::new(betas, exp.env.variance)?)
}

/// Sampling steps T' of the experiment's sampler.
pub fn sampler_steps(exp: &Experiment) -> usize {
    exp.env.sampler.steps(exp.env.steps)
}

/// A freshly initialised generator for the experiment (for a covariance
/// run, the U-Net with its covariance head, sampled by its SN-DDPM or
/// NPR-DDPM).
pub fn build_policy(exp: &Experiment, device: Device) -> Result<DiffusionPolicy, RunError> {
    if let Task::CovarianceHead(_) = &exp.task {
        let ModelConfig::UNet(config) = &exp.model else {
            return Err(RunError::Env(envs::EnvError::Invalid {
                field: "model",
                reason:
                    "a covariance head reads a U-Net's feature map: the model must be UNet(...)"
                        .into(),
            }));
        };
        let betas = exp.env.schedule.betas(exp.env.steps)?;
        let mut policy =
            agents::covariance::covariance_policy(&training_schedule(exp)?, config, device);
        policy.set_solver(exp.env.sampler.solver(&betas).transpose()?);
        return Ok(policy);
    }
    let schedule = schedule(exp)?;
    let mut policy = exp
        .model
        .build(&schedule, &exp.data.set, exp.env.steps, device)
        .map_err(|reason| {
            RunError::Env(envs::EnvError::Invalid {
                field: "env.sampler",
                reason,
            })
        })?;
    if let Task::FineTune(task) = &exp.task {
        if let VarianceConfig::Learned { floor, .. } = task.generator.variance {
            policy.learn_variance(floor);
        }
    }
    Ok(policy)
}

/// Where a fine-tuning run starts: another experiment's final model, or
/// pretrained weights imported from a diffusers folder.
#[derive(Debug, Clone, PartialEq)]
pub enum InitSource {
    /// An experiment file (trained first if it has no final result).
    Run(PathBuf),
    /// A diffusers `UNet2DModel` folder.
    Imported(PathBuf),
}

/// The start named by `task.init` (`init`) of the experiment in `path`: a
/// folder is an imported model, anything else an experiment file.
pub fn init_source(path: &Path, init: &str) -> InitSource {
    let init = Experiment::resolve_relative(path, init);
    if init.is_dir() {
        InitSource::Imported(init)
    } else {
        InitSource::Run(init)
    }
}

/// The policy of `exp` (its U-Net, sampled by its sampler) with the weights
/// of the diffusers folder `dir`: the folder's model must be the
/// experiment's (dropout aside) and its training schedule, when the folder
/// has `scheduler_config.json`, the experiment's.
pub fn imported_policy(
    exp: &Experiment,
    exp_path: &Path,
    dir: &Path,
    device: Device,
) -> Result<DiffusionPolicy, RunError> {
    let (folder, config) = check_imported(exp, exp_path, dir)?;
    let policy = DiffusionPolicy::unet(&schedule(exp)?, &config, device);
    import::load_strict(&folder.weights()?, policy.var_store())?;
    Ok(policy)
}

/// Checks that the diffusers folder `dir` holds the experiment's model and
/// training schedule, without loading its weights.
pub fn check_imported(
    exp: &Experiment,
    exp_path: &Path,
    dir: &Path,
) -> Result<(DiffusersFolder, UNetConfig), RunError> {
    let folder = DiffusersFolder::open(dir)?;
    let invalid = |field: &str, message: String| {
        RunError::Config(crate::ConfigError::Invalid {
            file: exp_path.to_path_buf(),
            line: 1,
            field: field.into(),
            message,
        })
    };
    let ModelConfig::UNet(config) = &exp.model else {
        return Err(invalid(
            "model",
            format!(
                "{} holds a U-Net; the experiment's model must be UNet(...)",
                dir.display()
            ),
        ));
    };
    let theirs = UNetConfig {
        dropout: config.dropout,
        ..folder.config.clone()
    };
    if *config != theirs {
        return Err(invalid(
            "model",
            format!(
                "the U-Net of {} is {theirs:?}, the experiment's {config:?}",
                dir.display()
            ),
        ));
    }
    if let Some(training) = folder.training_schedule()? {
        if training.steps != exp.env.steps || training.betas != exp.env.schedule {
            return Err(invalid(
                "env.steps/env.schedule",
                format!(
                    "{} was trained with {} steps of {:?}; the experiment says {} steps of {:?}",
                    dir.display(),
                    training.steps,
                    training.betas,
                    exp.env.steps,
                    exp.env.schedule
                ),
            ));
        }
    }
    let config = config.clone();
    Ok((folder, config))
}

/// Where a model's weights come from.
#[derive(Debug, Clone, Copy)]
pub enum WeightsSource<'a> {
    /// The generator of a checkpoint folder (a run's `final/`).
    Checkpoint(&'a Path),
    /// A diffusers folder, checked against the experiment in `exp_path`.
    Imported {
        /// The experiment file that names the folder.
        exp_path: &'a Path,
        /// The diffusers folder.
        dir: &'a Path,
    },
}

/// The generator stored in a checkpoint directory, sampled by `sampler`
/// instead of the sampler it was trained or fine-tuned with.
pub fn load_policy_with_sampler(
    dir: &Path,
    sampler: envs::sampler::SamplerConfig,
    device: Device,
) -> Result<DiffusionPolicy, RunError> {
    let checkpoint = Checkpoint::open(dir)?;
    let exp = Experiment::parse_serialized(
        &checkpoint.experiment_ron()?,
        &checkpoint.dir().join(EXPERIMENT_FILE),
    )?;
    policy_with_sampler(&exp, WeightsSource::Checkpoint(dir), sampler, device)
}

/// `exp`'s model with the weights of `weights`, sampled by `sampler`; for
/// Analytic-DPM, with the variances estimated from `exp`'s training images;
/// for an ODE solver, the training chain's policy sampling with the solver.
pub fn policy_with_sampler(
    exp: &Experiment,
    weights: WeightsSource<'_>,
    sampler: envs::sampler::SamplerConfig,
    device: Device,
) -> Result<DiffusionPolicy, RunError> {
    // SN-DDPM and NPR-DDPM read a covariance head: a covariance run's, of
    // their own kind; such a run samples with them alone.
    let own_head = match &exp.task {
        Task::CovarianceHead(_) => exp.env.sampler.covariance_target(),
        _ => None,
    };
    if sampler.covariance_target() != own_head {
        let reason = match own_head {
            Some(_) => format!(
                "{} trained a covariance head for {:?}; its model samples with that sampler (other samplers: sample the pretrained model it starts from)",
                exp.name, exp.env.sampler
            ),
            None => format!(
                "{sampler:?} reads a covariance head, which {} does not have: train one (task: CovarianceHead) and sample that run",
                exp.name
            ),
        };
        return Err(RunError::Env(envs::EnvError::Invalid {
            field: "sampler",
            reason,
        }));
    }
    let mut exp = exp.clone();
    let own_sampler = exp.env.sampler;
    exp.env.sampler = sampler;
    // The sampler must fit the model and its schedule (the task that
    // trained the model is not asked again: a distilled run samples with
    // DDIM too).
    let mut check = envs::check::Checker::new();
    check.within("env", |c| exp.env.validate(c, &exp.data.set, &exp.model));
    if let Err((field, message)) = check.result() {
        return Err(RunError::Env(envs::EnvError::Invalid {
            field: "sampler",
            reason: format!("{sampler:?} does not fit {}: {field}: {message}", exp.name),
        }));
    }
    let betas = exp.env.schedule.betas(exp.env.steps)?;
    let solver = sampler.solver(&betas).transpose()?;
    if solver.is_some() && own_head.is_none() {
        // Loaded as the run was (its variables, a learned variance's
        // included, fit its own sampler); the solver then samples.
        exp.env.sampler = own_sampler;
    }
    let analytic = sampler.analytic_base(&betas).transpose()?;
    if let (Some(_), envs::sampler::SamplerConfig::AnalyticDpm(a)) = (&analytic, sampler) {
        // Loaded as the DDPM sub-sequence whose variances it then replaces.
        exp.env.sampler = envs::sampler::SamplerConfig::Ddpm(envs::sampler::DdpmSampler {
            steps: a.steps,
            spacing: a.spacing,
            variance: None,
            clip_x0: Some(false),
        });
        exp.env.variance = envs::schedule::Variance::PosteriorBetaTilde;
    }
    let policy = match weights {
        WeightsSource::Checkpoint(dir) => {
            let mut policy = build_policy(&exp, device)?;
            Checkpoint::open(dir)?.load_vars("generator", policy.var_store_mut())?;
            policy
        }
        WeightsSource::Imported { exp_path, dir } => imported_policy(&exp, exp_path, dir, device)?,
    };
    let mut policy = policy;
    if solver.is_some() && own_head.is_none() {
        policy.set_solver(solver);
    }
    match (analytic, sampler) {
        (
            Some(base),
            envs::sampler::SamplerConfig::AnalyticDpm(envs::sampler::AnalyticDpmSampler {
                mc_samples,
                clip_pixel,
                ..
            }),
        ) => {
            let data = super::data::Data::load(&exp.data, Device::Cpu)?;
            let data = data.first(data.len());
            super::analytic::with_analytic_variances(
                policy,
                base,
                &data,
                mc_samples,
                clip_pixel,
                exp.seed as i64,
                exp.eval.chunk,
            )
        }
        _ => Ok(policy),
    }
}

/// The generator stored in a checkpoint directory, with the experiment that made it.
pub fn load_policy(dir: &Path, device: Device) -> Result<(Experiment, DiffusionPolicy), RunError> {
    let checkpoint = Checkpoint::open(dir)?;
    let exp = Experiment::parse_serialized(
        &checkpoint.experiment_ron()?,
        &checkpoint.dir().join(EXPERIMENT_FILE),
    )?;
    let mut policy = build_policy(&exp, device)?;
    checkpoint.load_vars("generator", policy.var_store_mut())?;
    Ok((exp, policy))
}

/// The folder of a run.
pub fn run_dir(exp: &Experiment) -> PathBuf {
    exp.record.dir.join(&exp.name)
}

/// Seeds libtorch for the initialisation of a run's networks (phase `phase`),
/// so that a run's starting weights depend on its seed alone.
pub fn seed_initialisation(exp: &Experiment, phase: u64) {
    tch::manual_seed(
        crate::trainer::EpochSeeds {
            seed: exp.seed,
            phase,
        }
        .of_initialisation(),
    );
}
