//! Unpacking a downloaded tar.gz archive.

use std::path::Path;

use super::error::{io, FetchError};

/// Unpacks the gzipped tar `archive` into the empty or missing folder
/// `into` (entries that would land outside it are refused by `tar`), and
/// checks that `into/root` holds every file of `contents`.
pub fn unpack_tar_gz(
    archive: &Path,
    into: &Path,
    root: &str,
    contents: &[String],
) -> Result<(), FetchError> {
    if into.exists() {
        std::fs::remove_dir_all(into).map_err(io(into))?;
    }
    std::fs::create_dir_all(into).map_err(io(into))?;
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    tar.unpack(into).map_err(|e| FetchError::Archive {
        path: archive.to_path_buf(),
        message: format!("cannot unpack as tar.gz: {e}"),
    })?;
    let missing: Vec<&str> = contents
        .iter()
        .filter(|name| !into.join(root).join(name).is_file())
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(FetchError::Archive {
            path: archive.to_path_buf(),
            message: format!(
                "expected {root}/ with {}; it lacks {}",
                contents.join(", "),
                missing.join(", ")
            ),
        })
    }
}
