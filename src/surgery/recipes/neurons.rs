//! Pooled neuron activations on labelled text, the measurement AurA ranks by.
//!
//! A neuron's activation at a token is what `ffn_down` reads from it,
//! `act(gate_i·m)·(up_i·m)` with m the block's MLP input (the post-attention RMSNorm
//! output, [`Point::MlpInput`]) and act SiLU (Llama, Qwen2) or tanh-GELU (Gemma 3). It is
//! computed here from the captured MLP inputs and the stored gate/up rows, then averaged
//! over the text's real tokens (mean pooling, as the probes are).

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use indicatif::{ProgressBar, ProgressStyle};

use super::read_matrix;
use crate::runtime::config::Arch;
use crate::runtime::overlap::two_at_a_time;
use crate::runtime::{Logits, Model, Point};
use crate::surgery::model::{Matrix, ModelFile};

/// `out[b]`: `n × n_ff` mean-pooled activations of block b's neurons, one row per text of
/// `texts` (truncated to `max_tokens` tokens), in order.
pub fn pooled_activations(
    model: &Model,
    file: &ModelFile,
    texts: &[&str],
    max_tokens: usize,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    ensure!(
        !texts.is_empty(),
        "no texts to measure neuron activations on"
    );
    ensure!(
        max_tokens > 0 && batch_size > 0,
        "max_tokens and batch size must be positive"
    );
    let dev = Device::Cpu;
    let gates = file.matrix_tensors(Matrix::Gate)?;
    let ups = file.matrix_tensors(Matrix::Up)?;
    let weights: Vec<(Tensor, Tensor)> = gates
        .iter()
        .zip(&ups)
        .map(|(g, u)| -> Result<(Tensor, Tensor)> {
            let gm = Tensor::from_vec(read_matrix(file, g)?, (g.n_rows, g.row_len), &dev)?;
            let um = Tensor::from_vec(read_matrix(file, u)?, (u.n_rows, u.row_len), &dev)?;
            Ok((gm.t()?.contiguous()?, um.t()?.contiguous()?))
        })
        .collect::<Result<_>>()?;
    let gelu = model.config().arch == Arch::Gemma3;
    let mut seqs = Vec::with_capacity(texts.len());
    for t in texts {
        let mut ids = model.tokenizer.encode(t).context("tokenizing a text")?;
        ids.truncate(max_tokens);
        ensure!(!ids.is_empty(), "a text tokenizes to nothing");
        seqs.push(ids);
    }
    let n = seqs.len();
    let points: Vec<Point> = (0..gates.len()).map(Point::MlpInput).collect();
    let mut out: Vec<Vec<f32>> = gates.iter().map(|g| vec![0f32; n * g.n_rows]).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("neurons {bar:30} {pos}/{len} texts [{elapsed}<{eta}]")
            .expect("valid template"),
    );
    // One batch's pooled activations, per block (`b × n_ff` each).
    let pooled = |chunk: &[usize]| -> Result<Vec<Vec<f32>>> {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| seqs[i].clone()).collect();
        let (o, mask) = model.forward_batch(&batch, &points, Logits::None)?;
        let mask = mask.to_dtype(DType::F32)?;
        let count = mask.sum_keepdim(1)?; // [b, 1]
        o.hidden
            .iter()
            .zip(&weights)
            .map(|(h, (g, u))| -> Result<Vec<f32>> {
                let (b, t, d) = h.dims3()?;
                let m = h.to_dtype(DType::F32)?.reshape((b * t, d))?;
                let pre = m.matmul(g)?;
                let a = if gelu {
                    pre.gelu()?
                } else {
                    candle_nn::ops::silu(&pre)?
                };
                let a = (a * m.matmul(u)?)?.reshape((b, t, ()))?;
                let pooled = a
                    .broadcast_mul(&mask.unsqueeze(D::Minus1)?)?
                    .sum(1)?
                    .broadcast_div(&count)?;
                Ok(pooled.flatten_all()?.to_vec1::<f32>()?)
            })
            .collect()
    };
    let chunks: Vec<&[usize]> = order.chunks(batch_size).collect();
    two_at_a_time(
        &chunks,
        |chunk| pooled(chunk),
        |chunk, per_block| {
            for (v, dst) in per_block.iter().zip(&mut out) {
                let w = v.len() / chunk.len();
                for (r, &i) in chunk.iter().enumerate() {
                    dst[i * w..(i + 1) * w].copy_from_slice(&v[r * w..(r + 1) * w]);
                }
            }
            pb.inc(chunk.len() as u64);
            Ok(())
        },
    )?;
    pb.finish_and_clear();
    for (b, a) in out.iter().enumerate() {
        if a.iter().any(|v| !v.is_finite()) {
            anyhow::bail!("block {b}: a pooled neuron activation is not finite");
        }
    }
    Ok(out)
}
