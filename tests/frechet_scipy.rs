//! The Fréchet distance (FID's formula) against a numpy/scipy transcription
//! of pytorch-fid's `calculate_frechet_distance`
//! (`tests/python/frechet_reference.py`, run with the project's `.venv`), on
//! statistics streamed by `RunningStats`: full-rank covariances, singular
//! ones (fewer samples than dimensions) and one of each, to 1e-6 relative.

mod common;

use std::path::Path;

use shortcut::metrics::frechet::{frechet_distance, GaussianStats, RunningStats};
use tch::{Device, Kind, Tensor};

/// Statistics of `n` samples of `dim` correlated features (a random linear
/// map of normal noise, shifted by `mean`), streamed in batches of 50.
fn stats(n: i64, dim: i64, mean: f64, seed: i64) -> GaussianStats {
    tch::manual_seed(seed);
    let mix = Tensor::randn([dim, dim], (Kind::Double, Device::Cpu)) / (dim as f64).sqrt();
    let x = Tensor::randn([n, dim], (Kind::Double, Device::Cpu)).matmul(&mix) + mean;
    let mut s = RunningStats::new(dim as usize);
    for batch in x.to_kind(Kind::Float).split(50, 0) {
        s.add(&batch).unwrap();
    }
    s.finish().unwrap()
}

fn write(dir: &Path, name: &str, values: &[f64]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

fn reference(dir: &Path, a: &GaussianStats, b: &GaussianStats) -> f64 {
    let out = common::python()
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/frechet_reference.py"))
        .arg(a.dim.to_string())
        .arg(write(dir, "a_mu", &a.mu))
        .arg(write(dir, "a_sigma", &a.sigma))
        .arg(write(dir, "b_mu", &b.mu))
        .arg(write(dir, "b_sigma", &b.sigma))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn agrees_with_pytorch_fids_formula_on_full_rank_and_singular_covariances() {
    let dir = common::temp_dir("frechet_scipy");
    let cases = [
        ("full rank", stats(600, 32, 0.0, 1), stats(500, 32, 0.3, 2)),
        (
            "both singular (20 samples, 32 dims)",
            stats(20, 32, 0.0, 3),
            stats(20, 32, 0.2, 4),
        ),
        (
            "singular against full rank",
            stats(20, 32, 0.0, 5),
            stats(600, 32, 0.1, 6),
        ),
        (
            "large means",
            stats(400, 16, 50.0, 7),
            stats(400, 16, 51.0, 8),
        ),
    ];
    for (label, a, b) in &cases {
        let ours = frechet_distance(a, b).unwrap();
        let theirs = reference(&dir, a, b);
        let relative = (ours - theirs).abs() / theirs.abs();
        assert!(
            relative < 1e-6,
            "{label}: ours {ours}, pytorch-fid's formula {theirs} ({relative:e})"
        );
    }
    let a = &cases[1].1;
    assert!(
        frechet_distance(a, a).unwrap().abs() < 1e-6,
        "a singular set against itself"
    );
}
