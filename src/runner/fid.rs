//! `rl-run fid A B`: FID (and KID where both sides are images) between two
//! sets, each a statistics file (pytorch-fid's `.npz`), a `.npy` of images
//! or a folder of image files; `rl-run fid --save-stats IMAGES OUT.npz`
//! caches the statistics of a set. `--jpeg-quality Q` measures the first
//! set as the paper's protocol does: its images written as JPEG files by
//! PIL and read back ([`crate::metrics::jpeg`]), the second set as it is.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Tensor};

use crate::config::{Experiment, FeatureConfig};
use crate::error::RunError;
use crate::fetch::{self, catalog, Catalog};
use crate::metrics::classifier::{Classifier, TrainSettings};
use crate::metrics::features::{FeatureNetwork, Featurizer};
use crate::metrics::fid_stats;
use crate::metrics::frechet::{frechet_distance, GaussianStats, RunningStats};
use crate::metrics::image_source::ImageSource;
use crate::metrics::jpeg::RoundTrip;
use crate::metrics::kid::{kid, KidEstimate, KidSettings};
use envs::images::Split;

/// Which network turns images into features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Features {
    /// FID's Inception (pool3, 2048 features), fetched on first use into
    /// `$SHORTCUT_MODELS` (or `models/`) as `fid-inception/`.
    Inception,
    /// A TorchScript file with the same input convention, or the folder of
    /// a classifier the framework trained ([`Classifier`]).
    File(PathBuf),
}

/// Loads the feature network in `path`: a classifier's folder, else a
/// TorchScript file.
///
/// # Errors
/// [`RunError::Metric`] when it cannot be loaded.
pub fn load_featurizer(path: &Path, device: Device) -> Result<Rc<dyn Featurizer>, RunError> {
    Ok(if path.is_dir() {
        Rc::new(Classifier::load(path, device)?)
    } else {
        Rc::new(FeatureNetwork::load(path, device)?)
    })
}

impl std::str::FromStr for Features {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "inception" {
            Self::Inception
        } else {
            Self::File(PathBuf::from(s))
        })
    }
}

impl Features {
    /// The network's file: for [`Features::Inception`], fetched when missing
    /// (saying so on stderr).
    ///
    /// # Errors
    /// [`RunError::Fetch`] when the Inception network cannot be fetched.
    pub fn resolve(&self, show_progress: bool) -> Result<PathBuf, RunError> {
        match self {
            Self::File(path) => Ok(path.clone()),
            Self::Inception => {
                let resource = Catalog::load(None)?.get(catalog::FID_INCEPTION)?;
                let parent = catalog::default_parent(resource.place());
                let file = parent
                    .join(&resource.folder)
                    .join(catalog::FID_INCEPTION_FILE);
                if !file.is_file() {
                    eprintln!(
                        "rl-run: fetching FID's Inception network into {}",
                        parent.join(&resource.folder).display()
                    );
                    let settings = fetch::Settings::from_env(show_progress, show_progress);
                    fetch::fetch(&resource, &parent, &settings)?;
                }
                Ok(file)
            }
        }
    }
}

/// One set, measured.
#[derive(Debug)]
pub struct Measured {
    /// Its statistics.
    pub stats: GaussianStats,
    /// Its features, one row per image, where it was given as images.
    pub features: Option<Tensor>,
}

/// Measures the set at `path`: a statistics `.npz` is read as it is;
/// images go through `network` (loaded by `network` on first need) in
/// batches of `batch`, through JPEG and back first where `jpeg` is given.
///
/// # Errors
/// [`RunError::Metric`] for unreadable statistics or images, for a
/// statistics file where `jpeg` asks for images, and for a failing network
/// or JPEG codec.
pub fn measure(
    path: &Path,
    network: &mut dyn FnMut() -> Result<Rc<dyn Featurizer>, RunError>,
    batch: usize,
    show_progress: bool,
    mut jpeg: Option<&mut RoundTrip>,
) -> Result<Measured, RunError> {
    if path.extension().is_some_and(|e| e == "npz") {
        if let Some(jpeg) = jpeg {
            return Err(crate::metrics::error::MetricError::Images {
                path: path.to_path_buf(),
                message: format!(
                    "is a statistics file; the JPEG protocol (quality {}) needs the images",
                    jpeg.quality()
                ),
            }
            .into());
        }
        return Ok(Measured {
            stats: fid_stats::load_npz(path)?,
            features: None,
        });
    }
    let images = ImageSource::open(path)?;
    if let (Some(jpeg), true) = (&jpeg, images.holds_jpeg_files()) {
        eprintln!(
            "rl-run: {} holds JPEG files; the JPEG protocol compresses them a second time (quality {})",
            path.display(),
            jpeg.quality()
        );
    }
    let network = network()?;
    let progress = if show_progress {
        let bar = ProgressBar::new(images.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images, {per_sec}, {eta}")
                .expect("a valid template"),
        );
        bar.set_message(format!("features of {}", path.display()));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut stats = RunningStats::new(network.dim());
    let mut rows = Vec::new();
    images.for_each_batch(batch, |pixels| {
        let pixels = match jpeg.as_deref_mut() {
            Some(jpeg) => jpeg.batch(&pixels)?,
            None => pixels,
        };
        let features = network.features(&pixels)?;
        stats.add(&features)?;
        progress.inc(features.size()[0] as u64);
        rows.push(features);
        Ok(())
    })?;
    progress.finish_and_clear();
    Ok(Measured {
        stats: stats.finish()?,
        features: Some(Tensor::cat(&rows, 0)),
    })
}

/// How `rl-run fid` measures.
#[derive(Debug, Clone)]
pub struct FidOptions {
    /// The feature network.
    pub features: Features,
    /// Images per forward pass.
    pub batch: usize,
    /// How KID is estimated.
    pub kid: KidSettings,
    /// Where the network runs.
    pub device: Device,
    /// Draw progress bars.
    pub show_progress: bool,
    /// The paper's protocol: the first set's images written as JPEG files
    /// at this quality (4:2:0, as PIL's `save` and torchvision's
    /// `save_image` write them; the paper: 75) and read back before their
    /// features. The second set (the reference) is measured as it is.
    pub jpeg_quality: Option<u8>,
}

impl FidOptions {
    /// The round trip of the first set's images, where asked for.
    fn round_trip(&self) -> Result<Option<RoundTrip>, RunError> {
        Ok(self.jpeg_quality.map(RoundTrip::new).transpose()?)
    }
}

/// What `rl-run fid` found.
#[derive(Debug, Clone)]
pub struct FidReport {
    /// The Fréchet distance of the two sets' feature statistics.
    pub fid: f64,
    /// KID, where both sets were given as images.
    pub kid: Option<KidEstimate>,
    /// Images measured per set (`None` for a statistics file).
    pub counts: [Option<usize>; 2],
    /// The feature network's file, where one was needed.
    pub network: Option<PathBuf>,
}

/// A lazily loaded feature network, so that two statistics files need none.
fn lazy_network(options: &FidOptions) -> impl FnMut() -> Result<Rc<dyn Featurizer>, RunError> + '_ {
    let mut loaded: Option<Rc<dyn Featurizer>> = None;
    move || {
        if let Some(network) = &loaded {
            return Ok(network.clone());
        }
        let file = options.features.resolve(options.show_progress)?;
        let network = load_featurizer(&file, options.device)?;
        loaded = Some(network.clone());
        Ok(network)
    }
}

/// FID (and KID where both are images) between the sets at `a` and `b`.
///
/// # Errors
/// Those of [`measure`]; [`RunError::Metric`] when the two feature widths
/// differ (statistics made with another network).
pub fn fid_between(a: &Path, b: &Path, options: &FidOptions) -> Result<FidReport, RunError> {
    let mut network = lazy_network(options);
    let mut jpeg = options.round_trip()?;
    let first = measure(
        a,
        &mut network,
        options.batch,
        options.show_progress,
        jpeg.as_mut(),
    )?;
    let second = measure(b, &mut network, options.batch, options.show_progress, None)?;
    let used = network_path(&first, &second, options)?;
    let fid = frechet_distance(&first.stats, &second.stats)?;
    let kid = match (&first.features, &second.features) {
        (Some(x), Some(y)) => Some(kid(x, y, &options.kid)?),
        _ => None,
    };
    let count = |m: &Measured| m.features.as_ref().map(|f| f.size()[0] as usize);
    Ok(FidReport {
        fid,
        kid,
        counts: [count(&first), count(&second)],
        network: used,
    })
}

fn network_path(
    first: &Measured,
    second: &Measured,
    options: &FidOptions,
) -> Result<Option<PathBuf>, RunError> {
    if first.features.is_none() && second.features.is_none() {
        return Ok(None);
    }
    options.features.resolve(false).map(Some)
}

/// Writes the statistics of the images at `images` to `out` (pytorch-fid's
/// `.npz` layout), through JPEG first where `options` asks; returns the
/// number of images.
///
/// # Errors
/// Those of [`measure`], and [`RunError::Metric`] when `images` is itself a
/// statistics file or `out` cannot be written.
pub fn save_stats(images: &Path, out: &Path, options: &FidOptions) -> Result<usize, RunError> {
    if images.extension().is_some_and(|e| e == "npz") {
        return Err(crate::metrics::error::MetricError::Images {
            path: images.to_path_buf(),
            message: "is already a statistics file; --save-stats takes images".into(),
        }
        .into());
    }
    let mut network = lazy_network(options);
    let mut jpeg = options.round_trip()?;
    let measured = measure(
        images,
        &mut network,
        options.batch,
        options.show_progress,
        jpeg.as_mut(),
    )?;
    fid_stats::save_npz(out, &measured.stats)?;
    Ok(measured.features.map_or(0, |f| f.size()[0] as usize))
}

/// The classifier of the experiment's data set, trained once and kept in
/// `<record.dir>/classifier_<data set>/`.
///
/// # Errors
/// [`RunError::Env`] for a data set without labels; loading and training errors.
pub fn classifier(exp: &Experiment, epochs: usize, device: Device) -> Result<Classifier, RunError> {
    let set = &exp.data.set;
    let dir = classifier_dir(exp, epochs);
    if Classifier::is_saved(&dir) {
        return Ok(Classifier::load(&dir, device)?);
    }
    let labels = |split| {
        set.load_labels(split)?.ok_or_else(|| {
            RunError::Env(envs::EnvError::Invalid {
                field: "features",
                reason: format!(
                    "{} has no class labels to train a classifier on (digits and MNIST have): use Inception",
                    set.name()
                ),
            })
        })
    };
    let train = (set.load_images(Split::Train)?, labels(Split::Train)?);
    let test = (set.load_images(Split::Test)?, labels(Split::Test)?);
    eprintln!(
        "rl-run: training the {} classifier ({} images, {epochs} epochs) into {}",
        set.name(),
        train.0.size()[0],
        dir.display()
    );
    let settings = TrainSettings {
        epochs,
        ..TrainSettings::default()
    };
    let trained = Classifier::train(
        &dir,
        set.name(),
        (&train.0, &train.1),
        (&test.0, &test.1),
        &settings,
        device,
    )?;
    eprintln!(
        "rl-run: classifier test accuracy {:.2}%",
        trained.info().test_accuracy * 100.0
    );
    Ok(trained)
}

/// Where the classifier of `exp`'s data is kept:
/// `<record.dir>/classifier_<set>_<C>x<H>x<W>[_<MNIST fit>]_<data folder>_<epochs>ep`,
/// so that other images or another training length make another classifier.
pub fn classifier_dir(exp: &Experiment, epochs: usize) -> PathBuf {
    use envs::datasets::DataSet;
    let set = &exp.data.set;
    let folder = match set {
        DataSet::Digits { dir }
        | DataSet::Mnist { dir, .. }
        | DataSet::Cifar10 { dir }
        | DataSet::ImageFolder { dir, .. } => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        DataSet::SwissRoll | DataSet::TwoMoons => String::new(),
    };
    let shape: Vec<String> = set.element_shape().iter().map(i64::to_string).collect();
    // MNIST's padding or resizing to the model's size makes other images.
    let fit = match set {
        DataSet::Mnist { fit, .. } => format!("_{}", slug(&format!("{fit:?}"))),
        _ => String::new(),
    };
    exp.record.dir.join(format!(
        "classifier_{}_{}{fit}_{}_{epochs}ep",
        slug(set.name()),
        shape.join("x"),
        slug(&folder)
    ))
}

/// The feature network `config` names, for the data of `exp`.
///
/// # Errors
/// Fetching, loading and training errors.
pub fn featurizer(
    config: &FeatureConfig,
    exp: &Experiment,
    device: Device,
    show_progress: bool,
) -> Result<Rc<dyn Featurizer>, RunError> {
    match config {
        FeatureConfig::Inception => {
            load_featurizer(&Features::Inception.resolve(show_progress)?, device)
        }
        FeatureConfig::TorchScript(file) => load_featurizer(Path::new(file), device),
        FeatureConfig::Classifier { epochs } => Ok(Rc::new(classifier(exp, *epochs, device)?)),
    }
}

/// The feature network `config` names, as [`featurizer`] gives it but
/// never training a classifier: what the ranks of a data-parallel run other
/// than rank 0 load once rank 0 has made it (a classifier trained apart
/// would give other features).
///
/// # Errors
/// [`RunError::Metric`] naming the classifier's folder when it holds no
/// trained classifier (the ranks then do not share `record.dir`'s file
/// system); fetching and loading errors.
pub fn featurizer_made_by_rank_zero(
    config: &FeatureConfig,
    exp: &Experiment,
    device: Device,
) -> Result<Rc<dyn Featurizer>, RunError> {
    if let FeatureConfig::Classifier { epochs } = config {
        let dir = classifier_dir(exp, *epochs);
        if !Classifier::is_saved(&dir) {
            return Err(crate::metrics::error::MetricError::FeatureNetwork {
                path: dir,
                message: format!(
                    "rank {} finds no classifier here, where rank 0 keeps the one it trained: \
                     the ranks of a run over several machines need `record.dir` on a file \
                     system they share",
                    collective::current().rank()
                ),
            }
            .into());
        }
    }
    featurizer(config, exp, device, false)
}

/// The feature statistics of uint8 images `[N, C, H, W]` held apart by the
/// ranks of a data-parallel run (each its own rows, any number, none
/// included), `batch` at a time: each rank streams its features, and the
/// sums, taken about the mean over all ranks, are added over the ranks
/// ([`RunningStats::moments_about`]). Every rank gets the statistics of the
/// whole set; one process gets [`measure_pixels`]'s.
///
/// # Errors
/// [`RunError::Metric`] when the network fails or gives non-finite
/// features, or all ranks together hold fewer than two images; a failed
/// collective.
pub fn pixel_stats_over_ranks(
    featurizer: &dyn Featurizer,
    pixels: &Tensor,
    batch: usize,
) -> Result<GaussianStats, RunError> {
    let mut stats = RunningStats::new(featurizer.dim());
    if pixels.size()[0] > 0 {
        for part in pixels.split(batch.max(1) as i64, 0) {
            stats.add(&featurizer.features(&part)?)?;
        }
    }
    let engine = collective::current();
    if engine.world_size() == 1 {
        return Ok(stats.finish()?);
    }
    let count = Tensor::from_slice(&[stats.count() as f64]);
    let mut totals = [count, stats.plain_sum()];
    engine.all_reduce_sum(&mut totals)?;
    let [count, sum] = totals;
    let count = count.double_value(&[0]);
    let origin = sum / count;
    let (sum, outer) = stats.moments_about(&origin);
    let mut moments = [sum, outer];
    engine.all_reduce_sum(&mut moments)?;
    let [sum, outer] = moments;
    Ok(RunningStats::from_moments(count as i64, origin, sum, outer).finish()?)
}

/// A file name made of the label's letters and digits.
pub fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// The features of a set of images: their statistics and the rows (for KID).
pub struct PixelFeatures {
    /// Mean and covariance.
    pub stats: GaussianStats,
    /// One row per image, `[N, D]`.
    pub features: Tensor,
}

/// The features of uint8 images `[N, C, H, W]`, `batch` at a time.
///
/// # Errors
/// [`RunError::Metric`] when the network fails or gives non-finite features.
pub fn measure_pixels(
    featurizer: &dyn Featurizer,
    pixels: &Tensor,
    batch: usize,
) -> Result<PixelFeatures, RunError> {
    let mut stats = RunningStats::new(featurizer.dim());
    let mut rows = Vec::new();
    for part in pixels.split(batch.max(1) as i64, 0) {
        let features = featurizer.features(&part)?;
        stats.add(&features)?;
        rows.push(features);
    }
    Ok(PixelFeatures {
        stats: stats.finish()?,
        features: Tensor::cat(&rows, 0),
    })
}

/// The folder of `record.dir` where reference statistics are kept.
pub const FID_STATS_DIR: &str = "fid_stats";

/// Statistics (and, with `rows`, the feature rows) of a reference set of
/// images, measured once and kept in the folder `cache`: the statistics as
/// `<stem>.npz` in pytorch-fid's layout, the rows as `<stem>.features.npy`.
/// The stem joins `name` and a hash of `identity` (what the images are)
/// with the SHA-256 of the network's weights, so other images or another
/// network are measured afresh. `pixels` gives the uint8 images when they
/// must be measured.
///
/// # Errors
/// Reading, measuring and writing errors, naming the file.
pub fn cached_reference(
    cache: &Path,
    name: &str,
    identity: &str,
    pixels: impl FnOnce() -> Result<Tensor, RunError>,
    featurizer: &dyn Featurizer,
    batch: usize,
    rows: bool,
) -> Result<PixelFeatures, RunError> {
    use sha2::{Digest, Sha256};
    let weights = featurizer.weights_file();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    let network = Sha256::digest(std::fs::read(&weights).map_err(io(&weights))?);
    let mut key = Sha256::new();
    key.update(identity.as_bytes());
    key.update(network);
    let key: String = key
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let stem = cache.join(format!("{}_{key}", slug(name)));
    let stats_file = stem.with_extension("npz");
    let rows_file = stem.with_extension("features.npy");
    if stats_file.is_file() && (!rows || rows_file.is_file()) {
        let stats = fid_stats::load_npz(&stats_file)?;
        let features = if rows {
            Tensor::read_npy(&rows_file).map_err(|e| RunError::Io {
                path: rows_file.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
        } else {
            Tensor::zeros([0, stats.dim as i64], (tch::Kind::Float, Device::Cpu))
        };
        return Ok(PixelFeatures { stats, features });
    }
    let measured = measure_pixels(featurizer, &pixels()?, batch)?;
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    if rows {
        let part = stem.with_extension(format!("partial-{}.npy", std::process::id()));
        measured
            .features
            .write_npy(&part)
            .map_err(|e| RunError::Io {
                path: part.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        std::fs::rename(&part, &rows_file).map_err(io(&rows_file))?;
    }
    // The statistics last: present means complete.
    fid_stats::save_npz(&stats_file, &measured.stats)?;
    Ok(measured)
}

/// What a data set's split is, for [`cached_reference`]: the data set as
/// configured, the split and the number of images.
pub fn data_identity(exp: &Experiment, split: &str, images: i64) -> String {
    format!("{:?}\n{split}\n{images} images", exp.data.set)
}
