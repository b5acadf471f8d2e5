//! Step 2 of the paper, its arithmetic: the cosine of every gate row with the probe direction
//! (and each row's norm), straight from the quantised bytes.
//!
//! Each tensor's rows are decoded and summed in one function compiled for the CPU's vector
//! width (`pulp`'s dispatch, the runtime kernels' levels), in f64 over eight fixed lanes, so
//! scalar, AVX2 and AVX-512 give the same bits (checked by `scripts/test.sh` on each level).

use anyhow::{ensure, Context, Result};

use crate::formats::quant;
use crate::runtime::kernels;
use crate::surgery::directions::BlockVectors;
use crate::surgery::model::{MatrixTensor, ModelFile};

/// Partial sums per row in [`cosines`]: one vector of f64 on AVX-512.
const LANES: usize = 8;

type Lanes = [f64; LANES];

/// Σ x² and Σ x·y in [`LANES`] partial sums, element `i` in lane `i % LANES`; the tail past
/// the last whole group goes to lane 0 in order. A fixed order written out in the code, so
/// every instruction set gives the same bits.
#[inline(always)]
fn lane_sums(x: &[f64], y: &[f64]) -> (Lanes, Lanes) {
    let (mut xx, mut xy) = ([0f64; LANES], [0f64; LANES]);
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        // Whole arrays, so that the compiler sees one vector per operation.
        let a: &[f64; LANES] = a.try_into().expect("chunks_exact");
        let b: &[f64; LANES] = b.try_into().expect("chunks_exact");
        for j in 0..LANES {
            xx[j] += a[j] * a[j];
            xy[j] += a[j] * b[j];
        }
    }
    for (&a, &b) in xt.iter().zip(yt) {
        xx[0] += a * a;
        xy[0] += a * b;
    }
    (xx, xy)
}

/// `x` widened into `out` (a loop the compiler vectorises, unlike a conversion inside the
/// sums).
#[inline(always)]
fn widen(x: &[f32], out: &mut [f64]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f64::from(v);
    }
}

/// The lanes added pairwise in a fixed order.
#[inline(always)]
fn total(l: &Lanes) -> f64 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// Every row of one tensor: decoded and summed in one function compiled for the CPU's
/// vector width (`decode_row` inlined into it), so the decode and the f64 sums vectorise.
struct TensorCosines<'a> {
    ty: crate::formats::ggml::GgmlType,
    bytes: &'a [u8],
    row_bytes: usize,
    w: &'a [f32],
    gain: Option<&'a [f32]>,
}

impl pulp::WithSimd for TensorCosines<'_> {
    /// Per row: (stored row's ‖r‖², dot of the compared row with w, compared row's ‖r‖²),
    /// or the index of the row that failed to decode.
    type Output = std::result::Result<Vec<(f64, f64, f64)>, (usize, anyhow::Error)>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
        let n = self.w.len();
        let (mut g, mut gs) = (vec![0f32; n], vec![0f32; n]);
        let (mut gd, mut w) = (vec![0f64; n], vec![0f64; n]);
        widen(self.w, &mut w);
        let mut out = Vec::with_capacity(self.bytes.len() / self.row_bytes);
        for (r, row) in self.bytes.chunks_exact(self.row_bytes).enumerate() {
            quant::decode_row_inline(self.ty, row, &mut g).map_err(|e| (r, e))?;
            widen(&g, &mut gd);
            let (xx, xw) = lane_sums(&gd, &w);
            let norm2 = total(&xx);
            match self.gain {
                Some(gain) => {
                    for ((s, &a), &k) in gs.iter_mut().zip(&g).zip(gain) {
                        *s = a * k;
                    }
                    widen(&gs, &mut gd);
                    let (ss, sw) = lane_sums(&gd, &w);
                    out.push((norm2, total(&sw), total(&ss)));
                }
                // The rows as compared are the stored rows: one sum of squares serves both.
                None => out.push((norm2, total(&xw), norm2)),
            }
        }
        Ok(out)
    }
}

/// The cosine of every row of `t` with `v.rank` (rows scaled by `v.row_gain` when
/// norm-aware), accumulated in f64, and each stored row's norm, in row order.
pub(super) fn cosines(
    model: &ModelFile,
    t: &MatrixTensor,
    v: &BlockVectors,
) -> Result<Vec<(f32, f32)>> {
    let w = &v.rank;
    let w_norm = w.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let n = t.row_len;
    // The tensor's bytes once, not one lookup by name per row.
    let (bytes, rb) = (model.tensor_bytes(&t.name)?, quant::row_bytes(t.ty, n)?);
    let shorter = || {
        format!(
            "{}: {} is shorter than its shape",
            model.path().display(),
            t.name
        )
    };
    ensure!(
        rb > 0,
        "{}: {} has rows of no elements",
        model.path().display(),
        t.name
    );
    let bytes = bytes.get(..t.n_rows * rb).with_context(shorter)?;
    ensure!(
        w.len() == n,
        "{}: probe of width {} against rows of {n}",
        t.name,
        w.len()
    );
    let job = TensorCosines {
        ty: t.ty,
        bytes,
        row_bytes: rb,
        w,
        gain: v.row_gain.as_deref(),
    };
    let sums = kernels::isa::dispatch(kernels::isa::active(), job)
        .map_err(|(r, e)| e.context(format!("{}: {} row {r}", model.path().display(), t.name)))?;
    let rows = sums.into_iter().map(|(norm2, dot, nn)| {
        // A zero row (or direction) has no direction: rank it as orthogonal.
        let cosine = if nn > 0.0 && w_norm > 0.0 {
            (dot / (nn.sqrt() * w_norm)) as f32
        } else {
            0.0
        };
        (cosine, norm2.sqrt() as f32)
    });
    Ok(rows.collect())
}
