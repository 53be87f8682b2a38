//! The paper's JPEG protocol against PIL and torchvision themselves
//! (`tests/python/pil_jpeg.py`, with the project's `.venv`): our encoder
//! writes, byte for byte, the file torchvision's `save_image(x, 'k.jpg')`
//! and PIL's `Image.fromarray(a).save('k.jpg')` write for the same pixels
//! (random, smooth, flat, grey repeated to RGB, odd sizes); our decoder
//! gives PIL's `Image.open(f).convert('RGB')` pixels for those files and
//! for others PIL writes (4:4:4, 4:2:2 progressive, optimised Huffman
//! tables, 1-component grey); and `rl-run fid A B --jpeg-quality 75` on a
//! `.npy` of images gives the FID of the folder of JPEG files torchvision
//! writes for them.

mod common;

use std::path::{Path, PathBuf};

use common::{python, rl_run, run_ok, temp_dir};
use shortcut::metrics::jpeg::{Decoder, Encoder, Pixels, RoundTrip, PIL_DEFAULT_QUALITY};
use tch::Tensor;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A test image: its name, `[H, W]` or `[H, W, 3]`, and its pixels.
struct TestImage {
    name: &'static str,
    height: usize,
    width: usize,
    channels: usize,
    data: Vec<u8>,
}

/// Uniform noise from a fixed linear congruential generator.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// Gradients and waves with a little noise.
fn smooth(height: usize, width: usize, channels: usize, seed: u64) -> Vec<u8> {
    let jitter = noise(height * width * channels, seed);
    let mut data = Vec::with_capacity(height * width * channels);
    for y in 0..height {
        for x in 0..width {
            for c in 0..channels {
                let v = 128.0
                    + 100.0
                        * ((x as f64 / (3.0 + seed as f64)) + (y as f64 / 5.0) + c as f64 * 1.3)
                            .sin()
                    + f64::from(jitter[data.len()] % 16)
                    - 8.0;
                data.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    data
}

fn test_images() -> Vec<TestImage> {
    let image = |name, height, width, channels, data: Vec<u8>| TestImage {
        name,
        height,
        width,
        channels,
        data,
    };
    vec![
        image("random_rgb_32x32", 32, 32, 3, noise(32 * 32 * 3, 1)),
        image("random_rgb_8x8", 8, 8, 3, noise(8 * 8 * 3, 2)),
        image("random_rgb_5x17", 5, 17, 3, noise(5 * 17 * 3, 3)),
        image("smooth_rgb_32x32", 32, 32, 3, smooth(32, 32, 3, 4)),
        image("smooth_rgb_17x5", 17, 5, 3, smooth(17, 5, 3, 5)),
        image("smooth_rgb_64x64", 64, 64, 3, smooth(64, 64, 3, 6)),
        image("black_rgb_32x32", 32, 32, 3, vec![0; 32 * 32 * 3]),
        image("white_rgb_8x8", 8, 8, 3, vec![255; 8 * 8 * 3]),
        image("random_grey_28x28", 28, 28, 1, noise(28 * 28, 7)),
        image("smooth_grey_28x28", 28, 28, 1, smooth(28, 28, 1, 8)),
        image("smooth_grey_32x32", 32, 32, 1, smooth(32, 32, 1, 9)),
        image("random_grey_8x8", 8, 8, 1, noise(8 * 8, 10)),
        image("smooth_grey_5x17", 5, 17, 1, smooth(5, 17, 1, 11)),
    ]
}

impl TestImage {
    fn pixels(&self) -> Pixels<'_> {
        Pixels {
            data: &self.data,
            width: self.width,
            height: self.height,
            channels: self.channels,
        }
    }

    fn write_npy(&self, dir: &Path) {
        let mut shape = vec![self.height as i64, self.width as i64];
        if self.channels == 3 {
            shape.push(3);
        }
        Tensor::from_slice(&self.data)
            .view(&shape[..])
            .write_npy(dir.join(format!("{}.npy", self.name)))
            .unwrap();
    }
}

/// PIL's pixels of `DIR/STEM.decoded.npy`, `[H, W, 3]` flattened.
fn pil_pixels(path: &Path) -> Vec<u8> {
    let t = Tensor::read_npy(path).unwrap();
    assert_eq!(t.size().len(), 3, "{}", path.display());
    assert_eq!(t.size()[2], 3, "{}", path.display());
    let n = t.numel();
    let mut values = vec![0u8; n];
    t.contiguous().copy_data(&mut values, n);
    values
}

fn differing(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

#[test]
fn our_jpeg_bytes_and_pixels_are_pils() {
    let dir = temp_dir("jpeg_pil_images");
    let images = test_images();
    for image in &images {
        image.write_npy(&dir);
    }
    run_ok(
        python()
            .arg(root().join("tests/python/pil_jpeg.py"))
            .arg("images")
            .arg(&dir),
    );
    let mut encoder = Encoder::new(PIL_DEFAULT_QUALITY).unwrap();
    let mut decoder = Decoder::new().unwrap();
    let mut round_trip = RoundTrip::new(PIL_DEFAULT_QUALITY).unwrap();
    let mut decoded_files = 0;
    for image in &images {
        let ours = encoder.encode(image.pixels()).unwrap();
        for writer in ["tv", "pil"] {
            let file = dir.join(format!("{}.{writer}.jpg", image.name));
            let theirs = std::fs::read(&file).unwrap();
            assert!(
                ours == theirs,
                "{}: our {} bytes differ from {}'s {} bytes ({} differing)",
                image.name,
                ours.len(),
                file.display(),
                theirs.len(),
                differing(&ours, &theirs)
            );
        }
        // The round trip is PIL's pixels of PIL's file.
        let pil = pil_pixels(&dir.join(format!("{}.pil.decoded.npy", image.name)));
        if image.channels == 1 {
            // A grey image's RGB JPEG decodes to three equal channels
            // (what lets the protocol keep grey samples grey).
            assert!(
                pil.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]),
                "{}: PIL's pixels are not grey",
                image.name
            );
        }
        let back = round_trip.image(image.pixels()).unwrap();
        assert_eq!((back.width, back.height), (image.width, image.height));
        assert!(
            back.data == pil,
            "{}: round trip differs from PIL's in {} values",
            image.name,
            differing(&back.data, &pil)
        );
        // Every file PIL wrote, decoded as PIL decodes it.
        let prefix = format!("{}.", image.name);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.starts_with(&prefix) && name.ends_with(".jpg")) {
                continue;
            }
            let decoded = decoder.decode(&std::fs::read(&path).unwrap()).unwrap();
            let want = pil_pixels(&path.with_extension("decoded.npy"));
            assert!(
                decoded.data == want,
                "{name}: our decoder differs from PIL's in {} values",
                differing(&decoded.data, &want)
            );
            decoded_files += 1;
        }
    }
    // tv, pil, three other RGB files per image, and the 1-component grey ones.
    let grey = images.iter().filter(|i| i.channels == 1).count();
    assert_eq!(decoded_files, 5 * images.len() + grey);
    // JPEG at 75 is lossy: the round trip changed the pixels (so the checks
    // above compare decoded images, not copies of the input).
    let smooth = &images[3];
    let back = round_trip.image(smooth.pixels()).unwrap();
    assert!(differing(&back.data, &smooth.data) > smooth.data.len() / 4);
}

/// `FID: x` and `KID: y` of an `rl-run fid` run on the tiny network.
fn fid_and_kid(dir: &Path, a: &Path, b: &Path, extra: &[&str]) -> (f64, f64) {
    let out = run_ok(
        rl_run()
            .args(["fid", "--quiet", "--cpu", "--batch", "10", "--features"])
            .arg(dir.join("tiny.pt"))
            .arg(a)
            .arg(b)
            .args(extra),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .parse()
            .unwrap()
    };
    (value("FID: "), value("KID: "))
}

#[test]
fn the_jpeg_protocol_gives_the_fid_of_torchvisions_jpeg_files() {
    let dir = temp_dir("jpeg_pil_protocol");
    run_ok(
        python()
            .arg(root().join("tests/python/pil_jpeg.py"))
            .arg("sets")
            .arg(&dir),
    );
    let b = dir.join("b");
    for (set, folder) in [("a.npy", "a_tv"), ("g.npy", "g_tv")] {
        let npy: PathBuf = dir.join(set);
        let protocol = fid_and_kid(&dir, &npy, &b, &["--jpeg-quality", "75"]);
        let files = fid_and_kid(&dir, &dir.join(folder), &b, &[]);
        assert_eq!(protocol, files, "{set} through JPEG vs {folder}/");
        let lossless = fid_and_kid(&dir, &npy, &b, &[]);
        assert!(
            lossless.0 != protocol.0,
            "{set}: JPEG must change the FID ({} both)",
            lossless.0
        );
        // Another quality is another FID.
        let q90 = fid_and_kid(&dir, &npy, &b, &["--jpeg-quality", "90"]);
        assert!(q90.0 != protocol.0, "{set}: quality 90 and 75 agree");
    }
    // The protocol needs images, not statistics.
    let stats = dir.join("a_stats.npz");
    run_ok(
        rl_run()
            .args(["fid", "--quiet", "--cpu", "--save-stats", "--features"])
            .arg(dir.join("tiny.pt"))
            .arg(dir.join("a.npy"))
            .arg(&stats),
    );
    let out = rl_run()
        .args([
            "fid",
            "--quiet",
            "--cpu",
            "--jpeg-quality",
            "75",
            "--features",
        ])
        .arg(dir.join("tiny.pt"))
        .arg(&stats)
        .arg(&b)
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && message.contains("a_stats.npz")
            && message.contains("needs the images"),
        "{message}"
    );
    // Qualities outside 1..=100 are refused by the command line.
    let out = rl_run()
        .args(["fid", "--jpeg-quality", "0"])
        .arg(dir.join("a.npy"))
        .arg(&b)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jpeg-quality"));
}
