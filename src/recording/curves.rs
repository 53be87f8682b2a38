//! Training curves as a PNG: one line per series (the mean over seeds) with
//! a shaded band of one standard deviation, axes and a legend. Drawn with
//! `plotters` on its bitmap backend; the text uses the DejaVu Sans font
//! embedded by the `dejavu` crate, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// One curve: its label and (x, mean, standard deviation) points in x order.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// (x, mean, spread) per point.
    pub points: Vec<(f64, f64, f64)>,
}

/// Errors of drawing a plot.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    /// The image being written.
    pub path: std::path::PathBuf,
    /// What went wrong.
    pub message: String,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu font is valid"));
    });
}

/// Draws `curves` into a `width` x `height` PNG at `path`.
pub fn plot_curves(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    curves: &[Curve],
    (width, height): (u32, u32),
) -> Result<(), PlotError> {
    register_fonts();
    let fail = |e: &dyn std::fmt::Display| PlotError {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let all = curves.iter().flat_map(|c| c.points.iter());
    let (mut x_max, mut y_max, mut y_min) = (1.0f64, f64::MIN, f64::MAX);
    for &(x, m, s) in all {
        x_max = x_max.max(x);
        y_max = y_max.max(m + s);
        y_min = y_min.min(m - s);
    }
    if y_min > y_max {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = (y_max - y_min).max(1e-9) * 0.05;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (y_min - pad).max(0.0)..y_max + pad)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, curve) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut band: Vec<(f64, f64)> = curve.points.iter().map(|&(x, m, s)| (x, m + s)).collect();
        band.extend(curve.points.iter().rev().map(|&(x, m, s)| (x, m - s)));
        chart
            .draw_series(std::iter::once(Polygon::new(band, color.mix(0.15))))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().map(|&(x, m, _)| (x, m)),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(curve.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_of_the_requested_size_with_every_curve_drawn() {
        let dir = std::env::temp_dir().join(format!("curves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.png");
        let curves = vec![
            Curve {
                label: "falls".into(),
                points: (0..10).map(|i| (i as f64, 10.0 - i as f64, 0.5)).collect(),
            },
            Curve {
                label: "flat".into(),
                points: (0..10).map(|i| (i as f64, 3.0, 0.0)).collect(),
            },
        ];
        plot_curves(&path, "test", "epoch", "W2", &curves, (400, 300)).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (400, 300));
        // Both palette colours appear (the lines were drawn).
        let has = |c: RGBColor| buf.chunks(3).any(|p| p == [c.0, c.1, c.2]);
        assert!(has(PALETTE[0]) && has(PALETTE[1]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
