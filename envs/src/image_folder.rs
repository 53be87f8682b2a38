//! A folder of images (PNG or JPEG) as a data set: CelebA's
//! `img_align_celeba`, or any folder of pictures. Each image is decoded to
//! RGB, cut by a [`Crop`], resized to `size` x `size` with an antialiased
//! bilinear filter (PIL's `Image.resize(..., BILINEAR)`, which torchvision's
//! `Resize` calls on images), and kept as uint8.
//!
//! Splits come from CelebA's `list_eval_partition.txt` (`<file> <0|1|2>`:
//! training, validation, test) when the folder or its parent holds one, or
//! from a partition file named in the configuration; without one every image
//! is training data and there is no test split.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::images::Split;
use crate::EnvError;

/// How each image is cut before it is resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Crop {
    /// The largest centred square.
    #[default]
    Center,
    /// The DDIM code's CelebA crop: the 128 x 128 box centred at column 89,
    /// row 121 of the aligned 178 x 218 images (rows 57..185, columns 25..153).
    CelebA,
    /// A box given in pixels.
    Box {
        /// First row.
        top: u32,
        /// First column.
        left: u32,
        /// Rows.
        height: u32,
        /// Columns.
        width: u32,
    },
    /// No cut: the whole image is resized (its aspect ratio is not kept).
    Whole,
}

impl Crop {
    /// The box `(top, left, height, width)` cut from a `width` x `height` image.
    fn bounds(self, image_width: u32, image_height: u32) -> (u32, u32, u32, u32) {
        match self {
            Crop::Center => {
                let side = image_width.min(image_height);
                (
                    (image_height - side) / 2,
                    (image_width - side) / 2,
                    side,
                    side,
                )
            }
            Crop::CelebA => (121 - 64, 89 - 64, 128, 128),
            Crop::Box {
                top,
                left,
                height,
                width,
            } => (top, left, height, width),
            Crop::Whole => (0, 0, image_height, image_width),
        }
    }
}

/// The name of CelebA's split file, looked for in the folder and its parent.
pub const PARTITION_FILE: &str = "list_eval_partition.txt";

fn data_error(path: &Path, message: impl Into<String>) -> EnvError {
    EnvError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// The partition file of `dir`: `partition` if given, else
/// `list_eval_partition.txt` in the folder or its parent, if either exists.
pub fn partition_file(dir: &Path, partition: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = partition {
        return Some(p.to_path_buf());
    }
    let inside = dir.join(PARTITION_FILE);
    let beside = dir.parent().map(|p| p.join(PARTITION_FILE));
    [Some(inside), beside]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
}

/// The image files of `split`, in order: from the partition file when there
/// is one (training = 0, test = 2, as torchvision's CelebA), else every
/// image of the folder sorted by name (training only).
pub fn split_files(
    dir: &Path,
    partition: Option<&Path>,
    split: Split,
) -> Result<Vec<PathBuf>, EnvError> {
    if !dir.is_dir() {
        return Err(data_error(
            dir,
            "missing (expected a folder of PNG or JPEG images)",
        ));
    }
    let files = match partition_file(dir, partition) {
        Some(file) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| data_error(&file, format!("cannot read the partition file: {e}")))?;
            let wanted = match split {
                Split::Train => "0",
                Split::Test => "2",
            };
            let mut files = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (Some(name), Some(part), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(data_error(
                        &file,
                        format!(
                            "line {}: expected `<image file> <0|1|2>`, found {line:?}",
                            i + 1
                        ),
                    ));
                };
                if !matches!(part, "0" | "1" | "2") {
                    return Err(data_error(
                        &file,
                        format!("line {}: partition {part:?}, expected 0, 1 or 2", i + 1),
                    ));
                }
                if part == wanted {
                    let path = dir.join(name);
                    if !path.is_file() {
                        return Err(data_error(
                            &path,
                            format!("missing (listed in {})", file.display()),
                        ));
                    }
                    files.push(path);
                }
            }
            files
        }
        None => {
            if split == Split::Test {
                return Err(data_error(
                    dir,
                    format!("no test split (no {PARTITION_FILE} in the folder or its parent, and no partition file given)"),
                ));
            }
            let entries = std::fs::read_dir(dir)
                .map_err(|e| data_error(dir, format!("cannot list the folder: {e}")))?;
            let mut files = Vec::new();
            for entry in entries {
                let path = entry
                    .map_err(|e| data_error(dir, format!("cannot list the folder: {e}")))?
                    .path();
                if path.is_file() && is_image_file(&path) {
                    files.push(path);
                }
            }
            files.sort();
            files
        }
    };
    if files.is_empty() {
        return Err(data_error(
            dir,
            format!("no images for the {split:?} split (expected .png, .jpg or .jpeg files)"),
        ));
    }
    Ok(files)
}

/// One image file decoded, cut and resized: uint8 `[3, size, size]`.
pub fn load_image(path: &Path, size: i64, crop: Crop) -> Result<Tensor, EnvError> {
    let rgb = image::open(path)
        .map_err(|e| data_error(path, format!("not a readable PNG or JPEG image: {e}")))?
        .to_rgb8();
    let (width, height) = rgb.dimensions();
    let (top, left, h, w) = crop.bounds(width, height);
    if h == 0 || w == 0 || top + h > height || left + w > width {
        return Err(data_error(
            path,
            format!(
                "a {width} x {height} image cannot be cut by {crop:?} (rows {top}..{}, columns {left}..{})",
                top + h,
                left + w
            ),
        ));
    }
    let hwc = Tensor::from_slice(rgb.as_raw()).view([height as i64, width as i64, 3]);
    let chw = hwc
        .narrow(0, top as i64, h as i64)
        .narrow(1, left as i64, w as i64)
        .permute([2, 0, 1]);
    if h as i64 == size && w as i64 == size {
        return Ok(chw.contiguous());
    }
    Ok(chw
        .to_kind(Kind::Float)
        .unsqueeze(0)
        .internal_upsample_bilinear2d_aa([size, size], false, None, None)
        .squeeze_dim(0)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8))
}

/// The images of `split` as uint8 `[N, 3, size, size]`, decoded on every core.
pub fn load_folder(
    dir: &Path,
    partition: Option<&Path>,
    size: i64,
    crop: Crop,
    split: Split,
) -> Result<Tensor, EnvError> {
    let files = split_files(dir, partition, split)?;
    let per_image = (3 * size * size) as usize;
    let mut pixels = vec![0u8; files.len() * per_image];
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let per_worker = files.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(per_worker)
            .zip(pixels.chunks_mut(per_worker * per_image))
            .map(|(paths, out)| {
                scope.spawn(move || {
                    for (path, slot) in paths.iter().zip(out.chunks_mut(per_image)) {
                        let image = load_image(path, size, crop)?;
                        image.copy_data_u8(slot, per_image);
                    }
                    Ok::<(), EnvError>(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("an image-decoding thread panicked"))
    })?;
    Ok(Tensor::from_slice(&pixels).view([files.len() as i64, 3, size, size]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shortcut-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_png(path: &Path, width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) {
        let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb(pixel(x, y)));
        image.save(path).unwrap();
    }

    #[test]
    fn crops_cut_the_documented_boxes() {
        assert_eq!(Crop::CelebA.bounds(178, 218), (57, 25, 128, 128));
        assert_eq!(Crop::Center.bounds(178, 218), (20, 0, 178, 178));
        assert_eq!(Crop::Whole.bounds(10, 7), (0, 0, 7, 10));
    }

    #[test]
    fn a_folder_reads_in_name_order_and_crops_without_resizing_at_size() {
        let dir = temp("order");
        // Image k is k everywhere in red, its row in green, its column in blue.
        for k in [2u8, 0, 1] {
            write_png(&dir.join(format!("{k:03}.png")), 6, 8, |x, y| {
                [k, y as u8, x as u8]
            });
        }
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
        let images = load_folder(&dir, None, 6, Crop::Center, Split::Train).unwrap();
        assert_eq!(images.size(), vec![3, 3, 6, 6]);
        for k in 0..3 {
            assert_eq!(images.int64_value(&[k, 0, 0, 0]), k);
        }
        // The centred 6 x 6 square of an 8-row image starts at row 1.
        assert_eq!(images.int64_value(&[0, 1, 0, 0]), 1);
        assert_eq!(images.int64_value(&[0, 2, 0, 5]), 5);
        let err = load_folder(&dir, None, 6, Crop::Center, Split::Test)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no test split"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_partition_file_picks_the_splits() {
        let dir = temp("partition");
        let images = dir.join("img_align_celeba");
        std::fs::create_dir_all(&images).unwrap();
        for k in 0..4u8 {
            write_png(&images.join(format!("{k}.png")), 4, 4, |_, _| {
                [k * 10, 0, 0]
            });
        }
        std::fs::write(
            dir.join(PARTITION_FILE),
            "0.png 0\n1.png 2\n2.png 1\n3.png 0\n",
        )
        .unwrap();
        let train = load_folder(&images, None, 4, Crop::Whole, Split::Train).unwrap();
        let test = load_folder(&images, None, 4, Crop::Whole, Split::Test).unwrap();
        assert_eq!(train.size()[0], 2);
        assert_eq!(train.int64_value(&[1, 0, 0, 0]), 30);
        assert_eq!(test.size()[0], 1);
        assert_eq!(test.int64_value(&[0, 0, 2, 2]), 10);
        std::fs::write(dir.join(PARTITION_FILE), "0.png 0\n1.png x\n").unwrap();
        let err = load_folder(&images, None, 4, Crop::Whole, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2: partition \"x\", expected 0, 1 or 2"),
            "{err}"
        );
        std::fs::write(dir.join(PARTITION_FILE), "0.png 0\n9.png 0\n").unwrap();
        let err = load_folder(&images, None, 4, Crop::Whole, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("9.png: missing (listed in"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_images_and_crops_are_named() {
        let dir = temp("bad");
        std::fs::write(dir.join("broken.png"), b"\x89PNG not really").unwrap();
        let err = load_folder(&dir, None, 4, Crop::Center, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken.png") && err.contains("not a readable PNG or JPEG"),
            "{err}"
        );
        std::fs::remove_file(dir.join("broken.png")).unwrap();
        write_png(&dir.join("small.png"), 20, 20, |_, _| [0, 0, 0]);
        let err = load_folder(&dir, None, 4, Crop::CelebA, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("small.png") && err.contains("cannot be cut by CelebA"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let err = load_folder(&dir, None, 4, Crop::Center, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing (expected a folder"), "{err}");
    }
}
