//! ProFS (Uppaal et al., ICLR 2025, "Model Editing as a Robust and Denoised Variant of
//! DPO"): project a low-rank toxic subspace out of the MLP's output weights.
//!
//! For each edited block ℓ (the upper half by default), with `X₁`, `X₀` the mean-pooled
//! residual-stream states after the block ([`crate::runtime::Point::Residual`]) of toxic and
//! non-toxic texts, paired in dataset order:
//!
//! 1. differences `T = X₁ − X₀` (one row per pair);
//! 2. centring: the direction μ̂ of the non-toxic mean (what every sentence shares — the
//!    paper's "stop-word" component) is projected out, `T ← T·(I − μ̂μ̂ᵀ)`;
//! 3. the top-k right singular vectors of T span the toxic subspace, `P = UUᵀ`;
//! 4. `W_down ← (I − s·P)·W_down` (s = 1 is the published edit; each row of `ffn_down` is
//!    one hidden dimension, so this is a change of every row of that matrix).
//!
//! The singular vectors are the top eigenvectors of `TᵀT` (d × d, f64), found by orthogonal
//! iteration from a fixed start, so the result is deterministic.

use std::sync::Arc;

use anyhow::{bail, ensure, Result};

use crate::surgery::edit::{random_direction, EditPlan, RowEdit};
use crate::surgery::model::{Matrix, MatrixTensor, ModelFile};

/// Iterations of the orthogonal iteration (the projector converges geometrically in the
/// eigenvalue gap; this many leave it converged to f32 precision for gaps above ~5 %).
const ITERATIONS: usize = 500;

/// The toxic subspace of one block: `k` orthonormal vectors of length `d` (row-major
/// `k × d`), from `x1` (toxic) and `x0` (non-toxic) pooled states (`n₁ × d`, `n₀ × d`).
pub fn subspace(x1: &[f32], x0: &[f32], d: usize, k: usize) -> Result<Vec<Vec<f64>>> {
    ensure!(
        d > 0 && x1.len().is_multiple_of(d) && x0.len().is_multiple_of(d),
        "states are not rows of {d}"
    );
    let (n1, n0) = (x1.len() / d, x0.len() / d);
    let pairs = n1.min(n0);
    ensure!(pairs >= 2, "ProFS needs at least two texts of each class");
    ensure!(k >= 1 && k < d, "rank {k} must be in 1..{d}");
    // μ̂: unit mean of the non-toxic states.
    let mut mu = vec![0f64; d];
    for r in x0.chunks_exact(d) {
        mu.iter_mut().zip(r).for_each(|(m, &x)| *m += x as f64);
    }
    normalise(&mut mu)?;
    let mut gram = vec![0f64; d * d];
    let mut t = vec![0f64; d];
    for (r1, r0) in x1.chunks_exact(d).zip(x0.chunks_exact(d)).take(pairs) {
        for ((tj, &a), &b) in t.iter_mut().zip(r1).zip(r0) {
            *tj = a as f64 - b as f64;
        }
        let c: f64 = t.iter().zip(&mu).map(|(a, b)| a * b).sum();
        t.iter_mut().zip(&mu).for_each(|(a, m)| *a -= c * m);
        for (g_row, &ti) in gram.chunks_exact_mut(d).zip(&t) {
            if ti != 0.0 {
                for (g, &tj) in g_row.iter_mut().zip(&t) {
                    *g += ti * tj;
                }
            }
        }
    }
    top_eigenvectors(&gram, d, k)
}

/// The `k` leading eigenvectors of the symmetric `d × d` matrix `a` (orthogonal iteration
/// from a fixed pseudo-random start; each vector's sign fixed by its largest entry).
pub fn top_eigenvectors(a: &[f64], d: usize, k: usize) -> Result<Vec<Vec<f64>>> {
    let mut q: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            random_direction(d, 1.0, 0x5eed + i as u64)
                .iter()
                .map(|&x| x as f64)
                .collect()
        })
        .collect();
    orthonormalise(&mut q)?;
    for _ in 0..ITERATIONS {
        let mut z: Vec<Vec<f64>> = q
            .iter()
            .map(|v| {
                (0..d)
                    .map(|i| {
                        a[i * d..(i + 1) * d]
                            .iter()
                            .zip(v)
                            .map(|(x, y)| x * y)
                            .sum()
                    })
                    .collect()
            })
            .collect();
        orthonormalise(&mut z)?;
        q = z;
    }
    for v in &mut q {
        let big = v
            .iter()
            .copied()
            .fold(0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
    }
    Ok(q)
}

/// A random orthonormal rank-k subspace of R^d (the random-direction control), seeded.
pub fn random_subspace(d: usize, k: usize, seed: u64) -> Result<Vec<Vec<f64>>> {
    let mut q: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            random_direction(d, 1.0, seed.wrapping_mul(1000).wrapping_add(i as u64))
                .iter()
                .map(|&x| x as f64)
                .collect()
        })
        .collect();
    orthonormalise(&mut q)?;
    Ok(q)
}

/// `ffn_down ← (I − s·UUᵀ)·ffn_down` for every block with a subspace (`subspaces[b]`; U
/// orthonormal for the recipe, scaled for its control, [`matched_random_subspace`]).
pub fn projection_plan(
    model: &ModelFile,
    subspaces: &[(usize, Vec<Vec<f64>>)],
    strength: f32,
    info: serde_json::Value,
) -> Result<EditPlan> {
    let tensors = model.matrix_tensors(Matrix::Down)?;
    let mut rows = Vec::new();
    for (b, u) in subspaces {
        let Some(t) = tensors.get(*b) else {
            bail!(
                "block {b} does not exist (the model has {} blocks)",
                tensors.len()
            );
        };
        if u.iter().any(|v| v.len() != t.n_rows) {
            bail!(
                "{}: subspace vectors must have the hidden size {}",
                t.name,
                t.n_rows
            );
        }
        let c = coefficients(model, t, u)?;
        for r in 0..t.n_rows {
            let mut delta = vec![0f64; t.row_len];
            for (ck, uk) in c.iter().zip(u) {
                let w = uk[r];
                delta.iter_mut().zip(ck).for_each(|(a, &x)| *a -= w * x);
            }
            let delta: Arc<[f32]> = delta
                .iter()
                .map(|&x| (strength as f64 * x) as f32)
                .collect();
            rows.push(RowEdit {
                tensor: t.name.clone(),
                row: r,
                delta,
            });
        }
    }
    Ok(EditPlan { rows, info })
}

/// C = UᵀW (k × n_ff) for block `t`'s `ffn_down` W, streaming W's rows.
fn coefficients(model: &ModelFile, t: &MatrixTensor, u: &[Vec<f64>]) -> Result<Vec<Vec<f64>>> {
    let mut c = vec![vec![0f64; t.row_len]; u.len()];
    let mut row = vec![0f32; t.row_len];
    for r in 0..t.n_rows {
        model.read_row(t, r, &mut row)?;
        for (ck, uk) in c.iter_mut().zip(u) {
            let w = uk[r];
            ck.iter_mut()
                .zip(&row)
                .for_each(|(a, &x)| *a += w * x as f64);
        }
    }
    model.release(&t.name);
    Ok(c)
}

/// The random-direction control of ProFS in block `block`: a random orthonormal rank-k
/// subspace ([`random_subspace`]) whose basis is scaled by √g, so that the control's change
/// `−s·g·U_rU_rᵀ·W` has the Frobenius norm of the recipe's `−s·U_tU_tᵀ·W` (`toxic` = U_t):
/// g = ‖U_tᵀW‖ / ‖U_rᵀW‖. The same size of change, in directions the probe data did not
/// pick. Unscaled, the random subspace barely touches W (the toxic one aligns with W's large
/// output directions) and reached a tenth of the recipe's KL on the default model, so it
/// could not be compared at matched damage.
pub fn matched_random_subspace(
    model: &ModelFile,
    block: usize,
    toxic: &[Vec<f64>],
    seed: u64,
) -> Result<Vec<Vec<f64>>> {
    let tensors = model.matrix_tensors(Matrix::Down)?;
    let Some(t) = tensors.get(block) else {
        bail!(
            "block {block} does not exist (the model has {} blocks)",
            tensors.len()
        );
    };
    ensure!(
        toxic.iter().all(|v| v.len() == t.n_rows),
        "{}: subspace vectors must have the hidden size {}",
        t.name,
        t.n_rows
    );
    let frob = |c: Vec<Vec<f64>>| c.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
    let mut u = random_subspace(t.n_rows, toxic.len(), seed)?;
    let (want, got) = (
        frob(coefficients(model, t, toxic)?),
        frob(coefficients(model, t, &u)?),
    );
    ensure!(
        got > 0.0 && want.is_finite(),
        "{}: the random subspace does not touch the weights; cannot match the change's size",
        t.name
    );
    let c = (want / got).sqrt();
    u.iter_mut().flatten().for_each(|x| *x *= c);
    Ok(u)
}

fn normalise(v: &mut [f64]) -> Result<()> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if !(n > 1e-300 && n.is_finite()) {
        bail!("cannot normalise a zero or non-finite vector");
    }
    v.iter_mut().for_each(|x| *x /= n);
    Ok(())
}

/// Modified Gram–Schmidt, twice for stability.
fn orthonormalise(q: &mut [Vec<f64>]) -> Result<()> {
    for _ in 0..2 {
        for i in 0..q.len() {
            for j in 0..i {
                let (a, b) = q.split_at_mut(i);
                let c: f64 = b[0].iter().zip(&a[j]).map(|(x, y)| x * y).sum();
                b[0].iter_mut().zip(&a[j]).for_each(|(x, y)| *x -= c * y);
            }
            normalise(&mut q[i])?;
        }
    }
    Ok(())
}
