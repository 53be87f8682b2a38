//! Statistics files in pytorch-fid's `.npz` layout, both ways with numpy
//! (the project's `.venv`): files numpy writes (compressed as pytorch-fid's
//! `save_fid_stats` does, float64 and float32) load with the same values;
//! files we write load in numpy with the same values; malformed files are
//! refused naming the file and the array.

mod common;

use shortcut::metrics::fid_stats::{load_npz, save_npz};
use shortcut::metrics::frechet::GaussianStats;

fn example() -> GaussianStats {
    let dim = 5;
    GaussianStats {
        dim,
        mu: (0..dim).map(|i| 0.1 * i as f64 - 0.25).collect(),
        sigma: (0..dim * dim)
            .map(|k| {
                let (i, j) = (k / dim, k % dim);
                if i == j {
                    1.0 + i as f64 / 3.0
                } else {
                    0.01 * (i + j) as f64
                }
            })
            .collect(),
    }
}

fn python(script: &str) -> String {
    let out = common::python().arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn numpy_files_load_and_ours_load_in_numpy() {
    let dir = common::temp_dir("fid_stats_npz");
    let stats = example();
    // numpy writes, as pytorch-fid's save_fid_stats does (float64 and float32).
    let values = |v: &[f64]| format!("{v:?}");
    for (name, dtype) in [("f64.npz", "float64"), ("f32.npz", "float32")] {
        let path = dir.join(name);
        python(&format!(
            "import numpy as np\nmu = np.array({}, dtype=np.{dtype})\nsigma = np.array({}, dtype=np.{dtype}).reshape({d}, {d})\nnp.savez_compressed({:?}, mu=mu, sigma=sigma)",
            values(&stats.mu),
            values(&stats.sigma),
            path.display().to_string(),
            d = stats.dim,
        ));
        let loaded = load_npz(&path).unwrap();
        assert_eq!(loaded.dim, stats.dim);
        let tolerance = if dtype == "float32" { 1e-7 } else { 0.0 };
        for (a, b) in loaded
            .mu
            .iter()
            .chain(&loaded.sigma)
            .zip(stats.mu.iter().chain(&stats.sigma))
        {
            assert!(
                (a - b).abs() <= tolerance * b.abs(),
                "{name}: {a} against {b}"
            );
        }
    }
    // We write, numpy reads.
    let ours = dir.join("ours.npz");
    save_npz(&ours, &stats).unwrap();
    assert!(
        !dir.join("ours.npz.partial").exists(),
        "the temporary file is renamed"
    );
    let printed = python(&format!(
        "import numpy as np\nf = np.load({:?})\nprint(sorted(f.files), f['mu'].dtype, f['sigma'].shape)\nprint(repr(f['mu'].tolist()))\nprint(repr(f['sigma'].ravel().tolist()))",
        ours.display().to_string()
    ));
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], "['mu', 'sigma'] float64 (5, 5)");
    assert_eq!(lines[1], format!("{:?}", stats.mu));
    assert_eq!(lines[2], format!("{:?}", stats.sigma));
    assert_eq!(load_npz(&ours).unwrap(), stats);
}

#[test]
fn malformed_files_are_refused_naming_the_file_and_the_array() {
    let dir = common::temp_dir("fid_stats_npz_bad");
    let cases = [
        (
            "no_sigma.npz",
            "np.savez(p, mu=np.zeros(3))",
            "no array named sigma",
        ),
        (
            "bad_shape.npz",
            "np.savez(p, mu=np.zeros(3), sigma=np.zeros((3, 2)))",
            "sigma has shape [3, 2]; expected [3, 3]",
        ),
        (
            "ints.npz",
            "np.savez(p, mu=np.zeros(3, dtype=np.int64), sigma=np.eye(3))",
            "array mu has dtype i8",
        ),
    ];
    for (name, write, expected) in cases {
        let path = dir.join(name);
        python(&format!(
            "import numpy as np\np = {:?}\n{write}",
            path.display().to_string()
        ));
        let message = load_npz(&path).unwrap_err().to_string();
        assert!(
            message.contains(name) && message.contains(expected),
            "{message}"
        );
    }
    let text = dir.join("not_an_archive.npz");
    std::fs::write(&text, "mu, sigma").unwrap();
    let message = load_npz(&text).unwrap_err().to_string();
    assert!(
        message.contains("not_an_archive.npz") && message.contains(".npz archive"),
        "{message}"
    );
    let missing = load_npz(&dir.join("missing.npz")).unwrap_err().to_string();
    assert!(missing.contains("missing.npz"), "{missing}");
}
