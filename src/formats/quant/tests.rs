use super::*;
use crate::formats::ggml::GgmlType::{self, *};

/// Expectations written by `scripts/quant_fixtures.py` with gguf-py.
const PY_FIXTURES: &[u8] = include_bytes!("../../../tests/fixtures/quant_gguf_py.bin");

struct Case {
    decode: bool,
    ty: GgmlType,
    floats: Vec<f32>,
    bytes: Vec<u8>,
}

fn py_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut p = PY_FIXTURES;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    while !p.is_empty() {
        let (kind, ty, nf, nb) = (
            p[0],
            u32_at(p, 1),
            u32_at(p, 5) as usize,
            u32_at(p, 9) as usize,
        );
        p = &p[13..];
        let floats = p[..nf * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let bytes = p[nf * 4..nf * 4 + nb].to_vec();
        p = &p[nf * 4 + nb..];
        v.push(Case {
            decode: kind == 1,
            ty: GgmlType::from_id(ty).unwrap(),
            floats,
            bytes,
        });
    }
    v
}

#[test]
fn encode_matches_gguf_py() {
    let cases: Vec<_> = py_cases().into_iter().filter(|c| !c.decode).collect();
    assert_eq!(cases.len(), 28);
    for (i, c) in cases.iter().enumerate() {
        let got = encode_row(c.ty, &c.floats).unwrap();
        assert_eq!(
            got, c.bytes,
            "case {i}: {} encode differs from gguf-py",
            c.ty
        );
    }
}

#[test]
fn decode_matches_gguf_py() {
    let cases: Vec<_> = py_cases().into_iter().filter(|c| c.decode).collect();
    assert_eq!(cases.len(), 8);
    for c in &cases {
        let mut got = vec![0f32; c.floats.len()];
        decode_row(c.ty, &c.bytes, &mut got).unwrap();
        for (j, (a, b)) in got.iter().zip(&c.floats).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                "{} element {j}: {a} vs gguf-py {b}",
                c.ty
            );
        }
    }
}

/// Deterministic pseudo-normal values without an RNG dependency.
fn row(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc * scale
        })
        .collect()
}

fn candle_encode<B: candle_core::quantized::k_quants::GgmlType>(x: &[f32]) -> Vec<u8> {
    let mut blocks = vec![B::zeros(); x.len() / B::BLCK_SIZE];
    B::from_float(x, &mut blocks);
    // SAFETY: candle's blocks are #[repr(C)] plain data laid out exactly as ggml's.
    unsafe {
        std::slice::from_raw_parts(
            blocks.as_ptr() as *const u8,
            blocks.len() * std::mem::size_of::<B>(),
        )
    }
    .to_vec()
}

#[test]
fn encode_matches_candle_reference_quantizers() {
    use candle_core::quantized::k_quants as k;
    for seed in 0..20 {
        let x = row(seed, 576, 0.1);
        assert_eq!(
            encode_row(Q4_0, &x).unwrap(),
            candle_encode::<k::BlockQ4_0>(&x)
        );
        assert_eq!(
            encode_row(Q4_1, &x).unwrap(),
            candle_encode::<k::BlockQ4_1>(&x)
        );
        assert_eq!(
            encode_row(Q5_0, &x).unwrap(),
            candle_encode::<k::BlockQ5_0>(&x)
        );
        assert_eq!(
            encode_row(Q5_1, &x).unwrap(),
            candle_encode::<k::BlockQ5_1>(&x)
        );
        assert_eq!(
            encode_row(Q8_0, &x).unwrap(),
            candle_encode::<k::BlockQ8_0>(&x)
        );
    }
}

/// Largest distance between adjacent representable values in any block of a decoded row.
fn max_step(ty: GgmlType, bytes: &[u8]) -> f32 {
    let f = |at: usize, b: &[u8]| f16::from_le_bytes([b[at], b[at + 1]]).to_f32().abs();
    bytes
        .chunks_exact(ty.block_bytes())
        .map(|b| match ty {
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => f(0, b),
            _ => 0.0,
        })
        .fold(0.0, f32::max)
}

#[test]
fn reencoding_a_decoded_row_moves_values_at_most_one_step() {
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
        for seed in 0..50 {
            let x = row(seed + 100, 256, 0.2);
            let b1 = encode_row(ty, &x).unwrap();
            let mut y1 = vec![0f32; 256];
            decode_row(ty, &b1, &mut y1).unwrap();
            let b2 = encode_row(ty, &y1).unwrap();
            let mut y2 = vec![0f32; 256];
            decode_row(ty, &b2, &mut y2).unwrap();
            let step = max_step(ty, &b1).max(max_step(ty, &b2));
            for (a, b) in y1.iter().zip(&y2) {
                assert!((a - b).abs() <= step * 1.001 + 1e-7, "{ty}: {a} -> {b}");
            }
        }
    }
}

#[test]
fn float_types_round_trip() {
    let x = row(3, 64, 4.0);
    let b = encode_row(F32, &x).unwrap();
    let mut y = vec![0f32; 64];
    decode_row(F32, &b, &mut y).unwrap();
    assert_eq!(x, y);
    for ty in [F16, BF16] {
        let b = encode_row(ty, &x).unwrap();
        decode_row(ty, &b, &mut y).unwrap();
        let tol = if ty == F16 { 1e-3 } else { 8e-3 };
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= tol * a.abs().max(1e-2), "{ty}: {a} vs {b}");
        }
    }
}

#[test]
fn errors_are_reported_not_panics() {
    assert!(row_bytes(Q4_1, 33).is_err());
    assert!(encode_row(Q4_1, &[0.0; 31]).is_err());
    assert!(encode_row(Q2_K, &[0.0; 256]).is_err());
    assert!(encode_row(Q4_K, &[0.0; 255]).is_err());
    let e = encode_row(Q8_0, &[f32::NAN; 32]).unwrap_err().to_string();
    assert!(e.contains("element 0"), "{e}");
    let mut out = [0f32; 32];
    assert!(decode_row(Q4_1, &[0u8; 19], &mut out).is_err());
    assert!(decode_row(IQ2_XS, &[0u8; 74], &mut [0f32; 256]).is_err());
}

/// K-quants: decoding what we encode gives back the row within a bound per 32-element
/// sub-block (one step of the sub-block's range at the type's bit width, plus the rounding
/// of the 6/8-bit sub-block scales), and candle's independent decoder reads the same values.
#[test]
fn k_quants_round_trip_and_decode_like_candle() {
    use candle_core::quantized::{GgmlDType, QTensor};
    for (ty, dt, levels, sub) in [
        (Q4_K, GgmlDType::Q4K, 15.0f32, 32),
        (Q5_K, GgmlDType::Q5K, 31.0, 32),
        (Q6_K, GgmlDType::Q6K, 63.0, 16),
    ] {
        let mut worst = 0f32;
        for seed in 0..20 {
            let x = row(seed + 300, 512, 0.3);
            let bytes = encode_row(ty, &x).unwrap();
            assert_eq!(bytes.len(), row_bytes(ty, 512).unwrap());
            let mut y = vec![0f32; 512];
            decode_row(ty, &bytes, &mut y).unwrap();
            for (xb, yb) in x.chunks(sub).zip(y.chunks(sub)) {
                let (lo, hi) = min_max(xb);
                let step = (hi - lo.min(0.0)).max(hi.abs().max(lo.abs())) / levels;
                for (a, b) in xb.iter().zip(yb) {
                    let e = (a - b).abs() / step;
                    worst = worst.max(e);
                    assert!(e <= 1.5, "{ty}: |{a} - {b}| is {e} steps");
                }
            }
            // candle decodes the same bytes (its own quantisation of x) to the same values.
            let t =
                candle_core::Tensor::from_slice(&x, (1, 512), &candle_core::Device::Cpu).unwrap();
            let q = QTensor::quantize(&t, dt).unwrap();
            assert_eq!(q.data().unwrap().as_ref(), bytes.as_slice());
            let theirs: Vec<f32> = q
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(theirs, y, "{ty}: candle decodes differently");
        }
        eprintln!("{ty}: worst error {worst:.3} steps");
    }
}
