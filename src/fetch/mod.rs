//! Fetching data sets and pretrained weights on first use: `rl-run fetch
//! NAME`, or `rl-run EXPERIMENT --fetch` for whatever the experiment needs.
//!
//! A resource (see [`catalog`]) becomes one folder, `<parent>/<folder>`.
//! It is assembled in `<parent>/<folder>.part/` (each file downloaded to
//! `<file>.part`, resumed with an HTTP range request when a download was cut
//! off, checked against its published checksum, then given its name; an
//! archive unpacked there, a DDPM/DDIM checkpoint converted there to a
//! diffusers folder with the project's Python) and renamed to its final
//! name only when complete: the final folder is either complete or absent.
//! A complete
//! folder already there is not fetched again; an incomplete one is an error
//! (fetch never writes into an existing folder).

pub mod archive;
pub mod catalog;
pub mod checksum;
pub mod download;
pub mod error;
pub mod hub;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use catalog::{Catalog, Place, Resource, Source};
pub use download::Display;
pub use error::FetchError;

use error::io;

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The folder was downloaded.
    Fetched(PathBuf),
    /// A complete folder was already there.
    Present(PathBuf),
}

/// Where fetches come from and how they report.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Hugging Face hub (`$HF_ENDPOINT` or the public one).
    pub endpoint: String,
    /// `$SHORTCUT_MIRROR`: scheme and host replacing those of the catalog's
    /// non-hub URLs.
    pub mirror: Option<String>,
    /// Progress bars.
    pub display: Display,
    /// Print a line per file fetched.
    pub verbose: bool,
    /// `$SHORTCUT_PYTHON`: the interpreter that converts DDPM/DDIM
    /// checkpoints; `None` for [`DEFAULT_PYTHON`] in the current folder.
    pub python: Option<PathBuf>,
}

/// The interpreter that converts DDPM/DDIM checkpoints unless
/// `$SHORTCUT_PYTHON` names another: the project's virtual environment,
/// relative to the current folder (where `scripts/setup.sh` makes it).
pub const DEFAULT_PYTHON: &str = ".venv/bin/python";

/// `scripts/convert_weights.py` as it was when rl-run was built: written
/// beside the checkpoint and run from there, so that a fetch converts the
/// same way from any folder.
const CONVERTER: &str = include_str!("../../scripts/convert_weights.py");

impl Settings {
    /// The settings of the environment (`HF_ENDPOINT`, `SHORTCUT_MIRROR`,
    /// `SHORTCUT_PYTHON`).
    pub fn from_env(bar: bool, verbose: bool) -> Self {
        Self {
            endpoint: hub::endpoint(),
            mirror: std::env::var("SHORTCUT_MIRROR")
                .ok()
                .filter(|m| !m.is_empty()),
            display: Display { bar },
            verbose,
            python: std::env::var_os("SHORTCUT_PYTHON")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        }
    }

    /// The interpreter that converts checkpoints, and where its name came
    /// from (for messages).
    pub fn python(&self) -> (PathBuf, String) {
        match &self.python {
            Some(p) => (p.clone(), "from SHORTCUT_PYTHON".to_string()),
            None => (
                PathBuf::from(DEFAULT_PYTHON),
                match std::env::current_dir() {
                    Ok(dir) => format!(
                        "the default, relative to the current folder {}",
                        dir.display()
                    ),
                    Err(_) => "the default, relative to the current folder".to_string(),
                },
            ),
        }
    }

    fn urls(&self, urls: &[String]) -> Vec<String> {
        match &self.mirror {
            Some(m) => urls.iter().map(|u| catalog::on_mirror(u, m)).collect(),
            None => urls.to_vec(),
        }
    }
}

/// The files a complete folder of `resource` holds (relative paths); for a
/// hub model, `config.json` and one weights file, see [`is_complete`].
fn required_files(resource: &Resource) -> Vec<String> {
    match &resource.source {
        Source::Archive { contents, .. } => contents.clone(),
        Source::Files(files) => files.iter().map(|f| f.name.clone()).collect(),
        Source::ZipMembers { members, .. } => members.iter().map(|m| m.name.clone()).collect(),
        Source::DdimCheckpoint { .. } => {
            use crate::weights::diffusers::{CONFIG_FILE, WEIGHTS_FILE};
            vec![CONFIG_FILE.to_string(), WEIGHTS_FILE.to_string()]
        }
        Source::Hub { .. } => vec![crate::weights::diffusers::CONFIG_FILE.to_string()],
    }
}

/// The files a folder of `resource` lacks (empty when complete).
pub fn missing_files(resource: &Resource, dir: &Path) -> Vec<String> {
    use crate::weights::diffusers::{CONFIG_FILE, PICKLE_FILE, WEIGHTS_FILE};
    if let Source::Hub { .. } = resource.source {
        let model = if !dir.join(CONFIG_FILE).is_file() && dir.join("unet").is_dir() {
            dir.join("unet")
        } else {
            dir.to_path_buf()
        };
        let mut missing = Vec::new();
        if !model.join(CONFIG_FILE).is_file() {
            missing.push(CONFIG_FILE.to_string());
        }
        if !model.join(WEIGHTS_FILE).is_file() && !model.join(PICKLE_FILE).is_file() {
            missing.push(format!("{WEIGHTS_FILE} (or {PICKLE_FILE})"));
        }
        return missing;
    }
    required_files(resource)
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect()
}

/// Whether `dir` is a complete folder of `resource`.
pub fn is_complete(resource: &Resource, dir: &Path) -> bool {
    dir.is_dir() && missing_files(resource, dir).is_empty()
}

/// The staging folder of a fetch of `target`.
pub fn staging_dir(target: &Path) -> PathBuf {
    download::part_path(target)
}

/// Fetches `resource` into `parent/<folder>` unless a complete one is there.
pub fn fetch(
    resource: &Resource,
    parent: &Path,
    settings: &Settings,
) -> Result<Outcome, FetchError> {
    let target = parent.join(&resource.folder);
    if target.exists() {
        let missing = missing_files(resource, &target);
        return if missing.is_empty() {
            Ok(Outcome::Present(target))
        } else {
            Err(FetchError::Incomplete {
                dir: target,
                missing: missing.join(", "),
            })
        };
    }
    let staging = staging_dir(&target);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    // One fetch per staging folder: the kernel's lock on the folder itself,
    // released however this process ends.
    let lock = std::fs::File::open(&staging).map_err(io(&staging))?;
    if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock() {
        return Err(FetchError::Busy { dir: staging });
    }
    if target.exists() {
        // Another process completed it between the check above and the lock.
        let _ = std::fs::remove_dir(&staging);
        return Ok(Outcome::Present(target));
    }
    let result = assemble(resource, &staging, &target, settings);
    if result.is_err() {
        // Nothing to resume from: leave no empty staging folder behind.
        let _ = std::fs::remove_dir(&staging);
    }
    result.map(|()| Outcome::Fetched(target))
}

/// Assembles `resource` in `staging` and moves it to `target`.
fn assemble(
    resource: &Resource,
    staging: &Path,
    target: &Path,
    settings: &Settings,
) -> Result<(), FetchError> {
    let agent = download::agent();
    match &resource.source {
        Source::Archive {
            urls,
            file,
            checksum,
            root,
            contents,
        } => {
            let archive = staging.join(file);
            get_any(&agent, &settings.urls(urls), &archive, checksum, settings)?;
            let unpacked = staging.join("unpacked");
            archive::unpack_tar_gz(&archive, &unpacked, root, contents)?;
            let from = unpacked.join(root);
            std::fs::rename(&from, target).map_err(io(target))?;
            std::fs::remove_dir_all(staging).map_err(io(staging))?;
        }
        Source::Files(files) => {
            for f in files {
                let file = staging.join(&f.name);
                get_any(
                    &agent,
                    &settings.urls(&f.urls),
                    &file,
                    &f.checksum,
                    settings,
                )?;
            }
            std::fs::rename(staging, target).map_err(io(target))?;
        }
        Source::ZipMembers {
            urls,
            file,
            checksum,
            members,
        } => {
            let archive = staging.join(file);
            get_any(&agent, &settings.urls(urls), &archive, checksum, settings)?;
            archive::extract_zip_members(&archive, staging, members)?;
            std::fs::remove_file(&archive).map_err(io(&archive))?;
            std::fs::rename(staging, target).map_err(io(target))?;
        }
        Source::DdimCheckpoint {
            urls,
            file,
            checksum,
            resolution,
            ema,
        } => {
            let urls = settings.urls(urls);
            let (python, origin) = settings.python();
            // Before downloading: without the converter the download is no use.
            if !interpreter_exists(&python) {
                let mut by_hand = vec![
                    "scripts/convert_weights.py".to_string(),
                    "ddim".to_string(),
                    file.clone(),
                    target.display().to_string(),
                    "--resolution".to_string(),
                    resolution.to_string(),
                ];
                if *ema {
                    by_hand.push("--ema".into());
                }
                return Err(FetchError::Python {
                    resource: resource.name.clone(),
                    python,
                    origin,
                    by_hand: format!(
                        "download {} as {file}, check that its {} is {}, and run `{DEFAULT_PYTHON} {}` in the project's folder",
                        urls.join(" or "),
                        checksum.algorithm(),
                        checksum.expected(),
                        by_hand.join(" ")
                    ),
                });
            }
            let checkpoint = staging.join(file);
            get_any(&agent, &urls, &checkpoint, checksum, settings)?;
            let converted = staging.join(catalog::DDIM_STAGING_NAMES[1]);
            convert_ddim(
                &python,
                &checkpoint,
                &converted,
                *resolution,
                *ema,
                settings,
            )?;
            std::fs::rename(&converted, target).map_err(io(target))?;
            // The checkpoint goes: the folder holds the same tensors, and
            // the published file is fetched again (and checked) if needed.
            std::fs::remove_dir_all(staging).map_err(io(staging))?;
        }
        Source::Hub { repo, revision } => {
            let listing = hub::tree_url(&settings.endpoint, repo, revision);
            let files = hub::model_files(
                &hub::list(&agent, &settings.endpoint, repo, revision)?,
                &listing,
            )?;
            for f in files {
                let file = staging.join(&f.path);
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir).map_err(io(dir))?;
                }
                let url = hub::file_url(&settings.endpoint, repo, revision, &f.path);
                get_any(&agent, &[url], &file, &f.checksum, settings)?;
            }
            std::fs::rename(staging, target).map_err(io(target))?;
        }
    }
    Ok(())
}

/// Whether `python` names an interpreter that is there: a path to a file,
/// or a bare name found on `PATH`.
fn interpreter_exists(python: &Path) -> bool {
    if python.components().count() > 1 {
        return python.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(python).is_file()))
}

/// Converts the DDPM/DDIM-layout `checkpoint` into the diffusers folder
/// `out` with `scripts/convert_weights.py ddim` (written beside the
/// checkpoint) run by `python`, and checks that this project reads the
/// folder. On failure nothing is left at `out`; the checkpoint is kept.
fn convert_ddim(
    python: &Path,
    checkpoint: &Path,
    out: &Path,
    resolution: u32,
    ema: bool,
    settings: &Settings,
) -> Result<(), FetchError> {
    use crate::weights::diffusers::DiffusersFolder;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    let script = checkpoint.with_file_name(catalog::DDIM_STAGING_NAMES[0]);
    std::fs::write(&script, CONVERTER).map_err(io(&script))?;
    let mut args: Vec<OsString> = vec![
        script.into(),
        "ddim".into(),
        checkpoint.into(),
        out.into(),
        "--resolution".into(),
        resolution.to_string().into(),
    ];
    if ema {
        args.push("--ema".into());
    }
    let command = std::iter::once(python.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let fail = |message: String| {
        let _ = std::fs::remove_dir_all(out);
        FetchError::Convert {
            checkpoint: checkpoint.to_path_buf(),
            command: command.clone(),
            message,
        }
    };
    if settings.verbose {
        eprintln!("rl-run: converting {} with {command}", checkpoint.display());
    }
    let output = std::process::Command::new(python)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot start {}: {e}", python.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(fail(format!(
            "{}: {}",
            output.status,
            converter_message(&stderr)
        )));
    }
    // What the fetch promises: a diffusers folder this project reads.
    DiffusersFolder::open(out)
        .and_then(|folder| folder.weights())
        .map_err(|e| {
            fail(format!(
                "the folder it wrote is not one rl-run reads: {}",
                crate::report::report(&e).trim_end()
            ))
        })?;
    Ok(())
}

/// The gist of the converter's stderr: from its last `error:` line (its
/// own messages) or else its last line (a traceback's exception), on one
/// line and at most about 600 characters.
fn converter_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("error:"))
        .unwrap_or(lines.len().saturating_sub(1));
    let text = lines[from.min(lines.len())..].join(" ");
    match text.char_indices().nth(600) {
        None if text.is_empty() => "nothing on stderr".to_string(),
        None => text,
        Some((end, _)) => format!("{} ...", &text[..end]),
    }
}

/// Downloads `file` from the first of `urls` that serves it, unless an
/// earlier try left it complete and it still has the checksum (a file of
/// an earlier revision or catalog is downloaded again). A wrong checksum
/// stops at once; other failures try the next URL (which resumes what the
/// last one left).
fn get_any(
    agent: &ureq::Agent,
    urls: &[String],
    file: &Path,
    checksum: &checksum::Checksum,
    settings: &Settings,
) -> Result<(), FetchError> {
    if file.is_file() {
        if checksum.verify(file, "an earlier fetch").is_ok() {
            return Ok(());
        }
        std::fs::remove_file(file).map_err(io(file))?;
    }
    let mut failures = Vec::new();
    for url in urls {
        if settings.verbose {
            let part = download::part_path(file);
            let resume = std::fs::metadata(&part).map_or(0, |m| m.len());
            if resume > 0 {
                eprintln!("rl-run: resuming {url} at byte {resume}");
            } else {
                eprintln!("rl-run: downloading {url}");
            }
        }
        match download::download(agent, url, file, checksum, settings.display) {
            Ok(()) => return Ok(()),
            Err(e @ FetchError::Checksum { .. }) => return Err(e),
            Err(e) if urls.len() == 1 => return Err(e),
            Err(e) => {
                if settings.verbose {
                    eprintln!("rl-run: {}", crate::report::report(&e).trim_end());
                }
                failures.push(crate::report::report(&e).trim_end().to_string());
            }
        }
    }
    Err(FetchError::Sources {
        file: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        tried: failures.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_fetch_of_the_same_folder_is_refused_while_one_runs() {
        let parent = std::env::temp_dir().join(format!("shortcut-busy-{}", std::process::id()));
        let resource = Resource {
            name: "x".into(),
            summary: String::new(),
            folder: "x".into(),
            source: Source::Files(vec![catalog::RemoteFile {
                name: "a".into(),
                urls: vec!["http://127.0.0.1:9/a".into()],
                checksum: checksum::Checksum::Md5("00".into()),
            }]),
        };
        let staging = staging_dir(&parent.join("x"));
        std::fs::create_dir_all(&staging).unwrap();
        let held = std::fs::File::open(&staging).unwrap();
        held.lock().unwrap();
        let settings = Settings {
            endpoint: String::new(),
            mirror: None,
            display: Display { bar: false },
            verbose: false,
            python: None,
        };
        let err = fetch(&resource, &parent, &settings).unwrap_err();
        assert!(matches!(err, FetchError::Busy { .. }), "{err}");
        drop(held);
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn the_converters_own_error_or_last_line_is_reported() {
        let traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1\nModuleNotFoundError: No module named 'torch'\n";
        assert_eq!(
            converter_message(traceback),
            "ModuleNotFoundError: No module named 'torch'"
        );
        let own = "warning: w\nerror: a.ckpt: not a readable PyTorch pickle: bad\n\n  details\n";
        assert_eq!(
            converter_message(own),
            "error: a.ckpt: not a readable PyTorch pickle: bad details"
        );
        assert_eq!(converter_message(""), "nothing on stderr");
        let long = format!("error: {}", "x".repeat(1000));
        assert!(converter_message(&long).ends_with("x ..."));
        assert_eq!(converter_message(&long).chars().count(), 604);
    }
}
