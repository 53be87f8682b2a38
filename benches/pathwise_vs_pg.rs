//! Memory and time of one generator update: pathwise SFT (gradient through
//! the whole chain, Eq. 14) against SFT-PG (policy gradient on buffered
//! transitions, Eq. 20) at T = 10, 100 and 1000, toy networks, 128 chains /
//! transitions per step, one CPU thread.
//!
//! Each measurement runs in its own process. The child first runs the
//! n_critic critic steps of a round (so the critic, the baseline and, for
//! SFT-PG, a full buffer exist), records its peak resident set size, then
//! alternates generator updates (timed) with critic steps; the table reports
//! the update's time and how far the peak RSS rose above the level the critic
//! steps had reached (the update's own memory).
//!
//! `cargo bench --bench pathwise_vs_pg` (or `make bench`); the child mode is
//! `--child --agent pathwise|sft-pg --steps T --updates N`.

mod support;

use std::process::Command;
use std::time::Instant;

use agents::critic::{AdversarialCritic, CriticConfig, CriticRegularizer};
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--child") {
        child(
            &support::arg(&args, "--agent", "sft-pg".to_string()),
            support::arg(&args, "--steps", 10),
            support::arg(&args, "--updates", 10),
        );
        return;
    }
    println!("| agent | T | ms / generator update | update's peak RSS above the critic steps (MiB) | process peak RSS (MiB) |");
    println!("|---|---|---|---|---|");
    for steps in [10usize, 100, 1000] {
        let updates = if steps >= 1000 { 3 } else { 20 };
        for agent in ["pathwise", "sft-pg"] {
            let json = support::run_child(Command::new(&args[0]).args([
                "--child",
                "--agent",
                agent,
                "--steps",
                &steps.to_string(),
                "--updates",
                &updates.to_string(),
            ]));
            println!(
                "| {} | {steps} | {:.1} | {:.1} | {:.0} |",
                if agent == "pathwise" {
                    "SFT (pathwise)"
                } else {
                    "SFT-PG (B)"
                },
                json["sec_per_update"].as_f64().unwrap() * 1e3,
                json["update_rss_mib"].as_f64().unwrap(),
                json["peak_rss_mib"].as_f64().unwrap(),
            );
        }
    }
}

fn child(agent: &str, steps: usize, updates: usize) {
    tch::set_num_threads(1);
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
    let (agent_config, regularizer) = match agent {
        "pathwise" => (
            AgentConfig::Pathwise,
            CriticRegularizer::GradientPenalty { eta: 1e-3 },
        ),
        _ => (
            AgentConfig::Reinforce(ReinforceConfig::default()),
            CriticRegularizer::Baseline { lambda: 0.1 },
        ),
    };
    let data = ToyDataset::SwissRoll.generate(10_000, 0).unwrap();
    let critic_config = CriticConfig {
        regularizer,
        ..CriticConfig::default()
    };
    let critic =
        AdversarialCritic::new(critic_config, &[2], schedule.len() as i64, device).unwrap();
    let generator_agent = agent_config.build(
        Generator::new(GeneratorConfig::default(), policy).unwrap(),
        BATCH,
        &[2],
    );
    let env = DiffusionEnv::new(schedule, &[2], BATCH, device).unwrap();
    let mut sft = SftPg::new(env, generator_agent, critic, N_CRITIC);
    let real = |_| data.index_select(0, &Tensor::randint(10_000, [BATCH], (Kind::Int64, device)));
    // Critic steps fill the buffer and reach the critic's own peak; only then
    // is the peak recorded and the generator updates measured.
    sft.critic_steps(real).unwrap();
    let before = support::peak_rss_mib();
    let mut elapsed = 0.0;
    for i in 0..updates {
        if i > 0 {
            sft.critic_steps(real).unwrap();
        }
        let start = Instant::now();
        sft.generator_update().unwrap();
        elapsed += start.elapsed().as_secs_f64();
    }
    let peak = support::peak_rss_mib();
    println!(
        "{{\"agent\": \"{agent}\", \"steps\": {steps}, \"sec_per_update\": {}, \"update_rss_mib\": {}, \"peak_rss_mib\": {peak}}}",
        elapsed / updates as f64,
        peak - before
    );
}
