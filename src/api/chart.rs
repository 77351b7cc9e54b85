//! Server-rendered SVG charts for the console: an endpoint's last 24 hours
//! at a glance, success rate as bars and mean latency as a line.
//!
//! The SVG is self-contained (no script, no external font or style) so it
//! can be inserted into a page as text or opened on its own.

use crate::store::deliveries::HourFigures;
use std::fmt::Write;

const WIDTH: f64 = 520.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const RATE_TOP: f64 = 28.0;
const RATE_HEIGHT: f64 = 90.0;
const LATENCY_TOP: f64 = 150.0;
const LATENCY_HEIGHT: f64 = 70.0;
const HEIGHT: f64 = 250.0;

/// The chart of `hours` hourly slots, newest on the right. `figures` holds
/// the hours that had attempts (`hours_ago` 0 is the hour ending now).
pub fn health_svg(title: &str, hours: i64, figures: &[HourFigures]) -> String {
    let hours = hours.max(1);
    let slot = (WIDTH - LEFT - RIGHT) / hours as f64;
    let x_of = |hours_ago: i64| LEFT + (hours - 1 - hours_ago) as f64 * slot;
    let attempts: i64 = figures.iter().map(|f| f.attempts).sum();
    let succeeded: i64 = figures.iter().map(|f| f.succeeded).sum();
    let (summary, short) = if attempts == 0 {
        (
            format!("no attempts in the last {hours} hours"),
            "no attempts".to_owned(),
        )
    } else {
        let rate = succeeded as f64 * 100.0 / attempts as f64;
        (
            format!(
                "{succeeded} of {attempts} attempts succeeded ({rate:.1} %) in the last {hours} hours"
            ),
            format!("{rate:.1} % of {attempts} succeeded"),
        )
    };
    let peak = figures.iter().map(|f| f.mean_ms).max().unwrap_or(0).max(1);
    let scale = nice_ceiling(peak);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-labelledby="chart-title chart-desc" font-family="system-ui, sans-serif" font-size="11">
<title id="chart-title">{title}</title>
<desc id="chart-desc">{summary}</desc>
<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>
<text x="{LEFT}" y="16" font-size="12" font-weight="600" fill="#1f2933">Success rate per hour</text>
<text x="{}" y="16" font-size="11" fill="#52606d" text-anchor="end">{short}</text>
"##,
        WIDTH - RIGHT,
        title = escape(title),
        summary = escape(&summary),
        short = escape(&short),
    );
    // Axes and grid of the success panel.
    for (frac, label) in [(0.0, "100 %"), (0.5, "50 %"), (1.0, "0 %")] {
        let y = RATE_TOP + frac * RATE_HEIGHT;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#e4e7eb"/><text x="{}" y="{}" text-anchor="end" fill="#52606d">{label}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for f in figures.iter().filter(|f| f.hours_ago < hours) {
        let rate = f.succeeded as f64 / f.attempts.max(1) as f64;
        let h = (rate * RATE_HEIGHT).max(1.5);
        let colour = if rate >= 0.99 {
            "#2f9e44"
        } else if rate >= 0.9 {
            "#f08c00"
        } else {
            "#e03131"
        };
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"><title>{} h ago: {} of {} succeeded</title></rect>"##,
            x_of(f.hours_ago) + 1.0,
            RATE_TOP + RATE_HEIGHT - h,
            (slot - 2.0).max(1.0),
            f.hours_ago,
            f.succeeded,
            f.attempts
        );
    }
    // The latency panel.
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{}" font-size="12" font-weight="600" fill="#1f2933">Mean latency per hour</text>"##,
        LATENCY_TOP - 14.0
    );
    for (frac, value) in [(0.0, scale), (1.0, 0)] {
        let y = LATENCY_TOP + frac * LATENCY_HEIGHT;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#e4e7eb"/><text x="{}" y="{}" text-anchor="end" fill="#52606d">{value} ms</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let mut points = figures
        .iter()
        .filter(|f| f.hours_ago < hours)
        .map(|f| {
            (
                x_of(f.hours_ago) + slot / 2.0,
                LATENCY_TOP + LATENCY_HEIGHT * (1.0 - f.mean_ms as f64 / scale as f64),
                f,
            )
        })
        .collect::<Vec<_>>();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    if points.len() > 1 {
        let path = points
            .iter()
            .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            svg,
            r##"<polyline points="{path}" fill="none" stroke="#1c7ed6" stroke-width="2"/>"##
        );
    }
    for (x, y, f) in &points {
        let _ = writeln!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="#1c7ed6"><title>{} h ago: mean {} ms, slowest {} ms</title></circle>"##,
            f.hours_ago, f.mean_ms, f.max_ms
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{}" fill="#52606d">{hours} h ago</text><text x="{}" y="{}" text-anchor="end" fill="#52606d">now</text>
</svg>
"##,
        HEIGHT - 8.0,
        WIDTH - RIGHT,
        HEIGHT - 8.0
    );
    svg
}

/// The smallest of 1, 2, 5 × 10ⁿ that is at least `v`.
fn nice_ceiling(v: i64) -> i64 {
    let mut base = 1;
    loop {
        for m in [1, 2, 5] {
            if m * base >= v {
                return m * base;
            }
        }
        base *= 10;
    }
}

/// Text safe inside SVG elements and attributes.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(hours_ago: i64, attempts: i64, succeeded: i64, mean_ms: i64) -> HourFigures {
        HourFigures {
            hours_ago,
            attempts,
            succeeded,
            mean_ms,
            max_ms: mean_ms * 2,
        }
    }

    #[test]
    fn bars_and_points_for_the_hours_with_attempts() {
        let svg = health_svg(
            "https://a.example/<hook>",
            24,
            &[hour(0, 10, 10, 40), hour(3, 4, 1, 900)],
        );
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            1 + 2,
            "background + two bars"
        );
        assert_eq!(svg.matches("<circle ").count(), 2);
        assert!(svg.contains("11 of 14 attempts succeeded (78.6 %)"));
        assert!(svg.contains(">78.6 % of 14 succeeded<"));
        assert!(svg.contains("#e03131"), "a 25 % hour is red");
        assert!(svg.contains("1000 ms"), "latency axis rounded up from 900");
        assert!(svg.contains("&lt;hook&gt;"), "title escaped");
        assert!(!svg.contains("<hook>"));
    }

    #[test]
    fn an_empty_day_says_so() {
        let svg = health_svg("e", 24, &[]);
        assert!(svg.contains("no attempts in the last 24 hours"));
        assert_eq!(svg.matches("<circle ").count(), 0);
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(
            [1, 3, 7, 12, 250, 501].map(nice_ceiling),
            [1, 5, 10, 20, 500, 1000]
        );
    }
}
