//! Several input rows against one quantised matrix — batched generation for evaluation,
//! where every step multiplies each matrix by one hidden state per prompt in the batch.
//!
//! The single-row kernels ([`super::q4_1`], [`super::q8_0`]) decode every weight block
//! again for each input row, and the f32 GEMM used before for 16 or more rows widened the
//! whole matrix into a fresh buffer on every call (in a profile of 16-prompt greedy
//! generation: 19 % decoding, 24 % GEMM packing, page clearing, and 8 % multiplying).
//! Here each weight row is decoded once per call into a small f32 buffer that stays in
//! L1, and multiplied with every input row in register tiles of `NR` weight rows × `NI`
//! inputs (`NR + NI` vector loads feed `NR·NI` multiply–adds).
//!
//! Numerics: a weight decodes to `d·q + m` rounded after the product and after the sum (no
//! fused multiply–add), the values of `formats::quant`'s decoder (the same code serves
//! [`super::QuantMatrix::dequantize_row`]), and
//! each output is one f32 dot product of the decoded row with the input, lane-wise then
//! reduced, so the result equals the dequantised f32 matmul up to summation order. An
//! output's summation order does not depend on the other rows in the batch or on the tile
//! it lands in, so a prompt's continuation does not depend on what it is batched with.
//!
//! One generic source over `pulp` for scalar, AVX2, AVX-512 and NEON.

#![allow(clippy::needless_range_loop)]

use pulp::Simd;

use super::q5_0::q5_0_block_as_q8_0;
use super::{half_to_f32, BlockType, Q8_0_BLOCK_BYTES, QK};
use crate::formats::{ggml::GgmlType, quant};

/// How a weight row decodes to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// A type of these kernels, decoded in vector registers.
    Block(BlockType),
    /// Any other ggml type (the K-quants of the Gemma 3 and Qwen2 files), decoded by
    /// [`quant::decode_row`]; its row size is checked by the caller.
    Ggml(GgmlType),
}

/// Weight rows decoded per group (the tile height on every level).
pub(super) const GROUP: usize = 4;

/// Inputs per tile (the tile width on every level); callers pad the input rows to a
/// multiple of it.
pub(super) const INPUTS: usize = 4;

/// A block of consecutive columns of a row-major `[m, n]` output, the part of the product
/// one chunk of weight rows writes. Made only by [`column_blocks`], whose blocks never
/// overlap, so chunks on different threads write the product in its final layout without
/// a transposition afterwards (which took 5 % of batched generation in a profile).
pub(super) struct ColumnBlock<'a> {
    /// Element `[0, first]` of the output.
    ptr: *mut f32,
    /// The output's row length.
    n: usize,
    m: usize,
    first: usize,
    width: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a block is the only handle to its columns (`column_blocks` borrows the whole
// output mutably and hands out disjoint ranges), so moving it to another thread shares
// no element with any other thread.
unsafe impl Send for ColumnBlock<'_> {}

impl ColumnBlock<'_> {
    /// Its first column in the output.
    pub fn first(&self) -> usize {
        self.first
    }

    /// Its number of columns.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Writes output `[row, first + col]`.
    #[inline(always)]
    pub fn set(&mut self, row: usize, col: usize, v: f32) {
        assert!(
            row < self.m && col < self.width,
            "write outside the column block"
        );
        // SAFETY: `row < m` and `first + col < first + width <= n` (checked here and in
        // `column_blocks`), so the element lies inside the borrowed `[m, n]` output, in
        // this block's columns, which no other block has.
        unsafe { *self.ptr.add(row * self.n + col) = v }
    }
}

/// `out` (`[m, n]` row-major) as blocks of `width` consecutive columns (the last may be
/// narrower), each writable on its own thread.
pub(super) fn column_blocks(
    out: &mut [f32],
    m: usize,
    n: usize,
    width: usize,
) -> Vec<ColumnBlock<'_>> {
    assert!(
        out.len() == m * n && width > 0,
        "output of {m}×{n} has {} elements",
        out.len()
    );
    let ptr = out.as_mut_ptr();
    (0..n)
        .step_by(width)
        .map(|first| ColumnBlock {
            // SAFETY: `first < n <= out.len()` when m > 0; with m = 0 nothing is written
            // (`set` checks `row < m`) and `add` stays within or one past the allocation.
            ptr: unsafe { ptr.add(first.min(out.len())) },
            n,
            m,
            first,
            width: width.min(n - first),
            _out: std::marker::PhantomData,
        })
        .collect()
}

/// One chunk of output rows: `w` holds the block's rows of `rb` bytes of `ty` (as many as
/// the block has columns); `x` is `m` input rows of `k` followed by zero rows up to a
/// multiple of [`INPUTS`]; the product of weight row `j` and input `i` goes to the
/// block's `[i, j]`.
pub(super) struct Chunk<'a> {
    pub ty: Rows,
    pub w: &'a [u8],
    pub rb: usize,
    pub x: &'a [f32],
    pub m: usize,
    pub k: usize,
    pub dst: ColumnBlock<'a>,
}

impl pulp::WithSimd for Chunk<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // AVX2 has 16 vector registers: a 4 × 4 tile's 16 accumulators would spill, so it
        // takes 2 × 4 (8 accumulators, 2 weight vectors, inputs as memory operands).
        if S::F32_LANES == 8 {
            run::<S, 2, INPUTS>(simd, self)
        } else {
            run::<S, 4, INPUTS>(simd, self)
        }
    }
}

#[inline(always)]
fn run<S: Simd, const NR: usize, const NI: usize>(simd: S, c: Chunk<'_>) {
    let Chunk {
        ty,
        w,
        rb,
        x,
        m,
        k,
        mut dst,
    } = c;
    let nrows = dst.width();
    assert!(k.is_multiple_of(QK) && x.len() >= m.next_multiple_of(NI) * k);
    assert!(w.len() >= nrows * rb && GROUP.is_multiple_of(NR));
    // The decoded rows of one group; rows past the chunk's end stay zero.
    let mut buf = vec![0f32; GROUP * k];
    for g in (0..nrows).step_by(GROUP) {
        let rows = GROUP.min(nrows - g);
        for j in 0..rows {
            let r = g + j;
            decode_row(
                simd,
                ty,
                &w[r * rb..(r + 1) * rb],
                &mut buf[j * k..(j + 1) * k],
            );
        }
        for j in rows..GROUP {
            buf[j * k..(j + 1) * k].fill(0.0);
        }
        for r0 in (0..GROUP).step_by(NR) {
            if r0 >= rows {
                break;
            }
            let wr: [&[f32]; NR] = std::array::from_fn(|j| &buf[(r0 + j) * k..(r0 + j + 1) * k]);
            for i0 in (0..m).step_by(NI) {
                let xr: [&[f32]; NI] = std::array::from_fn(|i| &x[(i0 + i) * k..(i0 + i + 1) * k]);
                let t = tile::<S, NR, NI>(simd, wr, xr);
                for j in 0..NR.min(rows - r0) {
                    for i in 0..NI.min(m - i0) {
                        dst.set(i0 + i, g + r0 + j, t[j][i]);
                    }
                }
            }
        }
    }
}

/// `NR × NI` dot products of decoded weight rows with input rows, each accumulated
/// lane-wise in its own register and reduced at the end.
#[inline(always)]
fn tile<S: Simd, const NR: usize, const NI: usize>(
    simd: S,
    w: [&[f32]; NR],
    x: [&[f32]; NI],
) -> [[f32; NI]; NR] {
    let wv: [&[S::f32s]; NR] = std::array::from_fn(|j| S::as_simd_f32s(w[j]).0);
    let xv: [&[S::f32s]; NI] = std::array::from_fn(|i| S::as_simd_f32s(x[i]).0);
    let steps = xv[0].len();
    for j in 0..NR {
        assert!(wv[j].len() >= steps);
    }
    for i in 0..NI {
        assert!(xv[i].len() >= steps);
    }
    let mut acc = [[simd.splat_f32s(0.0); NI]; NR];
    for s in 0..steps {
        let a: [S::f32s; NR] = std::array::from_fn(|j| wv[j][s]);
        for i in 0..NI {
            let b = xv[i][s];
            for j in 0..NR {
                acc[j][i] = simd.mul_add_e_f32s(a[j], b, acc[j][i]);
            }
        }
    }
    let mut out = [[0f32; NI]; NR];
    for j in 0..NR {
        for i in 0..NI {
            out[j][i] = simd.reduce_sum_f32s(acc[j][i]);
        }
    }
    out
}

/// One row of a type of these kernels decoded to f32 on a chosen level (what
/// `QuantMatrix::dequantize_row` runs).
pub(super) struct DecodeRow<'a> {
    pub ty: BlockType,
    pub row: &'a [u8],
    pub out: &'a mut [f32],
}

impl pulp::WithSimd for DecodeRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        decode_row(simd, Rows::Block(self.ty), self.row, self.out)
    }
}

/// One row decoded to f32: a type of these kernels as `d·q (+ m)`, each product and sum
/// rounded to f32 as the format's reference decoder does (fixed-size loops the compiler
/// vectorises under the level's target features), any other through `formats::quant`.
#[inline(always)]
fn decode_row<S: Simd>(simd: S, ty: Rows, row: &[u8], out: &mut [f32]) {
    let ty = match ty {
        Rows::Block(ty) => ty,
        Rows::Ggml(t) => {
            quant::decode_row(t, row, out).expect("row size checked before the product");
            return;
        }
    };
    let bb = ty.block_bytes();
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        let o: &mut [f32; QK] = (&mut out[b * QK..(b + 1) * QK]).try_into().expect("32");
        match ty {
            BlockType::Q4_1 => {
                let d = half_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                let mn = half_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
                let mut q = [0f32; QK];
                for j in 0..16 {
                    q[j] = (blk[4 + j] & 0x0F) as f32;
                    q[16 + j] = (blk[4 + j] >> 4) as f32;
                }
                scale(simd, &q, d, mn, o);
            }
            BlockType::Q8_0 => q8_0(simd, blk, o),
            BlockType::Q5_0 => {
                let mut q8 = [0u8; Q8_0_BLOCK_BYTES];
                q5_0_block_as_q8_0(blk, &mut q8);
                q8_0(simd, &q8, o)
            }
        }
    }
}

#[inline(always)]
fn q8_0<S: Simd>(simd: S, blk: &[u8], o: &mut [f32; QK]) {
    let d = half_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
    let mut q = [0f32; QK];
    for j in 0..QK {
        q[j] = blk[2 + j] as i8 as f32;
    }
    let (qv, _) = S::as_simd_f32s(&q);
    let (ov, _) = S::as_mut_simd_f32s(o);
    let dv = simd.splat_f32s(d);
    for i in 0..qv.len() {
        ov[i] = simd.mul_f32s(dv, qv[i]);
    }
}

/// `o = d·q + m`, the product rounded before the sum (as `dequantize_row` computes it).
#[inline(always)]
fn scale<S: Simd>(simd: S, q: &[f32; QK], d: f32, mn: f32, o: &mut [f32; QK]) {
    let (qv, _) = S::as_simd_f32s(q);
    let (ov, _) = S::as_mut_simd_f32s(o);
    let dv = simd.splat_f32s(d);
    let mv = simd.splat_f32s(mn);
    for i in 0..qv.len() {
        ov[i] = simd.add_f32s(simd.mul_f32s(dv, qv[i]), mv);
    }
}
