//! A generation batch's prompts prefilled in groups of similar length, their caches stacked.
//!
//! Decoding runs a batch left-padded to its longest prompt. Prefilling it the same way
//! computes every padding position: the 16 longest of 32 RTP prompts (sorted, one half of a
//! quick evaluation's batch) span 40–89 tokens, so one padded pass computes 1,424 positions
//! for 962 real ones, and the two halves together 2,048 for 1,314. Here the batch (sorted
//! longest first) is cut into consecutive groups ([`groups`]), each group runs its own pass
//! padded to its own longest prompt, and each group's keys and values are then left-padded
//! with zeros to the batch's longest prompt and stacked: the cache the one padded pass
//! would have left, except at padding, which every later step masks out.
//!
//! ```text
//!   group 1: [ p p a a a a ]  ─┐   keys, values  [ 0 0 | p p a a a a ]
//!   group 2:     [ p b b b ]  ─┼─▶ left-padded   [ 0 0 0 0 | p b b b ]  ─▶ one cache,
//!   group 3:       [ c c c ]  ─┘   to the batch  [ 0 0 0 0 0 | c c c ]     decoding as before
//! ```
//!
//! A prompt's keys and values do not depend on how far it is padded (each position attends
//! only to its own row's real tokens), up to the summation order of the attention over the
//! masked keys; `tests/runtime/prefill_tiny.rs` checks every prompt's logits, after the
//! prefill and after the first decoding step on the stacked cache, against its own full
//! pass (1e-4, every family, Gemma's sliding window crossed).

use super::layers::{KvCache, KvRows, Logits};
use super::{left_padded, Model};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::ops::Range;

/// What one more forward pass costs, in padded token positions: the per-layer work that
/// does not grow with the tokens (norms, the attention's set-up, the thread hand-offs) and
/// a smaller group's less efficient products. A group is split off only when it saves
/// more padding than this. Not tuned finely: 16, 64 and 256 gave the same prefill time
/// for the 32 prompts above on the development machine, within its noise.
const PASS_COST: usize = 64;

/// Consecutive groups of `lens` (sorted longest first) that minimise the padded positions
/// (each group padded to its first length) plus [`PASS_COST`] per group: an exact dynamic
/// programme over the cut points, O(n²) for a batch of n.
pub fn groups(lens: &[usize]) -> Vec<Range<usize>> {
    let n = lens.len();
    // best[j]: the cheapest cost of the first j prompts, and where its last group starts.
    let mut best = vec![(0usize, 0usize); n + 1];
    for j in 1..=n {
        best[j] = (0..j)
            .map(|i| (best[i].0 + lens[i] * (j - i) + PASS_COST, i))
            .min()
            .expect("at least one cut");
    }
    let mut out = Vec::new();
    let mut j = n;
    while j > 0 {
        let i = best[j].1;
        out.push(i..j);
        j = i;
    }
    out.reverse();
    out
}

/// The prompts `seqs` (sorted longest first) run through `model` in [`groups`]: the
/// last position's logits `[b, vocab]` and a cache of `capacity` positions holding the
/// prompts left-padded to the longest.
pub fn prefill(model: &Model, seqs: &[&[u32]], capacity: usize) -> Result<(Tensor, KvCache)> {
    let num_layers = model.config().num_layers;
    let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
    anyhow::ensure!(
        lens.windows(2).all(|w| w[0] >= w[1]),
        "prefill: prompts must come longest first"
    );
    let parts = groups(&lens);
    if parts.len() <= 1 {
        let mut cache = KvCache::new(num_layers, capacity);
        let logits = pass(model, seqs, &mut cache)?;
        return Ok((logits, cache));
    }
    let longest = lens.first().copied().unwrap_or(0);
    let mut logits = Vec::with_capacity(parts.len());
    let mut stacked = Vec::with_capacity(parts.len());
    for g in parts {
        let group = &seqs[g];
        let mut cache = KvCache::new(num_layers, group[0].len());
        logits.push(pass(model, group, &mut cache)?);
        stacked.push(KvRows::of_cache(&cache)?);
    }
    let stacked: Vec<&KvRows> = stacked.iter().collect();
    let cache = KvCache::stacked(&stacked, longest, capacity)?;
    Ok((Tensor::cat(&logits, 0)?, cache))
}

/// One left-padded pass over `seqs` into `cache`; the last position's logits.
fn pass(model: &Model, seqs: &[&[u32]], cache: &mut KvCache) -> Result<Tensor> {
    let dev = Device::Cpu;
    let (ids, pos, mask, len) = left_padded(seqs, model.tokenizer.pad_id);
    let b = seqs.len();
    let padded = seqs.iter().any(|s| s.len() != len);
    let mask = if padded {
        Some(Tensor::from_vec(mask, (b, len), &dev)?)
    } else {
        None
    };
    model
        .net
        .forward(
            &Tensor::from_vec(ids, (b, len), &dev)?,
            &Tensor::from_vec(pos, (b, len), &dev)?,
            mask.as_ref(),
            Some(cache),
            &[],
            Logits::Last,
        )
        .context("prefill")?
        .logits
        .context("prefill: the model returned no logits")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cuts equal a brute force over every way to cut a short list.
    #[test]
    fn groups_are_the_cheapest_cuts() {
        let cost = |lens: &[usize], g: &[Range<usize>]| -> usize {
            g.iter().map(|r| lens[r.start] * r.len() + PASS_COST).sum()
        };
        let lists: [&[usize]; 5] = [
            &[89, 82, 71, 66, 63, 63, 60, 56, 52, 52],
            &[40, 40, 39, 37, 37, 36, 34, 28, 27, 27],
            &[200, 10, 9, 8, 7, 6, 5, 4, 3, 2],
            &[5, 5, 5, 5],
            &[1],
        ];
        for lens in lists {
            let n = lens.len();
            let mut cheapest = usize::MAX;
            for cuts in 0..1u32 << (n - 1) {
                let mut g = Vec::new();
                let mut start = 0;
                for i in 1..n {
                    if cuts >> (i - 1) & 1 == 1 {
                        g.push(start..i);
                        start = i;
                    }
                }
                g.push(start..n);
                cheapest = cheapest.min(cost(lens, &g));
            }
            let got = groups(lens);
            assert_eq!(cost(lens, &got), cheapest, "{lens:?}: {got:?}");
            assert_eq!(got.first().map(|r| r.start), Some(0));
            assert!(got.windows(2).all(|w| w[0].end == w[1].start));
            assert_eq!(got.last().map(|r| r.end), Some(n));
        }
        assert!(groups(&[]).is_empty());
        // Equal lengths never pay for a second pass.
        assert_eq!(groups(&[5, 5, 5, 5]), vec![0..4]);
        // A long outlier is split off.
        assert_eq!(groups(&[200, 10, 9, 8, 7, 6, 5, 4, 3, 2]).len(), 2);
    }
}
