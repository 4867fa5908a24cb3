//! The plot of a backtest: offered load against each strategy's ready capacity, with the policy's scale
//! actions marked (green up, red down).
//!
//! Long traces are bucketed to about 1,500 columns: each column shows the highest load and each strategy's
//! lowest ready capacity in it, so a violation never disappears in the downsampling. The SVG has a title,
//! axis labels and a legend. The PNG has the same lines without any text: plotters would need system fonts
//! (fontconfig) to rasterize text, and the plot should render anywhere.

use std::path::Path;

use plotters::{coord::Shift, prelude::*};

const GREY: RGBColor = RGBColor(158, 158, 158);
const ORANGE: RGBColor = RGBColor(255, 152, 0);
const PURPLE: RGBColor = RGBColor(156, 39, 176);

use super::{
    BacktestError,
    strategy::{Outcome, Setup},
};

const COLUMNS: usize = 1500;
const SIZE: (u32, u32) = (1600, 700);

/// Downsampled series ready to draw.
struct Data {
    /// Hours since the trace start of each column.
    x: Vec<f64>,
    load: Vec<f64>,
    /// (strategy name, lowest ready capacity per column).
    capacity: Vec<(String, Vec<f64>)>,
    /// The first strategy's scale actions: (hours, capacity after, up).
    events: Vec<(f64, f64, bool)>,
    max_x: f64,
    max_y: f64,
}

fn data(setup: &Setup, outcomes: &[Outcome]) -> Data {
    let n = setup.loads.len().max(1);
    let per = n.div_ceil(COLUMNS).max(1);
    let hours = |k: usize| (k as f64 * setup.tick_secs as f64) / 3600.0;
    let mut x = Vec::new();
    let mut load = Vec::new();
    for (c, chunk) in setup.loads.chunks(per).enumerate() {
        x.push(hours(c * per));
        load.push(chunk.iter().copied().fold(0.0, f64::max));
    }
    let capacity = outcomes
        .iter()
        .map(|o| {
            let mut cols = vec![f64::INFINITY; x.len()];
            let mut prev_ready = 0u32;
            let mut prev_tick = 0usize;
            // Each change holds until the next one: apply it to every column it covers.
            for (i, ch) in o.timeline.iter().enumerate() {
                if i > 0 {
                    fill(&mut cols, prev_tick, ch.tick, per, f64::from(prev_ready) * setup.capacity);
                }
                prev_ready = ch.ready;
                prev_tick = ch.tick;
            }
            if !o.timeline.is_empty() {
                fill(&mut cols, prev_tick, n, per, f64::from(prev_ready) * setup.capacity);
            }
            let cols: Vec<f64> = cols.into_iter().map(|v| if v.is_finite() { v } else { 0.0 }).collect();
            (o.scores.name.clone(), cols)
        })
        .collect::<Vec<_>>();
    let events = outcomes
        .first()
        .map(|o| {
            o.events
                .iter()
                .map(|&(t, from, to)| ((t - setup.start) as f64 / 3600.0, f64::from(to) * setup.capacity, to > from))
                .collect()
        })
        .unwrap_or_default();
    let max_x = hours(n.saturating_sub(1)).max(1e-3);
    let max_y =
        load.iter().chain(capacity.iter().flat_map(|(_, c)| c.iter())).copied().fold(0.0, f64::max).max(1e-9) * 1.05;
    Data { x, load, capacity, events, max_x, max_y }
}

/// Lowers each column covered by ticks [from, to) to at most `value`.
fn fill(cols: &mut [f64], from: usize, to: usize, per: usize, value: f64) {
    if to <= from {
        return;
    }
    let (a, b) = (from / per, (to - 1) / per);
    for c in cols.iter_mut().take(b + 1).skip(a) {
        *c = c.min(value);
    }
}

/// Writes `plot.svg` and `plot.png` into `dir`.
pub fn write(dir: &Path, title: &str, setup: &Setup, outcomes: &[Outcome]) -> Result<(), BacktestError> {
    let d = data(setup, outcomes);
    let svg = dir.join("plot.svg");
    let png = dir.join("plot.png");
    let fail = |p: &Path, e: String| BacktestError::Write { path: p.display().to_string(), reason: e };
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(&root, &d, Some(title)).map_err(|e| fail(&svg, e))?;
        root.present().map_err(|e| fail(&svg, e.to_string()))?;
    }
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(&root, &d, None).map_err(|e| fail(&png, e))?;
        root.present().map_err(|e| fail(&png, e.to_string()))?;
    }
    Ok(())
}

const COLORS: [RGBColor; 6] = [BLUE, ORANGE, PURPLE, GREEN, CYAN, MAGENTA];

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &Data, title: Option<&str>) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut builder = ChartBuilder::on(root);
    builder.margin(20);
    if let Some(t) = title {
        builder.caption(t, ("sans-serif", 22)).x_label_area_size(40).y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d(0.0..d.max_x, 0.0..d.max_y).map_err(e)?;
    if title.is_some() {
        chart
            .configure_mesh()
            .x_desc("hours since trace start")
            .y_desc("load per trace step")
            .light_line_style(GREY.mix(0.15))
            .draw()
            .map_err(e)?;
    } else {
        chart.configure_mesh().disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0).draw().map_err(e)?;
    }
    let load = chart
        .draw_series(LineSeries::new(d.x.iter().copied().zip(d.load.iter().copied()), BLACK.stroke_width(2)))
        .map_err(e)?;
    if title.is_some() {
        load.label("load").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    for (i, (name, cap)) in d.capacity.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let series = chart
            .draw_series(LineSeries::new(d.x.iter().copied().zip(cap.iter().copied()), color.stroke_width(1)))
            .map_err(e)?;
        if title.is_some() {
            series
                .label(format!("{name} ready capacity"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    chart
        .draw_series(d.events.iter().map(|&(x, y, up)| Circle::new((x, y), 2, if up { GREEN } else { RED }.filled())))
        .map_err(e)?;
    if title.is_some() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
    }
    Ok(())
}
