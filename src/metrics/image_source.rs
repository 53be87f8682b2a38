//! The images FID and KID measure, read batch by batch so that a large set
//! never sits in memory: a `.npy` array or a folder of image files.
//!
//! - `.npy` of uint8 pixels, `[N, H, W, C]` (the common layout of sample
//!   files) or `[N, C, H, W]`, with C = 1 or 3, or `[N, H, W]` grayscale;
//! - `.npy` of float32 in the model's range [-1, 1], `[N, C, H, W]` (what
//!   `rl-run sample` writes) or `[N, H, W, C]`: turned into pixels as a PNG
//!   of them would hold them (clamped, `round((x + 1) * 127.5)`);
//! - a folder of PNG or JPEG files, all of one size, decoded as RGB (as
//!   pytorch-fid's `convert('RGB')`: grayscale repeated, alpha dropped),
//!   in the order of their sorted names; JPEGs by libjpeg-turbo with PIL's
//!   settings ([`super::jpeg`]), so that a folder of JPEG files gives the
//!   pixels pytorch-fid sees.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::error::MetricError;
use super::jpeg;

/// The largest magnitude accepted in a float `.npy` of images (in [-1, 1],
/// with room for samples that overshoot).
const FLOAT_LIMIT: f32 = 4.0;

/// Float images with more than one value in this many beyond
/// [`FLOAT_LIMIT`] are refused as pixels, not samples.
const OUTLIER_SHARE: usize = 100;

/// Extensions of image files pytorch-fid reads that are not decoded here.
const UNSUPPORTED: [&str; 6] = ["bmp", "pgm", "ppm", "tif", "tiff", "webp"];

fn images_error(path: &Path, message: impl Into<String>) -> MetricError {
    MetricError::Images {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Element type of a `.npy` of images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pixels {
    /// uint8, 0..255.
    Bytes,
    /// float32 in [-1, 1].
    Unit,
}

/// Where images come from.
#[derive(Debug, Clone)]
enum Origin {
    /// A `.npy` array: its element type and whether channels come last.
    Npy { pixels: Pixels, channels_last: bool },
    /// Image files, sorted by name.
    Folder(Vec<PathBuf>),
}

/// A set of images to measure.
#[derive(Debug, Clone)]
pub struct ImageSource {
    path: PathBuf,
    origin: Origin,
    count: usize,
    /// `[C, H, W]` of every image.
    shape: [i64; 3],
}

fn is_image_file(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
}

impl ImageSource {
    /// Opens a `.npy` file or a folder of images, reading only headers (and
    /// the first image of a folder).
    ///
    /// # Errors
    /// [`MetricError::Images`] naming the path and what was expected.
    pub fn open(path: &Path) -> Result<Self, MetricError> {
        if path.is_dir() {
            Self::open_folder(path)
        } else if path.extension().is_some_and(|e| e == "npy") {
            Self::open_npy(path)
        } else if path.exists() {
            Err(images_error(
                path,
                "expected a .npy array of images or a folder of PNG/JPEG files",
            ))
        } else {
            Err(images_error(path, "no such file or folder"))
        }
    }

    fn open_npy(path: &Path) -> Result<Self, MetricError> {
        let npy = open_npy_file(path)?;
        let error = |m: String| images_error(path, m);
        if npy.order() == npyz::Order::Fortran {
            return Err(error(
                "Fortran-ordered arrays are not read; save it C-ordered (numpy's default)".into(),
            ));
        }
        let descr = npy.dtype().descr();
        let pixels = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
            "u1" => Pixels::Bytes,
            "f4" => Pixels::Unit,
            other => {
                return Err(error(format!(
                    "dtype {other}; expected uint8 pixels or float32 in [-1, 1]"
                )))
            }
        };
        let shape: Vec<i64> = npy.shape().iter().map(|&d| d as i64).collect();
        let channel = |c: i64| c == 1 || c == 3;
        let (count, chw, channels_last) = match (pixels, &shape[..]) {
            (_, &[n, h, w]) => (n, [1, h, w], true),
            (Pixels::Bytes, &[n, h, w, c]) if channel(c) => (n, [c, h, w], true),
            (Pixels::Unit, &[n, c, h, w]) if channel(c) => (n, [c, h, w], false),
            (_, &[n, c, h, w]) if channel(c) => (n, [c, h, w], false),
            (_, &[n, h, w, c]) if channel(c) => (n, [c, h, w], true),
            _ => {
                return Err(error(format!(
                    "shape {shape:?}; expected images [N, H, W, C] or [N, C, H, W] with C = 1 or 3, or [N, H, W]"
                )))
            }
        };
        if count == 0 {
            return Err(error("holds no images".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            origin: Origin::Npy {
                pixels,
                channels_last,
            },
            count: count as usize,
            shape: chw,
        })
    }

    fn open_folder(dir: &Path) -> Result<Self, MetricError> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| images_error(dir, format!("cannot list: {e}")))?;
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        if let Some(other) = files.iter().find(|f| is_image_file(f, &UNSUPPORTED)) {
            return Err(images_error(
                other,
                "only PNG and JPEG files are read; convert the folder to PNG",
            ));
        }
        files.retain(|f| is_image_file(f, &["png", "jpg", "jpeg"]));
        let Some(first) = files.first() else {
            return Err(images_error(dir, "holds no .png, .jpg or .jpeg files"));
        };
        let size = decode(first)?.size();
        Ok(Self {
            path: dir.to_path_buf(),
            count: files.len(),
            shape: [3, size[1], size[2]],
            origin: Origin::Folder(files),
        })
    }

    /// Reads the array's elements `batch` images at a time and hands each
    /// batch's values, with its image count, to `each`.
    fn npy_batches<T: npyz::Deserialize>(
        &self,
        npy: npyz::NpyFile<BufReader<std::fs::File>>,
        batch: usize,
        per_image: usize,
        mut each: impl FnMut(Vec<T>, usize) -> Result<(), MetricError>,
    ) -> Result<(), MetricError> {
        let mut data = npy
            .data::<T>()
            .map_err(|e| images_error(&self.path, e.to_string()))?;
        let mut left = self.count;
        while left > 0 {
            let n = left.min(batch);
            let values = data
                .by_ref()
                .take(n * per_image)
                .collect::<Result<Vec<T>, _>>()
                .map_err(|e| images_error(&self.path, format!("cannot read: {e}")))?;
            each(values, n)?;
            left -= n;
        }
        Ok(())
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no images (never true for an opened source).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `[C, H, W]` of the images.
    pub fn image_shape(&self) -> [i64; 3] {
        self.shape
    }

    /// The file or folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether some of the images are JPEG files (already through the
    /// protocol's compression, for one).
    pub fn holds_jpeg_files(&self) -> bool {
        match &self.origin {
            Origin::Folder(files) => files.iter().any(|f| is_image_file(f, &["jpg", "jpeg"])),
            Origin::Npy { .. } => false,
        }
    }

    /// Calls `each` with the images in order, `batch` at a time, as uint8
    /// `[B, C, H, W]`.
    ///
    /// # Errors
    /// [`MetricError::Images`] for an unreadable file or an image of another
    /// size; the first error `each` returns.
    pub fn for_each_batch(
        &self,
        batch: usize,
        mut each: impl FnMut(Tensor) -> Result<(), MetricError>,
    ) -> Result<(), MetricError> {
        let batch = batch.max(1);
        match &self.origin {
            Origin::Folder(files) => {
                for chunk in files.chunks(batch) {
                    let images = chunk
                        .iter()
                        .map(|f| {
                            let image = decode(f)?;
                            if image.size()[1..] != self.shape[1..] {
                                return Err(images_error(
                                    f,
                                    format!(
                                        "is {}x{}, the folder's first image {}x{}; FID needs one size",
                                        image.size()[2],
                                        image.size()[1],
                                        self.shape[2],
                                        self.shape[1]
                                    ),
                                ));
                            }
                            Ok(image)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    each(Tensor::stack(&images, 0))?;
                }
            }
            Origin::Npy {
                pixels,
                channels_last,
            } => {
                let [c, h, w] = self.shape;
                let per_image = (c * h * w) as usize;
                let npy = open_npy_file(&self.path)?;
                let to_batch = |t: Tensor, n: usize| {
                    if *channels_last {
                        t.view([n as i64, h, w, c])
                            .permute([0, 3, 1, 2])
                            .contiguous()
                    } else {
                        t.view([n as i64, c, h, w])
                    }
                };
                match pixels {
                    Pixels::Bytes => {
                        self.npy_batches(npy, batch, per_image, |values: Vec<u8>, n| {
                            each(to_batch(Tensor::from_slice(&values), n))
                        })?
                    }
                    Pixels::Unit => {
                        self.npy_batches(npy, batch, per_image, |values: Vec<f32>, n| {
                            check_unit_range(&self.path, &values)?;
                            let unit = Tensor::from_slice(&values);
                            each(to_batch(envs::images::to_pixels(&unit), n))
                        })?
                    }
                }
            }
        }
        Ok(())
    }
}

/// Refuses float pixels that are not finite or far outside [-1, 1].
fn check_unit_range(path: &Path, values: &[f32]) -> Result<(), MetricError> {
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(images_error(
            path,
            format!("holds the non-finite value {bad}"),
        ));
    }
    // Samples overshoot [-1, 1] and are clamped, as a PNG of them would be;
    // a solver that ends near sigma = 0 (DPM-Solver, iPNDM) leaves a few
    // values far out. Pixels in [0, 255] saved as floats are refused: they
    // are never negative, and many of them lie beyond the limit.
    let beyond = values.iter().filter(|v| v.abs() > FLOAT_LIMIT).count();
    let negative = values.iter().any(|&v| v < 0.0);
    if beyond > 0 && (!negative || beyond * OUTLIER_SHARE > values.len()) {
        let bad = values.iter().find(|v| v.abs() > FLOAT_LIMIT).unwrap();
        return Err(images_error(
            path,
            format!(
                "holds {bad} ({beyond} of {} values beyond ±{FLOAT_LIMIT}{}): float images are read in the model's range [-1, 1] (a few outliers of samples are clamped); save pixels as uint8",
                values.len(),
                if negative { "" } else { ", none negative" }
            ),
        ));
    }
    Ok(())
}

fn open_npy_file(path: &Path) -> Result<npyz::NpyFile<BufReader<std::fs::File>>, MetricError> {
    let file =
        std::fs::File::open(path).map_err(|e| images_error(path, format!("cannot open: {e}")))?;
    npyz::NpyFile::new(BufReader::new(file))
        .map_err(|e| images_error(path, format!("not a .npy array: {e}")))
}

/// One image file as uint8 RGB `[3, H, W]`: a JPEG by libjpeg-turbo as PIL
/// decodes it ([`jpeg::Decoder`]), a PNG by the `png` decoder (lossless, so
/// any decoder gives PIL's pixels).
fn decode(path: &Path) -> Result<Tensor, MetricError> {
    let (data, w, h) = if is_image_file(path, &["jpg", "jpeg"]) {
        let bytes =
            std::fs::read(path).map_err(|e| images_error(path, format!("cannot read: {e}")))?;
        let image = jpeg::Decoder::new()?
            .decode(&bytes)
            .map_err(|e| images_error(path, format!("cannot decode: {e}")))?;
        (image.data, image.width as i64, image.height as i64)
    } else {
        let image = image::open(path)
            .map_err(|e| images_error(path, format!("cannot decode: {e}")))?
            .to_rgb8();
        let (w, h) = image.dimensions();
        (image.into_raw(), i64::from(w), i64::from(h))
    };
    Ok(Tensor::from_slice(&data)
        .view([h, w, 3])
        .permute([2, 0, 1])
        .contiguous()
        .to_kind(Kind::Uint8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(name: &str, t: &Tensor) -> PathBuf {
        let path = std::env::temp_dir().join(format!("shortcut-{}-{name}.npy", std::process::id()));
        t.write_npy(&path).unwrap();
        path
    }

    fn read_all(path: &Path, batch: usize) -> Result<Tensor, MetricError> {
        let source = ImageSource::open(path)?;
        let mut parts = Vec::new();
        source.for_each_batch(batch, |b| {
            parts.push(b);
            Ok(())
        })?;
        Ok(Tensor::cat(&parts, 0))
    }

    #[test]
    fn pixels_and_unit_floats_in_either_layout_read_alike() {
        let pixels = Tensor::arange(5 * 3 * 4 * 2, (Kind::Int64, tch::Device::Cpu))
            .remainder(256)
            .to_kind(Kind::Uint8)
            .view([5, 3, 4, 2]);
        let nhwc = written("nhwc", &pixels.permute([0, 2, 3, 1]).contiguous());
        let nchw = written("nchw", &pixels);
        let unit = written("unit", &envs::images::to_unit_range(&pixels));
        for (path, batch) in [(&nhwc, 2), (&nchw, 3), (&unit, 5)] {
            let got = read_all(path, batch).unwrap();
            assert_eq!(got.size(), [5, 3, 4, 2]);
            assert!(got.equal(&pixels), "{}", path.display());
        }
        for p in [nhwc, nchw, unit] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn jpeg_files_are_read_with_the_pil_decoder() {
        let dir = std::env::temp_dir().join(format!("shortcut-{}-jpegs", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (h, w) = (7usize, 12usize);
        let mut encoder = jpeg::Encoder::new(75).unwrap();
        let mut decoder = jpeg::Decoder::new().unwrap();
        let mut want = Vec::new();
        for i in 0..3u8 {
            let data: Vec<u8> = (0..h * w * 3)
                .map(|k| (k as u8).wrapping_mul(29).wrapping_add(i * 50))
                .collect();
            let bytes = encoder
                .encode(jpeg::Pixels {
                    data: &data,
                    width: w,
                    height: h,
                    channels: 3,
                })
                .unwrap();
            std::fs::write(dir.join(format!("{i}.jpg")), &bytes).unwrap();
            want.extend(decoder.decode(&bytes).unwrap().data);
        }
        let source = ImageSource::open(&dir).unwrap();
        assert!(source.holds_jpeg_files());
        let got = read_all(&dir, 2).unwrap();
        assert_eq!(got.size(), [3, 3, h as i64, w as i64]);
        let want = Tensor::from_slice(&want)
            .view([3, h as i64, w as i64, 3])
            .permute([0, 3, 1, 2]);
        assert!(got.equal(&want));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn floats_in_pixel_range_are_refused() {
        let path = written(
            "pixelfloats",
            &(Tensor::ones([2, 3, 4, 4], (Kind::Float, tch::Device::Cpu)) * 200.0),
        );
        let err = read_all(&path, 2).unwrap_err().to_string();
        assert!(err.contains("holds 200") && err.contains("uint8"), "{err}");
        std::fs::remove_file(path).unwrap();

        // Mostly black pixels, a few bright ones: none negative, refused.
        let dark = Tensor::zeros([2, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
        let _ = dark.get(0).get(0).get(0).get(0).fill_(255.0);
        let path = written("darkpixelfloats", &dark);
        let err = read_all(&path, 2).unwrap_err().to_string();
        assert!(err.contains("none negative"), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_few_far_outliers_of_samples_are_clamped() {
        let samples = Tensor::linspace(-1.0, 1.0, 2 * 3 * 8 * 8, (Kind::Float, tch::Device::Cpu))
            .view([2, 3, 8, 8]);
        let _ = samples.get(0).get(0).get(0).get(0).fill_(-9.0);
        let _ = samples.get(1).get(2).get(7).get(7).fill_(7.5);
        let path = written("outliers", &samples);
        let got = read_all(&path, 2).unwrap();
        let want = envs::images::to_pixels(&samples.clamp(-1.0, 1.0));
        assert!(got.equal(&want));
        assert_eq!(got.get(0).get(0).get(0).get(0).int64_value(&[]), 0);
        assert_eq!(got.get(1).get(2).get(7).get(7).int64_value(&[]), 255);
        std::fs::remove_file(path).unwrap();
    }
}
