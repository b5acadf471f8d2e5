//! Decoding of llama.cpp's k-quant super-blocks (256 elements), as in `dequantize_row_q*_K`,
//! and encoding through candle's reference k-quantisers.

use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

use crate::formats::ggml::GgmlType;

/// Encodes whole super-blocks of `ty` (Q4_K, Q5_K or Q6_K). candle's `from_float` for
/// these types is a port of llama.cpp's `quantize_row_q*_K_ref`; the bytes are its
/// `#[repr(C)]` blocks, which are the GGUF layout.
pub(super) fn encode(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>> {
    let dtype = match ty {
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        _ => bail!("{ty} is not a k-quant"),
    };
    let t = candle_core::Tensor::from_slice(src, (1, src.len()), &candle_core::Device::Cpu)?;
    let q = QTensor::quantize(&t, dtype)?;
    Ok(q.data()?.into_owned())
}

fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// 6-bit scale and min number `j` (0..8) packed in the 12 `scales` bytes (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K block (144 bytes): d, dmin (f16), scales[12], qs[128].
pub(super) fn decode_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (chunk, k) in (0..256).step_by(64).enumerate() {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            y[k + l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[k + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// Q5_K block (176 bytes): d, dmin (f16), scales[12], qh[32], qs[128].
pub(super) fn decode_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    let (mut u1, mut u2) = (1u8, 2u8);
    for (chunk, k) in (0..256).step_by(64).enumerate() {
        let ql = &qs[chunk * 32..chunk * 32 + 32];
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[k + l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
            y[k + 32 + l] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
        u1 <<= 2;
        u2 <<= 2;
    }
}

/// Q6_K block (210 bytes): ql[128], qh[64], scales[16] (i8), d (f16).
pub(super) fn decode_q6_k(b: &[u8], y: &mut [f32]) {
    let d = half(b, 208);
    for half_i in 0..2 {
        let ql = &b[half_i * 64..half_i * 64 + 64];
        let qh = &b[128 + half_i * 32..128 + half_i * 32 + 32];
        let sc = &b[192 + half_i * 8..192 + half_i * 8 + 8];
        let y = &mut y[half_i * 128..half_i * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
