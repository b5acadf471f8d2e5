//! Where each block's ranking vector and edit vector come from.
//!
//! The paper ranks every gate row against one vector, the final-norm probe's `W[1]`, and adds
//! that same vector to the chosen rows. Two things make that questionable on a small model:
//! the gate of block i does not read the final-norm state but its own post-attention RMSNorm
//! output `h_i = g_i ⊙ x̂_i` (x̂ the normalised residual), and the gains `g_i` differ from the
//! final norm's gain `g_f` dimension by dimension.
//!
//! - A joint probe ([`crate::probe::joint`]) has one slice per block, fitted on `h_i`
//!   itself: block i is ranked against and edited with its own slice.
//! - *Norm-aware* ranking compares in the shared space of x̂: a gate row `r` reads
//!   `r·h_i = (g_i ⊙ r)·x̂_i` and the probe reads `w·(g_p ⊙ x̂)`, so the ranking compares
//!   `g_i ⊙ r` with `u = g_p ⊙ w` (g_p the gain of the norm the probe read), and the edit that
//!   moves the effective row by `α·u` is `Δr = α·(u ⊘ g_i)`. For a probe read at block i's
//!   own MLP input both gains are `g_i` and this is the paper's edit again.

use super::model::{Matrix, ModelFile};
use crate::probe::{Direction, Probe};
use anyhow::{bail, Context, Result};

/// Gains smaller than this fraction of the gain vector's RMS are raised to it before
/// dividing: a near-zero gain dimension is one the gate barely reads, and dividing by it
/// would put most of the edit where it has no effect.
const GAIN_FLOOR: f32 = 0.05;

/// One block's vectors: `rank` is compared with (transformed) rows, `edit` is what α scales.
#[derive(Debug, Clone)]
pub struct BlockVectors {
    /// Vector the rows are ranked against, in the comparison space.
    pub rank: Vec<f32>,
    /// `g_i` when rows are compared as `g_i ⊙ r` (norm-aware), else `None`.
    pub row_gain: Option<Vec<f32>>,
    /// The edit direction in the stored row's space (α not applied).
    pub edit: Vec<f32>,
}

/// The vectors for `block`, or `None` when the probe does not read that block (a joint
/// probe over other blocks).
pub fn block_vectors(
    model: &ModelFile,
    probe: &Probe,
    which: Direction,
    matrix: Matrix,
    block: usize,
    norm_aware: bool,
) -> Result<Option<BlockVectors>> {
    let Some(w) = probe.block_direction(which, block) else {
        return Ok(None);
    };
    if !norm_aware {
        return Ok(Some(BlockVectors {
            rank: w.clone(),
            row_gain: None,
            edit: w,
        }));
    }
    if matrix != Matrix::Gate && matrix != Matrix::Up {
        bail!("norm-aware selection needs a gate or up projection");
    }
    let g_i = model.norm_gain(Some(block))?;
    // All-zero (or broken) gains would divide the direction by zero; say so rather than
    // let it surface as a "non-finite probe direction".
    if g_i.iter().any(|g| !g.is_finite()) || g_i.iter().all(|&g| g == 0.0) {
        bail!(
            "block {block}: the RMSNorm gains before the MLP are all zero or not finite; norm-aware selection divides by them (use it without --norm-aware)"
        );
    }
    let g_p = match probe.blocks() {
        Some(_) => g_i.clone(),
        None => probe_gain(model, probe)?,
    };
    let u: Vec<f32> = g_p.iter().zip(&w).map(|(g, w)| g * w).collect();
    let floored = floor_gain(&g_i);
    let edit = u.iter().zip(&floored).map(|(u, g)| u / g).collect();
    Ok(Some(BlockVectors {
        rank: u,
        row_gain: Some(g_i),
        edit,
    }))
}

/// The gain of the RMSNorm whose output the probe read: the final norm for `final`, block
/// N's post-attention norm for `mlp:N`. A residual-stream probe reads no norm (gain 1).
pub(crate) fn probe_gain(model: &ModelFile, probe: &Probe) -> Result<Vec<f32>> {
    let point = probe.meta.get("point").map_or("final", String::as_str);
    if point == "final" {
        return model.norm_gain(None);
    }
    if let Some(n) = point.strip_prefix("mlp:") {
        let b = n
            .parse()
            .with_context(|| format!("probe point {point:?} is not mlp:N"))?;
        return model.norm_gain(Some(b));
    }
    Ok(vec![1.0; probe.width()])
}

/// `|g|` raised to at least [`GAIN_FLOOR`] × RMS(g), sign kept.
fn floor_gain(g: &[f32]) -> Vec<f32> {
    let rms = (g.iter().map(|v| v * v).sum::<f32>() / g.len().max(1) as f32).sqrt();
    let min = GAIN_FLOOR * rms;
    g.iter()
        .map(|&v| if v.abs() >= min { v } else { min.copysign(v) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::floor_gain;

    #[test]
    fn tiny_gains_are_floored_with_their_sign() {
        let g = floor_gain(&[1.0, -1.0, 0.0001, -0.0001]);
        let min = 0.05 * (2.0f32 / 4.0).sqrt();
        assert_eq!(g[0], 1.0);
        assert_eq!(g[1], -1.0);
        assert!((g[2] - min).abs() < 1e-6 && (g[3] + min).abs() < 1e-6);
    }
}
