//! Speed and memory of one SFT-PG (B) round of the CIFAR-10 configuration
//! (`experiments/sft_pg_cifar.ron`: the 35.7M-parameter U-Net sampled by
//! FastDPM VAR with T' steps, the conv critic, the conditional MLP
//! baseline, Adam, lambda 1, gradient clip 0.1, log-density averaged over
//! pixels): n_critic critic+baseline steps, each on a rollout of fresh
//! chains, then n_generator generator steps on minibatches of their
//! transitions (ours keeps them in the experiment's reservoir, or with
//! `--buffer full` all of them; the Python side keeps all). Ours (`SftPg::critic_steps` and
//! `SftPg::generator_update`, the code real runs use) against the same round
//! written with PyTorch and diffusers (`benches/sft_pg_round.py`), same
//! threads, same run, each measurement in its own process so that its peak
//! resident set size (VmHWM) is its own, the implementations taking turns,
//! the median run reported.
//!
//! Both sides start from random weights (the weights do not change the
//! speed) and sample the same affine Gaussian policy: the parent writes the
//! sampler's per-step coefficients to a JSON file that the Python side reads.
//!
//! The full configuration (128 chains) takes minutes per round on a CPU, so
//! the scale is an argument:
//!
//! - `cargo bench --bench sft_pg_round -- --chains 8 --runs 3 --threads 1`:
//!   the comparison (default: `--chains 128 --steps 10 --n-critic 5
//!   --n-generator 10 --runs 3 --threads 1 --buffer reservoir`; the
//!   generator's minibatch is the number of chains, as in the configuration);
//! - `... -- --memory-vs-steps --chains 2`: our round at T' = 10 and 100,
//!   its peak RSS and the buffer's bytes, beside the buffer of the full
//!   configuration computed from its shapes;
//! - `... -- --device cuda`: both sides on the first CUDA device (the GPU
//!   mode), each phase timed after synchronising the device, with the peak
//!   GPU memory each child held (nvidia-smi, read by the parent every
//!   100 ms; PyTorch's own `max_memory_reserved` beside it in its JSON);
//! - the child `--child --chains M --steps T --n-critic K --n-generator G
//!   --threads N --buffer full|reservoir --device cpu|cuda` prints one JSON line: seconds of
//!   the rollouts, of the rest of the critic steps and of the generator
//!   steps, the peak RSS and the buffer's bytes at the end of the critic
//!   steps.

mod support;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::Instant;

use agents::agent::{Critics, FineTuneAgent};
use agents::critic::AdversarialCritic;
use agents::generator::Generator;
use agents::registry::AgentConfig;
use agents::reinforce::{BufferKind, Reinforce};
use agents::{Agent, AgentError, Learn, UpdateStats};
use envs::diffusion::{ChainState, DiffusionEnv};
use envs::sampler::SamplerConfig;
use envs::Step;
use shortcut::config::{Experiment, Task};
use shortcut::runner::model::{build_policy, schedule};
use shortcut::runner::sft_pg::SftPg;
use tch::{Device, Kind, Tensor};

/// The benchmarked configuration, relative to the crate root.
const EXPERIMENT: &str = "experiments/sft_pg_cifar.ron";
/// Bytes of one CIFAR-10 state (3 x 32 x 32 float32).
const STATE_BYTES: usize = 3 * 32 * 32 * 4;

/// The scale of a round.
#[derive(Debug, Clone, Copy)]
struct Scale {
    chains: usize,
    steps: usize,
    n_critic: usize,
    n_generator: usize,
    threads: usize,
    /// How our agent keeps the round's transitions.
    buffer: BufferKind,
    /// Run on the first CUDA device instead of the CPU (both sides).
    cuda: bool,
}

impl Scale {
    fn from_args(args: &[String]) -> Self {
        Self {
            chains: support::arg(args, "--chains", 128),
            steps: support::arg(args, "--steps", 10),
            n_critic: support::arg(args, "--n-critic", 5),
            n_generator: support::arg(args, "--n-generator", 10),
            threads: support::arg(args, "--threads", 1),
            buffer: match support::arg(args, "--buffer", "reservoir".to_string()).as_str() {
                "full" => BufferKind::Full,
                "reservoir" => BufferKind::Reservoir,
                other => panic!("--buffer takes full or reservoir, not {other}"),
            },
            cuda: match support::arg(args, "--device", "cpu".to_string()).as_str() {
                "cpu" => false,
                "cuda" => true,
                other => panic!("--device takes cpu or cuda, not {other}"),
            },
        }
    }

    fn device(self) -> Device {
        if self.cuda {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }

    fn device_name(self) -> &'static str {
        if self.cuda {
            "cuda"
        } else {
            "cpu"
        }
    }

    fn to_args(self) -> Vec<String> {
        [
            ("--chains", self.chains),
            ("--steps", self.steps),
            ("--n-critic", self.n_critic),
            ("--n-generator", self.n_generator),
            ("--threads", self.threads),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .chain(["--device".to_string(), self.device_name().to_string()])
        .collect()
    }

    /// [`Scale::to_args`] and our buffer, for our child.
    fn our_args(self) -> Vec<String> {
        let mut args = self.to_args();
        args.extend(["--buffer".to_string(), self.buffer_name().to_string()]);
        args
    }

    fn buffer_name(self) -> &'static str {
        match self.buffer {
            BufferKind::Full => "full",
            BufferKind::Reservoir => "reservoir",
        }
    }

    /// Our agent's transition memory, computed from the shapes: with the
    /// full buffer (T' + 1) states per chain (x_T' down to x_0, each stored
    /// once); with the reservoir x_{t+1}, x_t and x_0 of n_generator x
    /// minibatch transitions.
    fn analytic_buffer_bytes(self) -> usize {
        match self.buffer {
            BufferKind::Full => (self.steps + 1) * self.n_critic * self.chains * STATE_BYTES,
            BufferKind::Reservoir => 3 * self.n_generator * self.chains * STATE_BYTES,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scale = Scale::from_args(&args);
    if args.iter().any(|a| a == "--child") {
        child(scale);
    } else if args.iter().any(|a| a == "--memory-vs-steps") {
        memory_vs_steps(&args[0], scale);
    } else {
        compare(&args[0], scale, support::arg(&args, "--runs", 3));
    }
}

/// The crate root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The benchmarked experiment with `steps` sampler steps, `chains` chains
/// per critic step (and per generator minibatch), `n_critic` and
/// `n_generator` set.
fn experiment(scale: Scale) -> Experiment {
    let path = root().join(EXPERIMENT);
    let mut exp = Experiment::load(&path).expect("the CIFAR-10 experiment loads");
    match &mut exp.env.sampler {
        SamplerConfig::FastDpm(fast) => fast.steps = scale.steps,
        other => panic!("{EXPERIMENT} samples with FastDpm, found {other:?}"),
    }
    let Task::FineTune(task) = &mut exp.task else {
        panic!("{EXPERIMENT} is a fine-tuning task");
    };
    task.batch = scale.chains;
    task.n_critic = scale.n_critic;
    task.generator.n_generator = scale.n_generator;
    exp
}

/// Runs the comparison: `runs` rounds per implementation, taking turns.
fn compare(exe: &str, scale: Scale, runs: usize) {
    let coefficients = write_coefficients(scale.steps);
    let python = root().join(".venv/bin/python");
    let script = root().join("benches/sft_pg_round.py");
    let mut ours = Command::new(exe);
    ours.arg("--child").args(scale.our_args());
    let mut theirs = Command::new(&python);
    theirs
        .arg(&script)
        .args(scale.to_args())
        .arg("--coefficients")
        .arg(&coefficients);
    let mut implementations = [
        ("shortcut (Rust, tch)", ours, Vec::new()),
        ("PyTorch + diffusers", theirs, Vec::new()),
    ];
    for _ in 0..runs {
        for (name, cmd, results) in implementations.iter_mut() {
            let json = if scale.cuda {
                let (mut json, gpu) = support::run_child_watching_gpu(cmd);
                json["gpu_peak_mib"] = gpu.map_or(serde_json::Value::Null, serde_json::Value::from);
                json
            } else {
                support::run_child(cmd)
            };
            eprintln!("{name}: {json}");
            results.push(json);
        }
    }
    let medians: Vec<serde_json::Value> = implementations
        .iter_mut()
        .map(|(_, _, results)| {
            results.sort_by(|a, b| {
                a["round_s"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["round_s"].as_f64().unwrap())
            });
            results[results.len() / 2].clone()
        })
        .collect();
    let theirs = medians[1]["round_s"].as_f64().unwrap();
    println!(
        "device {}, chains {}, T' {}, n_critic {}, n_generator {} (minibatch {}), threads {}, our buffer {}, median of {runs} runs",
        scale.device_name(),
        scale.chains,
        scale.steps,
        scale.n_critic,
        scale.n_generator,
        scale.chains,
        scale.threads,
        scale.buffer_name()
    );
    println!("| implementation | rollouts (s) | rollout images / s | critic+baseline steps (s) | generator steps (s) | round (s) | peak RSS (MiB) | peak GPU memory (MiB, nvidia-smi) | buffer (MiB) | speed-up |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for ((name, _, _), m) in implementations.iter().zip(&medians) {
        let f = |k: &str| m[k].as_f64().unwrap();
        let gpu = m["gpu_peak_mib"]
            .as_f64()
            .map_or("-".to_string(), |g| format!("{g:.0}"));
        println!(
            "| {name} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.0} | {gpu} | {:.1} | {:.2}x |",
            f("rollout_s"),
            (scale.n_critic * scale.chains) as f64 / f("rollout_s"),
            f("critic_s"),
            f("generator_s"),
            f("round_s"),
            f("peak_rss_mib"),
            f("buffer_bytes") / 1048576.0,
            theirs / f("round_s")
        );
    }
}

/// Our round at T' = 10 and T' = 100: peak RSS and the buffer's bytes.
fn memory_vs_steps(exe: &str, scale: Scale) {
    println!(
        "shortcut (Rust, tch): chains {}, n_critic {}, n_generator {}, threads {}, buffer {}",
        scale.chains,
        scale.n_critic,
        scale.n_generator,
        scale.threads,
        scale.buffer_name()
    );
    println!("| T' | round (s) | peak RSS (MiB) | buffer, measured (MiB) | this buffer in the full config (128 chains), from shapes (MiB) |");
    println!("|---|---|---|---|---|");
    for steps in [10, 100] {
        let scale = Scale { steps, ..scale };
        let json = support::run_child(Command::new(exe).arg("--child").args(scale.our_args()));
        eprintln!("{json}");
        let full = Scale {
            chains: 128,
            n_critic: 5,
            ..scale
        };
        println!(
            "| {steps} | {:.1} | {:.0} | {:.2} | {:.1} |",
            json["round_s"].as_f64().unwrap(),
            json["peak_rss_mib"].as_f64().unwrap(),
            json["buffer_bytes"].as_f64().unwrap() / 1048576.0,
            full.analytic_buffer_bytes() as f64 / 1048576.0
        );
    }
}

/// Writes the sampler's per-step coefficients at T' = `steps` (index 0 is
/// sampler step 1) for the Python side; returns the file.
fn write_coefficients(steps: usize) -> PathBuf {
    let scale = Scale {
        chains: 1,
        steps,
        n_critic: 1,
        n_generator: 1,
        threads: 1,
        buffer: BufferKind::Full,
        cuda: false,
    };
    let coefs = schedule(&experiment(scale))
        .expect("the sampler builds")
        .coefficients(Device::Cpu);
    let list = |t: &Tensor| Vec::<f64>::try_from(&t.to_kind(Kind::Double)).unwrap();
    let json = serde_json::json!({
        "eps_scale": list(&coefs.eps_scale),
        "x_scale": list(&coefs.x_scale),
        "sigma": list(&coefs.sigma),
        "log_prob_sigma": list(&coefs.log_prob_sigma),
        "network_times": list(&coefs.network_times),
    });
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sft_pg_round_coefficients_{steps}.json"));
    std::fs::write(&path, json.to_string()).expect("the coefficients are written");
    path
}

/// Waits for the device's queued work, so that clocks read on the host
/// measure it (nothing to wait for on the CPU).
fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// What the timing wrapper records, shared with the benchmark.
#[derive(Debug, Default)]
struct Probe {
    /// Seconds spent in rollouts (first action to the last observation of
    /// each batch of chains, the terminal reward included).
    rollout_s: f64,
    /// When the rollout in progress started.
    started: Option<Instant>,
    /// The buffer's bytes after the last finished rollout.
    buffer_bytes: usize,
    /// Transitions in the buffer after the last finished rollout.
    transitions: i64,
}

/// The SFT-PG agent, unchanged, with its rollouts timed.
struct Timed {
    inner: Reinforce,
    probe: Rc<RefCell<Probe>>,
}

impl Agent<DiffusionEnv> for Timed {
    fn act(&mut self, obs: &ChainState) -> Result<Tensor, AgentError> {
        if self.probe.borrow().started.is_none() {
            // The critic step before it may still run on the device.
            synchronize(obs.x.device());
            self.probe.borrow_mut().started = Some(Instant::now());
        }
        Agent::<DiffusionEnv>::act(&mut self.inner, obs)
    }

    fn observe(&mut self, obs: &ChainState, action: &Tensor, step: &Step<ChainState>) {
        Agent::<DiffusionEnv>::observe(&mut self.inner, obs, action, step);
        if step.all_ended() {
            synchronize(action.device());
            let mut probe = self.probe.borrow_mut();
            if let Some(start) = probe.started.take() {
                probe.rollout_s += start.elapsed().as_secs_f64();
            }
            probe.buffer_bytes = self.inner.buffer_bytes();
            probe.transitions = self.inner.buffered();
        }
    }
}

impl Learn for Timed {
    fn update(&mut self, critics: &Critics<'_>) -> Result<UpdateStats, AgentError> {
        self.inner.update(critics)
    }
}

impl FineTuneAgent for Timed {
    fn generator(&self) -> &Generator {
        self.inner.generator()
    }
    fn generator_mut(&mut self) -> &mut Generator {
        self.inner.generator_mut()
    }
    fn uses_baseline(&self) -> bool {
        self.inner.uses_baseline()
    }
}

/// Times one round at `scale` and prints one JSON line.
fn child(scale: Scale) {
    shortcut::runner::retain_freed_memory();
    tch::set_num_threads(scale.threads as i32);
    tch::manual_seed(0);
    let device = scale.device();
    let exp = experiment(scale);
    let Task::FineTune(task) = &exp.task else {
        unreachable!()
    };
    let AgentConfig::Reinforce(mut reinforce) = task.agent else {
        panic!("{EXPERIMENT} fine-tunes with Reinforce (SFT-PG)");
    };
    reinforce.buffer = scale.buffer;
    let shape = exp.data.set.element_shape();
    let batch = scale.chains as i64;
    // The U-Net policy, as `rl-run` builds it (random weights here).
    let mut policy = build_policy(&exp, device).expect("the policy builds");
    policy.set_act_chunk(task.rollout_chunk.map(|c| c as i64));
    let params: i64 = policy
        .var_store()
        .trainable_variables()
        .iter()
        .map(|v| v.numel() as i64)
        .sum();
    let agent = Reinforce::new(
        reinforce,
        Generator::new(task.generator, policy).expect("the generator builds"),
        batch,
    );
    // The agent, wrapped to time its rollouts and read its buffer.
    let probe = Rc::new(RefCell::new(Probe::default()));
    let timed = Box::new(Timed {
        inner: agent,
        probe: Rc::clone(&probe),
    });
    let schedule = schedule(&exp).expect("the sampler builds");
    let critic = AdversarialCritic::new(task.critic.clone(), &shape, schedule.len() as i64, device)
        .expect("the critic builds");
    let env = DiffusionEnv::new(schedule, &shape, batch, device).expect("the environment builds");
    let mut sft = SftPg::new(env, timed, critic, task.n_critic);
    // Data batches in [-1, 1], as the CIFAR-10 loader gives (their values do
    // not change the speed).
    let mut real_shape = vec![batch];
    real_shape.extend(&shape);
    let real = |_| Tensor::rand(real_shape.as_slice(), (Kind::Float, device)) * 2.0 - 1.0;

    synchronize(device);
    let start = Instant::now();
    sft.critic_steps(real).expect("the critic steps run");
    synchronize(device);
    let critic_steps_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    sft.generator_update().expect("the generator update runs");
    synchronize(device);
    let generator_s = start.elapsed().as_secs_f64();
    let probe = probe.borrow();
    println!(
        "{}",
        serde_json::json!({
            "impl": "shortcut",
            "chains": scale.chains,
            "steps": scale.steps,
            "n_critic": scale.n_critic,
            "n_generator": scale.n_generator,
            "threads": scale.threads,
            "device": scale.device_name(),
            "unet_params": params,
            "rollout_s": probe.rollout_s,
            "critic_s": critic_steps_s - probe.rollout_s,
            "generator_s": generator_s,
            "round_s": critic_steps_s + generator_s,
            "peak_rss_mib": support::peak_rss_mib(),
            "buffer_bytes": probe.buffer_bytes,
            "buffer_transitions": probe.transitions,
            "buffer_bytes_from_shapes": scale.analytic_buffer_bytes(),
        })
    );
}
