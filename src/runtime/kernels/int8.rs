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
    /// `d` and `s` interleaved (`[d₀, s₀, d₁, s₁, …]`), so that the x86 Q4_1 kernel
    /// scales two blocks' `[d, m]` pairs with one multiplication.
    pub(super) ds: Vec<f32>,
}

/// Rounds `x` (a multiple of 32 long) block by block, as llama.cpp's reference
/// `quantize_row_q8_1` does: scale from the largest magnitude, round half away from zero.
///
/// Written so that the compiler vectorises it (it runs once per input row of every matmul
/// of a generated token, serially): the maximum over eight lanes (exact in any order), and
/// `round` as truncation plus a correction instead of a `roundf` call per value — equal to
/// it here because `|x/d| ≤ 127` makes `y − trunc(y)` exact.
pub fn quantize_input(x: &[f32]) -> QuantInput {
    let nb = x.len() / QK;
    let mut out = QuantInput {
        q: vec![0; nb * QK],
        d: vec![0.0; nb],
        s: vec![0.0; nb],
        ds: vec![0.0; 2 * nb],
    };
    for (b, (xb, qb)) in x
        .chunks_exact(QK)
        .zip(out.q.chunks_exact_mut(QK))
        .enumerate()
    {
        // `>` as a select rather than `f32::max` (a libm call when not vectorised); both
        // skip NaN. Over a fixed-size block so that it becomes `maxps`.
        let xa: &[f32; QK] = xb.try_into().expect("a block of 32");
        let mut lanes = [0f32; 8];
        for c in 0..QK / 8 {
            for (l, m) in lanes.iter_mut().enumerate() {
                let a = xa[c * 8 + l].abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let amax = lanes.iter().fold(0f32, |m, &a| if a > m { a } else { m });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in qb.iter_mut().zip(xb) {
            // NaN (an infinite or NaN input) gives 0, as `roundf(NaN) as i8` does.
            let y = v * id;
            let y = if y.is_nan() {
                0.0
            } else {
                y.clamp(-128.0, 128.0)
            };
            // SAFETY: `y` is finite and within i32 (clamped above).
            let t: i32 = unsafe { y.to_int_unchecked() };
            let f = y - t as f32;
            let r = t + (f >= 0.5) as i32 - (f <= -0.5) as i32;
            *q = r as i8;
            sum += r;
        }
        out.d[b] = d;
        out.s[b] = d * sum as f32;
        out.ds[2 * b] = out.d[b];
        out.ds[2 * b + 1] = out.s[b];
    }
    out
}

/// Portable Q4_1 row × 8-bit input: integer sums per block, one f32 scale each.
#[inline(always)]
pub(super) fn q4_1_row_portable(row: &[u8], xq: &QuantInput) -> f32 {
    let mut acc = 0f32;
    for (b, q) in xq.q.chunks_exact(QK).enumerate() {
        let blk = &row[b * Q4_1_BLOCK_BYTES..(b + 1) * Q4_1_BLOCK_BYTES];
        let d = half_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        let m = half_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (blk[4 + j] & 0x0F) as i32 * q[j] as i32;
            isum += (blk[4 + j] >> 4) as i32 * q[j + 16] as i32;
        }
        acc += d * xq.d[b] * isum as f32 + m * xq.s[b];
    }
    acc
}

/// Portable Q8_0 row × 8-bit input.
#[inline(always)]
pub(super) fn q8_0_row_portable(row: &[u8], xq: &QuantInput) -> f32 {
    let mut acc = 0f32;
    for (b, q) in xq.q.chunks_exact(QK).enumerate() {
        let blk = &row[b * Q8_0_BLOCK_BYTES..(b + 1) * Q8_0_BLOCK_BYTES];
        let d = half_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        let mut isum = 0i32;
        for j in 0..QK {
            isum += blk[2 + j] as i8 as i32 * q[j] as i32;
        }
        acc += d * xq.d[b] * isum as f32;
    }
    acc
}

/// Runs the row kernel `$k` over `$nrows` rows of `$w` (`$rb` bytes each) for every input;
/// `$dst[row·m + input]`. A macro, not a closure, so that the kernels inline into the
/// caller's target features.
macro_rules! each_row {
    ($w:expr, $rb:expr, $nrows:expr, $inputs:expr, $dst:expr, $k:ident) => {{
        let m = $inputs.len();
        // One row at a time in memory order (see `ExactChunk` in the module root).
        for r in 0..$nrows {
            let row = &$w[r * $rb..(r + 1) * $rb];
            for (i, xq) in $inputs.iter().enumerate() {
                $dst[r * m + i] = $k(row, xq);
            }
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
    assert!(inputs.iter().all(|x| x.q.len() == k
        && x.d.len() == k / QK
        && x.s.len() == k / QK
        && x.ds.len() == 2 * (k / QK)));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("f16c") {
        if isa == Isa::Avx512 && isa.available() && std::is_x86_feature_detected!("avx512vnni") {
            // SAFETY: the CPU has AVX-512 F/VL (the level is available), VNNI and F16C
            // (checked here); sizes checked by the asserts above.
            return unsafe { x86::chunk_vnni(ty, w, rb, nrows, inputs, dst) };
        }
        if matches!(isa, Isa::Avx2 | Isa::Avx512) && isa.available() {
            // SAFETY: AVX2 and FMA are part of both levels, which `available` checked;
            // F16C checked above.
            return unsafe { x86::chunk_avx2(ty, w, rb, nrows, inputs, dst) };
        }
    }
    let _ = isa;
    match ty {
        BlockType::Q4_1 => each_row!(w, rb, nrows, inputs, dst, q4_1_row_portable),
        _ => each_row!(w, rb, nrows, inputs, dst, q8_0_row_portable),
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

    /// The 32 nibbles of a Q4_1 block as bytes, in element order (low nibbles first): the
    /// 16 bytes broadcast to both halves, the upper half shifted right by 4, then masked —
    /// no lane-crossing insert (1.06–1.08× this kernel's throughput against
    /// `vinserti128` of the two halves, one thread, best of 20, same process).
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
        _mm256_and_si256(
            _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
            _mm256_set1_epi8(0x0F),
        )
    }

    /// Σ u·s over 32 unsigned × signed bytes, as eight i32 lanes: `vpmaddubsw` then
    /// `vpmaddwd`. Pairs cannot saturate i16: |u| ≤ 128 and |s| ≤ 127 give ≤ 32512.
    #[inline(always)]
    unsafe fn dot_u8_i8_avx2(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    /// Q4_1 row × 8-bit input, two blocks per step. The scales and minimums of both come
    /// from one F16C conversion (`[d₀, m₀, d₁, m₁]`; a bit-twiddling conversion with
    /// branches per scale was a large part of this kernel's profile) and one
    /// multiplication by the inputs' `[dx₀, sx₀, dx₁, sx₁]`, whose odd lanes are the
    /// minimum terms (1.12× this kernel's throughput against one conversion and two
    /// scalar products per block; one thread, best of 20, same process). Even and odd
    /// blocks go to two accumulators.
    macro_rules! q4_1_row {
        ($name:ident, $feat:literal, $dot:ident) => {
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn $name(row: &[u8], xq: &QuantInput) -> f32 {
                let nb = xq.d.len();
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                // Lanes 1 and 3 sum `m·sx`; lanes 0 and 2 are unused.
                let mut acc_min = _mm_setzero_ps();
                let dm_bits = |b: usize| {
                    (row.as_ptr().add(b * Q4_1_BLOCK_BYTES) as *const i32).read_unaligned()
                };
                let isum = |b: usize| {
                    let p = row.as_ptr().add(b * Q4_1_BLOCK_BYTES + 4);
                    let q = _mm256_loadu_si256(xq.q.as_ptr().add(b * QK) as *const __m256i);
                    _mm256_cvtepi32_ps($dot(nibbles(p), q))
                };
                let mut b = 0;
                while b + 1 < nb {
                    let h = _mm_insert_epi32(_mm_cvtsi32_si128(dm_bits(b)), dm_bits(b + 1), 1);
                    let ds = _mm_loadu_ps(xq.ds.as_ptr().add(2 * b));
                    let prod = _mm_mul_ps(_mm_cvtph_ps(h), ds);
                    acc_min = _mm_add_ps(acc_min, prod);
                    let s0 = _mm256_broadcastss_ps(prod);
                    let s1 = _mm256_broadcastss_ps(_mm_movehl_ps(prod, prod));
                    acc0 = _mm256_fmadd_ps(s0, isum(b), acc0);
                    acc1 = _mm256_fmadd_ps(s1, isum(b + 1), acc1);
                    b += 2;
                }
                if b < nb {
                    let ds = _mm_castpd_ps(_mm_load_sd(xq.ds.as_ptr().add(2 * b) as *const f64));
                    let prod = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits(b))), ds);
                    acc_min = _mm_add_ps(acc_min, prod);
                    acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), isum(b), acc0);
                }
                let mins = _mm_add_ps(acc_min, _mm_movehl_ps(acc_min, acc_min));
                hsum(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(_mm_movehdup_ps(mins))
            }
        };
    }

    /// Q8_0 row × 8-bit input, as [`q4_1_row`].
    macro_rules! q8_0_row {
        ($name:ident, $feat:literal, $dot:ident) => {
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn $name(row: &[u8], xq: &QuantInput) -> f32 {
                let nb = xq.d.len();
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let block = |b: usize| {
                    let p = row.as_ptr().add(b * Q8_0_BLOCK_BYTES);
                    let d =
                        _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32));
                    let dx = _mm_load_ss(xq.d.as_ptr().add(b));
                    let q = _mm256_loadu_si256(xq.q.as_ptr().add(b * QK) as *const __m256i);
                    let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
                    // Signed × signed as |w| × (q·sign w), llama.cpp's trick for an
                    // unsigned × signed instruction.
                    let isum = $dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
                    (
                        _mm256_broadcastss_ps(_mm_mul_ss(d, dx)),
                        _mm256_cvtepi32_ps(isum),
                    )
                };
                let mut b = 0;
                while b + 1 < nb {
                    let (s0, v0) = block(b);
                    let (s1, v1) = block(b + 1);
                    acc0 = _mm256_fmadd_ps(s0, v0, acc0);
                    acc1 = _mm256_fmadd_ps(s1, v1, acc1);
                    b += 2;
                }
                if b < nb {
                    let (s0, v0) = block(b);
                    acc0 = _mm256_fmadd_ps(s0, v0, acc0);
                }
                hsum(_mm256_add_ps(acc0, acc1))
            }
        };
    }

    q4_1_row!(q4_1_row_avx2, "avx2,fma,f16c", dot_u8_i8_avx2);
    q8_0_row!(q8_0_row_avx2, "avx2,fma,f16c", dot_u8_i8_avx2);

    /// Σ u·s with one VNNI instruction.
    #[inline(always)]
    unsafe fn dot_u8_i8_vnni(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
    q4_1_row!(
        q4_1_row_vnni,
        "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
        dot_u8_i8_vnni
    );
    q8_0_row!(
        q8_0_row_vnni,
        "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
        dot_u8_i8_vnni
    );

    /// [`super::chunk`] with AVX2. Callers check the CPU and the sizes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn chunk_avx2(
        ty: BlockType,
        w: &[u8],
        rb: usize,
        nrows: usize,
        inputs: &[QuantInput],
        dst: &mut [f32],
    ) {
        match ty {
            BlockType::Q4_1 => each_row!(w, rb, nrows, inputs, dst, q4_1_row_avx2),
            _ => each_row!(w, rb, nrows, inputs, dst, q8_0_row_avx2),
        }
    }

    /// [`super::chunk`] with AVX-512 VNNI. Callers check the CPU and the sizes.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    pub(super) unsafe fn chunk_vnni(
        ty: BlockType,
        w: &[u8],
        rb: usize,
        nrows: usize,
        inputs: &[QuantInput],
        dst: &mut [f32],
    ) {
        match ty {
            BlockType::Q4_1 => each_row!(w, rb, nrows, inputs, dst, q4_1_row_vnni),
            _ => each_row!(w, rb, nrows, inputs, dst, q8_0_row_vnni),
        }
    }
}
