//! Throughput of FID's Inception features on this machine's CPU: our
//! pipeline (`rl-run fid`'s: pytorch-fid's resize and scaling, then the
//! TorchScript network through tch) against pytorch-fid's own `InceptionV3`
//! with the same weights (`benches/inception_features.py`), on the same
//! random 32 x 32 images, batch and threads, in one run; each measurement in
//! its own process (peak RSS its own), taking turns, median of the runs.
//! Prints images per second, the ratio, and the time 50,000 images (the
//! paper's FID) would take at that rate.
//!
//! `cargo bench --bench inception_features [-- --n 200 --batch 50 --threads 2 --runs 3 --device cpu|cuda]`
//! (on CUDA the memory column is the peak GPU memory nvidia-smi reports);
//! the child mode `--child --network PT --n N --batch B --threads K --device D`
//! prints one JSON line. Features come back to the CPU per batch, which
//! synchronises the device, so the clock measures the work.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use shortcut::metrics::features::FeatureNetwork;
use shortcut::runner::fid::Features;
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = support::arg(&args, "--n", 200);
    let batch: usize = support::arg(&args, "--batch", 50);
    let threads: usize = support::arg(&args, "--threads", 2);
    let device: String = support::arg(&args, "--device", "cpu".to_string());
    assert!(
        device == "cpu" || device == "cuda",
        "--device takes cpu or cuda, not {device}"
    );
    if args.iter().any(|a| a == "--child") {
        let network: String = support::arg(&args, "--network", String::new());
        child(Path::new(&network), n, batch, threads, device == "cuda");
        return;
    }
    let runs: usize = support::arg(&args, "--runs", 3);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).expect("the project folder");
    let network: PathBuf = Features::Inception
        .resolve(false)
        .expect("FID's Inception network");
    let common = [
        "--network".to_string(),
        network.display().to_string(),
        "--n".to_string(),
        n.to_string(),
        "--batch".to_string(),
        batch.to_string(),
        "--threads".to_string(),
        threads.to_string(),
        "--device".to_string(),
        device.clone(),
    ];
    let mut ours = Command::new(&args[0]);
    ours.arg("--child").args(&common);
    let mut theirs = Command::new(root.join(".venv/bin/python"));
    theirs
        .arg(root.join("benches/inception_features.py"))
        .args(&common);
    let mut implementations = [
        ("shortcut (Rust, tch, TorchScript)", ours, Vec::new()),
        ("pytorch-fid InceptionV3 (PyTorch)", theirs, Vec::new()),
    ];
    for _ in 0..runs {
        for (_, cmd, measured) in implementations.iter_mut() {
            let (json, gpu) = if device == "cuda" {
                support::run_child_watching_gpu(cmd)
            } else {
                (support::run_child(cmd), None)
            };
            measured.push((
                json["images_per_sec"].as_f64().unwrap(),
                gpu.unwrap_or(json["peak_rss_mib"].as_f64().unwrap()),
            ));
        }
    }
    let medians: Vec<(f64, f64)> = implementations
        .iter_mut()
        .map(|(_, _, m)| {
            m.sort_by(|a, b| a.0.total_cmp(&b.0));
            m[m.len() / 2]
        })
        .collect();
    let memory = if device == "cuda" {
        "peak GPU memory (MiB, nvidia-smi)"
    } else {
        "peak RSS (MiB)"
    };
    println!("device {device}");
    println!("| implementation | threads | batch | images | images / s (median of {runs}) | 50K images | {memory} | speed-up |");
    println!("|---|---|---|---|---|---|---|---|");
    for ((name, _, _), (rate, rss)) in implementations.iter().zip(&medians) {
        println!(
            "| {name} | {threads} | {batch} | {n} | {rate:.2} | {:.0} min | {rss:.0} | {:.2}x |",
            50_000.0 / rate / 60.0,
            rate / medians[1].0
        );
    }
}

/// Times the features of `n` random 32 x 32 images and prints one JSON line.
fn child(network: &Path, n: usize, batch: usize, threads: usize, cuda: bool) {
    tch::set_num_threads(threads as i32);
    let device = if cuda { Device::Cuda(0) } else { Device::Cpu };
    let net = FeatureNetwork::load(network, device).expect("the network loads");
    tch::manual_seed(0);
    let pixels = Tensor::randint(256, [n as i64, 3, 32, 32], (Kind::Uint8, Device::Cpu));
    let warm = net
        .features(&pixels.narrow(0, 0, batch as i64))
        .expect("warm-up");
    assert_eq!(warm.size()[0], batch as i64);
    let start = Instant::now();
    for part in pixels.split(batch as i64, 0) {
        assert_eq!(net.features(&part).expect("features").size()[1], 2048);
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"images_per_sec": n as f64 / seconds, "peak_rss_mib": support::peak_rss_mib()})
    );
}
