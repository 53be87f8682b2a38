//! A small TensorBoard event-file writer.
//!
//! Event files are sequences of TFRecord-framed, protobuf-encoded `Event`
//! messages. Only the handful of message fields needed for scalars and PNG
//! images are declared here (by hand, with `prost` derives), using the field
//! numbers of `tensorflow/core/framework/summary.proto` and
//! `tensorflow/core/util/event.proto`.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

/// Errors raised while writing recordings (event files, images).
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {path}")]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PNG could not be encoded, or a supplied PNG is malformed or does
    /// not match the stated size.
    #[error("PNG error: {0}")]
    Png(String),
    /// An argument was out of range (e.g. a zero image size or empty bounds).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Protobuf messages (hand-declared subset of TensorFlow's protos).
mod proto {
    /// `tensorflow.Event`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        /// Seconds since the Unix epoch.
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        /// Global step of the event.
        #[prost(int64, tag = "2")]
        pub step: i64,
        /// Payload.
        #[prost(oneof = "event::What", tags = "3, 5")]
        pub what: Option<event::What>,
    }

    /// Nested types of [`Event`].
    pub mod event {
        /// `Event.what`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum What {
            /// File format version, e.g. `brain.Event:2`.
            #[prost(string, tag = "3")]
            FileVersion(String),
            /// A set of summary values.
            #[prost(message, tag = "5")]
            Summary(super::Summary),
        }
    }

    /// `tensorflow.Summary`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        /// The summary values.
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<summary::Value>,
    }

    /// Nested types of [`Summary`].
    pub mod summary {
        /// `Summary.Image`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Image {
            /// Height in pixels.
            #[prost(int32, tag = "1")]
            pub height: i32,
            /// Width in pixels.
            #[prost(int32, tag = "2")]
            pub width: i32,
            /// 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
            #[prost(int32, tag = "3")]
            pub colorspace: i32,
            /// The encoded (PNG) image.
            #[prost(bytes = "vec", tag = "4")]
            pub encoded_image_string: Vec<u8>,
        }

        /// `Summary.Value`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Value {
            /// Tag name of the value.
            #[prost(string, tag = "1")]
            pub tag: String,
            /// The value itself.
            #[prost(oneof = "value::Value", tags = "2, 4")]
            pub value: Option<value::Value>,
        }

        /// Nested types of [`Value`].
        pub mod value {
            /// `Summary.Value.value`.
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Value {
                /// A scalar.
                #[prost(float, tag = "2")]
                SimpleValue(f32),
                /// An image.
                #[prost(message, tag = "4")]
                Image(super::Image),
            }
        }
    }
}

use proto::event::What;
use proto::summary::value::Value as SummaryValueKind;
use proto::summary::{Image, Value as SummaryValue};
use proto::{Event, Summary};

/// Masks a CRC32C as TFRecord does.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Frames `data` as one TFRecord: length, masked CRC of the length, data,
/// masked CRC of the data.
fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// Reads the PNG signature and IHDR chunk: returns (width, height, colorspace).
fn png_header(png: &[u8]) -> Result<(u32, u32, i32), RecordingError> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    if png.len() < 29 || png[..8] != SIGNATURE {
        return Err(RecordingError::Png("data is not a PNG".into()));
    }
    if &png[12..16] != b"IHDR" {
        return Err(RecordingError::Png("PNG does not start with IHDR".into()));
    }
    let be = |i: usize| u32::from_be_bytes([png[i], png[i + 1], png[i + 2], png[i + 3]]);
    let colorspace = match png[25] {
        0 => 1,     // greyscale
        4 => 2,     // greyscale + alpha
        2 | 3 => 3, // RGB, palette
        6 => 4,     // RGBA
        other => {
            return Err(RecordingError::Png(format!(
                "unknown PNG color type {other}"
            )))
        }
    };
    Ok((be(16), be(20), colorspace))
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn secs_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Distinguishes event files opened by this process within the same second.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes scalars and images to one TensorBoard event file.
///
/// The file is buffered; call [`EventWriter::flush`] to make data visible to
/// a running TensorBoard. Buffered data is also flushed on drop (errors there
/// are ignored).
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` if needed and opens a new file
    /// `events.out.tfevents.<unix secs>.<hostname>.<pid>.<counter>` in it,
    /// writing the `brain.Event:2` file_version event first.
    pub fn create(dir: &Path) -> Result<Self, RecordingError> {
        fs::create_dir_all(dir).map_err(|source| RecordingError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let start = now();
        let secs = start
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let counter = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "events.out.tfevents.{secs}.{}.{}.{counter}",
            hostname(),
            std::process::id()
        );
        let path = dir.join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| RecordingError::Io {
                path: path.clone(),
                source,
            })?;
        let mut writer = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        writer.write_event(&Event {
            wall_time: secs_since_epoch(start),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".to_owned())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// Records the scalar `value` under `tag` at `step` (stored as `f32`,
    /// TensorBoard's `simple_value`).
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<(), RecordingError> {
        self.write_summary(
            step,
            SummaryValue {
                tag: tag.to_owned(),
                value: Some(SummaryValueKind::SimpleValue(value as f32)),
            },
        )
    }

    /// Records an image under `tag` at `step`.
    ///
    /// `png` is an encoded PNG; `width`/`height` are its size in pixels. They
    /// are checked against the PNG header, whose color type gives the
    /// summary's colorspace (RGB -> 3, RGBA -> 4, grey -> 1, grey+alpha -> 2).
    pub fn add_image_png(
        &mut self,
        tag: &str,
        png: &[u8],
        width: u32,
        height: u32,
        step: i64,
    ) -> Result<(), RecordingError> {
        let (png_width, png_height, colorspace) = png_header(png)?;
        if (png_width, png_height) != (width, height) {
            return Err(RecordingError::Png(format!(
                "PNG is {png_width}x{png_height} but {width}x{height} was given"
            )));
        }
        let to_i32 = |v: u32| {
            i32::try_from(v).map_err(|_| RecordingError::Png(format!("image size {v} too large")))
        };
        let image = Image {
            height: to_i32(height)?,
            width: to_i32(width)?,
            colorspace,
            encoded_image_string: png.to_vec(),
        };
        self.write_summary(
            step,
            SummaryValue {
                tag: tag.to_owned(),
                value: Some(SummaryValueKind::Image(image)),
            },
        )
    }

    /// Flushes buffered events to the file.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.out.flush().map_err(|source| RecordingError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The path of the event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_summary(&mut self, step: i64, value: SummaryValue) -> Result<(), RecordingError> {
        self.write_event(&Event {
            wall_time: secs_since_epoch(now()),
            step,
            what: Some(What::Summary(Summary { value: vec![value] })),
        })
    }

    fn write_event(&mut self, event: &Event) -> Result<(), RecordingError> {
        let record = frame_record(&event.encode_to_vec());
        self.out
            .write_all(&record)
            .map_err(|source| RecordingError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shortcut-tb-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Parses a TFRecord file, verifying both CRCs of every record.
    fn read_events(path: &Path) -> Vec<Event> {
        let bytes = fs::read(path).unwrap();
        let mut rest = &bytes[..];
        let mut events = Vec::new();
        while !rest.is_empty() {
            assert!(rest.len() >= 12, "truncated record header");
            let len_bytes = &rest[..8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(rest[8..12].try_into().unwrap());
            assert_eq!(len_crc, masked_crc(len_bytes), "length CRC mismatch");
            assert!(rest.len() >= 12 + len + 4, "truncated record body");
            let data = &rest[12..12 + len];
            let data_crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap());
            assert_eq!(data_crc, masked_crc(data), "data CRC mismatch");
            events.push(Event::decode(data).unwrap());
            rest = &rest[16 + len..];
        }
        events
    }

    /// A minimal valid-looking PNG header (signature + IHDR) of the given size.
    fn fake_png(width: u32, height: u32, color_type: u8) -> Vec<u8> {
        let mut v = vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
        v.extend_from_slice(&13u32.to_be_bytes());
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&[8, color_type, 0, 0, 0]);
        v.extend_from_slice(&[0; 4]); // CRC, not checked here
        v
    }

    #[test]
    fn crc32c_check_value_and_mask() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8, mod 2^32.
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn record_framing_round_trip() {
        let dir = scratch_dir("roundtrip");
        let mut w = EventWriter::create(&dir).unwrap();
        for step in 0..5 {
            w.add_scalar("loss", step as f64 * 0.5, step).unwrap();
        }
        let png = fake_png(300, 200, 2);
        w.add_image_png("img", &png, 300, 200, 7).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        drop(w);

        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert_eq!(name.split('.').count(), 7, "{name}");

        let events = read_events(&path);
        assert_eq!(events.len(), 7);
        assert_eq!(
            events[0].what,
            Some(What::FileVersion("brain.Event:2".into()))
        );
        for (i, ev) in events[1..6].iter().enumerate() {
            assert_eq!(ev.step, i as i64);
            assert!(ev.wall_time > 1.0e9);
            let Some(What::Summary(s)) = &ev.what else {
                panic!("not a summary")
            };
            assert_eq!(s.value.len(), 1);
            assert_eq!(s.value[0].tag, "loss");
            assert_eq!(
                s.value[0].value,
                Some(SummaryValueKind::SimpleValue(i as f32 * 0.5))
            );
        }
        let Some(What::Summary(s)) = &events[6].what else {
            panic!("not a summary")
        };
        assert_eq!(events[6].step, 7);
        let Some(SummaryValueKind::Image(img)) = &s.value[0].value else {
            panic!("not an image")
        };
        assert_eq!((img.width, img.height, img.colorspace), (300, 200, 3));
        assert_eq!(img.encoded_image_string, png);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_writers_same_dir_do_not_clash() {
        let dir = scratch_dir("twowriters");
        let a = EventWriter::create(&dir).unwrap();
        let b = EventWriter::create(&dir).unwrap();
        assert_ne!(a.path(), b.path());
        drop((a, b));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn image_size_is_checked_and_colorspace_follows_png() {
        let dir = scratch_dir("imgcheck");
        let mut w = EventWriter::create(&dir).unwrap();
        // Swapped width/height is rejected.
        let err = w
            .add_image_png("img", &fake_png(300, 200, 6), 200, 300, 0)
            .unwrap_err();
        assert!(matches!(err, RecordingError::Png(_)), "{err}");
        assert!(matches!(
            w.add_image_png("img", b"not a png at all, definitely not", 1, 1, 0),
            Err(RecordingError::Png(_))
        ));
        w.add_image_png("img", &fake_png(300, 200, 6), 300, 200, 1)
            .unwrap();
        w.flush().unwrap();
        let events = read_events(w.path());
        assert_eq!(events.len(), 2);
        let Some(What::Summary(s)) = &events[1].what else {
            panic!("not a summary")
        };
        let Some(SummaryValueKind::Image(img)) = &s.value[0].value else {
            panic!("not an image")
        };
        assert_eq!((img.width, img.height, img.colorspace), (300, 200, 4));
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn create_reports_io_errors_with_path() {
        let dir = scratch_dir("ioerr");
        fs::create_dir_all(&dir).unwrap();
        let blocker = dir.join("file");
        fs::write(&blocker, b"x").unwrap();
        let err = EventWriter::create(&blocker.join("sub")).err().unwrap();
        match err {
            RecordingError::Io { path, .. } => assert_eq!(path, blocker.join("sub")),
            other => panic!("unexpected error {other}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
