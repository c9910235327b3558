//! Plots from metrics only: PNG, with an embedded font (no system fonts needed), drawn in
//! memory and written through the command's [`Outputs`]. Any series can be drawn: empty ones,
//! single points, constant ones, and NaN or infinite values (left out; a chart with nothing
//! finite says so) give a plot, never a hang or a panic.
//!
//! Every curve stays visible where curves overlap: each has its own colour, marker shape and
//! (every other one) a dashed line; a band around a curve is its least-to-greatest range over
//! seeds. Loss axes are logarithmic, epoch axes carry integer ticks only.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::metrics::RunMetrics;
use crate::output::Outputs;
use crate::stats::{moving_average, quantile};
use crate::summary::{Band, Group, groups};

/// Twelve colours told apart with any common colour-vision deficiency: the eight of Okabe and
/// Ito's palette ("Color Universal Design", 2008; its yellow darkened to show on white) and four
/// of Paul Tol's "muted" scheme. With the twelve markers of [`markers`], up to twelve series
/// each have their own colour and marker.
const COLORS: [RGBColor; 12] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(190, 170, 0),   // yellow, darkened
    RGBColor(51, 34, 136),   // Tol's indigo
    RGBColor(204, 102, 119), // Tol's rose
    RGBColor(153, 153, 51),  // Tol's olive
    RGBColor(136, 34, 85),   // Tol's wine
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

/// How an axis is scaled and ticked.
#[derive(Clone, Copy, PartialEq)]
enum Axis {
    /// Linear, ticks at 1-2-5 steps.
    Linear,
    /// Linear, ticks at integers only (epochs).
    Integer,
    /// Logarithmic (values <= 0 are left out), ticks at 1-2-5 times powers of ten.
    Log,
}

/// Tick positions in `lo..=hi` at 1, 2 or 5 times a power of ten apart, about `target` of them.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return vec![lo];
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| span / s <= target as f64 * 1.5)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil();
    let last = (hi / step).floor();
    if !(last - first).is_finite() || last - first > 1000.0 {
        return vec![lo, hi];
    }
    (first as i64..=last as i64)
        .map(|k| k as f64 * step)
        .collect()
}

/// Integer ticks in `lo..=hi`: every integer when there are few, else round multiples
/// (5, 10, 20, 50, ...).
fn integer_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.ceil(), hi.floor());
    if !(b - a).is_finite() || b < a {
        return vec![];
    }
    if b - a <= 12.0 {
        return (a as i64..=b as i64).map(|k| k as f64).collect();
    }
    nice_ticks(lo, hi, 8)
        .into_iter()
        .filter(|t| t.fract() == 0.0)
        .collect()
}

/// Ticks of a log axis given in log10 units: 1, 2 and 5 times powers of ten when the range
/// spans little, powers of ten when it spans much.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(hi - lo).is_finite() || hi - lo > 300.0 {
        return nice_ticks(lo, hi, 6);
    }
    let mults: &[f64] = if hi - lo > 3.0 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut t = Vec::new();
    for k in (lo.floor() as i64)..=(hi.ceil() as i64) {
        for m in mults {
            let v = (m * 10f64.powi(k as i32)).log10();
            if v >= lo && v <= hi {
                t.push(v);
            }
        }
    }
    if t.len() < 3 {
        // A narrow range: round values (1, 2 or 5 times a power of ten apart), placed at
        // their logarithms, so that labels read 1.2, 1.4 rather than 10^0.1, 10^0.2.
        let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
        return nice_ticks(a, b, 5)
            .into_iter()
            .filter(|v| *v > 0.0)
            .map(f64::log10)
            .collect();
    }
    t
}

/// A tick label: few significant digits, no trailing noise.
fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A linear f64 axis whose ticks are exactly the given ones (plotters would choose its own).
struct Ticked {
    inner: plotters::coord::types::RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Self {
        Self {
            inner: range.into(),
            ticks,
        }
    }
}

impl plotters::coord::ranged1d::Ranged for Ticked {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// One curve: its name, its points and optionally a band of (x, low, high) around it.
#[derive(Clone, Default)]
struct Curve {
    name: String,
    pts: Vec<(f64, f64)>,
    band: Vec<(f64, f64, f64)>,
}

impl Curve {
    /// The curve with its y values (and band) mapped for `axis`, and only what can be drawn:
    /// finite points, clipped to [`LIMIT`].
    fn drawable(&self, axis: Axis) -> Curve {
        let y = |v: f64| match axis {
            Axis::Log if v > 0.0 => v.log10(),
            Axis::Log => f64::NAN,
            _ => v,
        };
        let ok = |v: f64| v.is_finite();
        let clip = |v: f64| v.clamp(-LIMIT, LIMIT);
        Curve {
            name: self.name.clone(),
            pts: self
                .pts
                .iter()
                .map(|&(a, b)| (a, y(b)))
                .filter(|&(a, b)| ok(a) && ok(b))
                .map(|(a, b)| (clip(a), clip(b)))
                .collect(),
            band: self
                .band
                .iter()
                .map(|&(a, l, h)| (a, y(l), y(h)))
                .filter(|&(a, l, h)| ok(a) && ok(l) && ok(h))
                .map(|(a, l, h)| (clip(a), clip(l), clip(h)))
                .collect(),
        }
    }
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<Ticked, Ticked>>;

/// The marker of series `i`: one of six shapes (circle, triangle, square, cross, diamond,
/// star of lines), filled for the first six series and hollow for the next six.
fn marker_of(i: usize) -> (usize, bool) {
    (i % 6, (i / 6).is_multiple_of(2))
}

/// A diamond's corners around the origin, closed.
fn diamond(s: i32) -> Vec<(i32, i32)> {
    vec![
        (0, -s - 1),
        (s + 1, 0),
        (0, s + 1),
        (-s - 1, 0),
        (0, -s - 1),
    ]
}

/// Draws the markers of series `i` at `pts` (see [`marker_of`]).
fn markers(c: &mut Chart, i: usize, pts: &[(f64, f64)], color: RGBColor) -> Result<()> {
    let s = 5;
    let p = pts.iter().copied();
    let (shape, filled) = marker_of(i);
    let style = if filled {
        color.filled()
    } else {
        color.stroke_width(2)
    };
    match shape {
        0 => c.draw_series(p.map(|p| Circle::new(p, s, style))),
        1 => c.draw_series(p.map(|p| TriangleMarker::new(p, s + 1, style))),
        2 => c.draw_series(
            p.map(|p| EmptyElement::at(p) + Rectangle::new([(-s, -s), (s, s)], style)),
        ),
        3 => c.draw_series(
            p.map(|p| Cross::new(p, s, color.stroke_width(if filled { 3 } else { 1 }))),
        ),
        4 if filled => {
            c.draw_series(p.map(|p| EmptyElement::at(p) + Polygon::new(diamond(s), style)))
        }
        4 => c.draw_series(
            p.map(|p| EmptyElement::at(p) + PathElement::new(diamond(s), color.stroke_width(2))),
        ),
        _ => c.draw_series(p.map(|p| {
            EmptyElement::at(p)
                + PathElement::new(vec![(-s, 0), (s, 0)], color.stroke_width(2))
                + PathElement::new(vec![(0, -s), (0, s)], color.stroke_width(2))
                + PathElement::new(
                    vec![(-s + 1, -s + 1), (s - 1, s - 1)],
                    color.stroke_width(if filled { 2 } else { 1 }),
                )
        })),
    }
    .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Where the legend goes.
#[derive(Clone, Copy)]
enum Legend {
    UpperRight,
    LowerRight,
}

/// One chart: `curves` against `x` and `y` axes of the given kinds.
#[allow(clippy::too_many_arguments)]
fn chart(
    area: &Area,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_axis: Axis,
    y_axis: Axis,
    curves: &[Curve],
    legend: Legend,
    marks: &[f64],
) -> Result<()> {
    let curves: Vec<Curve> = curves.iter().map(|c| c.drawable(y_axis)).collect();
    let xs = curves
        .iter()
        .flat_map(|c| c.pts.iter().map(|p| p.0).chain(c.band.iter().map(|b| b.0)));
    let ys = curves.iter().flat_map(|c| {
        c.pts
            .iter()
            .map(|p| p.1)
            .chain(c.band.iter().flat_map(|b| [b.1, b.2]))
    });
    let bounds = |it: &mut dyn Iterator<Item = f64>| {
        it.fold(None, |a: Option<(f64, f64)>, v| {
            Some(a.map_or((v, v), |(l, h)| (l.min(v), h.max(v))))
        })
    };
    let empty = curves.iter().all(|c| c.pts.is_empty());
    let title = if empty {
        format!("{title} (no finite values)")
    } else {
        title.to_string()
    };
    let (x0, x1) = bounds(&mut xs.into_iter()).unwrap_or((0.0, 1.0));
    let (y0, y1) = bounds(&mut ys.into_iter()).unwrap_or((0.0, 1.0));
    let (xr, yr) = (padded(x0, x1), padded(y0, y1));
    let (x_span, y_span) = (xr.clone(), yr.clone());
    let x_ticks = match x_axis {
        Axis::Integer => integer_ticks(xr.start, xr.end),
        _ => nice_ticks(xr.start, xr.end, 8),
    };
    let y_ticks = match y_axis {
        Axis::Log => log_ticks(yr.start, yr.end),
        Axis::Integer => integer_ticks(yr.start, yr.end),
        Axis::Linear => nice_ticks(yr.start, yr.end, 6),
    };
    let mut c = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(Ticked::new(xr, x_ticks), Ticked::new(yr, y_ticks))
        .map_err(|e| anyhow!("{e}"))?;
    let y_label = move |v: &f64| {
        if y_axis == Axis::Log {
            label(10f64.powf(*v))
        } else {
            label(*v)
        }
    };
    let x_label = |v: &f64| label(*v);
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    // Events (PCR's canonicalizations) as dotted vertical lines across the chart.
    for &m in marks
        .iter()
        .filter(|m| m.is_finite() && x_span.contains(*m))
    {
        c.draw_series(DashedLineSeries::new(
            [(m, y_span.start), (m, y_span.end)],
            3,
            4,
            RGBColor(120, 120, 120).stroke_width(1),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    }
    for (i, cv) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if cv.band.len() > 1 {
            let mut poly: Vec<(f64, f64)> = cv.band.iter().map(|b| (b.0, b.2)).collect();
            poly.extend(cv.band.iter().rev().map(|b| (b.0, b.1)));
            c.draw_series(std::iter::once(Polygon::new(
                poly,
                color.mix(0.18).filled(),
            )))
            .map_err(|e| anyhow!("{e}"))?;
        }
    }
    for (i, cv) in curves.iter().enumerate().filter(|(_, c)| !c.pts.is_empty()) {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        let pts = cv.pts.clone();
        let drawn = if i % 2 == 1 {
            c.draw_series(DashedLineSeries::new(pts.iter().copied(), 9, 5, style))
        } else {
            c.draw_series(LineSeries::new(pts.iter().copied(), style))
        }
        .map_err(|e| anyhow!("{e}"))?;
        drawn.label(cv.name.clone()).legend(move |(x, y)| {
            EmptyElement::at((x + 10, y))
                + PathElement::new(vec![(-10, 0), (10, 0)], color.stroke_width(3))
                + Circle::new((0, 0), 4, color.filled())
        });
        // About a dozen markers per curve, offset per curve so that markers of curves lying
        // on top of each other do not hide one another.
        let every = (pts.len() / 12).max(1);
        let offset = (i * every / COLORS.len().max(1)) % every;
        let at: Vec<(f64, f64)> = pts.iter().copied().skip(offset).step_by(every).collect();
        markers(&mut c, i, &at, color)?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(match legend {
            Legend::UpperRight => SeriesLabelPosition::UpperRight,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        })
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// The moving-average window for loss curves of `steps` steps: about 1/50 of the run.
fn window(steps: usize) -> usize {
    (steps / 50).max(1)
}

/// The chart title's note on smoothing.
fn smoothing(w: usize) -> String {
    if w == 1 {
        "per step, unsmoothed".into()
    } else {
        format!("moving average over {w} steps")
    }
}

/// A curve of a per-epoch band (epochs from 1).
fn epoch_curve(name: &str, b: &Band) -> Curve {
    let x = |i: usize| i as f64 + 1.0;
    Curve {
        name: name.into(),
        pts: b.mean.iter().enumerate().map(|(i, &v)| (x(i), v)).collect(),
        band: (0..b.mean.len())
            .map(|i| (x(i), b.lo[i], b.hi[i]))
            .collect(),
    }
}

/// A step-indexed band as a curve against `xs` (steps from 1 when `xs` is `None`).
fn step_curve(name: &str, b: &Band, xs: Option<&[f64]>) -> Curve {
    let n = xs.map_or(b.mean.len(), |x| x.len().min(b.mean.len()));
    let x = |i: usize| xs.map_or(i as f64 + 1.0, |x| x[i]);
    Curve {
        name: name.into(),
        pts: (0..n).map(|i| (x(i), b.mean[i])).collect(),
        band: (0..n).map(|i| (x(i), b.lo[i], b.hi[i])).collect(),
    }
}

/// One run's `curves.png`: training loss per step (log scale) and test accuracy per epoch, and
/// for a PCR run the global gain over training (log scale); each canonicalization is a dotted
/// vertical line on the loss and gain charts.
///
/// # Errors
///
/// If the picture cannot be drawn or staged.
pub fn curves(outputs: &mut Outputs, path: &Path, m: &RunMetrics) -> Result<()> {
    let w = window(m.step_losses.len());
    let loss = Curve {
        name: m.param.clone(),
        pts: moving_average(&m.step_losses, w)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as f64 + 1.0, v))
            .collect(),
        band: vec![],
    };
    let acc = epoch_curve(&m.param, &Band::of(&[m.per_epoch(|e| e.test_accuracy)]));
    let events: Vec<f64> = m.pcr_events.iter().map(|e| e.step as f64).collect();
    let gain = (!m.global_gain.is_empty()).then(|| Curve {
        name: "global gain".into(),
        pts: m.global_gain.iter().map(|&(s, g)| (s as f64, g)).collect(),
        band: vec![],
    });
    let width = if gain.is_some() {
        CURVES_WITH_GAIN
    } else {
        CURVES_WIDTH
    };
    png(outputs, path, (width, 450), |root| {
        let (left, rest) = root.split_horizontally(700);
        let (right, third) = rest.split_horizontally(500);
        chart(
            &left,
            &format!("training loss ({})", smoothing(w)),
            "step",
            "cross-entropy (log scale)",
            Axis::Linear,
            Axis::Log,
            &[loss],
            Legend::UpperRight,
            &events,
        )?;
        if let Some(gain) = &gain {
            chart(
                &third,
                "global gain (dotted: canonicalizations)",
                "step",
                "global gain (log scale)",
                Axis::Linear,
                Axis::Log,
                std::slice::from_ref(gain),
                Legend::LowerRight,
                &events,
            )?;
        }
        chart(
            &right,
            "test accuracy",
            "epoch",
            "accuracy",
            Axis::Integer,
            Axis::Linear,
            &[acc],
            Legend::LowerRight,
            &[],
        )
    })
}

/// The width of `curves.png` without a global gain, and with one (a third chart).
const CURVES_WIDTH: u32 = 1200;
const CURVES_WITH_GAIN: u32 = 1700;

/// The plots of a comparison (see [`crate::report::PLOTS`]): every parameterization on each,
/// its seeds summarized by a mean and a band.
///
/// # Errors
///
/// If a picture cannot be drawn or staged.
pub fn comparison(outputs: &mut Outputs, out: &Path, runs: &[RunMetrics]) -> Result<()> {
    let groups = groups(runs);
    let steps = runs.first().map_or(0, |r| r.step_losses.len());
    let w = window(steps);
    let seeds = groups.first().map_or(0, |g| g.runs.len());
    let band_note = if seeds > 1 {
        format!("; mean of {seeds} seeds, band: least to greatest")
    } else {
        String::new()
    };
    let loss: Vec<Curve> = groups
        .iter()
        .map(|g| step_curve(&g.param, &g.loss_band(w), None))
        .collect();
    png(outputs, &out.join("loss.png"), (1000, 600), |root| {
        chart(
            root,
            &format!("training loss ({}{band_note})", smoothing(w)),
            "step",
            "cross-entropy (log scale)",
            Axis::Linear,
            Axis::Log,
            &loss,
            Legend::UpperRight,
            &[],
        )
    })?;
    let per_epoch = |f: fn(&crate::metrics::EpochMetrics) -> f64| -> Vec<Curve> {
        groups
            .iter()
            .map(|g| epoch_curve(&g.param, &g.epoch_band(f)))
            .collect()
    };
    let (test_loss, test_acc) = (per_epoch(|e| e.test_loss), per_epoch(|e| e.test_accuracy));
    let test_nll = per_epoch(|e| e.test_nll);
    png(outputs, &out.join("test.png"), (1950, 550), |root| {
        let (left, rest) = root.split_horizontally(650);
        let (middle, right) = rest.split_horizontally(650);
        chart(
            &left,
            "test loss (the objective)",
            "epoch",
            "objective (log scale)",
            Axis::Integer,
            Axis::Log,
            &test_loss,
            Legend::UpperRight,
            &[],
        )?;
        chart(
            &middle,
            "test NLL of the softmax",
            "epoch",
            "negative log-likelihood (log scale)",
            Axis::Integer,
            Axis::Log,
            &test_nll,
            Legend::UpperRight,
            &[],
        )?;
        chart(
            &right,
            "test accuracy",
            "epoch",
            "accuracy",
            Axis::Integer,
            Axis::Linear,
            &test_acc,
            Legend::LowerRight,
            &[],
        )
    })?;
    let timed: Vec<Curve> = groups
        .iter()
        .map(|g| step_curve(&g.param, &g.loss_band(w), Some(&g.mean_seconds())))
        .collect();
    png(outputs, &out.join("loss_time.png"), (1000, 600), |root| {
        chart(
            root,
            &format!("training loss against time ({}{band_note})", smoothing(w)),
            "wall-clock seconds since the start (mean over seeds)",
            "cross-entropy (log scale)",
            Axis::Linear,
            Axis::Log,
            &timed,
            Legend::UpperRight,
            &[],
        )
    })?;
    png(outputs, &out.join("step_time.png"), (900, 500), |root| {
        step_times(root, &groups)
    })?;
    let gains: Vec<Curve> = groups
        .iter()
        .map(|g| {
            let (steps, b) = g.gain_band();
            step_curve(&g.param, &b, Some(&steps))
        })
        .collect();
    png(outputs, &out.join("gain.png"), (1000, 600), |root| {
        chart(
            root,
            &format!("global gain over training{band_note}"),
            "step",
            "global gain (log scale)",
            Axis::Linear,
            Axis::Log,
            &gains,
            Legend::UpperRight,
            &[],
        )
    })?;
    let pcr: Vec<&Group> = groups.iter().filter(|g| g.is_pcr()).collect();
    if pcr.is_empty() {
        return Ok(());
    }
    // The window: up to 20 steps before and 60 after, within the period.
    let period = pcr
        .iter()
        .flat_map(|g| g.runs.iter())
        .filter_map(|r| r.pcr_events.first().map(|e| e.step))
        .min()
        .unwrap_or(1);
    let (before, after) = (
        (period / 2).clamp(crate::summary::BEFORE, 20),
        period.saturating_sub(1).clamp(1, 60),
    );
    let around: Vec<Curve> = pcr
        .iter()
        .map(|g| Curve {
            name: g.param.clone(),
            pts: g
                .around_events(before, after)
                .unwrap_or_default()
                .into_iter()
                .map(|(x, y)| (x as f64, y))
                .collect(),
            band: vec![],
        })
        .collect();
    png(outputs, &out.join("pcr_loss.png"), (1000, 600), |root| {
        chart(
            root,
            "training loss around the canonicalizations (relative to the 10 steps before)",
            "steps from the canonicalization",
            "loss / mean loss of the 10 steps before",
            Axis::Integer,
            Axis::Linear,
            &around,
            Legend::UpperRight,
            &[],
        )
    })
}

/// Bars of the median step time per parameterization, whiskers from the 10th to the 90th
/// percentile of all its steps (every seed).
fn step_times(area: &Area, groups: &[Group]) -> Result<()> {
    let stats: Vec<(String, f64, f64, f64)> = groups
        .iter()
        .map(|g| {
            let t = g.step_times();
            (
                g.param.clone(),
                quantile(&t, 0.5),
                quantile(&t, 0.1),
                quantile(&t, 0.9),
            )
        })
        .collect();
    let top = stats
        .iter()
        .map(|s| s.3)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .clamp(1e-3, LIMIT);
    let n = stats.len().max(1);
    let names: Vec<String> = stats.iter().map(|s| s.0.clone()).collect();
    let ticks: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let y_ticks = nice_ticks(0.0, top * 1.15, 6);
    let mut c = ChartBuilder::on(area)
        .caption(
            "time per training step (median; whiskers: 10th-90th percentile)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(
            Ticked::new(-0.6..n as f64 - 0.4, ticks),
            Ticked::new(0.0..top * 1.15, y_ticks),
        )
        .map_err(|e| anyhow!("{e}"))?;
    let x_label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let y_label = |v: &f64| label(*v);
    c.configure_mesh()
        .disable_x_mesh()
        .x_desc("parameterization")
        .y_desc("milliseconds")
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (_, median, lo, hi)) in stats.iter().enumerate() {
        if !median.is_finite() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let x = i as f64;
        let clip = |v: f64| v.clamp(0.0, LIMIT);
        c.draw_series(std::iter::once(Rectangle::new(
            [(x - 0.3, 0.0), (x + 0.3, clip(*median))],
            color.mix(0.8).filled(),
        )))
        .map_err(|e| anyhow!("{e}"))?;
        c.draw_series(std::iter::once(PathElement::new(
            vec![(x, clip(*lo)), (x, clip(*hi))],
            BLACK.stroke_width(2),
        )))
        .map_err(|e| anyhow!("{e}"))?;
        for v in [*lo, *hi] {
            c.draw_series(std::iter::once(PathElement::new(
                vec![(x - 0.1, clip(v)), (x + 0.1, clip(v))],
                BLACK.stroke_width(2),
            )))
            .map_err(|e| anyhow!("{e}"))?;
        }
        c.draw_series(std::iter::once(Text::new(
            format!("{median:.2} ms"),
            (x - 0.25, clip(*hi) + top * 0.04),
            ("sans-serif", 14),
        )))
        .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::EpochMetrics;

    fn run_with(losses: Vec<f64>, accuracies: Vec<f64>) -> RunMetrics {
        let mut m = RunMetrics::new("wn", 0);
        m.step_ms = losses.iter().map(|l| l.abs()).collect();
        m.step_seconds = (0..losses.len()).map(|i| i as f64).collect();
        m.step_losses = losses;
        m.epochs = accuracies
            .into_iter()
            .map(|a| EpochMetrics {
                test_nll: f64::NAN,
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
                (vec![-1.0, 0.0], vec![-1.0, 0.0]),
            ];
            let runs: Vec<RunMetrics> = cases.into_iter().map(|(l, a)| run_with(l, a)).collect();
            for (i, r) in runs.iter().enumerate() {
                let mut out = Outputs::default();
                curves(&mut out, &dir.path().join(format!("{i}.png")), r).unwrap();
                out.commit().unwrap();
                let mut out = Outputs::default();
                let d = dir.path().join(format!("c{i}"));
                std::fs::create_dir(&d).unwrap();
                comparison(&mut out, &d, std::slice::from_ref(r)).unwrap();
                out.commit().unwrap();
            }
            let mut out = Outputs::default();
            comparison(&mut out, dir.path(), &runs).unwrap();
            comparison(&mut out, &dir.path().join("none"), &[]).unwrap_or(());
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("every plot drawn within two minutes");
    }

    #[test]
    fn ticks_are_nice_integer_or_logarithmic() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(integer_ticks(0.9, 3.1), vec![1.0, 2.0, 3.0]);
        assert!(integer_ticks(0.1, 0.9).is_empty());
        assert_eq!(
            integer_ticks(0.5, 30.5),
            vec![5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
        );
        assert_eq!(integer_ticks(-23.5, 60.0)[..3], [-20.0, -10.0, 0.0]);
        // 0.2 .. 3 in log10 units: 0.2, 0.5, 1, 2
        let t: Vec<String> = log_ticks(0.15f64.log10(), 3f64.log10())
            .iter()
            .map(|v| label(10f64.powf(*v)))
            .collect();
        assert_eq!(t, vec!["0.2", "0.5", "1", "2"]);
        // Less than a decade (a global gain from 1.3 to 2.9): round values, not 10^0.2.
        let t: Vec<String> = log_ticks(1.3f64.log10(), 2.9f64.log10())
            .iter()
            .map(|v| label(10f64.powf(*v)))
            .collect();
        assert_eq!(t, vec!["1.5", "2", "2.5"]);
        assert_eq!(label(0.30000000000000004), "0.3");
        assert_eq!(label(1234.0), "1234");
        assert_eq!(label(12.5), "12.5");
        assert_eq!(label(2e-7), "2.0e-7");
    }

    #[test]
    fn the_comparison_writes_its_four_plots() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Vec::new();
        for seed in 0..2 {
            for p in ["plain", "wn"] {
                let mut r = run_with(
                    (1..200).map(|i| 2.0 / i as f64).collect(),
                    vec![0.5, 0.6, 0.7],
                );
                r.param = p.into();
                r.seed = seed;
                runs.push(r);
            }
        }
        let mut out = Outputs::default();
        comparison(&mut out, dir.path(), &runs).unwrap();
        out.commit().unwrap();
        for file in crate::report::PLOTS.iter().map(|p| p.0).chain(["gain.png"]) {
            let bytes = std::fs::read(dir.path().join(file)).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{file}");
        }
        assert!(
            !dir.path().join("pcr_loss.png").exists(),
            "no PCR run, no PCR plot"
        );
    }

    #[test]
    fn twelve_series_have_twelve_colours_and_twelve_markers() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..12 {
            let c = COLORS[i % COLORS.len()];
            assert!(seen.insert((c.0, c.1, c.2)), "colour of series {i} repeats");
        }
        let markers: std::collections::HashSet<_> = (0..12).map(marker_of).collect();
        assert_eq!(markers.len(), 12);
    }

    #[test]
    fn a_pcr_runs_curves_show_the_gain_beside_loss_and_accuracy() {
        let dir = tempfile::tempdir().unwrap();
        let png_width = |path: &std::path::Path| {
            let b = std::fs::read(path).unwrap();
            u32::from_be_bytes([b[16], b[17], b[18], b[19]])
        };
        let mut r = run_with((1..200).map(|i| 2.0 / i as f64).collect(), vec![0.5, 0.6]);
        let mut out = Outputs::default();
        curves(&mut out, &dir.path().join("plain.png"), &r).unwrap();
        out.commit().unwrap();
        assert_eq!(png_width(&dir.path().join("plain.png")), CURVES_WIDTH);
        r.global_gain = vec![(50, 3.0), (100, 2.0), (150, 2.5)];
        for step in [50, 100, 150] {
            r.pcr_events.push(crate::metrics::PcrEvent {
                step,
                gain_before: 3.0,
                gain_after: 2.0,
                loss_before: 1.0,
                loss_after: 1.0,
            });
        }
        let mut out = Outputs::default();
        curves(&mut out, &dir.path().join("pcr.png"), &r).unwrap();
        out.commit().unwrap();
        assert_eq!(png_width(&dir.path().join("pcr.png")), CURVES_WITH_GAIN);
    }
}
