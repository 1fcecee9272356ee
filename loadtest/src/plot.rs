//! Hand-written SVG plots, so a person can look rather than read: latency over the
//! run (p50, p99, max per second) and the latency distribution on a "nines" axis
//! (the usual HDR percentile plot). No plotting dependency; plain text out.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::stats::{Hist, TimelineRow};

const W: f64 = 800.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// Writes `latency-over-time.svg` and `latency-distribution.svg` into `dir`.
pub fn write(
    dir: &Path,
    title: &str,
    timeline: &[TimelineRow],
    hist: &Hist,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    if !timeline.is_empty() {
        let pick = |f: fn(&TimelineRow) -> f64| {
            timeline
                .iter()
                .filter(|r| r.count > 0)
                .map(|r| (r.second as f64, f(r)))
                .collect::<Vec<_>>()
        };
        let svg = chart(
            &format!("{title}: latency over time"),
            "seconds since start (by intended send time)",
            "latency (ms)",
            &[
                Series {
                    name: "p50",
                    color: "#2b8a3e",
                    points: pick(|r| r.p50_ms),
                },
                Series {
                    name: "p99",
                    color: "#e67700",
                    points: pick(|r| r.p99_ms),
                },
                Series {
                    name: "max",
                    color: "#c92a2a",
                    points: pick(|r| r.max_ms),
                },
            ],
            None,
        );
        let path = dir.join("latency-over-time.svg");
        std::fs::write(&path, svg)?;
        written.push(path.display().to_string());
    }
    let cdf = hist.cdf();
    if !cdf.is_empty() {
        // x = number of nines: 0.9 → 1, 0.99 → 2 …, capped at 4 (99.99 %).
        let points = cdf
            .iter()
            .map(|&(ms, q)| ((-(1.0 - q).max(1e-4).log10()).min(4.0), ms))
            .collect();
        let svg = chart(
            &format!("{title}: latency distribution"),
            "percentile",
            "latency (ms)",
            &[Series {
                name: "latency",
                color: "#1c7ed6",
                points,
            }],
            Some(&[
                (0.0, "0%"),
                (1.0, "90%"),
                (2.0, "99%"),
                (3.0, "99.9%"),
                (4.0, "99.99%"),
            ]),
        );
        let path = dir.join("latency-distribution.svg");
        std::fs::write(&path, svg)?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    x_ticks: Option<&[(f64, &str)]>,
) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (1e-9_f64, 1e-9_f64);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    if let Some(t) = x_ticks {
        x_max = t.iter().map(|t| t.0).fold(x_max, f64::max);
    }
    let y_max = nice(y_max);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / x_max * pw;
    let sy = |y: f64| TOP + ph - y / y_max * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"##,
        W / 2.0,
        esc(title)
    );
    // Grid and y ticks.
    for i in 0..=5 {
        let v = y_max * i as f64 / 5.0;
        let y = sy(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e9ecef"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt_num(v)
        );
    }
    // X ticks.
    let ticks: Vec<(f64, String)> = match x_ticks {
        Some(t) => t.iter().map(|(x, l)| (*x, l.to_string())).collect(),
        None => {
            // Whole seconds: a step of at least one, at most six ticks.
            let step = (x_max / 5.0).ceil().max(1.0);
            (0..=5)
                .map(|i| i as f64 * step)
                .filter(|&x| x <= x_max + 1e-9)
                .map(|x| (x, format!("{x:.0}")))
                .collect()
        }
    };
    for (x, label) in ticks {
        let px = sx(x);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#f1f3f5"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            esc(&label)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#868e96"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"##,
        LEFT + pw / 2.0,
        H - 12.0,
        esc(x_label),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let pts: Vec<String> = ser
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                r##"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"##,
                ser.color,
                pts.join(" ")
            );
        }
        let ly = TOP + 14.0 + i as f64 * 16.0;
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            LEFT + 10.0,
            LEFT + 30.0,
            ser.color,
            LEFT + 36.0,
            ly + 4.0,
            esc(ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A round upper bound for an axis.
fn nice(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_both_plots() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Hist::default();
        for us in [100, 200, 5000] {
            h.record_us(us);
        }
        let rows = vec![TimelineRow {
            second: 0,
            count: 3,
            p50_ms: 0.2,
            p99_ms: 5.0,
            max_ms: 5.0,
        }];
        let files = write(dir.path(), "dm", &rows, &h).unwrap();
        assert_eq!(files.len(), 2);
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
        assert_eq!(nice(7.3), 10.0);
        assert_eq!(nice(0.12), 0.2);
    }
}
