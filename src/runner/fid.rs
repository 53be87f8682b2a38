//! `rl-run fid A B`: FID (and KID where both sides are images) between two
//! sets, each a statistics file (pytorch-fid's `.npz`), a `.npy` of images
//! or a folder of image files; `rl-run fid --save-stats IMAGES OUT.npz`
//! caches the statistics of a set.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Tensor};

use crate::error::RunError;
use crate::fetch::{self, catalog, Catalog};
use crate::metrics::features::FeatureNetwork;
use crate::metrics::fid_stats;
use crate::metrics::frechet::{frechet_distance, GaussianStats, RunningStats};
use crate::metrics::image_source::ImageSource;
use crate::metrics::kid::{kid, KidEstimate, KidSettings};

/// Which network turns images into features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Features {
    /// FID's Inception (pool3, 2048 features), fetched on first use into
    /// `$SHORTCUT_MODELS` (or `models/`) as `fid-inception/`.
    Inception,
    /// A TorchScript file with the same input convention.
    File(PathBuf),
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
/// batches of `batch`.
///
/// # Errors
/// [`RunError::Metric`] for unreadable statistics or images and for a
/// failing network.
pub fn measure(
    path: &Path,
    network: &mut dyn FnMut() -> Result<std::rc::Rc<FeatureNetwork>, RunError>,
    batch: usize,
    show_progress: bool,
) -> Result<Measured, RunError> {
    if path.extension().is_some_and(|e| e == "npz") {
        return Ok(Measured {
            stats: fid_stats::load_npz(path)?,
            features: None,
        });
    }
    let images = ImageSource::open(path)?;
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
fn lazy_network(
    options: &FidOptions,
) -> impl FnMut() -> Result<std::rc::Rc<FeatureNetwork>, RunError> + '_ {
    let mut loaded: Option<std::rc::Rc<FeatureNetwork>> = None;
    move || {
        if let Some(network) = &loaded {
            return Ok(network.clone());
        }
        let file = options.features.resolve(options.show_progress)?;
        let network = std::rc::Rc::new(FeatureNetwork::load(&file, options.device)?);
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
    let first = measure(a, &mut network, options.batch, options.show_progress)?;
    let second = measure(b, &mut network, options.batch, options.show_progress)?;
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
/// `.npz` layout); returns the number of images.
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
    let measured = measure(images, &mut network, options.batch, options.show_progress)?;
    fid_stats::save_npz(out, &measured.stats)?;
    Ok(measured.features.map_or(0, |f| f.size()[0] as usize))
}
