//! Running an ablation: the pretrained start first (fine-tuning bases), then
//! every (variant, seed) run (child processes, `--jobs` at a time), then the
//! table of final metrics (mean ± spread over seeds) and the plot of the
//! training curves.

use std::path::{Path, PathBuf};

use tch::Device;

use super::data::Data;
use super::evaluate::{mean_std, quality, sample, Quality, Row, Table, EVAL_SEED};
use super::evaluator::read_eval_log;
use super::model::{load_policy, run_dir};
use super::{configure_threads, ensure_trained, parallel, RunOptions};
use crate::ablation::{Ablation, AblationRun};
use crate::config::{Experiment, Task};
use crate::error::RunError;
use crate::recording::curves::{plot_curves, Curve};

/// File names of an ablation's results, in its folder.
pub const TABLE_FILE: &str = "table.md";
/// The plot of the training curves.
pub const CURVES_FILE: &str = "curves.png";
/// The experiment files of the runs, one per (variant, seed).
pub const CONFIGS_DIR: &str = "configs";

/// What an ablation produced.
#[derive(Debug)]
pub struct AblationReport {
    /// The ablation's folder (runs, configs, table, curves).
    pub dir: PathBuf,
    /// The table of final metrics.
    pub table: Table,
}

/// Runs the ablation in `path`.
pub fn run_ablation(path: &Path, options: &RunOptions) -> Result<AblationReport, RunError> {
    let (ablation, base, runs) = Ablation::load(path)?;
    configure_threads(base.threads);
    let device = base.device.resolve();
    let dir = ablation.run_dir(&base);
    if options.retrain && dir.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kept = dir.with_file_name(format!("{}.{stamp}", ablation.name));
        std::fs::rename(&dir, &kept).map_err(|source| RunError::Io {
            path: dir.clone(),
            source,
        })?;
        eprintln!("rl-run: kept the previous ablation as {}", kept.display());
    }
    let files = write_configs(&dir, &runs)?;

    // The shared starting point of fine-tuning runs, once, before the runs that need it.
    let dependency = RunOptions {
        resume: false,
        retrain: false,
        overrides: Vec::new(),
        ..options.clone()
    };
    let init_path = match &runs[0].experiment.task {
        // An imported start (a diffusers folder) needs no training and has no start row.
        Task::FineTune(task) if Path::new(&task.init).is_dir() => None,
        Task::FineTune(task) => {
            let init_path = PathBuf::from(&task.init);
            ensure_trained(
                &init_path,
                &Experiment::load(&init_path)?,
                &dependency,
                false,
                device,
            )?;
            Some(init_path)
        }
        Task::Pretrain(_) | Task::Distill(_) | Task::CovarianceHead(_) => None,
    };

    match &options.parallel {
        Some((executable, jobs)) => {
            eprintln!(
                "rl-run: {} runs of {} ({} variants x {} seeds), {jobs} at a time, under {}",
                runs.len(),
                ablation.name,
                ablation.variants.len(),
                ablation.seeds.len(),
                dir.display()
            );
            let deps: Vec<_> = files.iter().map(|f| (f.clone(), Vec::new())).collect();
            parallel::Background::start(executable, &deps, *jobs)?.finish()?;
        }
        None => {
            for (file, run) in files.iter().zip(&runs) {
                ensure_trained(file, &run.experiment, &dependency, false, device)?;
            }
        }
    }

    // Nothing else trains now: the evaluations may use every granted core.
    if let Some((_, jobs)) = &options.parallel {
        configure_threads((*jobs).max(base.threads));
    }
    let table = final_table(&ablation, &base, &runs, init_path.as_deref(), device)?;
    let table_file = dir.join(TABLE_FILE);
    std::fs::write(&table_file, table.to_markdown()).map_err(|source| RunError::Io {
        path: table_file,
        source,
    })?;
    // Fine-tuning curves start at the starting sampler (the table's first row).
    let start = init_path.as_ref().map(|_| {
        let q = &table.rows[0].quality;
        (q.sliced_w2 * 100.0, q.sliced_w2_std * 100.0)
    });
    let curves = training_curves(&ablation, &runs, start)?;
    let phase = if start.is_some() {
        "fine-tuning"
    } else {
        "pretraining"
    };
    plot_curves(
        &dir.join(CURVES_FILE),
        &format!("{}: sliced W2 during {phase}", ablation.name),
        "epoch",
        "sliced W2 (x1e-2), mean ± sd over seeds",
        &curves,
        (960, 600),
    )?;
    Ok(AblationReport { dir, table })
}

/// Writes every run's experiment to `<dir>/configs/<run>.ron`.
fn write_configs(dir: &Path, runs: &[AblationRun]) -> Result<Vec<PathBuf>, RunError> {
    let configs = dir.join(CONFIGS_DIR);
    std::fs::create_dir_all(&configs).map_err(|source| RunError::Io {
        path: configs.clone(),
        source,
    })?;
    runs.iter()
        .map(|run| {
            let file = configs.join(format!("{}.ron", run.experiment.name));
            std::fs::write(&file, run.experiment.to_ron()).map_err(|source| RunError::Io {
                path: file.clone(),
                source,
            })?;
            Ok(file)
        })
        .collect()
}

/// The starting sampler (fine-tuning ablations) and every variant: final
/// sliced and exact W2, each the mean ± spread over the seeds (one sample set
/// per seed, drawn with the run's evaluation noise).
fn final_table(
    ablation: &Ablation,
    base: &Experiment,
    runs: &[AblationRun],
    init_path: Option<&Path>,
    device: Device,
) -> Result<Table, RunError> {
    let data = Data::load(&base.data, Device::Cpu)?.first(base.eval.n as i64);
    let shape = base.data.set.element_shape();
    let measure = |final_dir: &Path, seed: u64| -> Result<(f64, f64), RunError> {
        let (_, policy) = load_policy(final_dir, device)?;
        let draw = |_| {
            sample(
                &policy,
                base.eval.n,
                &shape,
                EVAL_SEED ^ seed as i64,
                base.eval.chunk,
                "eval.chunk",
            )
        };
        let q = quality(1, draw, &data, &base.eval, true)?;
        Ok((q.sliced_w2, q.exact_w2.unwrap_or(f64::NAN)))
    };
    let summarise = |values: Vec<(f64, f64)>| {
        let (sliced, exact): (Vec<f64>, Vec<f64>) = values.into_iter().unzip();
        Quality::over(&sliced, Some(&exact))
    };
    let mut rows = Vec::new();
    if let Some(init_path) = init_path {
        let init = Experiment::load(init_path)?;
        let start = ablation
            .seeds
            .iter()
            .map(|&seed| measure(&run_dir(&init).join("final"), seed))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(Row {
            label: format!("start: DDPM ({})", init.name),
            steps: Some(super::model::sampler_steps(&init)),
            quality: summarise(start),
            held_out: None,
        });
    }
    for (index, variant) in ablation.variants.iter().enumerate() {
        let values = runs
            .iter()
            .filter(|r| r.variant == index)
            .map(|r| measure(&run_dir(&r.experiment).join("final"), r.seed))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(Row {
            label: variant.label().to_string(),
            steps: Some(super::model::sampler_steps(base)),
            quality: summarise(values),
            held_out: None,
        });
    }
    Ok(Table {
        title: format!("{} on {}", ablation.name, base.data.set.name()),
        note: format!(
            "Final samplers; mean ± standard deviation over {} seeds {:?} (one {}-point sample set each against the training set).",
            ablation.seeds.len(),
            ablation.seeds,
            base.eval.n
        ),
        rows,
    })
}

/// Per variant, the sliced W2 (x1e-2) of every evaluation epoch that all its
/// seeds logged: mean and spread over the seeds, after the starting
/// sampler's `start` (mean, spread) at epoch 0 if given (measured with the
/// same noise).
fn training_curves(
    ablation: &Ablation,
    runs: &[AblationRun],
    start: Option<(f64, f64)>,
) -> Result<Vec<Curve>, RunError> {
    let mut curves = Vec::new();
    for (index, variant) in ablation.variants.iter().enumerate() {
        let logs = runs
            .iter()
            .filter(|r| r.variant == index)
            .map(|r| read_eval_log(&run_dir(&r.experiment)))
            .collect::<Result<Vec<_>, _>>()?;
        let epochs: Vec<usize> = logs[0]
            .iter()
            .map(|(e, _)| *e)
            .filter(|e| logs.iter().all(|l| l.iter().any(|(x, _)| x == e)))
            .collect();
        let points = start
            .map(|(mean, sd)| (0.0, mean, sd))
            .into_iter()
            .chain(epochs.iter().map(|e| {
                let values: Vec<f64> = logs
                    .iter()
                    .filter_map(|l| l.iter().find(|(x, _)| x == e).map(|(_, v)| v * 100.0))
                    .collect();
                let (mean, sd) = mean_std(&values);
                (*e as f64, mean, sd)
            }))
            .collect();
        curves.push(Curve {
            label: variant.label().to_string(),
            points,
        });
    }
    Ok(curves)
}
