//! PNG plots of a run's samples (`plotters`, bitmap backend): `latency.png` (p50 and p99 of
//! each operation per window) and `resources.png` (RSS and CPU of each process, index
//! memory of the shards). Text needs a TrueType font: the first of [`FONTS`] that exists, or
//! the one `--font` names.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::sampler::Sample;
use crate::workload::Op;

/// Where Debian and most distributions keep a sans-serif TrueType font.
pub const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Register the font plots are drawn with: `path`, or the first of [`FONTS`] found.
pub fn use_font(path: Option<&Path>) -> Result<()> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => FONTS
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                anyhow!("no TrueType font for the plots in {FONTS:?}; install fonts-dejavu-core or pass --font")
            })?,
    };
    let bytes = std::fs::read(&path).with_context(|| format!("font {}", path.display()))?;
    // The font registry keeps its bytes for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a usable TrueType font", path.display()))
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A named line of `(seconds, value)` points.
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
    /// Index into the palette.
    colour: usize,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// Draw `lines` into one panel of `area`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    lines: &[Line],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-6)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for l in lines {
        let colour = COLOURS[l.colour % COLOURS.len()];
        let style = ShapeStyle {
            color: colour.to_rgba(),
            filled: false,
            stroke_width: if l.dashed { 1 } else { 2 },
        };
        chart
            .draw_series(LineSeries::new(l.points.iter().copied(), style))
            .map_err(err)?
            .label(l.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// p50 and p99 of each operation over time.
pub fn latency(samples: &[Sample], path: &Path) -> Result<()> {
    let mut lines = Vec::new();
    for (colour, op) in Op::ALL.into_iter().enumerate() {
        for (q, dashed) in [("p50", true), ("p99", false)] {
            let points = samples
                .iter()
                .filter_map(|s| {
                    s.ops
                        .iter()
                        .find(|o| o.op == op && o.count > 0)
                        .map(|o| (s.t_secs, if q == "p50" { o.p50_ms } else { o.p99_ms }))
                })
                .collect();
            lines.push(Line {
                name: format!("{} {q}", op.name()),
                points,
                dashed,
                colour,
            });
        }
    }
    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    panel(&root, "Latency per window", "ms", &lines)?;
    root.present().map_err(err)
}

/// RSS, CPU and index memory of each process over time.
pub fn resources(samples: &[Sample], path: &Path) -> Result<()> {
    let mut names: Vec<String> = samples
        .iter()
        .flat_map(|s| s.processes.iter().map(|p| p.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    let series = |f: &dyn Fn(&crate::sampler::ProcessSample) -> Option<f64>| -> Vec<Line> {
        names
            .iter()
            .enumerate()
            .map(|(colour, n)| Line {
                name: n.clone(),
                points: samples
                    .iter()
                    .filter_map(|s| {
                        s.processes
                            .iter()
                            .find(|p| &p.name == n)
                            .and_then(|p| f(p).map(|v| (s.t_secs, v)))
                    })
                    .collect(),
                dashed: false,
                colour,
            })
            .filter(|l| !l.points.is_empty())
            .collect()
    };
    let rss = series(&|p| Some(p.rss_bytes as f64 / 1_048_576.0));
    let index = series(&|p| p.index_bytes.map(|b| b as f64 / 1_048_576.0));
    let cpu = series(&|p| Some(p.cpu_cores));
    let root = BitMapBackend::new(path, (1200, 1200)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((3, 1));
    panel(&areas[0], "Resident memory", "MiB", &rss)?;
    panel(
        &areas[1],
        "Index memory (longbow_shard_memory_bytes)",
        "MiB",
        &index,
    )?;
    panel(&areas[2], "CPU", "cores", &cpu)?;
    root.present().map_err(err)
}
