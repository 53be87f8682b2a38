//! Running experiments: dependencies first (a fine-tuning run trains its
//! pretrained sampler if needed), then the run itself, then the comparison table.

pub mod ablation;
pub mod analytic;
pub mod compare;
pub mod covariance;
pub mod data;
pub mod distill;
pub mod eps;
pub mod evaluate;
pub mod evaluator;
pub mod fid;
pub mod finetune;
pub mod lock;
pub mod memory;
pub mod model;
pub mod parallel;
pub mod pretrain;
pub mod sampling;
pub mod sft_pg;

use std::path::{Path, PathBuf};

use tch::Device;

use crate::checkpoint::{Checkpoint, CheckpointStore, RunFolderStore};
use crate::config::{Experiment, Task};
use crate::error::RunError;
use data::{fresh_data, held_out_data, Data};
use evaluate::{policy_quality, quality_against, quality_against_both, Row, Table};
use model::{load_policy, load_policy_with_sampler, run_dir};

/// How `rl-run` was asked to run an experiment.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue the experiment's unfinished run from its last checkpoint.
    pub resume: bool,
    /// Train again even if the experiment has a final result (the old run folder is kept, renamed).
    pub retrain: bool,
    /// Draw progress bars.
    pub show_progress: bool,
    /// Skip the final comparison table.
    pub no_table: bool,
    /// Train this experiment as a dependency of another run: resume it if it
    /// was interrupted, and wait if another process is training it.
    pub as_dependency: bool,
    /// Train dependencies in child processes of this executable, up to `jobs`
    /// runs at a time (the main run counts as one); none: one after the other.
    pub parallel: Option<(PathBuf, usize)>,
    /// `--set FIELD=VALUE` changes to the named experiment (not to the runs
    /// it depends on, which are read as their files say).
    pub overrides: Vec<crate::overrides::Override>,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct RunReport {
    /// The run's folder.
    pub run_dir: PathBuf,
    /// The final generator.
    pub final_dir: PathBuf,
    /// The comparison table (unless skipped).
    pub table: Option<Table>,
}

/// What `rl-run FILE` produced.
#[derive(Debug)]
pub enum Report {
    /// A single experiment.
    Run(RunReport),
    /// An ablation.
    Ablation(ablation::AblationReport),
    /// A comparison of samplers by FID and KID.
    Comparison(compare::ComparisonReport),
    /// A control task (CartPole) trained until solved.
    Control(crate::control::ControlReport),
}

/// Runs the experiment, ablation or comparison in `path` (told apart by
/// the file's top-level name: `Experiment(...)`, `Ablation(...)` or
/// `Comparison(...)`).
pub fn run_path(path: &Path, options: &RunOptions) -> Result<Report, RunError> {
    let text = crate::error::read_text(path)?;
    let world = collective::current().world_size();
    if world > 1 {
        return data_parallel_run(path, &text, options, world);
    }
    if crate::config::top_level_name(&text) == Some("Control") {
        let exp = crate::control::ControlExperiment::parse(&text, path)?;
        let report = if options.overrides.is_empty() {
            crate::control::run(&exp, &text, options)?
        } else {
            let exp = crate::overrides::apply(exp, &options.overrides, path)?;
            crate::control::run(&exp, &exp.to_ron(), options)?
        };
        return Ok(Report::Control(report));
    }
    if crate::config::top_level_name(&text) == Some("Comparison") {
        if let Some(first) = options.overrides.first() {
            return Err(RunError::Config(crate::ConfigError::Override {
                file: path.to_path_buf(),
                field: first.field.clone(),
                message: "--set changes experiments; a comparison names its experiments (edit the comparison file)".into(),
            }));
        }
        return Ok(Report::Comparison(compare::run_comparison(path, options)?));
    }
    if crate::config::top_level_name(&text) == Some("Ablation") {
        if let Some(first) = options.overrides.first() {
            return Err(RunError::Config(crate::ConfigError::Override {
                file: path.to_path_buf(),
                field: first.field.clone(),
                message: "--set changes experiments; an ablation's variants change its base (edit the ablation file)".into(),
            }));
        }
        Ok(Report::Ablation(ablation::run_ablation(path, options)?))
    } else {
        Ok(Report::Run(run_file(path, options)?))
    }
}

/// A run on several ranks (docs/distributed.md): one experiment whose task
/// is data-parallel so far (pretraining), trained by every rank without
/// child processes; the comparison table is left to a one-process run
/// afterwards, which finds the published result.
fn data_parallel_run(
    path: &Path,
    text: &str,
    options: &RunOptions,
    world: usize,
) -> Result<Report, RunError> {
    let refuse = |message: String| Err(RunError::DataParallel { world, message });
    match crate::config::top_level_name(text) {
        Some("Experiment") | None => {}
        Some(other) => {
            return refuse(format!(
                "{}: {other} files run in one process; data-parallel ranks train one experiment",
                path.display()
            ))
        }
    }
    let exp = crate::overrides::apply(Experiment::load(path)?, &options.overrides, path)?;
    // GPU tensors meet over NCCL and CPU tensors over MPI: ranks on both
    // kinds of device would wait in different collectives.
    let engine = collective::current();
    let on_gpu = engine.all_gather_u64(u64::from(exp.device.resolve().is_cuda()))?;
    if let Some(message) = mixed_devices(&on_gpu) {
        return refuse(format!("{}: {message}", path.display()));
    }
    if collective::current().rank() == 0 && !options.no_table && !exp.compare.is_empty() {
        eprintln!(
            "rl-run: the comparison table is made in one process: run `rl-run {}` after this run",
            path.display()
        );
    }
    let options = RunOptions {
        parallel: None,
        no_table: true,
        ..options.clone()
    };
    Ok(Report::Run(run_file(path, &options)?))
}

/// What is wrong when some ranks run on a GPU and others on the CPU
/// (`on_gpu`: 1 for a GPU, by rank), if they do.
fn mixed_devices(on_gpu: &[u64]) -> Option<String> {
    let ranks = |gpu: u64| {
        let list: Vec<String> = (0..on_gpu.len())
            .filter(|&r| on_gpu[r] == gpu)
            .map(|r| r.to_string())
            .collect();
        list.join(", ")
    };
    let (gpus, cpus) = (ranks(1), ranks(0));
    (!gpus.is_empty() && !cpus.is_empty()).then(|| {
        format!(
            "ranks {gpus} run on a GPU and ranks {cpus} on the CPU (`device: Auto` found no GPU \
             there): the ranks need one kind of device; set `device` to Cpu, or run on GPU nodes only"
        )
    })
}

/// Runs the experiment in `path` (training what it depends on first) and evaluates it.
pub fn run_file(path: &Path, options: &RunOptions) -> Result<RunReport, RunError> {
    let exp = crate::overrides::apply(Experiment::load(path)?, &options.overrides, path)?;
    configure_threads(exp.threads);
    let device = exp.device.resolve();
    let final_dir = match &options.parallel {
        Some((executable, jobs)) if *jobs > 1 => {
            let (init, others) = dependencies(path, &exp)?;
            let mut all = Vec::new();
            for dep in init.iter().chain(&others) {
                let carried = crate::overrides::carried_to_dependency(
                    &options.overrides,
                    &exp,
                    &Experiment::load(dep)?,
                );
                all.push((dep.clone(), carried));
            }
            let mut background = parallel::Background::start(executable, &all, *jobs)?;
            if let Some(init) = &init {
                background.wait_for(&Experiment::load(init)?.name)?;
            }
            // While the main run trains here, one slot fewer is left to the children.
            background.poll(jobs - 1)?;
            let final_dir = ensure_trained(path, &exp, options, !options.as_dependency, device)?;
            background.finish()?;
            final_dir
        }
        _ => ensure_trained(path, &exp, options, !options.as_dependency, device)?,
    };
    let table = if options.no_table {
        None
    } else {
        // Nothing else trains now: the evaluations may use every granted core.
        if let Some((_, jobs)) = &options.parallel {
            configure_threads((*jobs).max(exp.threads));
        }
        Some(comparison_table(path, &exp, options, device)?)
    };
    if let Some(table) = &table {
        let file = run_dir(&exp).join("table.md");
        std::fs::write(&file, table.to_markdown())
            .map_err(|source| RunError::Io { path: file, source })?;
    }
    Ok(RunReport {
        run_dir: run_dir(&exp),
        final_dir,
        table,
    })
}

/// The experiment files a run depends on: the one it starts from (if it
/// fine-tunes) and those it compares with.
fn dependencies(
    path: &Path,
    exp: &Experiment,
) -> Result<(Option<PathBuf>, Vec<PathBuf>), RunError> {
    let init = match exp.task.init().map(|init| model::init_source(path, init)) {
        Some(model::InitSource::Run(init_path)) => Some(init_path),
        Some(model::InitSource::Imported(_)) | None => None,
    };
    let others = exp
        .compare
        .iter()
        .map(|c| Experiment::resolve_relative(path, c))
        .collect();
    Ok((init, others))
}

/// The run `dep` that `exp` depends on (its start or a run it compares
/// with), with the data locations given for `exp` on the command line
/// (see [`crate::overrides::carried_to_dependency`]).
fn load_dependency(
    dep: &Path,
    exp: &Experiment,
    options: &RunOptions,
) -> Result<Experiment, RunError> {
    let loaded = Experiment::load(dep)?;
    let carried = crate::overrides::carried_to_dependency(&options.overrides, exp, &loaded);
    Ok(crate::overrides::apply(loaded, &carried, dep)?)
}

/// Sets libtorch's intra-op threads (1 is fastest for the toy networks).
pub fn configure_threads(threads: usize) {
    tch::set_num_threads(threads as i32);
}

/// Tells glibc's allocator to keep freed memory for reuse instead of handing
/// it back to the kernel. libtorch allocates its CPU tensors with `malloc`;
/// by default every tensor above glibc's mmap threshold (at most 32 MiB, and
/// a [10000, 128] activation is 5 MiB) is a fresh `mmap` whose pages the
/// kernel must fault in and zero, and freed heap tops are trimmed. Sampling
/// 10K chains spent a sixth of its time there. The peak resident set stays
/// what the run needs at its largest; it is just not returned in between.
/// At image size it costs memory as well: one SFT-PG round of the CIFAR-10
/// configuration at 128 chains ran 1.40x faster with it than with glibc's
/// defaults, at 11.1 GiB peak RSS instead of 7.5 (docs/performance.md).
/// Call it once, before the first tensor is made.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two allocator parameters; it is called
    // before any other thread exists and has no memory-safety preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Moves the run folder `dir` of run `name` aside as `<name>.<unix time>`
/// (what `--retrain` keeps of the previous run) and says so.
pub(crate) fn set_aside(dir: &Path, name: &str) -> Result<PathBuf, RunError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept = dir.with_file_name(format!("{name}.{stamp}"));
    std::fs::rename(dir, &kept).map_err(|source| RunError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    eprintln!(
        "rl-run: kept the previous run of {name} as {}",
        kept.display()
    );
    Ok(kept)
}

/// Trains `exp` unless it already has a final result; returns the final folder.
/// The main experiment honours `--resume`/`--retrain`; dependencies resume
/// an unfinished run by themselves.
fn ensure_trained(
    path: &Path,
    exp: &Experiment,
    options: &RunOptions,
    main: bool,
    device: Device,
) -> Result<PathBuf, RunError> {
    // A sampler that cannot be built on its own (Analytic-DPM needs a
    // trained model) is refused, for its own reason, before anything is
    // trained; SN-DDPM's is the sampler of the head a covariance run trains.
    let own_head = matches!(exp.task, Task::CovarianceHead(_));
    if let (false, Err(RunError::Env(envs::EnvError::Invalid { field, reason }))) =
        (own_head, model::schedule(exp))
    {
        let field = if field.starts_with("env.") {
            field.to_string()
        } else {
            format!("env.sampler.{field}")
        };
        let line = crate::error::read_text(path)
            .map_or(1, |text| crate::config::locate_field(&text, &field));
        return Err(RunError::Config(crate::ConfigError::Invalid {
            file: path.to_path_buf(),
            line,
            field,
            message: reason,
        }));
    }
    let dir = run_dir(exp);
    let store = RunFolderStore::new(&dir);
    let (final_dir, checkpoint_dir) = (store.final_dir(), store.checkpoint_dir());
    // Of data-parallel ranks, rank 0's view decides (another rl-run may be
    // publishing the dependency while the ranks look).
    let engine = collective::current();
    if !main && rank_zero_says(engine.as_ref(), store.published()?.is_some())? {
        warn_if_changed(exp, &final_dir);
        return Ok(final_dir);
    }
    check_global_batch(path, exp, engine.world_size())?;
    // A start that does not fit is refused before anything is moved or trained.
    if let Some(init) = exp.task.init() {
        match model::init_source(path, init) {
            model::InitSource::Run(init_path) => {
                check_compatible(exp, &load_dependency(&init_path, exp, options)?, &init_path)?
            }
            model::InitSource::Imported(folder) => {
                model::check_imported(exp, path, &folder)?;
            }
        }
    }
    // A dependency being trained by another rl-run is waited for; the run
    // asked for is refused. Of data-parallel ranks, rank 0 holds the lock
    // and moves folders; the others look once it holds it, waiting as long
    // as for an evaluation where rank 0 may wait for that other rl-run.
    let lock = if engine.rank() == 0 {
        Some(lock::RunLock::acquire(&dir, !main)?)
    } else {
        None
    };
    if main {
        engine.barrier()?;
    } else {
        engine.evaluation_barrier()?;
    }
    let (published, latest) = agreed_folder_state(&store, engine.as_ref())?;
    let has_results = published || latest.is_some();
    if main && options.retrain && has_results {
        engine.barrier()?;
        drop(lock);
        if engine.rank() == 0 {
            set_aside(&dir, &exp.name)?;
        }
        let fresh = RunOptions {
            retrain: false,
            ..options.clone()
        };
        return ensure_trained(path, exp, &fresh, main, device);
    } else if published {
        if main && options.resume {
            eprintln!(
                "rl-run: {} has already finished; nothing to resume",
                exp.name
            );
        }
        warn_if_changed(exp, &final_dir);
        return Ok(final_dir);
    }
    let resume = if let Some(latest) = latest {
        if main && !options.resume {
            return Err(RunError::Checkpoint {
                path: checkpoint_dir,
                message: "an unfinished run is here: pass --resume to continue it, or --retrain to start over".into(),
            });
        }
        Some(latest)
    } else {
        if main && options.resume {
            return Err(RunError::Checkpoint {
                path: checkpoint_dir,
                message: "nothing to resume: no checkpoint".into(),
            });
        }
        None
    };
    if let Some(c) = &resume {
        eprintln!(
            "rl-run: resuming {} after epoch {}",
            exp.name,
            c.state()?.epochs_done
        );
    }
    match &exp.task {
        Task::Pretrain(task) => pretrain::pretrain(
            exp,
            task,
            &dir,
            device,
            resume.as_ref(),
            options.show_progress,
        ),
        Task::FineTune(task) => finetune::finetune(
            exp,
            task,
            pretrained_start(path, exp, exp.env.sampler, options, device)?,
            &dir,
            device,
            resume.as_ref(),
            options.show_progress,
        ),
        Task::Distill(task) => {
            // The first teacher: the pretrained model on the even grid of from_steps.
            let first = envs::sampler::SamplerConfig::DdimEven(envs::sampler::DdimEvenSampler {
                steps: task.from_steps,
            });
            distill::distill(
                exp,
                task,
                pretrained_start(path, exp, first, options, device)?,
                &dir,
                device,
                resume.as_ref(),
                options.show_progress,
            )
        }
        Task::CovarianceHead(task) => covariance::fit(
            exp,
            task,
            pretrained_start(
                path,
                exp,
                envs::sampler::SamplerConfig::Full,
                options,
                device,
            )?,
            &dir,
            device,
            resume.as_ref(),
            options.show_progress,
        ),
    }
}

/// Whether `store` holds a published result, and its latest checkpoint, as
/// rank 0 sees them: every rank of a data-parallel run takes rank 0's
/// answer (and checks that its own view of the folder agrees), so that all
/// return, resume or start alike.
/// Rank 0's `value` on every rank (this process's own on one rank).
fn rank_zero_says(engine: &dyn collective::Collective, value: bool) -> Result<bool, RunError> {
    if engine.world_size() == 1 {
        return Ok(value);
    }
    let mut seen = [tch::Tensor::from_slice(&[i64::from(value)])];
    engine.broadcast(&mut seen, 0)?;
    Ok(seen[0].int64_value(&[0]) == 1)
}

/// Refuses, on `world` ranks, an experiment whose global batch (`task.batch`)
/// has fewer samples than there are ranks: the main experiment and every
/// experiment it trains on the way.
fn check_global_batch(path: &Path, exp: &Experiment, world: usize) -> Result<(), RunError> {
    let batch = match &exp.task {
        Task::Pretrain(task) => task.batch,
        Task::FineTune(task) => task.batch,
        Task::Distill(task) => task.batch,
        Task::CovarianceHead(task) => task.batch,
    };
    if batch < world {
        return Err(RunError::DataParallel {
            world,
            message: format!(
                "{}: task.batch {batch} is the global batch, split across the ranks: it needs at least one sample per rank",
                path.display()
            ),
        });
    }
    Ok(())
}

fn agreed_folder_state(
    store: &RunFolderStore,
    engine: &dyn collective::Collective,
) -> Result<(bool, Option<Checkpoint>), RunError> {
    let published = store.published()?.is_some();
    let latest = store.latest()?;
    if engine.world_size() == 1 {
        return Ok((published, latest));
    }
    let epochs = match &latest {
        Some(c) => c.state()?.epochs_done as i64,
        None => -1,
    };
    let mut seen = [tch::Tensor::from_slice(&[i64::from(published), epochs])];
    engine.broadcast(&mut seen, 0)?;
    let rank0 = Vec::<i64>::try_from(&seen[0]).map_err(|e| RunError::DataParallel {
        world: engine.world_size(),
        message: e.to_string(),
    })?;
    if rank0 != [i64::from(published), epochs] {
        return Err(RunError::DataParallel {
            world: engine.world_size(),
            message: format!(
                "rank {} sees {} (published: {published}, checkpoint after epoch {epochs}), rank 0 published: {}, epoch {}: the ranks need one shared, up-to-date file system",
                engine.rank(),
                store.final_dir().display(),
                rank0[0] == 1,
                rank0[1]
            ),
        });
    }
    Ok((published, latest))
}

/// The pretrained model `exp` starts from (`task.init`: a run, trained
/// first if need be, or a diffusers folder), sampled by `sampler`.
fn pretrained_start(
    path: &Path,
    exp: &Experiment,
    sampler: envs::sampler::SamplerConfig,
    options: &RunOptions,
    device: Device,
) -> Result<agents::policy::DiffusionPolicy, RunError> {
    let init = exp.task.init().expect("a task with a start");
    match model::init_source(path, init) {
        model::InitSource::Run(init_path) => {
            let init = load_dependency(&init_path, exp, options)?;
            check_compatible(exp, &init, &init_path)?;
            let dependency = RunOptions {
                overrides: Vec::new(),
                ..options.clone()
            };
            let init_final = ensure_trained(&init_path, &init, &dependency, false, device)?;
            load_policy_with_sampler(&init_final, sampler, device)
        }
        model::InitSource::Imported(dir) => {
            let mut on_sampler = exp.clone();
            on_sampler.env.sampler = sampler;
            model::imported_policy(&on_sampler, path, &dir, device)
        }
    }
}

/// Warns when a finished run being reused was trained with other settings
/// than its experiment file now has (evaluation and recording aside).
fn warn_if_changed(exp: &Experiment, final_dir: &Path) {
    let stored = Checkpoint::open(final_dir)
        .and_then(|c| c.experiment_ron())
        .ok()
        .and_then(|text| Experiment::parse_serialized(&text, final_dir).ok());
    let Some(stored) = stored else { return };
    let differs = stored.seed != exp.seed
        || stored.data != exp.data
        || stored.env != exp.env
        || stored.model != exp.model
        || stored.task != exp.task;
    if differs {
        eprintln!(
            "rl-run: warning: {} was trained with other settings than {} now has; using it anyway (--retrain trains again)",
            final_dir.display(),
            exp.name
        );
    }
}

fn check_compatible(exp: &Experiment, init: &Experiment, init_path: &Path) -> Result<(), RunError> {
    // The model and its training schedule must agree; the sampler may differ.
    let same_training = init.env.steps == exp.env.steps && init.env.schedule == exp.env.schedule;
    if !same_training || init.data.set != exp.data.set || init.model != exp.model {
        return Err(RunError::Config(crate::ConfigError::Invalid {
            file: init_path.to_path_buf(),
            line: 1,
            field: "env.steps/env.schedule/data.set/model".into(),
            message: format!(
                "the pretrained model must share its training schedule (env.steps, env.schedule), data set and model with {}; the sampler may differ",
                exp.name
            ),
        }));
    }
    Ok(())
}

/// Evaluates the experiment's final sampler beside its starting point, the
/// experiments it compares with, and the data-against-fresh-data floor.
fn comparison_table(
    path: &Path,
    exp: &Experiment,
    options: &RunOptions,
    device: Device,
) -> Result<Table, RunError> {
    let mut entries: Vec<(PathBuf, Experiment)> = Vec::new();
    let mut imported = None;
    if let Some(init) = exp.task.init() {
        match model::init_source(path, init) {
            model::InitSource::Run(init_path) => entries.push((
                init_path.clone(),
                load_dependency(&init_path, exp, options)?,
            )),
            model::InitSource::Imported(dir) => imported = Some(dir),
        }
    }
    for other in &exp.compare {
        let other_path = Experiment::resolve_relative(path, other);
        entries.push((
            other_path.clone(),
            load_dependency(&other_path, exp, options)?,
        ));
    }
    entries.push((path.to_path_buf(), exp.clone()));
    let data = Data::load(&exp.data, Device::Cpu)?;
    let data = data.first(data.len());
    let held_out = held_out_data(exp)?;
    // Each sample set is compared with the first eval.n points of each reference.
    let used = |n: i64| n.min(exp.eval.n as i64);
    let train_n = used(data.size()[0]);
    let held_n = held_out.as_ref().map(|h| used(h.size()[0]));
    let note = match (exp.data.set.is_images(), held_n) {
        (true, Some(held_n)) => format!(
            "Pixel-space W2 of images as vectors in [-1, 1]. Mean ± standard deviation over {} independent \
             sample sets, against {train_n} training images and {held_n} test images. The floor row is the \
             test images against the training images.",
            exp.eval.repeats
        ),
        (true, None) => format!(
            "Pixel-space W2 of images as vectors in [-1, 1]. Mean ± standard deviation over {} independent \
             sample sets, against {train_n} training images (the data set has no test split, so there is \
             no held-out column and no floor row).",
            exp.eval.repeats
        ),
        (false, held_n) => format!(
            "Mean ± standard deviation over {} independent sample sets, against the {train_n} training points \
             (the paper's protocol) and against {} held-out points of the same distribution (another seed). \
             The floor row is a fresh sample of the distribution.",
            exp.eval.repeats,
            held_n.unwrap_or(0)
        ),
    };
    let mut table = Table {
        title: format!("{} on {}", exp.name, exp.data.set.name()),
        note,
        rows: Vec::new(),
    };
    let seed = evaluate::EVAL_SEED ^ exp.seed as i64;
    let mut measure = |label: String, steps: usize, policy: &agents::policy::DiffusionPolicy| {
        let (train, held) = policy_quality(exp, policy, seed, &data, held_out.as_ref())?;
        table.rows.push(Row {
            label,
            steps: Some(steps),
            quality: train,
            held_out: held,
        });
        Ok::<(), RunError>(())
    };
    // A covariance head's sampler reads the head, which the pretrained
    // model does not have: its start is measured by no sampler of its own.
    let start_sampler = exp.env.sampler.covariance_target().is_none();
    if let (Some(dir), true) = (&imported, start_sampler) {
        let policy = model::imported_policy(exp, path, dir, device)?;
        measure(
            format!("pretrained ({})", dir.display()),
            model::sampler_steps(exp),
            &policy,
        )?;
    }
    let mut own_final = None;
    let run_init = exp.task.init().is_some() && imported.is_none();
    for (i, (entry_path, entry)) in entries.iter().enumerate() {
        let final_dir = ensure_trained(entry_path, entry, options, false, device)?;
        let (_, policy) = load_policy(&final_dir, device)?;
        measure(describe(entry), model::sampler_steps(entry), &policy)?;
        // The pretrained model under this run's sampler: where fine-tuning
        // starts, what distillation is measured against.
        if i == 0 && run_init && start_sampler && entry.env.sampler != exp.env.sampler {
            let start = load_policy_with_sampler(&final_dir, exp.env.sampler, device)?;
            let role = match exp.task {
                Task::Distill(_) => "undistilled",
                _ => "start",
            };
            measure(
                format!("{role}: {} ({})", exp.env.sampler.describe(), entry.name),
                model::sampler_steps(exp),
                &start,
            )?;
        }
        own_final = Some(final_dir);
    }
    // The run's own model under the other samplers it is compared with.
    if let Some(final_dir) = own_final {
        for sampler in &exp.compare_samplers {
            let policy = load_policy_with_sampler(&final_dir, *sampler, device)?;
            measure(
                format!("{} ({})", sampler.describe(), exp.name),
                sampler.steps(exp.env.steps),
                &policy,
            )?;
        }
    }
    if let Some(first) = fresh_data(exp, exp.eval.n, 0)? {
        let mut sets = vec![Some(first)];
        for set in 1..exp.eval.repeats {
            sets.push(fresh_data(exp, exp.eval.n, set)?);
        }
        let (train, held) = quality_against_both(
            exp.eval.repeats,
            |set| Ok(sets[set].take().expect("one fresh set per draw")),
            &data,
            held_out.as_ref(),
            &exp.eval,
            true,
        )?;
        table.rows.push(Row {
            label: "fresh data (floor)".into(),
            steps: None,
            quality: train,
            held_out: held,
        });
    } else if let (Some(held_out), Some(held_n)) = (&held_out, held_n) {
        let test = held_out.narrow(0, 0, held_n);
        let [train] = quality_against(
            exp.eval.repeats,
            |_| Ok(test.shallow_clone()),
            [&data],
            &exp.eval,
            true,
        )?;
        table.rows.push(Row {
            label: "test images (floor)".into(),
            steps: None,
            quality: train,
            held_out: None,
        });
    }
    Ok(table)
}

fn describe(exp: &Experiment) -> String {
    match &exp.task {
        Task::Pretrain(_) => format!("DDPM ({})", exp.name),
        Task::FineTune(f) => {
            let regularizer = match f.critic.regularizer {
                agents::critic::CriticRegularizer::Baseline { .. } => "B",
                agents::critic::CriticRegularizer::GradientPenalty { .. } => "GP",
                agents::critic::CriticRegularizer::None => "no reg.",
            };
            format!("{} ({regularizer}) ({})", f.agent.label(), exp.name)
        }
        Task::Distill(d) => format!(
            "progressive distillation from {} steps ({})",
            d.from_steps, exp.name
        ),
        Task::CovarianceHead(_) => format!("{} ({})", exp.env.sampler.describe(), exp.name),
    }
}

#[cfg(test)]
mod tests {
    use super::mixed_devices;

    #[test]
    fn ranks_on_both_kinds_of_device_are_named() {
        assert_eq!(mixed_devices(&[0, 0]), None);
        assert_eq!(mixed_devices(&[1, 1, 1]), None);
        let message = mixed_devices(&[1, 0, 1, 0]).expect("mixed");
        assert!(
            message.starts_with("ranks 0, 2 run on a GPU and ranks 1, 3 on the CPU"),
            "{message}"
        );
    }
}
