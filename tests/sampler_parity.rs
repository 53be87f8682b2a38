//! The samplers against diffusers' schedulers, step by step: DDPM
//! sub-sequences against `DDPMScheduler` (betatilde variance) and DDIM
//! against `DDIMScheduler` (eta 0, 0.5 and 1), on fixed samples, eps and
//! noise, clipping off but for one DDPM case with the predicted x_0 clamped
//! to [-1, 1] (diffusers' `clip_sample`). Each step of ours is
//! x' = mean + sigma z, the mean (x - eps_scale eps) x_scale with eps
//! replaced by the noise of the clamped x_0 where clipping is on.

mod common;

use std::path::Path;

use common::{python, run_ok, temp_dir};
use envs::sampler::{DdimSampler, DdpmSampler, SamplerConfig, Spacing};
use envs::schedule::{BetaSchedule, Variance};
use tch::{Device, Kind, Tensor};

fn read(dir: &Path, name: &str) -> Tensor {
    Tensor::read_npy(dir.join(format!("{name}.npy"))).unwrap()
}

#[test]
fn ddpm_and_ddim_steps_match_diffusers_schedulers() {
    let dir = temp_dir("sampler_parity");
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/scheduler_steps.py"))
            .arg(&dir),
    );
    let betas = BetaSchedule::Linear {
        start: 1e-4,
        end: 0.02,
    }
    .betas(1000)
    .unwrap();
    let cases = [
        (
            "ddpm_leading",
            SamplerConfig::Ddpm(DdpmSampler {
                steps: 10,
                spacing: Spacing::Leading,
                variance: None,
                clip_x0: None,
            }),
        ),
        (
            "ddpm_trailing",
            SamplerConfig::Ddpm(DdpmSampler {
                steps: 8,
                spacing: Spacing::Trailing,
                variance: None,
                clip_x0: None,
            }),
        ),
        (
            "ddpm_leading_clipped",
            SamplerConfig::Ddpm(DdpmSampler {
                steps: 10,
                spacing: Spacing::Leading,
                variance: None,
                clip_x0: Some(true),
            }),
        ),
        (
            "ddim_leading_eta0",
            SamplerConfig::Ddim(DdimSampler {
                steps: 10,
                eta: 0.0,
                spacing: Spacing::Leading,
            }),
        ),
        (
            "ddim_trailing_eta05",
            SamplerConfig::Ddim(DdimSampler {
                steps: 10,
                eta: 0.5,
                spacing: Spacing::Trailing,
            }),
        ),
        (
            "ddim_leading_eta1",
            SamplerConfig::Ddim(DdimSampler {
                steps: 7,
                eta: 1.0,
                spacing: Spacing::Leading,
            }),
        ),
    ];
    for (case, sampler) in cases {
        let folder = dir.join(case);
        let schedule = sampler.build(&betas, Variance::PosteriorBetaTilde).unwrap();
        let c = schedule.coefficients(Device::Cpu);
        let horizon = schedule.len() as i64;
        // The network times, first sampling step first.
        let ours = c.network_times.flip([0]);
        let theirs = read(&folder, "timesteps");
        assert!(
            ours.equal(&theirs.to_kind(Kind::Float)),
            "{case}: times {ours:?} vs {theirs:?}"
        );
        let (eps, noise, out) = (
            read(&folder, "eps"),
            read(&folder, "noise"),
            read(&folder, "out"),
        );
        let mut x = read(&folder, "x");
        let mut clamped = 0;
        for i in 0..horizon {
            let t = horizon - i - 1; // 0-based index of the step being taken
            let steps = Tensor::from_slice(&[t + 1]);
            let mean = envs::gaussian::mean_from_eps(&c, &x, &eps.get(i), &steps);
            if c.clip_x0.is_some() {
                let (a, b) = (
                    c.sqrt_alpha_bar.double_value(&[t]),
                    c.sqrt_one_minus_alpha_bar.double_value(&[t]),
                );
                let x0 = (&x - eps.get(i) * b) / a;
                clamped += x0.abs().gt(1.0).sum(Kind::Int64).int64_value(&[]);
            }
            let next = mean + noise.get(i) * c.sigma.double_value(&[t]);
            let expected = out.get(i);
            let diff = (&next - &expected).abs().max().double_value(&[]);
            let scale = expected.abs().max().double_value(&[]);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{case}, step {i}: off by {diff} (scale {scale})"
            );
            // Continue from diffusers' sample, so that each step is compared alone.
            x = expected;
        }
        if c.clip_x0.is_some() {
            assert!(clamped > 0, "{case}: the clamp was exercised");
        }
    }
}

/// Whole deterministic DDIM sampling (eta 0, 10 steps, given x_T) of a
/// U-Net checkpoint by `rl-run sample`, against diffusers' DDIMPipeline on
/// the same weights.
#[test]
fn ddim_sampling_matches_the_diffusers_pipeline() {
    let dir = temp_dir("ddim_pipeline");
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ddim_pipeline.py"))
            .arg(&dir),
    );
    // Our checkpoint of the same weights, sampled by DDIM with eta 0.
    let checkpoint = dir.join("checkpoint");
    common::checkpoint_of_diffusers_unet(
        &dir.join("model"),
        &checkpoint,
        "Ddim(steps: 10, eta: 0.0, spacing: Leading)",
    );
    let out = dir.join("ours.npy");
    run_ok(
        common::rl_run()
            .args(["sample", "--checkpoint"])
            .arg(&checkpoint)
            .arg("--noise")
            .arg(dir.join("x_T.npy"))
            .arg("--out")
            .arg(&out),
    );
    let ours = Tensor::read_npy(&out).unwrap();
    let theirs = read(&dir, "loop");
    let scale = theirs.abs().max().double_value(&[]);
    let diff = (&ours - &theirs).abs().max().double_value(&[]);
    assert!(
        diff <= 1e-3 * scale.max(1.0),
        "raw samples off by {diff} (scale {scale})"
    );
    // The pipeline's image: (x / 2 + 0.5) clamped to [0, 1], channels last.
    let image = (ours / 2.0 + 0.5).clamp(0.0, 1.0).permute([0, 2, 3, 1]);
    let diff = (image - read(&dir, "pipeline"))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff <= 1e-3, "pipeline images off by {diff}");
    // With another seed the deterministic sampler gives the same samples.
    run_ok(
        common::rl_run()
            .args(["sample", "--seed", "7", "--checkpoint"])
            .arg(&checkpoint)
            .arg("--noise")
            .arg(dir.join("x_T.npy"))
            .arg("--out")
            .arg(dir.join("again.npy")),
    );
    assert!(Tensor::read_npy(dir.join("again.npy"))
        .unwrap()
        .equal(&Tensor::read_npy(&out).unwrap()));
}

/// The cosine schedule against diffusers' `squaredcos_cap_v2` betas (which
/// diffusers keeps in float32), at T = 10 (capped last beta) and T = 1000.
#[test]
fn cosine_betas_match_diffusers() {
    let script = "import json, sys\nfrom diffusers import DDPMScheduler\n\
                  print(json.dumps({t: DDPMScheduler(num_train_timesteps=t, beta_schedule='squaredcos_cap_v2').betas.double().tolist() for t in (10, 1000)}))";
    let out = run_ok(python().args(["-c", script]));
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cosine = BetaSchedule::Cosine {
        s: 0.008,
        max_beta: 0.999,
    };
    for steps in [10usize, 1000] {
        let theirs: Vec<f64> =
            serde_json::from_value(reference[steps.to_string()].clone()).unwrap();
        let ours = cosine.betas(steps).unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            // float32 rounding of theirs.
            assert!(
                (a - b).abs() <= 1e-7 * b.abs().max(1e-3),
                "T = {steps}, beta_{}: {a} vs {b}",
                i + 1
            );
        }
        if steps == 10 {
            assert_eq!(ours[9], 0.999, "the cap");
        }
    }
}
