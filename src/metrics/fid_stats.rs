//! Feature statistics on disk in pytorch-fid's layout: an `.npz` archive
//! with `mu` (`[dim]`) and `sigma` (`[dim, dim]`), float64 (float32 is read
//! too), compressed or not, so that statistics made by pytorch-fid load as
//! they are and ours load in numpy.

use std::path::{Path, PathBuf};

use super::error::MetricError;
use super::frechet::GaussianStats;

fn file_error(path: &Path, message: impl Into<String>) -> MetricError {
    MetricError::StatsFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads one float array of the archive as float64, with its shape.
fn read_array(
    archive: &mut npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>,
    path: &Path,
    name: &str,
) -> Result<(Vec<u64>, Vec<f64>), MetricError> {
    let array = archive
        .by_name(name)
        .map_err(|e| file_error(path, format!("array {name}: {e}")))?
        .ok_or_else(|| {
            file_error(
                path,
                format!("no array named {name} (a statistics file holds mu and sigma, as pytorch-fid writes them)"),
            )
        })?;
    let shape = array.shape().to_vec();
    let type_str = array.dtype().descr();
    let values = match type_str
        .trim_matches('\'')
        .trim_start_matches(['<', '|', '='])
    {
        "f8" => array.into_vec::<f64>(),
        "f4" => array
            .into_vec::<f32>()
            .map(|v| v.into_iter().map(f64::from).collect()),
        other => {
            return Err(file_error(
                path,
                format!("array {name} has dtype {other}; expected float64 (or float32)"),
            ))
        }
    }
    .map_err(|e| file_error(path, format!("array {name}: {e}")))?;
    Ok((shape, values))
}

/// Loads statistics from an `.npz` with `mu` and `sigma`.
///
/// # Errors
/// [`MetricError::StatsFile`] naming the file and the array when the file
/// is missing or not an archive, an array is missing or not float, or the
/// shapes are not `[d]` and `[d, d]`.
pub fn load_npz(path: &Path) -> Result<GaussianStats, MetricError> {
    let mut archive = npyz::npz::NpzArchive::open(path)
        .map_err(|e| file_error(path, format!("cannot read it as an .npz archive: {e}")))?;
    let (mu_shape, mu) = read_array(&mut archive, path, "mu")?;
    let (sigma_shape, sigma) = read_array(&mut archive, path, "sigma")?;
    let dim = match mu_shape.as_slice() {
        [d] => *d,
        other => {
            return Err(file_error(
                path,
                format!("mu has shape {other:?}; expected [dim]"),
            ))
        }
    };
    if sigma_shape != [dim, dim] {
        return Err(file_error(
            path,
            format!("sigma has shape {sigma_shape:?}; expected [{dim}, {dim}] to match mu"),
        ));
    }
    Ok(GaussianStats {
        dim: dim as usize,
        mu,
        sigma,
    })
}

/// Writes `stats` as an `.npz` with `mu` and `sigma` (float64), through a
/// temporary file renamed into place, so a reader never sees half a file.
///
/// # Errors
/// [`MetricError::StatsFile`] when the file cannot be written.
pub fn save_npz(path: &Path, stats: &GaussianStats) -> Result<(), MetricError> {
    let temp = temp_path(path);
    let write = || -> std::io::Result<()> {
        use npyz::WriterBuilder;
        let mut npz = npyz::npz::NpzWriter::create(&temp)?;
        let dim = stats.dim as u64;
        let mut mu = npz
            .array::<f64>("mu", Default::default())?
            .default_dtype()
            .shape(&[dim])
            .begin_nd()?;
        mu.extend(stats.mu.iter().copied())?;
        mu.finish()?;
        let mut sigma = npz
            .array::<f64>("sigma", Default::default())?
            .default_dtype()
            .shape(&[dim, dim])
            .begin_nd()?;
        sigma.extend(stats.sigma.iter().copied())?;
        sigma.finish()?;
        npz.zip_writer().finish()?;
        drop(npz);
        std::fs::rename(&temp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        file_error(path, format!("cannot write the statistics: {e}"))
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}
