//! `scalpel sweep`: the edit over a grid of α and K, each point with the random-direction
//! and random-rows controls at the same settings, on a quick subset; a table and a plot of
//! the behaviour measure against the perplexity increase with the Pareto front marked.

use super::config::RunConfig;
use super::plots::{pareto_front, tradeoff_svg};
use super::rows::{row_from_report, table, ProbeInfo, Row};
use super::run::{base_report, points, variants};
use super::session::{Inputs, Session};
use crate::eval::{Suite, SuiteList};
use crate::formats::io::write_atomic;
use crate::surgery::Count;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::Instant;

/// The grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepOptions {
    pub alphas: Vec<f32>,
    /// Fractions of all gate rows.
    pub fractions: Vec<f64>,
    /// Evaluate the two controls at every grid point.
    pub controls: bool,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            alphas: vec![1.08, 4.0, 8.0],
            // Half, once and twice the paper's 4.65 %.
            fractions: vec![0.02325, 0.0465, 0.093],
            controls: true,
        }
    }
}

impl SweepOptions {
    /// Every α finite, every fraction in (0, 1], none of either given twice (a grid
    /// point evaluated twice is a typo that costs a whole evaluation).
    pub fn validate(&self) -> Result<()> {
        if let Some(a) = self.alphas.iter().find(|a| !a.is_finite()) {
            bail!("--alphas: {a} is not a finite number");
        }
        if let Some(f) = self.fractions.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            bail!("--fractions: {f} is not in (0, 1]");
        }
        if let Some(a) = first_repeat(&self.alphas) {
            bail!("--alphas: {a} is given twice");
        }
        if let Some(f) = first_repeat(&self.fractions) {
            bail!("--fractions: {f} is given twice");
        }
        Ok(())
    }
}

/// The first value of `list` that an earlier one equals.
pub(crate) fn first_repeat<T: PartialEq + Copy>(list: &[T]) -> Option<T> {
    (0..list.len())
        .find(|&i| list[..i].contains(&list[i]))
        .map(|i| list[i])
}

/// What `sweep.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepSummary {
    pub scalpel_version: String,
    pub config: RunConfig,
    pub grid: SweepOptions,
    pub model_sha256: String,
    pub probe: ProbeInfo,
    pub suite: String,
    pub rows: Vec<Row>,
    /// Labels of the rows on the Pareto front (measure vs perplexity increase).
    pub front: Vec<String>,
    pub wall_secs: f64,
}

/// Parses `1.08,4,8`.
pub fn parse_list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>> {
    let v: Result<Vec<T>> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<T>()
                .map_err(|_| anyhow::anyhow!("{what}: {x:?} is not a number"))
        })
        .collect();
    let v = v?;
    if v.is_empty() {
        bail!("{what}: empty list");
    }
    Ok(v)
}

/// The behaviour's first suite plus `ppl` and `kl`, unless the config names suites.
pub fn quick_suites(cfg: &mut RunConfig) {
    if cfg.eval.suites.is_none() {
        let first = cfg.behaviour.spec().suites[0];
        cfg.eval.suites = Some(SuiteList(vec![first, Suite::Ppl, Suite::Kl]));
    }
}

/// Runs the grid and writes `sweep.md`, `sweep.json` and `sweep.svg` into `cfg.out`.
pub fn sweep(mut cfg: RunConfig, grid: &SweepOptions, inputs: Inputs) -> Result<SweepSummary> {
    let t0 = Instant::now();
    grid.validate()?;
    quick_suites(&mut cfg);
    let out = cfg.out.clone();
    let mut s = Session::start(cfg.clone(), inputs)?;
    let (_, probe) = s.probe(&out.join("probes"))?;
    let mut rows: Vec<Row> = Vec::new();
    for &f in &grid.fractions {
        for &a in &grid.alphas {
            let mut c = cfg.clone();
            c.edit.alpha = a;
            c.select.count = Count::Fraction(f);
            let tag = format!("a{a}-k{:.2}%", 100.0 * f);
            let vs = variants(&c);
            let n = if grid.controls { 3 } else { 1 };
            for v in vs.iter().take(n) {
                let mut v = v.clone();
                v.label = match v.label.as_str() {
                    super::run::EDITED => tag.clone(),
                    other => format!("{tag} {}", other.trim_start_matches("control-")),
                };
                eprintln!("== {}", v.label);
                let dir = out.join(v.label.replace([' ', '%'], "_"));
                let (row, report) = s.variant(&v, &dir, false)?;
                if rows.is_empty() {
                    if let Some(b) = base_report(&report) {
                        rows.push(row_from_report("base", &b, false, None));
                    }
                }
                rows.push(row);
            }
        }
    }
    let suite = cfg.first_suite();
    let pts = points(cfg.behaviour, &rows, &suite);
    let lower = cfg.behaviour.spec().lower_is_better;
    let front: Vec<String> = pareto_front(&pts, lower)
        .into_iter()
        .map(|i| pts[i].label.clone())
        .collect();
    write_atomic(
        &out.join("sweep.svg"),
        tradeoff_svg(
            &format!("sweep: {suite} vs perplexity increase"),
            &format!("{suite} {}", cfg.behaviour.spec().measure.name()),
            &pts,
            lower,
        )
        .as_bytes(),
    )?;
    let summary = SweepSummary {
        scalpel_version: env!("CARGO_PKG_VERSION").into(),
        config: cfg,
        grid: grid.clone(),
        model_sha256: s.model_sha256.clone(),
        probe,
        suite,
        rows,
        front,
        wall_secs: t0.elapsed().as_secs_f64(),
    };
    write_atomic(
        &out.join("sweep.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    let mut md = format!(
        "# scalpel sweep\n\nModel sha256 `{}`; probe at `{}` (held-out accuracy {:.2} %); wall {:.0} s. Edited models are deleted after evaluation; each folder keeps its plan, patch and report.\n\n",
        summary.model_sha256,
        summary.probe.point,
        100.0 * summary.probe.test_accuracy,
        summary.wall_secs
    );
    md.push_str(&table(&summary.rows));
    let _ = writeln!(
        md,
        "\nPareto front ({} vs WikiText perplexity increase): {}.\n\nPlot: `sweep.svg`.",
        summary.suite,
        summary.front.join(", ")
    );
    write_atomic(&out.join("sweep.md"), md.as_bytes())?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_with_bad_or_repeated_points_are_refused() {
        assert!(SweepOptions::default().validate().is_ok());
        let with = |alphas: Vec<f32>, fractions: Vec<f64>| SweepOptions {
            alphas,
            fractions,
            controls: true,
        };
        for bad in [
            with(vec![f32::NAN], vec![0.1]),
            with(vec![1.0, 4.0, 1.0], vec![0.1]),
            with(vec![1.0], vec![0.0]),
            with(vec![1.0], vec![0.1, 0.1]),
        ] {
            assert!(bad.validate().is_err(), "{:?}", bad.alphas);
        }
    }
}
