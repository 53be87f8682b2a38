//! Bad experiment files are refused before any work starts, with the file,
//! the line and the field named.

mod common;

use std::path::Path;

use common::{rl_run, temp_dir, tiny_finetune, tiny_pretrain};
use shortcut::{ConfigError, Experiment};

fn parse(text: &str) -> Result<Experiment, ConfigError> {
    Experiment::parse(text, Path::new("experiments/x.ron"))
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

#[test]
fn the_shipped_experiments_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let (mut count, mut ablations, mut comparisons, mut controls) = (0, 0, 0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ron") {
            let text = std::fs::read_to_string(&path).unwrap();
            if shortcut::config::top_level_name(&text) == Some("Ablation") {
                let (_, _, runs) =
                    shortcut::ablation::Ablation::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(runs.len() >= 9, "{}: {} runs", path.display(), runs.len());
                ablations += 1;
            } else if shortcut::config::top_level_name(&text) == Some("Comparison") {
                let comparison =
                    shortcut::comparison::Comparison::load(&path).unwrap_or_else(|e| panic!("{e}"));
                let model =
                    Experiment::load(&Experiment::resolve_relative(&path, &comparison.model))
                        .unwrap_or_else(|e| panic!("{e}"));
                for sampler in &comparison.samplers {
                    assert!(
                        sampler.steps(model.env.steps) <= model.env.steps,
                        "{}: {sampler:?}",
                        path.display()
                    );
                }
                for tuned in &comparison.fine_tuned {
                    let tuned = Experiment::load(&Experiment::resolve_relative(&path, tuned))
                        .unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(tuned.data.set, model.data.set, "{}", path.display());
                }
                comparisons += 1;
            } else if shortcut::config::top_level_name(&text) == Some("Control") {
                shortcut::control::ControlExperiment::load(&path).unwrap_or_else(|e| panic!("{e}"));
                controls += 1;
            } else {
                Experiment::load(&path).unwrap_or_else(|e| panic!("{e}"));
                count += 1;
            }
        }
    }
    assert!(
        count >= 8,
        "expected the eight Table 1 experiments, found {count}"
    );
    assert!(
        ablations >= 4,
        "expected the four ablations, found {ablations}"
    );
    assert!(
        comparisons >= 1,
        "expected the comparisons, found {comparisons}"
    );
    assert_eq!(controls, 2, "expected the two CartPole files");
}

#[test]
fn unknown_fields_are_named_with_their_line() {
    let good = tiny_pretrain(Path::new("/tmp/x"), "t", 10, 1);
    let bad = good.replace("batch: 128,", "batch: 128, n_critc: 5,");
    let err = parse(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("experiments/x.ron:{}:", line_of(&bad, "n_critc"))),
        "{err}"
    );
    assert!(err.contains("n_critc"), "{err}");
}

#[test]
fn wrong_types_are_named_with_their_line() {
    let good = tiny_pretrain(Path::new("/tmp/x"), "t", 10, 1);
    let bad = good.replace("epochs: 1,", "epochs: \"many\",");
    let err = parse(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("experiments/x.ron:{}:", line_of(&bad, "many"))),
        "{err}"
    );
}

#[test]
fn impossible_values_are_refused_with_file_line_and_field() {
    let pre = tiny_pretrain(Path::new("/tmp/x"), "t", 10, 1);
    let fine = tiny_finetune(Path::new("/tmp/x"), "f", "t.ron", 2);
    let cases = [
        (
            pre.replace("steps: 10", "steps: 0"),
            "env.steps",
            "steps: 0",
        ),
        (
            pre.replace("RmsProp(lr: 1e-3)", "RmsProp(lr: -1e-3)"),
            "task.optimizer.lr",
            "lr: -1e-3",
        ),
        (
            fine.replace("n_critic: 5", "n_critic: 0"),
            "task.n_critic",
            "n_critic: 0",
        ),
        (
            fine.replace("Adam(lr: 1e-3)", "Adam(lr: 0.0)"),
            "task.generator.optimizer.lr",
            "lr: 0.0",
        ),
        (
            fine.replace("kl_weight: 0.0", "kl_weight: -1.0"),
            "task.generator.kl_weight",
            "kl_weight: -1.0",
        ),
        (
            fine.replace("variance: Fixed", "variance: Learned(floor: 0.0)"),
            "task.generator.variance.floor",
            "floor: 0.0",
        ),
        (
            fine.replace("Reinforce(use_baseline: true)", "Ppo(clip: 1.5)"),
            "task.agent.clip",
            "clip: 1.5",
        ),
        (
            fine.replace("lambda: 0.25", "lambda: -2.0"),
            "task.critic.regularizer.lambda",
            "lambda: -2.0",
        ),
        (
            pre.replace("grad_clip: 1.0", "grad_clip: 0.0"),
            "task.grad_clip",
            "grad_clip: 0.0",
        ),
        (
            pre.replace("grad_clip: 1.0)", "grad_clip: 1.0, ema: 1.0)"),
            "task.ema",
            "ema: 1.0",
        ),
        (
            pre.replace("exact_n: 200", "exact_n: 5000"),
            "eval.exact_n",
            "exact_n: 5000",
        ),
        // Each configuration type validates its own fields; the experiment
        // names them from the root.
        (
            pre.replace("start: 1e-5", "start: 1.5"),
            "env.schedule.start",
            "start: 1.5",
        ),
        (
            pre.replace("steps: 10,", "steps: 10, sampler: Ddim(steps: 12),"),
            "env.sampler.steps",
            "steps: 12",
        ),
        (
            pre.replace(
                "steps: 10,",
                "steps: 10, sampler: Ddim(steps: 5, eta: 2.0),",
            ),
            "env.sampler.eta",
            "eta: 2.0",
        ),
        // The toy network takes whole times only: FastDPM VAR (on a linear
        // schedule, which it needs) is refused for it.
        (
            pre.replace(
                "steps: 10, schedule: Sigmoid(start: 1e-5, end: 1e-2)",
                "steps: 10, schedule: Linear(start: 1e-4, end: 2e-2), sampler: FastDpm(steps: 4, kind: Var)",
            ),
            "env.sampler",
            "sampler: FastDpm",
        ),
        (
            pre.replace("Toy(width: 32)", "Toy(width: 0)"),
            "model.width",
            "width: 0",
        ),
        (
            fine.replace("batch: 64", "batch: 0"),
            "task.batch",
            "batch: 0",
        ),
        (
            fine.replace("critic: (width: 32,", "critic: (width: -1,"),
            "task.critic.width",
            "width: -1",
        ),
        (
            fine.replace(
                "critic: (width: 32,",
                "critic: (baseline_optimizer: Adam(lr: -1.0), width: 32,",
            ),
            "task.critic.baseline_optimizer.lr",
            "lr: -1.0",
        ),
        (
            fine.replace("Reinforce(use_baseline: true)", "Ppo(epochs: 0)"),
            "task.agent.epochs",
            "epochs: 0",
        ),
        (
            fine.replace(
                "Reinforce(use_baseline: true)",
                "Ppo(clip: 0.2), generator: (deterministic_step: Pathwise)",
            )
            .replace(
                "generator: (optimizer: Adam(lr: 1e-3), kl_weight: 0.0, variance: Fixed),",
                "",
            ),
            "task.generator.deterministic_step",
            "deterministic_step: Pathwise",
        ),
    ];
    for (text, field, needle) in cases {
        match parse(&text) {
            Err(ConfigError::Invalid {
                file,
                line,
                field: f,
                message,
            }) => {
                assert_eq!(file, Path::new("experiments/x.ron"));
                assert_eq!(f, field, "{message}");
                assert_eq!(line, line_of(&text, needle), "{field}: {message}");
            }
            other => panic!("{field}: expected a validation error, got {other:?}"),
        }
    }
}

#[test]
fn the_cli_refuses_a_bad_file_before_doing_anything() {
    let dir = temp_dir("config_errors_cli");
    let text = tiny_pretrain(&dir.join("runs"), "t", 0, 1);
    let file = dir.join("bad.ron");
    std::fs::write(&file, text).unwrap();
    let out = rl_run().arg(&file).arg("--quiet").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.ron:5: env.steps: must be at least 1, got 0"),
        "{stderr}"
    );
    assert!(
        !dir.join("runs").exists(),
        "nothing may be written for a bad file"
    );
    // Analytic-DPM samples trained models; it cannot be a run's own sampler.
    let text = tiny_pretrain(&dir.join("runs"), "t", 10, 1)
        .replace("steps: 10,", "steps: 10, sampler: AnalyticDpm(steps: 5),");
    std::fs::write(&file, text).unwrap();
    let out = rl_run().arg(&file).arg("--quiet").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "bad.ron:5: env.sampler: Analytic-DPM's variances are estimated from a trained model"
        ),
        "{stderr}"
    );
    assert!(!dir.join("runs/t").exists(), "nothing may be trained");
    // So do the ODE solvers, whose steps are not Markov: named, with why.
    let text = tiny_pretrain(&dir.join("runs"), "t", 10, 1)
        .replace("steps: 10,", "steps: 10, sampler: UniPc(steps: 5),");
    std::fs::write(&file, text).unwrap();
    let out = rl_run().arg(&file).arg("--quiet").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "bad.ron:5: env.sampler: UniPC is an ODE solver whose steps use earlier noise predictions"
        ),
        "{stderr}"
    );
    assert!(!dir.join("runs/t").exists(), "nothing may be trained");
    // A missing file and a file that is not UTF-8: one line each, the cause
    // said once, the line ended.
    let missing = dir.join("missing.ron");
    let out = rl_run().arg(&missing).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: {}: cannot read: {}\n",
            missing.display(),
            std::fs::read(&missing).unwrap_err()
        )
    );
    let latin1 = dir.join("latin1.ron");
    std::fs::write(&latin1, b"Experiment(\n    name: \"caf\xe9\",\n)\n").unwrap();
    let out = rl_run().arg(&latin1).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: {}:2:15: not UTF-8 text (byte 0xe9); save the file as UTF-8\n",
            latin1.display()
        )
    );
}

#[test]
fn a_run_names_every_missing_input_at_once_with_its_fetch_command() {
    let dir = temp_dir("missing_inputs");
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    let data = dir.join("data/cifar-10-batches-bin");
    let file = dir.join("experiments/fine.ron");
    // The init path goes up a folder: it is printed cleaned.
    let text = format!(
        r#"Experiment(
    name: "fine",
    data: (set: Cifar10(dir: "{data}")),
    env: (steps: 1000, schedule: Linear(start: 1e-4, end: 0.02),
          sampler: FastDpm(steps: 10, kind: Var, schedule: Quadratic, kappa: 1.0)),
    model: UNet(in_channels: 3, resolution: 32, channels: 32, channel_mult: [1, 2],
                res_blocks: 1, attention_resolutions: [], norm_groups: 8),
    task: FineTune(init: "../models/ddpm-cifar10-32", epochs: 1, batch: 4,
                   agent: Reinforce(use_baseline: true),
                   critic: (network: Conv(channels: [8, 16, 32]))),
    record: (dir: "{runs}"),
)"#,
        data = data.display(),
        runs = dir.join("runs").display()
    );
    std::fs::write(&file, text).unwrap();
    let out = rl_run()
        .arg(&file)
        .args(["--quiet", "--no-table"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    let models = dir.join("models");
    for part in [
        "2 inputs are missing".to_string(),
        format!("{} (data.set.dir of", data.display()),
        format!("rl-run fetch cifar10 --into {}", dir.join("data").display()),
        format!("{} (task.init of", models.join("ddpm-cifar10-32").display()),
        format!(
            "rl-run fetch google/ddpm-cifar10-32 --into {}",
            models.display()
        ),
    ] {
        assert!(message.contains(&part), "missing {part:?} in {message}");
    }
    assert!(!message.contains(".."), "{message}");
    assert!(!dir.join("runs").exists(), "nothing started");
}

#[test]
fn control_files_name_a_bad_field_with_its_line() {
    let text = std::fs::read_to_string("experiments/cartpole_ppo.ron").unwrap();
    let path = Path::new("experiments/x.ron");
    for (edited, field, needle) in [
        (
            text.replace("discount: 0.99", "discount: 1.5"),
            "policy.discount",
            "discount: 1.5",
        ),
        (
            text.replace("clip: 0.2", "clip: 1.2"),
            "agent.clip",
            "clip: 1.2",
        ),
        (
            text.replace("episodes: 16", "episodes: 0"),
            "env.episodes",
            "episodes: 0",
        ),
        (
            text.replace("steps: 20", "steps: 0"),
            "baseline.steps",
            "steps: 0",
        ),
    ] {
        match shortcut::control::ControlExperiment::parse(&edited, path) {
            Err(ConfigError::Invalid {
                field: f,
                line,
                message,
                ..
            }) => {
                assert_eq!(f, field, "{message}");
                assert_eq!(line, line_of(&edited, needle), "{field}: {message}");
            }
            other => panic!("{field}: expected a validation error, got {other:?}"),
        }
    }
    let typo = text.replace("minibatch: 512", "minibach: 512");
    let err = shortcut::control::ControlExperiment::parse(&typo, path).unwrap_err();
    assert!(err.to_string().contains("minibach"), "{err}");
}
