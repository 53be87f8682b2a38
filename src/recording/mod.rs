//! Recording of runs: TensorBoard event files and scatter-plot images.

pub mod curves;
pub mod grid;
pub mod scatter;
pub mod tensorboard;

use std::path::Path;

use scatter::{panels_png, ScatterLayer, DOT};
use tch::Tensor;
use tensorboard::{EventWriter, RecordingError};

/// Red for data, blue for samples, as in the paper's figures.
const DATA_COLOR: [u8; 3] = [220, 40, 40];
const SAMPLE_COLOR: [u8; 3] = [30, 70, 220];

/// Writes the scalars and images of one run.
pub struct Recorder {
    writer: EventWriter,
}

impl Recorder {
    /// A recorder writing a new event file under `dir`.
    pub fn create(dir: &Path) -> Result<Self, RecordingError> {
        Ok(Self {
            writer: EventWriter::create(dir)?,
        })
    }

    /// Logs one scalar.
    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<(), RecordingError> {
        self.writer.add_scalar(tag, value, step as i64)
    }

    /// Logs a 2-D scatter image of `samples` against `data`, both `[n, 2]`
    /// row-major, as three panels on the same axes: the data (red), the
    /// samples (blue), and the samples with the data drawn on top as thin
    /// translucent dots, so that where the sampler misses the data shows.
    pub fn samples_over_data(
        &mut self,
        tag: &str,
        samples: &[f32],
        data: &[f32],
        step: u64,
    ) -> Result<(), RecordingError> {
        let (panel, h) = (512, 512);
        let layer = |points, color, alpha, dot| ScatterLayer {
            points,
            color,
            alpha,
            dot,
        };
        let data_alone = [layer(data, DATA_COLOR, 0.25, DOT)];
        let samples_alone = [layer(samples, SAMPLE_COLOR, 0.25, DOT)];
        let overlay = [
            layer(samples, SAMPLE_COLOR, 0.25, DOT),
            layer(data, DATA_COLOR, 0.5, 1),
        ];
        let png = panels_png(&[&data_alone, &samples_alone, &overlay], panel, h, None)?;
        self.writer
            .add_image_png(tag, &png, 3 * panel, h, step as i64)
    }

    /// Logs two image grids side by side: the data (left 8 columns) and the
    /// samples (right 8 columns), up to 64 of each, images as floats in
    /// [-1, 1] `[N, C, H, W]`.
    pub fn image_samples(
        &mut self,
        tag: &str,
        samples: &Tensor,
        data: &Tensor,
        step: u64,
    ) -> Result<(), RecordingError> {
        let png = samples_beside_data_png(samples, data)?;
        let (w, h) = png_size(&png)?;
        self.writer.add_image_png(tag, &png, w, h, step as i64)
    }

    /// Logs an image already encoded as PNG (its size read from its header).
    pub fn image_png(&mut self, tag: &str, png: &[u8], step: u64) -> Result<(), RecordingError> {
        let (w, h) = png_size(png)?;
        self.writer.add_image_png(tag, png, w, h, step as i64)
    }

    /// Makes everything logged so far durable.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.writer.flush()
    }
}

/// Width and height from a PNG's header.
fn png_size(png: &[u8]) -> Result<(u32, u32), RecordingError> {
    if png.len() < 24 {
        return Err(RecordingError::Png("truncated PNG".into()));
    }
    let be = |i: usize| u32::from_be_bytes([png[i], png[i + 1], png[i + 2], png[i + 3]]);
    Ok((be(16), be(20)))
}

/// The PNG of [`Recorder::image_samples`]: 8 data images, then 8 samples, per row.
pub fn samples_beside_data_png(samples: &Tensor, data: &Tensor) -> Result<Vec<u8>, RecordingError> {
    const COLUMNS: i64 = 8;
    let take = |x: &Tensor| envs::images::to_pixels(&x.narrow(0, 0, x.size()[0].min(64)));
    let (d, s) = (take(data), take(samples));
    let rows = (d.size()[0].max(s.size()[0]) + COLUMNS - 1) / COLUMNS;
    let fill = |x: Tensor| {
        let missing = rows * COLUMNS - x.size()[0];
        if missing == 0 {
            return x;
        }
        let mut size = x.size();
        size[0] = missing;
        let blank = Tensor::full(size.as_slice(), 255, (tch::Kind::Uint8, x.device()));
        Tensor::cat(&[x, blank], 0)
    };
    let (d, s) = (fill(d), fill(s));
    let interleaved: Vec<Tensor> = (0..rows)
        .flat_map(|r| {
            [
                d.narrow(0, r * COLUMNS, COLUMNS),
                s.narrow(0, r * COLUMNS, COLUMNS),
            ]
        })
        .collect();
    grid::grid_png(
        &Tensor::cat(&interleaved, 0),
        2 * COLUMNS,
        grid::scale_for(d.size()[3]),
    )
}
