//! Recording of runs: TensorBoard event files and scatter-plot images.

pub mod curves;
pub mod scatter;
pub mod tensorboard;

use std::path::Path;

use scatter::{scatter_png, ScatterLayer};
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

    /// Logs a 2-D scatter of `samples` (blue) over `data` (red), both `[n, 2]` row-major.
    pub fn samples_over_data(
        &mut self,
        tag: &str,
        samples: &[f32],
        data: &[f32],
        step: u64,
    ) -> Result<(), RecordingError> {
        let (w, h) = (512, 512);
        let png = scatter_png(
            &[
                ScatterLayer {
                    points: data,
                    color: DATA_COLOR,
                    alpha: 0.15,
                },
                ScatterLayer {
                    points: samples,
                    color: SAMPLE_COLOR,
                    alpha: 0.35,
                },
            ],
            w,
            h,
            None,
        )?;
        self.writer.add_image_png(tag, &png, w, h, step as i64)
    }

    /// Makes everything logged so far durable.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.writer.flush()
    }
}
