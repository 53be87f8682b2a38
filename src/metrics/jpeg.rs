//! JPEG as PIL writes and reads it, for the paper's FID protocol.
//!
//! Fan and Lee's `generate.py` saves every sample with torchvision's
//! `save_image(x, 'k.jpg')`: pixels `x * 255 + 0.5` clamped to uint8, a
//! grey image repeated to RGB, then PIL's `Image.fromarray(a).save(path)`
//! with PIL's defaults (quality 75, 4:2:0 chroma subsampling, baseline
//! Huffman tables, no optimisation); pytorch-fid then reads the files back
//! with PIL (`Image.open(f).convert('RGB')`). Both ends are libjpeg-turbo,
//! which we call through the `turbojpeg` crate with the same settings: the
//! encoder writes PIL's bytes (tests/jpeg_pil.rs compares them byte for
//! byte), the decoder uses libjpeg's defaults as PIL does (the accurate
//! integer IDCT, fancy chroma upsampling) and gives PIL's pixels.
//!
//! - [`Encoder`]: uint8 RGB or grey pixels to JPEG bytes;
//! - [`Decoder`]: JPEG bytes to RGB pixels (grey JPEGs repeated to RGB);
//! - [`RoundTrip`]: both, on one image or a batch of images as tensors,
//!   which is what the protocol does to samples before their features.

use tch::{Kind, Tensor};
use turbojpeg::{Colorspace, Compressor, Decompressor, Image, PixelFormat, Subsamp};

use super::error::MetricError;

/// PIL's JPEG quality when `save` is given none, which torchvision's
/// `save_image` (and so the paper's `generate.py`) uses.
pub const PIL_DEFAULT_QUALITY: u8 = 75;

/// uint8 pixels of one image, row-major with channels last (HWC): 1 value
/// per pixel (grey) or 3 (RGB).
#[derive(Debug, Clone, Copy)]
pub struct Pixels<'a> {
    /// `height * width * channels` values.
    pub data: &'a [u8],
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
}

impl Pixels<'_> {
    /// Says what the image is, for error messages: `a 28x28 grey image`.
    fn describe(&self) -> String {
        let kind = match self.channels {
            1 => "grey".to_string(),
            3 => "RGB".to_string(),
            c => format!("{c}-channel"),
        };
        format!("a {}x{} {kind} image", self.width, self.height)
    }

    /// Refuses pixel buffers that do not describe the image.
    fn check(&self) -> Result<(), MetricError> {
        let reason = if self.channels != 1 && self.channels != 3 {
            Some(format!(
                "expected 1 (grey) or 3 (RGB) channels, got {}",
                self.channels
            ))
        } else if self.width == 0 || self.height == 0 {
            Some("the image is empty".to_string())
        } else {
            let want = self.width * self.height * self.channels;
            (self.data.len() != want).then(|| {
                format!(
                    "expected {want} bytes (height x width x channels), got {}",
                    self.data.len()
                )
            })
        };
        match reason {
            Some(message) => Err(jpeg_error("encoding", self.describe(), message)),
            None => Ok(()),
        }
    }
}

/// A decoded image: uint8 RGB pixels, row-major with channels last (HWC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// `height * width * 3` values.
    pub data: Vec<u8>,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

fn jpeg_error(action: &'static str, what: String, message: impl ToString) -> MetricError {
    MetricError::Jpeg {
        action,
        what,
        message: message.to_string(),
    }
}

/// Refuses qualities libjpeg does not take (PIL's range is 1 to 100 too;
/// 0 would silently become 1).
fn check_quality(quality: u8) -> Result<(), MetricError> {
    if (1..=100).contains(&quality) {
        Ok(())
    } else {
        Err(MetricError::InvalidParameter {
            name: "jpeg quality",
            reason: format!(
                "must lie in 1..=100 (PIL's default is {PIL_DEFAULT_QUALITY}), got {quality}"
            ),
        })
    }
}

/// Writes JPEG bytes as PIL's `Image.save(path, quality=Q)` does for an RGB
/// image: libjpeg-turbo's baseline encoder, 4:2:0 chroma subsampling, the
/// standard tables scaled to the quality, the accurate integer DCT, no
/// Huffman optimisation, a JFIF header.
#[derive(Debug)]
pub struct Encoder {
    compressor: Compressor,
    quality: u8,
    /// A grey image repeated to RGB.
    rgb: Vec<u8>,
}

impl Encoder {
    /// An encoder at `quality` (1 to 100; PIL's default is
    /// [`PIL_DEFAULT_QUALITY`]).
    ///
    /// # Errors
    /// [`MetricError::InvalidParameter`] for a quality outside 1..=100;
    /// [`MetricError::Jpeg`] when libjpeg-turbo cannot be set up.
    pub fn new(quality: u8) -> Result<Self, MetricError> {
        check_quality(quality)?;
        let setup = |e: turbojpeg::Error| jpeg_error("encoding", "(setting up)".into(), e);
        let mut compressor = Compressor::new().map_err(setup)?;
        compressor.set_quality(i32::from(quality)).map_err(setup)?;
        compressor.set_subsamp(Subsamp::Sub2x2).map_err(setup)?;
        compressor.set_optimize(false).map_err(setup)?;
        compressor.set_progressive(false).map_err(setup)?;
        Ok(Self {
            compressor,
            quality,
            rgb: Vec::new(),
        })
    }

    /// The JPEG quality.
    pub fn quality(&self) -> u8 {
        self.quality
    }

    /// The JPEG file's bytes for `image`; a grey image is written as RGB
    /// with the grey value in all three channels, as torchvision's
    /// `save_image` does (a 3-component JPEG, not a greyscale one).
    ///
    /// # Errors
    /// [`MetricError::Jpeg`] for pixels that do not describe the image, or
    /// when libjpeg-turbo fails.
    pub fn encode(&mut self, image: Pixels<'_>) -> Result<Vec<u8>, MetricError> {
        image.check()?;
        let rgb: &[u8] = if image.channels == 1 {
            self.rgb.clear();
            self.rgb.extend(image.data.iter().flat_map(|&v| [v, v, v]));
            &self.rgb
        } else {
            image.data
        };
        self.compressor
            .compress_to_vec(Image {
                pixels: rgb,
                width: image.width,
                pitch: image.width * 3,
                height: image.height,
                format: PixelFormat::RGB,
            })
            .map_err(|e| jpeg_error("encoding", image.describe(), e))
    }
}

/// Reads JPEG bytes as PIL's `Image.open(f).convert('RGB')` does:
/// libjpeg-turbo's decoder with libjpeg's defaults (the accurate integer
/// IDCT, fancy chroma upsampling), a greyscale JPEG repeated to RGB.
#[derive(Debug)]
pub struct Decoder {
    decompressor: Decompressor,
}

impl Decoder {
    /// A decoder.
    ///
    /// # Errors
    /// [`MetricError::Jpeg`] when libjpeg-turbo cannot be set up.
    pub fn new() -> Result<Self, MetricError> {
        let setup = |e: turbojpeg::Error| jpeg_error("decoding", "(setting up)".into(), e);
        let mut decompressor = Decompressor::new().map_err(setup)?;
        // libjpeg's default, which PIL keeps (and turbojpeg's too): smooth
        // ("fancy") upsampling of subsampled chroma.
        decompressor.set_fast_upsample(false).map_err(setup)?;
        Ok(Self { decompressor })
    }

    /// The RGB pixels of the JPEG file `bytes`.
    ///
    /// # Errors
    /// [`MetricError::Jpeg`] for bytes that are not a JPEG libjpeg-turbo
    /// reads, and for CMYK and YCCK JPEGs (which PIL converts to RGB by its
    /// own formula, not libjpeg's).
    pub fn decode(&mut self, bytes: &[u8]) -> Result<RgbImage, MetricError> {
        let what = || format!("{} bytes", bytes.len());
        let header = self
            .decompressor
            .read_header(bytes)
            .map_err(|e| jpeg_error("decoding", what(), e))?;
        if matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK) {
            return Err(jpeg_error(
                "decoding",
                what(),
                format!(
                    "a {:?} JPEG; only RGB, YCbCr and greyscale JPEGs are read (convert it to RGB)",
                    header.colorspace
                ),
            ));
        }
        let (width, height) = (header.width, header.height);
        let mut data = vec![0u8; width * height * 3];
        self.decompressor
            .decompress(
                bytes,
                Image {
                    pixels: &mut data[..],
                    width,
                    pitch: width * 3,
                    height,
                    format: PixelFormat::RGB,
                },
            )
            .map_err(|e| {
                jpeg_error(
                    "decoding",
                    format!("a {width}x{height} JPEG of {}", what()),
                    e,
                )
            })?;
        Ok(RgbImage {
            data,
            width,
            height,
        })
    }
}

/// Pixels through a JPEG file and back, as the paper's protocol treats
/// samples: written as PIL writes a `.jpg` at the quality, read as PIL
/// reads it.
#[derive(Debug)]
pub struct RoundTrip {
    encoder: Encoder,
    decoder: Decoder,
}

impl RoundTrip {
    /// A round trip at `quality` (the paper: [`PIL_DEFAULT_QUALITY`]).
    ///
    /// # Errors
    /// Those of [`Encoder::new`] and [`Decoder::new`].
    pub fn new(quality: u8) -> Result<Self, MetricError> {
        Ok(Self {
            encoder: Encoder::new(quality)?,
            decoder: Decoder::new()?,
        })
    }

    /// The JPEG quality.
    pub fn quality(&self) -> u8 {
        self.encoder.quality()
    }

    /// `image` written as a JPEG and read back, as RGB.
    ///
    /// # Errors
    /// Those of [`Encoder::encode`] and [`Decoder::decode`].
    pub fn image(&mut self, image: Pixels<'_>) -> Result<RgbImage, MetricError> {
        let bytes = self.encoder.encode(image)?;
        self.decoder.decode(&bytes)
    }

    /// A batch of uint8 images `[B, C, H, W]` (C = 1 or 3, on any device)
    /// through JPEG and back: uint8 `[B, C, H, W]` on the CPU.
    ///
    /// Grey images come back grey. Their JPEG is RGB (torchvision's), but
    /// libjpeg's fixed-point colour conversion of R = G = B gives chroma of
    /// exactly 128, which decodes to R = G = B = Y again: PIL's RGB pixels
    /// are the one channel repeated, so nothing is lost by keeping one (and
    /// a grey classifier can still take them).
    ///
    /// # Errors
    /// [`MetricError::Jpeg`] for a tensor that is not such a batch, naming
    /// its shape and kind, and for an image that fails, naming its index.
    pub fn batch(&mut self, images: &Tensor) -> Result<Tensor, MetricError> {
        let size = images.size();
        let kind = images.kind();
        let (b, c, h, w) = match size[..] {
            [b, c, h, w] if kind == Kind::Uint8 && (c == 1 || c == 3) && h > 0 && w > 0 => {
                (b as usize, c as usize, h as usize, w as usize)
            }
            _ => {
                return Err(jpeg_error(
                    "encoding",
                    format!("a {kind:?} tensor of shape {size:?}"),
                    "expected uint8 images [B, C, H, W] with C = 1 or 3",
                ))
            }
        };
        let hwc = images
            .to_device(tch::Device::Cpu)
            .permute([0, 2, 3, 1])
            .contiguous();
        let per_image = h * w * c;
        let mut values = vec![0u8; b * per_image];
        hwc.copy_data(&mut values, b * per_image);
        let mut out = Vec::with_capacity(b * h * w * c);
        for (i, data) in values.chunks_exact(per_image).enumerate() {
            let image = Pixels {
                data,
                width: w,
                height: h,
                channels: c,
            };
            let decoded = self.image(image).map_err(|e| match e {
                MetricError::Jpeg {
                    action,
                    what,
                    message,
                } => jpeg_error(action, format!("image {i} of the batch ({what})"), message),
                other => other,
            })?;
            if c == 1 {
                debug_assert!(decoded
                    .data
                    .chunks_exact(3)
                    .all(|p| p[0] == p[1] && p[1] == p[2]));
                out.extend(decoded.data.iter().step_by(3));
            } else {
                out.extend_from_slice(&decoded.data);
            }
        }
        Ok(Tensor::from_slice(&out)
            .view([b as i64, h as i64, w as i64, c as i64])
            .permute([0, 3, 1, 2])
            .contiguous())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth RGB image with a little texture, `h` x `w`.
    fn smooth(h: usize, w: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(h * w * 3);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let v = 128.0
                        + 90.0 * ((x as f64 * 0.4 + c as f64) + (y as f64 * 0.25)).sin()
                        + ((x * 7 + y * 13 + c * 5) % 11) as f64;
                    data.push(v.clamp(0.0, 255.0) as u8);
                }
            }
        }
        data
    }

    fn rgb(data: &[u8], h: usize, w: usize) -> Pixels<'_> {
        Pixels {
            data,
            width: w,
            height: h,
            channels: 3,
        }
    }

    fn largest_error(a: &[u8], b: &[u8]) -> u8 {
        a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
    }

    #[test]
    fn writes_a_baseline_4_2_0_jfif_file_of_the_image_size() {
        let data = smooth(17, 5);
        let bytes = Encoder::new(75).unwrap().encode(rgb(&data, 17, 5)).unwrap();
        assert_eq!(&bytes[..4], &[0xFF, 0xD8, 0xFF, 0xE0], "SOI then JFIF APP0");
        assert_eq!(&bytes[6..11], b"JFIF\0");
        assert!(
            bytes.windows(2).any(|w| w == [0xFF, 0xC0]),
            "a baseline (SOF0) frame"
        );
        assert!(
            !bytes.windows(2).any(|w| w == [0xFF, 0xC2]),
            "not progressive"
        );
        let header = turbojpeg::read_header(&bytes).unwrap();
        assert_eq!((header.width, header.height), (5, 17));
        assert_eq!(header.subsamp, Subsamp::Sub2x2);
        assert_eq!(header.colorspace, Colorspace::YCbCr);
    }

    #[test]
    fn grey_is_written_as_the_grey_repeated_to_rgb() {
        let grey: Vec<u8> = (0..28 * 28).map(|i| ((i * 37) % 256) as u8).collect();
        let repeated: Vec<u8> = grey.iter().flat_map(|&v| [v, v, v]).collect();
        let mut encoder = Encoder::new(75).unwrap();
        let from_grey = encoder
            .encode(Pixels {
                data: &grey,
                width: 28,
                height: 28,
                channels: 1,
            })
            .unwrap();
        let from_rgb = encoder.encode(rgb(&repeated, 28, 28)).unwrap();
        assert_eq!(from_grey, from_rgb);
        let header = turbojpeg::read_header(&from_grey).unwrap();
        assert_eq!(header.subsamp, Subsamp::Sub2x2, "three components");
    }

    #[test]
    fn the_round_trip_loses_less_at_higher_quality() {
        let data = smooth(32, 32);
        let error = |quality| {
            let back = RoundTrip::new(quality)
                .unwrap()
                .image(rgb(&data, 32, 32))
                .unwrap();
            assert_eq!((back.width, back.height), (32, 32));
            let total: u64 = data
                .iter()
                .zip(&back.data)
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum();
            (total, largest_error(&data, &back.data))
        };
        let (q10, _) = error(10);
        let (q75, max75) = error(75);
        let (q100, max100) = error(100);
        assert!(q10 > q75 && q75 > q100, "{q10} {q75} {q100}");
        assert!(q75 > 0, "JPEG at 75 is lossy");
        // At 100 only rounding and the halved chroma remain.
        assert!(max100 < max75, "{max100} vs {max75}");
    }

    #[test]
    fn a_batch_is_each_image_through_the_round_trip() {
        let (b, h, w) = (3usize, 9usize, 14usize);
        let images: Vec<Vec<u8>> = (0..b)
            .map(|i| {
                smooth(h, w)
                    .iter()
                    .map(|v| v.wrapping_add(40 * i as u8))
                    .collect()
            })
            .collect();
        let flat: Vec<u8> = images.concat();
        let batch = Tensor::from_slice(&flat)
            .view([b as i64, h as i64, w as i64, 3])
            .permute([0, 3, 1, 2]);
        let mut trip = RoundTrip::new(75).unwrap();
        let out = trip.batch(&batch).unwrap();
        assert_eq!(out.size(), [b as i64, 3, h as i64, w as i64]);
        assert_eq!(out.kind(), Kind::Uint8);
        for (i, image) in images.iter().enumerate() {
            let want = trip.image(rgb(image, h, w)).unwrap();
            let got = out.get(i as i64).permute([1, 2, 0]).contiguous();
            let mut values = vec![0u8; h * w * 3];
            got.copy_data(&mut values, h * w * 3);
            assert_eq!(values, want.data, "image {i}");
        }
        // Grey batches come back grey: the grey's RGB round trip has three
        // equal channels, and the batch keeps one.
        let grey = batch.narrow(1, 0, 1);
        let back = trip.batch(&grey).unwrap();
        assert_eq!(back.size(), [b as i64, 1, h as i64, w as i64]);
        let as_rgb = trip.batch(&grey.repeat([1, 3, 1, 1])).unwrap();
        for channel in 0..3 {
            assert!(
                as_rgb.narrow(1, channel, 1).equal(&back),
                "channel {channel}"
            );
        }
        assert!(!back.equal(&grey.contiguous()), "JPEG at 75 is lossy");
    }

    #[test]
    fn bad_inputs_are_named() {
        assert!(matches!(
            Encoder::new(0),
            Err(MetricError::InvalidParameter {
                name: "jpeg quality",
                ..
            })
        ));
        assert!(Encoder::new(101)
            .unwrap_err()
            .to_string()
            .contains("got 101"));
        let mut encoder = Encoder::new(75).unwrap();
        let message = encoder
            .encode(Pixels {
                data: &[0; 10],
                width: 2,
                height: 2,
                channels: 3,
            })
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("2x2 RGB image") && message.contains("expected 12 bytes"),
            "{message}"
        );
        let message = encoder
            .encode(Pixels {
                data: &[0; 8],
                width: 2,
                height: 2,
                channels: 2,
            })
            .unwrap_err()
            .to_string();
        assert!(message.contains("1 (grey) or 3 (RGB)"), "{message}");
        let png = b"\x89PNG\r\n\x1a\n not a jpeg";
        let message = Decoder::new().unwrap().decode(png).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("JPEG decoding of {} bytes: ", png.len())),
            "{message}"
        );
        let floats = Tensor::zeros([2, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
        let message = RoundTrip::new(75)
            .unwrap()
            .batch(&floats)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("[2, 3, 4, 4]") && message.contains("uint8"),
            "{message}"
        );
    }
}
