//! Scores of MLP neurons measured on labelled text, for [`super::Ranking::Activation`].
//!
//! The paper picks rows by their angle with a probe direction, arguing that a row
//! anti-aligned with the undesirable direction is a neuron that is off on undesirable
//! input. That can be measured instead of assumed: a gate row `r` of block b, applied to the
//! mean-pooled MLP input `h̄` of a text, gives the text's mean pre-activation `r·h̄` (the
//! gate is linear, so pooling before or after it is the same). The score of a neuron is the
//! standardised class difference of that quantity,
//! `(mean₁ − mean₀) / s` with s the pooled within-class standard deviation, computed from
//! class means and the pooled covariance of `h̄` (two small matrix products per block).
//! Most negative = least active on undesirable text relative to desirable text.

use super::model::{Matrix, ModelFile};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};

/// `scores[b][j]` for every block b and row j of `matrix`, from `inputs[b]` (`n × d`
/// mean-pooled MLP inputs of block b, one row per text) and `labels` (0/1 per text).
pub fn activation_scores(
    model: &ModelFile,
    matrix: Matrix,
    inputs: &[&[f32]],
    labels: &[u8],
) -> Result<Vec<Vec<f32>>> {
    let tensors = model.matrix_tensors(matrix)?;
    ensure!(
        inputs.len() == tensors.len(),
        "activation scores need the MLP inputs of all {} blocks, got {}",
        tensors.len(),
        inputs.len()
    );
    let n = labels.len();
    let n1 = labels.iter().filter(|&&l| l == 1).count();
    if n1 < 2 || n - n1 < 2 {
        bail!("activation scores need at least two texts of each class");
    }
    let mut out = Vec::with_capacity(tensors.len());
    for (t, x) in tensors.iter().zip(inputs) {
        let d = t.row_len;
        ensure!(
            x.len() == n * d,
            "block {}: {} pooled values, expected {n} texts × {d}",
            t.block,
            x.len()
        );
        let (mu, cov) = class_stats(x, labels, d)?;
        let mut rows = vec![0f32; t.n_rows * d];
        for j in 0..t.n_rows {
            model.read_row(t, j, &mut rows[j * d..(j + 1) * d])?;
        }
        model.release(&t.name);
        let dev = Device::Cpu;
        let r = Tensor::from_vec(rows, (t.n_rows, d), &dev)?;
        let diff: Vec<f32> = mu[1].iter().zip(&mu[0]).map(|(a, b)| a - b).collect();
        let mean_diff = r.matmul(&Tensor::from_vec(diff, (d, 1), &dev)?)?;
        let var = (r.matmul(&cov)? * &r)?.sum(1)?;
        let (mean_diff, var) = (
            mean_diff.flatten_all()?.to_vec1::<f32>()?,
            var.to_vec1::<f32>()?,
        );
        out.push(
            mean_diff
                .iter()
                .zip(&var)
                .map(|(m, v)| if *v > 0.0 { m / v.sqrt() } else { 0.0 })
                .collect(),
        );
    }
    Ok(out)
}

/// Class means and the pooled within-class covariance (`d × d`) of `x`.
fn class_stats(x: &[f32], labels: &[u8], d: usize) -> Result<([Vec<f32>; 2], Tensor)> {
    let n = labels.len();
    let mut mu = [vec![0f64; d], vec![0f64; d]];
    let mut count = [0usize; 2];
    for (i, &l) in labels.iter().enumerate() {
        let c = usize::from(l == 1);
        count[c] += 1;
        for (m, &v) in mu[c].iter_mut().zip(&x[i * d..(i + 1) * d]) {
            *m += v as f64;
        }
    }
    for c in 0..2 {
        mu[c].iter_mut().for_each(|m| *m /= count[c] as f64);
    }
    let centred: Vec<f32> = (0..n)
        .flat_map(|i| {
            let c = usize::from(labels[i] == 1);
            let mu = &mu[c];
            x[i * d..(i + 1) * d]
                .iter()
                .zip(mu)
                .map(|(&v, m)| (v as f64 - m) as f32)
        })
        .collect();
    let xc = Tensor::from_vec(centred, (n, d), &Device::Cpu)?;
    let cov = (xc.t()?.matmul(&xc)? / (n - 2) as f64).context("pooled covariance")?;
    let mu = mu.map(|m| m.iter().map(|&v| v as f32).collect());
    Ok((mu, cov))
}
