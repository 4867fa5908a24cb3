//! The plot of a backtest: offered load against each strategy's ready capacity, with the policy's scale
//! actions marked (green up, red down).
//!
//! Long traces are bucketed to about 1,500 columns: each column shows the highest load and each strategy's
//! lowest ready capacity in it, so a violation never disappears in the downsampling. Both the SVG and the PNG
//! have a title, axis labels and a legend; the PNG's text is rasterized with DejaVu Sans embedded in the binary,
//! so it needs no fontconfig or system fonts.
//!
//! Months of trace in 1,500 columns show the shape of the whole run but not a single scale-up. For traces longer
//! than two days a second plot (`worst-day.svg`, `worst-day.png`) zooms in on the 24 hours in which the policy
//! left the most load unserved (or, if it never did, the 24 hours with the highest load), at full resolution.

use std::{ops::Range, path::Path};

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
    min_x: f64,
    max_x: f64,
    max_y: f64,
}

/// The series over the ticks in `range`, with x in hours since the trace start.
fn data(setup: &Setup, outcomes: &[Outcome], range: Range<usize>) -> Data {
    let range = range.start.min(setup.loads.len())..range.end.min(setup.loads.len());
    let n = range.len().max(1);
    let per = n.div_ceil(COLUMNS).max(1);
    let hours = |k: usize| (k as f64 * setup.tick_secs as f64) / 3600.0;
    let mut x = Vec::new();
    let mut load = Vec::new();
    for (c, chunk) in setup.loads[range.clone()].chunks(per).enumerate() {
        x.push(hours(range.start + c * per));
        load.push(chunk.iter().copied().fold(0.0, f64::max));
    }
    // Tick intervals [from, to) of the whole run, clipped to the range and counted from its start.
    let clip = |from: usize, to: usize| {
        let (a, b) = (from.max(range.start), to.min(range.end));
        (a < b).then(|| (a - range.start, b - range.start))
    };
    let capacity = outcomes
        .iter()
        .map(|o| {
            let mut cols = vec![f64::INFINITY; x.len()];
            let mut prev_ready = 0u32;
            let mut prev_tick = 0usize;
            // Each change holds until the next one: apply it to every column it covers.
            for (i, ch) in o.timeline.iter().enumerate() {
                if i > 0
                    && let Some((a, b)) = clip(prev_tick, ch.tick)
                {
                    fill(&mut cols, a, b, per, f64::from(prev_ready) * setup.capacity);
                }
                prev_ready = ch.ready;
                prev_tick = ch.tick;
            }
            if !o.timeline.is_empty()
                && let Some((a, b)) = clip(prev_tick, setup.loads.len())
            {
                fill(&mut cols, a, b, per, f64::from(prev_ready) * setup.capacity);
            }
            let cols: Vec<f64> = cols.into_iter().map(|v| if v.is_finite() { v } else { 0.0 }).collect();
            (o.scores.name.clone(), cols)
        })
        .collect::<Vec<_>>();
    let (first, last) = (setup.time(range.start), setup.time(range.end.saturating_sub(1)));
    let events = outcomes
        .first()
        .map(|o| {
            o.events
                .iter()
                .filter(|(t, ..)| (first..=last).contains(t))
                .map(|&(t, from, to)| ((t - setup.start) as f64 / 3600.0, f64::from(to) * setup.capacity, to > from))
                .collect()
        })
        .unwrap_or_default();
    let min_x = hours(range.start);
    let max_x = hours(range.end.saturating_sub(1)).max(min_x + 1e-3);
    let max_y =
        load.iter().chain(capacity.iter().flat_map(|(_, c)| c.iter())).copied().fold(0.0, f64::max).max(1e-9) * 1.05;
    Data { x, load, capacity, events, min_x, max_x, max_y }
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

/// Writes `plot.svg` and `plot.png` into `dir`, and for a trace longer than two days `worst-day.svg` and
/// `worst-day.png` (see [`worst_window`]). Returns the names of the files written.
pub fn write(dir: &Path, title: &str, setup: &Setup, outcomes: &[Outcome]) -> Result<Vec<String>, BacktestError> {
    let mut written = Vec::new();
    draw_files(dir, "plot", title, &data(setup, outcomes, 0..setup.loads.len()))?;
    written.extend(["plot.svg".to_string(), "plot.png".to_string()]);
    let day = (86_400 / setup.tick_secs.max(1)) as usize;
    if let Some(first) = outcomes.first()
        && let Some(range) = worst_window(setup, first, day)
    {
        let d = data(setup, outcomes, range.clone());
        let what = if first.scores.violation_minutes > 0.0 { "most unserved load" } else { "highest load" };
        let zoom =
            format!("{title}: the day with the {what} for {} (hours {:.0}-{:.0})", first.scores.name, d.min_x, d.max_x);
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

const COLORS: [RGBColor; 6] = [BLUE, ORANGE, PURPLE, GREEN, CYAN, MAGENTA];

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &Data, title: &str) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(root)
        .margin(20)
        .caption(title, ("sans-serif", 22))
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(d.min_x..d.max_x, 0.0..d.max_y)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("hours since trace start")
        .y_desc("load per trace step")
        .light_line_style(GREY.mix(0.15))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(d.x.iter().copied().zip(d.load.iter().copied()), BLACK.stroke_width(2)))
        .map_err(e)?
        .label("load")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    for (i, (name, cap)) in d.capacity.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(d.x.iter().copied().zip(cap.iter().copied()), color.stroke_width(1)))
            .map_err(e)?
            .label(format!("{name} ready capacity"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .draw_series(d.events.iter().map(|&(x, y, up)| Circle::new((x, y), 2, if up { GREEN } else { RED }.filled())))
        .map_err(e)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_has_its_title_without_system_fonts() {
        register_font().expect("the embedded font registers");
        let d = Data {
            x: vec![0.0, 1.0],
            load: vec![1.0, 2.0],
            capacity: vec![("policy".into(), vec![2.0, 2.0])],
            events: vec![],
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
}
