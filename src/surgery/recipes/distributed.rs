//! A deliberately distributed edit (after Yang et al., EMNLP 2025, who find that a few
//! "toxic neurons" explain little of what DPO changes, and scalpel's own ablation, where
//! random rows did as well as the paper's selection).
//!
//! Every gate row of every block gets the same change `c·ŵ_b` (ŵ_b the unit probe
//! direction for block b), with `c = total / √N` over the N rows, so that the Frobenius
//! norm of the whole change equals `total` — for a comparison at equal size, the paper
//! edit's total `α·‖w‖·√K`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::unit;
use crate::surgery::edit::{EditPlan, RowEdit};
use crate::surgery::model::{Matrix, ModelFile};

/// `row += (total/√N)·ê_b` for every row of every block's gate with a direction in `dirs`.
pub fn spread_plan(
    model: &ModelFile,
    dirs: &BTreeMap<usize, Vec<f32>>,
    total: f64,
    info: serde_json::Value,
) -> Result<EditPlan> {
    if !total.is_finite() {
        bail!("total change {total} is not finite");
    }
    let tensors = model.matrix_tensors(Matrix::Gate)?;
    let n: usize = tensors
        .iter()
        .filter(|t| dirs.contains_key(&t.block))
        .map(|t| t.n_rows)
        .sum();
    if n == 0 {
        bail!("no block has an edit direction");
    }
    let c = total / (n as f64).sqrt();
    let mut rows = Vec::with_capacity(n);
    for t in &tensors {
        let Some(v) = dirs.get(&t.block) else {
            continue;
        };
        if v.len() != t.row_len {
            bail!(
                "{}: rows have {} values, the direction {}",
                t.name,
                t.row_len,
                v.len()
            );
        }
        let delta: Arc<[f32]> = unit(v)?.iter().map(|&x| (c * x) as f32).collect();
        for row in 0..t.n_rows {
            rows.push(RowEdit {
                tensor: t.name.clone(),
                row,
                delta: delta.clone(),
            });
        }
    }
    Ok(EditPlan { rows, info })
}
