//! SIMD matmuls for Q4_1, Q8_0 and Q5_0 weights (the default model's matrices, and the
//! q/k/gate/up matrices of the Gemma 3 and Qwen2 Q4_K_M files) — the runtime under every
//! step of the paper (probe collection, generation for evaluation, perplexity).
//!
//! candle 0.11 multiplies Q4_1 with a scalar loop and rounds every matmul input to 8 bits.
//! The default path here keeps the weights exactly as stored and does not round the inputs
//! ([`Inputs::Exact`]): the result equals a dequantised f32 matmul up to summation order,
//! so the native and f32 paths give the same hidden states. Q5_0 rows are rewritten as the
//! Q8_0 rows of the same values ([`q5_0`]) and multiplied by the Q8_0 kernel.
//!
//! - [`isa`]: the instruction set, detected once or forced with `SCALPEL_ISA`;
//! - [`q4_1`], [`q8_0`]: the exact kernels, one generic source over `pulp` for scalar,
//!   AVX2, AVX-512 and NEON, two accumulators per row;
//! - [`batched`]: three or more input rows (batched generation): each weight row decoded
//!   once per call and multiplied with every input in register tiles, exact;
//! - [`int8`]: the opt-in path that rounds inputs to 8 bits per block and multiplies with
//!   integer dot products (AVX2, AVX-512 VNNI), as llama.cpp does; not bit-exact.
//!
//! Rows of the output are split across threads in a few chunks per thread: the batched
//! products on rayon's pool, the single-row products of one token on [`team`], whose
//! helpers spin between products instead of sleeping.

use rayon::prelude::*;

mod batched;
pub use batched::Rows;
pub mod int8;
pub mod isa;
mod q4_1;
mod q5_0;
mod q8_0;
mod team;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86_exact;

use crate::formats::{ggml::GgmlType, quant};
use isa::Isa;
use q5_0::q5_0_row_as_q8_0;
use std::sync::Mutex;

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

/// How the inputs of a matrix–vector product are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inputs {
    /// As f32: the product equals the dequantised f32 one up to summation order.
    #[default]
    Exact,
    /// Rounded to 8 bits per block of 32 and multiplied with integer dot products (see
    /// [`int8`]); faster, not bit-exact.
    Int8,
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
    /// How inputs are treated in [`QuantMatrix::matmul`].
    pub inputs: Inputs,
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
        Ok(QuantMatrix {
            ty,
            n,
            k,
            inputs: Inputs::Exact,
            data,
        })
    }

    /// The same matrix with inputs treated as `inputs`.
    pub fn with_inputs(mut self, inputs: Inputs) -> Self {
        self.inputs = inputs;
        self
    }

    fn row_bytes(&self) -> usize {
        self.k / QK * self.ty.block_bytes()
    }

    /// Row `r` dequantised into `out` (embedding lookups read rows this way, so a quantised
    /// embedding table is never held in f32): the batched path's decoder, on the active
    /// instruction set.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        isa::dispatch(
            isa::active(),
            batched::DecodeRow {
                ty: self.ty,
                row: &self.data[r * rb..(r + 1) * rb],
                out,
            },
        )
    }

    /// The whole matrix dequantised, row-major `[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        out.par_chunks_mut(self.k)
            .enumerate()
            .for_each(|(r, row)| self.dequantize_row(r, row));
        out
    }

    /// `y = x Wᵀ` for `x` row-major `[m, k]`; returns `[m, n]`, on the active
    /// instruction set.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_on(isa::active(), x, m)
    }

    /// [`QuantMatrix::matmul`] on a given instruction set (a level the CPU lacks runs the
    /// portable code), so that tests can compare every path in one process.
    pub fn matmul_on(&self, isa: Isa, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(isa, x, m, true)
    }

    /// The product on `isa`; `intrinsics = false` runs the generic exact source even where
    /// hand-written x86 kernels exist, so that tests exercise its AVX2 and AVX-512
    /// instantiations (the closest this machine gets to the NEON one).
    fn matmul_with(&self, isa: Isa, x: &[f32], m: usize, intrinsics: bool) -> Vec<f32> {
        if m == 0 || self.n == 0 {
            return Vec::new();
        }
        if m >= BATCHED_MIN_ROWS && (self.inputs == Inputs::Exact || m >= INT8_MAX_ROWS) {
            return self.matmul_batched(isa, x, m);
        }
        let k = self.k;
        let x = &x[..m * k];
        // A few chunks per thread: even shares for the small matrices of one token, and
        // the thread hand-off negligible against the work of a chunk.
        let threads = team::width();
        let exact = self.inputs == Inputs::Exact;
        let p = RowProduct {
            mat: self,
            isa,
            intrinsics,
            x,
            m,
            chunk: self.n.div_ceil(threads * 4).next_multiple_of(4).max(16),
            // Exact: Σ x over each block, once per input row (Q4_1's `m·Σ x` term).
            sums: if exact {
                x.chunks_exact(QK).map(|b| b.iter().sum()).collect()
            } else {
                Vec::new()
            },
            // Int8: the inputs rounded to 8 bits, once per input row.
            quantised: if exact {
                Vec::new()
            } else {
                x.chunks_exact(k).map(int8::quantize_input).collect()
            },
        };
        let mut cols: Vec<f32> = vec![0f32; self.n * m];
        // Every chunk on the team, even for the smallest matrices of one token: its helpers
        // are awake between products, so a hand-off costs a cache line, not a futex.
        let parts: Vec<Mutex<&mut [f32]>> = cols.chunks_mut(p.chunk * m).map(Mutex::new).collect();
        team::run(parts.len(), &|c| {
            let mut dst = parts[c].lock().unwrap_or_else(|e| e.into_inner());
            p.chunk(c, &mut dst)
        });
        transpose(&cols, self.n, m)
    }

    /// The product through [`batched`]: each weight row decoded once and multiplied with
    /// every input row (exact, as the dequantised f32 matmul up to summation order).
    fn matmul_batched(&self, isa: Isa, x: &[f32], m: usize) -> Vec<f32> {
        let rows = Rows::Block(self.ty);
        batched_product(
            isa,
            rows,
            &self.data,
            self.row_bytes(),
            self.n,
            self.k,
            x,
            m,
        )
    }
}

/// `y = x Wᵀ` for `x` row-major `[m, k]` and `[n, k]` weights of ggml type `ty` (any type
/// [`crate::formats::quant`] decodes), through the batched path on the active level:
/// every weight row decoded once, exact up to summation order. For the types these
/// kernels do not multiply themselves (K-quants), where candle would round the inputs to
/// 8 bits or widen the whole matrix per call.
pub fn matmul_rows(
    ty: GgmlType,
    data: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
) -> anyhow::Result<Vec<f32>> {
    anyhow::ensure!(
        k.is_multiple_of(QK) && x.len() >= m * k,
        "{ty} matmul: width {k} (a multiple of 32 needed) or {} inputs for {m} rows",
        x.len()
    );
    let rb = quant::row_bytes(ty, k)?;
    anyhow::ensure!(
        data.len() == n * rb,
        "{ty} matrix of {n}×{k} needs {} bytes, got {}",
        n * rb,
        data.len()
    );
    Ok(batched_product(
        isa::active(),
        Rows::Ggml(ty),
        data,
        rb,
        n,
        k,
        x,
        m,
    ))
}

/// The batched product, rows split across threads in a few chunks per thread.
#[allow(clippy::too_many_arguments)]
fn batched_product(
    isa: Isa,
    rows: Rows,
    data: &[u8],
    rb: usize,
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    if m == 0 || n == 0 {
        return Vec::new();
    }
    let mut padded = x[..m * k].to_vec();
    padded.resize(m.next_multiple_of(batched::INPUTS) * k, 0.0);
    let threads = rayon::current_num_threads().max(1);
    let chunk = n
        .div_ceil(threads * 4)
        .next_multiple_of(batched::GROUP)
        .max(16);
    let mut out = vec![0f32; m * n];
    batched::column_blocks(&mut out, m, n, chunk)
        .into_par_iter()
        .for_each(|dst| {
            let (r0, nrows) = (dst.first(), dst.width());
            isa::dispatch(
                isa,
                batched::Chunk {
                    ty: rows,
                    w: &data[r0 * rb..(r0 + nrows) * rb],
                    rb,
                    x: &padded,
                    m,
                    k,
                    dst,
                },
            )
        });
    out
}

/// One single-row product's inputs, shared by the chunks of output rows.
struct RowProduct<'a> {
    mat: &'a QuantMatrix,
    isa: Isa,
    /// Whether x86 runs its hand-written exact kernels (see `matmul_with`).
    intrinsics: bool,
    x: &'a [f32],
    m: usize,
    /// Output rows per chunk.
    chunk: usize,
    sums: Vec<f32>,
    quantised: Vec<int8::QuantInput>,
}

impl RowProduct<'_> {
    /// Weight rows `r0 .. r0 + nrows` as the kernels take them, with their type and row
    /// size: Q5_0 rows rewritten into `buf` as the Q8_0 rows of the same values.
    fn rows<'b>(
        &'b self,
        r0: usize,
        nrows: usize,
        buf: &'b mut Vec<u8>,
    ) -> (&'b [u8], BlockType, usize) {
        let (mat, row_bytes) = (self.mat, self.mat.row_bytes());
        if mat.ty != BlockType::Q5_0 {
            return (
                &mat.data[r0 * row_bytes..(r0 + nrows) * row_bytes],
                mat.ty,
                row_bytes,
            );
        }
        let q8_row_bytes = mat.k / QK * Q8_0_BLOCK_BYTES;
        buf.resize(nrows * q8_row_bytes, 0u8);
        for (j, out) in buf.chunks_exact_mut(q8_row_bytes).enumerate() {
            let r = r0 + j;
            q5_0_row_as_q8_0(self.isa, &mat.data[r * row_bytes..(r + 1) * row_bytes], out);
        }
        (&buf[..], BlockType::Q8_0, q8_row_bytes)
    }

    /// Output rows `c·chunk ..` into `dst[row·m + input]`, on the chosen kernels.
    fn chunk(&self, c: usize, dst: &mut [f32]) {
        let RowProduct {
            mat,
            isa,
            intrinsics,
            x,
            m,
            chunk,
            ref sums,
            ref quantised,
        } = *self;
        let k = mat.k;
        let exact = mat.inputs == Inputs::Exact;
        let nrows = dst.len() / m;
        let mut unpacked = Vec::new();
        let (w, ty, rb) = self.rows(c * chunk, nrows, &mut unpacked);
        #[cfg(target_arch = "x86_64")]
        if exact && intrinsics && isa.available() && matches!(isa, Isa::Avx512 | Isa::Avx2) {
            // SAFETY: the level is available (checked), and it includes the
            // features each function enables (AVX-512 F and F16C for the
            // x86-64-v4 level, which has F16C on every CPU that has it — checked
            // again here — and AVX2 + FMA for v3); sizes as in `ExactChunk`.
            let v4 = isa == Isa::Avx512 && std::is_x86_feature_detected!("f16c");
            unsafe {
                if v4 {
                    x86_exact::chunk_avx512(ty, w, rb, nrows, x, k, sums, dst);
                } else {
                    x86_exact::chunk_avx2(ty, w, rb, nrows, x, k, sums, dst);
                }
            }
            return;
        }
        if exact {
            isa::dispatch(
                isa,
                ExactChunk {
                    ty,
                    w,
                    rb,
                    nrows,
                    x,
                    k,
                    sums,
                    dst,
                },
            );
        } else {
            int8::chunk(isa, ty, w, nrows, quantised, dst);
        }
    }
}

/// From this many input rows on, the exact product goes through [`batched`]: its tiles
/// take 4 inputs, so 2 rows waste half of them (measured a tie with the single-row
/// kernels in 2-prompt generation; 4 prompts 1.2–1.5× faster batched).
pub const BATCHED_MIN_ROWS: usize = 3;

/// The 8-bit-input kernels serve fewer input rows than this; larger batches (prompt
/// processing, collection, batched generation) stay exact.
const INT8_MAX_ROWS: usize = 16;

/// `cols[r·m + i]` (the single-row kernels' layout) as the row-major `[m, n]` product.
fn transpose(cols: &[f32], n: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for r in 0..n {
        for i in 0..m {
            out[i * n + r] = cols[r * m + i];
        }
    }
    out
}

/// f16 bits to f32 without a call per value (the `half` crate converts through a
/// runtime-checked F16C call, which cost a quarter of the generation time per block in a
/// profile). Exact for every f16: normals by moving the exponent, subnormals through an
/// exact integer-to-float product, infinities and NaNs kept.
#[inline(always)]
pub(crate) fn half_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let em = (h & 0x7FFF) as u32;
    let mag = if em >= 0x7C00 {
        0x7F80_0000 | ((em & 0x03FF) << 13)
    } else if em >= 0x0400 {
        (em << 13) + ((127 - 15) << 23)
    } else {
        (em as f32 * (1.0 / 16_777_216.0)).to_bits()
    };
    f32::from_bits(sign | mag)
}

/// One chunk of output rows of the exact path, run with the chosen `pulp` level:
/// `dst[row·m + input]`.
struct ExactChunk<'a> {
    ty: BlockType,
    w: &'a [u8],
    rb: usize,
    nrows: usize,
    x: &'a [f32],
    k: usize,
    sums: &'a [f32],
    dst: &'a mut [f32],
}

impl pulp::WithSimd for ExactChunk<'_> {
    type Output = ();

    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let ExactChunk {
            ty,
            w,
            rb,
            nrows,
            x,
            k,
            sums,
            dst,
        } = self;
        let m = x.len() / k;
        let nb = k / QK;
        macro_rules! run {
            ($rows:expr, $xs:expr, $sums:expr) => {
                match ty {
                    BlockType::Q4_1 => q4_1::rows(simd, $rows, $xs, $sums),
                    _ => q8_0::rows(simd, $rows, $xs),
                }
            };
        }
        // One row at a time, in memory order: the rows of a matrix are contiguous, so this
        // is one long sequential stream the hardware prefetcher follows. Four rows per
        // input load (four short interleaved streams of a few cache lines each) made
        // generation 2.6× slower per core than the single-row kernels of before; the
        // independent chains come from two accumulators inside each row instead.
        for r in 0..nrows {
            let rows = [&w[r * rb..(r + 1) * rb]];
            for i in 0..m {
                dst[r * m + i] = run!(rows, &x[i * k..(i + 1) * k], &sums[i * nb..(i + 1) * nb])[0];
            }
        }
    }
}
