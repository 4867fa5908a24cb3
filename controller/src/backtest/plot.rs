//! The plot of a backtest: offered load against each strategy's ready capacity, with the policy's scale
//! actions marked and, in a strip under the chart, when each strategy had more load than ready capacity.
//!
//! A trace of up to two days is drawn at up to 1,500 columns: each column shows the highest load and each
//! strategy's lowest ready capacity in it, so a violation never disappears in the downsampling, and every
//! scale action of the policy is a marker (a green triangle up, a red one down). A longer trace gets an
//! overview instead: hourly (or coarser, up to weekly, so that there are at most [`MAX_BUCKETS`]) peaks of
//! load and of each strategy's ready capacity, no per-event markers (months of them are a wall of ink), and
//! the violation strip shaded by the share of each bucket spent over capacity. For those traces a second plot
//! (`worst-day.svg`, `worst-day.png`) zooms in on the 24 hours in which the policy left the most load unserved
//! (or, if it never did, the 24 hours with the highest load), at full resolution and with its markers.
//!
//! Axes are in the trace's time and units, with numbers as people write them (40k, not 40000.0). Both the SVG
//! and the PNG have a title, axis labels and a legend; the PNG's text is rasterized with DejaVu Sans embedded
//! in the binary, so it needs no fontconfig or system fonts.

use std::{ops::Range, path::Path};

use plotters::{
    coord::Shift,
    element::{Drawable, PointCollection},
    prelude::*,
};
use plotters_backend::{BackendCoord, DrawingErrorKind};

use super::{
    BacktestError,
    output::human,
    strategy::{Outcome, Setup},
};

const COLUMNS: usize = 1500;
/// At most this many buckets in the overview of a long trace.
pub const MAX_BUCKETS: usize = 400;
/// Bucket lengths of the overview, finest first.
const BUCKETS: [(i64, &str); 6] = [
    (3600, "hourly"),
    (3 * 3600, "3-hourly"),
    (6 * 3600, "6-hourly"),
    (12 * 3600, "12-hourly"),
    (86_400, "daily"),
    (7 * 86_400, "weekly"),
];
const SIZE: (u32, u32) = (1600, 800);

const LOAD: RGBColor = RGBColor(120, 120, 120);
const LOAD_FILL: RGBColor = RGBColor(200, 200, 200);
const UP: RGBColor = RGBColor(27, 130, 45);
const DOWN: RGBColor = RGBColor(211, 47, 47);
const VIOLATION: RGBColor = RGBColor(211, 47, 47);
/// Strategy lines: the policy first, strong; no green or red, which mean scale-up, scale-down and violation.
const COLORS: [RGBColor; 5] = [
    RGBColor(21, 101, 192),
    RGBColor(255, 143, 0),
    RGBColor(123, 31, 162),
    RGBColor(109, 76, 65),
    RGBColor(0, 151, 167),
];

/// Downsampled series ready to draw.
struct Data {
    /// Unix seconds of hour 0 (the trace start).
    start: i64,
    /// Hours since the trace start of each column.
    x: Vec<f64>,
    /// Highest load per column.
    load: Vec<f64>,
    /// (strategy name, ready capacity per column: the lowest in a full-resolution column, the highest in an
    /// overview bucket).
    capacity: Vec<(String, Vec<f64>)>,
    /// (strategy name, share of each column's ticks with more load than ready capacity).
    violations: Vec<(String, Vec<f64>)>,
    /// The first strategy's scale actions: (hours, capacity after, up). Empty in an overview.
    events: Vec<(f64, f64, bool)>,
    /// What one column aggregates, for the axis label: `None` at full resolution, "daily" etc. in an overview.
    bucket: Option<&'static str>,
    /// "per 30 min step": the unit of the trace's values.
    per: String,
    min_x: f64,
    max_x: f64,
    max_y: f64,
}

/// Ticks per column: the finest overview bucket with at most [`MAX_BUCKETS`] of them when `overview`,
/// otherwise as many as fit [`COLUMNS`].
fn columns(setup: &Setup, n: usize, overview: bool) -> (usize, Option<&'static str>) {
    let tick = setup.tick_secs.max(1);
    if overview {
        let span = n as i64 * tick;
        let (secs, name) = BUCKETS
            .iter()
            .copied()
            .find(|(secs, _)| ((span + secs - 1) / secs) as usize <= MAX_BUCKETS)
            .unwrap_or(BUCKETS[BUCKETS.len() - 1]);
        return (((secs / tick).max(1)) as usize, Some(name));
    }
    (n.div_ceil(COLUMNS).max(1), None)
}

/// The ready replicas of `outcome` at every tick of `range`.
fn ready_per_tick(outcome: &Outcome, range: &Range<usize>) -> Vec<u32> {
    let mut out = Vec::with_capacity(range.len());
    let mut changes = outcome.timeline.iter().peekable();
    let mut ready = 0u32;
    for k in 0..range.end {
        while let Some(ch) = changes.next_if(|ch| ch.tick <= k) {
            ready = ch.ready;
        }
        if k >= range.start {
            out.push(ready);
        }
    }
    out
}

/// The series over the ticks in `range`, with x in hours since the trace start; `overview` aggregates into
/// buckets of an hour or more and leaves the per-event markers out.
fn data(setup: &Setup, outcomes: &[Outcome], range: Range<usize>, overview: bool) -> Data {
    let range = range.start.min(setup.loads.len())..range.end.min(setup.loads.len());
    let (per, bucket) = columns(setup, range.len().max(1), overview);
    let hours = |k: usize| (k as f64 * setup.tick_secs as f64) / 3600.0;
    let loads = &setup.loads[range.clone()];
    let mut x = Vec::new();
    let mut load = Vec::new();
    for (c, chunk) in loads.chunks(per).enumerate() {
        x.push(hours(range.start + c * per));
        load.push(chunk.iter().copied().fold(0.0, f64::max));
    }
    let mut capacity = Vec::new();
    let mut violations = Vec::new();
    for o in outcomes {
        let ready = ready_per_tick(o, &range);
        let (mut cap, mut viol) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
        if !o.timeline.is_empty() {
            for (r, l) in ready.chunks(per).zip(loads.chunks(per)) {
                let c = r.iter().map(|&r| f64::from(r) * setup.capacity);
                cap.push(if overview { c.fold(0.0, f64::max) } else { c.fold(f64::INFINITY, f64::min) });
                let over =
                    r.iter().zip(l).filter(|(r, l)| **l - f64::from(**r) * setup.capacity > 1e-9 * (**l).max(1.0));
                viol.push(over.count() as f64 / r.len() as f64);
            }
        }
        capacity.push((o.scores.name.clone(), cap));
        violations.push((o.scores.name.clone(), viol));
    }
    let (first, last) = (setup.time(range.start), setup.time(range.end.saturating_sub(1)));
    let events = match outcomes.first() {
        Some(o) if !overview => o
            .events
            .iter()
            .filter(|(t, ..)| (first..=last).contains(t))
            .map(|&(t, from, to)| ((t - setup.start) as f64 / 3600.0, f64::from(to) * setup.capacity, to > from))
            .collect(),
        _ => Vec::new(),
    };
    let min_x = hours(range.start);
    let max_x = hours(range.end.saturating_sub(1)).max(min_x + 1e-3);
    let max_y =
        load.iter().chain(capacity.iter().flat_map(|(_, c)| c.iter())).copied().fold(0.0, f64::max).max(1e-9) * 1.05;
    let per_step = format!("per {} step", step_words(setup.step_secs));
    Data { start: setup.start, x, load, capacity, violations, events, bucket, per: per_step, min_x, max_x, max_y }
}

/// "30 min", "1 h", "15 s": a trace step for an axis label.
fn step_words(secs: f64) -> String {
    let secs = secs.round() as i64;
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The `window` ticks in which `outcome` left the most load unserved (load above its ready capacity), or, if
/// it never did, those with the highest load, centred on that load. `None` when the run is not longer than two windows (the whole
/// plot already shows it at a readable scale) or has no timeline.
pub fn worst_window(setup: &Setup, outcome: &Outcome, window: usize) -> Option<Range<usize>> {
    let n = setup.loads.len();
    if window == 0 || n <= 2 * window || outcome.timeline.is_empty() {
        return None;
    }
    let mut excess = vec![0.0; n];
    let mut changes = outcome.timeline.iter().peekable();
    let mut ready = 0u32;
    for (k, (load, excess)) in setup.loads.iter().zip(excess.iter_mut()).enumerate() {
        while let Some(ch) = changes.next_if(|ch| ch.tick <= k) {
            ready = ch.ready;
        }
        *excess = (load - f64::from(ready) * setup.capacity).max(0.0);
    }
    let score: &[f64] = if excess.iter().any(|e| *e > 0.0) { &excess } else { &setup.loads };
    let mut sum: f64 = score[..window].iter().sum();
    let (mut best, mut best_start) = (sum, 0);
    for start in 1..=n - window {
        sum += score[start + window - 1] - score[start - 1];
        if sum > best + 1e-9 {
            (best, best_start) = (sum, start);
        }
    }
    // The best window is the first to hold the whole episode, which leaves it at the right edge: centre the
    // window on the episode's centre of mass instead.
    let part = &score[best_start..best_start + window];
    let mass: f64 = part.iter().sum();
    let centre = if mass > 0.0 {
        best_start + (part.iter().enumerate().map(|(i, v)| i as f64 * v).sum::<f64>() / mass).round() as usize
    } else {
        best_start + window / 2
    };
    let start = centre.saturating_sub(window / 2).min(n - window);
    Some(start..start + window)
}

/// Registers the embedded DejaVu Sans as plotters' "sans-serif", once per process.
fn register_font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font could not be read".to_string())
        })
        .clone()
}

/// Writes `plot.svg` and `plot.png` into `dir` (an overview when the trace is longer than two days), and
/// for such a trace `worst-day.svg` and `worst-day.png` (see [`worst_window`]). Returns the names of the
/// files written.
pub fn write(dir: &Path, title: &str, setup: &Setup, outcomes: &[Outcome]) -> Result<Vec<String>, BacktestError> {
    let mut written = Vec::new();
    let day = (86_400 / setup.tick_secs.max(1)) as usize;
    let overview = setup.loads.len() > 2 * day;
    draw_files(dir, "plot", title, &data(setup, outcomes, 0..setup.loads.len(), overview))?;
    written.extend(["plot.svg".to_string(), "plot.png".to_string()]);
    if let Some(first) = outcomes.first()
        && let Some(range) = worst_window(setup, first, day)
    {
        let d = data(setup, outcomes, range.clone(), false);
        let what = if first.scores.violation_minutes > 0.0 { "most unserved load" } else { "highest load" };
        let zoom = format!(
            "{title}: the day with the {what} for {} ({} to {})",
            first.scores.name,
            time_label(d.start, d.min_x, f64::INFINITY),
            time_label(d.start, d.max_x, f64::INFINITY)
        );
        draw_files(dir, "worst-day", &zoom, &d)?;
        written.extend(["worst-day.svg".to_string(), "worst-day.png".to_string()]);
    }
    Ok(written)
}

fn draw_files(dir: &Path, stem: &str, title: &str, d: &Data) -> Result<(), BacktestError> {
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    let fail = |p: &Path, e: String| BacktestError::Write { path: p.display().to_string(), reason: e };
    // Both backends lay text out with the registered font.
    register_font().map_err(|e| fail(&svg, e))?;
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(&root, d, title).map_err(|e| fail(&svg, e))?;
        root.present().map_err(|e| fail(&svg, e.to_string()))?;
    }
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(&root, d, title).map_err(|e| fail(&png, e))?;
        root.present().map_err(|e| fail(&png, e.to_string()))?;
    }
    Ok(())
}

/// The trace time `hours` after `start`, as a date when the plot spans more than two days, else as a date
/// and a time of day; in full (date and time) for an infinite span.
fn time_label(start: i64, hours: f64, span_hours: f64) -> String {
    let Ok(t) = jiff::Timestamp::from_second(start + (hours * 3600.0).round() as i64) else {
        return format!("{hours:.0} h");
    };
    let format = match span_hours {
        s if s.is_infinite() => "%Y-%m-%d %H:%M",
        s if s > 48.0 => "%Y-%m-%d",
        _ => "%b %d %H:%M",
    };
    t.strftime(format).to_string()
}

/// A line wider than one pixel, drawn one segment at a time.
///
/// plotters' bitmap backend turns a wide `LineSeries` into one polygon around the whole path, and a
/// segment that maps to a single pixel (two columns on the same pixel, common in a long trace) has no
/// direction: its normal is NaN, the polygon gets vertices far outside the chart, and the PNG shows stray
/// vertical lines through the axis labels and the legend (the SVG backend strokes the path itself and has
/// none). Drawing each segment with `draw_line` skips the zero-length ones and never joins segments.
struct Segments {
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
}

impl<'a> PointCollection<'a, (f64, f64)> for &'a Segments {
    type Point = &'a (f64, f64);
    type IntoIter = &'a [(f64, f64)];
    fn point_iter(self) -> &'a [(f64, f64)] {
        &self.points
    }
}

impl<DB: DrawingBackend> Drawable<DB> for Segments {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        points: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let mut prev: Option<BackendCoord> = None;
        for p in points {
            if let Some(q) = prev
                && q != p
            {
                backend.draw_line(q, p, &self.style)?;
            }
            prev = Some(p);
        }
        Ok(())
    }
}

const Y_LABELS: u32 = 80;
const GRID: RGBColor = RGBColor(158, 158, 158);

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &Data, title: &str) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(e)?;
    let rows = d.violations.len();
    let strip = 40 + 22 * rows as u32;
    let (upper, lower) = root.split_vertically((root.dim_in_pixel().1 as i32 - strip as i32).max(100));
    let span = d.max_x - d.min_x;
    let x_label = |h: &f64| time_label(d.start, *h, span);
    let mut chart = ChartBuilder::on(&upper)
        .margin(20)
        .margin_top(10)
        .margin_bottom(5)
        .x_label_area_size(45)
        .y_label_area_size(Y_LABELS)
        .build_cartesian_2d(d.min_x..d.max_x, 0.0..d.max_y)
        .map_err(e)?;
    let y_desc = match d.bucket {
        Some(b) => format!("{b} peak, trace units {}", d.per),
        None => format!("load, trace units {}", d.per),
    };
    chart
        .configure_mesh()
        .x_desc(if span > 48.0 { "date" } else { "time" })
        .y_desc(y_desc)
        .x_labels(12)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| human(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(GRID.mix(0.15))
        .bold_line_style(GRID.mix(0.4))
        .draw()
        .map_err(e)?;
    let load_label = if d.bucket.is_some() { "load (peak of each bucket)" } else { "load" };
    let mut area: Vec<(f64, f64)> = d.x.iter().copied().zip(d.load.iter().copied()).collect();
    area.push((d.x.last().copied().unwrap_or(d.min_x), 0.0));
    area.push((d.min_x, 0.0));
    chart.draw_series(std::iter::once(Polygon::new(area, LOAD_FILL.mix(0.7).filled()))).map_err(e)?;
    chart
        .draw_series(LineSeries::new(d.x.iter().copied().zip(d.load.iter().copied()), LOAD.stroke_width(1)))
        .map_err(e)?
        .label(load_label)
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], LOAD_FILL.mix(0.7).filled()));
    // The baselines first, thin, then the policy on top of them, thick.
    for (i, (name, cap)) in d.capacity.iter().enumerate().rev() {
        let color = COLORS[i % COLORS.len()];
        let width = if i == 0 { 3 } else { 2 };
        let label =
            if i == 0 { format!("{name} ready capacity (the policy)") } else { format!("{name} ready capacity") };
        let points = d.x.iter().copied().zip(cap.iter().copied()).collect();
        chart
            .draw_series(std::iter::once(Segments { points, style: color.stroke_width(width) }))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width)));
    }
    let policy = d.capacity.first().map(|(n, _)| n.as_str()).unwrap_or("policy");
    for (up, color, what) in [(true, UP, "scale up"), (false, DOWN, "scale down")] {
        if !d.events.iter().any(|ev| ev.2 == up) {
            continue;
        }
        let shape = move |dy: i32| {
            if up {
                vec![(0, -5 + dy), (-5, 4 + dy), (5, 4 + dy)]
            } else {
                vec![(0, 5 + dy), (-5, -4 + dy), (5, -4 + dy)]
            }
        };
        chart
            .draw_series(
                d.events
                    .iter()
                    .filter(|ev| ev.2 == up)
                    .map(move |&(x, y, _)| EmptyElement::at((x, y)) + Polygon::new(shape(0), color.filled())),
            )
            .map_err(e)?
            .label(format!("{what} ({policy})"))
            .legend(move |(x, y)| EmptyElement::at((x + 10, y)) + Polygon::new(shape(0), color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(GRID)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;

    // The violation strip: one row per strategy, shaded by the share of each column over capacity.
    // Rows count from the bottom: the policy's row is the top one.
    let names: Vec<&str> = d.violations.iter().rev().map(|(n, _)| n.as_str()).collect();
    let what = if d.violations.iter().all(|(_, v)| v.iter().all(|v| *v == 0.0)) {
        "never, for any strategy"
    } else if d.bucket.is_some() {
        "darker = more of the bucket"
    } else {
        "darker = longer"
    };
    let mut strip = ChartBuilder::on(&lower)
        .margin_left(20)
        .margin_right(20)
        .margin_bottom(10)
        .caption(format!("more load than ready capacity: {what}"), ("sans-serif", 15))
        .x_label_area_size(0)
        .y_label_area_size(Y_LABELS)
        .build_cartesian_2d(d.min_x..d.max_x, (0..rows.max(1) as i32).into_segmented())
        .map_err(e)?;
    strip
        .configure_mesh()
        .disable_mesh()
        .y_labels(rows.max(1))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).map(|n| n.to_string()).unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    for (row, (_, shares)) in d.violations.iter().rev().enumerate() {
        let row = row as i32;
        let edge = |c: usize| d.x.get(c + 1).copied().unwrap_or(d.max_x);
        strip
            .draw_series(std::iter::once(Rectangle::new(
                [(d.min_x, SegmentValue::Exact(row)), (d.max_x, SegmentValue::Exact(row + 1))],
                GRID.mix(if row % 2 == 0 { 0.06 } else { 0.12 }).filled(),
            )))
            .map_err(e)?;
        strip
            .draw_series(shares.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(c, v)| {
                Rectangle::new(
                    [(d.x[c], SegmentValue::Exact(row)), (edge(c), SegmentValue::Exact(row + 1))],
                    VIOLATION.mix(0.3 + 0.7 * v.min(1.0)).filled(),
                )
            }))
            .map_err(e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_has_its_title_without_system_fonts() {
        register_font().expect("the embedded font registers");
        let d = Data {
            start: 0,
            x: vec![0.0, 1.0],
            load: vec![1.0, 2.0],
            capacity: vec![("policy".into(), vec![2.0, 2.0])],
            violations: vec![("policy".into(), vec![0.0, 0.0])],
            events: vec![],
            bucket: None,
            per: "per 1 min step".into(),
            min_x: 0.0,
            max_x: 1.0,
            max_y: 3.0,
        };
        let (w, h) = (800u32, 400u32);
        let ink_in_title_band = |title: &str| {
            let mut pixels = vec![0u8; (w * h * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
                draw(&root, &d, title).expect("draws");
                root.present().expect("presents");
            }
            // The caption sits in the top margin, above the plotting area: count dark pixels there.
            pixels[..(w * 45 * 3) as usize].chunks(3).filter(|p| p.iter().all(|c| *c < 100)).count()
        };
        let with_text = ink_in_title_band("web-predictive on nyc_taxi.csv");
        let blank = ink_in_title_band("");
        assert!(with_text > 200 + blank, "title band: {with_text} dark pixels with a title, {blank} without");
    }

    /// Pixels of exactly `color` in rows `rows` of a `draw` of `d` at the plot's size.
    fn pixels_of(d: &Data, color: RGBColor, rows: Range<u32>) -> usize {
        let (w, h) = SIZE;
        let mut pixels = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
            draw(&root, d, "zig-zag").expect("draws");
            root.present().expect("presents");
        }
        pixels[(rows.start * w * 3) as usize..(rows.end * w * 3) as usize]
            .chunks(3)
            .filter(|p| *p == [color.0, color.1, color.2])
            .count()
    }

    #[test]
    fn a_wide_line_over_a_long_jagged_trace_stays_inside_the_chart_in_the_png() {
        register_font().expect("the embedded font registers");
        // Months of day/night swings in 3,000 columns: several columns share a pixel, as in a 215-day trace.
        let n = 3000;
        let x: Vec<f64> = (0..n).map(|i| i as f64 * 1.7).collect();
        let cap: Vec<f64> = (0..n).map(|i| if (i / 2) % 2 == 0 { 40_000.0 } else { 2_000.0 }).collect();
        let d = Data {
            start: 1_404_172_800,
            x: x.clone(),
            load: cap.iter().map(|c| c * 0.9).collect(),
            capacity: vec![("policy".into(), cap.clone()), ("hpa".into(), cap.iter().map(|c| c * 1.1).collect())],
            violations: vec![("policy".into(), vec![0.0; n]), ("hpa".into(), vec![0.0; n])],
            events: vec![],
            bucket: Some("hourly"),
            per: "per 30 min step".into(),
            min_x: 0.0,
            max_x: x[n - 1],
            max_y: 46_000.0,
        };
        let inside = pixels_of(&d, COLORS[0], 0..SIZE.1);
        assert!(inside > 1000, "the policy's line is drawn: {inside} pixels");
        // Below the chart: the x-axis labels, the violation strip and its row names. Above it: the title.
        let below = pixels_of(&d, COLORS[0], SIZE.1 - 150..SIZE.1);
        let above = pixels_of(&d, COLORS[0], 0..30);
        assert_eq!((above, below), (0, 0), "policy-coloured pixels outside the chart");
    }
}
