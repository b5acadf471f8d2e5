//! SIMD matmuls for Q4_1, Q8_0 and Q5_0 weights (the default model's matrices, and the
//! q/k/gate/up matrices of the Gemma 3 and Qwen2 Q4_K_M files).
//!
//! candle 0.11 multiplies Q4_1 with a scalar loop (it has SIMD kernels for Q4_0 and Q8_0
//! only), which made the default model's native forward ~5× slower than its Q8_0 copy; and
//! candle (like llama.cpp) rounds every matmul input to 8 bits. These kernels keep the
//! weights exactly as stored and do not round the inputs: a Q4_1 weight is `d·q + m`, so a
//! block's dot product is `d·Σ q_j x_j + m·Σ x_j`; a Q8_0 weight is `d·q`. Both are computed
//! in f32 with the integers widened by AVX2. The result equals a dequantised f32 matmul up
//! to summation order, so the native path and the f32 path give the same hidden states
//! (probe features do not depend on the speed setting). Rows of the output are split
//! across threads. Without AVX2 a scalar loop gives the same result. A Q5_0 weight is
//! `d·(q − 16)` with `q − 16` in −16..15: each weight row is unpacked to the Q8_0 layout
//! (same `d`, the integers as i8), which holds exactly the same values, and multiplied by
//! the Q8_0 kernel — candle multiplies Q5_0 with a scalar loop.

use half::f16;
use rayon::prelude::*;

mod q5_0;
use q5_0::{q5_0_block_as_q8_0, q5_0_row_as_q8_0};

/// Bytes of one Q4_1 block: f16 scale, f16 minimum, 16 bytes of nibbles.
pub const Q4_1_BLOCK_BYTES: usize = 20;
/// Bytes of one Q8_0 block: f16 scale, 32 signed bytes.
pub const Q8_0_BLOCK_BYTES: usize = 34;
/// Bytes of one Q5_0 block: f16 scale, 32 fifth bits, 16 bytes of nibbles.
pub const Q5_0_BLOCK_BYTES: usize = 22;
const QK: usize = 32;

/// The block encodings these kernels multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    /// 4-bit with scale and minimum.
    Q4_1,
    /// 8-bit with scale.
    Q8_0,
    /// 5-bit with scale (offset 16).
    Q5_0,
}

impl BlockType {
    fn block_bytes(self) -> usize {
        match self {
            BlockType::Q4_1 => Q4_1_BLOCK_BYTES,
            BlockType::Q8_0 => Q8_0_BLOCK_BYTES,
            BlockType::Q5_0 => Q5_0_BLOCK_BYTES,
        }
    }
}

/// A quantised matrix `[n, k]` in its GGUF encoding (row-major blocks).
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    /// Block encoding.
    pub ty: BlockType,
    /// Output rows.
    pub n: usize,
    /// Input width (a multiple of 32).
    pub k: usize,
    data: Vec<u8>,
}

impl QuantMatrix {
    /// Wraps raw GGUF bytes of a `[n, k]` tensor.
    pub fn new(ty: BlockType, n: usize, k: usize, data: Vec<u8>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            k.is_multiple_of(QK),
            "{ty:?} row width {k} not a multiple of 32"
        );
        let need = n * k / QK * ty.block_bytes();
        anyhow::ensure!(
            data.len() == need,
            "{ty:?} tensor of {n}×{k} needs {need} bytes, got {}",
            data.len()
        );
        Ok(QuantMatrix { ty, n, k, data })
    }

    fn row_bytes(&self) -> usize {
        self.k / QK * self.ty.block_bytes()
    }

    /// Row `r` dequantised into `out` (embedding lookups read rows this way, so a quantised
    /// embedding table is never held in f32).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let w = &self.data[r * rb..(r + 1) * rb];
        for (b, blk) in w.chunks_exact(self.ty.block_bytes()).enumerate() {
            let o = &mut out[b * QK..(b + 1) * QK];
            let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            match self.ty {
                BlockType::Q4_1 => {
                    let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                    for j in 0..16 {
                        o[j] = d * (blk[4 + j] & 0x0F) as f32 + m;
                        o[j + 16] = d * (blk[4 + j] >> 4) as f32 + m;
                    }
                }
                BlockType::Q8_0 => {
                    for j in 0..QK {
                        o[j] = d * blk[2 + j] as i8 as f32;
                    }
                }
                BlockType::Q5_0 => {
                    let mut q8 = [0u8; Q8_0_BLOCK_BYTES];
                    q5_0_block_as_q8_0(blk, &mut q8);
                    for j in 0..QK {
                        o[j] = d * q8[2 + j] as i8 as f32;
                    }
                }
            }
        }
    }

    /// The whole matrix dequantised, row-major `[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        out.par_chunks_mut(self.k)
            .enumerate()
            .for_each(|(r, row)| self.dequantize_row(r, row));
        out
    }

    /// `y = x Wᵀ` for `x` row-major `[m, k]`; returns `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let k = self.k;
        // Σ x over each block, once per input row (the `m·Σ x` term of every weight row).
        let block_sums: Vec<f32> = x[..m * k]
            .chunks_exact(QK)
            .map(|b| b.iter().sum())
            .collect();
        let row_bytes = self.row_bytes();
        let ty = self.ty;
        // Parallel over weight rows (each read once from memory for all inputs), in chunks
        // large enough that the thread hand-off is negligible.
        let chunk = 64;
        let mut cols: Vec<f32> = vec![0f32; self.n * m];
        cols.par_chunks_mut(chunk * m)
            .enumerate()
            .for_each(|(c, dst)| {
                let mut unpacked = vec![0u8; k / QK * Q8_0_BLOCK_BYTES];
                for (j, d) in dst.chunks_mut(m).enumerate() {
                    let r = c * chunk + j;
                    let mut w = &self.data[r * row_bytes..(r + 1) * row_bytes];
                    if ty == BlockType::Q5_0 {
                        q5_0_row_as_q8_0(w, &mut unpacked);
                        w = &unpacked;
                    }
                    for (i, out) in d.iter_mut().enumerate() {
                        let xs = &x[i * k..(i + 1) * k];
                        let sums = &block_sums[i * k / QK..(i + 1) * k / QK];
                        *out = match ty {
                            BlockType::Q4_1 => dot(w, xs, sums),
                            BlockType::Q8_0 | BlockType::Q5_0 => dot_q8_0(w, xs),
                        };
                    }
                }
            });
        let mut out = vec![0f32; m * self.n];
        for r in 0..self.n {
            for i in 0..m {
                out[i * self.n + r] = cols[r * m + i];
            }
        }
        out
    }
}

fn dot(w: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("f16c") {
            // SAFETY: the CPU supports AVX-512F and F16C (checked above); slices are sized
            // by construction.
            return unsafe { dot_avx512(w, x, sums) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked above); slices are sized by
            // construction (one 20-byte block per 32 inputs).
            return unsafe { dot_avx2(w, x, sums) };
        }
    }
    dot_scalar(w, x, sums)
}

fn dot_q8_0(w: &[u8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("f16c") {
            // SAFETY: as in `dot`.
            return unsafe { dot_q8_0_avx512(w, x) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as in `dot`.
            return unsafe { dot_q8_0_avx2(w, x) };
        }
    }
    dot_q8_0_scalar(w, x)
}

fn dot_q8_0_scalar(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let xs = &x[b * QK..(b + 1) * QK];
        let qx: f32 = (0..QK).map(|j| blk[2 + j] as i8 as f32 * xs[j]).sum();
        acc += d * qx;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
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
#[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "x86_64")]
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

fn block_scales(b: &[u8]) -> (f32, f32) {
    (
        f16::from_le_bytes([b[0], b[1]]).to_f32(),
        f16::from_le_bytes([b[2], b[3]]).to_f32(),
    )
}

fn dot_scalar(w: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(Q4_1_BLOCK_BYTES).enumerate() {
        let (d, m) = block_scales(blk);
        let xs = &x[b * QK..(b + 1) * QK];
        let mut qx = 0f32;
        for j in 0..16 {
            qx += (blk[4 + j] & 0x0F) as f32 * xs[j];
            qx += (blk[4 + j] >> 4) as f32 * xs[j + 16];
        }
        acc += d * qx + m * sums[b];
    }
    acc
}

#[cfg(target_arch = "x86_64")]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes rows with llama.cpp's reference Q4_1 rule (min/max per block).
    fn encode(row: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for block in row.chunks_exact(QK) {
            let min = block.iter().copied().fold(f32::INFINITY, f32::min);
            let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend(f16::from_f32(d).to_le_bytes());
            out.extend(f16::from_f32(min).to_le_bytes());
            for j in 0..16 {
                let a = (((block[j] - min) * id + 0.5) as u8).min(15);
                let b = (((block[j + 16] - min) * id + 0.5) as u8).min(15);
                out.push(a | (b << 4));
            }
        }
        out
    }

    fn decode(data: &[u8], k: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for blk in data.chunks_exact(Q4_1_BLOCK_BYTES) {
            let (d, m) = block_scales(blk);
            let mut vals = [0f32; QK];
            for j in 0..16 {
                vals[j] = d * (blk[4 + j] & 0x0F) as f32 + m;
                vals[j + 16] = d * (blk[4 + j] >> 4) as f32 + m;
            }
            out.extend(vals);
        }
        assert_eq!(out.len() % k, 0);
        out
    }

    #[test]
    fn equals_the_dequantised_f32_matmul() {
        let (n, k, m) = (70, 96, 3);
        let mut state = 1u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..m * k).map(|_| rnd() * 3.0).collect();
        let data: Vec<u8> = w.chunks_exact(k).flat_map(encode).collect();
        let mat = QuantMatrix::new(BlockType::Q4_1, n, k, data.clone()).unwrap();
        let got = mat.matmul(&x, m);
        let wd = decode(&data, k);
        for i in 0..m {
            for r in 0..n {
                let exact: f32 = (0..k).map(|j| wd[r * k + j] * x[i * k + j]).sum();
                let g = got[i * n + r];
                // f32 throughout: only the summation order differs from the direct sum.
                assert!(
                    (g - exact).abs() <= 1e-4 * exact.abs().max(1.0),
                    "{g} vs {exact}"
                );
                let xs = &x[i * k..(i + 1) * k];
                let sums: Vec<f32> = xs.chunks_exact(QK).map(|b| b.iter().sum()).collect();
                let wr = &data[r * k / QK * 20..(r + 1) * k / QK * 20];
                let scalar = dot_scalar(wr, xs, &sums);
                // Every SIMD variant this CPU has, not only the one `dot` dispatches to.
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    let v = unsafe { dot_avx2(wr, xs, &sums) };
                    assert!(
                        (v - scalar).abs() <= 1e-4 * scalar.abs().max(1.0),
                        "avx2 {v} vs {scalar}"
                    );
                }
                assert!(
                    (g - scalar).abs() <= 1e-4 * scalar.abs().max(1.0),
                    "simd {g} vs scalar {scalar}"
                );
            }
        }
    }

    #[test]
    fn q8_0_equals_the_dequantised_f32_matmul() {
        let (n, k, m) = (33, 64, 2);
        let mut data = Vec::new();
        for r in 0..n {
            for b in 0..k / QK {
                data.extend(f16::from_f32(0.01 * (r + b + 1) as f32).to_le_bytes());
                data.extend((0..QK).map(|j| ((r * 7 + j * 13 + b) % 255) as u8));
            }
        }
        let mat = QuantMatrix::new(BlockType::Q8_0, n, k, data.clone()).unwrap();
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let xs: Vec<f32> = (0..k).map(|i| (i as f32 * 0.11).cos()).collect();
            for r in 0..n {
                let wr = &data[r * k / QK * 34..(r + 1) * k / QK * 34];
                let (a, b) = (unsafe { dot_q8_0_avx2(wr, &xs) }, dot_q8_0_scalar(wr, &xs));
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "avx2 {a} vs scalar {b}"
                );
            }
        }
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let got = mat.matmul(&x, m);
        let mut row = vec![0f32; k];
        for r in 0..n {
            mat.dequantize_row(r, &mut row);
            for i in 0..m {
                let exact: f32 = (0..k).map(|j| row[j] * x[i * k + j]).sum();
                let g = got[i * n + r];
                assert!(
                    (g - exact).abs() <= 1e-4 * exact.abs().max(1.0),
                    "{g} vs {exact}"
                );
            }
        }
    }

    /// Q5_0 rows (encoded by `formats::quant`, decoded by its independent decoder) give the
    /// dequantised f32 products.
    #[test]
    fn q5_0_equals_the_dequantised_f32_matmul() {
        use crate::formats::{ggml::GgmlType, quant};
        let (n, k, m) = (67, 96, 3);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3)
            .collect();
        let data: Vec<u8> = w
            .chunks_exact(k)
            .flat_map(|r| quant::encode_row(GgmlType::Q5_0, r).unwrap())
            .collect();
        let wd = quant::decode_tensor(GgmlType::Q5_0, &data, k).unwrap();
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            for blk in data.chunks_exact(Q5_0_BLOCK_BYTES) {
                let (mut a, mut b) = ([0u8; Q8_0_BLOCK_BYTES], [0u8; Q8_0_BLOCK_BYTES]);
                unsafe { q5_0::q5_0_block_as_q8_0_avx2(blk, &mut a) };
                q5_0_block_as_q8_0(blk, &mut b);
                assert_eq!(a, b, "avx2 and scalar unpacking differ");
            }
        }
        let mat = QuantMatrix::new(BlockType::Q5_0, n, k, data).unwrap();
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let got = mat.matmul(&x, m);
        let mut row = vec![0f32; k];
        for r in 0..n {
            mat.dequantize_row(r, &mut row);
            assert_eq!(row, wd[r * k..(r + 1) * k], "row {r} decodes differently");
            for i in 0..m {
                let exact: f32 = (0..k).map(|j| row[j] * x[i * k + j]).sum();
                let g = got[i * n + r];
                assert!(
                    (g - exact).abs() <= 1e-4 * exact.abs().max(1.0),
                    "{g} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn rejects_wrong_sizes() {
        assert!(QuantMatrix::new(BlockType::Q4_1, 2, 30, vec![0; 40]).is_err());
        assert!(QuantMatrix::new(BlockType::Q4_1, 2, 32, vec![0; 39]).is_err());
        assert!(QuantMatrix::new(BlockType::Q8_0, 2, 32, vec![0; 67]).is_err());
    }
}
