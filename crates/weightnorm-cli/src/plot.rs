//! Plots from metrics only: PNG, with an embedded font (no system fonts needed), drawn in
//! memory and written through the command's [`Outputs`]. Any series can be drawn: empty ones,
//! single points, constant ones, and NaN or infinite values (left out; a chart with nothing
//! finite says so) give a plot, never a hang or a panic.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::metrics::{EpochMetrics, RunMetrics};
use crate::output::Outputs;

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

/// Draws a white `size` picture with `draw` in memory and stages it as the PNG `path` in
/// `outputs`.
fn png(
    outputs: &mut Outputs,
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> Result<()>,
) -> Result<()> {
    font();
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, size.0, size.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .and_then(|mut w| w.write_image_data(&rgb))
            .map_err(|e| anyhow!("cannot encode {}: {e}", crate::text::shown(path)))?;
    }
    outputs.bytes(path, true, &bytes)
}

/// The largest magnitude drawn: values beyond are clipped to it, so that axis arithmetic stays
/// finite.
const LIMIT: f64 = 1e150;

/// A range covering `lo..=hi` (finite, `lo <= hi`) with a margin: never empty, never infinite.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.05
    } else {
        (lo.abs() * 0.05).max(0.5)
    };
    (lo - pad)..(hi + pad)
}

/// The points of `series` that can be drawn: finite ones, clipped to [`LIMIT`].
fn drawable<'a>(series: &[Series<'a>]) -> Vec<Series<'a>> {
    series
        .iter()
        .map(|(name, pts)| {
            let pts = pts
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| (x.clamp(-LIMIT, LIMIT), y.clamp(-LIMIT, LIMIT)))
                .collect();
            (*name, pts)
        })
        .collect()
}

type Series<'a> = (&'a str, Vec<(f64, f64)>);

fn chart(area: &Area, title: &str, x: &str, y: &str, series: &[Series]) -> Result<()> {
    let series = drawable(series);
    // Losses fall and accuracies rise: keep the legend away from where the curves end.
    let legend = if y == "accuracy" {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let title = if all.is_empty() {
        format!("{title} (no finite values)")
    } else {
        title.to_string()
    };
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        all.iter()
            .map(f)
            .fold(None, |a: Option<(f64, f64)>, v| {
                Some(a.map_or((v, v), |(l, h)| (l.min(v), h.max(v))))
            })
            .unwrap_or((0.0, 1.0))
    };
    let ((x0, x1), (y0, y1)) = (bounds(|p| p.0), bounds(|p| p.1));
    let mut c = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(padded(x0, x1), padded(y0, y1))
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc(x)
        .y_desc(y)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, pts)) in series.iter().enumerate().filter(|(_, s)| !s.1.is_empty()) {
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
///
/// # Errors
///
/// If the picture cannot be drawn or staged.
pub fn curves(outputs: &mut Outputs, path: &Path, m: &RunMetrics) -> Result<()> {
    let w = (m.step_losses.len() / 50).max(1);
    png(outputs, path, (1200, 450), |root| {
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
///
/// # Errors
///
/// If a picture cannot be drawn or staged.
pub fn comparison(outputs: &mut Outputs, out: &Path, runs: &[RunMetrics]) -> Result<()> {
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
        png(outputs, &out.join(file), (900, 550), |root| {
            chart(root, title, x, y, series)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::EpochMetrics;

    fn run_with(losses: Vec<f64>, accuracies: Vec<f64>) -> RunMetrics {
        let mut m = RunMetrics::new("wn");
        m.step_losses = losses;
        m.epochs = accuracies
            .into_iter()
            .map(|a| EpochMetrics {
                train_loss: a,
                test_loss: a,
                test_accuracy: a,
                ece: a,
            })
            .collect();
        m
    }

    #[test]
    fn degenerate_series_give_plots_and_never_hang() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            let (nan, inf, max) = (f64::NAN, f64::INFINITY, f64::MAX);
            let cases = [
                (vec![], vec![]),
                (vec![1.0], vec![0.5]),
                (vec![2.0; 100], vec![0.25; 3]),
                (vec![nan, inf, -inf], vec![nan]),
                (vec![nan, 1.0, inf, 2.0], vec![inf, 0.5]),
                (vec![max, -max, 1e300], vec![-max, max]),
                (vec![1e-300, 2e-300], vec![0.0, 5e-324]),
            ];
            let runs: Vec<RunMetrics> = cases.into_iter().map(|(l, a)| run_with(l, a)).collect();
            for (i, r) in runs.iter().enumerate() {
                let mut out = Outputs::default();
                curves(&mut out, &dir.path().join(format!("{i}.png")), r).unwrap();
                out.commit().unwrap();
            }
            let mut out = Outputs::default();
            comparison(&mut out, dir.path(), &runs).unwrap();
            comparison(&mut out, &dir.path().join("none"), &[]).unwrap_or(());
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("every plot drawn within a minute");
    }
}
