//! `scalpel ablate`: the paper's ablation rows on the same prompts and scorers — random
//! probe, random rows, most-aligned rows with subtraction, up instead of gate, leaving out
//! each quarter of the blocks, and the probe read at an early block, a middle block and the
//! final norm — as one table; then the variants that try to make the edit
//! behaviour-specific (a joint probe with one slice per block, norm-aware ranking,
//! activation-ranked rows, other probe directions, α relative to row norms), each editing
//! every selected row by the same Euclidean amount as the paper's row, so that differences
//! come from *which* rows and *which* direction, not from the edit's size.

use super::config::RunConfig;
use super::rows::{row_from_report, table, Row};
use super::run::{base_report, paper_total_change, recipe_variants, variants};
use super::session::{Inputs, Session, Variant};
use super::sweep::quick_suites;
use crate::formats::io::write_atomic;
use crate::probe::layer::LayerPart;
use crate::probe::{Direction, FitOptions, Layer, Method};
use crate::surgery::recipes::Recipe;
use crate::surgery::{Count, Matrix, Operation, Ranking, Scale};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

/// What `ablate.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AblateSummary {
    pub scalpel_version: String,
    pub config: RunConfig,
    pub model_sha256: String,
    pub rows: Vec<Row>,
    pub wall_secs: f64,
    /// Euclidean norm of every edited row's change in the variant rows (the paper row's).
    pub change_norm: f32,
    /// Median gate row norm over the model's blocks.
    pub median_row_norm: f32,
}

/// The ablation variants for a model of `blocks` blocks. The early and middle probes read
/// the MLP input of blocks L/4 and L/2: what the gate rows read, and (unlike the raw
/// residual) normalised like the paper's final-norm probe.
pub fn ablations(cfg: &RunConfig, blocks: usize) -> Vec<Variant> {
    let [surgery, random_dir, random_rows] = variants(cfg);
    let with = |label: &str, f: &dyn Fn(&mut Variant)| {
        let mut v = surgery.clone();
        v.label = label.to_string();
        f(&mut v);
        v
    };
    let mut out = vec![
        with("surgery", &|_| {}),
        Variant {
            label: "random probe, same rows".into(),
            ..random_dir
        },
        Variant {
            label: "real probe, random rows".into(),
            ..random_rows
        },
        with("most aligned rows, subtracted", &|v| {
            v.select.ranking = Ranking::Aligned;
            v.edit.operation = Operation::Subtract;
        }),
        with("up instead of gate", &|v| v.select.matrix = Matrix::Up),
    ];
    for q in 0..4 {
        let (lo, hi) = (q * blocks / 4, (q + 1) * blocks / 4);
        let keep: BTreeSet<usize> = (0..blocks).filter(|b| *b < lo || *b >= hi).collect();
        out.push(with(
            &format!(
                "without quarter {} (blocks {lo}-{})",
                q + 1,
                hi.saturating_sub(1)
            ),
            &|v| v.select.blocks = Some(keep.clone()),
        ));
    }
    for (name, b) in [("early", blocks / 4), ("middle", blocks / 2)] {
        out.push(with(&format!("probe at {name} block (mlp:{b})"), &|v| {
            v.fit.layer = Layer::of(LayerPart::Mlp(b))
        }));
    }
    out
}

/// L2 penalty of the standardised logistic probes in the variant rows (chosen on the
/// default model: held-out accuracy 88.9–89.5 % at blocks 3, 7, 24 for 100–300).
pub const VARIANT_L2: f64 = 100.0;

/// The behaviour-specific variants (issue #8). `size` is the per-row change norm of the
/// paper's row (α·‖w‖), `median` the median gate row norm over the model.
pub fn variant_rows(cfg: &RunConfig, size: f32, median: f32) -> Vec<Variant> {
    let [surgery, _, _] = variants(cfg);
    let logistic = FitOptions {
        method: Method::Logistic,
        standardize: true,
        l2: VARIANT_L2,
        ensemble: 1,
        ..cfg.probe.clone()
    };
    let joint = FitOptions {
        layer: Layer::of(LayerPart::MlpAll),
        ..logistic.clone()
    };
    let with = |label: &str, f: &dyn Fn(&mut Variant)| {
        let mut v = surgery.clone();
        v.label = label.to_string();
        v.edit.scale = Scale::Unit;
        v.edit.alpha = size;
        f(&mut v);
        v
    };
    vec![
        with("joint probe: block i edited with its own slice", &|v| {
            v.fit = joint.clone();
        }),
        with("norm-aware ranking and edit (final probe)", &|v| {
            v.select.norm_aware = true
        }),
        with("activation-ranked rows (final probe direction)", &|v| {
            v.select.ranking = Ranking::Activation
        }),
        with("activation-ranked rows, joint probe slices", &|v| {
            v.select.ranking = Ranking::Activation;
            v.fit = joint.clone();
        }),
        with("direction W[1] − W[0]", &|v| {
            v.select.direction = Direction::Diff
        }),
        with("direction: class-mean difference", &|v| {
            v.fit = FitOptions {
                method: Method::MeanDiff,
                standardize: false,
                l2: 1.0,
                ensemble: 1,
                ..cfg.probe.clone()
            }
        }),
        with("direction: average of 8 paper probes (seeds)", &|v| {
            v.fit.ensemble = 8
        }),
        with("direction: standardised logistic probe", &|v| {
            v.fit = logistic.clone()
        }),
        with("α relative to each row's norm", &|v| {
            v.edit.scale = Scale::RowNorm;
            v.edit.alpha = size / median;
        }),
    ]
}

/// One row per output-side recipe (issue #13) at its default strength; `distributed`
/// spreads the paper edit's total change (`paper_total`) over every gate row.
pub fn recipe_rows(cfg: &RunConfig, paper_total: f64) -> Vec<Variant> {
    [
        Recipe::ValueDamp,
        Recipe::ValueGate,
        Recipe::Aura,
        Recipe::Profs,
        Recipe::Distributed,
    ]
    .into_iter()
    .filter_map(|r| {
        let mut c = cfg.clone();
        c.recipe.recipe = r;
        let mut v = recipe_variants(&c, paper_total).into_iter().next()?;
        v.label = format!("recipe: {}", r.name());
        Some(v)
    })
    .collect()
}

/// Runs every ablation and writes `ablate.md` and `ablate.json` into `cfg.out`.
pub fn ablate(mut cfg: RunConfig, inputs: Inputs) -> Result<AblateSummary> {
    let t0 = Instant::now();
    quick_suites(&mut cfg);
    let out = cfg.out.clone();
    let mut s = Session::start(cfg.clone(), inputs)?;
    let blocks = s.base.config().num_layers;
    let (probe, _) = s.probe(&out.join("probes"))?;
    let [paper, _, _] = variants(&cfg);
    let sel = s.select(&probe, &paper)?;
    let w_norm = probe
        .direction(paper.select.direction)
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    let size = match cfg.edit.scale {
        Scale::Absolute => cfg.edit.alpha * w_norm,
        _ => bail!("ablate compares variants at the paper row's change size: use scale = absolute"),
    };
    let mut medians: Vec<f32> = sel.per_block.iter().map(|b| b.median_norm).collect();
    medians.sort_by(f32::total_cmp);
    let median = medians[medians.len() / 2];
    eprintln!(
        "per-row change norm {size:.4} (α {} × ‖w‖ {w_norm:.4}); median gate row norm {median:.4}",
        cfg.edit.alpha
    );
    // The paper's recipe and its two controls first, then the variants, then the rest of
    // the paper's ablations: the table is rewritten after every row, so a run cut short
    // still holds the comparisons that matter most.
    let mut all = ablations(&cfg, blocks);
    let rest = all.split_off(3);
    all.extend(recipe_rows(&cfg, paper_total_change(&s, &probe, &cfg)?));
    all.extend(variant_rows(&cfg, size, median));
    all.extend(rest);
    let mut summary = AblateSummary {
        scalpel_version: env!("CARGO_PKG_VERSION").into(),
        config: cfg,
        model_sha256: s.model_sha256.clone(),
        rows: Vec::new(),
        wall_secs: 0.0,
        change_norm: size,
        median_row_norm: median,
    };
    for (i, v) in all.iter().enumerate() {
        eprintln!("== {}", v.label);
        let (row, report) = s.variant(v, &out.join(format!("ablation-{i:02}")), false)?;
        if summary.rows.is_empty() {
            if let Some(b) = base_report(&report) {
                summary.rows.push(row_from_report("base", &b, false, None));
            }
        }
        summary.rows.push(row);
        summary.wall_secs = t0.elapsed().as_secs_f64();
        write_summary(&summary, &out, all.len())?;
    }
    Ok(summary)
}

/// Writes `ablate.json` and `ablate.md` (the rows so far of `total`).
fn write_summary(summary: &AblateSummary, out: &Path, total: usize) -> Result<()> {
    write_atomic(
        &out.join("ablate.json"),
        &serde_json::to_vec_pretty(summary)?,
    )?;
    let done = summary.rows.len().saturating_sub(1);
    let progress = if done < total {
        format!(" **{done} of {total} rows so far.**")
    } else {
        String::new()
    };
    let md = format!(
        "# scalpel ablate\n\nModel sha256 `{}`; α = {}, K {}; wall {:.0} s.{progress} Every variant row changes each selected row by the paper row's amount (Euclidean norm {:.4}; median gate row norm {:.4}). Folder `ablation-NN` holds row NN's plan, patch and report (edited models are deleted after evaluation); probes are under `probes/`.\n\n{}",
        summary.model_sha256,
        summary.config.edit.alpha,
        match summary.config.select.count {
            Count::Fraction(f) => format!("fraction {f:.4}"),
            Count::Rows(k) => format!("= {k} rows"),
        },
        summary.wall_secs,
        summary.change_norm,
        summary.median_row_norm,
        table(&summary.rows)
    );
    write_atomic(&out.join("ablate.md"), md.as_bytes())
}
