//! Renders 2-D scatter plots of point clouds to PNG bytes (no fonts, no axes
//! labels: a white canvas, a light-grey frame and alpha-blended dots), as one
//! panel or as panels side by side on shared axes.

use super::tensorboard::RecordingError;

/// One point cloud to draw.
#[derive(Clone, Copy, Debug)]
pub struct ScatterLayer<'a> {
    /// Interleaved `x, y` coordinates; a trailing odd value is ignored and
    /// points with a non-finite coordinate are skipped.
    pub points: &'a [f32],
    /// Dot color (RGB).
    pub color: [u8; 3],
    /// Dot opacity in `[0, 1]` (clamped; non-finite means opaque).
    pub alpha: f32,
    /// Side of the square dot drawn for each point, in pixels (at least 1).
    pub dot: u32,
}

/// Side of the square dot most layers use, in pixels.
pub const DOT: u32 = 3;
/// Frame color.
const FRAME: [f32; 3] = [200.0, 200.0, 200.0];
/// Relative margin added around the automatic bounds.
const MARGIN: f64 = 0.05;

/// Renders `layers` (drawn in order, later on top) into a `width` x `height`
/// RGB PNG and returns the encoded bytes.
///
/// `bounds` is `[xmin, xmax, ymin, ymax]`; when `None` it is the bounding box
/// of all finite points, widened by 5% on each side (a degenerate extent is
/// widened to a unit range around the points). The y axis points up: row 0
/// is `ymax`. Points outside the bounds are clipped.
pub fn scatter_png(
    layers: &[ScatterLayer<'_>],
    width: u32,
    height: u32,
    bounds: Option<[f64; 4]>,
) -> Result<Vec<u8>, RecordingError> {
    panels_png(&[layers], width, height, bounds)
}

/// Renders `panels` side by side, each `panel_width` x `height` pixels with
/// its own frame, all on the same axes (`bounds`, or the bounding box of
/// every panel's points as in [`scatter_png`]), into one PNG of
/// `panels.len() * panel_width` x `height` pixels.
pub fn panels_png(
    panels: &[&[ScatterLayer<'_>]],
    panel_width: u32,
    height: u32,
    bounds: Option<[f64; 4]>,
) -> Result<Vec<u8>, RecordingError> {
    if panel_width == 0 || height == 0 || panels.is_empty() {
        return Err(RecordingError::InvalidArgument(format!(
            "scatter image size must be non-zero, got {} panel(s) of {panel_width}x{height}",
            panels.len()
        )));
    }
    let bounds = match bounds {
        Some(b) => {
            if !b.iter().all(|v| v.is_finite()) || b[1] <= b[0] || b[3] <= b[2] {
                return Err(RecordingError::InvalidArgument(format!(
                    "scatter bounds must be finite with xmin < xmax and ymin < ymax, got {b:?}"
                )));
            }
            b
        }
        None => auto_bounds(panels.iter().flat_map(|p| p.iter())),
    };
    let (w, h) = (panel_width as usize, height as usize);
    let canvases: Vec<Vec<f32>> = panels
        .iter()
        .map(|p| render_panel(p, w, h, bounds))
        .collect();
    let total = w * panels.len();
    let mut pixels = Vec::with_capacity(total * h * 3);
    for row in 0..h {
        for canvas in &canvases {
            pixels.extend(
                canvas[row * w * 3..(row + 1) * w * 3]
                    .iter()
                    .map(|v| v.round().clamp(0.0, 255.0) as u8),
            );
        }
    }
    encode_rgb(&pixels, total as u32, height)
}

/// Draws `layers` on a white `w` x `h` canvas with a frame (RGB floats).
fn render_panel(layers: &[ScatterLayer<'_>], w: usize, h: usize, bounds: [f64; 4]) -> Vec<f32> {
    let [xmin, xmax, ymin, ymax] = bounds;
    let mut canvas = vec![255.0f32; w * h * 3];
    draw_frame(&mut canvas, w, h);
    let sx = (w.max(2) - 1) as f64 / (xmax - xmin);
    let sy = (h.max(2) - 1) as f64 / (ymax - ymin);
    for layer in layers {
        let alpha = if layer.alpha.is_finite() {
            layer.alpha.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let dot = i64::from(layer.dot.max(1));
        let half = (dot - 1) / 2;
        let color = layer.color.map(f32::from);
        for p in layer.points.chunks_exact(2) {
            let (x, y) = (f64::from(p[0]), f64::from(p[1]));
            if !x.is_finite() || !y.is_finite() {
                continue;
            }
            let cx = ((x - xmin) * sx).round();
            let cy = ((ymax - y) * sy).round();
            // Skip far-away points early (also avoids overflow in the casts).
            let reach = dot as f64;
            if cx < -reach || cy < -reach || cx > w as f64 + reach || cy > h as f64 + reach {
                continue;
            }
            let (cx, cy) = (cx as i64, cy as i64);
            for py in cy - half..cy - half + dot {
                for px in cx - half..cx - half + dot {
                    if px < 0 || py < 0 || px >= w as i64 || py >= h as i64 {
                        continue;
                    }
                    let i = (py as usize * w + px as usize) * 3;
                    for c in 0..3 {
                        canvas[i + c] += (color[c] - canvas[i + c]) * alpha;
                    }
                }
            }
        }
    }
    canvas
}

/// Bounding box of all finite points with a 5% margin.
fn auto_bounds<'a>(layers: impl Iterator<Item = &'a ScatterLayer<'a>>) -> [f64; 4] {
    let mut b = [
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    for p in layers.flat_map(|l| l.points.chunks_exact(2)) {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        if x.is_finite() && y.is_finite() {
            b = [b[0].min(x), b[1].max(x), b[2].min(y), b[3].max(y)];
        }
    }
    if !b[0].is_finite() {
        return [-1.0, 1.0, -1.0, 1.0];
    }
    let widen = |lo: f64, hi: f64| {
        let span = hi - lo;
        if span > 0.0 {
            [lo - MARGIN * span, hi + MARGIN * span]
        } else {
            [lo - 0.5, hi + 0.5]
        }
    };
    let [x0, x1] = widen(b[0], b[1]);
    let [y0, y1] = widen(b[2], b[3]);
    [x0, x1, y0, y1]
}

/// Draws a one-pixel light-grey frame along the image border.
fn draw_frame(canvas: &mut [f32], w: usize, h: usize) {
    let mut set = |x: usize, y: usize| {
        let i = (y * w + x) * 3;
        canvas[i..i + 3].copy_from_slice(&FRAME);
    };
    for x in 0..w {
        set(x, 0);
        set(x, h - 1);
    }
    for y in 0..h {
        set(0, y);
        set(w - 1, y);
    }
}

/// Encodes 8-bit RGB pixels as PNG.
pub(crate) fn encode_rgb(
    pixels: &[u8],
    width: u32,
    height: u32,
) -> Result<Vec<u8>, RecordingError> {
    let png_err = |e: png::EncodingError| RecordingError::Png(e.to_string());
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(pixels).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes an RGB PNG into (width, height, pixels).
    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn pixel(buf: &[u8], w: u32, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * w + x) * 3) as usize;
        [buf[i], buf[i + 1], buf[i + 2]]
    }

    #[test]
    fn non_square_size_and_point_placement() {
        let red = [0.0f32, 0.0, 10.0, 10.0];
        let blue = [10.0f32, 0.0];
        let layers = [
            ScatterLayer {
                points: &red,
                color: [255, 0, 0],
                alpha: 1.0,
                dot: DOT,
            },
            ScatterLayer {
                points: &blue,
                color: [0, 0, 255],
                alpha: 1.0,
                dot: DOT,
            },
        ];
        let bytes = scatter_png(&layers, 300, 200, Some([0.0, 10.0, 0.0, 10.0])).unwrap();
        let (w, h, buf) = decode(&bytes);
        assert_eq!((w, h), (300, 200));
        // (0, 0) is bottom-left, (10, 10) top-right, (10, 0) bottom-right.
        assert_eq!(pixel(&buf, w, 1, 198), [255, 0, 0]);
        assert_eq!(pixel(&buf, w, 298, 1), [255, 0, 0]);
        assert_eq!(pixel(&buf, w, 298, 198), [0, 0, 255]);
        // Away from points: white inside, grey frame at the border.
        assert_eq!(pixel(&buf, w, 150, 100), [255, 255, 255]);
        assert_eq!(pixel(&buf, w, 150, 0), [200, 200, 200]);
        assert_eq!(pixel(&buf, w, 0, 100), [200, 200, 200]);
    }

    #[test]
    fn auto_bounds_alpha_and_nonfinite() {
        let pts = [1.0f32, 2.0, 3.0, 4.0, f32::NAN, 0.0, f32::INFINITY, 1.0e30];
        let layers = [ScatterLayer {
            points: &pts,
            color: [0, 0, 0],
            alpha: 0.5,
            dot: DOT,
        }];
        assert_eq!(auto_bounds(layers.iter()), [0.9, 3.1, 1.9, 4.1]);
        let bytes = scatter_png(&layers, 64, 48, None).unwrap();
        let (w, h, buf) = decode(&bytes);
        assert_eq!((w, h), (64, 48));
        // Point (1, 2) sits 5% in from the bottom-left corner; half-blended.
        let x = (0.1 / 2.2 * 63.0f64).round() as u32;
        let y = ((4.1 - 2.0) / 2.2 * 47.0f64).round() as u32;
        let p = pixel(&buf, w, x, y);
        assert!(p.iter().all(|&c| (127..=128).contains(&c)), "{p:?}");
        let dark = buf
            .chunks_exact(3)
            .filter(|p| p.iter().all(|&c| c < 200))
            .count();
        assert_eq!(dark, 2 * (DOT * DOT) as usize);
    }

    #[test]
    fn empty_input_and_invalid_arguments() {
        let bytes = scatter_png(&[], 10, 5, None).unwrap();
        assert_eq!(decode(&bytes).0, 10);
        assert!(matches!(
            scatter_png(&[], 0, 5, None),
            Err(RecordingError::InvalidArgument(_))
        ));
        assert!(matches!(
            scatter_png(&[], 10, 5, Some([1.0, 1.0, 0.0, 1.0])),
            Err(RecordingError::InvalidArgument(_))
        ));
        // A single point gets a non-degenerate window.
        let one = [5.0f32, 5.0];
        let layers = [ScatterLayer {
            points: &one,
            color: [0, 128, 0],
            alpha: 1.0,
            dot: DOT,
        }];
        let (w, h, buf) = decode(&scatter_png(&layers, 11, 11, None).unwrap());
        assert_eq!(pixel(&buf, w, w / 2, h / 2), [0, 128, 0]);
    }

    #[test]
    fn panels_share_axes_and_later_layers_sit_on_top() {
        let data = [0.0f32, 0.0, 10.0, 10.0];
        let sample = [10.0f32, 10.0];
        let red = |dot| ScatterLayer {
            points: &data,
            color: [255, 0, 0],
            alpha: 1.0,
            dot,
        };
        let blue = ScatterLayer {
            points: &sample,
            color: [0, 0, 255],
            alpha: 1.0,
            dot: DOT,
        };
        let panels: [&[ScatterLayer<'_>]; 3] = [&[red(DOT)], &[blue], &[blue, red(1)]];
        let bytes = panels_png(&panels, 100, 80, None).unwrap();
        let (w, h, buf) = decode(&bytes);
        assert_eq!((w, h), (300, 80));
        // Shared bounds: (10, 10) lands on the same spot of every panel.
        let top_right = |panel: u32, dx: i32, dy: i32| {
            let x = (panel * 100) as i32 + ((10.5 / 11.0) * 99.0f64).round() as i32 + dx;
            let y = ((0.5 / 11.0) * 79.0f64).round() as i32 + dy;
            pixel(&buf, w, x as u32, y as u32)
        };
        assert_eq!(top_right(0, 0, 0), [255, 0, 0]);
        assert_eq!(top_right(1, 0, 0), [0, 0, 255]);
        // The overlay: the 1-pixel data dot on top of the 3-pixel sample dot,
        // whose rim stays visible around it.
        assert_eq!(top_right(2, 0, 0), [255, 0, 0]);
        assert_eq!(top_right(2, 1, 0), [0, 0, 255]);
        // (0, 0) is data only: in the data panel and the overlay, not in the samples panel.
        let bottom_left = |panel: u32| {
            let x = panel * 100 + ((0.5 / 11.0) * 99.0f64).round() as u32;
            let y = ((10.5 / 11.0) * 79.0f64).round() as u32;
            pixel(&buf, w, x, y)
        };
        assert_eq!(bottom_left(0), [255, 0, 0]);
        assert_eq!(bottom_left(1), [255, 255, 255]);
        assert_eq!(bottom_left(2), [255, 0, 0]);
        assert!(matches!(
            panels_png(&[], 10, 10, None),
            Err(RecordingError::InvalidArgument(_))
        ));
    }
}
