//! The frontier plot of a sweep (`frontier.svg`, `frontier.png`): replica-hours against violation minutes,
//! one curve per strategy over its settings, the shipped settings ringed, the oracle and the static count as
//! single points. Lower and further left is better; a curve entirely below another is better at every
//! setting, not just tuned differently.
//!
//! The x axis is `log10(1 + violation minutes)` so that 0 (no violation) and thousands fit on one plot; its
//! labels are in minutes. The PNG's text is drawn with the embedded DejaVu Sans, as the other plots' is.

use std::path::Path;

use plotters::{coord::Shift, prelude::*};

use super::{BacktestError, sweep::Sweep};

const SIZE: (u32, u32) = (1200, 800);
const COLORS: [RGBColor; 6] =
    [RGBColor(33, 150, 243), RGBColor(255, 152, 0), RGBColor(156, 39, 176), GREEN, CYAN, MAGENTA];

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

fn x_of(violation_minutes: f64) -> f64 {
    (1.0 + violation_minutes.max(0.0)).log10()
}

/// Writes `frontier.svg` and `frontier.png` into `dir`; returns their names.
pub fn write(dir: &Path, title: &str, sweep: &Sweep) -> Result<Vec<String>, BacktestError> {
    let svg = dir.join("frontier.svg");
    let png = dir.join("frontier.png");
    let fail = |p: &Path, e: String| BacktestError::Write { path: p.display().to_string(), reason: e };
    register_font().map_err(|e| fail(&svg, e))?;
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(&root, title, sweep).map_err(|e| fail(&svg, e))?;
        root.present().map_err(|e| fail(&svg, e.to_string()))?;
    }
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(&root, title, sweep).map_err(|e| fail(&png, e))?;
        root.present().map_err(|e| fail(&png, e.to_string()))?;
    }
    Ok(vec!["frontier.svg".into(), "frontier.png".into()])
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, sweep: &Sweep) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let points = sweep.curves.iter().flat_map(|c| c.points.iter());
    let (max_x, max_y) = points.fold((1.0f64, 1.0f64), |(x, y), p| {
        (x.max(x_of(p.violation_minutes)), if p.replica_hours.is_finite() { y.max(p.replica_hours) } else { y })
    });
    let mut chart = ChartBuilder::on(root)
        .margin(20)
        .caption(title, ("sans-serif", 22))
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_y * 1.05)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("violation minutes (log scale)")
        .y_desc("replica-hours")
        .x_label_formatter(&|x| format!("{:.0}", 10f64.powf(*x) - 1.0))
        .light_line_style(RGBColor(158, 158, 158).mix(0.15))
        .draw()
        .map_err(e)?;
    for (i, c) in sweep.curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let xy: Vec<(f64, f64)> = c.points.iter().map(|p| (x_of(p.violation_minutes), p.replica_hours)).collect();
        let label = match c.setting {
            "headroom" => format!("{} (headroom x{:.1}-x{:.1})", c.name, first(c), last(c)),
            "target" => format!("{} (target {:.0}-{:.0} %)", c.name, first(c), last(c)),
            _ => c.name.clone(),
        };
        chart
            .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        chart.draw_series(xy.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled()))).map_err(e)?;
        if let Some(&(x, y)) = c.shipped.and_then(|i| xy.get(i)) {
            chart.draw_series([Circle::new((x, y), 8, color.stroke_width(2))]).map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    root.draw(&Text::new("ringed: the shipped settings", (90, SIZE.1 as i32 - 25), ("sans-serif", 14))).map_err(e)?;
    Ok(())
}

fn first(c: &super::sweep::Curve) -> f64 {
    c.points.first().map(|p| p.setting).unwrap_or(0.0)
}

fn last(c: &super::sweep::Curve) -> f64 {
    c.points.last().map(|p| p.setting).unwrap_or(0.0)
}
