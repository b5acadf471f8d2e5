//! Row-wise decoding and encoding of ggml tensor types.
//!
//! Encoders follow llama.cpp's reference quantizers (`quantize_row_*_ref` in
//! `ggml-quants.c`, which `llama-quantize` uses when no importance matrix is given, and which
//! gguf-py's `gguf.quants.quantize` mirrors): per block of 32, max (or min and max) → scale
//! `d` (and min `m`) stored as f16, quants rounded. With these, decoding a row and encoding
//! it again changes a value by at most one quantisation step — usually not at all — so rows
//! that surgery leaves alone could even be re-encoded safely (we copy them instead).
//! K-quants (Q4_K, Q5_K, Q6_K; super-blocks of 256) are encoded with candle's port of
//! llama.cpp's reference k-quantisers (no importance matrix): deterministic, and decoded
//! identically by candle, gguf-py and llama.cpp (our decoder is checked against gguf-py).
//!
//! A row is `ne0` contiguous elements: for a GGUF matrix `[d_ff, d]` (HF shape), `d` values.

mod kquants;

use anyhow::{bail, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::formats::ggml::GgmlType;

/// Bytes of a row of `n` elements of `ty`; error when `n` is not a whole number of blocks.
pub fn row_bytes(ty: GgmlType, n: usize) -> Result<usize> {
    match ty.bytes_for(n as u64) {
        Some(b) => Ok(b as usize),
        None => bail!(
            "{n} elements are not a whole number of {ty} blocks of {}",
            ty.block_size()
        ),
    }
}

/// Whether [`decode_row`] supports `ty`.
pub fn can_decode(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | Q4_K | Q5_K | Q6_K
    )
}

/// Whether [`encode_row`] supports `ty`.
pub fn can_encode(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K
    )
}

/// Decodes one row: `bytes` must be exactly `row_bytes(ty, out.len())` long.
pub fn decode_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    decode_row_inline(ty, bytes, out)
}

/// [`decode_row`] inlined into its caller: a loop compiled for a wider instruction set
/// (`pulp`'s dispatch) then decodes with it too — half-precision scales by F16C, blocks
/// in vectors — where the shared copy runs the baseline code (2x slower in selection).
#[inline(always)]
pub fn decode_row_inline(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let need = row_bytes(ty, out.len())?;
    if bytes.len() != need {
        bail!(
            "{ty} row of {} elements needs {need} bytes, got {}",
            out.len(),
            bytes.len()
        );
    }
    use GgmlType::*;
    let bb = ty.block_bytes();
    let bs = ty.block_size();
    let blocks = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(bs));
    match ty {
        F32 => {
            for (b, y) in blocks {
                y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        F16 => {
            // Through a small aligned buffer so that `half` converts 8 values per instruction
            // (F16C) where the CPU has it; the conversion is exact either way.
            let mut buf = [f16::ZERO; 64];
            for (b, y) in bytes.chunks(128).zip(out.chunks_mut(64)) {
                let h = &mut buf[..y.len()];
                for (v, c) in h.iter_mut().zip(b.chunks_exact(2)) {
                    *v = f16::from_le_bytes([c[0], c[1]]);
                }
                h.convert_to_f32_slice(y);
            }
        }
        BF16 => {
            for (b, y) in blocks {
                y[0] = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        Q4_0 => {
            for (b, y) in blocks {
                let d = half(b, 0);
                let (q, (lo, hi)) = (quants16(b, 2), y.split_at_mut(16));
                for (y, &q) in lo.iter_mut().zip(q) {
                    *y = ((q & 0x0F) as i32 - 8) as f32 * d;
                }
                for (y, &q) in hi.iter_mut().zip(q) {
                    *y = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        Q4_1 => {
            for (b, y) in blocks {
                let (d, m) = (half(b, 0), half(b, 2));
                let (q, (lo, hi)) = (quants16(b, 4), y.split_at_mut(16));
                // Low nibbles, then high ones: two loops the compiler vectorises.
                for (y, &q) in lo.iter_mut().zip(q) {
                    *y = (q & 0x0F) as f32 * d + m;
                }
                for (y, &q) in hi.iter_mut().zip(q) {
                    *y = (q >> 4) as f32 * d + m;
                }
            }
        }
        Q5_0 => {
            for (b, y) in blocks {
                let d = half(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for j in 0..16 {
                    let (lo, hi) = q5_pair(b[6 + j], qh, j);
                    y[j] = (lo as i32 - 16) as f32 * d;
                    y[j + 16] = (hi as i32 - 16) as f32 * d;
                }
            }
        }
        Q5_1 => {
            for (b, y) in blocks {
                let (d, m) = (half(b, 0), half(b, 2));
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                for j in 0..16 {
                    let (lo, hi) = q5_pair(b[8 + j], qh, j);
                    y[j] = lo as f32 * d + m;
                    y[j + 16] = hi as f32 * d + m;
                }
            }
        }
        Q8_0 => {
            for (b, y) in blocks {
                let d = half(b, 0);
                for j in 0..32 {
                    y[j] = b[2 + j] as i8 as f32 * d;
                }
            }
        }
        Q8_1 => {
            for (b, y) in blocks {
                let d = half(b, 0);
                for j in 0..32 {
                    y[j] = b[4 + j] as i8 as f32 * d;
                }
            }
        }
        Q4_K => {
            for (b, y) in blocks {
                kquants::decode_q4_k(b, y);
            }
        }
        Q5_K => {
            for (b, y) in blocks {
                kquants::decode_q5_k(b, y);
            }
        }
        Q6_K => {
            for (b, y) in blocks {
                kquants::decode_q6_k(b, y);
            }
        }
        _ => bail!("decoding {ty} is not supported"),
    }
    Ok(())
}

/// Encodes one row of `src.len()` elements (a whole number of blocks) as `ty`.
/// Non-finite values are an error: they would silently poison a whole block.
pub fn encode_row(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>> {
    let n = row_bytes(ty, src.len())?;
    if let Some(i) = src.iter().position(|x| !x.is_finite()) {
        bail!("cannot encode {ty}: element {i} is {}", src[i]);
    }
    use GgmlType::*;
    let out = if matches!(ty, Q4_K | Q5_K | Q6_K) {
        kquants::encode(ty, src)?
    } else {
        encode_blocks(ty, src, n)?
    };
    debug_assert_eq!(out.len(), n);
    // Every type but F32 stores values or block scales in 16 bits; a finite f32 beyond the
    // 16-bit range becomes inf there (an edit must never write a non-finite value). Below
    // f16's maximum nothing can overflow, so only large rows pay for the decode.
    let max_abs = src.iter().fold(0f32, |m, x| m.max(x.abs()));
    if ty != F32 && max_abs > f16::MAX.to_f32() {
        let mut back = vec![0f32; src.len()];
        decode_row(ty, &out, &mut back)?;
        if let Some(i) = back.iter().position(|x| !x.is_finite()) {
            bail!(
                "cannot encode {ty}: element {i} ({}) would be stored as {} (beyond the type's range)",
                src[i],
                back[i]
            );
        }
    }
    Ok(out)
}

fn encode_blocks(ty: GgmlType, src: &[f32], n: usize) -> Result<Vec<u8>> {
    use GgmlType::*;
    let mut out = Vec::with_capacity(n);
    let bs = ty.block_size();
    for x in src.chunks_exact(bs) {
        match ty {
            F32 => out.extend_from_slice(&x[0].to_le_bytes()),
            F16 => out.extend_from_slice(&f16::from_f32(x[0]).to_le_bytes()),
            BF16 => out.extend_from_slice(&f32_to_bf16(x[0]).to_le_bytes()),
            Q4_0 => encode_q4_0(x, &mut out),
            Q4_1 => encode_q4_1(x, &mut out),
            Q5_0 => encode_q5_0(x, &mut out),
            Q5_1 => encode_q5_1(x, &mut out),
            Q8_0 => encode_q8_0(x, &mut out),
            _ => bail!("encoding {ty} is not supported"),
        }
    }
    Ok(out)
}

/// Decodes a whole tensor of `n_rows` rows of `row_len` elements.
pub fn decode_tensor(ty: GgmlType, bytes: &[u8], row_len: usize) -> Result<Vec<f32>> {
    let rb = row_bytes(ty, row_len)?;
    if rb == 0 || !bytes.len().is_multiple_of(rb) {
        bail!(
            "{} bytes are not whole {ty} rows of {row_len} elements",
            bytes.len()
        );
    }
    let mut out = vec![0f32; bytes.len() / rb * row_len];
    for (b, y) in bytes.chunks_exact(rb).zip(out.chunks_exact_mut(row_len)) {
        decode_row(ty, b, y)?;
    }
    Ok(out)
}

/// The 16 quant bytes of a 4-bit block starting at `at`.
#[inline(always)]
fn quants16(b: &[u8], at: usize) -> &[u8; 16] {
    b[at..at + 16]
        .try_into()
        .expect("a 4-bit block holds 16 quant bytes")
}

#[inline(always)]
fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The 5-bit quants of elements j and j+16 of a Q5 block (low nibbles in `qs`, 5th bits in
/// `qh`: bit j for element j, bit j+16 for element j+16).
fn q5_pair(qs: u8, qh: u32, j: usize) -> (u8, u8) {
    let h0 = (((qh >> j) << 4) & 0x10) as u8;
    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
    ((qs & 0x0F) | h0, (qs >> 4) | h1)
}

fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN kept quiet.
fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

fn inv(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// The element of largest magnitude, sign kept (first one on ties, as llama.cpp).
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

fn encode_q4_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_absmax(x) / -8.0;
    let id = inv(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in 0..16 {
        let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        out.push(q0 | (q1 << 4));
    }
}

fn encode_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inv(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    for j in 0..16 {
        let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
        out.push(q0 | (q1 << 4));
    }
}

/// Packs 32 five-bit quants: low nibbles two per byte, 5th bits into a little-endian u32.
fn pack_q5(q: &[u8; 32], out: &mut Vec<u8>) {
    let mut qh = 0u32;
    for j in 0..16 {
        qh |= (((q[j] & 0x10) >> 4) as u32) << j;
        qh |= (((q[j + 16] & 0x10) >> 4) as u32) << (j + 16);
    }
    out.extend_from_slice(&qh.to_le_bytes());
    for j in 0..16 {
        out.push((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
    }
}

fn encode_q5_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_absmax(x) / -16.0;
    let id = inv(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    let mut q = [0u8; 32];
    for (qj, &v) in q.iter_mut().zip(x) {
        *qj = ((v * id + 16.5) as i8).min(31) as u8;
    }
    pack_q5(&q, out);
}

fn encode_q5_1(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inv(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    let mut q = [0u8; 32];
    for (qj, &v) in q.iter_mut().zip(x) {
        *qj = (((v - min) * id + 0.5) as u8).min(31);
    }
    pack_q5(&q, out);
}

fn encode_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inv(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    for &v in x {
        out.push((v * id).round() as i8 as u8);
    }
}

#[cfg(test)]
mod tests;
