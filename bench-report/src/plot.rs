//! Curves as PNG line charts: the measured series, the baseline measured in
//! the same run, and the goal drawn as a horizontal line.
//!
//! Text is drawn with DejaVu Sans (Debian's `fonts-dejavu-core`, which
//! `scripts/install-deps.sh` installs); no system font library is linked.

use std::{path::Path, sync::OnceLock};

use plotters::prelude::*;

/// Where the font comes from.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// A chart of one curve.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// The goal, drawn as a dashed horizontal line.
    pub goal: Option<(String, f64)>,
    /// A logarithmic x axis (cluster counts, entry counts).
    pub log_x: bool,
}

/// Registers the font once; an error names the missing file.
fn font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT)
            .map_err(|e| format!("reading {FONT} (Debian package fonts-dejavu-core): {e}"))?;
        // The font lives as long as the process; charts may be drawn at any time.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT} is not a font plotters can read"))
    })
    .clone()
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

impl Chart {
    /// Draws the chart into `path` (PNG, 900×560).
    pub fn draw(&self, path: &Path) -> Result<(), String> {
        font()?;
        let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
        let all: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if all.is_empty() {
            return Err(format!("{}: no finite points to draw", self.title));
        }
        let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
            (a.min(*x), b.max(*x))
        });
        if x0 == x1 {
            x0 *= 0.5;
            x1 *= 1.5;
        }
        let mut y1 = all.iter().fold(0.0f64, |m, (_, y)| m.max(*y));
        if let Some((_, g)) = &self.goal {
            y1 = y1.max(*g);
        }
        let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.15 };
        let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72);
        macro_rules! body {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_label_formatter(&|x| axis_number(*x))
                    .x_desc(self.x_label.as_str())
                    .y_desc(self.y_label.as_str())
                    .label_style(("sans-serif", 14))
                    .draw()
                    .map_err(|e| err(&e))?;
                for (i, s) in self.series.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    let points: Vec<(f64, f64)> = s
                        .points
                        .iter()
                        .copied()
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .collect();
                    chart
                        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                        .map_err(|e| err(&e))?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                    chart
                        .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
                        .map_err(|e| err(&e))?;
                }
                if let Some((name, g)) = &self.goal {
                    let red = RGBColor(214, 39, 40);
                    let steps = 60;
                    // A dashed line: every other segment.
                    let dashes = (0..steps).step_by(2).map(|k| {
                        let at = |k: usize| {
                            if self.log_x {
                                x0 * (x1 / x0).powf(k as f64 / steps as f64)
                            } else {
                                x0 + (x1 - x0) * k as f64 / steps as f64
                            }
                        };
                        PathElement::new(vec![(at(k), *g), (at(k + 1), *g)], red.stroke_width(2))
                    });
                    chart
                        .draw_series(dashes)
                        .map_err(|e| err(&e))?
                        .label(format!("goal: {name}"))
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2))
                        });
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 14))
                    .position(SeriesLabelPosition::UpperLeft)
                    .draw()
                    .map_err(|e| err(&e))?;
            }};
        }
        if self.log_x {
            body!(
                builder
                    .build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)
                    .map_err(|e| err(&e))?
            );
        } else {
            body!(
                builder
                    .build_cartesian_2d(x0..x1, 0.0..y1)
                    .map_err(|e| err(&e))?
            );
        }
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}

/// An axis label: `700k`, `1M`, `1.5M`, `32`, `0.25` (not `700000.0`, which
/// runs into its neighbours on a log axis).
fn axis_number(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e3 {
        format!("{}k", trim(format!("{:.2}", v / 1e3)))
    } else {
        trim(format!("{v:.2}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn axis_numbers_are_short() {
        use super::axis_number;
        assert_eq!(axis_number(700_000.0), "700k");
        assert_eq!(axis_number(1_000_000.0), "1M");
        assert_eq!(axis_number(1_500_000.0), "1.5M");
        assert_eq!(axis_number(255.0), "255");
        assert_eq!(axis_number(0.25), "0.25");
        assert_eq!(axis_number(0.0), "0");
    }

    use super::*;

    fn chart(log_x: bool, points: Vec<(f64, f64)>) -> Chart {
        Chart {
            title: "sync".into(),
            x_label: "clusters".into(),
            y_label: "seconds".into(),
            series: vec![Series::new("agent", points)],
            goal: Some(("≤ 10 s".into(), 10.0)),
            log_x,
        }
    }

    #[test]
    fn draws_a_png_of_the_promised_size() {
        let dir = tempfile::tempdir().unwrap();
        for log_x in [false, true] {
            let path = dir.path().join(format!("c{log_x}.png"));
            chart(log_x, vec![(8.0, 0.5), (32.0, 1.2), (255.0, 7.5)])
                .draw(&path)
                .unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
            // IHDR: width and height, big-endian, right after the chunk header.
            let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
            let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
            assert_eq!((width, height), (900, 560));
        }
    }

    #[test]
    fn refuses_a_chart_without_finite_points() {
        let dir = tempfile::tempdir().unwrap();
        let err = chart(false, vec![(1.0, f64::NAN)])
            .draw(&dir.path().join("x.png"))
            .unwrap_err();
        assert!(err.contains("no finite points"), "{err}");
    }
}
