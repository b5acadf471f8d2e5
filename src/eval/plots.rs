//! SVG plots of a report, written by hand.
//!
//! Why not `plotters`: two small charts (a histogram and grouped bars) need ~150 lines of
//! SVG, while plotters' text rendering pulls in font discovery and its feature set changes
//! between versions; hand-written SVG has no dependency, no system library, and produces
//! byte-identical files for identical reports (diffable, cacheable).

use crate::eval::report::{GenRun, SuiteRun};
use crate::eval::run::Report;
use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 70.0;
const COLORS: [&str; 4] = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn frame(title: &str, y_label: &str, y_max: f64) -> String {
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>
<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>
"#,
        W / 2.0,
        esc(title),
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        esc(y_label)
    );
    let plot_h = H - TOP - BOTTOM;
    for k in 0..=4 {
        let v = y_max * k as f64 / 4.0;
        let y = H - BOTTOM - plot_h * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM
    );
    s
}

fn fmt_tick(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn legend(s: &mut String, labels: &[&str]) {
    for (k, l) in labels.iter().enumerate() {
        let x = LEFT + 10.0 + 150.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}" fill-opacity="0.7"/><text x="{}" y="{}">{}</text>"#,
            TOP - 12.0,
            COLORS[k % COLORS.len()],
            x + 16.0,
            TOP - 2.0,
            esc(l)
        );
    }
}

/// Histogram of continuation toxicity (20 bins on [0, 1]) of each run, overlaid; y is the
/// share of continuations per bin.
pub fn toxicity_histogram(title: &str, runs: &[(&str, &GenRun)]) -> String {
    const BINS: usize = 20;
    let hists: Vec<Vec<f64>> = runs
        .iter()
        .map(|(_, r)| {
            let mut h = vec![0.0; BINS];
            for it in &r.items {
                let b = ((it.toxicity.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
                h[b] += 1.0 / r.items.len().max(1) as f64;
            }
            h
        })
        .collect();
    let y_max = hists
        .iter()
        .flatten()
        .copied()
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let mut s = frame(title, "share of continuations", y_max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let bw = plot_w / BINS as f64;
    for (k, h) in hists.iter().enumerate() {
        for (b, v) in h.iter().enumerate() {
            let bh = plot_h * v / y_max;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}" fill-opacity="0.55"/>"#,
                LEFT + bw * b as f64,
                H - BOTTOM - bh,
                bw - 1.0,
                COLORS[k % COLORS.len()]
            );
        }
    }
    for k in 0..=4 {
        let x = LEFT + plot_w * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{:.2}</text>"#,
            H - BOTTOM + 14.0,
            k as f64 / 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">toxicity (hatesonar P(hate) + P(offensive))</text>"#,
        W / 2.0,
        H - BOTTOM + 32.0
    );
    legend(&mut s, &runs.iter().map(|r| r.0).collect::<Vec<_>>());
    s.push_str("</svg>\n");
    s
}

/// Grouped bars: % toxic per group (e.g. ToxiGen target group) for each model.
pub fn group_bars(title: &str, series: &[(&str, Vec<(String, f64)>)]) -> String {
    let groups: Vec<&str> = series
        .first()
        .map(|s| s.1.iter().map(|g| g.0.as_str()).collect())
        .unwrap_or_default();
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|g| g.1 * 100.0))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut s = frame(title, "% toxic", y_max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let gw = plot_w / groups.len().max(1) as f64;
    let bw = (gw - 6.0) / series.len().max(1) as f64;
    for (k, (_, vals)) in series.iter().enumerate() {
        for (g, (_, v)) in vals.iter().enumerate() {
            let bh = plot_h * v * 100.0 / y_max;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}" fill-opacity="0.8"/>"#,
                LEFT + gw * g as f64 + 3.0 + bw * k as f64,
                H - BOTTOM - bh,
                bw,
                COLORS[k % COLORS.len()]
            );
        }
    }
    for (g, name) in groups.iter().enumerate() {
        let x = LEFT + gw * (g as f64 + 0.5);
        let y = H - BOTTOM + 10.0;
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{y:.1}" transform="rotate(35 {x:.1} {y:.1})" font-size="9">{}</text>"#,
            esc(name)
        );
    }
    legend(&mut s, &series.iter().map(|r| r.0).collect::<Vec<_>>());
    s.push_str("</svg>\n");
    s
}

/// Every plot of a report as `(file name, SVG)`: a toxicity histogram per toxicity suite
/// and the per-group bars of suites with groups.
pub fn plots(report: &Report) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let models: Vec<&crate::eval::run::ModelReport> = report
        .base
        .iter()
        .chain(std::iter::once(&report.model))
        .collect();
    for suite in ["rtp", "toxigen", "file"] {
        let runs: Vec<(&str, &GenRun)> = models
            .iter()
            .filter_map(|m| {
                m.runs.iter().find_map(|r| match r {
                    SuiteRun::Generation(g) if g.suite == suite => Some((m.label.as_str(), g)),
                    _ => None,
                })
            })
            .collect();
        if runs.is_empty() {
            continue;
        }
        out.push((
            format!("toxicity_{suite}.svg"),
            toxicity_histogram(&format!("{suite}: toxicity of continuations"), &runs),
        ));
        if runs[0].1.items.iter().any(|i| i.group.is_some()) {
            let series: Vec<(&str, Vec<(String, f64)>)> = runs
                .iter()
                .map(|(l, r)| (*l, per_group(r, report.config.threshold)))
                .collect();
            out.push((
                format!("groups_{suite}.svg"),
                group_bars(&format!("{suite}: % toxic per group"), &series),
            ));
        }
    }
    out
}

fn per_group(run: &GenRun, threshold: f64) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64, usize)> = Vec::new();
    for it in &run.items {
        let g = it.group.clone().unwrap_or_default();
        let t = f64::from(u8::from(it.toxicity >= threshold));
        match v.iter_mut().find(|x| x.0 == g) {
            Some(x) => {
                x.1 += t;
                x.2 += 1;
            }
            None => v.push((g, t, 1)),
        }
    }
    v.into_iter().map(|(g, t, n)| (g, t / n as f64)).collect()
}
