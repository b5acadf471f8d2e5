//! Exact Q8_0 rows (and Q5_0 rows rewritten as Q8_0, see [`super::q5_0`]): a weight is
//! `d·q` with `q` a signed byte, so a block's dot product is `d·Σ q_j x_j` in f32, inputs
//! not rounded. Same shape as [`super::q4_1`]: one generic source, two accumulators,
//! index loops over fixed-size arrays.

#![allow(clippy::needless_range_loop)]

use pulp::Simd;

use super::{half_to_f32, Q8_0_BLOCK_BYTES, QK};

/// Dot products of `R` Q8_0 rows with one input row `x`.
#[inline(always)]
pub(super) fn rows<S: Simd, const R: usize>(simd: S, rows: [&[u8]; R], x: &[f32]) -> [f32; R] {
    let nb = x.len() / QK;
    for r in rows {
        assert!(r.len() >= nb * Q8_0_BLOCK_BYTES);
    }
    // Two accumulators per row, for even and odd blocks: two independent multiply–add
    // chains instead of one.
    let mut acc = [[simd.splat_f32s(0.0); 2]; R];
    for b in 0..nb {
        // SAFETY: b < nb, so the 32 inputs and each row's block b are in bounds (asserted
        // above); arrays of u8/f32 need no alignment beyond their element's.
        let xb = unsafe { &*(x.as_ptr().add(b * QK) as *const [f32; QK]) };
        let (xv, _) = S::as_simd_f32s(xb);
        for r in 0..R {
            // SAFETY: as above.
            let blk = unsafe {
                &*(rows[r].as_ptr().add(b * Q8_0_BLOCK_BYTES) as *const [u8; Q8_0_BLOCK_BYTES])
            };
            let d = half_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            let mut w = [0f32; QK];
            for j in 0..QK {
                w[j] = blk[2 + j] as i8 as f32;
            }
            let (wv, _) = S::as_simd_f32s(&w);
            let mut t = simd.mul_f32s(wv[0], xv[0]);
            for i in 1..QK / S::F32_LANES {
                t = simd.mul_add_e_f32s(wv[i], xv[i], t);
            }
            acc[r][b & 1] = simd.mul_add_e_f32s(simd.splat_f32s(d), t, acc[r][b & 1]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = simd.reduce_sum_f32s(simd.add_f32s(acc[r][0], acc[r][1]));
    }
    out
}
