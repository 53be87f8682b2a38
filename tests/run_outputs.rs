//! A whole (tiny) run, checked through what it leaves behind: TensorBoard
//! events read back by the real `tensorboard` package, the final table,
//! samples written as .npy and read by NumPy, and the eval command.

mod common;

use common::{python, rl_run, run_ok, temp_dir, tiny_finetune, tiny_pretrain};

#[test]
fn a_finetuning_run_logs_samples_and_evaluates() {
    let dir = temp_dir("run_outputs");
    let runs = dir.join("runs");
    std::fs::write(dir.join("pre.ron"), tiny_pretrain(&runs, "pre", 4, 4)).unwrap();
    std::fs::write(
        dir.join("fine.ron"),
        tiny_finetune(&runs, "fine", "pre.ron", 3),
    )
    .unwrap();
    // The pretrained sampler is trained first because the fine-tuning run needs it.
    let out = run_ok(rl_run().arg(dir.join("fine.ron")).arg("--quiet"));
    let table = String::from_utf8_lossy(&out.stdout);
    for row in ["DDPM (pre)", "SFT-PG (B) (fine)", "fresh data (floor)"] {
        assert!(table.contains(row), "missing row {row} in\n{table}");
    }
    // Every row is measured against the training set and a held-out set:
    // six cells, numbers in all four metric columns.
    for line in table
        .lines()
        .filter(|l| l.starts_with("| DDPM") || l.starts_with("| fresh"))
    {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 6, "{line}");
        assert!(cells[2..].iter().all(|c| c.contains(" ± ")), "{line}");
    }
    assert!(table.contains("held-out set"), "{table}");
    assert!(runs.join("pre/final/generator.safetensors").is_file());
    assert!(runs.join("fine/table.md").is_file());

    // TensorBoard reads back what the fine-tuning logged.
    let events = run_ok(
        python()
            .arg("tests/python/read_events.py")
            .arg(runs.join("fine")),
    );
    let json = String::from_utf8_lossy(&events.stdout);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let scalars = &parsed["scalars"];
    for tag in [
        "critic/gap",
        "critic/r_b",
        "generator/loss",
        "generator/advantage_mean",
        "generator/advantage_std",
        "generator/grad_norm",
        "eval/sliced_w2",
        "speed/steps_per_sec",
    ] {
        let series = scalars[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no scalar {tag} in {json}"));
        assert!(!series.is_empty());
        assert!(
            series.iter().all(|p| p[1].as_f64().unwrap().is_finite()),
            "{tag}: {series:?}"
        );
    }
    // Three epochs of ceil(1000 / (64 * 5)) = 4 rounds of 5 critic steps.
    let steps: Vec<i64> = scalars["critic/gap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_i64().unwrap())
        .collect();
    assert_eq!(steps, vec![20, 40, 60]);
    let images = parsed["images"]["eval/samples"]
        .as_array()
        .expect("a samples image");
    assert!(
        images
            .iter()
            .all(|i| i["png_ok"] == true && i["width"] == 1536 && i["height"] == 512),
        "{images:?}"
    );

    // `sample` writes N x D float32 that NumPy reads; the same seed repeats exactly.
    let npy = dir.join("samples.npy");
    let npy2 = dir.join("samples2.npy");
    for file in [&npy, &npy2] {
        run_ok(
            rl_run()
                .args(["sample", "--checkpoint"])
                .arg(runs.join("fine/final"))
                .args(["--n", "321", "--out"])
                .arg(file),
        );
    }
    assert_eq!(std::fs::read(&npy).unwrap(), std::fs::read(&npy2).unwrap());
    let check = run_ok(python().arg("-c").arg(format!(
        "import numpy as np; a = np.load({:?}); print(a.shape, a.dtype, bool(np.isfinite(a).all()), float(np.abs(a).max()) < 5)",
        npy.display().to_string()
    )));
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "(321, 2) float32 True True"
    );

    let eval = run_ok(
        rl_run()
            .args(["eval", "--checkpoint"])
            .arg(runs.join("fine/final")),
    );
    let text = String::from_utf8_lossy(&eval.stdout);
    assert!(
        text.contains("against the training set: sliced W2")
            && text.contains("against the held-out set: sliced W2")
            && !text.contains("NaN"),
        "{text}"
    );

    // A second invocation reuses the finished run instead of training again.
    let again = run_ok(
        rl_run()
            .arg(dir.join("fine.ron"))
            .arg("--quiet")
            .arg("--no-table"),
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("final sampler in"));
    assert!(!String::from_utf8_lossy(&again.stderr).contains("warning"));

    // ... and says so when the experiment file no longer matches what was trained.
    let edited = std::fs::read_to_string(dir.join("fine.ron"))
        .unwrap()
        .replace("epochs: 3", "epochs: 4");
    std::fs::write(dir.join("fine.ron"), edited).unwrap();
    let changed = run_ok(
        rl_run()
            .arg(dir.join("fine.ron"))
            .arg("--quiet")
            .arg("--no-table"),
    );
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(
        stderr.contains("was trained with other settings") && stderr.contains("--retrain"),
        "{stderr}"
    );
}

#[test]
fn a_missing_or_mismatched_checkpoint_is_reported() {
    let dir = temp_dir("bad_checkpoints");
    let out = rl_run()
        .args(["sample", "--checkpoint"])
        .arg(dir.join("nowhere"))
        .args(["--out"])
        .arg(dir.join("x.npy"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no checkpoint here"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Weights of a wider network do not load into a narrower one: the tensor and both shapes are named.
    let runs = dir.join("runs");
    std::fs::write(dir.join("pre.ron"), tiny_pretrain(&runs, "pre", 4, 1)).unwrap();
    run_ok(
        rl_run()
            .arg(dir.join("pre.ron"))
            .arg("--quiet")
            .arg("--no-table"),
    );
    let final_dir = runs.join("pre/final");
    let ron = std::fs::read_to_string(final_dir.join("experiment.ron")).unwrap();
    std::fs::write(
        final_dir.join("experiment.ron"),
        ron.replace("width: 32", "width: 16"),
    )
    .unwrap();
    let out = rl_run()
        .args(["eval", "--checkpoint"])
        .arg(&final_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tensor lin1.embed.weight: expected shape [4, 16], file has [4, 32]"),
        "{stderr}"
    );
}

/// `--set` changes fields of the named experiment for one run: the run
/// trains with them and stores them; a field that does not exist is refused
/// before anything runs.
#[test]
fn set_changes_fields_for_one_run() {
    let dir = temp_dir("set_overrides");
    let runs = dir.join("runs");
    let file = dir.join("pre.ron");
    std::fs::write(&file, tiny_pretrain(&runs, "pre", 4, 6)).unwrap();
    run_ok(rl_run().arg(&file).args([
        "--quiet",
        "--no-table",
        "--set",
        "task.epochs=2",
        "--set",
        "name=shorter",
        "--set",
        "eval.every=1",
    ]));
    assert!(!runs.join("pre").exists());
    let stored = std::fs::read_to_string(runs.join("shorter/final/experiment.ron")).unwrap();
    assert!(stored.contains("epochs: 2,"), "{stored}");
    let csv = std::fs::read_to_string(runs.join("shorter/eval.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "evaluations after epochs 1 and 2:\n{csv}"
    );
    let out = rl_run()
        .arg(&file)
        .args(["--quiet", "--set", "task.epoch=2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--set task.epoch: task has no field `epoch`"),
        "{stderr}"
    );
    assert!(!runs.join("pre").exists());
}

/// Fine-tuning a sampler other than the pretrained run's own: the table
/// measures the pretrained model under both, the second row being where
/// fine-tuning starts.
#[test]
fn the_table_shows_the_start_under_the_runs_own_sampler() {
    let dir = temp_dir("start_row");
    let runs = dir.join("runs");
    std::fs::write(dir.join("pre.ron"), tiny_pretrain(&runs, "pre", 4, 2)).unwrap();
    let fine = tiny_finetune(&runs, "fine", "pre.ron", 1).replace(
        "env: (steps: 4, schedule: Sigmoid(start: 1e-5, end: 1e-2)),",
        "env: (steps: 4, schedule: Sigmoid(start: 1e-5, end: 1e-2), sampler: Ddpm(steps: 2, spacing: Uniform)),",
    );
    assert!(fine.contains("sampler: Ddpm"));
    std::fs::write(dir.join("fine.ron"), fine).unwrap();
    let out = run_ok(rl_run().arg(dir.join("fine.ron")).arg("--quiet"));
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
    assert!(rows[1].starts_with("| DDPM (pre) | 4 |"), "{table}");
    assert!(
        rows[2].starts_with("| start: DDPM, Uniform steps (pre) | 2 |"),
        "{table}"
    );
    assert!(rows[3].starts_with("| SFT-PG (B) (fine) | 2 |"), "{table}");
}
