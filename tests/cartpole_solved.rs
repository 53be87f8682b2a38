//! The agents that fine-tune diffusion samplers solve CartPole-v1 through
//! the same traits: both shipped control files reach gymnasium's threshold
//! (mean return 475 over 100 consecutive episodes), and leave their curves
//! (read back by the real `tensorboard` package and as CSV) and weights.

mod common;

use std::path::Path;

use common::{python, rl_run, run_ok, temp_dir};

/// Runs the shipped control file `name` with its run folder under `runs`;
/// returns stdout.
fn run_shipped(name: &str, runs: &Path, copy: &str) -> String {
    let text = std::fs::read_to_string(format!("experiments/{name}.ron")).unwrap();
    let end = text.rfind(')').unwrap();
    let edited = format!(
        "{}    dir: {:?},\n)\n",
        &text[..end],
        runs.display().to_string()
    );
    let parent = runs.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let file = parent.join(format!("{copy}.ron"));
    std::fs::write(&file, edited).unwrap();
    let out = run_ok(rl_run().arg(&file).arg("--quiet"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows of a run's returns.csv: (update, episodes, window mean).
fn returns(run: &Path) -> Vec<(usize, usize, f64)> {
    std::fs::read_to_string(run.join("returns.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (
                cells[0].parse().unwrap(),
                cells[1].parse().unwrap(),
                cells[4].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn reinforce_and_ppo_solve_cartpole_and_log_their_curves() {
    let dir = temp_dir("cartpole_solved");
    let runs = dir.join("runs");
    for name in ["cartpole_reinforce", "cartpole_ppo"] {
        let stdout = run_shipped(name, &runs, name);
        assert!(stdout.starts_with("solved at batch"), "{name}: {stdout}");
        let run = runs.join(name);
        let rows = returns(&run);
        let (batch, episodes, window) = *rows.last().unwrap();
        assert!(window >= 475.0, "{name}: {window}");
        assert!(episodes >= 100 && batch == rows.len(), "{rows:?}");
        // Before the end, the threshold was not met over a full window.
        assert!(rows[..rows.len() - 1]
            .iter()
            .all(|&(_, played, mean)| played < 100 || mean < 475.0));
        // The first batch is far from solved: the curve is a learning curve.
        assert!(rows[0].2 < 100.0, "{name}: {:?}", rows[0]);
        assert!(run.join("returns.png").is_file());

        let events = run_ok(python().arg("tests/python/read_events.py").arg(&run));
        let json: serde_json::Value =
            serde_json::from_str(&String::from_utf8_lossy(&events.stdout)).unwrap();
        // Every batch is logged; every batch but the one that solved the
        // task is followed by an update and a baseline fit.
        for (tag, batches) in [
            ("rollout/return", rows.len()),
            ("rollout/return_window", rows.len()),
            ("baseline/loss", rows.len() - 1),
            ("generator/loss", rows.len() - 1),
            ("generator/advantage_std", rows.len() - 1),
        ] {
            let series = json["scalars"][tag]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no scalar {tag}"));
            assert_eq!(series.len(), batches, "{name}: {tag}");
        }
        let last = json["scalars"]["rollout/return_window"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()[1]
            .as_f64()
            .unwrap();
        assert!((last - window).abs() < 1e-3 * window, "{last} vs {window}");
        if name == "cartpole_ppo" {
            assert!(json["scalars"]["generator/clip_fraction"].is_array());
        }

        // The final policy loads: 4 observations -> 64 -> 64 -> 2 logits.
        let weights = tch::Tensor::read_safetensors(run.join("final/policy.safetensors")).unwrap();
        let shape = |key: &str| {
            weights
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key} in {weights:?}"))
                .1
                .size()
        };
        assert_eq!(shape("lin0.weight"), [64, 4]);
        assert_eq!(shape("lin2.weight"), [2, 64]);
    }

    // A finished run is reported again, not retrained; --retrain keeps it
    // aside and trains afresh.
    let file = dir.join("cartpole_reinforce.ron");
    let first = run_ok(rl_run().arg(&file).arg("--quiet"));
    assert!(String::from_utf8_lossy(&first.stderr).contains("already finished"));
    let reported = String::from_utf8_lossy(&first.stdout).into_owned();
    let retrained = run_ok(rl_run().arg(&file).arg("--quiet").arg("--retrain"));
    assert!(String::from_utf8_lossy(&retrained.stderr).contains("kept the previous run"));
    // The same seed again: the same batch and episodes (the seconds differ).
    let without_time = |out: &str| {
        out.lines()
            .next()
            .unwrap()
            .rsplit_once(", ")
            .unwrap()
            .0
            .to_string()
    };
    assert_eq!(
        without_time(&String::from_utf8_lossy(&retrained.stdout)),
        without_time(&reported)
    );
    let kept = std::fs::read_dir(&runs)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("cartpole_reinforce.")
        })
        .count();
    assert_eq!(kept, 1, "the previous run is kept beside the new one");

    // --set changes a control file's fields for one run (here another seed,
    // under another name); a finished run trained otherwise is reported
    // with a warning; a bad value names its field.
    let seeded = run_ok(rl_run().arg(&file).arg("--quiet").args([
        "--set",
        "name=cartpole_seed1",
        "--set",
        "seed=1",
    ]));
    assert!(String::from_utf8_lossy(&seeded.stdout).starts_with("solved at batch"));
    let stored = std::fs::read_to_string(runs.join("cartpole_seed1/final/experiment.ron")).unwrap();
    assert!(stored.contains("seed: 1,"), "{stored}");
    assert_ne!(
        returns(&runs.join("cartpole_seed1")),
        returns(&runs.join("cartpole_reinforce"))
    );
    let other = run_ok(rl_run().arg(&file).arg("--quiet").args(["--set", "seed=2"]));
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("trained with other settings"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let bad = rl_run()
        .arg(&file)
        .args(["--set", "updates=0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("updates"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // The seed fixes the run: the same file again gives the same curve.
    let again = run_shipped(
        "cartpole_reinforce",
        &dir.join("again").join("runs"),
        "again",
    );
    assert!(again.starts_with("solved at batch"));
    assert_eq!(
        returns(&runs.join("cartpole_reinforce")),
        returns(&dir.join("again/runs/cartpole_reinforce"))
    );
}
