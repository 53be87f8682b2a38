//! Images end to end on the CPU, tiny: a diffusers U-Net folder is the
//! starting point (`task.init` names the folder) of an SFT-PG run on the
//! 8 x 8 digits with a 4-step DDIM sampler; the run trains, checkpoints,
//! logs image grids, and its table measures the imported model and the
//! fine-tuned one against the training and test images. A model that does
//! not match the folder is refused by name.

mod common;

use std::path::Path;

use common::{python, rl_run, run_ok, temp_dir};

/// The toy critic and baseline (MLPs of width 32).
const MLP_CRITIC: &str = "width: 32";

fn experiment(runs: &Path, digits: &Path, channels: i64, name: &str, critic: &str) -> String {
    format!(
        r#"Experiment(
    name: "{name}",
    seed: 1,
    data: (set: Digits(dir: "{digits}"), n: 64),
    env: (steps: 1000, schedule: Linear(start: 1e-4, end: 0.02),
          sampler: Ddim(steps: 4, eta: 1.0, spacing: Uniform)),
    model: UNet(in_channels: 1, resolution: 8, channels: {channels}, channel_mult: [1, 2],
                res_blocks: 2, attention_resolutions: [], mid_attention: false,
                attention_head_dim: None, dropout: 0.0, norm_groups: 8),
    task: FineTune(
        init: "model",
        epochs: 1,
        batch: 16,
        n_critic: 2,
        generator: (optimizer: Adam(lr: 1e-5), log_prob: Mean),
        agent: Reinforce(use_baseline: true),
        critic: (optimizer: Adam(lr: 1e-4), baseline_optimizer: Adam(lr: 1e-4), {critic}),
    ),
    eval: (every: 1, n: 32, exact_n: 32, projections: 20, repeats: 2, chunk: 16,
           fid: (n: 24, features: Classifier(epochs: 1), batch: 10)),
    record: (dir: "{runs}", checkpoint_every: 1),
)
"#,
        digits = digits.display(),
        runs = runs.display()
    )
}

#[test]
fn an_imported_unet_fine_tunes_on_digits() {
    let dir = temp_dir("image_finetune");
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits");
    assert!(
        digits.join("train-images-idx3-ubyte").is_file(),
        "needs data/digits: run scripts/setup.sh (make test does)"
    );
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/make_unets.py"))
            .arg(&dir)
            .arg("no_attention"),
    );
    std::fs::rename(dir.join("no_attention"), dir.join("model")).unwrap();
    let runs = dir.join("runs");
    std::fs::write(
        dir.join("fine.ron"),
        experiment(&runs, &digits, 16, "fine", MLP_CRITIC),
    )
    .unwrap();
    let out = run_ok(rl_run().arg(dir.join("fine.ron")).arg("--quiet"));
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        "| pretrained (",
        "| SFT-PG (B) (fine) | 4 |",
        "| test images (floor) |",
    ] {
        assert!(table.contains(row), "missing {row} in\n{table}");
    }
    assert!(
        table.contains("against 32 training images and 32 test images"),
        "{table}"
    );
    assert!(runs.join("fine/final/generator.safetensors").is_file());
    // A PNG of the samples before fine-tuning (epoch 0) and after epoch 1.
    for epoch in ["epoch-0000.png", "epoch-0001.png"] {
        let png = std::fs::read(runs.join("fine/samples").join(epoch)).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{epoch}");
    }
    // 8 chains through the 4-step sampler: x_T and the 4 states after it,
    // 64-pixel tiles with 1-pixel lines.
    let paths = std::fs::read(runs.join("fine/samples/paths-epoch-0001.png")).unwrap();
    let be = |i: usize| u32::from_be_bytes([paths[i], paths[i + 1], paths[i + 2], paths[i + 3]]);
    assert_eq!((be(16), be(20)), (5 * 65 + 1, 8 * 65 + 1));
    // TensorBoard holds the image grid of data beside samples.
    let events = run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_events.py"))
            .arg(runs.join("fine")),
    );
    let json: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    let images = json["images"]["eval/samples"]
        .as_array()
        .expect("a samples grid");
    assert!(images.iter().all(|i| i["png_ok"] == true), "{images:?}");
    // FID on the digits classifier's features at each evaluation (before
    // fine-tuning and after epoch 1), in TensorBoard and eval.csv alike.
    let logged = json["scalars"]["eval/classifier_fid"]
        .as_array()
        .expect("classifier FIDs in TensorBoard");
    let csv = std::fs::read_to_string(runs.join("fine/eval.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("epoch,step,sliced_w2,exact_w2,fid"));
    let from_csv: Vec<f64> = lines
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(from_csv.len(), 2, "{csv}");
    for (tb, csv) in logged.iter().zip(&from_csv) {
        let tb = tb[1].as_f64().unwrap();
        assert!(
            *csv > 0.0 && (tb - csv).abs() <= 1e-5 * csv,
            "{tb} vs {csv}"
        );
    }
    assert!(runs
        .join("classifier_digits_1x8x8_digits_1ep/classifier.json")
        .is_file());
    // Samples of the fine-tuned model: N x 1 x 8 x 8 and a PNG grid.
    let npy = dir.join("samples.npy");
    run_ok(
        rl_run()
            .args(["sample", "--n", "10", "--checkpoint"])
            .arg(runs.join("fine/final"))
            .arg("--out")
            .arg(&npy),
    );
    assert_eq!(
        tch::Tensor::read_npy(&npy).unwrap().size(),
        vec![10, 1, 8, 8]
    );
    assert!(dir.join("samples.png").is_file());

    // A comparison whose model is the diffusers folder the run started from.
    std::fs::write(
        dir.join("cmp.ron"),
        r#"Comparison(
    name: "cmp",
    model: "fine.ron",
    samplers: [Ddim(steps: 4, eta: 0.0, spacing: Uniform), AnalyticDpm(steps: 4, mc_samples: 16)],
    fine_tuned: ["fine.ron"],
    n: 16,
    features: Classifier(epochs: 1),
    kid_subsets: 2,
    kid_subset_size: 8,
)"#,
    )
    .unwrap();
    let out = run_ok(rl_run().arg(dir.join("cmp.ron")).arg("--quiet"));
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        "| DDIM eta 0, Uniform steps (pretrained model) | 4 |",
        "| Analytic-DPM, Uniform steps (pretrained model) | 4 |",
        "| SFT-PG (B) (fine) | 4 |",
        "| test images (floor) | - |",
    ] {
        assert!(table.contains(row), "missing {row} in\n{table}");
    }

    // Another width than the folder's model: refused, naming both.
    std::fs::write(
        dir.join("fine.ron"),
        experiment(&runs, &digits, 32, "fine", MLP_CRITIC),
    )
    .unwrap();
    let out = rl_run()
        .arg(dir.join("fine.ron"))
        .args(["--quiet", "--retrain"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("model: the U-Net of"),
        "{stderr}"
    );

    // The authors' image critic (one halving conv at 8 x 8) and a baseline
    // of chosen widths: trained, checkpointed with those layers.
    let conv = "network: Conv(channels: [16]), baseline_hidden: Some([32, 16])";
    std::fs::write(
        dir.join("conv.ron"),
        experiment(&runs, &digits, 16, "conv", conv),
    )
    .unwrap();
    run_ok(
        rl_run()
            .arg(dir.join("conv.ron"))
            .args(["--quiet", "--no-table"]),
    );
    let critic = tch::Tensor::read_safetensors(runs.join("conv/final/critic.safetensors")).unwrap();
    let shapes: std::collections::BTreeMap<String, Vec<i64>> =
        critic.into_iter().map(|(k, v)| (k, v.size())).collect();
    assert_eq!(shapes["conv0.weight"], vec![16, 1, 4, 4], "{shapes:?}");
    assert_eq!(shapes["out.weight"], vec![1, 16, 4, 4], "{shapes:?}");
    let baseline =
        tch::Tensor::read_safetensors(runs.join("conv/final/baseline.safetensors")).unwrap();
    let names: Vec<String> = baseline.into_iter().map(|(k, _)| k).collect();
    assert!(
        names.iter().any(|k| k.starts_with("lin3")) && !names.iter().any(|k| k.starts_with("lin4")),
        "{names:?}"
    );
    // The conv baseline: its halving conv, per-step channel gains over the
    // sampler's 4 steps, and the head `critic.baseline_head` names (for
    // images a plain linear layer unless set, as the authors' baseline's).
    let conv_baseline = "network: Conv(channels: [16]), baseline: Conv(channels: [8])";
    std::fs::write(
        dir.join("convbase.ron"),
        experiment(&runs, &digits, 16, "convbase", conv_baseline),
    )
    .unwrap();
    run_ok(
        rl_run()
            .arg(dir.join("convbase.ron"))
            .args(["--quiet", "--no-table"]),
    );
    let baseline =
        tch::Tensor::read_safetensors(runs.join("convbase/final/baseline.safetensors")).unwrap();
    let shapes: std::collections::BTreeMap<String, Vec<i64>> =
        baseline.into_iter().map(|(k, v)| (k, v.size())).collect();
    assert_eq!(shapes["conv0.weight"], vec![8, 1, 4, 4], "{shapes:?}");
    assert_eq!(shapes["gain0.weight"], vec![4, 8], "{shapes:?}");
    assert_eq!(shapes["out.weight"], vec![1, 8], "{shapes:?}");
    assert!(!shapes.contains_key("out.lin.weight"), "{shapes:?}");
    // Two halvings leave 2 x 2 at 8 x 8: refused before any work, by name.
    let too_deep = "network: Conv(channels: [16, 32])";
    std::fs::write(
        dir.join("deep.ron"),
        experiment(&runs, &digits, 16, "deep", too_deep),
    )
    .unwrap();
    let out = rl_run()
        .arg(dir.join("deep.ron"))
        .arg("--quiet")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("task.critic.network")
            && stderr.contains("use fewer channels entries"),
        "{stderr}"
    );
    assert!(!runs.join("deep").exists());
}

/// `--set data.set.dir=...` on a fine-tuning file points the pretraining run
/// it starts from at the same folder (both read the same data set), so a
/// user with the data elsewhere edits neither file; other overrides stay
/// with the named experiment.
#[test]
fn a_data_folder_set_for_fine_tuning_reaches_its_pretraining_run() {
    let dir = temp_dir("set_reaches_init");
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits");
    let copy = dir.join("my digits");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"] {
        std::fs::copy(digits.join(file), copy.join(file)).unwrap();
    }
    let runs = dir.join("runs");
    let model = "UNet(in_channels: 1, resolution: 8, channels: 16, channel_mult: [1, 2],
                res_blocks: 1, attention_resolutions: [], mid_attention: false,
                attention_head_dim: None, dropout: 0.0, norm_groups: 8)";
    let common = format!(
        r#"seed: 1,
    data: (set: Digits(dir: "not/here"), n: 64),
    env: (steps: 20, schedule: Linear(start: 1e-4, end: 0.2)),
    model: {model},
    eval: (every: 1, n: 32, exact_n: 32, projections: 10, repeats: 1, chunk: 32),
    record: (dir: "{runs}", checkpoint_every: 1),"#,
        runs = runs.display()
    );
    std::fs::write(
        dir.join("pre.ron"),
        format!(
            "Experiment(name: \"pre\", {common}
    task: Pretrain(epochs: 2, batch: 32, optimizer: Adam(lr: 1e-3), grad_clip: 1.0),
)"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("fine.ron"),
        format!(
            "Experiment(name: \"fine\", {common}
    task: FineTune(init: \"pre.ron\", epochs: 2, batch: 16, n_critic: 2,
        generator: (optimizer: Adam(lr: 1e-5), log_prob: Mean),
        agent: Reinforce(use_baseline: true),
        critic: (width: 32, regularizer: Baseline(lambda: 1.0))),
)"
        ),
    )
    .unwrap();
    run_ok(rl_run().arg(dir.join("fine.ron")).args([
        "--quiet",
        "--no-table",
        "--set",
        &format!("data.set.dir={}", copy.display()),
        "--set",
        "task.epochs=1",
    ]));
    // The file's 2 pretraining epochs (task.epochs=1 was for fine-tuning).
    for (run, epochs) in [("pre", 2), ("fine", 1)] {
        let stored = std::fs::read_to_string(runs.join(run).join("final/experiment.ron")).unwrap();
        assert!(
            stored.contains(&copy.display().to_string()),
            "{run} read the folder given on the command line:\n{stored}"
        );
        assert!(stored.contains(&format!("epochs: {epochs},")), "{stored}");
    }
}
