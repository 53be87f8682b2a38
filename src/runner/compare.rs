//! Running a comparison file ([`crate::comparison`]): trains what it needs,
//! samples every sampler, and tabulates FID and KID against the training
//! and test images with the number of network evaluations. Under the
//! paper's JPEG protocol the sampled images (and the floor's test images)
//! go through JPEG and back before their features; the references do not.
//! Every feature network (`features`, then each of `also`) measures the same
//! samples and gives a table of its own.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use agents::policy::DiffusionPolicy;
use envs::images::to_pixels;
use tch::{Device, Tensor};

use super::data::{held_out_data, Data};
use super::evaluate::sample;
use super::fid::{
    cached_reference, data_identity, featurizer, measure_pixels as measure, slug,
    PixelFeatures as Measured, FID_STATS_DIR,
};
use super::model::{
    init_source, load_policy, policy_with_sampler, sampler_steps, InitSource, WeightsSource,
};
use super::{configure_threads, ensure_trained, RunOptions};
use crate::checkpoint::TrainingCost;
use crate::comparison::{Comparison, FeatureConfig, FidProtocol};
use crate::config::{Experiment, Task};
use crate::error::RunError;
use crate::metrics::features::Featurizer;
use crate::metrics::fid_stats::save_npz;
use crate::metrics::frechet::frechet_distance;
use crate::metrics::jpeg::RoundTrip;
use crate::metrics::kid::{kid, KidEstimate, KidSettings};
use crate::weights::diffusers::DiffusersFolder;

/// What a comparison produced.
#[derive(Debug, Clone)]
pub struct ComparisonReport {
    /// The markdown tables, one per feature network (also in `<dir>/table.md`).
    pub table: String,
    /// Where samples, statistics and the table are.
    pub dir: PathBuf,
}

/// A feature network of the comparison, its references and its table's rows.
struct Network<'a> {
    config: &'a FeatureConfig,
    featurizer: Rc<dyn Featurizer>,
    references: Vec<(&'static str, Measured)>,
    rows: Vec<Row>,
}

/// One row: FID and KID against each reference, and what training the
/// sampler cost beyond the pretrained model (none for its samplers).
struct Row {
    label: String,
    nfe: Option<usize>,
    cost: Option<TrainingCost>,
    against: Vec<(f64, KidEstimate)>,
}

/// The training cost a final checkpoint folder records.
fn cost_of(final_dir: &Path) -> Result<TrainingCost, RunError> {
    Ok(crate::checkpoint::Checkpoint::open(final_dir)?
        .state()?
        .cost)
}

/// Seconds as a table shows them: `42 s`, `16.5 min`, `2.3 h`.
fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.0} s")
    } else if seconds < 3600.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What decides a row's samples: the generator's weights (by SHA-256),
/// the sampler, n, seed, chunk and device. Samples on disk made for the
/// same request are reused.
fn sample_request(
    weights: &Path,
    sampler: &str,
    cmp: &Comparison,
    device: Device,
) -> Result<String, RunError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(weights).map_err(io(weights))?;
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!(
        "weights sha256 {hash}\nsampler {sampler}\nn {}\nseed {}\nchunk {}\ndevice {device:?}\n",
        cmp.n, cmp.seed, cmp.chunk
    ))
}

/// Where sampled rows are shared between comparisons (under `record.dir`):
/// `<SHA-256 of the request>.npy`, `.png` and `.request.txt`, so that two
/// tables of one model (Tables 3 and 4) sample a common row once.
pub const SAMPLE_CACHE_DIR: &str = "sample_cache";

/// Whether `file` holds the samples of `request` (its stamp says so).
fn holds(file: &Path, request: &str) -> bool {
    file.is_file()
        && std::fs::read_to_string(file.with_extension("request.txt")).is_ok_and(|s| s == request)
}

/// Puts `from` at `to` (a hard link, or a copy where linking fails),
/// through a temporary name renamed into place.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), RunError> {
    let part = to.with_extension("linking");
    let _ = std::fs::remove_file(&part);
    if std::fs::hard_link(from, &part).is_err() {
        std::fs::copy(from, &part).map_err(io(from))?;
    }
    std::fs::rename(&part, to).map_err(io(to))
}

/// The files of a row's samples: the `.npy`, its PNG grid, its stamp last.
fn sample_files(file: &Path) -> [PathBuf; 3] {
    [
        file.to_path_buf(),
        file.with_extension("png"),
        file.with_extension("request.txt"),
    ]
}

/// The samples of a row as uint8 `[N, C, H, W]`: those in `file` when its
/// stamp (`<file stem>.request.txt`) holds `request`, else those of the
/// same request in the shared `cache` folder, else `n` new ones of the
/// policy `make` gives, written as `.npy` (uint8 `[N, H, W, C]`) with a PNG
/// grid of the first 64, the stamp last (each through a temporary file
/// renamed into place), and linked into `cache`.
fn samples(
    make: impl FnOnce() -> Result<DiffusionPolicy, RunError>,
    exp: &Experiment,
    cmp: &Comparison,
    file: &Path,
    request: &str,
    cache: &Path,
) -> Result<Tensor, RunError> {
    use sha2::{Digest, Sha256};
    let stamp = file.with_extension("request.txt");
    let key: String = Sha256::digest(request.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let shared = cache.join(format!("{key}.npy"));
    if !holds(file, request) && holds(&shared, request) {
        let _ = std::fs::remove_file(&stamp);
        for (from, to) in sample_files(&shared).iter().zip(&sample_files(file)) {
            link_or_copy(from, to)?;
        }
    }
    if holds(file, request) {
        let source = crate::metrics::image_source::ImageSource::open(file)?;
        let mut parts = Vec::new();
        source.for_each_batch(10_000, |batch| {
            parts.push(batch);
            Ok(())
        })?;
        return Ok(Tensor::cat(&parts, 0));
    }
    if stamp.exists() {
        std::fs::remove_file(&stamp).map_err(io(&stamp))?;
    }
    let policy = make()?;
    let shape = exp.data.set.element_shape();
    let x = sample(&policy, cmp.n, &shape, cmp.seed as i64, cmp.chunk, "chunk")?;
    let pixels = to_pixels(&x);
    let part = file.with_extension("partial.npy");
    pixels
        .permute([0, 2, 3, 1])
        .contiguous()
        .write_npy(&part)
        .map_err(|e| RunError::Io {
            path: part.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    std::fs::rename(&part, file).map_err(io(file))?;
    let png = crate::recording::grid::samples_png(&x)?;
    let grid = file.with_extension("png");
    std::fs::write(&grid, png).map_err(io(&grid))?;
    let part = stamp.with_extension("partial");
    std::fs::write(&part, request).map_err(io(&part))?;
    std::fs::rename(&part, &stamp).map_err(io(&stamp))?;
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    for (from, to) in sample_files(file).iter().zip(&sample_files(&shared)) {
        link_or_copy(from, to)?;
    }
    Ok(pixels)
}

/// Runs the comparison file at `path`.
///
/// # Errors
/// Configuration, training, sampling and measuring errors, each naming
/// what failed.
pub fn run_comparison(path: &Path, options: &RunOptions) -> Result<ComparisonReport, RunError> {
    let cmp = Comparison::load(path)?;
    let model_path = Experiment::resolve_relative(path, &cmp.model);
    let model = Experiment::load(&model_path)?;
    configure_threads(model.threads);
    let device = model.device.resolve();
    let dir = model.record.dir.join(&cmp.name);
    std::fs::create_dir_all(dir.join("samples")).map_err(io(&dir))?;
    let dependency = RunOptions {
        resume: false,
        retrain: false,
        overrides: Vec::new(),
        ..options.clone()
    };
    // The pretrained model: a run (trained first if need be), or the
    // diffusers folder a fine-tuning file starts from.
    let imported = match &model.task {
        Task::FineTune(_) | Task::Distill(_) | Task::CovarianceHead(_) => {
            match init_source(&model_path, model.task.init().unwrap_or_default()) {
                InitSource::Imported(dir) => Some(dir),
                InitSource::Run(_) => None,
            }
        }
        Task::Pretrain(_) => None,
    };
    let (model_final, model_name, model_weights_file) = match &imported {
        Some(dir) => (
            None,
            format!(
                "pretrained {}",
                dir.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            ),
            DiffusersFolder::open(dir)?.weights()?,
        ),
        None => {
            let final_dir = ensure_trained(&model_path, &model, &dependency, false, device)?;
            let weights = final_dir.join("generator.safetensors");
            (Some(final_dir), model.name.clone(), weights)
        }
    };
    let model_weights = match (&model_final, &imported) {
        (Some(dir), _) => WeightsSource::Checkpoint(dir),
        (None, Some(dir)) => WeightsSource::Imported {
            exp_path: &model_path,
            dir,
        },
        (None, None) => unreachable!("a model is trained or imported"),
    };
    let mut rows = Vec::new();
    for file in &cmp.fine_tuned {
        let tuned_path = Experiment::resolve_relative(path, file);
        let exp = Experiment::load(&tuned_path)?;
        if exp.data.set != model.data.set {
            return Err(RunError::Env(envs::EnvError::Invalid {
                field: "fine_tuned",
                reason: format!(
                    "{} trains on {}, the model on {}",
                    tuned_path.display(),
                    exp.data.set.name(),
                    model.data.set.name()
                ),
            }));
        }
        rows.push((tuned_path, exp));
    }
    // The trained rows depend on the model alone: side by side in child
    // processes, `jobs` at a time, where the command allows more than one.
    if let Some((executable, jobs)) = &options.parallel {
        if *jobs > 1 {
            let deps: Vec<_> = rows.iter().map(|(p, _)| (p.clone(), Vec::new())).collect();
            super::parallel::Background::start(executable, &deps, *jobs)?.finish()?;
        }
    }
    let mut tuned = Vec::new();
    for (tuned_path, exp) in rows {
        let final_dir = ensure_trained(&tuned_path, &exp, &dependency, false, device)?;
        tuned.push((exp, final_dir));
    }

    // The feature networks: the first table's, then `also`'s, each with
    // its references (all training images, and the test split where there
    // is one), measured once per network and kept in `<record.dir>/fid_stats`.
    let cache = model.record.dir.join(FID_STATS_DIR);
    let sample_cache = model.record.dir.join(SAMPLE_CACHE_DIR);
    let train = Data::load(&model.data, Device::Cpu)?;
    let test = held_out_data(&model)?;
    let mut networks = Vec::new();
    for (i, config) in std::iter::once(&cmp.features).chain(&cmp.also).enumerate() {
        let featurizer = featurizer(config, &model, device, options.show_progress)?;
        let mut references = vec![(
            "training set",
            cached_reference(
                &cache,
                &format!("{} training", model.data.set.name()),
                &data_identity(&model, "training", train.len()),
                || Ok(to_pixels(&train.first(train.len()))),
                &*featurizer,
                cmp.batch,
                true,
            )?,
        )];
        if let Some(test) = &test {
            references.push((
                "test set",
                cached_reference(
                    &cache,
                    &format!("{} test", model.data.set.name()),
                    &data_identity(&model, "test", test.size()[0]),
                    || Ok(to_pixels(test)),
                    &*featurizer,
                    cmp.batch,
                    true,
                )?,
            ));
        }
        // The first network's files keep their plain names.
        let prefix = match i {
            0 => String::new(),
            _ => format!("{}_", config.file_stem()),
        };
        for (name, measured) in &references {
            let file = dir.join(format!("stats_{prefix}{}.npz", slug(name)));
            save_npz(&file, &measured.stats)?;
        }
        networks.push(Network {
            config,
            featurizer,
            references,
            rows: Vec::new(),
        });
    }
    let kid_settings = KidSettings {
        subsets: cmp.kid_subsets,
        subset_size: cmp.kid_subset_size,
        seed: cmp.seed,
    };

    // The protocol: what a sampled set goes through before its features.
    let mut jpeg = cmp
        .protocol
        .jpeg_quality()
        .map(RoundTrip::new)
        .transpose()?;
    let mut measure_row = |label: String,
                           nfe: usize,
                           cost: Option<TrainingCost>,
                           stem: String,
                           make: &mut dyn FnMut() -> Result<DiffusionPolicy, RunError>,
                           exp: &Experiment,
                           request: String| {
        let file = dir.join("samples").join(format!("{stem}.npy"));
        let pixels = samples(make, exp, &cmp, &file, &request, &sample_cache)?;
        let pixels = match jpeg.as_mut() {
            Some(jpeg) => jpeg.batch(&pixels)?,
            None => pixels,
        };
        for network in networks.iter_mut() {
            let measured = measure(&*network.featurizer, &pixels, cmp.batch)?;
            let mut against = Vec::new();
            for (_, reference) in &network.references {
                against.push((
                    frechet_distance(&measured.stats, &reference.stats)?,
                    kid(&measured.features, &reference.features, &kid_settings)?,
                ));
            }
            eprintln!(
                "rl-run: {label}: FID {:.3} against the training set ({})",
                against[0].0,
                network.config.file_stem()
            );
            network.rows.push(Row {
                label: label.clone(),
                nfe: Some(nfe),
                cost,
                against,
            });
        }
        Ok::<(), RunError>(())
    };
    for sampler in &cmp.samplers {
        let label = format!("{} ({model_name})", sampler.describe());
        let request = sample_request(&model_weights_file, &format!("{sampler:?}"), &cmp, device)?;
        measure_row(
            label,
            sampler.steps(model.env.steps),
            None,
            slug(&format!("{model_name} {sampler:?}")),
            &mut || policy_with_sampler(&model, model_weights, *sampler, device),
            &model,
            request,
        )?;
    }
    for (exp, final_dir) in &tuned {
        let weights = final_dir.join("generator.safetensors");
        let request = sample_request(&weights, &format!("{:?}", exp.env.sampler), &cmp, device)?;
        measure_row(
            super::describe(exp),
            sampler_steps(exp),
            Some(cost_of(final_dir)?),
            slug(&exp.name),
            &mut || Ok(load_policy(final_dir, device)?.1),
            exp,
            request,
        )?;
    }
    // The floor: the test images themselves against the training images,
    // measured as a sampler's images are (through JPEG under the paper's
    // protocol: they stand for a sampler that draws the data's law).
    for network in networks.iter_mut() {
        let (Some(test), [(_, train_ref), (_, test_ref)]) = (&test, &network.references[..]) else {
            continue;
        };
        let compressed = match cmp.protocol {
            FidProtocol::Lossless => None,
            FidProtocol::Jpeg { quality } => Some(cached_reference(
                &cache,
                &format!("{} test jpeg{quality}", model.data.set.name()),
                &format!(
                    "{}\nthrough JPEG quality {quality}, 4:2:0 (libjpeg-turbo as PIL)",
                    data_identity(&model, "test", test.size()[0])
                ),
                || Ok(RoundTrip::new(quality)?.batch(&to_pixels(test))?),
                &*network.featurizer,
                cmp.batch,
                true,
            )?),
        };
        let floor = compressed.as_ref().unwrap_or(test_ref);
        let against = vec![(
            frechet_distance(&floor.stats, &train_ref.stats)?,
            kid(&floor.features, &train_ref.features, &kid_settings)?,
        )];
        network.rows.push(Row {
            label: "test images (floor)".into(),
            nfe: None,
            cost: None,
            against,
        });
    }
    let model_cost = model_final.as_deref().map(cost_of).transpose()?;
    let table = networks
        .iter()
        .map(|network| markdown(&cmp, &model, model_cost, network))
        .collect::<Vec<_>>()
        .join("\n");
    let file = dir.join("table.md");
    std::fs::write(&file, &table).map_err(io(&file))?;
    Ok(ComparisonReport { table, dir })
}

/// One network's table: its caption, then a row per sampler.
fn markdown(
    cmp: &Comparison,
    model: &Experiment,
    model_cost: Option<TrainingCost>,
    network: &Network,
) -> String {
    let Network {
        config,
        featurizer,
        references,
        rows,
    } = network;
    let sizes: Vec<String> = references
        .iter()
        .map(|(name, m)| format!("{} {name} images", m.features.size()[0],))
        .collect();
    let fid_name = match config {
        FeatureConfig::Classifier { .. } => "classifier FID",
        _ => "FID",
    };
    let (fid_name, protocol) = match cmp.protocol {
        FidProtocol::Lossless => (
            fid_name.to_string(),
            "Protocol: lossless (the samples' uint8 pixels, as a PNG holds them).".to_string(),
        ),
        FidProtocol::Jpeg { quality } => (
            format!("{fid_name} (JPEG q{quality})"),
            format!(
                "Protocol: the paper's JPEG one: every sample, and the floor's test images, \
                 written as a JPEG file at quality {quality} (4:2:0, as PIL's save and \
                 torchvision's save_image write it) and read back before the features; \
                 the reference images are measured losslessly."
            ),
        ),
    };
    let pretraining = match model_cost {
        Some(c) if c.network_evaluations > 0 => format!(
            " The pretrained model's own training: {:.3e} network evaluations, {}.",
            c.network_evaluations as f64,
            duration(c.seconds)
        ),
        _ => String::new(),
    };
    let mut out = format!(
        "{} on {}: {} samples per sampler (seed {}), against {}.\n\n\
         Features: {}. {protocol} KID x 1e3: mean ± standard deviation over {} subsets of up to {} images. \
         Training: what a sampler's own training cost beyond the pretrained model, in network \
         evaluations (images through the diffusion networks) and wall time on the machine that \
         trained it.{pretraining}\n\n",
        cmp.name,
        model.data.set.name(),
        cmp.n,
        cmp.seed,
        sizes.join(" and "),
        featurizer.describe(),
        cmp.kid_subsets,
        cmp.kid_subset_size
    );
    out.push_str("| sampler | NFE | training evaluations | training time |");
    let mut rule = String::from("|---|---|---|---|");
    for (name, _) in references {
        out.push_str(&format!(" {fid_name}, {name} | KID, {name} (x1e3) |"));
        rule.push_str("---|---|");
    }
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for row in rows {
        let nfe = row.nfe.map_or("-".to_string(), |n| n.to_string());
        let (evaluations, time) = match row.cost {
            // Runs written before costs were counted record none.
            Some(c) if c.network_evaluations > 0 || c.seconds > 0.0 => (
                format!("{:.3e}", c.network_evaluations as f64),
                duration(c.seconds),
            ),
            _ => ("-".into(), "-".into()),
        };
        out.push_str(&format!(
            "| {} | {nfe} | {evaluations} | {time} |",
            row.label
        ));
        for i in 0..references.len() {
            match row.against.get(i) {
                Some((fid, k)) => out.push_str(&format!(
                    " {fid:.2} | {:.2} ± {:.2} |",
                    k.mean * 1e3,
                    k.std * 1e3
                )),
                None => out.push_str(" - | - |"),
            }
        }
        out.push('\n');
    }
    out
}
