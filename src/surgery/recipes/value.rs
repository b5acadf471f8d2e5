//! Toxic value vectors (Lee et al., ICML 2024, "A Mechanistic Understanding of Alignment
//! Algorithms: A Case Study on DPO and Toxicity"), as a localisation + edit.
//!
//! Neuron i of block b writes `a_i · down[:, i]` into the residual stream; its *value
//! vector* is column i of `ffn_down`. The neurons whose value vector has the largest cosine
//! with the probe direction *in the residual stream* are the ones that write the behaviour.
//! A final-norm probe reads `w · (g_f ⊙ x/rms(x))`, so its residual-space direction is
//! `u = g_f ⊙ w` ([`super::super::directions::block_vectors`] with norm-aware vectors gives
//! exactly this as `rank`).
//!
//! Two edits of the chosen neurons: damp them (the up row scaled by `1 − s`, which scales
//! the neuron's output by the same factor), or push their gate row away from the direction
//! the gate reads (`gate_i −= s·‖gate_i‖·ê`, ê the unit norm-aware edit vector of the block),
//! so the neuron fires less where the direction is present.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::{unit, Neuron};
use crate::surgery::edit::{EditPlan, RowEdit};
use crate::surgery::model::{Matrix, ModelFile};

/// `cos[b][i]`: cosine of column i of block b's `ffn_down` with `dirs[b]` (hidden size),
/// accumulated in f64 while streaming the rows (each row of `ffn_down` is one hidden
/// dimension). Blocks without a direction get an empty vector.
pub fn value_cosines(model: &ModelFile, dirs: &BTreeMap<usize, Vec<f32>>) -> Result<Vec<Vec<f32>>> {
    let tensors = model.matrix_tensors(Matrix::Down)?;
    let mut out = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let Some(u) = dirs.get(&t.block) else {
            out.push(Vec::new());
            continue;
        };
        if u.len() != t.n_rows {
            bail!(
                "{}: {} has {} rows (hidden size), the direction {} values",
                model.path().display(),
                t.name,
                t.n_rows,
                u.len()
            );
        }
        let u = unit(u)?;
        let (mut dot, mut sq) = (vec![0f64; t.row_len], vec![0f64; t.row_len]);
        let mut row = vec![0f32; t.row_len];
        for (r, &ur) in u.iter().enumerate() {
            model.read_row(t, r, &mut row)?;
            for ((d, s), &x) in dot.iter_mut().zip(&mut sq).zip(&row) {
                *d += ur * x as f64;
                *s += x as f64 * x as f64;
            }
        }
        model.release(&t.name);
        out.push(
            dot.iter()
                .zip(&sq)
                .map(|(&d, &s)| if s > 0.0 { (d / s.sqrt()) as f32 } else { 0.0 })
                .collect(),
        );
    }
    Ok(out)
}

/// The `k` neurons with the largest cosine over all blocks (ties by block, row), sorted by
/// (block, row).
pub fn top_aligned(cos: &[Vec<f32>], k: usize) -> Result<Vec<Neuron>> {
    let mut all: Vec<(f32, Neuron)> = cos
        .iter()
        .enumerate()
        .flat_map(|(block, c)| {
            c.iter()
                .enumerate()
                .map(move |(row, &x)| (x, Neuron { block, row }))
        })
        .collect();
    if k == 0 || k > all.len() {
        bail!(
            "K = {k}: choose between 1 and the {} neurons ranked",
            all.len()
        );
    }
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut top: Vec<Neuron> = all[..k].iter().map(|x| x.1).collect();
    top.sort();
    Ok(top)
}

/// Per block, `(row, 1 − strength)` for the chosen neurons: the damping as row factors of
/// the up projection (see [`super::scale_rows_plan`]).
pub fn damp_factors(neurons: &[Neuron], blocks: usize, strength: f32) -> Vec<Vec<(usize, f32)>> {
    let mut f = vec![Vec::new(); blocks];
    for n in neurons {
        f[n.block].push((n.row, 1.0 - strength));
    }
    f
}

/// `gate_i −= strength·‖gate_i‖·ê_b` for every chosen neuron, ê_b the unit vector of
/// `edit[b]` (the direction in the gate row's stored space).
pub fn gate_plan(
    model: &ModelFile,
    neurons: &[Neuron],
    edit: &BTreeMap<usize, Vec<f32>>,
    strength: f32,
    info: serde_json::Value,
) -> Result<EditPlan> {
    let tensors = model.matrix_tensors(Matrix::Gate)?;
    let mut rows = Vec::with_capacity(neurons.len());
    let units: BTreeMap<usize, Vec<f64>> = edit
        .iter()
        .map(|(&b, v)| Ok((b, unit(v)?)))
        .collect::<Result<_>>()?;
    for n in neurons {
        let Some(t) = tensors.get(n.block) else {
            bail!(
                "neuron in block {} of a {}-block model",
                n.block,
                tensors.len()
            );
        };
        let Some(e) = units.get(&n.block) else {
            bail!("no edit direction for block {}", n.block);
        };
        let mut r = vec![0f32; t.row_len];
        model.read_row(t, n.row, &mut r)?;
        let norm = r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let delta: Arc<[f32]> = e
            .iter()
            .map(|&x| (-(strength as f64) * norm * x) as f32)
            .collect();
        rows.push(RowEdit {
            tensor: t.name.clone(),
            row: n.row,
            delta,
        });
    }
    Ok(EditPlan { rows, info })
}
