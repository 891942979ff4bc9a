//! The study's two figures as PNG: accuracy per epoch, and time per epoch
//! against the number of workers. Text uses a bundled font (DejaVu Sans), so
//! no system font library is needed.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the bundled font is not a valid TrueType font"))
}

/// A chart of f64 by f64 on a bitmap.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws the legend at `at` and writes the figure to `path`.
fn legend_and_save<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    root: &DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    at: SeriesLabelPosition,
    path: &Path,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(at)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

/// One run's curves: label, train accuracy and test accuracy per epoch (0..1).
pub struct Curves {
    /// Legend label, e.g. "4 workers".
    pub label: String,
    /// Training accuracy per epoch.
    pub train: Vec<f64>,
    /// Test (validation) accuracy per epoch.
    pub test: Vec<f64>,
}

/// Training and validation accuracy per epoch, one pair of lines per run.
pub fn accuracy(path: &Path, runs: &[Curves]) -> Result<()> {
    register_font()?;
    let epochs = runs.iter().map(|r| r.test.len()).max().unwrap_or(1).max(1);
    let low = runs
        .iter()
        .flat_map(|r| r.train.iter().chain(&r.test))
        .cloned()
        .fold(1.0f64, f64::min);
    let low = ((low * 100.0).floor() - 1.0).clamp(0.0, 99.0);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Training and validation accuracy (LeNet-5, MNIST)",
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(1f64..epochs as f64, low..100.0)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("accuracy (%)")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, run) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        for (values, name, dashed) in [
            (&run.train, "train", false),
            (&run.test, "validation", true),
        ] {
            let points: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .map(|(e, a)| ((e + 1) as f64, 100.0 * a))
                .collect();
            let label = format!("{} {name}", run.label);
            let series = if dashed {
                chart.draw_series(DashedLineSeries::new(
                    points.clone(),
                    6,
                    4,
                    color.stroke_width(2),
                ))
            } else {
                chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            }
            .map_err(|e| anyhow!("{e}"))?;
            series.label(label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    legend_and_save(&mut chart, &root, SeriesLabelPosition::LowerRight, path)
}

/// Mean time per epoch against the number of workers (`what`: "workers",
/// "devices"), with ideal linear scaling from the first point drawn dashed.
pub fn epoch_time(path: &Path, points: &[(usize, f64)], what: &str) -> Result<()> {
    register_font()?;
    let max_n = points.iter().map(|p| p.0).max().unwrap_or(1).max(2);
    let max_t = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-3) * 1.15;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Time per epoch vs number of {what}"),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5f64..max_n as f64 + 0.5, 0.0..max_t)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(what)
        .x_labels(max_n + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("seconds per epoch")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let xy: Vec<(f64, f64)> = points.iter().map(|&(n, t)| (n as f64, t)).collect();
    chart
        .draw_series(LineSeries::new(xy.clone(), BLUE.stroke_width(2)))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(xy.iter().map(|&p| Circle::new(p, 5, BLUE.filled())))
        .map_err(|e| anyhow!("{e}"))?
        .label("measured")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if let Some(&(n0, t0)) = points.first() {
        let ideal: Vec<(f64, f64)> = (n0..=max_n)
            .map(|n| (n as f64, t0 * n0 as f64 / n as f64))
            .collect();
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(DashedLineSeries::new(ideal, 6, 4, grey.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label("ideal linear scaling")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(2))
            });
    }
    legend_and_save(&mut chart, &root, SeriesLabelPosition::UpperRight, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG") && b.len() > 5_000)
    }

    #[test]
    fn both_figures_are_written_as_png() {
        let dir = std::env::temp_dir().join(format!("hearth-fig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runs = [Curves {
            label: "2 workers".into(),
            train: vec![0.9, 0.97, 0.99],
            test: vec![0.95, 0.98, 0.985],
        }];
        accuracy(&dir.join("a.png"), &runs).unwrap();
        epoch_time(
            &dir.join("t.png"),
            &[(1, 20.0), (2, 11.0), (4, 9.0)],
            "devices",
        )
        .unwrap();
        assert!(is_png(&dir.join("a.png")) && is_png(&dir.join("t.png")));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
