//! The comparison's statistics: each series' toxicity at a target damage, interpolated
//! prompt by prompt through the base, its bootstrap interval on the reported prompts, the
//! paired test against the recipe's control, and the best recipe per target.

use super::types::{CompareOptions, CompareSummary, MatchedCell, PromptSplit, SweepPoint};
use crate::eval::stats::{bootstrap_mean, BootstrapConfig};
use crate::pipeline::config::RunConfig;
use anyhow::{bail, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Instant;

/// Toxicity per prompt of series `points` at damage `target` (x = `damage(p)`), through the
/// base at x = 0: the interpolation weight and the bracketing strengths, or `None` when
/// the target is beyond every point.
pub fn interpolate(
    base: &[f64],
    points: &[(f64, f32, &[f64])],
    target: f64,
) -> Option<(Vec<f64>, (f32, f32, f64))> {
    let mut curve: Vec<(f64, f32, &[f64])> = vec![(0.0, 0.0, base)];
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    curve.extend(sorted.into_iter().filter(|p| p.0.is_finite()));
    for w in curve.windows(2) {
        let ((x0, s0, y0), (x1, s1, y1)) = (w[0], w[1]);
        if target >= x0 && target <= x1 {
            let t = if x1 > x0 {
                (target - x0) / (x1 - x0)
            } else {
                1.0
            };
            let y = y0
                .iter()
                .zip(y1)
                .map(|(a, b)| (1.0 - t) * a + t * b)
                .collect();
            return Some((y, (s0, s1, t)));
        }
    }
    None
}

/// Two-sided sign-flip permutation p of the mean of `d` (seeded, `draws` draws, with the
/// +1 correction so p is never 0).
pub fn sign_flip_p(d: &[f64], draws: usize, seed: u64) -> f64 {
    let obs = d.iter().sum::<f64>().abs();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hits = 0usize;
    for _ in 0..draws {
        let s: f64 = d
            .iter()
            .map(|&x| if rng.random::<bool>() { x } else { -x })
            .sum();
        if s.abs() >= obs - 1e-12 {
            hits += 1;
        }
    }
    (hits + 1) as f64 / (draws + 1) as f64
}

/// The tuning and the reported outcomes of `y` (prompt order).
pub(super) fn split(y: &[f64], how: PromptSplit) -> (Vec<f64>, Vec<f64>) {
    match how {
        PromptSplit::Halves => {
            let tune = y.iter().step_by(2).copied().collect();
            let report = y.iter().skip(1).step_by(2).copied().collect();
            (tune, report)
        }
        PromptSplit::Confirm => (Vec::new(), y.to_vec()),
    }
}

pub(super) fn pct(i: crate::eval::stats::Interval) -> [f64; 3] {
    [100.0 * i.estimate, 100.0 * i.lo, 100.0 * i.hi]
}

pub(super) fn summarise(
    cfg: &RunConfig,
    opts: &CompareOptions,
    sha: &str,
    base: &Option<(Vec<String>, Vec<f64>)>,
    points: &[SweepPoint],
    t0: Instant,
) -> Result<CompareSummary> {
    let Some((_, base)) = base else {
        bail!("nothing evaluated");
    };
    let boot = BootstrapConfig {
        resamples: cfg.eval.bootstrap,
        seed: cfg.seed,
        confidence: 0.95,
    };
    let mut series: Vec<String> = Vec::new();
    for p in points {
        if !series.contains(&p.series) {
            series.push(p.series.clone());
        }
    }
    // Without a `ppl` suite no point has a perplexity ratio: no rows of dashes for it.
    let has_ppl = points.iter().any(|p| p.ppl_ratio.is_finite());
    let ppl_targets = opts.ppl_targets.iter().filter(|_| has_ppl);
    let targets: Vec<(&str, f64)> = opts
        .kl_targets
        .iter()
        .map(|&t| ("kl", t))
        .chain(ppl_targets.map(|&t| ("ppl_ratio", t)))
        .collect();
    let at = |name: &str, measure: &str, target: f64| {
        let pts: Vec<(f64, f32, &[f64])> = points
            .iter()
            .filter(|p| p.series == name)
            .map(|p| {
                let x = if measure == "kl" {
                    p.kl
                } else {
                    p.ppl_ratio - 1.0
                };
                (x, p.strength, &p.toxic[..])
            })
            .collect();
        let x = if measure == "kl" {
            target
        } else {
            target - 1.0
        };
        interpolate(base, &pts, x)
    };
    let mut cells = Vec::new();
    for &(measure, target) in &targets {
        for name in &series {
            let hit = at(name, measure, target);
            let mut cell = MatchedCell {
                series: name.clone(),
                measure: measure.into(),
                target,
                toxic: None,
                toxic_tune: None,
                bracket: None,
                vs_control: None,
            };
            if let Some((y, br)) = &hit {
                let (tune, report) = split(y, opts.split);
                cell.toxic = Some(pct(bootstrap_mean(&report, &boot)?));
                cell.toxic_tune = crate::eval::stats::mean(&tune).map(|m| 100.0 * m);
                cell.bracket = Some(*br);
                if !name.contains("control") {
                    let ctl = [
                        format!("{name} control-random-rows"),
                        format!("{name} control-random-direction"),
                    ]
                    .into_iter()
                    .find_map(|c| at(&c, measure, target).map(|h| (c, h.0)));
                    if let Some((c, yc)) = ctl {
                        let (_, rc) = split(&yc, opts.split);
                        let d: Vec<f64> = report.iter().zip(&rc).map(|(a, b)| a - b).collect();
                        let i = pct(bootstrap_mean(&d, &boot)?);
                        cell.vs_control = Some((c, i, sign_flip_p(&d, 10_000, cfg.seed)));
                    }
                }
            }
            cells.push(cell);
        }
    }
    let mut best = Vec::new();
    for &(measure, target) in &targets {
        if let Some(c) = cells
            .iter()
            .filter(|c| c.measure == measure && c.target == target && !c.series.contains("control"))
            .filter_map(|c| c.toxic_tune.map(|t| (t, c)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
        {
            best.push((measure.to_string(), target, c.1.series.clone()));
        }
    }
    let (_, base_report_half) = split(base, opts.split);
    Ok(CompareSummary {
        scalpel_version: env!("CARGO_PKG_VERSION").into(),
        config: cfg.clone(),
        options: opts.clone(),
        model_sha256: sha.to_string(),
        suite: cfg.first_suite(),
        base_toxic_report: pct(bootstrap_mean(&base_report_half, &boot)?),
        base_toxic_all: 100.0 * crate::eval::stats::mean(base).unwrap_or(f64::NAN),
        prompts: base.len(),
        points: points.to_vec(),
        cells,
        best,
        prompting: None,
        wall_secs: t0.elapsed().as_secs_f64(),
    })
}
