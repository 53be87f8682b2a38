//! diffusers models on the Hugging Face hub: which files a repository holds
//! at a revision (`GET {endpoint}/api/models/{repo}/tree/{revision}`), which
//! of them make a `UNet2DModel` folder, and where to download each
//! (`{endpoint}/{repo}/resolve/{revision}/{path}`).
//!
//! Each file is checked against the hub's own hash: a large (LFS) file's
//! SHA-256 (`lfs.oid`), a small file's git blob id (`oid`).

use serde::Deserialize;

use super::checksum::Checksum;
use super::error::FetchError;

/// The hub's address unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The hub to use: `$HF_ENDPOINT` (the hub's own convention) or the public one.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// One file of a repository.
#[derive(Debug, Clone, PartialEq)]
pub struct HubFile {
    /// Its path in the repository (`config.json`, `unet/config.json`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// The hub's hash of it.
    pub checksum: Checksum,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    oid: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
}

/// The URL listing the files of `repo` at `revision`.
pub fn tree_url(endpoint: &str, repo: &str, revision: &str) -> String {
    format!("{endpoint}/api/models/{repo}/tree/{revision}?recursive=true")
}

/// The URL of one file of `repo` at `revision`.
pub fn file_url(endpoint: &str, repo: &str, revision: &str, path: &str) -> String {
    format!("{endpoint}/{repo}/resolve/{revision}/{path}")
}

/// The files of a tree listing (the hub's JSON), folders left out.
pub fn parse_tree(json: &str, url: &str) -> Result<Vec<HubFile>, FetchError> {
    let entries: Vec<Entry> = serde_json::from_str(json).map_err(|e| FetchError::Hub {
        url: url.to_string(),
        message: format!("expected the hub's JSON list of files: {e}"),
    })?;
    Ok(entries
        .into_iter()
        .filter(|e| e.kind == "file")
        .map(|e| HubFile {
            checksum: match e.lfs {
                Some(lfs) => {
                    Checksum::Sha256(lfs.oid.trim_start_matches("sha256:").to_ascii_lowercase())
                }
                None => Checksum::GitBlob(e.oid.to_ascii_lowercase()),
            },
            path: e.path,
            size: e.size,
        })
        .collect())
}

/// The files of a `UNet2DModel` folder among a repository's: `config.json`,
/// `scheduler_config.json` if there, and the weights
/// (`diffusion_pytorch_model.safetensors`, else the `.bin` pickle). A
/// pipeline repository's `unet/` and `scheduler/` work too.
pub fn model_files(files: &[HubFile], url: &str) -> Result<Vec<HubFile>, FetchError> {
    let find = |path: &str| files.iter().find(|f| f.path == path).cloned();
    let unet = if find("config.json").is_none() && find("unet/config.json").is_some() {
        "unet/"
    } else {
        ""
    };
    let config = find(&format!("{unet}config.json")).ok_or_else(|| FetchError::Hub {
        url: url.to_string(),
        message: format!(
            "no config.json (nor unet/config.json) among the repository's files ({}): not a diffusers model",
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ")
        ),
    })?;
    let weights = ["safetensors", "bin"]
        .iter()
        .find_map(|ext| find(&format!("{unet}diffusion_pytorch_model.{ext}")))
        .ok_or_else(|| FetchError::Hub {
            url: url.to_string(),
            message: format!(
                "no {unet}diffusion_pytorch_model.safetensors or .bin among the repository's files"
            ),
        })?;
    let scheduler = if unet.is_empty() {
        "scheduler_config.json"
    } else {
        "scheduler/scheduler_config.json"
    };
    Ok([Some(config), find(scheduler), Some(weights)]
        .into_iter()
        .flatten()
        .collect())
}

/// Lists the files of `repo` at `revision`.
pub fn list(
    agent: &ureq::Agent,
    endpoint: &str,
    repo: &str,
    revision: &str,
) -> Result<Vec<HubFile>, FetchError> {
    let url = tree_url(endpoint, repo, revision);
    let mut response = agent.get(&url).call().map_err(|e| FetchError::Connection {
        url: url.clone(),
        message: e.to_string(),
    })?;
    match response.status().as_u16() {
        200 => {}
        401 | 403 | 404 => {
            return Err(FetchError::Hub {
                url,
                message: format!(
                    "HTTP {}: no public repository {repo} with a revision {revision}",
                    response.status().as_u16()
                ),
            })
        }
        status => return Err(FetchError::Status { url, status }),
    }
    let json = response
        .body_mut()
        .read_to_string()
        .map_err(|e| FetchError::Connection {
            url: url.clone(),
            message: e.to_string(),
        })?;
    parse_tree(&json, &url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = r#"[
        {"type":"file","oid":"ce013625030ba8dba906f756967f9e9ca394464a","size":6,"path":"config.json"},
        {"type":"directory","oid":"0","size":0,"path":"sub"},
        {"type":"file","oid":"1111111111111111111111111111111111111111","size":9,"path":"diffusion_pytorch_model.bin",
         "lfs":{"oid":"AB","size":9,"pointerSize":130}},
        {"type":"file","oid":"2222222222222222222222222222222222222222","size":9,"path":"diffusion_pytorch_model.safetensors",
         "lfs":{"oid":"cd","size":9,"pointerSize":130}},
        {"type":"file","oid":"3","size":3,"path":"README.md"}
    ]"#;

    #[test]
    fn lfs_files_are_checked_by_sha256_others_by_blob_id() {
        let files = parse_tree(TREE, "u").unwrap();
        assert_eq!(files.len(), 4);
        assert_eq!(
            files[0].checksum,
            Checksum::GitBlob("ce013625030ba8dba906f756967f9e9ca394464a".into())
        );
        assert_eq!(files[1].checksum, Checksum::Sha256("ab".into()));
    }

    #[test]
    fn safetensors_are_preferred_and_readmes_left_out() {
        let files = parse_tree(TREE, "u").unwrap();
        let chosen: Vec<_> = model_files(&files, "u")
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(
            chosen,
            ["config.json", "diffusion_pytorch_model.safetensors"]
        );
        let only_bin: Vec<_> = files
            .iter()
            .filter(|f| !f.path.ends_with("safetensors"))
            .cloned()
            .collect();
        assert_eq!(
            model_files(&only_bin, "u").unwrap()[1].path,
            "diffusion_pytorch_model.bin"
        );
        let err = model_files(&files[2..], "u").unwrap_err().to_string();
        assert!(err.contains("no config.json"), "{err}");
    }
}
