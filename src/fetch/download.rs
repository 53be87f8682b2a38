//! One resumable, checked download: `GET url` into `<file>.part`, resumed
//! with `Range: bytes=N-` when a partial file is there, its length held
//! against the server's `Content-Length`, its checksum against the
//! published one, and renamed to its final name only when both agree.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::checksum::Checksum;
use super::error::{io, FetchError};

/// The HTTP client every fetch uses: statuses are answers, not errors;
/// redirects (the hub's to its CDN) are followed; a read that waits more
/// than a minute fails (and the partial file is kept).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("shortcut-rl-run/", env!("CARGO_PKG_VERSION")))
        // The system's certificate store (and SSL_CERT_FILE), as curl and
        // pip use it: a machine behind a TLS-inspecting proxy trusts that
        // proxy's authority there, not in a bundled list.
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into()
}

/// The partial file a download of `file` is written to.
pub fn part_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    file.with_file_name(name)
}

/// `(first, last, total)` of a `Content-Range: bytes first-last/total`
/// header (`total` is `None` for `*`).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let last = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (first <= last).then_some((first, last, total))
}

/// How a download reports progress.
#[derive(Debug, Clone, Copy)]
pub struct Display {
    /// Draw a progress bar (on a terminal, without `--quiet`).
    pub bar: bool,
}

/// Downloads `url` to `file` (created or replaced only when complete and
/// checked). A `.part` beside it is resumed; a truncated body keeps the
/// `.part` for the next try; a wrong checksum deletes it.
pub fn download(
    agent: &ureq::Agent,
    url: &str,
    file: &Path,
    checksum: &Checksum,
    display: Display,
) -> Result<(), FetchError> {
    let part = part_path(file);
    let have = std::fs::metadata(&part).map_or(0, |m| m.len());
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let mut response = request.call().map_err(|e| FetchError::Connection {
        url: url.to_string(),
        message: e.to_string(),
    })?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let length: Option<u64> = header("content-length").and_then(|v| v.trim().parse().ok());
    // Where the body starts in the file, and the file's whole length if known.
    let (start, total) = match status {
        200 => (0, length),
        206 if have > 0 => match header("content-range")
            .as_deref()
            .and_then(parse_content_range)
        {
            Some((first, _, total)) if first == have => (have, total.or(length.map(|l| have + l))),
            _ => {
                return Err(FetchError::Connection {
                    url: url.to_string(),
                    message: format!(
                        "asked for bytes {have}- and got Content-Range {:?}",
                        header("content-range")
                    ),
                })
            }
        },
        416 if have > 0 => {
            // The partial file is as long as the whole (or longer): start over.
            std::fs::remove_file(&part).map_err(io(&part))?;
            return download(agent, url, file, checksum, display);
        }
        _ => {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
            })
        }
    };
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(start > 0)
        .truncate(start == 0)
        .open(&part)
        .map_err(io(&part))?;
    let bar = progress_bar(display, file, total, start);
    let mut received = start;
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let ended_early = loop {
        match reader.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                out.write_all(&buf[..n]).map_err(io(&part))?;
                received += n as u64;
                bar.set_position(received);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e),
        }
    };
    out.sync_all().map_err(io(&part))?;
    drop(out);
    bar.finish_and_clear();
    let expected = total.unwrap_or(received);
    if received < expected {
        return Err(FetchError::Truncated {
            url: url.to_string(),
            expected,
            received,
            part,
        });
    }
    // A read error after the announced length arrived in full is harmless.
    if let Some(e) = ended_early.filter(|_| total.is_none()) {
        return Err(FetchError::Connection {
            url: url.to_string(),
            message: format!(
                "{e} after {received} bytes; the partial file {} is kept and the next fetch resumes it",
                part.display()
            ),
        });
    }
    if received > expected {
        std::fs::remove_file(&part).map_err(io(&part))?;
        return Err(FetchError::Connection {
            url: url.to_string(),
            message: format!("{received} bytes arrived, the server announced {expected}"),
        });
    }
    if let Err(e) = checksum.verify(&part, url) {
        std::fs::remove_file(&part).map_err(io(&part))?;
        return Err(e);
    }
    std::fs::rename(&part, file).map_err(io(file))
}

fn progress_bar(display: Display, file: &Path, total: Option<u64>, start: u64) -> ProgressBar {
    if !display.bar {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    bar.set_position(start);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes 5-3/9"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes */200"), None);
    }

    #[test]
    fn partial_files_sit_beside_the_final_name() {
        assert_eq!(
            part_path(Path::new("data/mnist/a.gz")),
            Path::new("data/mnist/a.gz.part")
        );
    }
}
