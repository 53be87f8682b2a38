//! Progressive distillation runs (`task: Distill`) of a tiny swiss-roll
//! model: the student's 2 steps come closer to its 8-step teacher than
//! the undistilled 2-step DDIM; a run killed by SIGKILL resumes with
//! `--resume` to the uninterrupted run's bytes (cuts at and within a round
//! boundary, deterministic, are `src/runner/distill.rs`'s unit test); the cost
//! counted is the network evaluations training made (3 per image per
//! update: two of the teacher, one of the student), evaluations aside.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{kill_after_epochs, rl_run, run_ok, temp_dir, tiny_pretrain};
use tch::Tensor;

const IMAGES: u64 = 1000;
const SCHEDULE: &str = "Sigmoid(start: 1e-5, end: 1e-2)";
const NOISY: &str = "Linear(start: 0.05, end: 0.6)";

fn distill_file(dir: &Path, name: &str) -> String {
    format!(
        r#"Experiment(
    name: "{name}",
    seed: 7,
    data: (set: SwissRoll, n: 1000, seed: 0),
    env: (steps: 8, schedule: {NOISY}, sampler: DdimEven(steps: 2)),
    model: Toy(width: 32),
    task: Distill(
        init: "teacher.ron",
        from_steps: 8,
        epochs_per_round: 4,
        batch: 100,
        optimizer: Adam(lr: 3e-3),
    ),
    eval: (every: 3, n: 500, exact_n: 200, projections: 20, repeats: 2),
    record: (dir: "{dir}", checkpoint_every: 1),
)
"#,
        dir = dir.display()
    )
}

fn state(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap()
}

fn sample(checkpoint: &Path, sampler: Option<&str>, noise: &Path, out: &Path) -> Tensor {
    let mut cmd = rl_run();
    cmd.args(["sample", "--checkpoint"]).arg(checkpoint);
    if let Some(sampler) = sampler {
        cmd.args(["--sampler", sampler]);
    }
    run_ok(cmd.arg("--noise").arg(noise).arg("--out").arg(out));
    Tensor::read_npy(out).unwrap()
}

#[test]
fn distillation_learns_resumes_exactly_and_counts_its_cost() {
    let dir = temp_dir("distill");
    let runs = dir.join("runs");
    // A schedule that noises the data through (abar_8 = 0.03).
    // With a weight average (the sampler evaluations measure is not the
    // network that trains: the cost counts the one that does).
    let teacher = tiny_pretrain(&runs, "teacher", 8, 6)
        .replace(SCHEDULE, NOISY)
        .replace("grad_clip: 1.0)", "grad_clip: 1.0, ema: 0.9)");
    std::fs::write(dir.join("teacher.ron"), teacher).unwrap();
    let file = dir.join("distill.ron");
    std::fs::write(&file, distill_file(&runs, "distill")).unwrap();
    run_ok(rl_run().arg(&file).args(["--quiet", "--no-table"]));
    let done = runs.join("distill/final");
    // The cost: pretraining one evaluation per image, distillation three,
    // per epoch, the evaluations' sampling taken out.
    let pretrained = state(&runs.join("teacher/final"));
    assert_eq!(pretrained["cost"]["network_evaluations"], IMAGES * 6);
    let distilled = state(&done);
    assert_eq!(distilled["epochs_done"], 8);
    assert_eq!(distilled["cost"]["network_evaluations"], 3 * IMAGES * 8);
    assert!(distilled["cost"]["seconds"].as_f64().unwrap() > 0.0);

    // The student's 2 steps against its 8-step teacher, from the same noise.
    let noise = dir.join("noise.npy");
    tch::manual_seed(0);
    Tensor::randn([500, 2], (tch::Kind::Float, tch::Device::Cpu))
        .write_npy(&noise)
        .unwrap();
    let start = runs.join("teacher/final");
    let teacher = sample(
        &start,
        Some("DdimEven(steps: 8)"),
        &noise,
        &dir.join("t.npy"),
    );
    let naive = sample(
        &start,
        Some("DdimEven(steps: 2)"),
        &noise,
        &dir.join("n.npy"),
    );
    let student = sample(&done, None, &noise, &dir.join("s.npy"));
    let gap = |x: &Tensor| {
        (x - &teacher)
            .square()
            .mean(tch::Kind::Float)
            .double_value(&[])
    };
    assert!(
        gap(&student) < 0.5 * gap(&naive),
        "distilled {} vs undistilled {}",
        gap(&student),
        gap(&naive)
    );

    // Killed (after epoch 5 or later), resumed.
    for (name, kill_at) in [("cut", 5)] {
        let file = dir.join(format!("{name}.ron"));
        std::fs::write(&file, distill_file(&runs, name)).unwrap();
        let mut child = rl_run()
            .arg(&file)
            .args(["--quiet", "--no-table"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kill_after_epochs(
            &mut child,
            &runs.join(format!("{name}/checkpoint/state.json")),
            kill_at,
        );
        let _ = child.wait();
        run_ok(
            rl_run()
                .arg(&file)
                .args(["--quiet", "--no-table", "--resume"]),
        );
        let resumed = runs.join(format!("{name}/final"));
        for part in ["generator", "teacher", "optim-generator"] {
            let read = |d: &Path| std::fs::read(d.join(format!("{part}.safetensors"))).unwrap();
            assert!(read(&resumed) == read(&done), "{name}: {part} differs");
        }
        assert_eq!(
            state(&resumed)["cost"]["network_evaluations"],
            3 * IMAGES * 8,
            "{name}: the cost carries over"
        );
    }
}
