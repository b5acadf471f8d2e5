//! Q5_0 rows rewritten as Q8_0 rows of the same values, so that the exact Q8_0 kernel
//! multiplies them.

use super::isa::Isa;
use super::{Q5_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QK};

/// For each byte of a Q5_0 block's `qh`, its 8 bits as 8 bytes of 0x10 (bit set) or 0.
static FIFTH_BITS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            if (b >> i) & 1 == 1 {
                t[b] |= 0x10 << (8 * i);
            }
            i += 1;
        }
        b += 1;
    }
    t
};

/// Rewrites one Q5_0 block as the Q8_0 block of the same values: the scale is kept and
/// each 5-bit quant `q` (low nibble in `qs`, fifth bit j of `qh` for element j) becomes the
/// byte `q − 16`. Fixed-size loops and a table, so that the compiler vectorises them (a
/// bit-by-bit loop cost more than the dot product itself in a profile).
pub(super) fn q5_0_block_as_q8_0(src: &[u8], dst: &mut [u8]) {
    dst[..2].copy_from_slice(&src[..2]);
    let mut q = [0u8; QK];
    for j in 0..16 {
        q[j] = src[6 + j] & 0x0F;
        q[j + 16] = src[6 + j] >> 4;
    }
    for c in 0..4 {
        let high = FIFTH_BITS[src[2 + c] as usize].to_le_bytes();
        for i in 0..8 {
            q[c * 8 + i] |= high[i];
        }
    }
    for j in 0..QK {
        dst[2 + j] = q[j].wrapping_sub(16);
    }
}

/// [`q5_0_block_as_q8_0`] over a whole row, with AVX2 on the levels that have it.
pub(super) fn q5_0_row_as_q8_0(isa: Isa, src: &[u8], dst: &mut [u8]) {
    let blocks = src
        .chunks_exact(Q5_0_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(Q8_0_BLOCK_BYTES));
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) && isa.available() {
        for (s, d) in blocks {
            // SAFETY: AVX2 is available (checked above); `s` is one 22-byte block and `d`
            // one 34-byte block, as the function reads and writes.
            unsafe { q5_0_block_as_q8_0_avx2(s, d) };
        }
        return;
    }
    let _ = isa;
    for (s, d) in blocks {
        q5_0_block_as_q8_0(s, d);
    }
}

/// AVX2 [`q5_0_block_as_q8_0`]: nibbles split into 32 lanes, each lane tests its fifth
/// bit (byte i/8 of `qh` broadcast, then bit i%8), 16 subtracted.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q5_0_block_as_q8_0_avx2(src: &[u8], dst: &mut [u8]) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() == Q5_0_BLOCK_BYTES && dst.len() == Q8_0_BLOCK_BYTES);
    let p = src.as_ptr();
    std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), 2);
    let low = _mm_set1_epi8(0x0F);
    let qs = _mm_loadu_si128(p.add(6) as *const __m128i);
    let nib = _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(qs, 4), low),
        _mm_and_si128(qs, low),
    );
    let qh = (p.add(2) as *const i32).read_unaligned();
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    let q = _mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
    let q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    _mm256_storeu_si256(dst.as_mut_ptr().add(2) as *mut __m256i, q);
}
