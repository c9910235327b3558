//! Plots from metrics only: PNG, with an embedded font (no system fonts needed), written
//! atomically.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::metrics::{EpochMetrics, RunMetrics};

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Moving average over `w` steps, for readable loss curves.
fn smooth(xs: &[f64], w: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut sum = 0.0;
    for (i, x) in xs.iter().enumerate() {
        sum += x;
        if i >= w {
            sum -= xs[i - w];
        }
        out.push((i as f64 + 1.0, sum / (i + 1).min(w) as f64));
    }
    out
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws a white `size` picture with `draw` and writes it to `path` as PNG, atomically.
fn png(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    font();
    crate::output::write_with(path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present()
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
    })
}

type Series<'a> = (&'a str, Vec<(f64, f64)>);

fn chart(area: &Area, title: &str, x: &str, y: &str, series: &[Series]) -> Result<()> {
    // Losses fall and accuracies rise: keep the legend away from where the curves end.
    let legend = if y == "accuracy" {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let (x0, x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (y0, y1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let mut c = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc(x)
        .y_desc(y)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
        if pts.len() < 40 {
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(legend)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn epochs_series(m: &RunMetrics, f: impl Fn(&EpochMetrics) -> f64) -> Vec<(f64, f64)> {
    m.epochs
        .iter()
        .enumerate()
        .map(|(i, e)| (i as f64 + 1.0, f(e)))
        .collect()
}

/// One run's `curves.png`: training loss per step and test accuracy per epoch.
pub fn curves(path: &Path, m: &RunMetrics) -> Result<()> {
    let w = (m.step_losses.len() / 50).max(1);
    png(path, (1200, 450), |root| {
        let (left, right) = root.split_horizontally(700);
        chart(
            &left,
            "training loss",
            "step",
            "cross-entropy (moving average)",
            &[(m.param.as_str(), smooth(&m.step_losses, w))],
        )?;
        chart(
            &right,
            "test accuracy",
            "epoch",
            "accuracy",
            &[(m.param.as_str(), epochs_series(m, |e| e.test_accuracy))],
        )
    })
}

/// `loss.png` and `accuracy.png` of a comparison: every parameterization on one chart.
pub fn comparison(out: &Path, runs: &[RunMetrics]) -> Result<()> {
    let w = (runs.first().map_or(0, |r| r.step_losses.len()) / 50).max(1);
    let loss: Vec<Series> = runs
        .iter()
        .map(|r| (r.param.as_str(), smooth(&r.step_losses, w)))
        .collect();
    let acc: Vec<Series> = runs
        .iter()
        .map(|r| (r.param.as_str(), epochs_series(r, |e| e.test_accuracy)))
        .collect();
    for (file, title, x, y, series) in [
        (
            "loss.png",
            "training loss",
            "step",
            "cross-entropy (moving average)",
            &loss,
        ),
        ("accuracy.png", "test accuracy", "epoch", "accuracy", &acc),
    ] {
        png(&out.join(file), (900, 550), |root| {
            chart(root, title, x, y, series)
        })?;
    }
    Ok(())
}
