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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// `row += α · w` (the paper).
    #[default]
    Add,
    /// `row -= α · w` (the paper's "aligned rows, subtracted" ablation).
    Subtract,
}

/// Options of [`plan_edit`].
#[derive(Debug, Clone, Serialize)]
pub struct EditOptions {
    /// α (negative allowed: the "surrender" direction).
    pub alpha: f32,
    /// Add or subtract.
    pub operation: Operation,
    /// Replace the probe direction, in the edit only, by a random Gaussian vector of the same
    /// norm drawn with this seed (the paper's "random probe in the same rows" control).
    pub random_direction: Option<u64>,
}

impl Default for EditOptions {
    fn default() -> Self {
        EditOptions {
            alpha: PAPER_ALPHA,
            operation: Operation::Add,
            random_direction: None,
        }
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

/// The paper's edit of the selected rows: `row += s · α · w`, s = +1 for add, −1 for
/// subtract, w the probe direction the selection ranked against (or a random vector of its
/// norm, see [`EditOptions::random_direction`]).
pub fn plan_edit(selection: &Selection, probe: &Probe, opts: &EditOptions) -> Result<EditPlan> {
    if !opts.alpha.is_finite() {
        bail!("alpha {} is not finite", opts.alpha);
    }
    let w = probe.direction(selection.options.direction);
    let norm = check_direction(&w)?;
    let w = match opts.random_direction {
        Some(seed) => random_direction(w.len(), norm, seed),
        None => w,
    };
    let s = match opts.operation {
        Operation::Add => opts.alpha,
        Operation::Subtract => -opts.alpha,
    };
    let delta: Arc<[f32]> = w.iter().map(|&x| s * x).collect();
    let rows = selection
        .rows
        .iter()
        .map(|r| RowEdit {
            tensor: selection.tensor(r.block).to_string(),
            row: r.row,
            delta: delta.clone(),
        })
        .collect();
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
