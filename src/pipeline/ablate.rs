//! `scalpel ablate`: the paper's ablation rows on the same prompts and scorers — random
//! probe, random rows, most-aligned rows with subtraction, up instead of gate, leaving out
//! each quarter of the blocks, and the probe read at an early block, a middle block and the
//! final norm — as one table.

use super::config::RunConfig;
use super::rows::{row_from_report, table, Row};
use super::run::{base_report, variants};
use super::session::{Inputs, Session, Variant};
use super::sweep::quick_suites;
use crate::formats::io::write_atomic;
use crate::surgery::{Matrix, Operation, Ranking};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Instant;

/// What `ablate.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AblateSummary {
    pub scalpel_version: String,
    pub config: RunConfig,
    pub model_sha256: String,
    pub rows: Vec<Row>,
    pub wall_secs: f64,
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
            v.point = format!("mlp:{b}")
        }));
    }
    out
}

/// Runs every ablation and writes `ablate.md` and `ablate.json` into `cfg.out`.
pub fn ablate(mut cfg: RunConfig, inputs: Inputs) -> Result<AblateSummary> {
    let t0 = Instant::now();
    quick_suites(&mut cfg);
    let out = cfg.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let eval = cfg.eval_config(Some(inputs.fetch.cache_dir.join("eval")))?;
    let mut s = Session::open(cfg.clone(), inputs, eval)?;
    let blocks = s.base.config().num_layers;
    let mut rows: Vec<Row> = Vec::new();
    for (i, v) in ablations(&cfg, blocks).iter().enumerate() {
        eprintln!("== {}", v.label);
        let (row, report) = s.variant(v, &out.join(format!("ablation-{i:02}")), false)?;
        if rows.is_empty() {
            if let Some(b) = base_report(&report) {
                rows.push(row_from_report("base", &b, false, None));
            }
        }
        rows.push(row);
    }
    let summary = AblateSummary {
        scalpel_version: env!("CARGO_PKG_VERSION").into(),
        config: cfg,
        model_sha256: s.model_sha256.clone(),
        rows,
        wall_secs: t0.elapsed().as_secs_f64(),
    };
    write_atomic(
        &out.join("ablate.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    let md = format!(
        "# scalpel ablate\n\nModel sha256 `{}`; α = {}, K fraction {:.4}; wall {:.0} s. Folder `ablation-NN` holds row NN's plan, patch and report (edited models are deleted after evaluation); probes are under `probes/`.\n\n{}",
        summary.model_sha256,
        summary.config.alpha,
        summary.config.fraction,
        summary.wall_secs,
        table(&summary.rows)
    );
    write_atomic(&out.join("ablate.md"), md.as_bytes())?;
    Ok(summary)
}
