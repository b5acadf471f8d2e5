//! Hand-written x86 exact kernels (AVX2, AVX-512), one row per call, kept beside the
//! generic `pulp` source because they measured faster on one core than it (see
//! docs/cpu-support.md): the generic kernels serve scalar and NEON, these serve x86. Same
//! numerics: weights as stored, f32 inputs, result equal to the dequantised product up to
//! summation order (tested against the same reference on every level).

use super::{BlockType, Q4_1_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QK};

/// One chunk of rows times every input, `dst[row·m + input]`: one row at a time in memory
/// order (see `ExactChunk` in the module root), each against every input. The sizes are
/// checked here once, for the dot kernels' unchecked loads. A macro rather than a generic
/// function so that each expansion sits inside its own `#[target_feature]` function, where
/// the dot kernels of that level inline.
macro_rules! rows_times_inputs {
    ($ty:expr, $w:expr, $rb:expr, $nrows:expr, $x:expr, $k:expr, $sums:expr, $dst:expr,
     $q4_1:ident, $q8_0:ident) => {{
        let (ty, w, rb, nrows, x, k, sums, dst) = ($ty, $w, $rb, $nrows, $x, $k, $sums, $dst);
        let m = x.len() / k;
        let nb = k / QK;
        assert!(
            w.len() >= nrows * rb
                && rb == nb * ty.block_bytes()
                && sums.len() >= m * nb
                && dst.len() >= nrows * m
        );
        for r in 0..nrows {
            let row = &w[r * rb..(r + 1) * rb];
            for i in 0..m {
                let xs = &x[i * k..(i + 1) * k];
                dst[r * m + i] = match ty {
                    BlockType::Q4_1 => $q4_1(row, xs, &sums[i * nb..(i + 1) * nb]),
                    _ => $q8_0(row, xs),
                };
            }
        }
    }};
}

/// One chunk of rows (`dst[row·m + input]`) with AVX-512 F + F16C. Callers check the CPU;
/// the sizes (`w` holds `nrows` rows of `rb` bytes; `x` is `m × k`, `sums` `m × k/32`) are
/// asserted here.
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
    rows_times_inputs!(
        ty,
        w,
        rb,
        nrows,
        x,
        k,
        sums,
        dst,
        dot_avx512,
        dot_q8_0_avx512
    );
}

/// [`chunk_avx512`] with AVX2 + FMA: the F16C kernels below where the CPU has F16C (every
/// AVX2 CPU sold has it, but the AVX2 level does not imply it), else the generic source.
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
    if std::is_x86_feature_detected!("f16c") {
        return chunk_avx2_f16c(ty, w, rb, nrows, x, k, sums, dst);
    }
    let chunk = super::ExactChunk {
        ty,
        w,
        rb,
        nrows,
        x,
        k,
        sums,
        dst,
    };
    super::isa::dispatch(super::isa::Isa::Avx2, chunk);
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_avx2_f16c(
    ty: BlockType,
    w: &[u8],
    rb: usize,
    nrows: usize,
    x: &[f32],
    k: usize,
    sums: &[f32],
    dst: &mut [f32],
) {
    rows_times_inputs!(ty, w, rb, nrows, x, k, sums, dst, dot_avx2, dot_q8_0_avx2);
}

/// The sum of the eight lanes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)))
}

/// Q8_0 row · f32 inputs. The scale is converted in-register (F16C), and each block's two
/// halves go to their own accumulator: two short multiply–add chains per block instead of
/// one of five, and no call that spills the accumulator (the previous kernel called `half`
/// per scale and kept its accumulator on the stack). `vpmovsxbd` from memory stays: an
/// in-lane `vpshufb` + shift widening, faster for Q4_1, measured slower here.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0_avx2(w: &[u8], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let nb = w.len() / Q8_0_BLOCK_BYTES;
    assert!(x.len() >= nb * QK);
    let widen = |p: *const u8| {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
    };
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for b in 0..nb {
        let p = w.as_ptr().add(b * Q8_0_BLOCK_BYTES);
        let d = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32));
        let d = _mm256_broadcastss_ps(d);
        let (qp, xp) = (p.add(2), x.as_ptr().add(b * QK));
        let t0 = _mm256_fmadd_ps(
            widen(qp.add(8)),
            _mm256_loadu_ps(xp.add(8)),
            _mm256_mul_ps(widen(qp), _mm256_loadu_ps(xp)),
        );
        let t1 = _mm256_fmadd_ps(
            widen(qp.add(24)),
            _mm256_loadu_ps(xp.add(24)),
            _mm256_mul_ps(widen(qp.add(16)), _mm256_loadu_ps(xp.add(16))),
        );
        acc0 = _mm256_fmadd_ps(d, t0, acc0);
        acc1 = _mm256_fmadd_ps(d, t1, acc1);
    }
    hsum256(_mm256_add_ps(acc0, acc1))
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

/// Q4_1 row · f32 inputs (`sums`: Σ x per block, for the minimum term), as
/// [`dot_q8_0_avx2`]: scale and minimum converted together by F16C, low and high nibbles
/// on their own accumulators. The nibbles are widened in-lane: the 16 bytes broadcast to
/// both halves of a register, one `vpshufb` puts bytes 0..8 (8..16) into the eight 32-bit
/// lanes, and a mask or a shift leaves the low or high nibble. This replaced four
/// lane-crossing `vpmovzxbd`, and measured 1.11–1.13× the kernel's throughput (one
/// thread, 30 matrices of 1536 × 576, best of 20, same process); a second pair of
/// accumulators (two blocks per step) measured no faster and is not used.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(w: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let nb = w.len() / Q4_1_BLOCK_BYTES;
    assert!(x.len() >= nb * QK && sums.len() >= nb);
    let low = _mm256_set1_epi32(0x0F);
    let z = -1i8;
    // Byte i of the block into dword i (bytes 0..8), then 8..16.
    let sel0 = _mm256_setr_epi8(
        0, z, z, z, 1, z, z, z, 2, z, z, z, 3, z, z, z, 4, z, z, z, 5, z, z, z, 6, z, z, z, 7, z,
        z, z,
    );
    let sel1 = _mm256_setr_epi8(
        8, z, z, z, 9, z, z, z, 10, z, z, z, 11, z, z, z, 12, z, z, z, 13, z, z, z, 14, z, z, z,
        15, z, z, z,
    );
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut acc_min = _mm_setzero_ps();
    for b in 0..nb {
        let p = w.as_ptr().add(b * Q4_1_BLOCK_BYTES);
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        acc_min = _mm_fmadd_ss(
            _mm_movehdup_ps(dm),
            _mm_load_ss(sums.as_ptr().add(b)),
            acc_min,
        );
        let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(4) as *const __m128i));
        let a = _mm256_shuffle_epi8(both, sel0);
        let c = _mm256_shuffle_epi8(both, sel1);
        let f = |v: __m256i| _mm256_cvtepi32_ps(v);
        let xp = x.as_ptr().add(b * QK);
        let t0 = _mm256_fmadd_ps(
            f(_mm256_and_si256(c, low)),
            _mm256_loadu_ps(xp.add(8)),
            _mm256_mul_ps(f(_mm256_and_si256(a, low)), _mm256_loadu_ps(xp)),
        );
        let t1 = _mm256_fmadd_ps(
            f(_mm256_srli_epi32(c, 4)),
            _mm256_loadu_ps(xp.add(24)),
            _mm256_mul_ps(f(_mm256_srli_epi32(a, 4)), _mm256_loadu_ps(xp.add(16))),
        );
        let d = _mm256_broadcastss_ps(dm);
        acc0 = _mm256_fmadd_ps(d, t0, acc0);
        acc1 = _mm256_fmadd_ps(d, t1, acc1);
    }
    hsum256(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(acc_min)
}
