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

/// Where a trainer's scalars and images go (border's `Recorder`): the
/// trainers write through this trait, so a run can log to TensorBoard
/// ([`Recorder`]), to memory ([`MemoryRecorder`], for programs and tests that
/// read their own curves), or to anything else.
pub trait Record {
    /// Logs one scalar.
    fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<(), RecordingError>;

    /// Logs an image already encoded as PNG.
    fn image_png(&mut self, tag: &str, png: &[u8], step: u64) -> Result<(), RecordingError>;

    /// Makes everything logged so far durable.
    fn flush(&mut self) -> Result<(), RecordingError>;

    /// Logs a 2-D scatter image of `samples` against `data`, both `[n, 2]`
    /// row-major, as three panels on the same axes: the data (red), the
    /// samples (blue), and the samples with the data drawn on top as thin
    /// translucent dots, so that where the sampler misses the data shows.
    fn samples_over_data(
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
        self.image_png(tag, &png, step)
    }

    /// Logs two image grids side by side: the data (left 8 columns) and the
    /// samples (right 8 columns), up to 64 of each, images as floats in
    /// [-1, 1] `[N, C, H, W]`.
    fn image_samples(
        &mut self,
        tag: &str,
        samples: &Tensor,
        data: &Tensor,
        step: u64,
    ) -> Result<(), RecordingError> {
        let png = samples_beside_data_png(samples, data)?;
        self.image_png(tag, &png, step)
    }
}

/// Writes the scalars and images of one run to a TensorBoard event file.
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
}

impl Record for Recorder {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<(), RecordingError> {
        self.writer.add_scalar(tag, value, step as i64)
    }

    /// The image's size is read from its PNG header.
    fn image_png(&mut self, tag: &str, png: &[u8], step: u64) -> Result<(), RecordingError> {
        let (w, h) = png_size(png)?;
        self.writer.add_image_png(tag, png, w, h, step as i64)
    }

    fn flush(&mut self) -> Result<(), RecordingError> {
        self.writer.flush()
    }
}

/// Records nothing: the recorder of every rank but 0 in a data-parallel
/// run (rank 0 writes the run's event file).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullRecorder;

impl Record for NullRecorder {
    fn scalar(&mut self, _tag: &str, _value: f64, _step: u64) -> Result<(), RecordingError> {
        Ok(())
    }

    fn image_png(&mut self, _tag: &str, _png: &[u8], _step: u64) -> Result<(), RecordingError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RecordingError> {
        Ok(())
    }
}

/// Keeps every scalar in memory, in the order logged (images are counted,
/// not kept): a recorder for library users and tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemoryRecorder {
    /// (tag, value, step) of every scalar.
    pub scalars: Vec<(String, f64, u64)>,
    /// Number of images logged.
    pub images: usize,
}

impl MemoryRecorder {
    /// The (step, value) series of `tag`.
    pub fn series(&self, tag: &str) -> Vec<(u64, f64)> {
        self.scalars
            .iter()
            .filter(|(t, _, _)| t == tag)
            .map(|&(_, v, s)| (s, v))
            .collect()
    }
}

impl Record for MemoryRecorder {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<(), RecordingError> {
        self.scalars.push((tag.to_string(), value, step));
        Ok(())
    }

    fn image_png(&mut self, _tag: &str, png: &[u8], _step: u64) -> Result<(), RecordingError> {
        png_size(png)?;
        self.images += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RecordingError> {
        Ok(())
    }
}

/// A recorder shared with the program that made it: hand a clone to a
/// trainer and read the curves through the other after training.
impl<R: Record> Record for std::rc::Rc<std::cell::RefCell<R>> {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<(), RecordingError> {
        self.borrow_mut().scalar(tag, value, step)
    }

    fn image_png(&mut self, tag: &str, png: &[u8], step: u64) -> Result<(), RecordingError> {
        self.borrow_mut().image_png(tag, png, step)
    }

    fn flush(&mut self) -> Result<(), RecordingError> {
        self.borrow_mut().flush()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_recorder_keeps_each_series_and_counts_valid_images() {
        let mut memory = MemoryRecorder::default();
        let record: &mut dyn Record = &mut memory;
        record.scalar("a", 1.0, 1).unwrap();
        record.scalar("b", 5.0, 1).unwrap();
        record.scalar("a", 0.5, 2).unwrap();
        let points: Vec<f32> = vec![0.0, 0.0, 1.0, 1.0];
        record.samples_over_data("s", &points, &points, 2).unwrap();
        assert!(record.image_png("bad", b"not a png", 3).is_err());
        record.flush().unwrap();
        assert_eq!(memory.series("a"), [(1, 1.0), (2, 0.5)]);
        assert_eq!(memory.series("b"), [(1, 5.0)]);
        assert_eq!(memory.images, 1);
    }
}
