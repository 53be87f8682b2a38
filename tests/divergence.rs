//! A run that diverges stops with a clear error, and what it saved before
//! stays loadable.

mod common;

use common::{rl_run, run_ok, temp_dir, tiny_finetune, tiny_pretrain};

#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    let dir = temp_dir("divergence");
    let runs = dir.join("runs");
    std::fs::write(dir.join("pre.ron"), tiny_pretrain(&runs, "pre", 4, 2)).unwrap();
    let fine =
        tiny_finetune(&runs, "fine", "pre.ron", 50).replace("Adam(lr: 1e-3)", "Adam(lr: 1e4)");
    std::fs::write(dir.join("fine.ron"), fine).unwrap();
    let out = rl_run()
        .arg(dir.join("fine.ron"))
        .args(["--quiet", "--no-table"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a learning rate of 1e4 should diverge: {stderr}"
    );
    assert!(
        stderr.contains("is not finite") && stderr.contains("lower the learning rate"),
        "{stderr}"
    );
    assert!(!runs.join("fine/final").exists());
    // The pretrained sampler it started from is intact and usable.
    run_ok(
        rl_run()
            .args(["eval", "--checkpoint"])
            .arg(runs.join("pre/final")),
    );
}
