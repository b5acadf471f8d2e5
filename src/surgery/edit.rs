//! Step 3 of the method: the per-row changes, `row += α · w`, as data.
//!
//! The edit is an [`EditPlan`] — a list of (tensor, row, delta) — built here and applied by
//! the writers in [`super::write`]. Keeping the plan separate from the file formats lets
//! later variants (one probe per block, α relative to each row's norm, other selections)
//! build their own plans and reuse the writers, the patch and the checks unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

use super::select::{check_direction, Selection};
use crate::probe::Probe;

/// The paper's α for detoxification.
pub const PAPER_ALPHA: f32 = 1.08;

/// Whether the scaled direction is added or subtracted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// `row += α · w` (the paper).
    #[default]
    Add,
    /// `row -= α · w` (the paper's "aligned rows, subtracted" ablation).
    Subtract,
}

/// What α is measured in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    /// `Δ = α·v` with v the probe direction as trained (the paper): the size of the change
    /// depends on how the probe happened to be scaled.
    #[default]
    Absolute,
    /// `Δ = α·v/‖v‖`: α is the Euclidean size of every row's change, whatever the probe's
    /// scale (how variants with differently scaled directions are compared at equal size).
    Unit,
    /// `Δ = α·‖r‖·v/‖v‖`: each row moves by α times its own norm, so a setting carries over
    /// between probes and between models of different widths.
    RowNorm,
    /// `Δ = α·m·v/‖v‖` with m the median row norm of the row's matrix: one step size per
    /// block, relative to the block's typical row.
    MedianRowNorm,
}

/// Options of [`plan_edit`]: the flags of `scalpel edit` and the `[edit]` table of a run
/// config (recorded in the plan and the patch as they are).
#[derive(Debug, Clone, Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct EditOptions {
    /// α: each selected row gets α · w (negative: the opposite behaviour).
    #[arg(long, default_value_t = PAPER_ALPHA, allow_negative_numbers = true)]
    pub alpha: f32,
    /// Add or subtract α · w.
    #[arg(long, value_enum, default_value_t)]
    pub operation: Operation,
    /// Control: edit with a random Gaussian direction of the probe's norm drawn with this
    /// seed (rows are still selected with the real probe; the paper's "random probe in the
    /// same rows").
    #[arg(long, value_name = "SEED")]
    pub random_direction: Option<u64>,
    /// What α is measured in: absolute (α·w, the paper), unit (α is each row's change
    /// norm), row-norm (α × the row's norm), median-row-norm (α × the block's median row norm).
    #[arg(long, value_enum, default_value_t)]
    pub scale: Scale,
}

impl Default for EditOptions {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

/// One row's change.
#[derive(Debug, Clone, PartialEq)]
pub struct RowEdit {
    /// Tensor name in the model file's naming.
    pub tensor: String,
    /// Row index in that tensor.
    pub row: usize,
    /// Value added to the row (row length). Shared between rows that get the same change,
    /// so a 7B plan with 16 k identical deltas holds one vector, not 16 k.
    pub delta: Arc<[f32]>,
}

/// Edited rows per tensor name: (row, delta), ascending rows.
pub type RowsByTensor<'a> = BTreeMap<&'a str, Vec<(usize, &'a [f32])>>;

/// Everything an edit changes, plus a description for the patch file.
#[derive(Debug, Clone, Default)]
pub struct EditPlan {
    /// Row changes; at most one per (tensor, row).
    pub rows: Vec<RowEdit>,
    /// What produced the plan (probe hash, options, K …), stored in the patch.
    pub info: serde_json::Value,
}

impl EditPlan {
    /// Rows grouped by tensor, sorted by row; errors on a row edited twice.
    pub fn by_tensor(&self) -> Result<RowsByTensor<'_>> {
        let mut m: RowsByTensor<'_> = BTreeMap::new();
        for r in &self.rows {
            m.entry(&r.tensor).or_default().push((r.row, &r.delta));
        }
        for (name, rows) in m.iter_mut() {
            rows.sort_by_key(|r| r.0);
            if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
                bail!("edit plan changes row {} of {name} twice", w[0].0);
            }
        }
        Ok(m)
    }

    /// Frobenius norm of all deltas together (the intended change).
    pub fn delta_norm(&self) -> f64 {
        self.rows
            .iter()
            .flat_map(|r| r.delta.iter())
            .map(|&x| x as f64 * x as f64)
            .sum::<f64>()
            .sqrt()
    }
}

/// A Gaussian vector of `d` values with Euclidean norm `norm`, from `seed` (Box–Muller on
/// the seeded generator, so the same seed gives the same bytes).
pub fn random_direction(d: usize, norm: f64, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v: Vec<f64> = Vec::with_capacity(d);
    while v.len() < d {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        v.push(r * (std::f64::consts::TAU * u2).cos());
        v.push(r * (std::f64::consts::TAU * u2).sin());
    }
    v.truncate(d);
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (x / n * norm) as f32).collect()
}

/// The paper's edit of the selected rows: `row += s · α · v`, s = +1 for add, −1 for
/// subtract, v the block's edit direction from the selection (the probe direction the rows
/// were ranked against, or its norm-aware or per-block form; or a random vector of its norm,
/// see [`EditOptions::random_direction`]), α measured as [`EditOptions::scale`] says.
pub fn plan_edit(selection: &Selection, probe: &Probe, opts: &EditOptions) -> Result<EditPlan> {
    if !opts.alpha.is_finite() {
        bail!("alpha {} is not finite", opts.alpha);
    }
    check_direction(&probe.direction(selection.options.direction))?;
    let s = match opts.operation {
        Operation::Add => opts.alpha,
        Operation::Subtract => -opts.alpha,
    };
    // One vector per block: the direction, replaced by a random one of its norm for the
    // control (the same random unit vector in every block, as one random probe would give).
    let mut unit: BTreeMap<usize, (Arc<[f32]>, f64)> = BTreeMap::new();
    for (&b, v) in &selection.vectors {
        let norm = check_direction(v)?;
        let v: Arc<[f32]> = match opts.random_direction {
            Some(seed) => random_direction(v.len(), norm, seed).into(),
            None => v.clone(),
        };
        unit.insert(b, (v, norm));
    }
    let mut shared: BTreeMap<usize, Arc<[f32]>> = BTreeMap::new();
    let mut rows = Vec::with_capacity(selection.rows.len());
    for r in &selection.rows {
        let Some((v, norm)) = unit.get(&r.block) else {
            bail!("the selection has no edit direction for block {}", r.block);
        };
        // Δ = s·k·v/‖v‖ with k the scale's unit; the paper's absolute α is s·v itself.
        let k = match opts.scale {
            Scale::Absolute => None,
            Scale::Unit => Some(1.0),
            Scale::MedianRowNorm => Some(selection.per_block[r.block].median_norm as f64),
            Scale::RowNorm => Some(r.norm as f64),
        };
        let build = || -> Arc<[f32]> {
            match k {
                None => v.iter().map(|&x| s * x).collect(),
                Some(k) => v
                    .iter()
                    .map(|&x| (s as f64 * k * x as f64 / norm) as f32)
                    .collect(),
            }
        };
        // Every scale but the row's own norm gives one delta per block: share it.
        let delta = match opts.scale {
            Scale::RowNorm => build(),
            _ => shared.entry(r.block).or_insert_with(build).clone(),
        };
        // α·v can overflow f32 (α = 1e30, or a probe near f32's range): refuse here, before
        // any writer sees an infinite change.
        if let Some(i) = delta.iter().position(|x| !x.is_finite()) {
            bail!(
                "alpha {} makes the change of block {} row {} non-finite at {i} ({}); lower alpha",
                opts.alpha,
                r.block,
                r.row,
                delta[i]
            );
        }
        rows.push(RowEdit {
            tensor: selection.tensor(r.block).to_string(),
            row: r.row,
            delta,
        });
    }
    let info = serde_json::json!({
        "method": "model-surgery",
        "probe_hash": selection.probe_hash,
        "selection": selection.options,
        "k": selection.k,
        "total_rows": selection.total_rows,
        "edit": opts,
    });
    Ok(EditPlan { rows, info })
}
