//! Recording of runs: TensorBoard event files and scatter-plot images.

pub mod curves;
pub mod scatter;
pub mod tensorboard;

use std::path::Path;

use scatter::{panels_png, ScatterLayer, DOT};
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

    /// Makes everything logged so far durable.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.writer.flush()
    }
}
