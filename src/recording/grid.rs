//! Image grids: a batch of images as one PNG (RGB; one-channel images as
//! grey), tiles separated by a one-pixel light-grey line and scaled up by
//! pixel repetition so that small images (8 x 8 digits) stay visible.

use tch::{Kind, Tensor};

use super::tensorboard::RecordingError;

/// Grey of the lines between tiles.
const LINE: u8 = 200;

/// A grid of `columns` tiles per row of uint8 images `[N, C, H, W]` (C = 1
/// or 3), each pixel repeated `scale` times; returns (RGB bytes, width, height).
pub fn grid_pixels(
    images: &Tensor,
    columns: i64,
    scale: i64,
) -> Result<(Vec<u8>, u32, u32), RecordingError> {
    let size = images.size();
    let [n, c, h, w] = size[..] else {
        return Err(RecordingError::InvalidArgument(format!(
            "an image grid needs [N, C, H, W] images, got {size:?}"
        )));
    };
    if !(c == 1 || c == 3) || n == 0 || columns < 1 || scale < 1 {
        return Err(RecordingError::InvalidArgument(format!(
            "an image grid needs 1 or 3 channels, at least one image, columns and scale >= 1; got {size:?}, {columns} columns, scale {scale}"
        )));
    }
    let rgb = images
        .to_kind(Kind::Uint8)
        .expand([n, 3, h, w], false)
        .permute([0, 2, 3, 1])
        .contiguous();
    let pixels = Vec::<u8>::try_from(rgb.flatten(0, -1))
        .map_err(|e| RecordingError::InvalidArgument(e.to_string()))?;
    let rows = (n + columns - 1) / columns;
    let (tile_w, tile_h) = (w * scale, h * scale);
    let width = columns * (tile_w + 1) + 1;
    let height = rows * (tile_h + 1) + 1;
    let mut out = vec![LINE; (width * height * 3) as usize];
    for k in 0..n {
        let (gx, gy) = (
            1 + (k % columns) * (tile_w + 1),
            1 + (k / columns) * (tile_h + 1),
        );
        for y in 0..tile_h {
            for x in 0..tile_w {
                let src = (((k * h + y / scale) * w + x / scale) * 3) as usize;
                let dst = (((gy + y) * width + gx + x) * 3) as usize;
                out[dst..dst + 3].copy_from_slice(&pixels[src..src + 3]);
            }
        }
    }
    Ok((out, width as u32, height as u32))
}

/// [`grid_pixels`] encoded as a PNG.
pub fn grid_png(images: &Tensor, columns: i64, scale: i64) -> Result<Vec<u8>, RecordingError> {
    let (pixels, width, height) = grid_pixels(images, columns, scale)?;
    super::scatter::encode_rgb(&pixels, width, height)
}

/// The first 64 of `samples` (floats in [-1, 1], `[N, C, H, W]`) as a PNG
/// grid of 8 per row, scaled up for small images: what `rl-run sample` and
/// the evaluations of image runs write.
pub fn samples_png(samples: &Tensor) -> Result<Vec<u8>, RecordingError> {
    let first = samples.narrow(0, 0, samples.size()[0].min(64));
    let pixels = envs::images::to_pixels(&first);
    let scale = scale_for(pixels.size()[3]);
    grid_png(&pixels, 8, scale)
}

/// Chains through their sampler steps as a PNG: one row per chain, one
/// column per kept state (`states[k]` is `[chains, C, H, W]` in [-1, 1],
/// clamped, x_T first): the paper's Figures 7, 9 and 10.
pub fn paths_png(states: &[Tensor]) -> Result<Vec<u8>, RecordingError> {
    let Some(first) = states.first() else {
        return Err(RecordingError::InvalidArgument(
            "a path needs at least one state".into(),
        ));
    };
    let columns = states.len() as i64;
    let mut size = first.size();
    let chains = size[0];
    // [S, chains, ...] -> [chains, S, ...] -> one row of S tiles per chain.
    let by_chain = Tensor::stack(states, 1);
    size[0] = chains * columns;
    let pixels = envs::images::to_pixels(&by_chain.reshape(size.as_slice()));
    let scale = scale_for(pixels.size()[3]);
    grid_png(&pixels, columns, scale)
}

/// A pixel repetition that makes tiles of `side` pixels at least about 64 wide.
pub fn scale_for(side: i64) -> i64 {
    (64 / side.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_land_in_place_scaled_and_grey_becomes_rgb() {
        // Two 2 x 2 grey images: 10, 20, 30, 40 and 50, 60, 70, 80.
        let images = Tensor::from_slice(&[10u8, 20, 30, 40, 50, 60, 70, 80]).view([2, 1, 2, 2]);
        let (pixels, width, height) = grid_pixels(&images, 2, 3).unwrap();
        assert_eq!((width, height), (2 * 7 + 1, 7 + 1));
        let at = |x: u32, y: u32| {
            let i = ((y * width + x) * 3) as usize;
            [pixels[i], pixels[i + 1], pixels[i + 2]]
        };
        assert_eq!(at(0, 0), [LINE; 3]);
        // Image 0's pixel (1, 0) covers x = 4..7, y = 1..4.
        assert_eq!(at(4, 1), [20; 3]);
        assert_eq!(at(6, 3), [20; 3]);
        // Image 1 starts after the separator at x = 7.
        assert_eq!(at(7, 1), [LINE; 3]);
        assert_eq!(at(8, 6), [70; 3]);
        assert!(grid_png(&images, 1, 1).unwrap().starts_with(b"\x89PNG"));
        assert!(grid_pixels(&images.view([2, 2, 2]), 2, 1).is_err());
    }

    #[test]
    fn paths_put_each_chain_on_its_row_and_each_state_in_its_column() {
        // 2 chains x 3 states of 1 x 1 images; state s of chain c is
        // (10 s + c) / 127.5 - 1, i.e. pixel 10 s + c.
        let states: Vec<Tensor> = (0..3)
            .map(|s| {
                Tensor::from_slice(&[10.0 * s as f32, 10.0 * s as f32 + 1.0]).view([2, 1, 1, 1])
                    / 127.5
                    - 1.0
            })
            .collect();
        let png = paths_png(&states).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        // 64 x 64 tiles (scale 64) with 1-pixel lines: 3 columns, 2 rows.
        assert_eq!((info.width, info.height), (3 * 65 + 1, 2 * 65 + 1));
        let at = |x: u32, y: u32| buf[((y * info.width + x) * 3) as usize];
        for chain in 0..2u32 {
            for state in 0..3u32 {
                let (x, y) = (1 + state * 65 + 30, 1 + chain * 65 + 30);
                assert_eq!(
                    at(x, y) as u32,
                    10 * state + chain,
                    "chain {chain}, state {state}"
                );
            }
        }
    }
}
