//! SN-DDPM and NPR-DDPM (Bao et al. 2022b): the sampler's steps and the
//! head's losses against a PyTorch transcription of their code on the same
//! tensors (tests/python/sn_ddpm_steps.py); and a covariance run on a tiny
//! digits model that trains only its head, samples with it, counts its
//! cost, and is refused where there is no head.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{python, rl_run, run_ok, temp_dir};
use envs::sampler::{NprDdpm, SamplerConfig, SnDdpm, SnDdpmSampler, Spacing};
use envs::samplers::CovarianceTarget;
use envs::schedule::BetaSchedule;
use tch::{Kind, Tensor};

#[test]
fn steps_and_losses_match_a_transcription_of_their_code() {
    let dir = temp_dir("sn_ddpm_steps");
    let betas = BetaSchedule::Linear {
        start: 1e-4,
        end: 0.02,
    }
    .betas(1000)
    .unwrap();
    let settings = SnDdpmSampler {
        steps: 10,
        spacing: Spacing::Uniform,
        clip_pixel: 2.0,
    };
    let _guard = envs::testing::seeded(0);
    let k = 10;
    // Samples of image scale, noise predictions, and head outputs around
    // eps^2 (so that the clamp to [0, 1] and its floor both act).
    let x = Tensor::randn([k, 4, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
    let eps = Tensor::randn([k, 4, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
    let head = eps.square() + Tensor::randn([k, 4, 3, 8, 8], (Kind::Float, tch::Device::Cpu)) * 0.5;
    let output = Tensor::cat(&[&eps, &head], 2);
    let noise = Tensor::randn([4, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
    let mut results = HashMap::new();
    let mut draws = Vec::new();
    for (name, sampler) in [
        ("sn", SamplerConfig::SnDdpm(SnDdpm(settings))),
        ("npr", SamplerConfig::NprDdpm(NprDdpm(settings))),
    ] {
        let solver = sampler.solver(&betas).unwrap().unwrap();
        let times: Vec<usize> = solver.grid().times.clone();
        assert_eq!(times, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
        let mut steps = solver.start();
        let mut next = Vec::new();
        draws.clear();
        for i in 0..k {
            // The step's noise: what it draws after this seed.
            tch::manual_seed(100 + i);
            draws.push(x.get(i).randn_like());
            tch::manual_seed(100 + i);
            next.push(steps.step(&output.get(i), &x.get(i)));
        }
        results.insert(name, Tensor::stack(&next, 0));
    }
    for (name, t) in [
        ("x", &x),
        ("output", &output),
        ("z", &Tensor::stack(&draws, 0)),
        ("noise", &noise),
    ] {
        t.write_npy(dir.join(format!("{name}.npy"))).unwrap();
    }
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sn_ddpm_steps.py"))
            .arg(&dir),
    );
    for name in ["sn", "npr"] {
        let theirs = Tensor::read_npy(dir.join(format!("{name}.npy"))).unwrap();
        let ours = &results[name];
        for i in 0..k {
            let diff = (ours.get(i) - theirs.get(i)).abs().max().double_value(&[]);
            let scale = theirs.get(i).abs().max().double_value(&[]).max(1.0);
            assert!(diff <= 1e-5 * scale, "{name}, step {i}: off by {diff}");
        }
    }
    // The last step is noiseless and returns the clipped x_0.
    assert!(bool::try_from(results["sn"].get(k - 1).abs().le(1.0).all()).unwrap());
    let losses = Tensor::read_npy(dir.join("losses.npy")).unwrap();
    for (i, target) in [CovarianceTarget::SquaredNoise, CovarianceTarget::Residual]
        .into_iter()
        .enumerate()
    {
        let ours =
            agents::covariance::covariance_loss(target, &noise, &output.get(0)).double_value(&[]);
        let theirs = losses.double_value(&[i as i64]);
        assert!(
            (ours - theirs).abs() <= 1e-5 * theirs.abs(),
            "{target:?} loss {ours} vs {theirs}"
        );
    }
}

fn digits_run(runs: &Path, digits: &Path, name: &str, task: &str, sampler: &str) -> String {
    format!(
        r#"Experiment(
    name: "{name}",
    seed: 0,
    threads: 1,
    data: (set: Digits(dir: "{digits}"), n: 128),
    env: (steps: 50, schedule: Linear(start: 1e-3, end: 0.2), variance: PosteriorBetaTilde, sampler: {sampler}),
    model: UNet(in_channels: 1, resolution: 8, channels: 16, channel_mult: [1, 2],
                res_blocks: 1, attention_resolutions: [], mid_attention: false,
                attention_head_dim: None, dropout: 0.1, norm_groups: 8),
    task: {task},
    eval: (every: 3, n: 32, exact_n: 32, projections: 20, repeats: 1, chunk: 32),
    record: (dir: "{runs}", checkpoint_every: 1),
)
"#,
        digits = digits.display(),
        runs = runs.display()
    )
}

fn tensors(file: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(file)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn a_covariance_run_trains_its_head_alone_and_samples_with_it() {
    let dir = temp_dir("sn_ddpm_run");
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits");
    assert!(
        digits.join("train-images-idx3-ubyte").is_file(),
        "needs data/digits: run scripts/setup.sh (make test does)"
    );
    let runs = dir.join("runs");
    let ddpm = dir.join("ddpm.ron");
    std::fs::write(
        &ddpm,
        digits_run(
            &runs,
            &digits,
            "tiny_ddpm",
            "Pretrain(epochs: 2, batch: 32, optimizer: Adam(lr: 1e-3), ema: 0.0)",
            "Full",
        ),
    )
    .unwrap();
    let sn = dir.join("sn.ron");
    std::fs::write(
        &sn,
        digits_run(
            &runs,
            &digits,
            "tiny_sn",
            r#"CovarianceHead(init: "ddpm.ron", epochs: 3, batch: 32, optimizer: Adam(lr: 1e-2), ema: 0.5)"#,
            "SnDdpm(steps: 4, spacing: Uniform)",
        ),
    )
    .unwrap();
    run_ok(rl_run().arg(&sn).args(["--quiet", "--no-table"]));
    // The trunk is the pretrained network, bit for bit; the head moved off zero.
    let pretrained = tensors(&runs.join("tiny_ddpm/final/generator.safetensors"));
    let tuned = tensors(&runs.join("tiny_sn/final/generator.safetensors"));
    let mut head = 0;
    for (name, value) in &tuned {
        match name.strip_prefix("covariance_head.") {
            Some(_) => {
                head += 1;
                if name.ends_with("conv.weight") {
                    assert!(
                        value.abs().max().double_value(&[]) > 0.0,
                        "{name} still zero"
                    );
                }
            }
            None => assert!(value.equal(&pretrained[name]), "{name} changed"),
        }
    }
    assert_eq!(head, 4, "norm and conv, weight and bias");
    assert_eq!(tuned.len(), pretrained.len() + 4);
    // One network evaluation per image and update.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(runs.join("tiny_sn/final/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["cost"]["network_evaluations"], 128 * 3);
    // It samples with its head; other heads and models without one are refused.
    let out = dir.join("s.npy");
    run_ok(
        rl_run()
            .args(["sample", "--n", "16", "--checkpoint"])
            .arg(runs.join("tiny_sn/final"))
            .arg("--out")
            .arg(&out),
    );
    let samples = Tensor::read_npy(&out).unwrap();
    assert_eq!(samples.size(), [16, 1, 8, 8]);
    assert!(
        bool::try_from(samples.abs().le(1.0).all()).unwrap(),
        "clipped x_0"
    );
    for (checkpoint, sampler, says) in [
        ("tiny_sn", "NprDdpm(steps: 4)", "trained a covariance head"),
        ("tiny_ddpm", "SnDdpm(steps: 4)", "reads a covariance head"),
    ] {
        let out = rl_run()
            .args(["sample", "--n", "4", "--sampler", sampler, "--checkpoint"])
            .arg(runs.join(checkpoint).join("final"))
            .arg("--out")
            .arg(dir.join("refused.npy"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
}
