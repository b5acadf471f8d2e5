//! One probe over the MLP inputs of many blocks at once.
//!
//! Each block's gate reads that block's MLP input, so a probe whose weight is split into one
//! slice per block gives every block its own edit direction, in the space its gate rows live
//! in. Fitting one logistic regression on the concatenated features (`L·d` ≈ 17 k wide on
//! the default model) by Newton's method is out of reach (the Hessian alone is 2.4 GB), so
//! the joint probe is *stacked*: one regularised logistic probe per block, then a small
//! logistic regression over the blocks' scores decides how much each block counts.
//!
//! The training split is halved: block probes fitted on one half score the other half, on
//! which the stacker is fitted (scores of examples a probe was trained on are optimistic and
//! would over-weight the blocks that over-fit most); the block probes are then refitted on
//! the whole training split. The held-out split is never seen.
//!
//! The result is an ordinary linear probe on the concatenated pooled states,
//! `W = [a₀w₀ | a₁w₁ | …]` in the symmetric `[2, L·d]` layout, so scoring, evaluation and the
//! probe file need nothing new besides the list of blocks.

use super::metrics::metrics;
use super::options::{FitOptions, Method};
use super::train::{fit_binary, split_indices, TrainOptions, TrainReport, Trained};
use anyhow::{ensure, Context, Result};

/// L2 penalty of the stacker (over L block scores, thousands of examples: barely binding).
const STACK_L2: f64 = 1.0;

/// Fits the stacked probe on `blocks[i]` (`n × d` pooled MLP inputs of one block each).
/// `opts.fit.method` must be a closed-form one; the same split as [`super::train`] for the seed.
pub fn train_joint(blocks: &[&[f32]], y: &[u8], d: usize, opts: &TrainOptions) -> Result<Trained> {
    ensure!(!blocks.is_empty(), "a joint probe needs at least one block");
    ensure!(
        matches!(opts.fit.method, Method::Logistic | Method::MeanDiff),
        "a joint probe is fitted with --method logistic (or mean-diff), not {:?}",
        opts.fit.method
    );
    opts.validate()?;
    for (i, x) in blocks.iter().enumerate() {
        super::train::check_features(x, y, d).with_context(|| format!("block {i}"))?;
    }
    let n1 = y.iter().filter(|&&l| l == 1).count();
    super::train::check_split([y.len() - n1, n1], opts.test_fraction)?;
    let (tr, te) = split_indices(y, opts.seed, opts.test_fraction);
    let y_tr: Vec<u8> = tr.iter().map(|&i| y[i]).collect();
    let (ha, hb) = split_indices(&y_tr, opts.seed ^ 0x5ac4_ed00, 0.5);
    let (half_a, half_b): (Vec<usize>, Vec<usize>) = (
        ha.iter().map(|&j| tr[j]).collect(),
        hb.iter().map(|&j| tr[j]).collect(),
    );
    ensure!(
        [&half_a, &half_b]
            .iter()
            .all(|h| h.iter().any(|&i| y[i] == 0) && h.iter().any(|&i| y[i] == 1)),
        "too few examples to fit a joint probe: each half of the training split needs both classes"
    );

    let l = blocks.len();
    let score = |w: &[f64], c: f64, x: &[f32], i: usize| -> f64 {
        c + w
            .iter()
            .zip(&x[i * d..(i + 1) * d])
            .map(|(w, &v)| w * v as f64)
            .sum::<f64>()
    };
    // Stacker features: block scores on half B from probes fitted on half A.
    let mut stack_x = vec![0f32; y.len() * l];
    for (b, x) in blocks.iter().enumerate() {
        let (w, c) = fit_binary(x, y, d, &half_a, opts).with_context(|| format!("block {b}"))?;
        for &i in &half_b {
            stack_x[i * l + b] = score(&w, c, x, i) as f32;
        }
    }
    let stack_opts = TrainOptions {
        fit: FitOptions {
            method: Method::Logistic,
            l2: STACK_L2,
            standardize: false,
            ..opts.fit.clone()
        },
        ..opts.clone()
    };
    let (a, c0) = fit_binary(&stack_x, y, l, &half_b, &stack_opts).context("the stacker")?;

    let mut weight = vec![0f64; l * d];
    let mut bias = c0;
    for (b, x) in blocks.iter().enumerate() {
        let (w, c) = fit_binary(x, y, d, &tr, opts).with_context(|| format!("block {b}"))?;
        for (o, w) in weight[b * d..(b + 1) * d].iter_mut().zip(&w) {
            *o = a[b] * w;
        }
        bias += a[b] * c;
    }
    let joint = |i: usize| -> f64 {
        let mut z = bias;
        for (b, x) in blocks.iter().enumerate() {
            z += score(&weight[b * d..(b + 1) * d], 0.0, x, i);
        }
        1.0 / (1.0 + (-z).exp())
    };
    let eval = |idx: &[usize]| {
        let p: Vec<f64> = idx.iter().map(|&i| joint(i)).collect();
        let t: Vec<u8> = idx.iter().map(|&i| y[i]).collect();
        metrics(&p, &t)
    };
    // The symmetric [2, L·d] layout of a binary score (row 1 − row 0 = the score).
    let mut w2: Vec<f32> = weight.iter().map(|&v| (-v / 2.0) as f32).collect();
    w2.extend(weight.iter().map(|&v| (v / 2.0) as f32));
    Ok(Trained {
        weight: w2,
        bias: [(-bias / 2.0) as f32, (bias / 2.0) as f32],
        report: TrainReport {
            options: opts.clone(),
            chosen_epoch: None,
            epochs: Vec::new(),
            train: eval(&tr),
            test: eval(&te),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SplitMix64;

    /// Two blocks: block 0 carries the label along a planted unit vector, block 1 is noise.
    /// The joint probe must beat chance by far, and put its weight on block 0's slice.
    #[test]
    fn stacking_finds_the_informative_block() {
        let (n, d) = (600, 8);
        let mut rng = SplitMix64::new(7);
        let mut gauss = || {
            let mut unit = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let u1 = 1.0 - unit();
            let u2 = unit();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        };
        let y: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
        let mut x0 = vec![0f32; n * d];
        let mut x1 = vec![0f32; n * d];
        for i in 0..n {
            for k in 0..d {
                x0[i * d + k] = gauss() + if k == 3 { 3.0 * y[i] as f32 } else { 0.0 };
                x1[i * d + k] = gauss();
            }
        }
        let opts = TrainOptions::new(
            FitOptions {
                method: Method::Logistic,
                standardize: true,
                ..FitOptions::default()
            },
            0,
        );
        let t = train_joint(&[&x0, &x1], &y, d, &opts).unwrap();
        assert!(t.report.test.accuracy > 0.85, "{}", t.report.test.accuracy);
        let half = &t.weight[2 * d..];
        let norm = |s: &[f32]| s.iter().map(|v| v * v).sum::<f32>().sqrt();
        let (n0, n1) = (norm(&half[..d]), norm(&half[d..]));
        assert!(n0 > 5.0 * n1, "block 0 slice {n0}, block 1 slice {n1}");
        let argmax = (0..d)
            .max_by(|&a, &b| half[a].abs().total_cmp(&half[b].abs()))
            .unwrap();
        assert_eq!(argmax, 3);
        assert!(train_joint(
            &[&x0],
            &y,
            d,
            &TrainOptions::new(
                FitOptions {
                    method: Method::Paper,
                    ..opts.fit
                },
                0
            )
        )
        .is_err());
    }
}
