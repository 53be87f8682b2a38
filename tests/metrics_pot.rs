//! Parity of the Wasserstein metrics with POT (Python Optimal Transport).
//!
//! Each case builds two point clouds deterministically, writes them as
//! `.npy` files, asks `tests/python/pot_reference.py` (run with the project's
//! `.venv` Python, which `scripts/setup.sh` provisions with POT) for POT's
//! values, and checks:
//! - exact W2 agrees with `ot.emd2` to 1e-6 relative;
//! - our sliced W2, averaged over `SEEDS` seeds, lies within 3 standard
//!   errors of POT's average over as many seeds (the spread is POT's).

use std::f64::consts::PI;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use shortcut::metrics::exact::exact_wasserstein2;
use shortcut::metrics::sliced::sliced_wasserstein2;

/// Projections per sliced estimate, on both sides.
const N_PROJECTIONS: usize = 100;
/// Seeds averaged on each side.
const SEEDS: usize = 20;
/// Relative tolerance on the exact W2.
const EXACT_RTOL: f64 = 1e-6;

/// A row-major point cloud.
struct Cloud {
    rows: usize,
    dim: usize,
    data: Vec<f32>,
}

fn normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

/// A noisy two-armed spiral in the plane, radius up to about 2.
fn noisy_spiral(rows: usize, seed: u64) -> Cloud {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(rows * 2);
    for i in 0..rows {
        let t: f64 = rng.random::<f64>().sqrt();
        let angle = 0.5 + 3.0 * PI * t + if i % 2 == 0 { 0.0 } else { PI };
        let radius = 2.0 * t;
        data.push((radius * angle.cos() + 0.08 * normal(&mut rng)) as f32);
        data.push((radius * angle.sin() + 0.08 * normal(&mut rng)) as f32);
    }
    Cloud { rows, dim: 2, data }
}

/// An isotropic Gaussian with the given mean and standard deviation.
fn gaussian(rows: usize, mean: &[f64], std: f64, seed: u64) -> Cloud {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = (0..rows)
        .flat_map(|_| mean.to_vec())
        .map(|mu| (mu + std * normal(&mut rng)) as f32)
        .collect();
    Cloud {
        rows,
        dim: mean.len(),
        data,
    }
}

/// Uniform points in `[-1, 1]^dim`.
fn uniform_cube(rows: usize, dim: usize, seed: u64) -> Cloud {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = (0..rows * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    Cloud { rows, dim, data }
}

/// Writes `cloud` as a version 1.0 `.npy` file of little-endian `float32` in
/// C order.
fn write_npy(path: &Path, cloud: &Cloud) {
    assert_eq!(cloud.data.len(), cloud.rows * cloud.dim);
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        cloud.rows, cloud.dim
    );
    // magic (6) + version (2) + header length (2) + header, padded with
    // spaces and ended by '\n' to a multiple of 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len = u16::try_from(header.len()).expect("npy header too long");

    let mut out = BufWriter::new(File::create(path).expect("create .npy file"));
    out.write_all(b"\x93NUMPY\x01\x00").unwrap();
    out.write_all(&header_len.to_le_bytes()).unwrap();
    out.write_all(header.as_bytes()).unwrap();
    for v in &cloud.data {
        out.write_all(&v.to_le_bytes()).unwrap();
    }
    out.flush().unwrap();
}

/// POT's answers for one pair of clouds.
#[derive(Debug)]
struct PotReference {
    exact_w2: f64,
    sliced_w2_mean: f64,
    sliced_w2_std: f64,
    exact_seconds: f64,
}

/// Reads the number stored under `key` in a flat JSON object of numbers.
fn json_number(json: &str, key: &str) -> f64 {
    let needle = format!("\"{key}\":");
    let start = json
        .find(&needle)
        .unwrap_or_else(|| panic!("key {key} missing from POT output: {json}"))
        + needle.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad number for {key} in POT output ({e}): {json}"))
}

fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "the POT parity test needs the project's Python at {}; run scripts/setup.sh \
         first (it installs numpy and POT there)",
        python.display()
    );
    python
}

fn pot_reference(name: &str, x: &Cloud, y: &Cloud) -> PotReference {
    let python = venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/pot_reference.py");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics_pot");
    std::fs::create_dir_all(&dir).expect("create temporary directory");
    let x_path = dir.join(format!("{name}_x.npy"));
    let y_path = dir.join(format!("{name}_y.npy"));
    write_npy(&x_path, x);
    write_npy(&y_path, y);

    let output = Command::new(&python)
        .arg(&script)
        .arg(&x_path)
        .arg(&y_path)
        .args(["--n-projections", &N_PROJECTIONS.to_string()])
        .args(["--seeds", &SEEDS.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{}\n{}",
        python.display(),
        script.display(),
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    PotReference {
        exact_w2: json_number(&stdout, "exact_w2"),
        sliced_w2_mean: json_number(&stdout, "sliced_w2_mean"),
        sliced_w2_std: json_number(&stdout, "sliced_w2_std"),
        exact_seconds: json_number(&stdout, "exact_seconds"),
    }
}

fn check_against_pot(name: &str, x: &Cloud, y: &Cloud) {
    assert_eq!(x.dim, y.dim);
    let pot = pot_reference(name, x, y);

    let start = Instant::now();
    let exact = exact_wasserstein2(&x.data, &y.data, x.dim).expect("exact W2");
    let exact_seconds = start.elapsed().as_secs_f64();

    let sliced: Vec<f64> = (0..SEEDS as u64)
        .map(|seed| {
            sliced_wasserstein2(&x.data, &y.data, x.dim, N_PROJECTIONS, seed).expect("sliced W2")
        })
        .collect();
    let sliced_mean = sliced.iter().sum::<f64>() / SEEDS as f64;
    // Standard error of the difference of two means of SEEDS draws each,
    // both with POT's spread.
    let std_err = pot.sliced_w2_std * (2.0 / SEEDS as f64).sqrt();

    let exact_rel = (exact - pot.exact_w2).abs() / pot.exact_w2.abs().max(f64::MIN_POSITIVE);
    let sliced_z = (sliced_mean - pot.sliced_w2_mean).abs() / std_err;
    println!(
        "{name} ({}x{} vs {}x{}): exact W2 ours {exact:.12} ({exact_seconds:.2} s) POT {:.12} \
         ({:.2} s), rel diff {exact_rel:.3e}; sliced W2 ours {sliced_mean:.6} POT {:.6} \
         +- {:.6} (std), |diff| = {sliced_z:.2} standard errors",
        x.rows,
        x.dim,
        y.rows,
        y.dim,
        pot.exact_w2,
        pot.exact_seconds,
        pot.sliced_w2_mean,
        pot.sliced_w2_std,
    );

    assert!(
        exact_rel <= EXACT_RTOL,
        "{name}: exact W2 {exact} differs from POT's {} by {exact_rel:e} relative (> {EXACT_RTOL:e})",
        pot.exact_w2
    );
    assert!(
        std_err > 0.0 && sliced_z <= 3.0,
        "{name}: sliced W2 mean {sliced_mean} is {sliced_z} standard errors ({std_err}) from \
         POT's {}",
        pot.sliced_w2_mean
    );
    // Projections are 1-Lipschitz, so every 1-D W2 is at most the full W2.
    assert!(
        sliced.iter().all(|&s| s <= exact * (1.0 + 1e-9)),
        "{name}: a sliced W2 exceeds the exact W2 {exact}: {sliced:?}"
    );
}

#[test]
fn spiral_vs_shifted_gaussian_3000x2() {
    let x = noisy_spiral(3000, 1);
    let y = gaussian(3000, &[0.7, -0.4], 0.6, 2);
    check_against_pot("spiral_gaussian", &x, &y);
}

#[test]
fn small_7x3() {
    let x = uniform_cube(7, 3, 3);
    let y = gaussian(7, &[0.5, 0.0, -0.25], 0.8, 4);
    check_against_pot("small_7x3", &x, &y);
}

#[test]
fn unequal_sizes_7x3_vs_5x3() {
    let x = uniform_cube(7, 3, 5);
    let y = gaussian(5, &[0.2, 0.3, 0.0], 1.0, 6);
    check_against_pot("unequal_7x3_5x3", &x, &y);
}
