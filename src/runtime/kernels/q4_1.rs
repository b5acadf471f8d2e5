//! Exact Q4_1 rows: a weight is `d·q + m` with `q` in 0..15, so a block's dot product with
//! f32 inputs is `d·Σ q_j x_j + m·Σ x_j`, computed in f32 without rounding the inputs. One
//! generic source for every instruction set (`pulp` picks the vector width): the nibbles
//! widen to f32 in a fixed-size loop the compiler vectorises under the level's target
//! features, and even and odd blocks go to two accumulators, two independent multiply–add
//! chains instead of one. `R` rows per call is kept general; the caller passes one (rows in
//! memory order keep one sequential stream for the prefetcher).
//!
//! Index loops over fixed-size arrays, not iterator chains: inside this large inlined body
//! the compiler left iterator adaptors (`zip`, `skip`) as calls compiled without the
//! level's target features, and the widening scalar — 13× slower in a profile.

#![allow(clippy::needless_range_loop)]

use pulp::Simd;

use super::{half_to_f32, Q4_1_BLOCK_BYTES, QK};

/// Dot products of `R` Q4_1 rows with one input row `x`; `sums` holds `Σ x` per block.
#[inline(always)]
pub(super) fn rows<S: Simd, const R: usize>(
    simd: S,
    rows: [&[u8]; R],
    x: &[f32],
    sums: &[f32],
) -> [f32; R] {
    let nb = x.len() / QK;
    for r in rows {
        assert!(r.len() >= nb * Q4_1_BLOCK_BYTES && sums.len() >= nb);
    }
    // Two accumulators per row, for even and odd blocks: two independent multiply–add
    // chains instead of one.
    let mut acc = [[simd.splat_f32s(0.0); 2]; R];
    let mut acc_min = [0f32; R];
    for b in 0..nb {
        // SAFETY: b < nb, so the 32 inputs and each row's block b are in bounds (asserted
        // above); arrays of u8/f32 need no alignment beyond their element's.
        let xb = unsafe { &*(x.as_ptr().add(b * QK) as *const [f32; QK]) };
        let (xv, _) = S::as_simd_f32s(xb);
        for r in 0..R {
            // SAFETY: as above.
            let blk = unsafe {
                &*(rows[r].as_ptr().add(b * Q4_1_BLOCK_BYTES) as *const [u8; Q4_1_BLOCK_BYTES])
            };
            let d = half_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            let m = half_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
            // Elements 0..16 are the low nibbles, 16..32 the high ones.
            let mut w = [0f32; QK];
            for j in 0..16 {
                w[j] = (blk[4 + j] & 0x0F) as f32;
            }
            for j in 0..16 {
                w[16 + j] = (blk[4 + j] >> 4) as f32;
            }
            let (wv, _) = S::as_simd_f32s(&w);
            let mut t = simd.mul_f32s(wv[0], xv[0]);
            for i in 1..QK / S::F32_LANES {
                t = simd.mul_add_e_f32s(wv[i], xv[i], t);
            }
            acc[r][b & 1] = simd.mul_add_e_f32s(simd.splat_f32s(d), t, acc[r][b & 1]);
            acc_min[r] += m * sums[b];
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = simd.reduce_sum_f32s(simd.add_f32s(acc[r][0], acc[r][1])) + acc_min[r];
    }
    out
}
