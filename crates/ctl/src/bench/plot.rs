//! The frame every bench plot shares: an SVG of one size, a caption, two
//! labelled linear axes and, where asked, a legend. Each plot draws only its
//! own series.

use std::ops::Range;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Size of every plot, pixels.
const SIZE: (u32, u32) = (720, 440);

/// The chart a plot draws its series on.
pub(crate) type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// What drawing on an SVG can fail with.
pub(crate) type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// A plot's caption, axes and legend.
pub(crate) struct Frame<'a> {
    pub caption: &'a str,
    /// The x axis: its label and range.
    pub x: (&'a str, Range<f64>),
    /// The y axis: its label and range.
    pub y: (&'a str, Range<f64>),
    /// How x values are labelled; `None`: as numbers.
    pub x_labels: Option<&'a dyn Fn(&f64) -> String>,
    /// Where the legend goes; `None`: no legend.
    pub legend: Option<SeriesLabelPosition>,
}

/// Draws `frame`, then the series `draw` adds, and returns the SVG text.
pub(crate) fn svg(
    frame: Frame<'_>,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> DrawResult,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    let drawn: DrawResult = (|| {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(frame.caption, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(frame.x.1, frame.y.1)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(frame.x.0).y_desc(frame.y.0);
        if let Some(labels) = frame.x_labels {
            mesh.x_label_formatter(labels);
        }
        mesh.draw()?;
        draw(&mut chart)?;
        if let Some(position) = frame.legend {
            chart
                .configure_series_labels()
                .position(position)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()
    })();
    drawn.map_err(|e| anyhow::anyhow!("drawing a plot: {e}"))?;
    Ok(svg)
}

/// A legend entry: a short line in `style`.
pub(crate) fn legend_line(
    style: impl Into<ShapeStyle>,
) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    let style = style.into();
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}
