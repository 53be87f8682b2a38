//! Speed and memory of one SFT-PG (B) iteration: our Rust against the
//! equivalent PyTorch script `benches/sft_pg_iteration.py`, in one run on one
//! machine, at T = 10 and T = 1000, each on one and on two CPU threads. The
//! machine may be shared: at T = 10 every setting runs three times, the
//! implementations taking turns, and the median run is reported.
//!
//! An iteration is one critic+baseline step on 128 fresh chains and, every
//! fifth iteration, one generator step (Algorithm 1 with n_critic = 5), with
//! the toy networks. Each measurement runs in its own process so that its
//! peak resident set size (VmHWM) is its own.
//!
//! Two further measurements put the ratio in context:
//! - PyTorch once more with glibc's allocator told (through `GLIBC_TUNABLES`)
//!   what `rl-run` tells it at start (`retain_freed_memory`), so that the
//!   allocator's share of the speed-up shows;
//! - the matrix-product floor: the iteration's matrix products alone, timed
//!   one shape at a time with libtorch's `mm` (the kernels both sides call),
//!   summed with their counts per iteration. No implementation that does the
//!   iteration's arithmetic with these kernels can be faster than that.
//!
//! `cargo bench --bench sft_pg_iteration` (or `make bench`); the child modes
//! `--child --steps T --iters N --warmup W --threads K` and
//! `--gemm-floor --steps T --threads K` print one JSON line.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use agents::critic::{AdversarialCritic, CriticConfig};
use agents::generator::{Generator, GeneratorConfig};
use agents::policy::DiffusionPolicy;
use agents::registry::AgentConfig;
use agents::reinforce::ReinforceConfig;
use envs::datasets::ToyDataset;
use envs::diffusion::DiffusionEnv;
use envs::schedule::{BetaSchedule, Schedule, Variance};
use shortcut::runner::sft_pg::SftPg;
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 128;
const N_CRITIC: usize = 5;
/// What `retain_freed_memory` sets, as glibc tunables for the Python process.
const ALLOCATOR_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824";

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
    if args.iter().any(|a| a == "--gemm-floor") {
        gemm_floor(value("--steps", 10), value("--threads", 1));
        return;
    }
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sft_pg_iteration.py");
    println!("| implementation | T | threads | runs x iterations | ms / iteration (median run) | peak RSS (MiB) | speed-up |");
    println!("|---|---|---|---|---|---|---|");
    let mut floors = Vec::new();
    // (T, timed iterations, warm-up iterations, repetitions). The machine is
    // shared, so each setting is measured `reps` times, the implementations
    // taking turns, and the median is reported.
    for (steps, iters, warmup, reps) in [(10, 500, 50, 3), (1000, 10, 5, 1)] {
        for threads in [1, 2] {
            let common = [
                "--steps".to_string(),
                steps.to_string(),
                "--iters".to_string(),
                iters.to_string(),
                "--warmup".to_string(),
                warmup.to_string(),
                "--threads".to_string(),
                threads.to_string(),
            ];
            let mut implementations: Vec<(&str, Command)> = vec![
                ("shortcut (Rust, tch)", Command::new(&args[0])),
                ("PyTorch (Python)", Command::new(&python)),
            ];
            implementations[0].1.arg("--child").args(&common);
            implementations[1].1.arg(&script).args(&common);
            if steps == 10 {
                let mut tuned = Command::new(&python);
                tuned
                    .arg(&script)
                    .args(&common)
                    .env("GLIBC_TUNABLES", ALLOCATOR_TUNABLES);
                implementations.push(("PyTorch, allocator set as ours", tuned));
            }
            let mut runs = vec![Vec::new(); implementations.len()];
            for _ in 0..reps {
                for ((_, cmd), runs) in implementations.iter_mut().zip(&mut runs) {
                    runs.push(measure(cmd));
                }
            }
            let medians: Vec<(f64, f64)> = runs.into_iter().map(median).collect();
            let theirs = medians[1].0;
            for ((name, _), (sec, rss)) in implementations.iter().zip(&medians) {
                println!(
                    "| {name} | {steps} | {threads} | {reps} x {iters} | {:.2} | {rss:.0} | {:.2}x |",
                    sec * 1e3,
                    theirs / sec
                );
            }
            if steps == 10 {
                let floor = support::run_child(Command::new(&args[0]).args([
                    "--gemm-floor",
                    "--steps",
                    &steps.to_string(),
                    "--threads",
                    &threads.to_string(),
                ]));
                floors.push((threads, theirs, medians[0].0, floor));
            }
        }
    }
    println!();
    println!("| T = 10, threads | PyTorch ms | a third of it | matrix products alone, ms (GFLOP/s) | shortcut ms |");
    println!("|---|---|---|---|---|");
    for (threads, theirs, ours, floor) in floors {
        let sec = floor["sec_per_iter"].as_f64().unwrap();
        println!(
            "| {threads} | {:.2} | {:.2} | {:.2} ({:.1}) | {:.2} |",
            theirs * 1e3,
            theirs * 1e3 / 3.0,
            sec * 1e3,
            floor["gflop_per_iter"].as_f64().unwrap() / sec,
            ours * 1e3
        );
    }
}

/// The run with the median time of `runs`.
fn median(mut runs: Vec<(f64, f64)>) -> (f64, f64) {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[runs.len() / 2]
}

/// Runs a benchmark process: (seconds per iteration, peak RSS MiB).
fn measure(cmd: &mut Command) -> (f64, f64) {
    let json = support::run_child(cmd);
    (
        json["sec_per_iter"].as_f64().unwrap(),
        json["peak_rss_mib"].as_f64().unwrap(),
    )
}

/// The matrix products of one iteration at T = `steps`, as
/// `(m, k, n, calls per iteration)` for an `[m, k] x [k, n]` product.
fn iteration_products(steps: i64) -> Vec<(i64, i64, i64, f64)> {
    const EPS_NET: [i64; 5] = [2, 128, 128, 128, 2];
    const CRITIC: [i64; 4] = [2, 256, 256, 1];
    let mut products = Vec::new();
    let mut forward = |rows: i64, widths: &[i64], calls: f64, backward: bool| {
        for (i, w) in widths.windows(2).enumerate() {
            products.push((rows, w[0], w[1], calls));
            if backward {
                // Weight gradient, and the input's for all but the first layer.
                products.push((w[1], rows, w[0], calls));
                if i > 0 {
                    products.push((rows, w[1], w[0], calls));
                }
            }
        }
    };
    let generator_step = 1.0 / N_CRITIC as f64;
    // Sampling: T network calls on B chains, no gradients.
    forward(BATCH, &EPS_NET, steps as f64, false);
    // Critic step: f on generated and real points, V on the T x B states.
    forward(2 * BATCH, &CRITIC, 1.0, true);
    forward(steps * BATCH, &CRITIC, 1.0, true);
    // Generator step: log-densities of B transitions, f and V on them.
    forward(BATCH, &EPS_NET, generator_step, true);
    forward(BATCH, &CRITIC, 2.0 * generator_step, false);
    products
}

/// Times the iteration's matrix products alone and prints their sum.
fn gemm_floor(steps: usize, threads: usize) {
    tch::set_num_threads(threads as i32);
    tch::manual_seed(0);
    let mut sec_per_iter = 0.0;
    let mut flop_per_iter = 0.0;
    for (m, k, n, calls) in iteration_products(steps as i64) {
        let a = Tensor::randn([m, k], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([k, n], (Kind::Float, Device::Cpu));
        for _ in 0..20 {
            let _ = a.mm(&b);
        }
        // Three blocks of about 0.1 s each; the fastest counts (a floor).
        let reps = (1e8 / (2.0 * (m * k * n) as f64 / 30.0)).clamp(50.0, 1e5) as usize;
        let fastest = (0..3)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..reps {
                    let _ = a.mm(&b);
                }
                start.elapsed().as_secs_f64() / reps as f64
            })
            .fold(f64::INFINITY, f64::min);
        sec_per_iter += fastest * calls;
        flop_per_iter += 2.0 * (m * k * n) as f64 * calls;
    }
    println!(
        "{{\"impl\": \"gemm-floor\", \"steps\": {steps}, \"threads\": {threads}, \"sec_per_iter\": {sec_per_iter}, \"gflop_per_iter\": {}}}",
        flop_per_iter / 1e9
    );
}

fn child(steps: usize, iters: usize, warmup: usize, threads: usize) {
    shortcut::runner::retain_freed_memory();
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
    let critic =
        AdversarialCritic::new(CriticConfig::default(), &[2], steps as i64, device).unwrap();
    let agent = AgentConfig::Reinforce(ReinforceConfig::default()).build(
        Generator::new(GeneratorConfig::default(), policy).unwrap(),
        BATCH,
        &[2],
    );
    let env = DiffusionEnv::new(schedule, &[2], BATCH, device).unwrap();
    let mut sft = SftPg::new(env, agent, critic, N_CRITIC);
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
