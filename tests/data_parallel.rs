//! Data-parallel training on two MPI ranks of this machine (loopback,
//! shared memory; docs/distributed.md): a pretraining run and fine-tuning
//! runs (every agent, both buffers, both critic regularisers) on 2 ranks
//! equal the 1-rank runs of the same global batch and seed, and a killed
//! rank ends the job with the launcher naming it, after which the run
//! resumes on one rank and ends where an uninterrupted run ends; the
//! evaluations' FIDs, measured split across the ranks, equal one rank's.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{epochs_done, rl_run, run_ok, temp_dir, tiny_pretrain};
use tch::Tensor;

/// `mpirun -n <ranks>` of rl-run, as root on loopback, one thread per rank.
fn mpirun(ranks: usize) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "-n",
        &ranks.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .args([
        "--mca",
        "btl",
        "self,vader",
        "--mca",
        "btl_vader_single_copy_mechanism",
        "none",
    ])
    .arg(env!("CARGO_BIN_EXE_rl-run"))
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    .env("OMP_NUM_THREADS", "1");
    cmd
}

fn weights(file: &Path) -> Vec<(String, Tensor)> {
    let mut named = Tensor::read_safetensors(file).unwrap();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// The largest difference between two runs' tensors of `part`, relative to
/// the largest magnitude.
fn largest_difference(a: &Path, b: &Path, part: &str) -> f64 {
    let (a, b) = (weights(&a.join(part)), weights(&b.join(part)));
    assert_eq!(a.len(), b.len());
    let mut worst: f64 = 0.0;
    for ((name_a, ta), (name_b, tb)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        let scale = ta.abs().max().double_value(&[]).max(1e-12);
        worst = worst.max((ta - tb).abs().max().double_value(&[]) / scale);
    }
    worst
}

#[test]
fn pretraining_on_two_ranks_equals_one_rank() {
    let dir = temp_dir("data_parallel_pretrain");
    let (one, two) = (dir.join("one"), dir.join("two"));
    for d in [&one, &two] {
        std::fs::create_dir_all(d).unwrap();
        // 1025 points: the last batch of each epoch has one row, so that rank
        // 1's share of it is empty.
        let text = tiny_pretrain(&d.join("runs"), "dp", 5, 6).replace("n: 1000,", "n: 1025,");
        std::fs::write(d.join("dp.ron"), text).unwrap();
    }
    run_ok(rl_run().arg(one.join("dp.ron")).arg("--quiet"));
    let out = run_ok(mpirun(2).arg(two.join("dp.ron")).arg("--quiet"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("2 ranks over MPI"), "{log}");
    let (final_one, final_two) = (one.join("runs/dp/final"), two.join("runs/dp/final"));
    // 6 epochs of 8 steps; the sum over two ranks adds the halves' float32
    // gradients in another order than one sum over the batch, a rounding
    // difference of about 1e-7 per step that RMSprop's steps carry on
    // (measured: 3e-7 of the largest weight after 48 steps).
    for part in ["generator.safetensors", "optim-generator.safetensors"] {
        let worst = largest_difference(&final_one, &final_two, part);
        eprintln!("{part}: largest relative difference {worst:e}");
        assert!(worst < 1e-5, "{part}: {worst:e}");
    }
    let events: Vec<_> = std::fs::read_dir(two.join("runs/dp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("events.out"))
        .collect();
    assert_eq!(events.len(), 1, "rank 0 alone writes TensorBoard");
    // The cost counts both ranks' network evaluations (rank 1 adds one
    // weightless row per epoch for its empty share).
    let cost = |dir: &Path| {
        let text = std::fs::read_to_string(dir.join("state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        state["cost"]["network_evaluations"].as_u64().unwrap()
    };
    assert_eq!(cost(&final_one), 6 * 1025);
    assert_eq!(cost(&final_two), 6 * 1025 + 6);
    let eval = std::fs::read_to_string(two.join("runs/dp/eval.csv")).unwrap();
    assert_eq!(eval.lines().count(), 1 + 3, "{eval}");
}

/// Fine-tuning runs of 2 epochs (8 rounds of 5 critic steps and 1 to 2
/// generator steps), once for each agent setting, from one pretrained
/// model: `(name, agent, critic regulariser, batch, tolerance)`. The
/// batches are odd, so the ranks' shares differ (32 and 31 chains).
///
/// Tolerance: the ranks add their shares' float32 gradients in another
/// order than one sum over the batch, a rounding difference of about 1e-7
/// per step that the runs carry on (measured: at most 2e-6, in Adam's
/// moments). Under the gradient penalty some critic units get gradients
/// near zero, where Adam's step g / (sqrt(v) + 1e-8) turns rounding into
/// steps of up to lr (measured: 1.2e-4 on one bias, 1e-7 elsewhere); that
/// the penalty's gradients themselves add up exactly is
/// `critic::tests::the_shares_gradients_add_up_to_the_whole_batchs`.
const FINE_TUNINGS: [(&str, &str, &str, usize, f64); 5] = [
    (
        "reinforce",
        "Reinforce(use_baseline: true)",
        "Baseline(lambda: 0.25)",
        63,
        1e-5,
    ),
    (
        "ppo",
        "Ppo(clip: 0.2, epochs: 2, normalize_advantage: true, buffer: Reservoir)",
        "Baseline(lambda: 0.25)",
        63,
        1e-5,
    ),
    ("pathwise", "Pathwise", "Baseline(lambda: 0.25)", 31, 1e-5),
    // 3 chains (2 and 1) and minibatches of 3 of their 12 transitions: a
    // rank often holds none of a minibatch (a weight-0 stand-in). 134
    // rounds instead of 8 carry the rounding further (measured: 9e-7 in
    // the weights, 1.8e-5 in Adam's moments).
    (
        "small_minibatches",
        "Ppo(clip: 0.2, epochs: 2, normalize_advantage: true, buffer: Reservoir)",
        "Baseline(lambda: 0.25)",
        3,
        1e-4,
    ),
    (
        "gradient_penalty",
        "Reinforce(use_baseline: true)",
        "GradientPenalty(eta: 1.0)",
        63,
        1e-3,
    ),
];

#[test]
fn fine_tuning_on_two_ranks_equals_one_rank_for_every_agent() {
    let dir = temp_dir("data_parallel_finetune");
    std::fs::write(
        dir.join("pre.ron"),
        tiny_pretrain(&dir.join("runs"), "pre", 4, 2),
    )
    .unwrap();
    run_ok(rl_run().arg(dir.join("pre.ron")).arg("--quiet"));
    for (name, agent, regularizer, batch, tolerance) in FINE_TUNINGS {
        let mut finals = Vec::new();
        for ranks in [1, 2] {
            let run = format!("{name}{ranks}");
            let text = common::tiny_finetune(&dir.join("runs"), &run, "pre.ron", 2)
                .replace("Reinforce(use_baseline: true)", agent)
                .replace("Baseline(lambda: 0.25)", regularizer)
                .replace("batch: 64,", &format!("batch: {batch},"));
            let file = dir.join(format!("{run}.ron"));
            std::fs::write(&file, text).unwrap();
            let mut cmd = if ranks == 1 { rl_run() } else { mpirun(2) };
            run_ok(cmd.arg(&file).arg("--quiet").env("OMP_NUM_THREADS", "1"));
            finals.push(dir.join(format!("runs/{run}/final")));
        }
        for part in [
            "generator.safetensors",
            "critic.safetensors",
            "baseline.safetensors",
            "optim-generator.safetensors",
        ] {
            let worst = largest_difference(&finals[0], &finals[1], part);
            eprintln!("{name} {part}: largest relative difference {worst:e}");
            assert!(worst < tolerance, "{name} {part}: {worst:e}");
        }
        // The evaluations (before and after) sampled their 500 chains split
        // across the ranks with the noise of one process: the same sliced
        // W2 up to the weights' rounding (another split of the noise would
        // move it by the sampling noise, several per cent).
        let w2 = |final_dir: &Path| -> Vec<f64> {
            let csv =
                std::fs::read_to_string(final_dir.parent().unwrap().join("eval.csv")).unwrap();
            csv.lines()
                .skip(1)
                .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
                .collect()
        };
        let (one, two) = (w2(&finals[0]), w2(&finals[1]));
        assert_eq!(one.len(), 2, "{one:?}");
        assert_eq!(one.len(), two.len());
        for (a, b) in one.iter().zip(&two) {
            assert!(
                (a - b).abs() < 1e-3 * a.abs(),
                "{name}: sliced W2 {one:?} vs {two:?}"
            );
        }
    }
}

/// GPU machines only: fine-tuning on 2 GPUs (NCCL for the gradients)
/// equals 1 GPU. Tolerance 1e-3: CUDA's reductions (atomic adds in
/// cuDNN's backward passes) are not deterministic even on one GPU.
#[test]
fn fine_tuning_on_two_gpus_equals_one_gpu() {
    if tch::Cuda::device_count() < 2 {
        eprintln!(
            "skipped: needs 2 or more GPUs, this machine has {}",
            tch::Cuda::device_count()
        );
        return;
    }
    let dir = temp_dir("data_parallel_gpu");
    std::fs::write(
        dir.join("pre.ron"),
        tiny_pretrain(&dir.join("runs"), "pre", 4, 2),
    )
    .unwrap();
    run_ok(rl_run().arg(dir.join("pre.ron")).arg("--quiet"));
    for (name, agent, regularizer, batch, _) in &FINE_TUNINGS[..2] {
        let mut finals = Vec::new();
        for ranks in [1, 2] {
            let run = format!("gpu_{name}{ranks}");
            let text = common::tiny_finetune(&dir.join("runs"), &run, "pre.ron", 2)
                .replace("    seed: 5,\n", "    seed: 5,\n    device: Cuda(0),\n")
                .replace("Reinforce(use_baseline: true)", agent)
                .replace("Baseline(lambda: 0.25)", regularizer)
                .replace("batch: 64,", &format!("batch: {batch},"));
            let file = dir.join(format!("{run}.ron"));
            std::fs::write(&file, text).unwrap();
            let mut cmd = if ranks == 1 { rl_run() } else { mpirun(2) };
            let out = run_ok(cmd.arg(&file).arg("--quiet"));
            if ranks == 2 {
                let log = String::from_utf8_lossy(&out.stderr);
                assert!(log.contains("with NCCL for GPU tensors"), "{log}");
            }
            finals.push(dir.join(format!("runs/{run}/final")));
        }
        for part in ["generator.safetensors", "critic.safetensors"] {
            let worst = largest_difference(&finals[0], &finals[1], part);
            eprintln!("GPU {name} {part}: largest relative difference {worst:e}");
            assert!(worst < 1e-3, "GPU {name} {part}: {worst:e}");
        }
    }
}

#[test]
fn distillation_on_two_ranks_equals_one_rank() {
    let dir = temp_dir("data_parallel_distill");
    std::fs::write(
        dir.join("pre.ron"),
        tiny_pretrain(&dir.join("runs"), "pre", 4, 2),
    )
    .unwrap();
    run_ok(rl_run().arg(dir.join("pre.ron")).arg("--quiet"));
    let mut finals = Vec::new();
    for ranks in [1, 2] {
        // 1000 points in batches of 63: 15 full batches split 32 + 31 and
        // a last one of 55.
        let text = format!(
            r#"Experiment(
    name: "distill{ranks}",
    seed: 5,
    data: (set: SwissRoll, n: 1000, seed: 0),
    env: (steps: 4, schedule: Sigmoid(start: 1e-5, end: 1e-2), sampler: DdimEven(steps: 2)),
    model: Toy(width: 32),
    task: Distill(init: "pre.ron", from_steps: 4, epochs_per_round: 2, batch: 63),
    eval: (every: 3, n: 500, exact_n: 200, projections: 20, repeats: 2),
    record: (dir: "{}"),
)
"#,
            dir.join("runs").display()
        );
        let file = dir.join(format!("distill{ranks}.ron"));
        std::fs::write(&file, text).unwrap();
        let mut cmd = if ranks == 1 { rl_run() } else { mpirun(2) };
        run_ok(cmd.arg(&file).arg("--quiet").env("OMP_NUM_THREADS", "1"));
        finals.push(dir.join(format!("runs/distill{ranks}/final")));
    }
    for part in ["generator.safetensors", "optim-generator.safetensors"] {
        let worst = largest_difference(&finals[0], &finals[1], part);
        eprintln!("distillation {part}: largest relative difference {worst:e}");
        assert!(worst < 1e-5, "{part}: {worst:e}");
    }
}

/// The FIDs of an image fine-tuning run (the digits classifier's
/// features, 25 samples in chunks of 16: rank 0 holds 8 + 5 of them, rank 1
/// 8 + 4) on 2 ranks equal one rank's: each rank measures its own samples'
/// features and the statistics meet over the ranks.
#[test]
fn image_fids_split_across_two_ranks_equal_one_rank() {
    let dir = temp_dir("data_parallel_fid");
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits");
    assert!(
        digits.join("train-images-idx3-ubyte").is_file(),
        "needs data/digits: run scripts/setup.sh (make test does)"
    );
    run_ok(
        common::python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/make_unets.py"))
            .arg(&dir)
            .arg("no_attention"),
    );
    let mut fids = Vec::new();
    for ranks in [1, 2] {
        let text = format!(
            r#"Experiment(
    name: "fid{ranks}",
    seed: 1,
    data: (set: Digits(dir: "{digits}"), n: 64),
    env: (steps: 1000, schedule: Linear(start: 1e-4, end: 0.02),
          sampler: Ddim(steps: 4, eta: 1.0, spacing: Uniform)),
    model: UNet(in_channels: 1, resolution: 8, channels: 16, channel_mult: [1, 2],
                res_blocks: 2, attention_resolutions: [], mid_attention: false,
                attention_head_dim: None, dropout: 0.0, norm_groups: 8),
    task: FineTune(
        init: "no_attention",
        epochs: 1,
        batch: 16,
        n_critic: 2,
        generator: (optimizer: Adam(lr: 1e-5), log_prob: Mean),
        agent: Reinforce(use_baseline: true),
        critic: (optimizer: Adam(lr: 1e-4), baseline_optimizer: Adam(lr: 1e-4), width: 32),
    ),
    eval: (every: 1, n: 32, exact_n: 32, projections: 20, repeats: 1, chunk: 16,
           fid: (n: 25, features: Classifier(epochs: 1), batch: 10)),
    record: (dir: "{runs}"),
)
"#,
            digits = digits.display(),
            runs = dir.join("runs").display()
        );
        let file = dir.join(format!("fid{ranks}.ron"));
        std::fs::write(&file, text).unwrap();
        // The 1-rank run trains the classifier both runs measure with.
        let mut cmd = if ranks == 1 { rl_run() } else { mpirun(2) };
        run_ok(cmd.arg(&file).arg("--quiet").env("OMP_NUM_THREADS", "1"));
        let csv = std::fs::read_to_string(dir.join(format!("runs/fid{ranks}/eval.csv"))).unwrap();
        let fid: Vec<f64> = csv
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(fid.len(), 2, "{csv}");
        fids.push(fid);
    }
    eprintln!("FIDs on 1 rank {:?}, on 2 ranks {:?}", fids[0], fids[1]);
    // Before fine-tuning the weights are the same: the statistics differ
    // only by float64 rounding in the merge and the features by float32
    // rounding in batches of another make-up. After the epoch the weights
    // differ by the rounding of the gradients' sums (about 1e-6).
    let (one, two) = (&fids[0], &fids[1]);
    assert!(
        (one[0] - two[0]).abs() < 1e-6 * one[0],
        "{one:?} vs {two:?}"
    );
    assert!(
        (one[1] - two[1]).abs() < 1e-3 * one[1],
        "{one:?} vs {two:?}"
    );
}

#[test]
fn files_that_are_not_one_experiment_are_refused_on_several_ranks() {
    let dir = temp_dir("data_parallel_refused");
    std::fs::write(
        dir.join("pre.ron"),
        tiny_pretrain(&dir.join("runs"), "pre", 4, 1),
    )
    .unwrap();
    let ablation =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/ablation_fig4_moons.ron");
    let start = Instant::now();
    let out = mpirun(2).arg(&ablation).arg("--quiet").output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("error: on 2 ranks:")
            && log.contains("ablation_fig4_moons.ron: Ablation files run in one process"),
        "{log}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    assert!(!dir.join("runs/pre").exists(), "nothing was trained");
    // A global batch smaller than the ranks is refused, in the experiment
    // run and in a dependency it would train on the way, by file.
    std::fs::write(
        dir.join("one_row.ron"),
        tiny_pretrain(&dir.join("runs"), "one_row", 4, 1).replace("batch: 128", "batch: 1"),
    )
    .unwrap();
    std::fs::write(
        dir.join("fine.ron"),
        common::tiny_finetune(&dir.join("runs"), "fine", "one_row.ron", 1),
    )
    .unwrap();
    let out = mpirun(2)
        .arg(dir.join("fine.ron"))
        .arg("--quiet")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("one_row.ron: task.batch 1 is the global batch, split across the ranks"),
        "{log}"
    );
    assert!(!dir.join("runs/one_row").exists(), "nothing was trained");
    // A process that the launcher's variables call one of two ranks, started
    // alone, is refused rather than trained as if it were the whole run.
    let out = rl_run()
        .arg(dir.join("pre.ron"))
        .env("OMPI_COMM_WORLD_RANK", "0")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("the launcher's environment says rank 0 of 2"),
        "{log}"
    );
}

/// Ranks whose dependency another process is training wait for it under
/// the evaluation deadline, not a training collective's: with a 2 s
/// collective deadline, rank 1 waits out 6 s of a held lock on the
/// pretraining, then the ranks train it and the fine-tuning.
#[test]
fn ranks_wait_for_a_dependency_another_process_is_training() {
    let dir = temp_dir("data_parallel_dependency_wait");
    std::fs::write(
        dir.join("pre.ron"),
        tiny_pretrain(&dir.join("runs"), "pre", 4, 1),
    )
    .unwrap();
    std::fs::write(
        dir.join("fine.ron"),
        common::tiny_finetune(&dir.join("runs"), "fine", "pre.ron", 1),
    )
    .unwrap();
    // The lock rl-run takes on a run folder it trains (runner::lock).
    std::fs::create_dir_all(dir.join("runs/pre")).unwrap();
    let held = std::fs::File::create(dir.join("runs/pre/train.lock")).unwrap();
    held.try_lock().unwrap();
    let child = mpirun(2)
        .arg(dir.join("fine.ron"))
        .arg("--quiet")
        .env("SHORTCUT_COLLECTIVE_TIMEOUT", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    std::fs::remove_file(dir.join("runs/pre/train.lock")).unwrap();
    held.unlock().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("rl-run: waiting for"), "{log}");
    assert!(dir.join("runs/fine/final").is_dir(), "{log}");
}

/// The pid of `rank` among mpirun's children (from /proc).
fn rank_pid(launcher: u32, rank: usize) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent != Some(launcher) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        if environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_ends_the_run_which_then_resumes() {
    let dir = temp_dir("data_parallel_killed");
    let file = dir.join("dp_killed.ron");
    let text = tiny_pretrain(&dir.join("runs"), "dp_killed", 5, 12)
        .replace("n: 1000, seed: 0", "n: 10000, seed: 0")
        .replace("eval: (every: 2,", "eval: (every: 12,");
    std::fs::write(&file, text).unwrap();
    let state = dir.join("runs/dp_killed/checkpoint/state.json");
    let mut job = mpirun(2)
        .arg(&file)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while epochs_done(&state) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            job.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let victim = rank_pid(job.id(), 1).expect("rank 1 among mpirun's children");
    // SAFETY: kills a process this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let killed = Instant::now();
    let out = job.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{log}");
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "{:?}",
        killed.elapsed()
    );
    assert!(
        log.contains("rank 1"),
        "the launcher names the lost rank: {log}"
    );
    let done = epochs_done(&state);
    assert!((2..12).contains(&done), "{done} epochs in the checkpoint");
    // The checkpoint of 2 ranks resumes on 1 (any world size), and the run
    // ends where an uninterrupted one does.
    let out = run_ok(rl_run().arg(&file).args(["--quiet", "--resume"]));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!("resuming dp_killed after epoch {done}")),
        "{log}"
    );
    assert_eq!(
        epochs_done(&dir.join("runs/dp_killed/final/state.json")),
        12
    );
    let whole = dir.join("whole");
    std::fs::create_dir_all(&whole).unwrap();
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &dir.join("runs").display().to_string(),
        &whole.join("runs").display().to_string(),
    );
    std::fs::write(whole.join("dp_killed.ron"), text).unwrap();
    run_ok(rl_run().arg(whole.join("dp_killed.ron")).arg("--quiet"));
    for part in ["generator.safetensors", "optim-generator.safetensors"] {
        let worst = largest_difference(
            &dir.join("runs/dp_killed/final"),
            &whole.join("runs/dp_killed/final"),
            part,
        );
        assert!(worst < 1e-5, "{part}: {worst:e}");
    }
}
