//! Speed and memory of one training step of the CIFAR-10 DDPM U-Net
//! (35,746,307 parameters): our U-Net against diffusers' `UNet2DModel`
//! (`benches/unet_step.py`) with the same weights, batch and threads, in one
//! run on one machine. A step is a forward pass on a batch of 16 images at
//! random times, the mean squared error, a backward pass and gradients zeroed
//! (no optimiser step). Each measurement runs in its own process so that its
//! peak resident set size is its own; the implementations take turns and the
//! median of the runs is reported.
//!
//! `cargo bench --bench unet_step` (or `make bench`); the child mode
//! `--child --model DIR --batch B --iters N --warmup W --threads K` prints
//! one JSON line.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use agents::unet::UNet;
use shortcut::weights::diffusers::DiffusersFolder;
use shortcut::weights::import;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const BATCH: usize = 16;
const ITERS: usize = 5;
const WARMUP: usize = 2;
const RUNS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--child") {
        let model: String = support::arg(&args, "--model", String::new());
        child(
            Path::new(&model),
            support::arg(&args, "--batch", BATCH),
            support::arg(&args, "--iters", ITERS),
            support::arg(&args, "--warmup", WARMUP),
            support::arg(&args, "--threads", 1),
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let script = root.join("benches/unet_step.py");
    let model = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("unet_step_cifar10");
    if !model.join("config.json").is_file() {
        let out = Command::new(&python)
            .arg(&script)
            .arg("--make")
            .arg(&model)
            .output()
            .expect("python starts");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("| implementation | threads | batch | runs x steps | s / step (median run) | peak RSS (MiB) | speed-up |");
    println!("|---|---|---|---|---|---|---|");
    for threads in [1, 2] {
        let common = [
            "--model".to_string(),
            model.display().to_string(),
            "--batch".to_string(),
            BATCH.to_string(),
            "--iters".to_string(),
            ITERS.to_string(),
            "--warmup".to_string(),
            WARMUP.to_string(),
            "--threads".to_string(),
            threads.to_string(),
        ];
        let mut ours = Command::new(&args[0]);
        ours.arg("--child").args(&common);
        let mut theirs = Command::new(&python);
        theirs.arg(&script).args(&common);
        let mut implementations = [
            ("shortcut (Rust, tch)", ours, Vec::new()),
            ("diffusers UNet2DModel (PyTorch)", theirs, Vec::new()),
        ];
        for _ in 0..RUNS {
            for (_, cmd, runs) in implementations.iter_mut() {
                let json = support::run_child(cmd);
                runs.push((
                    json["sec_per_iter"].as_f64().unwrap(),
                    json["peak_rss_mib"].as_f64().unwrap(),
                ));
            }
        }
        let medians: Vec<(f64, f64)> = implementations
            .iter_mut()
            .map(|(_, _, runs)| {
                runs.sort_by(|a, b| a.0.total_cmp(&b.0));
                runs[runs.len() / 2]
            })
            .collect();
        for ((name, _, _), (sec, rss)) in implementations.iter().zip(&medians) {
            println!(
                "| {name} | {threads} | {BATCH} | {RUNS} x {ITERS} | {sec:.3} | {rss:.0} | {:.2}x |",
                medians[1].0 / sec
            );
        }
    }
}

/// Times `iters` training steps of the U-Net in `model` and prints one JSON line.
fn child(model: &Path, batch: usize, iters: usize, warmup: usize, threads: usize) {
    tch::set_num_threads(threads as i32);
    tch::manual_seed(0);
    let folder = DiffusersFolder::open(model).expect("a diffusers folder");
    let vs = VarStore::new(Device::Cpu);
    let net = UNet::new(&vs.root(), &folder.config);
    import::load_strict(&folder.weights().expect("weights"), &vs).expect("the weights load");
    let size = folder.config.resolution;
    let batch = batch as i64;
    let step = || {
        let x = Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu));
        let t = Tensor::randint(1000, [batch], (Kind::Int64, Device::Cpu)).to_kind(Kind::Float);
        let target = Tensor::randn_like(&x);
        let loss = (net.forward(&x, &t) - target).square().mean(Kind::Float);
        loss.backward();
        for mut v in vs.trainable_variables() {
            v.zero_grad();
        }
    };
    for _ in 0..warmup {
        step();
    }
    let start = Instant::now();
    for _ in 0..iters {
        step();
    }
    let sec = start.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{}",
        serde_json::json!({"sec_per_iter": sec, "peak_rss_mib": support::peak_rss_mib()})
    );
}
