//! Hand-written SVG (no dependency, byte-identical for identical results, like
//! [`crate::eval::plots`]): the behaviour measure against the perplexity increase, one point
//! per model, with the Pareto front (no other point is both better-behaved and less damaged)
//! joined by a line.

use std::fmt::Write;

const W: f64 = 680.0;
const H: f64 = 420.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 56.0;

/// A point: label, x = perplexity increase in %, y = behaviour measure in %, control or not.
#[derive(Debug, Clone)]
pub struct PlotPoint {
    pub label: String,
    pub x: f64,
    pub y: f64,
    pub control: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Indices of the Pareto-optimal points (minimise x and minimise y when `lower_is_better`,
/// otherwise maximise y), sorted by x. Controls take part: a control on the front is news.
pub fn pareto_front(points: &[PlotPoint], lower_is_better: bool) -> Vec<usize> {
    let better = |a: &PlotPoint, b: &PlotPoint| {
        let y_ok = if lower_is_better {
            a.y <= b.y
        } else {
            a.y >= b.y
        };
        let y_strict = if lower_is_better {
            a.y < b.y
        } else {
            a.y > b.y
        };
        a.x <= b.x && y_ok && (a.x < b.x || y_strict)
    };
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            points[i].x.is_finite()
                && points[i].y.is_finite()
                && !points
                    .iter()
                    .enumerate()
                    .any(|(j, q)| j != i && q.x.is_finite() && better(q, &points[i]))
        })
        .collect();
    front.sort_by(|&a, &b| points[a].x.total_cmp(&points[b].x));
    front
}

/// The scatter plot with the front marked.
pub fn tradeoff_svg(
    title: &str,
    y_label: &str,
    points: &[PlotPoint],
    lower_is_better: bool,
) -> String {
    let finite: Vec<&PlotPoint> = points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    let x_min = finite.iter().map(|p| p.x).fold(0.0, f64::min);
    let x_max = finite.iter().map(|p| p.x).fold(1.0, f64::max) * 1.1;
    let y_max = finite.iter().map(|p| p.y).fold(1.0, f64::max) * 1.1;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + pw * (x - x_min) / (x_max - x_min).max(1e-9);
    let sy = |y: f64| H - BOTTOM - ph * y / y_max;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>
<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>
<text x="{}" y="{}" text-anchor="middle">WikiText-2 perplexity increase over the base (%)</text>
"#,
        W / 2.0,
        esc(title),
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        esc(y_label),
        LEFT + pw / 2.0,
        H - 12.0
    );
    for k in 0..=4 {
        let y = y_max * f64::from(k) / 4.0;
        let x = x_min + (x_max - x_min) * f64::from(k) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{y:.1}</text><text x="{:.1}" y="{}" text-anchor="middle">{x:.1}</text>"##,
            sy(y),
            W - RIGHT,
            sy(y),
            LEFT - 4.0,
            sy(y) + 4.0,
            sx(x),
            H - BOTTOM + 14.0
        );
    }
    let front = pareto_front(points, lower_is_better);
    if front.len() > 1 {
        let path: Vec<String> = front
            .iter()
            .map(|&i| format!("{:.1},{:.1}", sx(points[i].x), sy(points[i].y)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#c44e52" stroke-width="1.5" stroke-dasharray="4 3"/>"##,
            path.join(" ")
        );
    }
    for (i, p) in points.iter().enumerate() {
        if !(p.x.is_finite() && p.y.is_finite()) {
            continue;
        }
        let on_front = front.contains(&i);
        let (fill, shape) = if p.control {
            ("#999999", "rect")
        } else {
            ("#4c72b0", "circle")
        };
        let stroke = if on_front { "#c44e52" } else { "none" };
        if shape == "rect" {
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="{fill}" stroke="{stroke}" stroke-width="2"/>"#,
                sx(p.x) - 4.0,
                sy(p.y) - 4.0
            );
        } else {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="{fill}" stroke="{stroke}" stroke-width="2"/>"#,
                sx(p.x),
                sy(p.y)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
            sx(p.x) + 6.0,
            sy(p.y) - 5.0,
            esc(&p.label)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" font-size="10" text-anchor="end">circles: edits, squares: controls, red outline and dashed line: Pareto front</text>"##,
        W - RIGHT,
        TOP - 6.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: f64, y: f64) -> PlotPoint {
        PlotPoint {
            label: format!("{x},{y}"),
            x,
            y,
            control: false,
        }
    }

    #[test]
    fn front_keeps_only_undominated_points() {
        let pts = [p(0.0, 20.0), p(5.0, 10.0), p(6.0, 12.0), p(30.0, 2.0)];
        assert_eq!(pareto_front(&pts, true), vec![0, 1, 3]);
        assert_eq!(pareto_front(&pts, false), vec![0]);
        let svg = tradeoff_svg("t", "% toxic", &pts, true);
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    }
}
