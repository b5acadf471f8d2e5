//! AurA (Suau et al., ICML 2024, "Whispering Experts: Neural Interventions for Toxicity
//! Mitigation in Language Models").
//!
//! Each MLP neuron is treated as a classifier of toxic vs non-toxic text: its score on a
//! text is its activation (the `ffn_down` input, `act(gate_i·x)·(up_i·x)`) pooled over the
//! text's tokens ([`super::neurons`]), and its quality is the ROC AUC of that score. Every
//! neuron with AUC > 0.5 is damped by `1 − Gini = 1 − 2·(AUC − 0.5)`; no strength to tune.
//! Here `strength` multiplies the Gini coefficient (1 = the published recipe), so that the
//! recipe can be swept to a matched damage; factors are clamped at 0.

use anyhow::{bail, ensure, Result};

/// ROC AUC of `scores` as a classifier of `labels` (1 = positive): the probability that a
/// positive outscores a negative, ties counting one half (Mann–Whitney with mid-ranks).
pub fn roc_auc(scores: &[f32], labels: &[u8]) -> Result<f64> {
    ensure!(
        scores.len() == labels.len(),
        "{} scores for {} labels",
        scores.len(),
        labels.len()
    );
    let n1 = labels.iter().filter(|&&l| l == 1).count();
    let n0 = labels.len() - n1;
    if n1 == 0 || n0 == 0 {
        bail!("ROC AUC needs texts of both classes");
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Mid-rank (1-based) of the tie group i..=j.
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] == 1 {
                rank_sum += mid;
            }
        }
        i = j + 1;
    }
    let (n1, n0) = (n1 as f64, n0 as f64);
    Ok((rank_sum - n1 * (n1 + 1.0) / 2.0) / (n1 * n0))
}

/// `auc[b][i]` from `acts[b]` (`n × n_ff`, one row per text, row-major) and the labels.
pub fn neuron_aucs(acts: &[Vec<f32>], n_ff: &[usize], labels: &[u8]) -> Result<Vec<Vec<f64>>> {
    ensure!(
        acts.len() == n_ff.len(),
        "activations for {} blocks, {} widths",
        acts.len(),
        n_ff.len()
    );
    let n = labels.len();
    acts.iter()
        .zip(n_ff)
        .enumerate()
        .map(|(b, (a, &m))| {
            ensure!(
                a.len() == n * m,
                "block {b}: {} activations, expected {n} texts × {m} neurons",
                a.len()
            );
            let mut col = vec![0f32; n];
            (0..m)
                .map(|i| {
                    for (t, c) in col.iter_mut().enumerate() {
                        *c = a[t * m + i];
                    }
                    roc_auc(&col, labels)
                })
                .collect()
        })
        .collect()
}

/// Per block, `(row, factor)` for every neuron with AUC > 0.5:
/// `factor = max(0, 1 − strength·2·(AUC − 0.5))`.
pub fn damp_factors(aucs: &[Vec<f64>], strength: f32) -> Vec<Vec<(usize, f32)>> {
    aucs.iter()
        .map(|a| {
            a.iter()
                .enumerate()
                .filter(|(_, &auc)| auc > 0.5)
                .map(|(i, &auc)| {
                    let gini = 2.0 * (auc - 0.5);
                    (i, (1.0 - strength as f64 * gini).max(0.0) as f32)
                })
                .collect()
        })
        .collect()
}
