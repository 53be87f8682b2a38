//! The user's command, `rl-run experiments/sft_pg_cifar.ron`, on the CPU in
//! a few seconds: the shipped file with `--set` pointing it at synthetic
//! CIFAR-10 binary batches and a tiny diffusers U-Net of CIFAR-10's shape,
//! and shrinking the run. It trains a few rounds, logs scalars and image
//! grids that the `tensorboard` package reads back, and a run killed after
//! its first epoch and resumed ends bit-identical to an uninterrupted one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_same_fine_tuning_state, kill_after_epochs, python, rl_run, run_ok, temp_dir};

const EPOCHS: usize = 3;

/// CIFAR-10's binary batches (label byte + 3 x 32 x 32 pixels per record),
/// `records` random images in each of the five training files and the test file.
fn synthetic_cifar10(dir: &Path, records: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 12345u64;
    let mut byte = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u8
    };
    let files = (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .chain(["test_batch.bin".to_string()]);
    for name in files {
        let mut bytes = Vec::with_capacity(records * 3073);
        for _ in 0..records {
            bytes.push(byte() % 10);
            bytes.extend((0..3072).map(|_| byte()));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The shipped CIFAR-10 experiment, pointed at `data` and `model` and
/// shrunk by `--set`: the tiny U-Net, 32 training images, 8 chains per
/// critic step, 2 critic steps and 2 generator steps per round, small conv
/// critic and baseline, an evaluation every epoch.
fn sft_pg_cifar(data: &Path, model: &Path, runs: &Path) -> Command {
    let mut cmd = rl_run();
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/sft_pg_cifar.ron"));
    let sets = [
        format!("data.set.dir={}", data.display()),
        format!("task.init={}", model.display()),
        format!("record.dir={}", runs.display()),
        "device=Cpu".into(),
        "threads=1".into(),
        "data.n=Some(32)".into(),
        "model.channels=16".into(),
        "model.channel_mult=[1, 2]".into(),
        "model.res_blocks=1".into(),
        "model.norm_groups=8".into(),
        format!("task.epochs={EPOCHS}"),
        "task.batch=8".into(),
        "task.n_critic=2".into(),
        "task.generator.n_generator=2".into(),
        "task.critic.network=Conv(channels: [8, 16, 32])".into(),
        "task.critic.baseline_hidden=Some([32, 16])".into(),
        "eval=(every: 1, n: 16, exact_n: 16, projections: 10, repeats: 1, chunk: 16)".into(),
        "record.checkpoint_every=1".into(),
    ];
    for set in sets {
        cmd.arg("--set").arg(set);
    }
    cmd.args(["--quiet", "--no-table"]);
    cmd
}

#[test]
fn sft_pg_cifar_runs_logs_and_resumes_bit_identically() {
    let dir = temp_dir("cifar_finetune");
    let data = dir.join("cifar-10-batches-bin");
    synthetic_cifar10(&data, 8);
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/make_unets.py"))
            .arg(&dir)
            .arg("tiny_cifar"),
    );
    let model = dir.join("tiny_cifar");

    let straight = dir.join("straight");
    run_ok(&mut sft_pg_cifar(&data, &model, &straight));
    let run = straight.join("sft_pg_cifar");
    let stored = std::fs::read_to_string(run.join("final/experiment.ron")).unwrap();
    assert!(
        stored.contains(&data.display().to_string()) && stored.contains("channels: 16,"),
        "the overrides are stored with the run:\n{stored}"
    );

    // TensorBoard reads the scalars of every epoch and the image grids of
    // every evaluation (the start at step 0, then after each epoch).
    let events = run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_events.py"))
            .arg(&run),
    );
    let json: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    let rounds_per_epoch = 32 / (8 * 2);
    for tag in [
        "critic/gap",
        "critic/r_b",
        "generator/loss",
        "rollout/return",
    ] {
        let points = json["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag}"));
        assert_eq!(points.len(), EPOCHS, "{tag}: {points:?}");
        let last_step = points.last().unwrap()[0].as_u64().unwrap();
        assert_eq!(last_step as usize, EPOCHS * rounds_per_epoch * 2, "{tag}");
        assert!(
            points.iter().all(|p| p[1].as_f64().unwrap().is_finite()),
            "{tag}"
        );
    }
    let w2 = json["scalars"]["eval/sliced_w2"].as_array().unwrap();
    assert_eq!(w2.len(), EPOCHS + 1, "the start and every epoch: {w2:?}");
    for tag in ["eval/samples", "eval/paths"] {
        let images = json["images"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag}"));
        assert_eq!(images.len(), EPOCHS + 1, "{tag}");
        assert!(
            images.iter().all(|i| i["png_ok"] == true),
            "{tag}: {images:?}"
        );
    }
    // The paths grid: 8 chains, x_T and every one of the 10 steps, the
    // 32-pixel images drawn at 64 pixels with 1-pixel lines.
    let paths = &json["images"]["eval/paths"][0];
    assert_eq!(
        (paths["width"].as_u64(), paths["height"].as_u64()),
        (Some(11 * 65 + 1), Some(8 * 65 + 1))
    );

    // Killed after its first epoch, resumed: the same weights, optimiser
    // moments and critic as the uninterrupted run.
    let killed = dir.join("killed");
    let mut child = sft_pg_cifar(&data, &model, &killed).spawn().unwrap();
    kill_after_epochs(
        &mut child,
        &killed.join("sft_pg_cifar/checkpoint/state.json"),
        1,
    );
    child.wait().unwrap();
    let resumed = run_ok(sft_pg_cifar(&data, &model, &killed).arg("--resume"));
    let message = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        message.contains("resuming sft_pg_cifar after epoch"),
        "{message}"
    );
    let finals: Vec<PathBuf> = [&straight, &killed]
        .iter()
        .map(|r| r.join("sft_pg_cifar/final"))
        .collect();
    assert_same_fine_tuning_state(&finals[0], &finals[1]);
}
