//! What `rl-run`'s pretraining and fine-tuning runs measure while they
//! train ([`ExperimentEvaluator`], the [`Evaluate`] of an experiment), the
//! evaluation log `eval.csv`, and the [`Trainer`] an experiment's run
//! folder gets.

use std::path::{Path, PathBuf};

use agents::policy::DiffusionPolicy;
use tch::Tensor;

use super::evaluate::{quality, sample, sample_own_rows, to_vec, EVAL_SEED};

use crate::checkpoint::RunFolderStore;
use crate::config::Experiment;
use crate::error::RunError;
use crate::recording::{Record, Recorder};
use crate::trainer::{EpochSeeds, Evaluate, Trainer, TrainerConfig};

/// The trainer of `exp` in `run_dir`: TensorBoard there, checkpoints in
/// its `checkpoint/` and `final/`, the experiment's epochs, cadences and
/// seed, and its evaluations against `reference` (floats on the CPU).
pub fn experiment_trainer(
    exp: &Experiment,
    run_dir: &Path,
    phase: u64,
    reference: Tensor,
    show_progress: bool,
) -> Result<Trainer, RunError> {
    std::fs::create_dir_all(run_dir).map_err(|source| RunError::Io {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let config = TrainerConfig {
        name: exp.name.clone(),
        epochs: epochs_of(exp),
        checkpoint_every: exp.record.checkpoint_every,
        eval_every: exp.eval.every,
        evaluate_start: matches!(exp.task, crate::config::Task::FineTune(_)),
        epoch_seeds: Some(EpochSeeds {
            seed: exp.seed,
            phase,
        }),
        show_progress,
    };
    let evaluator = ExperimentEvaluator {
        exp: exp.clone(),
        run_dir: run_dir.to_path_buf(),
        reference,
        fid: Vec::new(),
    };
    // Rank 0 alone writes the event file of a data-parallel run.
    let recorder: Box<dyn crate::recording::Record> = if collective::current().rank() == 0 {
        Box::new(Recorder::create(run_dir)?)
    } else {
        Box::new(crate::recording::NullRecorder)
    };
    Ok(
        Trainer::new(config, recorder, Box::new(RunFolderStore::new(run_dir)))
            .with_evaluator(Box::new(evaluator))
            .with_experiment(exp.to_ron()),
    )
}

/// An experiment's evaluations: sliced (and exact) W2 against the
/// reference samples, scatter plots or image grids and chain paths, FIDs
/// on the feature networks of `eval.fid`, and a row of `eval.csv` each.
pub struct ExperimentEvaluator {
    exp: Experiment,
    run_dir: PathBuf,
    reference: Tensor,
    /// The FID's feature networks (`eval.fid.features`, then `eval.fid.also`)
    /// and their training-set statistics, made at the first evaluation that
    /// needs them.
    fid: Vec<FidProbe>,
}

/// What FID evaluations compare against.
struct FidProbe {
    featurizer: std::rc::Rc<dyn crate::metrics::features::Featurizer>,
    /// The training images' statistics (rank 0 only: the other ranks of a
    /// data-parallel run measure features without comparing them).
    reference: Option<crate::metrics::frechet::GaussianStats>,
    /// The TensorBoard tag: `eval/fid` (`eval/classifier_fid` for the
    /// classifier) for the first, `eval/<name>_fid` for the others.
    tag: String,
}

/// Seed (xor the run's seed) of the noise of the FID's samples.
const FID_SEED: i64 = 0xF1D;

/// Samples the policy and logs its sliced W2 (and exact W2 if configured)
/// against the reference samples, and an image: a scatter over the data
/// for 2-D points, grids of data and samples (and chain paths) for images;
/// then the FIDs; returns a short progress message.
impl Evaluate for ExperimentEvaluator {
    /// Every rank samples its share; rank 0 measures and writes.
    fn on_every_rank(&self) -> bool {
        true
    }

    fn evaluate(
        &mut self,
        policy: &DiffusionPolicy,
        epoch: usize,
        step: u64,
        recorder: &mut dyn Record,
    ) -> Result<String, RunError> {
        let data = &self.reference.shallow_clone();
        let eval = self.exp.eval.clone();
        // On several ranks all of them sample (each its rows) and measure
        // their FID samples' features, and rank 0 measures and writes; they
        // start together once rank 0 has its FID reference (which may take
        // long the first time), and the others then load the feature
        // networks it made.
        let engine = collective::current();
        if engine.rank() == 0 {
            self.prepare_fid(policy)?;
        }
        if engine.world_size() > 1 {
            engine.evaluation_barrier()?;
            if engine.rank() != 0 {
                self.prepare_fid(policy)?;
            }
        }
        let samples = sample(
            policy,
            eval.n,
            &self.exp.data.set.element_shape(),
            EVAL_SEED ^ self.exp.seed as i64,
            eval.chunk,
            "eval.chunk",
        )?;
        let fids = self.fids(policy)?;
        if engine.rank() != 0 {
            return Ok(String::new());
        }
        let q = quality(
            1,
            |_| Ok(samples.shallow_clone()),
            data,
            &eval,
            eval.exact_during_training,
        )?;
        recorder.scalar("eval/sliced_w2", q.sliced_w2, step)?;
        if let Some(e) = q.exact_w2 {
            recorder.scalar("eval/exact_w2", e, step)?;
        }
        if self.exp.data.set.is_images() {
            recorder.image_samples("eval/samples", &samples, data, step)?;
            // The same samples as a PNG per evaluation, from the same noise each time.
            let dir = self.run_dir.join(SAMPLES_DIR);
            let path = dir.join(format!("epoch-{epoch:04}.png"));
            let png = crate::recording::grid::samples_png(&samples)?;
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, png))
                .map_err(|source| RunError::Io { path, source })?;
            let path = dir.join(format!("paths-epoch-{epoch:04}.png"));
            let png = crate::recording::grid::paths_png(&self.chain_paths(policy))?;
            recorder.image_png("eval/paths", &png, step)?;
            std::fs::write(&path, png).map_err(|source| RunError::Io { path, source })?;
        } else {
            recorder.samples_over_data("eval/samples", &to_vec(&samples), &to_vec(data), step)?;
        }
        for (probe, fid) in self.fid.iter().zip(&fids) {
            recorder.scalar(&probe.tag, *fid, step)?;
        }
        let columns = eval_log_columns(self.exp.eval.fid.as_ref());
        append_eval_row(&self.run_dir, &columns, epoch, step, &q, &fids)?;
        Ok(format!(
            " W2 {:.2}e-2{}",
            q.sliced_w2 * 100.0,
            fids.first()
                .map_or(String::new(), |f| format!(" FID {f:.2}"))
        ))
    }
}

impl ExperimentEvaluator {
    /// The FIDs of `eval.fid.n` samples against the training images on
    /// each feature network `eval.fid` names, prepared by
    /// [`Self::prepare_fid`] (image runs only; empty without `eval.fid`).
    /// On several ranks every rank calls it: each samples its rows and
    /// measures their features ([`sample_own_rows`]), the statistics meet
    /// over the ranks ([`super::fid::pixel_stats_over_ranks`]), and rank 0
    /// gets the FIDs (the others an empty list).
    fn fids(&self, policy: &DiffusionPolicy) -> Result<Vec<f64>, RunError> {
        let Some(config) = &self.exp.eval.fid else {
            return Ok(Vec::new());
        };
        if !self.exp.data.set.is_images() {
            return Ok(Vec::new());
        }
        let samples = sample_own_rows(
            policy,
            config.n,
            &self.exp.data.set.element_shape(),
            FID_SEED ^ self.exp.seed as i64,
            self.exp.eval.chunk,
            "eval.chunk",
        )?;
        let pixels = envs::images::to_pixels(&samples);
        let mut fids = Vec::new();
        for probe in &self.fid {
            let stats =
                super::fid::pixel_stats_over_ranks(&*probe.featurizer, &pixels, config.batch)?;
            if let Some(reference) = &probe.reference {
                fids.push(crate::metrics::frechet::frechet_distance(
                    &stats, reference,
                )?);
            }
        }
        Ok(fids)
    }

    /// Builds the FIDs' feature networks and their statistics of the
    /// training images (from the cache when there), once; on the ranks of a
    /// data-parallel run other than 0, once rank 0 has, the networks alone
    /// ([`super::fid::featurizer_made_by_rank_zero`]).
    fn prepare_fid(&mut self, policy: &DiffusionPolicy) -> Result<(), RunError> {
        let Some(config) = self.exp.eval.fid.clone() else {
            return Ok(());
        };
        if !self.exp.data.set.is_images() || !self.fid.is_empty() {
            return Ok(());
        }
        let device = policy.var_store().device();
        let measures_reference = collective::current().rank() == 0;
        let data = if measures_reference {
            Some(super::data::Data::load(&self.exp.data, tch::Device::Cpu)?)
        } else {
            None
        };
        let networks = std::iter::once(&config.features).chain(&config.also);
        for (i, features) in networks.enumerate() {
            let (featurizer, reference) = match &data {
                Some(data) => {
                    let featurizer = super::fid::featurizer(features, &self.exp, device, false)?;
                    let reference = super::fid::cached_reference(
                        &self.exp.record.dir.join(super::fid::FID_STATS_DIR),
                        &format!("{} training", self.exp.data.set.name()),
                        &super::fid::data_identity(&self.exp, "training", data.len()),
                        || Ok(envs::images::to_pixels(&data.first(data.len()))),
                        &*featurizer,
                        config.batch,
                        false,
                    )?
                    .stats;
                    (featurizer, Some(reference))
                }
                None => (
                    super::fid::featurizer_made_by_rank_zero(features, &self.exp, device)?,
                    None,
                ),
            };
            let tag = match (i, features) {
                (0, crate::config::FeatureConfig::Classifier { .. }) => {
                    "eval/classifier_fid".to_string()
                }
                (0, _) => "eval/fid".to_string(),
                (_, f) => format!("eval/{}_fid", f.name()),
            };
            self.fid.push(FidProbe {
                featurizer,
                reference,
                tag,
            });
        }
        Ok(())
    }

    /// A few chains of `policy` through its sampler steps, from the same
    /// noise at every evaluation: at most 11 states, evenly spaced from x_T
    /// to x_0.
    fn chain_paths(&self, policy: &DiffusionPolicy) -> Vec<Tensor> {
        const CHAINS: i64 = 8;
        const STATES: usize = 11;
        let horizon = policy.sampling_steps();
        let mut keep: Vec<usize> = (0..STATES)
            .map(|i| (horizon * (STATES - 1 - i) + (STATES - 1) / 2) / (STATES - 1))
            .collect();
        keep.dedup();
        tch::manual_seed(PATHS_SEED ^ self.exp.seed as i64);
        let mut shape = vec![CHAINS];
        shape.extend(self.exp.data.set.element_shape());
        let x_t = Tensor::randn(shape.as_slice(), (tch::Kind::Float, tch::Device::Cpu));
        policy.sample_path_from(x_t, &keep)
    }
}

/// Seed of the noise of the chain paths drawn at evaluations.
const PATHS_SEED: i64 = 0x9A7_5EED;

/// The folder of a run where each evaluation of an image run leaves its
/// samples as `epoch-NNNN.png` (epoch 0: before fine-tuning) and a few
/// chains through the sampler's steps as `paths-epoch-NNNN.png`.
pub const SAMPLES_DIR: &str = "samples";

/// The file beside the event files where every evaluation is appended as
/// `epoch,step,sliced_w2,exact_w2,fid`, then a `<name>_fid` column for each
/// network of `eval.fid.also` (read by ablations to draw their curves; a
/// value not measured is left empty).
pub const EVAL_LOG: &str = "eval.csv";

/// The columns of `eval.csv` for the FID settings `fid`.
fn eval_log_columns(fid: Option<&crate::config::FidEvalConfig>) -> Vec<String> {
    let mut columns: Vec<String> = ["epoch", "step", "sliced_w2", "exact_w2", "fid"]
        .map(String::from)
        .into();
    if let Some(fid) = fid {
        columns.extend(fid.also.iter().map(|f| format!("{}_fid", f.name())));
    }
    columns
}

fn append_eval_row(
    run_dir: &Path,
    columns: &[String],
    epoch: usize,
    step: u64,
    q: &super::evaluate::Quality,
    fids: &[f64],
) -> Result<(), RunError> {
    use std::io::Write;
    let path = run_dir.join(EVAL_LOG);
    let io = |source| RunError::Io {
        path: path.clone(),
        source,
    };
    let header = columns.join(",");
    let new = !path.exists();
    if !new {
        widen_eval_log(&path, &header)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    if new {
        writeln!(file, "{header}").map_err(io)?;
    }
    let exact = q.exact_w2.map_or(String::new(), |e| e.to_string());
    let fid_fields: Vec<String> = (0..columns.len() - 4)
        .map(|i| fids.get(i).map_or(String::new(), |f| f.to_string()))
        .collect();
    writeln!(
        file,
        "{epoch},{step},{},{exact},{}",
        q.sliced_w2,
        fid_fields.join(",")
    )
    .map_err(io)
}

/// Gives an `eval.csv` whose header is a beginning of `header` (a run
/// started before the FID column, or before more feature networks) the
/// missing columns, empty in its old rows, so that a resumed run's rows fit
/// its header. Other headers are left alone.
fn widen_eval_log(path: &Path, header: &str) -> Result<(), RunError> {
    let io = |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let old = text.lines().next().unwrap_or("");
    let Some(added) = header.strip_prefix(old).filter(|a| a.starts_with(',')) else {
        return Ok(());
    };
    let padding = ",".repeat(added.matches(',').count());
    let widened: String = std::iter::once(header.to_string())
        .chain(text.lines().skip(1).map(|l| format!("{l}{padding}")))
        .map(|l| l + "\n")
        .collect();
    let part = path.with_extension("csv.partial");
    std::fs::write(&part, widened).map_err(io)?;
    std::fs::rename(&part, path).map_err(io)
}

/// Reads a run's evaluation log: (epoch, sliced W2) in epoch order, the last
/// entry winning where a resumed run evaluated an epoch twice.
pub fn read_eval_log(run_dir: &Path) -> Result<Vec<(usize, f64)>, RunError> {
    let path = run_dir.join(EVAL_LOG);
    let text = std::fs::read_to_string(&path).map_err(|source| RunError::Io {
        path: path.clone(),
        source,
    })?;
    let mut by_epoch = std::collections::BTreeMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if let (Some(Ok(epoch)), Some(Ok(w2))) = (
            fields.first().map(|f| f.parse::<usize>()),
            fields.get(2).map(|f| f.parse::<f64>()),
        ) {
            by_epoch.insert(epoch, w2);
        }
    }
    Ok(by_epoch.into_iter().collect())
}

/// Number of epochs the experiment trains for.
pub fn epochs_of(exp: &Experiment) -> usize {
    exp.task.epochs(&exp.env.sampler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_eval_log_gains_the_fid_columns() {
        let dir = std::env::temp_dir().join(format!("shortcut-eval-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(EVAL_LOG);
        std::fs::write(
            &path,
            "epoch,step,sliced_w2,exact_w2\n0,0,0.5,\n1,10,0.25,0.7\n",
        )
        .unwrap();
        let q = super::super::evaluate::Quality::over(&[0.125], None);
        let columns = eval_log_columns(None);
        append_eval_row(&dir, &columns, 2, 20, &q, &[3.5]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "epoch,step,sliced_w2,exact_w2,fid\n0,0,0.5,,\n1,10,0.25,0.7,\n2,20,0.125,,3.5\n"
        );
        // A further feature network adds its column, empty in earlier rows.
        let fid: crate::config::FidEvalConfig =
            ron::from_str("(n: 10, features: Inception, also: [Classifier(epochs: 1)])").unwrap();
        let columns = eval_log_columns(Some(&fid));
        append_eval_row(&dir, &columns, 3, 30, &q, &[2.5, 0.75]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("epoch,step,sliced_w2,exact_w2,fid,classifier_fid\n0,0,0.5,,,\n"),
            "{text}"
        );
        assert!(
            text.ends_with("2,20,0.125,,3.5,\n3,30,0.125,,2.5,0.75\n"),
            "{text}"
        );
        assert_eq!(
            read_eval_log(&dir).unwrap(),
            [(0, 0.5), (1, 0.25), (2, 0.125), (3, 0.125)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
