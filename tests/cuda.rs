//! The toy path on a CUDA device, end to end: a pretraining run with a
//! moving average of its weights, then an ablation that fine-tunes it with
//! every agent (SFT-PG, PPO, pathwise, learned variance), all on `Cuda(0)`;
//! the final samplers are then evaluated and sampled on the CPU. And CUDA
//! running out of memory is a clear error.
//!
//! Needs a CUDA device, so it is ignored by default (`cargo test` lists it
//! as ignored); run it with `cargo test --test cuda -- --ignored`.

mod common;

use common::{rl_run, run_ok, temp_dir, tiny_finetune, tiny_pretrain};

#[test]
#[ignore = "needs a CUDA device: cargo test --test cuda -- --ignored"]
fn every_agent_trains_on_cuda() {
    assert!(tch::Cuda::is_available(), "no CUDA device is visible");
    let dir = temp_dir("cuda");
    let runs = dir.join("runs");
    let on_cuda = |text: String| text.replacen("    seed:", "    device: Cuda(0),\n    seed:", 1);
    std::fs::write(
        dir.join("pre.ron"),
        on_cuda(tiny_pretrain(&runs, "pre", 4, 6))
            .replace("grad_clip: 1.0)", "grad_clip: 1.0, ema: 0.9)"),
    )
    .unwrap();
    std::fs::write(
        dir.join("base.ron"),
        on_cuda(tiny_finetune(&runs, "base", "pre.ron", 3)),
    )
    .unwrap();
    std::fs::write(
        dir.join("ablation.ron"),
        r#"Ablation(
    name: "abl",
    base: "base.ron",
    seeds: [1],
    variants: [
        (name: "sft_pg_b"),
        (name: "ppo", agent: Ppo(clip: 0.2, epochs: 2)),
        (name: "sft_gp", agent: Pathwise, regularizer: GradientPenalty(eta: 0.001)),
        (name: "learned", variance: Learned(floor: 1e-3, lr: 1e-2), kl_weight: 0.1, n_generator: 2),
    ],
)
"#,
    )
    .unwrap();
    let out = run_ok(
        rl_run()
            .arg(dir.join("ablation.ron"))
            .args(["--quiet", "--jobs", "1"]),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 5, "the start and four variants:\n{table}");
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        for cell in &cells[2..4] {
            let mean: f64 = cell.split(" ± ").next().unwrap().parse().unwrap();
            assert!(mean.is_finite() && mean > 0.0, "{row}");
        }
    }
    // The average is what the pretraining run published.
    let pre = runs.join("pre/final");
    assert_ne!(
        std::fs::read(pre.join("generator.safetensors")).unwrap(),
        std::fs::read(pre.join("generator-trained.safetensors")).unwrap()
    );
    // Weights trained on the GPU load and sample on the CPU.
    let eval = run_ok(
        rl_run()
            .args(["eval", "--checkpoint"])
            .arg(runs.join("abl/sft_pg_b-seed1/final")),
    );
    let text = String::from_utf8_lossy(&eval.stdout);
    assert!(
        text.contains("against the held-out set") && !text.contains("NaN"),
        "{text}"
    );
}

/// CUDA's own out-of-memory failure (not the CPU allocator's, which the
/// default suite checks) becomes the error that names the setting, and the
/// device is usable afterwards.
#[test]
#[ignore = "needs a CUDA device: cargo test --test cuda -- --ignored"]
fn cuda_out_of_memory_is_an_error_naming_the_setting() {
    assert!(tch::Cuda::is_available(), "no CUDA device is visible");
    let device = tch::Device::Cuda(0);
    // 2^42 floats: 16 TiB, more than any GPU holds.
    let err = shortcut::runner::memory::guard("a sampling chunk", "eval.chunk", 50_000, || {
        Ok(tch::Tensor::zeros([1i64 << 42], (tch::Kind::Float, device)))
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("out of memory in a sampling chunk: lower eval.chunk (now 50000)")
            && text.contains("CUDA out of memory"),
        "{text}"
    );
    let after = tch::Tensor::ones([1024], (tch::Kind::Float, device));
    assert_eq!(after.sum(tch::Kind::Float).double_value(&[]), 1024.0);
}

#[test]
#[ignore = "needs a CUDA device: cargo test --test cuda -- --ignored"]
fn inception_features_on_cuda_match_the_cpu() {
    use shortcut::metrics::features::FeatureNetwork;
    assert!(tch::Cuda::is_available(), "no CUDA device is visible");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    run_ok(
        rl_run()
            .current_dir(root)
            .args(["fetch", "fid-inception", "--quiet"]),
    );
    let file = root.join("models/fid-inception/inception-2015-12-05.pt");
    tch::manual_seed(0);
    let pixels = tch::Tensor::randint(256, [8, 3, 32, 32], (tch::Kind::Uint8, tch::Device::Cpu));
    let cpu = FeatureNetwork::load(&file, tch::Device::Cpu)
        .unwrap()
        .features(&pixels)
        .unwrap();
    let gpu = FeatureNetwork::load(&file, tch::Device::Cuda(0))
        .unwrap()
        .features(&pixels)
        .unwrap();
    let error = (&cpu - &gpu).abs().max().double_value(&[]);
    let scale = cpu.abs().max().double_value(&[]);
    // cuDNN may use TF32 convolutions: agreement to 1e-2 of the largest feature.
    assert!(
        error <= 1e-2 * scale,
        "CUDA features differ by {error} (largest {scale})"
    );
}
