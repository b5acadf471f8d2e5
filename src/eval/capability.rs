//! Capability measures that need a model's logits: teacher-forced negative log-likelihood
//! (the fluency of scored continuations and WikiText-2 perplexity), WikiText-2's windows, and
//! tokenizer equality. The KL between two models is [`crate::eval::kl`]'s.
//!
//! Everything is computed from forward passes over right-padded batches (teacher-forced
//! scoring runs the output head only on the positions it scores); the
//! batch is sized by a token budget because a `[b, t, vocab]` f32 logits tensor is the
//! largest allocation of an evaluation (49,152 × 1,024 tokens ≈ 200 MB for the default
//! model), not the weights.

use crate::eval::scorers::fluency::TextNll;
use crate::runtime::overlap::two_at_a_time;
use crate::runtime::{Logits, Model, Point, Tokenizer};
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Tensor, D};

/// Tokens per teacher-forced batch (batch × longest sequence). Bounds the logits tensors.
pub const TOKEN_BUDGET: usize = 2048;

/// One teacher-forced sequence: the context and the tokens whose likelihood is scored.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Context tokens (not scored; at least one token when `target` is non-empty).
    pub context: Vec<u32>,
    /// Tokens scored, each given everything before it.
    pub target: Vec<u32>,
}

/// Negative log-likelihood (nats) of each `target` given its `context` under `model`.
///
/// When context + target exceed the model's context length the context is cut from the
/// left (the continuation is what is being judged, so it is kept whole when it fits). An
/// empty target scores `{0, 0}`.
pub fn teacher_forced_nll(model: &Model, items: &[Scored]) -> Result<Vec<TextNll>> {
    let ctx = model.config().max_position_embeddings;
    let mut seqs: Vec<(usize, Vec<u32>, usize)> = Vec::new(); // (item, tokens, first scored pos)
    for (i, it) in items.iter().enumerate() {
        if !has_target(i, it)? {
            continue;
        }
        let keep_ctx = ctx.saturating_sub(it.target.len()).min(it.context.len());
        ensure!(
            keep_ctx >= 1,
            "scored text {i} has {} tokens, more than the context of {ctx}",
            it.target.len()
        );
        let mut toks = it.context[it.context.len() - keep_ctx..].to_vec();
        toks.extend_from_slice(&it.target);
        seqs.push((i, toks, keep_ctx));
    }
    let mut out = vec![
        TextNll {
            nll_sum: 0.0,
            n_tokens: 0
        };
        items.len()
    ];
    // Longest first, so a batch's padding stays small and the budget is checked on the first.
    seqs.sort_by_key(|s| std::cmp::Reverse(s.1.len()));
    let mut batches = Vec::new();
    let mut start = 0;
    while start < seqs.len() {
        let longest = seqs[start].1.len();
        let n = (TOKEN_BUDGET / longest.max(1))
            .max(1)
            .min(seqs.len() - start);
        batches.push(start..start + n);
        start += n;
    }
    two_at_a_time(
        &batches,
        |r| target_log_probs(model, &seqs[r.clone()]),
        |r, picked| {
            for ((item, toks, first), lp) in seqs[r.clone()].iter().zip(picked) {
                let sum: f64 = lp.iter().map(|&v| -(v as f64)).sum();
                out[*item] = TextNll {
                    nll_sum: sum.max(0.0),
                    n_tokens: toks.len() - first,
                };
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// Whether item `i` has tokens to score: false for an empty target (it scores `{0, 0}`), an
/// error for a target with no context token to predict its first token from.
pub(crate) fn has_target(i: usize, it: &Scored) -> Result<bool> {
    if it.target.is_empty() {
        return Ok(false);
    }
    ensure!(
        !it.context.is_empty(),
        "scored text {i} has no context token to predict its first token from"
    );
    Ok(true)
}

/// For each `(item, tokens, first)` of a right-padded batch, the log-probability of every
/// token from `first` on given the tokens before it. The output head runs only on the
/// positions that predict a scored token (position p predicts token p + 1), not on the
/// context or the padding.
fn target_log_probs(model: &Model, batch: &[(usize, Vec<u32>, usize)]) -> Result<Vec<Vec<f32>>> {
    let seqs: Vec<Vec<u32>> = batch.iter().map(|s| s.1.clone()).collect();
    let (out, _mask) = model.forward_batch(&seqs, &[Point::FinalNorm], Logits::None)?;
    let h = out
        .hidden
        .first()
        .context("the forward pass returned no final-norm states")?;
    let (b, t, d) = h.dims3()?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (r, (_, toks, first)) in batch.iter().enumerate() {
        for p in first - 1..toks.len() - 1 {
            rows.push((r * t + p) as u32);
            targets.push(toks[p + 1]);
        }
    }
    let h = h
        .reshape((b * t, d))?
        .index_select(&Tensor::new(rows.as_slice(), h.device())?, 0)?;
    let picked = log_probs_of(model, &h, &targets)?;
    let mut rest = picked.as_slice();
    Ok(batch
        .iter()
        .map(|(_, toks, first)| {
            let (mine, tail) = rest.split_at(toks.len() - first);
            rest = tail;
            mine.to_vec()
        })
        .collect())
}

/// `log p(targets[i] | state i)` for final-norm states `h` `[n, d]`: the output head and a
/// log-softmax over the vocabulary, row by row.
pub(crate) fn log_probs_of(model: &Model, h: &Tensor, targets: &[u32]) -> Result<Vec<f32>> {
    let lp = candle_nn::ops::log_softmax(&model.head_logits(h)?.to_dtype(DType::F32)?, D::Minus1)?;
    Ok(lp
        .gather(&Tensor::new(targets, h.device())?.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .to_vec1::<f32>()?)
}

/// Non-overlapping windows of `window` tokens (the last partial window is dropped, as in
/// the usual stride = window protocol), at most `max_windows` of them when given.
pub fn windows(tokens: &[u32], window: usize, max_windows: Option<usize>) -> Vec<Vec<u32>> {
    if window < 2 {
        return Vec::new();
    }
    tokens
        .chunks_exact(window)
        .take(max_windows.unwrap_or(usize::MAX))
        .map(<[u32]>::to_vec)
        .collect()
}

/// Tokenizes a benchmark text (e.g. WikiText-2 test) as one stream without a BOS in the
/// middle: one BOS at the start when the model wants one.
pub fn tokenize_corpus(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tok.encode(text)
}

/// Per-window NLL of each window's tokens after its first (the first has no context).
pub fn window_nll(model: &Model, windows: &[Vec<u32>]) -> Result<Vec<TextNll>> {
    let items: Vec<Scored> = windows
        .iter()
        .map(|w| Scored {
            context: w[..1].to_vec(),
            target: w[1..].to_vec(),
        })
        .collect();
    teacher_forced_nll(model, &items)
}

/// Whether two tokenizers map every id to the same token (and agree on the special ids
/// that end generation), so that token-level comparisons between two models make sense.
pub fn same_tokenizer(a: &Tokenizer, b: &Tokenizer) -> bool {
    a.vocab_size() == b.vocab_size()
        && a.eos_ids == b.eos_ids
        && (0..a.vocab_size() as u32).all(|id| a.id_to_token(id) == b.id_to_token(id))
}

/// Share of leading tokens two continuations have in common, relative to the longer one
/// (1 for identical continuations, including two empty ones).
pub fn common_prefix_share(a: &[u32], b: &[u32]) -> f64 {
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    common as f64 / longest as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_non_overlapping_and_capped() {
        let toks: Vec<u32> = (0..10).collect();
        let w = windows(&toks, 4, None);
        assert_eq!(w, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(windows(&toks, 4, Some(1)).len(), 1);
        assert!(windows(&toks, 1, None).is_empty());
    }

    #[test]
    fn prefix_share() {
        assert_eq!(common_prefix_share(&[1, 2, 3], &[1, 2, 3]), 1.0);
        assert_eq!(common_prefix_share(&[1, 2, 3, 4], &[1, 2, 9, 4]), 0.5);
        assert_eq!(common_prefix_share(&[], &[]), 1.0);
        assert_eq!(common_prefix_share(&[1], &[]), 0.0);
    }
}
