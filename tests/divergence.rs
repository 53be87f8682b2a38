//! A run that diverges or runs out of memory stops with a clear error, and
//! what it saved before stays loadable.

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

/// More memory than any machine can map (2^45 chains of 2 floats: 2^48
/// bytes), so libtorch's allocation fails whatever the overcommit policy.
const TOO_MANY_CHAINS: u64 = 1 << 45;

#[test]
fn running_out_of_memory_names_the_setting_and_keeps_the_checkpoint() {
    let dir = temp_dir("out_of_memory");
    let runs = dir.join("runs");
    let file = dir.join("pre.ron");
    let fits = tiny_pretrain(&runs, "pre", 4, 4);
    let huge = format!("eval: (every: 2, n: {TOO_MANY_CHAINS}, chunk: {TOO_MANY_CHAINS},");
    std::fs::write(&file, fits.replace("eval: (every: 2, n: 500,", &huge)).unwrap();
    let out = rl_run()
        .arg(&file)
        .args(["--quiet", "--no-table"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: out of memory in a sampling chunk: lower eval.chunk (now {TOO_MANY_CHAINS}); \
             checkpoints already written are unchanged (DefaultCPUAllocator: can't allocate memory"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "no panic report: {stderr}");
    // The evaluation after epoch 2 failed; epoch 1's checkpoint resumes.
    std::fs::write(&file, &fits).unwrap();
    run_ok(
        rl_run()
            .arg(&file)
            .args(["--quiet", "--no-table", "--resume"]),
    );
    assert!(runs.join("pre/final").exists());
}
