//! The opt-in 8-bit-input path (`--precision int8-activations`; not bit-exact): each input
//! row is rounded to signed bytes per block of 32 with its own scale, as llama.cpp rounds
//! matmul inputs to Q8_0 / Q8_1, and each block's dot product with the weights is an
//! integer dot product — AVX2 `vpmaddubsw`, AVX-512 VNNI `vpdpbusd` — scaled once per
//! block. The weights stay exactly as stored; only the inputs are rounded.
//!
//! Differences from llama.cpp, both in the direction of accuracy: the input scale and the
//! block sum `d·Σq` are kept in f32 (llama.cpp stores them as f16).
//!
//! `pulp`'s portable layer has no integer dot product, so the x86 kernels use `std::arch`
//! and every other level (scalar, NEON) runs the portable integer loop, which the compiler
//! vectorises with the baseline NEON of aarch64. An aarch64 `sdot` kernel is not written:
//! it could not be compiled or tested here (see docs/cpu-support.md).

use super::isa::Isa;
use super::{half_to_f32, BlockType, Q4_1_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QK};

/// One input row rounded to 8 bits per block of 32.
#[derive(Debug, Clone, Default)]
pub struct QuantInput {
    /// The rounded values, `round(x / d)` in −127..127.
    pub q: Vec<i8>,
    /// Per block: the scale `d = max|x| / 127`.
    pub d: Vec<f32>,
    /// Per block: `d·Σ q`, the block's sum as the weights see it (Q4_1's `m` term).
    pub s: Vec<f32>,
}

/// Rounds `x` (a multiple of 32 long) block by block, as llama.cpp's reference
/// `quantize_row_q8_1` does: scale from the largest magnitude, round half away from zero.
pub fn quantize_input(x: &[f32]) -> QuantInput {
    let nb = x.len() / QK;
    let mut out = QuantInput {
        q: vec![0; nb * QK],
        d: vec![0.0; nb],
        s: vec![0.0; nb],
    };
    for (b, xb) in x.chunks_exact(QK).enumerate() {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in out.q[b * QK..(b + 1) * QK].iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        out.d[b] = d;
        out.s[b] = d * sum as f32;
    }
    out
}

/// Portable Q4_1 × 8-bit rows: integer sums per block, one f32 scale each.
#[inline(always)]
pub(super) fn q4_1_rows_portable<const R: usize>(rows: [&[u8]; R], xq: &QuantInput) -> [f32; R] {
    let mut acc = [0f32; R];
    for (b, q) in xq.q.chunks_exact(QK).enumerate() {
        for r in 0..R {
            let blk = &rows[r][b * Q4_1_BLOCK_BYTES..(b + 1) * Q4_1_BLOCK_BYTES];
            let d = half_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            let m = half_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
            let mut isum = 0i32;
            for j in 0..16 {
                isum += (blk[4 + j] & 0x0F) as i32 * q[j] as i32;
                isum += (blk[4 + j] >> 4) as i32 * q[j + 16] as i32;
            }
            acc[r] += d * xq.d[b] * isum as f32 + m * xq.s[b];
        }
    }
    acc
}

/// Portable Q8_0 × 8-bit rows.
#[inline(always)]
pub(super) fn q8_0_rows_portable<const R: usize>(rows: [&[u8]; R], xq: &QuantInput) -> [f32; R] {
    let mut acc = [0f32; R];
    for (b, q) in xq.q.chunks_exact(QK).enumerate() {
        for r in 0..R {
            let blk = &rows[r][b * Q8_0_BLOCK_BYTES..(b + 1) * Q8_0_BLOCK_BYTES];
            let d = half_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            let mut isum = 0i32;
            for j in 0..QK {
                isum += blk[2 + j] as i8 as i32 * q[j] as i32;
            }
            acc[r] += d * xq.d[b] * isum as f32;
        }
    }
    acc
}

/// Runs `$k::<1>` over `$nrows` rows of `$w` (`$rb` bytes each) for every input; `$dst[row·m + input]`. A macro, not a closure, so that the kernels
/// inline into the caller's target features.
macro_rules! each_row {
    ($w:expr, $rb:expr, $nrows:expr, $inputs:expr, $dst:expr, $k:ident) => {{
        let m = $inputs.len();
        // One row at a time in memory order (see `ExactChunk` in the module root).
        let mut r = 0;
        while r < $nrows {
            let rows = [&$w[r * $rb..(r + 1) * $rb]];
            for (i, xq) in $inputs.iter().enumerate() {
                $dst[r * m + i] = $k::<1>(rows, xq)[0];
            }
            r += 1;
        }
    }};
}

/// `dst[row·m + i]` = row `row` of `w` (`nrows` rows of `ty`, Q4_1 or Q8_0) · input `i`.
pub(super) fn chunk(
    isa: Isa,
    ty: BlockType,
    w: &[u8],
    nrows: usize,
    inputs: &[QuantInput],
    dst: &mut [f32],
) {
    let k = inputs.first().map_or(0, |x| x.q.len());
    let rb = k / QK * ty.block_bytes();
    assert!(w.len() >= nrows * rb && dst.len() >= nrows * inputs.len());
    assert!(inputs.iter().all(|x| x.q.len() == k && x.d.len() == k / QK));
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && std::is_x86_feature_detected!("avx512vnni") {
            // SAFETY: the CPU has AVX-512 F/VL and VNNI (the Avx512 level is only chosen
            // when available; VNNI checked here); sizes checked by the asserts above.
            return unsafe { x86::chunk_vnni(ty, w, rb, nrows, inputs, dst) };
        }
        if matches!(isa, Isa::Avx2 | Isa::Avx512) && isa.available() {
            // SAFETY: AVX2 and FMA are part of both levels, which `available` checked.
            return unsafe { x86::chunk_avx2(ty, w, rb, nrows, inputs, dst) };
        }
    }
    let _ = isa;
    match ty {
        BlockType::Q4_1 => each_row!(w, rb, nrows, inputs, dst, q4_1_rows_portable),
        _ => each_row!(w, rb, nrows, inputs, dst, q8_0_rows_portable),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)))
    }

    /// The 32 nibbles of a Q4_1 block as bytes, in element order (low nibbles first).
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let low = _mm_set1_epi8(0x0F);
        let packed = _mm_loadu_si128(p as *const __m128i);
        _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16(packed, 4), low),
            _mm_and_si128(packed, low),
        )
    }

    /// Σ u·s over 32 unsigned × signed bytes, as eight i32 lanes: `vpmaddubsw` then
    /// `vpmaddwd`. Pairs cannot saturate i16: |u| ≤ 128 and |s| ≤ 127 give ≤ 32512.
    #[inline(always)]
    unsafe fn dot_u8_i8_avx2(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    macro_rules! q4_1_rows {
        ($name:ident, $feat:literal, $dot:ident) => {
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn $name<const R: usize>(rows: [&[u8]; R], xq: &QuantInput) -> [f32; R] {
                let mut acc = [_mm256_setzero_ps(); R];
                let mut acc_min = [0f32; R];
                for b in 0..xq.d.len() {
                    let q = _mm256_loadu_si256(xq.q.as_ptr().add(b * QK) as *const __m256i);
                    let (dx, sx) = (xq.d[b], xq.s[b]);
                    for r in 0..R {
                        let p = rows[r].as_ptr().add(b * Q4_1_BLOCK_BYTES);
                        let d = half_to_f32((p as *const u16).read_unaligned().to_le());
                        let m = half_to_f32((p.add(2) as *const u16).read_unaligned().to_le());
                        let isum = _mm256_cvtepi32_ps($dot(nibbles(p.add(4)), q));
                        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), isum, acc[r]);
                        acc_min[r] += m * sx;
                    }
                }
                std::array::from_fn(|r| hsum(acc[r]) + acc_min[r])
            }
        };
    }

    macro_rules! q8_0_rows {
        ($name:ident, $feat:literal, $dot:ident) => {
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn $name<const R: usize>(rows: [&[u8]; R], xq: &QuantInput) -> [f32; R] {
                let mut acc = [_mm256_setzero_ps(); R];
                for b in 0..xq.d.len() {
                    let q = _mm256_loadu_si256(xq.q.as_ptr().add(b * QK) as *const __m256i);
                    let dx = xq.d[b];
                    for r in 0..R {
                        let p = rows[r].as_ptr().add(b * Q8_0_BLOCK_BYTES);
                        let d = half_to_f32((p as *const u16).read_unaligned().to_le());
                        let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
                        // Signed × signed as |w| × (q·sign w), llama.cpp's trick for an
                        // unsigned × signed instruction.
                        let isum = $dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
                        let isum = _mm256_cvtepi32_ps(isum);
                        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), isum, acc[r]);
                    }
                }
                std::array::from_fn(|r| hsum(acc[r]))
            }
        };
    }

    q4_1_rows!(q4_1_rows_avx2, "avx2,fma", dot_u8_i8_avx2);
    q8_0_rows!(q8_0_rows_avx2, "avx2,fma", dot_u8_i8_avx2);

    /// Σ u·s with one VNNI instruction.
    #[inline(always)]
    unsafe fn dot_u8_i8_vnni(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
    q4_1_rows!(
        q4_1_rows_vnni,
        "avx2,fma,avx512f,avx512vl,avx512vnni",
        dot_u8_i8_vnni
    );
    q8_0_rows!(
        q8_0_rows_vnni,
        "avx2,fma,avx512f,avx512vl,avx512vnni",
        dot_u8_i8_vnni
    );

    /// [`super::chunk`] with AVX2. Callers check the CPU and the sizes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn chunk_avx2(
        ty: BlockType,
        w: &[u8],
        rb: usize,
        nrows: usize,
        inputs: &[QuantInput],
        dst: &mut [f32],
    ) {
        match ty {
            BlockType::Q4_1 => each_row!(w, rb, nrows, inputs, dst, q4_1_rows_avx2),
            _ => each_row!(w, rb, nrows, inputs, dst, q8_0_rows_avx2),
        }
    }

    /// [`super::chunk`] with AVX-512 VNNI. Callers check the CPU and the sizes.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    pub(super) unsafe fn chunk_vnni(
        ty: BlockType,
        w: &[u8],
        rb: usize,
        nrows: usize,
        inputs: &[QuantInput],
        dst: &mut [f32],
    ) {
        match ty {
            BlockType::Q4_1 => each_row!(w, rb, nrows, inputs, dst, q4_1_rows_vnni),
            _ => each_row!(w, rb, nrows, inputs, dst, q8_0_rows_vnni),
        }
    }
}
