//! The DDPM U-Net against diffusers: random-weight `UNet2DModel`s of several
//! configurations (with and without attention, multi-head, the 2022
//! attention names, google/ddpm-cifar10-32's configuration stored as a `.bin`
//! pickle) are built by diffusers offline, and `rl-run eps` must reproduce
//! diffusers' eps on fixed inputs at integer and non-integer times. The
//! original DDPM/DDIM layout goes through `scripts/convert_weights.py` and
//! must give the same model. Imports are strict both ways.

mod common;

use std::path::Path;

use agents::unet::UNet;
use common::{python, rl_run, run_ok, temp_dir};
use shortcut::weights::diffusers::DiffusersFolder;
use tch::Tensor;

const TOLERANCE: f64 = 1e-4;

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// `rl-run eps` on the inputs stored beside the model; returns the largest
/// absolute difference from `reference` (an .npy in the same folder).
fn eps_difference(folder: &Path, model: &Path, reference: &str) -> f64 {
    let out = folder.join("ours.npy");
    run_ok(
        rl_run()
            .args(["eps", "--model"])
            .arg(model)
            .arg("--x")
            .arg(folder.join("x.npy"))
            .arg("--t")
            .arg(folder.join("t.npy"))
            .arg("--out")
            .arg(&out),
    );
    let ours = Tensor::read_npy(&out).unwrap();
    let theirs = Tensor::read_npy(folder.join(reference)).unwrap();
    assert_eq!(ours.size(), theirs.size());
    (ours - theirs).abs().max().double_value(&[])
}

fn parameter_count(folder: &Path) -> i64 {
    let config = DiffusersFolder::open(folder).unwrap().config;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = UNet::new(&vs.root(), &config);
    vs.variables().values().map(|v| v.numel() as i64).sum()
}

#[test]
fn diffusers_models_predict_the_same_eps() {
    let dir = temp_dir("unet_parity");
    run_ok(python().arg(script("tests/python/make_unets.py")).arg(&dir));
    for case in ["attention", "no_attention", "legacy_names", "cifar10_bin"] {
        let folder = dir.join(case);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("parameters.json")).unwrap())
                .unwrap();
        assert_eq!(
            parameter_count(&folder),
            json["parameters"].as_i64().unwrap(),
            "{case}: parameter count"
        );
        if case.ends_with("_bin") {
            // A pickle is refused with the command that converts it.
            let out = rl_run()
                .args(["eps", "--model"])
                .arg(&folder)
                .args(["--x", "x", "--t", "t", "--out", "o"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("scripts/convert_weights.py diffusers"),
                "{stderr}"
            );
            run_ok(
                python()
                    .arg(script("scripts/convert_weights.py"))
                    .arg("diffusers")
                    .arg(&folder),
            );
        }
        let diff = eps_difference(&folder, &folder, "eps.npy");
        assert!(
            diff <= TOLERANCE,
            "{case}: eps differs from diffusers' by {diff}"
        );
    }
}

#[test]
fn the_ddim_layout_converts_to_the_same_model() {
    let dir = temp_dir("unet_ddim_layout");
    let reference = script("tests/python/ddim_layout.py");
    run_ok(python().arg(&reference).arg(&dir));
    let convert = |out: &str, ema: bool| {
        let mut cmd = python();
        cmd.arg(script("scripts/convert_weights.py"))
            .arg("ddim")
            .arg(dir.join("model.ckpt"))
            .arg(dir.join(out))
            .args(["--resolution", "16"]);
        if ema {
            cmd.arg("--ema");
        }
        run_ok(&mut cmd);
    };
    convert("converted", true);
    // Our model on the converted weights is the reference model.
    let diff = eps_difference(&dir, &dir.join("converted"), "eps.npy");
    assert!(diff <= TOLERANCE, "converted model differs by {diff}");
    // diffusers loads the converted folder to the same model.
    let check = run_ok(python().arg(&reference).arg(&dir).arg("--check"));
    let diffusers_diff: f64 = String::from_utf8_lossy(&check.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        diffusers_diff <= TOLERANCE,
        "diffusers differs by {diffusers_diff}"
    );
    // The model's own weights (not the EMA) are another model.
    convert("plain", false);
    let diff = eps_difference(&dir, &dir.join("plain"), "eps.npy");
    assert!(diff > 1e-2, "--ema made no difference ({diff})");
}

#[test]
fn imports_are_strict_both_ways_and_name_the_key() {
    let dir = temp_dir("unet_strict");
    run_ok(
        python()
            .arg(script("tests/python/make_unets.py"))
            .arg(&dir)
            .arg("no_attention"),
    );
    let folder = dir.join("no_attention");
    let weights = folder.join("diffusion_pytorch_model.safetensors");
    let original = Tensor::read_safetensors(&weights).unwrap();
    let run = |tensors: Vec<(String, Tensor)>| {
        Tensor::write_safetensors(&tensors, &weights).unwrap();
        let out = rl_run()
            .args(["eps", "--model"])
            .arg(&folder)
            .arg("--x")
            .arg(folder.join("x.npy"))
            .arg("--t")
            .arg(folder.join("t.npy"))
            .arg("--out")
            .arg(folder.join("o.npy"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let copy = || -> Vec<(String, Tensor)> {
        original
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect()
    };
    let key = "down_blocks.1.resnets.0.conv1.weight";
    let missing = run(copy().into_iter().filter(|(k, _)| k != key).collect());
    assert!(
        missing.contains(&format!("tensor {key}: missing from the file")),
        "{missing}"
    );
    let mut extra = copy();
    extra.push((
        "head.weight".into(),
        Tensor::zeros([2], tch::kind::FLOAT_CPU),
    ));
    let extra = run(extra);
    assert!(
        extra.contains("tensor head.weight: in the file but not in the model"),
        "{extra}"
    );
    let reshaped: Vec<_> = copy()
        .into_iter()
        .map(|(k, v)| {
            let v = if k == key { v.narrow(0, 0, 16) } else { v };
            (k, v)
        })
        .collect();
    let shape = run(reshaped);
    assert!(
        shape.contains(&format!(
            "tensor {key}: the model has shape [32, 16, 3, 3], the file [16, 16, 3, 3]"
        )),
        "{shape}"
    );
}
