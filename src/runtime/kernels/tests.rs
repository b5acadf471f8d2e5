//! Every kernel on every instruction-set path this CPU can run, against the dequantised
//! f32 weights of `formats::quant`'s independent decoder, with the reference sums in f64.
//!
//! Tolerances: the exact path differs from the reference only by f32 rounding in its
//! summation, bounded by `k·2⁻²³·Σ|w_j x_j|` (twice the textbook `k·u` bound of a
//! k-term f32 sum). The 8-bit-input path is compared with the same bound against a
//! reference that rounds the inputs as llama.cpp's Q8_0/Q8_1 do (per block of 32:
//! `d = max|x|/127`, `q = round(x/d)`), written out again here; and against the exact
//! product within the rounding bound `Σ_blocks d/2 · Σ|w_j|` (each input moves by at
//! most half a step).

use super::int8::quantize_input;
use super::isa::{self, Isa};
use super::*;
use crate::formats::{ggml::GgmlType, quant};
use half::f16;

fn rng(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }
}

fn ggml(ty: BlockType) -> GgmlType {
    match ty {
        BlockType::Q4_1 => GgmlType::Q4_1,
        BlockType::Q8_0 => GgmlType::Q8_0,
        BlockType::Q5_0 => GgmlType::Q5_0,
    }
}

/// A random `[n, k]` matrix of `ty` (Q8_0 as raw random bytes, so that −128 occurs), its
/// bytes, and its values decoded independently.
fn matrix(ty: BlockType, n: usize, k: usize, seed: u64) -> (QuantMatrix, Vec<f32>) {
    let mut r = rng(seed);
    let data: Vec<u8> = if ty == BlockType::Q8_0 {
        let mut bytes = Vec::new();
        for _ in 0..n * k / QK {
            bytes.extend(f16::from_f32(0.01 + 0.02 * (r() + 0.5)).to_le_bytes());
            bytes.extend((0..QK).map(|_| ((r() + 0.5) * 256.0) as u8));
        }
        bytes
    } else {
        let w: Vec<f32> = (0..n * k).map(|_| r() * 0.4).collect();
        w.chunks_exact(k)
            .flat_map(|row| quant::encode_row(ggml(ty), row).unwrap())
            .collect()
    };
    let values = quant::decode_tensor(ggml(ty), &data, k).unwrap();
    (QuantMatrix::new(ty, n, k, data).unwrap(), values)
}

/// Inputs with blocks of very different magnitudes (as hidden states have).
fn inputs(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..m * k)
        .map(|i| r() * if (i / QK).is_multiple_of(3) { 8.0 } else { 0.5 })
        .collect()
}

/// The reference product of one weight row and one input row: (Σ w x in f64, Σ |w x|).
fn reference(w: &[f32], x: &[f32]) -> (f64, f64) {
    w.iter().zip(x).fold((0.0, 0.0), |(s, a), (&w, &x)| {
        let p = w as f64 * x as f64;
        (s + p, a + p.abs())
    })
}

fn summation_bound(k: usize, abs: f64) -> f64 {
    k as f64 * f64::powi(2.0, -23) * abs + 1e-30
}

/// Asserts that `got` (`[m, n]`) is the product of the reference weights `wd` (`[n, k]`)
/// and the inputs `x` (`[m, k]`) within the summation bound; `what` names the case.
fn assert_product(
    got: &[f32],
    wd: &[f32],
    x: &[f32],
    (n, k, m): (usize, usize, usize),
    what: &str,
) {
    for i in 0..m {
        for r in 0..n {
            let (want, abs) = reference(&wd[r * k..(r + 1) * k], &x[i * k..(i + 1) * k]);
            let g = got[i * n + r] as f64;
            assert!(
                (g - want).abs() <= summation_bound(k, abs),
                "{what} n={n} k={k} m={m} row {r} input {i}: {g} vs {want}"
            );
        }
    }
}

/// llama.cpp's input rounding, written out independently of `int8::quantize_input`.
fn rounded_like_llamacpp(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut out = Vec::with_capacity(x.len());
    let mut steps = Vec::new();
    for b in x.chunks_exact(QK) {
        let amax = b.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend(b.iter().map(|v| (v * id).round() * d));
        steps.push(d);
    }
    (out, steps)
}

/// Shapes of one row (the team's chunks: 70 rows make 5 of at least 16), a few rows, a
/// batch, and a large matrix of one row (many chunks).
const SHAPES: [(usize, usize, usize); 4] = [(70, 96, 1), (37, 256, 3), (9, 64, 15), (2100, 512, 1)];
const TYPES: [BlockType; 3] = [BlockType::Q4_1, BlockType::Q8_0, BlockType::Q5_0];

#[test]
fn exact_path_equals_the_dequantised_matmul_on_every_isa() {
    let isas = Isa::all_available();
    eprintln!(
        "exact kernels tested on: {isas:?} (active: {:?})",
        isa::active()
    );
    for ty in TYPES {
        for (s, &(n, k, m)) in SHAPES.iter().enumerate() {
            let (mat, wd) = matrix(ty, n, k, 1 + s as u64);
            let x = inputs(m, k, 7 + s as u64);
            // Each level through its default kernels, and through the generic source.
            let runs = isas.iter().flat_map(|&i| [(i, true), (i, false)]);
            for (isa, intrinsics) in runs {
                let got = mat.matmul_with(isa, &x, m, intrinsics);
                let what = format!("{ty:?} {isa:?} (intrinsics {intrinsics})");
                assert_product(&got, &wd, &x, (n, k, m), &what);
            }
        }
    }
}

/// The batched path on every level, for batch sizes around its tile width (4) and its
/// group of rows (4), against the same reference; and a row's products do not depend on
/// the other rows of the batch (bit for bit).
#[test]
fn batched_path_equals_the_dequantised_matmul_on_every_isa() {
    let isas = Isa::all_available();
    for ty in TYPES {
        for (s, &(n, k, m)) in [(70, 96, 3), (37, 256, 5), (9, 64, 16), (13, 32, 33)]
            .iter()
            .enumerate()
        {
            let (mat, wd) = matrix(ty, n, k, 21 + s as u64);
            let x = inputs(m, k, 27 + s as u64);
            for &isa in &isas {
                let got = mat.matmul_batched(isa, &x, m);
                assert_product(&got, &wd, &x, (n, k, m), &format!("{ty:?} {isa:?} batched"));
                // The last input alone (padded with three zero rows) gives the same bits.
                let last = mat.matmul_batched(isa, &x[(m - 1) * k..], 1);
                assert_eq!(last[..], got[(m - 1) * n..], "{ty:?} {isa:?} m={m}");
            }
        }
    }
}

/// The batched path for the ggml types only `formats::quant` decodes (the K-quants of the
/// Gemma 3 and Qwen2 files), against that decoder's values summed in f64.
#[test]
fn batched_path_takes_k_quants() {
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q5_1,
    ] {
        let (n, k, m) = (11, 512, 6);
        let mut r = rng(31);
        let w: Vec<f32> = (0..n * k).map(|_| r() * 0.3).collect();
        let data: Vec<u8> = w
            .chunks_exact(k)
            .flat_map(|row| quant::encode_row(ty, row).unwrap())
            .collect();
        let wd = quant::decode_tensor(ty, &data, k).unwrap();
        let x = inputs(m, k, 33);
        let got = matmul_rows(ty, &data, n, k, &x, m).unwrap();
        assert_product(&got, &wd, &x, (n, k, m), &format!("{ty} batched"));
    }
    // No input rows give an empty product, not a panic.
    assert!(matmul_rows(GgmlType::Q4_K, &[0; 144], 1, 256, &[], 0)
        .unwrap()
        .is_empty());
    let (mat, _) = matrix(BlockType::Q4_1, 3, 64, 2);
    assert!(mat.matmul(&[], 0).is_empty());
    // Sizes that do not fit are refused, not read out of bounds.
    assert!(matmul_rows(GgmlType::Q4_K, &[0; 100], 2, 256, &[0.0; 256], 1).is_err());
    assert!(matmul_rows(GgmlType::Q4_K, &[0; 144], 1, 256, &[0.0; 100], 1).is_err());
}

#[test]
fn int8_path_equals_the_rounded_input_reference_on_every_isa() {
    let isas = Isa::all_available();
    eprintln!("8-bit-input kernels tested on: {isas:?} (VNNI: {})", {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    });
    for ty in TYPES {
        for (s, &(n, k, m)) in SHAPES.iter().enumerate() {
            let (mat, wd) = matrix(ty, n, k, 11 + s as u64);
            let mat = mat.with_inputs(Inputs::Int8);
            let x = inputs(m, k, 17 + s as u64);
            for &isa in &isas {
                let got = mat.matmul_on(isa, &x, m);
                for i in 0..m {
                    let xi = &x[i * k..(i + 1) * k];
                    let (xr, steps) = rounded_like_llamacpp(xi);
                    for r in 0..n {
                        let w = &wd[r * k..(r + 1) * k];
                        let g = got[i * n + r] as f64;
                        let (want, abs) = reference(w, &xr);
                        assert!(
                            (g - want).abs() <= summation_bound(k, abs),
                            "{ty:?} {isa:?} n={n} k={k} row {r} input {i}: {g} vs rounded {want}"
                        );
                        let (exact, abs_exact) = reference(w, xi);
                        let rounding: f64 = w
                            .chunks_exact(QK)
                            .zip(&steps)
                            .map(|(wb, &d)| {
                                d as f64 / 2.0 * wb.iter().map(|v| v.abs() as f64).sum::<f64>()
                            })
                            .sum();
                        assert!(
                            (g - exact).abs() <= rounding + summation_bound(k, abs + abs_exact),
                            "{ty:?} {isa:?} row {r}: {g} vs exact {exact}, bound {rounding}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn inputs_round_like_llamacpp() {
    let x = inputs(1, 128, 3);
    let q = quantize_input(&x);
    let (xr, steps) = rounded_like_llamacpp(&x);
    for (b, &d) in steps.iter().enumerate() {
        assert_eq!(q.d[b], d);
        let sum: i32 = q.q[b * QK..(b + 1) * QK].iter().map(|&v| v as i32).sum();
        assert_eq!(q.s[b], d * sum as f32);
    }
    for (j, v) in xr.iter().enumerate() {
        assert_eq!(q.q[j] as f32 * q.d[j / QK], *v, "element {j}");
    }
    // An all-zero block has scale 0 and zero codes, not NaN.
    let z = quantize_input(&[0.0; QK]);
    assert_eq!((z.d[0], z.q.iter().any(|&v| v != 0)), (0.0, false));
}

/// Ties and near-ties round half away from zero, as `roundf` does: a block whose largest
/// magnitude is 127 has scale 1, so each value is rounded as written.
#[test]
fn input_rounding_breaks_ties_away_from_zero() {
    let specials = [
        127.0,
        0.5,
        -0.5,
        2.5,
        -2.5,
        126.5,
        -126.5,
        1.5,
        -1.5,
        0.49999997,
        -0.49999997,
        1.4999999,
        -1.4999999,
        0.0,
        -0.0,
        3.0,
        f32::MIN_POSITIVE,
        -100.25,
        99.75,
    ];
    let mut x = [0f32; QK];
    x[..specials.len()].copy_from_slice(&specials);
    let q = quantize_input(&x);
    assert_eq!(q.d[0], 1.0);
    for (j, v) in x.iter().enumerate() {
        assert_eq!(q.q[j] as f32, v.round(), "{v}");
    }
    let sum: f32 = x.iter().map(|v| v.round()).sum();
    assert_eq!(q.s[0], sum);
}

/// A NaN or infinite input gives the codes `roundf` would (NaN codes as 0), not garbage.
#[test]
fn input_rounding_of_non_finite_values_matches_roundf() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = inputs(1, QK, 5);
        x[3] = bad;
        let q = quantize_input(&x);
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (j, v) in x.iter().enumerate() {
            assert_eq!(q.q[j], (v * id).round() as i8, "{bad} at {j}");
        }
    }
}

#[test]
fn half_conversion_matches_the_half_crate_for_every_value() {
    for h in 0..=u16::MAX {
        let want = f16::from_bits(h).to_f32();
        let got = half_to_f32(h);
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{h:#06x}: {got} vs {want}"
        );
    }
}

/// `SCALPEL_ISA` is honoured (so the per-ISA loop of `scripts/test.sh` really runs each
/// path), and an unknown or unavailable level is refused.
#[test]
fn forced_isa_is_honoured() {
    match std::env::var(isa::ENV) {
        Ok(v) if !v.trim().is_empty() => {
            assert_eq!(isa::active(), Isa::parse(&v).unwrap());
            eprintln!("running on the forced level {}", isa::label());
        }
        _ => assert_eq!(isa::active(), Isa::detected()),
    }
    assert!(Isa::parse("avx3").is_err());
    assert!(Isa::all_available().contains(&Isa::Scalar));
}

#[test]
fn q5_0_unpacking_is_the_same_on_every_isa() {
    let (mat, _) = matrix(BlockType::Q5_0, 3, 256, 5);
    let rb = mat.row_bytes();
    for r in 0..mat.n {
        let src = &mat.data[r * rb..(r + 1) * rb];
        let mut scalar = vec![0u8; 256 / QK * Q8_0_BLOCK_BYTES];
        q5_0_row_as_q8_0(Isa::Scalar, src, &mut scalar);
        for &isa in &Isa::all_available() {
            let mut v = vec![0u8; scalar.len()];
            q5_0_row_as_q8_0(isa, src, &mut v);
            assert_eq!(v, scalar, "{isa:?}");
        }
    }
}

#[test]
fn dequantize_row_matches_the_independent_decoder() {
    for ty in TYPES {
        let (mat, wd) = matrix(ty, 5, 64, 9);
        let mut row = vec![0f32; 64];
        for r in 0..5 {
            mat.dequantize_row(r, &mut row);
            assert_eq!(row, wd[r * 64..(r + 1) * 64], "{ty:?} row {r}");
        }
    }
}

#[test]
fn rejects_wrong_sizes() {
    assert!(QuantMatrix::new(BlockType::Q4_1, 2, 30, vec![0; 40]).is_err());
    assert!(QuantMatrix::new(BlockType::Q4_1, 2, 32, vec![0; 39]).is_err());
    assert!(QuantMatrix::new(BlockType::Q8_0, 2, 32, vec![0; 67]).is_err());
}

/// The batched path's column blocks cover every column of the output exactly once, each
/// writes only its own columns, and a write outside a block panics instead of landing in
/// another block's columns.
#[test]
fn column_blocks_partition_the_output() {
    let (m, n) = (3, 10);
    let mut out = vec![0f32; m * n];
    let blocks = batched::column_blocks(&mut out, m, n, 4);
    let spans: Vec<(usize, usize)> = blocks.iter().map(|b| (b.first(), b.width())).collect();
    assert_eq!(spans, [(0, 4), (4, 4), (8, 2)]);
    for mut b in blocks {
        for row in 0..m {
            for col in 0..b.width() {
                b.set(row, col, (row * 100 + b.first() + col) as f32);
            }
        }
    }
    let want: Vec<f32> = (0..m * n).map(|e| ((e / n) * 100 + e % n) as f32).collect();
    assert_eq!(out, want);
    let mut out = vec![0f32; m * n];
    let mut blocks = batched::column_blocks(&mut out, m, n, 4);
    let outside =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| blocks[2].set(0, 2, 1.0)));
    assert!(outside.is_err());
    let below = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| blocks[0].set(m, 0, 1.0)));
    assert!(below.is_err());
    drop(blocks);
    assert!(out.iter().all(|&v| v == 0.0));
}
