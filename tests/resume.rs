//! A run killed mid-way (SIGKILL) and resumed at once, before the dead
//! process is even reaped, ends exactly where an uninterrupted run with the
//! same seed ends (weights, optimiser moments and RNG included).

mod common;

use common::{
    assert_same_fine_tuning_state, kill_after_epochs, rl_run, run_ok, temp_dir, tiny_finetune,
    tiny_pretrain,
};

#[test]
fn killed_and_resumed_equals_uninterrupted() {
    const EPOCHS: usize = 14;
    let dir = temp_dir("resume");
    let mut finals = Vec::new();
    for (label, kill) in [("straight", false), ("killed", true)] {
        let runs = dir.join(label);
        std::fs::create_dir_all(&runs).unwrap();
        std::fs::write(runs.join("pre.ron"), tiny_pretrain(&runs, "pre", 4, 3)).unwrap();
        std::fs::write(
            runs.join("fine.ron"),
            tiny_finetune(&runs, "fine", "pre.ron", EPOCHS),
        )
        .unwrap();
        let fine = runs.join("fine.ron");
        if kill {
            let mut child = rl_run()
                .arg(&fine)
                .args(["--quiet", "--no-table"])
                .spawn()
                .unwrap();
            // SIGKILL after epoch 3, and no wait: the dead trainer is not
            // reaped (a zombie whose process id still exists) while the next
            // commands run.
            kill_after_epochs(&mut child, &runs.join("fine/checkpoint/state.json"), 3);
            // Without --resume the unfinished run is not silently overwritten;
            // the refusal is about the checkpoint, not about a live trainer.
            let refused = rl_run()
                .arg(&fine)
                .args(["--quiet", "--no-table"])
                .output()
                .unwrap();
            assert!(!refused.status.success());
            let message = String::from_utf8_lossy(&refused.stderr);
            assert!(
                message.contains("--resume") && !message.contains("is training"),
                "{message}"
            );
            let resumed = run_ok(
                rl_run()
                    .arg(&fine)
                    .args(["--quiet", "--no-table", "--resume"]),
            );
            let message = String::from_utf8_lossy(&resumed.stderr);
            let after: usize = message
                .split("resuming fine after epoch ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no resume message: {message}"));
            assert!((3..EPOCHS).contains(&after), "resumed after epoch {after}");
            child.wait().unwrap();
        } else {
            run_ok(rl_run().arg(&fine).args(["--quiet", "--no-table"]));
        }
        finals.push(runs.join("fine/final"));
    }
    assert_same_fine_tuning_state(&finals[0], &finals[1]);
}

/// A pretraining run with a moving average of its weights, stopped after 3
/// epochs and resumed to 6, ends bit-identical to a straight 6-epoch run:
/// the average, the trained weights and the optimiser all travel in the
/// checkpoint.
#[test]
fn a_weight_average_resumes_exactly() {
    let dir = temp_dir("resume_ema");
    let with_average = |runs: &std::path::Path, epochs| {
        tiny_pretrain(runs, "pre", 4, epochs)
            .replace("grad_clip: 1.0)", "grad_clip: 1.0, ema: 0.9)")
    };
    let straight = dir.join("straight");
    std::fs::create_dir_all(&straight).unwrap();
    std::fs::write(straight.join("pre.ron"), with_average(&straight, 6)).unwrap();
    run_ok(
        rl_run()
            .arg(straight.join("pre.ron"))
            .args(["--quiet", "--no-table"]),
    );

    let split = dir.join("split");
    std::fs::create_dir_all(&split).unwrap();
    std::fs::write(split.join("pre.ron"), with_average(&split, 3)).unwrap();
    run_ok(
        rl_run()
            .arg(split.join("pre.ron"))
            .args(["--quiet", "--no-table"]),
    );
    std::fs::remove_dir_all(split.join("pre/final")).unwrap();
    std::fs::write(split.join("pre.ron"), with_average(&split, 6)).unwrap();
    let resumed =
        run_ok(
            rl_run()
                .arg(split.join("pre.ron"))
                .args(["--quiet", "--no-table", "--resume"]),
        );
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming pre after epoch 3"));
    for file in ["generator", "generator-trained", "optim-generator"] {
        let a = std::fs::read(straight.join(format!("pre/final/{file}.safetensors"))).unwrap();
        let b = std::fs::read(split.join(format!("pre/final/{file}.safetensors"))).unwrap();
        assert!(
            a == b,
            "{file} differs between the straight and the resumed run"
        );
    }
}
