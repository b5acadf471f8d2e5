//! Scoring continuations under the base model from its stored prompt states.
//!
//! Every model of an evaluation (base, edit, controls, each point of a sweep) has its
//! continuations scored under the *base* model, after the same prompts: the continuation
//! changes from model to model, the prompt does not. ToxiGen's prompts are ~115 tokens
//! ahead of ~40 generated ones, so re-reading them under the base for every model was three
//! quarters of a ToxiGen evaluation's scoring. [`PromptStore`] runs each prompt set through
//! the base once, keeps every layer's keys and values and the final-norm state at each
//! prompt's last token, and scores a continuation with a pass over its own tokens only:
//!
//! ```text
//!   prompt, left-padded, run once per prompt set       continuation, one pass per model
//!   [pad pad p0 p1 … pn] ──── keys, values per layer ───► [c0 c1 … cm pad]
//!                   └─ final norm at pn → head → log p(c0)     final norm at cj → head → log p(cj+1)
//! ```
//!
//! Left padding keeps the index distance between real tokens equal to their position
//! distance, which Gemma 3's sliding window relies on ([`crate::runtime::layers`]).
//!
//! The arithmetic never depends on what was kept: prompts are always run in the same batches
//! (longest first, as many as fill [`TOKEN_BUDGET`], two batches at a time), and a prompt set whose
//! states would pass [`BUDGET_BYTES`] is run again for each model in those same batches.
//! Continuations too long for the context with their prompt go through
//! [`capability::teacher_forced_nll`], which cuts the context from the left.

use crate::eval::capability::{self, Scored, TOKEN_BUDGET};
use crate::eval::scorers::fluency::TextNll;
use crate::progress::{bar, STEPS};
use crate::runtime::overlap::two_at_a_time;
use crate::runtime::{KvCache, KvRows, Logits, Model, Point};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// States per call of the output head.
const HEAD_ROWS: usize = 512;

/// Bytes of prompt states kept per process. ToxiGen 400 on the default model takes ~2 GB
/// (46 KB per token: 30 layers × 2 × 192 floats); sets past the budget are recomputed.
pub const BUDGET_BYTES: usize = 4 << 30;

/// One prompt's states under the base model, as plain f32 buffers (a batch's cache is
/// stacked from them with one copy each).
struct PromptState {
    /// Per layer, keys and values of the prompt's n tokens (one row, no padding).
    kv: KvRows,
    /// The final-norm state `[hidden]` at the last prompt token (it predicts the first
    /// continuation token).
    last: Vec<f32>,
}

impl PromptState {
    fn bytes(&self) -> usize {
        self.kv.bytes() + self.last.len() * std::mem::size_of::<f32>()
    }
}

/// The states of one prompt set: per prompt (`None` for one never scored from here).
struct PromptStates {
    prompts: Vec<Option<PromptState>>,
}

/// Prompt states kept between the models of one process, keyed by the base model and the
/// prompt set's tokens.
#[derive(Default)]
pub struct PromptStore {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    sets: HashMap<[u8; 32], Arc<PromptStates>>,
    bytes: usize,
}

impl PromptStore {
    /// NLL (nats) of each `target` after its `context` under `model`, as
    /// [`capability::teacher_forced_nll`] computes it (within float rounding: the same
    /// sums in another order). `model_id` names the model's weights (its fingerprint);
    /// `label` names the progress bars.
    pub fn nll(
        &self,
        model: &Model,
        model_id: &str,
        items: &[Scored],
        label: &str,
    ) -> Result<Vec<TextNll>> {
        let mut key = Sha256::new();
        key.update(model_id.as_bytes());
        key.update(format!("\0{:?}\0", model.precision).as_bytes());
        for it in items {
            key.update((it.context.len() as u64).to_le_bytes());
            for t in &it.context {
                key.update(t.to_le_bytes());
            }
        }
        let key: [u8; 32] = key.finalize().into();
        // A poisoned lock only means another thread panicked while inserting; what is kept
        // is still whole (an insertion is one map operation), so keep using it.
        let lock = || self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let kept = lock().sets.get(&key).cloned();
        let states = match kept {
            Some(s) => s,
            None => {
                let contexts: Vec<&[u32]> = items.iter().map(|i| i.context.as_slice()).collect();
                let pb = bar(
                    contexts.len(),
                    format!("{label} prompts under the base"),
                    STEPS,
                );
                let s = Arc::new(prefill(model, &contexts, &pb)?);
                pb.finish_and_clear();
                let bytes: usize = s.prompts.iter().flatten().map(PromptState::bytes).sum();
                let mut guard = lock();
                if guard.bytes + bytes <= BUDGET_BYTES {
                    guard.bytes += bytes;
                    guard.sets.insert(key, s.clone());
                }
                s
            }
        };
        let pb = bar(
            items.len(),
            format!("{label} continuations under the base"),
            STEPS,
        );
        let out = score(model, &states, items, &pb);
        pb.finish_and_clear();
        out
    }
}

/// Runs every non-empty context through `model`, left-padded, longest first, two batches at
/// a time.
fn prefill(model: &Model, contexts: &[&[u32]], pb: &ProgressBar) -> Result<PromptStates> {
    // A context that leaves no room for a token is never scored from here (see `score`).
    let ctx = model.config().max_position_embeddings;
    let mut order: Vec<usize> = (0..contexts.len())
        .filter(|&i| !contexts[i].is_empty() && contexts[i].len() < ctx)
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(contexts[i].len()));
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let rows = (TOKEN_BUDGET / contexts[order[start]].len())
            .max(1)
            .min(order.len() - start);
        chunks.push(&order[start..start + rows]);
        start += rows;
    }
    let mut out: Vec<Option<PromptState>> = (0..contexts.len()).map(|_| None).collect();
    two_at_a_time(
        &chunks,
        |chunk| prefill_batch(model, contexts, chunk),
        |chunk, states| {
            for (&i, state) in chunk.iter().zip(states) {
                out[i] = Some(state);
            }
            pb.inc(chunk.len() as u64);
            Ok(())
        },
    )?;
    Ok(PromptStates { prompts: out })
}

/// One batch of [`prefill`]: the states of the `chunk` contexts, in its order.
fn prefill_batch(model: &Model, contexts: &[&[u32]], chunk: &[usize]) -> Result<Vec<PromptState>> {
    let dev = Device::Cpu;
    let b = chunk.len();
    let seqs: Vec<&[u32]> = chunk.iter().map(|&i| contexts[i]).collect();
    let (ids, pos, mask, len) = crate::runtime::left_padded(&seqs, model.tokenizer.pad_id);
    let mut cache = KvCache::new(model.config().num_layers, len);
    let ids = Tensor::from_vec(ids, (b, len), &dev)?;
    let pos = Tensor::from_vec(pos, (b, len), &dev)?;
    let mask = Tensor::from_vec(mask, (b, len), &dev)?;
    let run = model
        .net
        .forward(
            &ids,
            &pos,
            Some(&mask),
            Some(&mut cache),
            &[Point::FinalNorm],
            Logits::None,
        )
        .context("running the prompts under the base model")?;
    let last = run
        .hidden
        .first()
        .context("the forward pass returned no final-norm states")?
        .narrow(1, len - 1, 1)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let hidden = last.len() / b;
    let block = KvRows::of_cache(&cache)?;
    Ok(chunk
        .iter()
        .enumerate()
        .map(|(r, &i)| PromptState {
            kv: block.row(r, contexts[i].len()),
            last: last[r * hidden..(r + 1) * hidden].to_vec(),
        })
        .collect())
}

/// Scores each item's target after its stored prompt, batched by target length.
fn score(
    model: &Model,
    states: &PromptStates,
    items: &[Scored],
    pb: &ProgressBar,
) -> Result<Vec<TextNll>> {
    let ctx = model.config().max_position_embeddings;
    let mut out = vec![
        TextNll {
            nll_sum: 0.0,
            n_tokens: 0
        };
        items.len()
    ];
    let mut order = Vec::new();
    let mut too_long = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if !capability::has_target(i, it)? {
            continue;
        }
        if it.context.len() + it.target.len() > ctx {
            too_long.push(i);
        } else {
            order.push(i);
        }
    }
    if !too_long.is_empty() {
        let cut: Vec<Scored> = too_long.iter().map(|&i| items[i].clone()).collect();
        for (&i, n) in too_long
            .iter()
            .zip(capability::teacher_forced_nll(model, &cut)?)
        {
            out[i] = n;
        }
    }
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].target.len()));
    let mut batches = Vec::new();
    let mut start = 0;
    while start < order.len() {
        // Longest target first: rows while the continuation tokens fit the token budget
        // and the stacked prompt states (prompt + continuation positions) fit four times it.
        let longest = items[order[start]].target.len();
        let (mut n, mut past) = (0, 0);
        while start + n < order.len() {
            let p = items[order[start + n]].context.len().max(past);
            let rows = n + 1;
            if n > 0 && (rows * longest > TOKEN_BUDGET || rows * (p + longest) > 4 * TOKEN_BUDGET) {
                break;
            }
            (n, past) = (rows, p);
        }
        batches.push(&order[start..start + n]);
        start += n;
    }
    two_at_a_time(
        &batches,
        |batch| continuation_log_probs(model, states, items, batch),
        |batch, lp| {
            for (&i, lp) in batch.iter().zip(lp) {
                out[i] = TextNll {
                    nll_sum: lp.iter().map(|&v| -(v as f64)).sum::<f64>().max(0.0),
                    n_tokens: items[i].target.len(),
                };
            }
            pb.inc(batch.len() as u64);
            Ok(())
        },
    )?;
    Ok(out)
}

/// The log-probability of every target token of the `batch` items, each after its prompt.
fn continuation_log_probs(
    model: &Model,
    states: &PromptStates,
    items: &[Scored],
    batch: &[usize],
) -> Result<Vec<Vec<f32>>> {
    let dev = Device::Cpu;
    let prompts: Vec<&PromptState> = batch
        .iter()
        .map(|&i| {
            states.prompts[i]
                .as_ref()
                .context("a scored prompt has no stored states")
        })
        .collect::<Result<_>>()?;
    let past = prompts.iter().map(|p| p.kv.len).max().unwrap_or(0);
    let t = items[batch[0]].target.len();
    let b = batch.len();
    // Every prompt's keys and values left-padded to `past`, room for the continuation.
    let rows: Vec<&KvRows> = prompts.iter().map(|p| &p.kv).collect();
    let mut cache = KvCache::stacked(&rows, past, past + t)?;
    let (mut ids, mut pos, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (&i, p) in batch.iter().zip(&prompts) {
        let (n, target) = (p.kv.len, &items[i].target);
        ids.extend(target.iter().copied().chain(std::iter::repeat_n(
            model.tokenizer.pad_id,
            t - target.len(),
        )));
        pos.extend((0..t).map(|j| (n + j) as u32));
        mask.extend((0..past).map(|j| u8::from(j >= past - n)));
        mask.extend((0..t).map(|j| u8::from(j < target.len())));
    }
    let run = model.net.forward(
        &Tensor::from_vec(ids, (b, t), &dev)?,
        &Tensor::from_vec(pos, (b, t), &dev)?,
        Some(&Tensor::from_vec(mask, (b, past + t), &dev)?),
        Some(&mut cache),
        &[Point::FinalNorm],
        Logits::None,
    )?;
    let h = run
        .hidden
        .first()
        .context("the forward pass returned no final-norm states")?;
    let hidden = h.dim(2)?;
    // Rows 0..b: each prompt's last state; then the continuation states, row r at b + r·t.
    let lasts: Vec<f32> = prompts
        .iter()
        .flat_map(|p| p.last.iter().copied())
        .collect();
    let lasts = Tensor::from_vec(lasts, (b, hidden), &dev)?.to_dtype(h.dtype())?;
    let all = Tensor::cat(&[lasts, h.reshape((b * t, hidden))?], 0)?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (r, &i) in batch.iter().enumerate() {
        let target = &items[i].target;
        rows.push(r as u32);
        rows.extend((0..target.len() - 1).map(|j| (b + r * t + j) as u32));
        targets.extend_from_slice(target);
    }
    // The head in slices of rows: a batch scores up to the whole token budget, and its
    // logits at once would be 400 MB on a 49k vocabulary.
    let mut picked = Vec::with_capacity(rows.len());
    for (rows, targets) in rows.chunks(HEAD_ROWS).zip(targets.chunks(HEAD_ROWS)) {
        let sel = all.index_select(&Tensor::new(rows, &dev)?, 0)?;
        picked.extend(capability::log_probs_of(model, &sel, targets)?);
    }
    let mut rest = picked.as_slice();
    Ok(batch
        .iter()
        .map(|&i| {
            let (mine, tail) = rest.split_at(items[i].target.len());
            rest = tail;
            mine.to_vec()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ggml::GgmlType;
    use crate::formats::tiny::{write_gguf, TinyFamily, TinySpec};
    use crate::runtime::{LoadOptions, Precision};

    fn tiny(family: TinyFamily, dir: &std::path::Path) -> Model {
        let spec = TinySpec {
            family,
            blocks: 6,
            sliding_window: 4,
            ..TinySpec::default()
        };
        let p = dir.join(format!("{family:?}.gguf"));
        write_gguf(&p, &spec, 7, GgmlType::F32).unwrap();
        let opts = LoadOptions {
            precision: Precision::F32,
        };
        Model::load(&p, &opts).unwrap()
    }

    /// Prompts of different lengths (padding in the prefix), targets of different lengths
    /// (padding in the continuation), one empty target and sequences longer than Gemma's
    /// window of 4.
    fn items() -> Vec<Scored> {
        let seq =
            |start: u32, n: usize| (0..n as u32).map(|j| (start + 37 * j) % 300 + 1).collect();
        vec![
            Scored {
                context: seq(3, 9),
                target: seq(11, 5),
            },
            Scored {
                context: seq(5, 2),
                target: seq(13, 7),
            },
            Scored {
                context: seq(8, 5),
                target: Vec::new(),
            },
            Scored {
                context: seq(21, 1),
                target: seq(2, 1),
            },
            Scored {
                context: seq(30, 6),
                target: seq(40, 3),
            },
        ]
    }

    #[test]
    fn stored_prompt_states_score_as_full_passes_do() {
        let dir = tempfile::tempdir().unwrap();
        for family in [TinyFamily::Llama, TinyFamily::Qwen2, TinyFamily::Gemma3] {
            let model = tiny(family, dir.path());
            let items = items();
            let want = capability::teacher_forced_nll(&model, &items).unwrap();
            let store = PromptStore::default();
            let got = store.nll(&model, "tiny", &items, "t").unwrap();
            // Kept: a second model's continuations (here the same ones) reuse the states.
            assert_eq!(store.kept.lock().unwrap().sets.len(), 1);
            let again = store.nll(&model, "tiny", &items, "t").unwrap();
            assert_eq!(got, again, "{family:?}: reuse changed the result");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.n_tokens, w.n_tokens, "{family:?} item {i}");
                let tol = 1e-4 * w.nll_sum.abs().max(1.0);
                assert!(
                    (g.nll_sum - w.nll_sum).abs() < tol,
                    "{family:?} item {i}: {} vs {}",
                    g.nll_sum,
                    w.nll_sum
                );
            }
            assert_eq!(
                got[2],
                TextNll {
                    nll_sum: 0.0,
                    n_tokens: 0
                }
            );
        }
    }

    #[test]
    fn other_prompts_or_models_get_their_own_states_and_bad_items_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny(TinyFamily::Llama, dir.path());
        let store = PromptStore::default();
        let mut items = items();
        store.nll(&model, "a", &items, "t").unwrap();
        store.nll(&model, "b", &items, "t").unwrap();
        items[0].context.push(9);
        store.nll(&model, "a", &items, "t").unwrap();
        assert_eq!(store.kept.lock().unwrap().sets.len(), 3);
        items[0].context.clear();
        let err = store.nll(&model, "a", &items, "t").unwrap_err().to_string();
        assert!(err.contains("no context token"), "{err}");
    }
}
