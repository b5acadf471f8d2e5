//! Hand-written x86 exact kernels (AVX2, AVX-512), one row per call, kept beside the
//! generic `pulp` source because they measured faster on one core than it (see
//! docs/cpu-support.md): the generic kernels serve scalar and NEON, these serve x86. Same
//! numerics: weights as stored, f32 inputs, result equal to the dequantised product up to
//! summation order (tested against the same reference on every level).

use half::f16;

use super::{BlockType, Q4_1_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QK};

/// One chunk of rows (`dst[row·m + input]`) with AVX-512 F + F16C. Callers check the CPU
/// and the sizes (`w` holds `nrows` rows of `rb` bytes; `x` is `m × k`, `sums` `m × k/32`).
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn chunk_avx512(
    ty: BlockType,
    w: &[u8],
    rb: usize,
    nrows: usize,
    x: &[f32],
    k: usize,
    sums: &[f32],
    dst: &mut [f32],
) {
    let m = x.len() / k;
    let nb = k / QK;
    for r in 0..nrows {
        let row = &w[r * rb..(r + 1) * rb];
        for i in 0..m {
            let xs = &x[i * k..(i + 1) * k];
            dst[r * m + i] = match ty {
                BlockType::Q4_1 => dot_avx512(row, xs, &sums[i * nb..(i + 1) * nb]),
                _ => dot_q8_0_avx512(row, xs),
            };
        }
    }
}

/// [`chunk_avx512`] with AVX2 + FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn chunk_avx2(
    ty: BlockType,
    w: &[u8],
    rb: usize,
    nrows: usize,
    x: &[f32],
    k: usize,
    sums: &[f32],
    dst: &mut [f32],
) {
    let m = x.len() / k;
    let nb = k / QK;
    for r in 0..nrows {
        let row = &w[r * rb..(r + 1) * rb];
        for i in 0..m {
            let xs = &x[i * k..(i + 1) * k];
            dst[r * m + i] = match ty {
                BlockType::Q4_1 => dot_avx2(row, xs, &sums[i * nb..(i + 1) * nb]),
                _ => dot_q8_0_avx2(row, xs),
            };
        }
    }
}

fn block_scales(b: &[u8]) -> (f32, f32) {
    (
        f16::from_le_bytes([b[0], b[1]]).to_f32(),
        f16::from_le_bytes([b[2], b[3]]).to_f32(),
    )
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_q8_0_avx2(w: &[u8], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    for (b, blk) in w.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let qp = blk.as_ptr().add(2);
        let xp = x.as_ptr().add(b * QK);
        let widen = |p: *const u8| {
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
        };
        let mut t = _mm256_mul_ps(widen(qp), _mm256_loadu_ps(xp));
        t = _mm256_fmadd_ps(widen(qp.add(8)), _mm256_loadu_ps(xp.add(8)), t);
        t = _mm256_fmadd_ps(widen(qp.add(16)), _mm256_loadu_ps(xp.add(16)), t);
        t = _mm256_fmadd_ps(widen(qp.add(24)), _mm256_loadu_ps(xp.add(24)), t);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
    }
    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h)
}

/// AVX-512 versions: 16 lanes widen a 32-value block in two conversions instead of four,
/// and F16C converts the block scales in-register (a call into `half` per block cost a
/// quarter of the generation time in a profile).
#[target_feature(enable = "avx512f,f16c")]
unsafe fn dot_avx512(w: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0F);
    let mut acc = _mm512_setzero_ps();
    let mut acc_min = 0f32;
    for (b, blk) in w.chunks_exact(Q4_1_BLOCK_BYTES).enumerate() {
        let p = blk.as_ptr();
        // [d, m] as f32 from the two leading f16 values.
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        let d = _mm_cvtss_f32(dm);
        let m = _mm_cvtss_f32(_mm_shuffle_ps(dm, dm, 1));
        let packed = _mm_loadu_si128(p.add(4) as *const __m128i);
        let lo = _mm_and_si128(packed, low);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
        let xp = x.as_ptr().add(b * QK);
        let wl = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
        let wh = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
        let t = _mm512_fmadd_ps(
            wh,
            _mm512_loadu_ps(xp.add(16)),
            _mm512_mul_ps(wl, _mm512_loadu_ps(xp)),
        );
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), t, acc);
        acc_min += m * sums[b];
    }
    _mm512_reduce_add_ps(acc) + acc_min
}

#[target_feature(enable = "avx512f,f16c")]
unsafe fn dot_q8_0_avx512(w: &[u8], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm512_setzero_ps();
    for (b, blk) in w.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
        let p = blk.as_ptr();
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (p as *const u16).read_unaligned() as i32,
        )));
        let xp = x.as_ptr().add(b * QK);
        let q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
            p.add(2) as *const __m128i
        )));
        let q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
            p.add(18) as *const __m128i
        )));
        let t = _mm512_fmadd_ps(
            q1,
            _mm512_loadu_ps(xp.add(16)),
            _mm512_mul_ps(q0, _mm512_loadu_ps(xp)),
        );
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), t, acc);
    }
    _mm512_reduce_add_ps(acc)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = 0f32;
    for (b, blk) in w.chunks_exact(Q4_1_BLOCK_BYTES).enumerate() {
        let (d, m) = block_scales(blk);
        let packed = _mm_loadu_si128(blk.as_ptr().add(4) as *const __m128i);
        // Elements 0..16 are the low nibbles, 16..32 the high ones.
        let lo = _mm_and_si128(packed, low);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
        let xp = x.as_ptr().add(b * QK);
        let widen = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        let mut t = _mm256_mul_ps(widen(lo), _mm256_loadu_ps(xp));
        t = _mm256_fmadd_ps(widen(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(xp.add(8)), t);
        t = _mm256_fmadd_ps(widen(hi), _mm256_loadu_ps(xp.add(16)), t);
        t = _mm256_fmadd_ps(widen(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(xp.add(24)), t);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
        acc_min += m * sums[b];
    }
    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h) + acc_min
}
