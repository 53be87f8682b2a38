//! Speed and memory of one SFT-PG (B) iteration: our Rust against the
//! equivalent PyTorch script `benches/sft_pg_iteration.py`, in one run on one
//! machine, both on one CPU thread, at T = 10 and T = 1000.
//!
//! An iteration is one critic+baseline step on 128 fresh chains and, every
//! fifth iteration, one generator step (Algorithm 1 with n_critic = 5), with
//! the toy networks. Each measurement runs in its own process so that its
//! peak resident set size (VmHWM) is its own.
//!
//! `cargo bench --bench sft_pg_iteration` (or `make bench`); the child mode
//! `--child --steps T --iters N --warmup W` prints one JSON line.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use agents::critic::CriticConfig;
use agents::generator::GeneratorConfig;
use agents::policy::DiffusionPolicy;
use agents::registry::AgentConfig;
use agents::reinforce::ReinforceConfig;
use envs::datasets::ToyDataset;
use envs::schedule::{BetaSchedule, Schedule, Variance};
use shortcut::runner::sft_pg::SftPg;
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 128;
const N_CRITIC: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| support::arg(&args, name, default);
    if args.iter().any(|a| a == "--child") {
        child(
            value("--steps", 10),
            value("--iters", 300),
            value("--warmup", 30),
            value("--threads", 1),
        );
        return;
    }
    println!("| implementation | T | iterations | ms / iteration | peak RSS (MiB) | speed-up |");
    println!("|---|---|---|---|---|---|");
    for (steps, iters, warmup) in [(10, 500, 50), (1000, 10, 5)] {
        let common = [
            "--steps".to_string(),
            steps.to_string(),
            "--iters".to_string(),
            iters.to_string(),
            "--warmup".to_string(),
            warmup.to_string(),
        ];
        let ours = measure(Command::new(&args[0]).arg("--child").args(&common));
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sft_pg_iteration.py");
        let theirs = measure(
            Command::new(python)
                .arg(script)
                .args(&common)
                .args(["--threads", "1"]),
        );
        let ratio = theirs.0 / ours.0;
        println!(
            "| shortcut (Rust, tch) | {steps} | {iters} | {:.2} | {:.0} | {ratio:.2}x |",
            ours.0 * 1e3,
            ours.1
        );
        println!(
            "| PyTorch (Python) | {steps} | {iters} | {:.2} | {:.0} | 1.00x |",
            theirs.0 * 1e3,
            theirs.1
        );
    }
}

/// Runs a benchmark process: (seconds per iteration, peak RSS MiB).
fn measure(cmd: &mut Command) -> (f64, f64) {
    let json = support::run_child(cmd);
    (
        json["sec_per_iter"].as_f64().unwrap(),
        json["peak_rss_mib"].as_f64().unwrap(),
    )
}

fn child(steps: usize, iters: usize, warmup: usize, threads: usize) {
    tch::set_num_threads(threads as i32);
    tch::manual_seed(0);
    let device = Device::Cpu;
    let schedule = Schedule::new(
        BetaSchedule::Sigmoid {
            start: 1e-5,
            end: 1e-2,
        }
        .betas(steps)
        .unwrap(),
        Variance::Beta,
    )
    .unwrap();
    let policy = DiffusionPolicy::toy(&schedule, 2, 128, steps as i64, device);
    let data = ToyDataset::SwissRoll.generate(10_000, 0).unwrap();
    let mut sft = SftPg::new(
        schedule,
        policy,
        2,
        BATCH,
        N_CRITIC,
        GeneratorConfig::default(),
        AgentConfig::Reinforce(ReinforceConfig::default()),
        CriticConfig::default(),
        device,
    )
    .unwrap();
    let mut round = || {
        sft.round(|_| {
            data.index_select(0, &Tensor::randint(10_000, [BATCH], (Kind::Int64, device)))
        })
        .unwrap();
    };
    // Iterations come in rounds of N_CRITIC (one generator step per round).
    for _ in 0..warmup.div_ceil(N_CRITIC) {
        round();
    }
    let rounds = iters.div_ceil(N_CRITIC);
    let start = Instant::now();
    for _ in 0..rounds {
        round();
    }
    let sec_per_iter = start.elapsed().as_secs_f64() / (rounds * N_CRITIC) as f64;
    println!(
        "{{\"impl\": \"shortcut\", \"steps\": {steps}, \"batch\": {BATCH}, \"threads\": {threads}, \"iters\": {}, \"sec_per_iter\": {sec_per_iter}, \"iters_per_sec\": {}, \"peak_rss_mib\": {}}}",
        rounds * N_CRITIC,
        1.0 / sec_per_iter,
        support::peak_rss_mib()
    );
}
