//! The optimisers on a CUDA device. On the CPU, Adam and RMSprop update each
//! parameter in one fused pass over its memory; on CUDA the same update runs
//! as libtorch operations. Both must move the same parameters the same way.
//!
//! Needs a CUDA device, so it is ignored by default (`cargo test` lists it
//! as ignored); run it with `cargo test -p agents --test cuda -- --ignored`.

use agents::optim::OptimizerConfig;
use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};

/// Runs `steps` optimiser steps on a 5,000-parameter vector with the loss
/// sum(w * c)^2 / 2 (so the gradient changes every step), on `device`;
/// returns the parameters and the optimiser state on the CPU.
fn train(config: OptimizerConfig, device: Device, steps: usize) -> (Tensor, Vec<Tensor>) {
    tch::manual_seed(11);
    let start = Tensor::randn([5000], (Kind::Float, Device::Cpu));
    let c = Tensor::randn([5000], (Kind::Float, Device::Cpu)).to_device(device);
    let vs = VarStore::new(device);
    let mut w = vs.root().var("w", &[5000], Init::Const(0.0));
    tch::no_grad(|| w.copy_(&start));
    let mut opt = config.build(&vs);
    for _ in 0..steps {
        opt.zero_grad();
        let loss = (&w * &c).sum(Kind::Float).square() * 0.5;
        loss.backward();
        opt.clip_grad_norm(Some(10.0));
        opt.step();
    }
    let state = opt
        .state()
        .into_iter()
        .map(|(_, t)| t.to_device(Device::Cpu))
        .collect();
    (w.detach().to_device(Device::Cpu), state)
}

#[test]
#[ignore = "needs a CUDA device: cargo test -p agents --test cuda -- --ignored"]
fn cuda_and_cpu_optimisers_agree() {
    assert!(tch::Cuda::is_available(), "no CUDA device is visible");
    for config in [
        OptimizerConfig::Adam { lr: 1e-2 },
        OptimizerConfig::RmsProp { lr: 1e-3 },
    ] {
        let (cpu, cpu_state) = train(config, Device::Cpu, 20);
        let (gpu, gpu_state) = train(config, Device::Cuda(0), 20);
        let scale = cpu.abs().max().double_value(&[]);
        let diff = (&cpu - &gpu).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-4 * scale,
            "{config:?}: parameters differ by {diff} of {scale}"
        );
        assert_eq!(cpu_state.len(), gpu_state.len());
        for (a, b) in cpu_state.iter().zip(&gpu_state) {
            let scale = a.abs().max().double_value(&[]).max(1e-12);
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(
                diff <= 1e-3 * scale,
                "{config:?}: state differs by {diff} of {scale}"
            );
        }
        println!("{config:?}: CPU and CUDA parameters agree to {diff:.2e} (scale {scale:.2e})");
    }
}
