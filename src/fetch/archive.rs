//! Unpacking a downloaded tar.gz archive, or taking members out of a zip.

use std::path::Path;

use super::catalog::ZipMember;
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

/// Writes each of `members` of the zip `archive` (such as a Python wheel)
/// into the folder `into` under its name: through `<name>.part`, renamed
/// when complete.
pub fn extract_zip_members(
    archive: &Path,
    into: &Path,
    members: &[ZipMember],
) -> Result<(), FetchError> {
    let error = |message: String| FetchError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| error(format!("cannot read as a zip archive: {e}")))?;
    for member in members {
        let mut entry = zip.by_name(&member.path).map_err(|e| {
            error(format!(
                "expected the member {} for {}: {e}",
                member.path, member.name
            ))
        })?;
        let target = into.join(&member.name);
        let part = super::download::part_path(&target);
        let mut out = std::fs::File::create(&part).map_err(io(&part))?;
        std::io::copy(&mut entry, &mut out)
            .map_err(|e| error(format!("cannot extract {}: {e}", member.path)))?;
        out.sync_all().map_err(io(&part))?;
        std::fs::rename(&part, &target).map_err(io(&target))?;
    }
    Ok(())
}
