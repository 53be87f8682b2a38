//! The ODE solvers against diffusers' schedulers, step by step, on fixed
//! samples and noise predictions (tests/python/solver_steps.py): DPM-Solver
//! singlestep (order 3, 10 and 9 steps) and multistep (order 3, trailing)
//! against `DPMSolverSinglestepScheduler`/`DPMSolverMultistepScheduler`
//! with `algorithm_type="dpmsolver"`; DPM-Solver++ (2M, 3M leading over 20
//! steps, 2S) against the same with `dpmsolver++`; UniPC (bh2 order 2,
//! bh1 order 3 trailing) against `UniPCMultistepScheduler`; iPNDM against
//! `IPNDMScheduler` on the model's noise levels. Each step starts from
//! diffusers' previous sample and must agree to 1e-5 (relative to the
//! sample's scale).

mod common;

use std::path::Path;

use common::{python, run_ok, temp_dir};
use envs::ode::{SolverSpacing, UniPcVariant};
use envs::sampler::{
    DpmSolverPpSampler, DpmSolverSampler, IpndmSampler, SamplerConfig, UniPcSampler,
};
use envs::schedule::BetaSchedule;
use tch::Tensor;

fn read(dir: &Path, name: &str) -> Tensor {
    Tensor::read_npy(dir.join(format!("{name}.npy"))).unwrap()
}

fn dpm(steps: usize, order: usize, multistep: bool, spacing: SolverSpacing) -> SamplerConfig {
    SamplerConfig::DpmSolver(DpmSolverSampler {
        steps,
        order,
        multistep,
        spacing,
    })
}

fn dpmpp(steps: usize, order: usize, multistep: bool, spacing: SolverSpacing) -> SamplerConfig {
    SamplerConfig::DpmSolverPp(DpmSolverPpSampler {
        steps,
        order,
        multistep,
        spacing,
    })
}

#[test]
fn solver_steps_match_diffusers_schedulers() {
    use SolverSpacing::{Karras, Leading, Linspace, Trailing};
    let dir = temp_dir("solver_parity");
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/solver_steps.py"))
            .arg(&dir),
    );
    let betas = BetaSchedule::Linear {
        start: 1e-4,
        end: 0.02,
    }
    .betas(1000)
    .unwrap();
    let cases = [
        ("dpm_solver_single3", dpm(10, 3, false, Linspace)),
        ("dpm_solver_single3_9", dpm(9, 3, false, Linspace)),
        ("dpm_solver_multi3_trailing", dpm(10, 3, true, Trailing)),
        ("dpmpp_2m", dpmpp(10, 2, true, Linspace)),
        ("dpmpp_3m_leading_20", dpmpp(20, 3, true, Leading)),
        ("dpmpp_2s", dpmpp(10, 2, false, Linspace)),
        (
            "unipc_bh2",
            SamplerConfig::UniPc(UniPcSampler {
                steps: 10,
                order: 2,
                variant: UniPcVariant::Bh2,
                spacing: Linspace,
            }),
        ),
        (
            "unipc_bh1_3_trailing",
            SamplerConfig::UniPc(UniPcSampler {
                steps: 12,
                order: 3,
                variant: UniPcVariant::Bh1,
                spacing: Trailing,
            }),
        ),
        (
            "ipndm",
            SamplerConfig::Ipndm(IpndmSampler {
                steps: 10,
                order: 4,
                spacing: Linspace,
            }),
        ),
        (
            "ipndm_karras",
            SamplerConfig::Ipndm(IpndmSampler {
                steps: 10,
                order: 4,
                spacing: Karras,
            }),
        ),
    ];
    for (case, sampler) in cases {
        let folder = dir.join(case);
        assert!(sampler
            .build(&betas, envs::schedule::Variance::PosteriorBetaTilde)
            .is_err());
        let solver = sampler.solver(&betas).expect("an ODE solver").unwrap();
        let theirs: Vec<i64> = Vec::try_from(read(&folder, "timesteps")).unwrap();
        let ours: Vec<i64> = solver.grid().times.iter().map(|&t| t as i64).collect();
        assert_eq!(ours, theirs, "{case}: network times");
        assert_eq!(sampler.steps(1000), ours.len(), "{case}: NFE");
        let (eps, out) = (read(&folder, "eps"), read(&folder, "out"));
        let mut x = read(&folder, "x");
        let mut steps = solver.start();
        for i in 0..ours.len() as i64 {
            let next = steps.step(&eps.get(i), &x);
            let expected = out.get(i);
            assert!(
                bool::try_from(next.isfinite().all()).unwrap(),
                "{case}, step {i}: not finite"
            );
            if bool::try_from(expected.isnan().any()).unwrap() {
                // diffusers' bh1 multiplies B(h) = -inf by 0 on the step to
                // sigma = 0; ours returns the data prediction there.
                assert_eq!(case, "unipc_bh1_3_trailing");
                assert_eq!(i, ours.len() as i64 - 1);
                continue;
            }
            let diff = (&next - &expected).abs().max().double_value(&[]);
            let scale = expected.abs().max().double_value(&[]);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{case}, step {i}: off by {diff} (scale {scale})"
            );
            x = expected;
        }
    }
}

/// Whole deterministic sampling (10 network evaluations from a given x_T)
/// of a U-Net checkpoint by `rl-run sample --sampler`, against diffusers'
/// scheduler loops on the same weights (DPM-Solver-fast's singlestep order
/// 3, DPM-Solver++(2M), UniPC bh2, iPNDM) and against DDPMPipeline with
/// DPMSolverMultistepScheduler, to 1e-3.
#[test]
fn solver_sampling_matches_diffusers() {
    let dir = temp_dir("solver_pipeline");
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/solver_pipeline.py"))
            .arg(&dir),
    );
    let checkpoint = dir.join("checkpoint");
    common::checkpoint_of_diffusers_unet(
        &dir.join("model"),
        &checkpoint,
        "Ddim(steps: 10, eta: 0.0)",
    );
    let cases = [
        ("dpm_solver_fast", "DpmSolver(steps: 10)"),
        ("dpmpp_2m", "DpmSolverPp(steps: 10)"),
        ("unipc_bh2", "UniPc(steps: 10)"),
        ("ipndm", "Ipndm(steps: 10, order: 4)"),
    ];
    for (case, sampler) in cases {
        let out = dir.join(format!("ours_{case}.npy"));
        run_ok(
            common::rl_run()
                .args(["sample", "--sampler", sampler, "--checkpoint"])
                .arg(&checkpoint)
                .arg("--noise")
                .arg(dir.join("x_T.npy"))
                .arg("--out")
                .arg(&out),
        );
        let ours = Tensor::read_npy(&out).unwrap();
        let theirs = read(&dir, case);
        let scale = theirs.abs().max().double_value(&[]);
        let diff = (&ours - &theirs).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-3 * scale.max(1.0),
            "{case}: samples off by {diff} (scale {scale})"
        );
        if case == "dpmpp_2m" {
            // The pipeline's image: (x / 2 + 0.5) clamped to [0, 1], channels last.
            let image = (ours / 2.0 + 0.5).clamp(0.0, 1.0).permute([0, 2, 3, 1]);
            let diff = (image - read(&dir, "pipeline"))
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff <= 1e-3, "pipeline images off by {diff}");
        }
    }
    // The solvers differ from one another (the comparison is not vacuous).
    let a = read(&dir, "dpm_solver_fast");
    let b = read(&dir, "dpmpp_2m");
    assert!((a - b).abs().max().double_value(&[]) > 1e-3);
}
