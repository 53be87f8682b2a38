//! Helpers shared by the integration tests: the `rl-run` binary, the
//! project's Python, and tiny experiments written into temporary folders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `rl-run` binary under test.
pub fn rl_run() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rl-run"))
}

/// The project's Python (with torch, POT, TensorBoard); the tests fail when it is missing.
pub fn python() -> Command {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        path.exists(),
        "needs {}: run scripts/setup.sh (make test does)",
        path.display()
    );
    Command::new(path)
}

/// A fresh, empty folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command and returns its output, panicking with its stderr if it failed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A small pretraining experiment on the swiss roll, recording under `dir`.
pub fn tiny_pretrain(dir: &Path, name: &str, steps: usize, epochs: usize) -> String {
    format!(
        r#"Experiment(
    name: "{name}",
    seed: 3,
    data: (set: SwissRoll, n: 1000, seed: 0),
    env: (steps: {steps}, schedule: Sigmoid(start: 1e-5, end: 1e-2)),
    model: Toy(width: 32),
    task: Pretrain(epochs: {epochs}, batch: 128, optimizer: RmsProp(lr: 1e-3), grad_clip: 1.0),
    eval: (every: 2, n: 500, exact_n: 200, projections: 20, repeats: 2),
    record: (dir: "{dir}", checkpoint_every: 1),
)
"#,
        dir = dir.display()
    )
}

/// A small SFT-PG (B) experiment fine-tuning `init` (a file name in the same folder).
pub fn tiny_finetune(dir: &Path, name: &str, init: &str, epochs: usize) -> String {
    format!(
        r#"Experiment(
    name: "{name}",
    seed: 5,
    data: (set: SwissRoll, n: 1000, seed: 0),
    env: (steps: 4, schedule: Sigmoid(start: 1e-5, end: 1e-2)),
    model: Toy(width: 32),
    task: FineTune(
        init: "{init}",
        epochs: {epochs},
        batch: 64,
        n_critic: 5,
        generator: (optimizer: Adam(lr: 1e-3), kl_weight: 0.0, variance: Fixed),
        agent: Reinforce(use_baseline: true),
        critic: (width: 32, regularizer: Baseline(lambda: 0.25)),
    ),
    eval: (every: 3, n: 500, exact_n: 200, projections: 20, repeats: 2),
    record: (dir: "{dir}", checkpoint_every: 1),
)
"#,
        dir = dir.display()
    )
}

/// Epochs a run's checkpoint holds, from its `state.json` (0 when absent).
pub fn epochs_done(state: &Path) -> usize {
    std::fs::read_to_string(state)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["epochs_done"].as_u64())
        .unwrap_or(0) as usize
}

/// Waits (at most 5 minutes) until the checkpoint `state` of the run that
/// `child` trains holds `epochs` epochs, then kills `child` with SIGKILL
/// without reaping it; panics if the run ends first.
pub fn kill_after_epochs(child: &mut std::process::Child, state: &Path, epochs: usize) {
    let start = std::time::Instant::now();
    while epochs_done(state) < epochs {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
}

/// Asserts that two fine-tuning checkpoints (`final/` folders) hold the
/// same bytes: generator, critic, baseline and their optimisers.
pub fn assert_same_fine_tuning_state(a: &Path, b: &Path) {
    for file in [
        "generator",
        "critic",
        "baseline",
        "optim-generator",
        "optim-critic",
        "optim-baseline",
    ] {
        let read = |dir: &Path| std::fs::read(dir.join(format!("{file}.safetensors"))).unwrap();
        assert!(
            read(a) == read(b),
            "{file} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// Writes into `checkpoint` a run checkpoint of the diffusers U-Net folder
/// `model` (T = 1000, linear betas 1e-4 .. 0.02, 16 x 16 one-channel
/// images, sampled by `sampler`, a RON sampler), as `rl-run sample` reads it.
pub fn checkpoint_of_diffusers_unet(model: &Path, checkpoint: &Path, sampler: &str) {
    use shortcut::checkpoint::{CheckpointWriter, RunState};
    use shortcut::config::{Experiment, ModelConfig};
    use shortcut::weights::{diffusers::DiffusersFolder, import};

    let folder = DiffusersFolder::open(model).unwrap();
    let text = format!(
        r#"Experiment(
    name: "imported",
    data: (set: Mnist(dir: "unused", size: 16)),
    env: (steps: 1000, schedule: Linear(start: 1e-4, end: 0.02), sampler: {sampler}),
    model: UNet(in_channels: 1, resolution: 16),
    task: Pretrain(epochs: 1),
)"#
    );
    let mut exp = Experiment::parse(&text, Path::new("imported.ron")).unwrap();
    exp.model = ModelConfig::UNet(folder.config.clone());
    let policy = shortcut::runner::model::build_policy(&exp, tch::Device::Cpu).unwrap();
    import::load_strict(&folder.weights().unwrap(), policy.var_store()).unwrap();
    CheckpointWriter::new()
        .vars("generator", policy.var_store())
        .write(
            checkpoint,
            &RunState {
                global_step: 1,
                epochs_done: 1,
                ..RunState::start()
            },
            &exp.to_ron(),
        )
        .unwrap();
}
