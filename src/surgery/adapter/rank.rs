//! The exact rank of one matrix's edit, and its factors `ΔW = B·A`.
//!
//! An edit changes a set S of rows by deltas δ_i. When every δ_i is the same vector (the
//! paper's recipe: δ_i = α·w for every selected row of a block) the edit is `b·aᵀ` with
//! `a = δ` and `b = 1_S`, stored bit for bit. Otherwise (per-row step sizes, per-row
//! directions, or rows read back from a patch) the deltas are orthogonalised in f64
//! (Gram–Schmidt with a second pass) and a new direction is kept only when a row's residual
//! exceeds its tolerance; the rank is the number of directions kept. The factors are then
//! multiplied back in f32, as an engine does, and every entry is checked against its row's
//! tolerance, so an adapter is either within the stated tolerance or refused, never an
//! approximation.

use anyhow::{bail, Result};

/// Tolerance of a row from exact f32 deltas: 2⁻²⁰ of the row's largest |δ| (8 units in the
/// last place of f32's 24-bit mantissa), room for the rounding of `b_i·a_j` in f32.
pub const REL_TOL: f64 = 1.0 / (1u64 << 20) as f64;

/// `ΔW = B·A` for one matrix of `n_rows × row_len`.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRank {
    /// Rows of the matrix.
    pub n_rows: usize,
    /// Elements per row.
    pub row_len: usize,
    /// Exact rank (number of rows of A, columns of B); 0 when nothing changes.
    pub rank: usize,
    /// A: `rank × row_len`, row-major (each row a direction in the input space).
    pub a: Vec<f32>,
    /// B: `n_rows × rank`, row-major (each matrix row's coefficients).
    pub b: Vec<f32>,
    /// Largest |(B·A)_ij − δ_ij| over the edited rows, computed in f32.
    pub max_error: f64,
}

/// Factors the row deltas `rows` (row index, delta, absolute tolerance per entry) of a
/// `n_rows × row_len` matrix. Fails when the rank exceeds `max_rank`, or when the f32
/// factors miss a delta by more than its tolerance.
pub fn factorize(
    n_rows: usize,
    row_len: usize,
    rows: &[(usize, &[f32], f64)],
    max_rank: usize,
) -> Result<LowRank> {
    for &(r, d, tol) in rows {
        if r >= n_rows || d.len() != row_len || tol.is_nan() || tol < 0.0 {
            bail!("row {r}: delta of {} values or tolerance {tol} does not fit a {n_rows} × {row_len} matrix", d.len());
        }
        if let Some(i) = d.iter().position(|x| !x.is_finite()) {
            bail!("row {r}: delta is not finite at {i}");
        }
    }
    // Rows that do not change carry nothing.
    let rows: Vec<&(usize, &[f32], f64)> = rows
        .iter()
        .filter(|(_, d, _)| d.iter().any(|&x| x != 0.0))
        .collect();
    let mut out = LowRank {
        n_rows,
        row_len,
        rank: 0,
        a: Vec::new(),
        b: Vec::new(),
        max_error: 0.0,
    };
    let Some(first) = rows.first() else {
        return Ok(out);
    };
    if rows.iter().all(|(_, d, _)| d == &first.1) {
        // One shared delta: A = δ, B = 1 on the edited rows. b_i·a_j = 1·δ_j is exact.
        if max_rank < 1 {
            bail!("the edit has rank 1, above the limit {max_rank}");
        }
        out.rank = 1;
        out.a = first.1.to_vec();
        out.b = vec![0.0; n_rows];
        for (r, _, _) in &rows {
            out.b[*r] = 1.0;
        }
        return Ok(out);
    }
    // Orthonormal directions q_k (f64) and each row's coefficients on them.
    let mut q: Vec<Vec<f64>> = Vec::new();
    let mut coef: Vec<(usize, Vec<f64>)> = Vec::with_capacity(rows.len());
    for &&(r, d, tol) in &rows {
        let mut res: Vec<f64> = d.iter().map(|&x| x as f64).collect();
        let mut c = vec![0.0; q.len()];
        // Two passes of classical Gram–Schmidt: one pass loses orthogonality when a row is
        // nearly in the span already, which is exactly the case being tested.
        for _ in 0..2 {
            for (k, qk) in q.iter().enumerate() {
                let p: f64 = qk.iter().zip(&res).map(|(a, b)| a * b).sum();
                c[k] += p;
                for (x, y) in res.iter_mut().zip(qk) {
                    *x -= p * y;
                }
            }
        }
        let worst = res.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        if worst > tol {
            if q.len() == max_rank {
                bail!(
                    "the edit has rank above {max_rank} (row {r} leaves a residual of {worst:.3e} > tolerance {tol:.3e} after {max_rank} directions)"
                );
            }
            let n = res.iter().map(|x| x * x).sum::<f64>().sqrt();
            c.push(n);
            q.push(res.iter().map(|x| x / n).collect());
        }
        coef.push((r, c));
    }
    let rank = q.len();
    out.rank = rank;
    out.a = q.iter().flatten().map(|&x| x as f32).collect();
    out.b = vec![0.0; n_rows * rank];
    for (r, c) in &coef {
        for (k, &x) in c.iter().enumerate() {
            out.b[r * rank + k] = x as f32;
        }
    }
    // Check in f32, the precision the engines add the product in.
    for &&(r, d, tol) in &rows {
        let br = &out.b[r * rank..(r + 1) * rank];
        for (j, &want) in d.iter().enumerate() {
            let got: f32 = (0..rank).map(|k| br[k] * out.a[k * row_len + j]).sum();
            let err = (got as f64 - want as f64).abs();
            out.max_error = out.max_error.max(err);
            if err > tol {
                bail!(
                    "rank-{rank} factors miss row {r} at {j} by {err:.3e} (tolerance {tol:.3e}); not exported, an adapter would approximate the edit"
                );
            }
        }
    }
    Ok(out)
}

/// The tolerance of an exact f32 delta: [`REL_TOL`] × its largest |value|.
pub fn delta_tolerance(delta: &[f32]) -> f64 {
    REL_TOL * delta.iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec_of(seed: u64, n: usize) -> Vec<f32> {
        crate::surgery::edit::random_direction(n, 1.0, seed)
    }

    fn rows_with_tol(rows: &[(usize, Vec<f32>)]) -> Vec<(usize, &[f32], f64)> {
        rows.iter()
            .map(|(r, d)| (*r, d.as_slice(), delta_tolerance(d)))
            .collect()
    }

    #[test]
    fn shared_delta_is_rank_one_bit_for_bit() {
        let w: Vec<f32> = vec_of(1, 64).iter().map(|x| 1.08 * x).collect();
        let rows: Vec<(usize, Vec<f32>)> = [3, 7, 20].iter().map(|&r| (r, w.clone())).collect();
        let lr = factorize(32, 64, &rows_with_tol(&rows), 8).unwrap();
        assert_eq!(lr.rank, 1);
        assert_eq!(lr.a, w);
        assert_eq!(lr.max_error, 0.0);
        for r in 0..32 {
            assert_eq!(lr.b[r], if [3, 7, 20].contains(&r) { 1.0 } else { 0.0 });
        }
    }

    #[test]
    fn per_row_step_sizes_stay_rank_one() {
        let v = vec_of(2, 48);
        let rows: Vec<(usize, Vec<f32>)> = (0..10)
            .map(|i| (i * 3, v.iter().map(|x| x * (0.5 + i as f32)).collect()))
            .collect();
        let lr = factorize(40, 48, &rows_with_tol(&rows), 8).unwrap();
        assert_eq!(lr.rank, 1);
        assert!(lr.max_error < 1e-6, "{}", lr.max_error);
    }

    #[test]
    fn combinations_of_three_directions_are_rank_three() {
        let (u, v, w) = (vec_of(3, 40), vec_of(4, 40), vec_of(5, 40));
        let rows: Vec<(usize, Vec<f32>)> = (0..12)
            .map(|i| {
                // Well-conditioned coefficients (the greedy basis comes from the first rows;
                // nearly dependent first rows would amplify their rounding and over-count
                // the rank, never under-count it: the product is always checked).
                let t = i as f64;
                let (x, y, z) = ((0.7 * t).cos(), (0.7 * t).sin(), 0.5 + (i % 3) as f64);
                // Summed in f64, rounded once: each row is within half a unit in the last
                // place of an exactly rank-3 matrix.
                let d = (0..40)
                    .map(|j| (x * u[j] as f64 + y * v[j] as f64 + z * w[j] as f64) as f32)
                    .collect();
                (i, d)
            })
            .collect();
        let lr = factorize(16, 40, &rows_with_tol(&rows), 8).unwrap();
        assert_eq!(lr.rank, 3);
        // Reconstruct and compare in f64.
        for (r, d) in &rows {
            for j in 0..40 {
                let got: f64 = (0..3)
                    .map(|k| lr.b[r * 3 + k] as f64 * lr.a[k * 40 + j] as f64)
                    .sum();
                assert!(
                    (got - d[j] as f64).abs() <= delta_tolerance(d),
                    "row {r} col {j}"
                );
            }
        }
    }

    #[test]
    fn independent_rows_are_full_rank_and_the_limit_refuses() {
        let rows: Vec<(usize, Vec<f32>)> = (0..6).map(|i| (i, vec_of(10 + i as u64, 16))).collect();
        assert_eq!(factorize(6, 16, &rows_with_tol(&rows), 16).unwrap().rank, 6);
        let e = factorize(6, 16, &rows_with_tol(&rows), 4).unwrap_err();
        assert!(e.to_string().contains("rank above 4"), "{e}");
    }

    #[test]
    fn zero_rows_drop_out_and_bad_input_is_refused() {
        let z = vec![0.0f32; 8];
        let lr = factorize(4, 8, &[(1, &z, 0.0)], 4).unwrap();
        assert_eq!(lr.rank, 0);
        assert!(factorize(4, 8, &[(9, &z, 0.0)], 4).is_err());
        let nan = vec![f32::NAN; 8];
        assert!(factorize(4, 8, &[(0, &nan, 0.0)], 4).is_err());
    }
}
