//! What `scalpel compare` writes: `compare.md` (the matched-damage table), `compare.json`
//! and `compare.svg` (every series' toxicity against KL through the base).

use super::types::{CompareSummary, PromptSplit, SweepPoint};
use crate::formats::io::write_atomic;
use crate::pipeline::rows::opt;
use anyhow::Result;
use std::fmt::Write;

pub(super) fn write_outputs(s: &CompareSummary, out: &std::path::Path) -> Result<()> {
    write_atomic(&out.join("compare.json"), &serde_json::to_vec_pretty(s)?)?;
    write_atomic(&out.join("compare.md"), render(s).as_bytes())?;
    write_atomic(&out.join("compare.svg"), fronts_svg(s).as_bytes())
}

/// The markdown report.
pub fn render(s: &CompareSummary) -> String {
    let confirm = s.options.split == PromptSplit::Confirm;
    let split = if confirm {
        "all reported: a confirmation, the recipes and strengths were chosen on other prompts"
            .to_string()
    } else {
        format!(
            "{} tuning / {} report, by position",
            s.prompts.div_ceil(2),
            s.prompts / 2
        )
    };
    let on = if confirm {
        "all prompts"
    } else {
        "the report half"
    };
    let mut md = format!(
        "# scalpel compare\n\nModel sha256 `{}`; {} {} prompts ({split}); wall {:.0} s. Base on {on}: {:.1} % toxic [{:.1}, {:.1}]. Toxicity is interpolated per prompt between the two sweep points that bracket each damage target (the base is strength 0); \"–\" = the series never reaches that damage. Δ vs control: paired difference on {on} (points of % toxic, 95 % bootstrap) and sign-flip permutation p against the recipe's random-neuron control (random-direction control where it has none).\n\n",
        s.model_sha256,
        s.prompts,
        suite_name(&s.suite),
        s.wall_secs,
        s.base_toxic_report[0],
        s.base_toxic_report[1],
        s.base_toxic_report[2]
    );
    md.push_str("| series | damage target | % toxic (report) [95 % CI] | relative drop | strengths (t) | Δ vs control [95 % CI] | p |\n|---|---|---|---|---|---|---|\n");
    for c in &s.cells {
        let target = match c.measure.as_str() {
            "kl" => format!("KL {}", c.target),
            _ => format!("ppl ×{}", c.target),
        };
        let (tox, rel) = match c.toxic {
            Some([e, lo, hi]) => (
                format!("{e:.1} [{lo:.1}, {hi:.1}]"),
                relative_change(e, s.base_toxic_report[0]),
            ),
            None => ("–".into(), "–".into()),
        };
        let br = c
            .bracket
            .map_or("–".into(), |(a, b, t)| format!("{a}→{b} ({t:.2})"));
        let (vs, p) = match &c.vs_control {
            Some((_, [e, lo, hi], p)) => {
                (format!("{e:+.1} [{lo:+.1}, {hi:+.1}]"), format!("{p:.3}"))
            }
            None => ("–".into(), "–".into()),
        };
        let _ = writeln!(
            md,
            "| {} | {target} | {tox} | {rel} | {br} | {vs} | {p} |",
            c.series
        );
    }
    if confirm {
        md.push_str("\nNo best recipe is chosen: a confirmation reports every prompt.");
    } else {
        md.push_str("\nBest recipe per target (chosen on the tuning half): ");
    }
    let best: Vec<String> = s
        .best
        .iter()
        .map(|(m, t, r)| format!("{m} {t}: **{r}**"))
        .collect();
    md.push_str(&best.join("; "));
    if let Some((instr, [e, lo, hi])) = &s.prompting {
        let _ = write!(
            md,
            "\n\nPrompting baseline (no edit, KL 0; each prompt preceded by \"{instr}\"): {e:.1} % toxic [{lo:.1}, {hi:.1}] on {on}."
        );
    }
    md.push_str("\n\n## Sweep points (all prompts)\n\n");
    md.push_str(&wikitext_line(&s.points));
    md.push_str("| series | strength | KL | WikiText ppl | ppl ratio [95 % CI] | fluency | % toxic |\n|---|---|---|---|---|---|---|\n");
    for p in &s.points {
        let rate = 100.0 * p.toxic.iter().sum::<f64>() / p.toxic.len().max(1) as f64;
        let r = &p.row;
        let ppl = opt(r.wikitext_ppl.map(|c| c.estimate), 3);
        let ratio = match (r.ppl_ratio, r.ppl_nll_diff) {
            (Some(x), Some(d)) => format!("{x:.4} [{:.4}, {:.4}]", d.lo.exp(), d.hi.exp()),
            (Some(x), None) => format!("{x:.4}"),
            (None, _) => "–".into(),
        };
        let fluency = opt(r.suite(&s.suite).and_then(|q| q.fluency.perplexity), 2);
        let _ = writeln!(
            md,
            "| {} | {} | {:.4} | {ppl} | {ratio} | {fluency} | {rate:.1} |",
            p.series, p.strength, p.kl
        );
    }
    md.push_str(
        "\nPlot: `compare.svg` (toxicity against KL, one line per series through the base).\n",
    );
    md
}

/// What the sweep table's perplexity columns were measured on, and the base's perplexity
/// (a point's perplexity over its ratio: every point is scored on the same windows).
fn wikitext_line(points: &[SweepPoint]) -> String {
    let measured = points.iter().find_map(|p| {
        let r = &p.row;
        Some((r.wikitext_size?, r.wikitext_ppl?.estimate / r.ppl_ratio?))
    });
    let fluency = "fluency: perplexity of the continuations under the base model.";
    match measured {
        Some(((windows, tokens), base)) => format!(
            "WikiText-2: {windows} windows, {tokens} tokens; base perplexity {base:.3}. The ratio's interval is the exponent of the 95 % bootstrap interval of the paired per-window NLL difference; {fluency}\n\n"
        ),
        None => format!("WikiText perplexity not measured; {fluency}\n\n"),
    }
}

/// The change from the base in percent of the base; "–" when the base has no toxic
/// continuation, where a relative change has no meaning (dividing by ~0 printed
/// "+1606816178116 %" on a 16-prompt pilot).
fn relative_change(e: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:+.0} %", 100.0 * (e - base) / base)
    } else {
        "–".into()
    }
}

/// How a suite is named in the report's prose.
fn suite_name(suite: &str) -> &str {
    match suite {
        "rtp" => "RTP",
        "toxigen" => "ToxiGen",
        "file" => "prompt-file",
        other => other,
    }
}

/// Every series' front: % toxic (all prompts) against KL, through the base at 0.
pub fn fronts_svg(s: &CompareSummary) -> String {
    const W: f64 = 720.0;
    const H: f64 = 440.0;
    const L: f64 = 60.0;
    const R: f64 = 200.0;
    const T: f64 = 36.0;
    const B: f64 = 50.0;
    let base_rate = s.base_toxic_all;
    let rate = |p: &SweepPoint| 100.0 * p.toxic.iter().sum::<f64>() / p.toxic.len().max(1) as f64;
    let x_max = s
        .points
        .iter()
        .map(|p| p.kl)
        .filter(|x| x.is_finite())
        .fold(0.1f64, f64::max)
        * 1.05;
    let y_max = s.points.iter().map(rate).fold(base_rate, f64::max).max(1.0) * 1.1;
    let sx = |x: f64| L + (W - L - R) * x / x_max;
    let sy = |y: f64| H - B - (H - T - B) * y / y_max;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{} % toxic against KL(base ‖ edited), every recipe and control</text>
<text x="{}" y="{}" text-anchor="middle">KL on WikiText-2 (nats/token)</text>
<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">% toxic (all prompts)</text>
"#,
        (W - R) / 2.0,
        suite_name(&s.suite),
        L + (W - L - R) / 2.0,
        H - 10.0,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    for k in 0..=4 {
        let (x, y) = (x_max * f64::from(k) / 4.0, y_max * f64::from(k) / 4.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{L}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{y:.1}</text><text x="{:.1}" y="{}" text-anchor="middle">{x:.3}</text>"##,
            sy(y),
            W - R,
            sy(y),
            L - 4.0,
            sy(y) + 4.0,
            sx(x),
            H - B + 14.0
        );
    }
    for &kl in &s.options.kl_targets {
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{T}" x2="{:.1}" y2="{}" stroke="#bbb" stroke-dasharray="2 3"/>"##,
            sx(kl),
            sx(kl),
            H - B
        );
    }
    const COLOURS: [&str; 6] = [
        "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860",
    ];
    let mut series: Vec<&str> = Vec::new();
    for p in &s.points {
        if !series.contains(&p.series.as_str()) {
            series.push(&p.series);
        }
    }
    let recipes: Vec<&str> = series
        .iter()
        .map(|n| n.split(' ').next().unwrap_or(n))
        .fold(Vec::new(), |mut v, r| {
            if !v.contains(&r) {
                v.push(r);
            }
            v
        });
    for (i, name) in series.iter().enumerate() {
        let recipe = name.split(' ').next().unwrap_or(name);
        let colour =
            COLOURS[recipes.iter().position(|r| *r == recipe).unwrap_or(0) % COLOURS.len()];
        let dash = if name.contains("random-rows") {
            r#" stroke-dasharray="6 3""#
        } else if name.contains("random-direction") {
            r#" stroke-dasharray="2 2""#
        } else {
            ""
        };
        let mut pts: Vec<(f64, f64)> = vec![(0.0, base_rate)];
        let mut mine: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.series == *name && p.kl.is_finite())
            .map(|p| (p.kl, rate(p)))
            .collect();
        mine.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts.extend(mine);
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(x.min(x_max)), sy(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.8"{dash}/>"#,
            path.join(" ")
        );
        for (x, y) in pts.iter().skip(1) {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                sx(x.min(x_max)),
                sy(*y)
            );
        }
        let ly = T + 14.0 * i as f64 + 6.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly:.1}" x2="{}" y2="{ly:.1}" stroke="{colour}" stroke-width="1.8"{dash}/><text x="{}" y="{:.1}">{}</text>"#,
            W - R + 10.0,
            W - R + 34.0,
            W - R + 38.0,
            ly + 4.0,
            name.replace('&', "&amp;").replace('<', "&lt;")
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::relative_change;

    #[test]
    fn relative_change_is_undefined_on_a_zero_base() {
        assert_eq!(relative_change(12.0, 16.0), "-25 %");
        assert_eq!(relative_change(16.1, 0.0), "–");
    }
}
