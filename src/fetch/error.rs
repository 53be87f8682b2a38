//! Errors of fetching data sets and pretrained weights.

use std::path::PathBuf;

use thiserror::Error;

/// A resource could not be fetched. Every variant names the file or URL,
/// what was expected and what was found.
#[derive(Debug, Error)]
pub enum FetchError {
    /// `rl-run fetch NAME` with a name the catalog does not hold.
    #[error("no resource named {name:?}; known: {known}")]
    Unknown {
        /// The name as given.
        name: String,
        /// The catalog's names, comma-separated.
        known: String,
    },
    /// A catalog file (`--catalog`) could not be used.
    #[error("{file}: {message}")]
    Catalog {
        /// The catalog file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The server could not be reached or the connection failed.
    #[error("GET {url}: {message}")]
    Connection {
        /// The URL.
        url: String,
        /// Why (the HTTP client's words).
        message: String,
    },
    /// The server answered with a status other than 200 or 206.
    #[error("GET {url}: HTTP {status}, expected 200 (or 206 when resuming)")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body ended before the length the server announced.
    #[error("GET {url}: the connection ended after {received} of {expected} bytes; the partial file {part} is kept and the next fetch resumes it")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes the whole file has (Content-Length, plus the resumed start).
        expected: u64,
        /// Bytes the partial file now holds.
        received: u64,
        /// The partial file.
        part: PathBuf,
    },
    /// A downloaded file's checksum is not the published one.
    #[error("{file} (from {url}): {algorithm} is {found}, expected {expected}; the download was deleted (it cannot be resumed into the right file)")]
    Checksum {
        /// The file (the partial name it was downloaded under).
        file: PathBuf,
        /// Where it came from.
        url: String,
        /// `MD5`, `SHA-256` or `git blob SHA-1`.
        algorithm: &'static str,
        /// The published checksum.
        expected: String,
        /// The checksum of what arrived.
        found: String,
    },
    /// Every URL of a file failed.
    #[error("{file}: every source failed: {tried}")]
    Sources {
        /// The file being fetched.
        file: String,
        /// Each URL's failure, `; `-separated.
        tried: String,
    },
    /// The Hugging Face hub's answer is not what was expected.
    #[error("{url}: {message}")]
    Hub {
        /// The API or file URL.
        url: String,
        /// What was expected and found.
        message: String,
    },
    /// An archive could not be unpacked or lacks files it should hold.
    #[error("{path}: {message}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What was expected and found.
        message: String,
    },
    /// The target folder exists but lacks files; fetch does not write into it.
    #[error("{dir} exists but lacks {missing}; move it away (fetch never writes into an existing folder) and fetch again")]
    Incomplete {
        /// The existing folder.
        dir: PathBuf,
        /// The missing files, comma-separated.
        missing: String,
    },
    /// The Python that converts a DDPM/DDIM checkpoint is not there.
    #[error("{resource}: converting its DDPM/DDIM checkpoint needs the project's Python (with torch and safetensors), and {python} ({origin}) is not there; run scripts/setup.sh in the project's folder, or set SHORTCUT_PYTHON to such an interpreter, and fetch again; or by hand: {by_hand}")]
    Python {
        /// The resource's name.
        resource: String,
        /// The interpreter looked for.
        python: PathBuf,
        /// Where that name came from (`SHORTCUT_PYTHON`, or the default
        /// relative to the current folder).
        origin: String,
        /// The steps that fetch and convert it without rl-run.
        by_hand: String,
    },
    /// The converter failed on a downloaded, checked checkpoint, or did not
    /// write a diffusers folder this project reads.
    #[error("{checkpoint}: the conversion `{command}` failed: {message}; the checked download is kept, and the next fetch converts it again without downloading it")]
    Convert {
        /// The downloaded checkpoint.
        checkpoint: PathBuf,
        /// The command that was run.
        command: String,
        /// What went wrong (the converter's own last words, or what the
        /// written folder lacks).
        message: String,
    },
    /// Another process is fetching the same resource.
    #[error("{dir}: another rl-run is fetching into this folder; wait for it to finish")]
    Busy {
        /// The staging folder.
        dir: PathBuf,
    },
    /// File-system trouble.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A closure turning an I/O error on `path` into [`FetchError::Io`].
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FetchError {
    let path = path.into();
    move |source| FetchError::Io { path, source }
}
