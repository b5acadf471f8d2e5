//! Batched generation with a KV cache: the hot loop of every evaluation.
//!
//! Prompts are sorted by length and run in batches (two at a time, [`super::overlap`]; a set
//! that fits one batch runs as two halves), left-padded so that every sequence's next token
//! sits in the last column; each row keeps its own RoPE positions. The prompts are
//! prefilled in groups of similar length ([`super::prefill`]) so that the padding is not
//! computed. Sequences
//! that finish (EOS, a stop string, the token limit) are dropped from the batch and their
//! cache rows released, so a batch never pays for its finished members.

use super::layers::Logits;
use super::overlap::{two_at_a_time, IN_FLIGHT};
use super::prefill::prefill;
use super::tokenizer::Tokenizer;
use super::Model;
use anyhow::Result;
use candle_core::{Device, Tensor, D};
use indicatif::ProgressBar;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Instant;

/// Decoding settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenParams {
    /// Maximum number of new tokens per prompt.
    pub max_new_tokens: usize,
    /// 0 = greedy; otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Seed of the sampler; each prompt gets its own stream derived from it and its index,
    /// so results do not depend on batch composition.
    pub seed: u64,
    /// Generation stops when the decoded text contains one of these (it is cut there).
    pub stop: Vec<String>,
    /// Prompts per batch.
    pub batch_size: usize,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            batch_size: 32,
        }
    }
}

/// Most new tokens one prompt may ask for (far above any context the runtime can hold;
/// it keeps `prompt + max_new_tokens` from overflowing).
pub const MAX_NEW_TOKENS: usize = 1 << 20;

impl GenParams {
    /// Refuses settings that would silently mean something else: NaN or negative
    /// temperature (garbage, or greedy in disguise), top-p outside (0, 1], an empty stop
    /// string (stops after one token), absurd token counts, a zero batch.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.temperature.is_finite() && self.temperature >= 0.0,
            "temperature {} must be a finite number >= 0 (0 = greedy)",
            self.temperature
        );
        anyhow::ensure!(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "top-p {} must be in (0, 1]",
            self.top_p
        );
        anyhow::ensure!(
            self.stop.iter().all(|s| !s.is_empty()),
            "a stop string is empty (it would stop every generation after one token)"
        );
        anyhow::ensure!(
            self.max_new_tokens <= MAX_NEW_TOKENS,
            "max new tokens {} is out of range (at most {MAX_NEW_TOKENS})",
            self.max_new_tokens
        );
        anyhow::ensure!(self.batch_size >= 1, "batch size must be at least 1");
        Ok(())
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Finish {
    /// An end-of-sequence / end-of-turn token.
    Eos,
    /// A stop string appeared.
    Stop,
    /// The token limit.
    Length,
}

/// One prompt's continuation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    /// New token ids (without the EOS token).
    pub tokens: Vec<u32>,
    /// Decoded continuation, cut before any stop string.
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
}

/// Token counts and times of a generation run. Batches run two at a time, so the prefill
/// and decode times are sums over batches and may add up to more than the wall time.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenStats {
    pub prompts: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

impl GenStats {
    /// Adds one batch's token counts and times (not its prompt count, which the run sets).
    fn add(&mut self, batch: &GenStats) {
        self.prompt_tokens += batch.prompt_tokens;
        self.generated_tokens += batch.generated_tokens;
        self.prefill_secs += batch.prefill_secs;
        self.decode_secs += batch.decode_secs;
    }
}

/// One generating sequence of a batch (its prompt, tokens so far, position, key mask, random stream).
struct Sequence {
    prompt: usize,
    tokens: Vec<u32>,
    pos: u32,
    key_mask: Vec<u8>,
    rng: StdRng,
    finish: Option<Finish>,
    text: String,
}

/// Generates a continuation for every prompt (token ids), in the prompts' order.
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &GenParams,
    progress: Option<&ProgressBar>,
) -> Result<(Vec<Generation>, GenStats)> {
    params.validate()?;
    let max_ctx = model.config().max_position_embeddings;
    for (i, p) in prompts.iter().enumerate() {
        anyhow::ensure!(!p.is_empty(), "prompt {i} is empty");
        anyhow::ensure!(
            p.len().saturating_add(params.max_new_tokens) <= max_ctx,
            "prompt {i} has {} tokens; with {} new tokens it exceeds the context of {max_ctx}",
            p.len(),
            params.max_new_tokens
        );
    }
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(prompts[i].len()));
    let mut out: Vec<Option<Generation>> = vec![None; prompts.len()];
    let mut stats = GenStats {
        prompts: prompts.len(),
        ..Default::default()
    };
    let chunks = batches(&order, params.batch_size.max(1));
    // Two batches at a time (see `overlap`); every sequence draws from its own random
    // stream, so sampled continuations do not depend on which batch ran first either.
    two_at_a_time(
        &chunks,
        |chunk| generate_batch(model, prompts, chunk, params, progress),
        |_, (gens, s)| {
            stats.add(&s);
            for (idx, g) in gens {
                out[idx] = Some(g);
            }
            Ok(())
        },
    )?;
    Ok((
        out.into_iter()
            .map(|g| g.expect("every prompt generated"))
            .collect(),
        stats,
    ))
}

/// Prompts per batch below which a set that fits one batch is not cut in two: each half
/// keeps the batched kernels (`kernels::BATCHED_MIN_ROWS`) for a while as its members finish.
const MIN_SPLIT_BATCH: usize = 8;

/// `order` (longest prompt first) cut into batches of at most `batch_size`. A set that fits
/// one batch is cut into [`IN_FLIGHT`] equal parts when each keeps [`MIN_SPLIT_BATCH`]
/// prompts: one batch alone leaves the second core idle in its serial parts and, once most
/// of its members have stopped, decodes its last long continuations nearly single-stream;
/// the parts run side by side ([`two_at_a_time`]). Larger sets keep their batches of
/// `batch_size`: they already run two at a time.
fn batches(order: &[usize], batch_size: usize) -> Vec<&[usize]> {
    let n = order.len();
    let size = if n <= batch_size && n >= IN_FLIGHT * MIN_SPLIT_BATCH {
        n.div_ceil(IN_FLIGHT)
    } else {
        batch_size
    };
    order.chunks(size).collect()
}

/// Generates one batch; its generations (with their prompts' indices) and its counts.
fn generate_batch(
    model: &Model,
    prompts: &[Vec<u32>],
    chunk: &[usize],
    params: &GenParams,
    progress: Option<&ProgressBar>,
) -> Result<(Vec<(usize, Generation)>, GenStats)> {
    let mut stats = GenStats::default();
    let stats = &mut stats;
    let tok = &model.tokenizer;
    let dev = Device::Cpu;
    let b = chunk.len();
    let seqs: Vec<&[u32]> = chunk.iter().map(|&i| prompts[i].as_slice()).collect();
    let Prefill { mut rows, len } = left_pad(&seqs, chunk, tok.pad_id, params.seed);
    stats.prompt_tokens += seqs.iter().map(|s| s.len()).sum::<usize>();
    let padded = seqs.iter().any(|s| s.len() != len);
    let t0 = Instant::now();
    let mask_tensor = |rows: &[&Sequence]| -> Result<Tensor> {
        let w = rows[0].key_mask.len();
        let flat: Vec<u8> = rows
            .iter()
            .flat_map(|r| r.key_mask.iter().copied())
            .collect();
        Ok(Tensor::from_vec(flat, (rows.len(), w), &dev)?)
    };
    let (mut logits, mut cache) = prefill(model, &seqs, len + params.max_new_tokens)?;
    stats.prefill_secs += t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    // Indices into `rows` of the sequences still in the batch, in cache-row order.
    let mut active: Vec<usize> = (0..b).collect();
    for step in 0..params.max_new_tokens {
        let next = pick_tokens(&logits, params, &mut rows, &active)?;
        let mut still = Vec::with_capacity(active.len());
        for (&r, &id) in active.iter().zip(&next) {
            let row = &mut rows[r];
            accept(row, id, step, tok, params, stats)?;
            if row.finish.is_some() {
                if let Some(pb) = progress {
                    pb.inc(1);
                }
            } else {
                still.push(r);
            }
        }
        if still.is_empty() {
            break;
        }
        if still.len() != active.len() {
            let keep: Vec<u32> = active
                .iter()
                .enumerate()
                .filter(|(_, r)| rows[**r].finish.is_none())
                .map(|(k, _)| k as u32)
                .collect();
            cache.retain_rows(&Tensor::new(keep.as_slice(), &dev)?)?;
        }
        active = still;
        let step_ids: Vec<u32> = active
            .iter()
            .map(|&r| *rows[r].tokens.last().unwrap())
            .collect();
        let step_pos: Vec<u32> = active.iter().map(|&r| rows[r].pos).collect();
        for &r in &active {
            rows[r].pos += 1;
            rows[r].key_mask.push(1);
        }
        let n = active.len();
        let step_mask = if padded {
            Some(mask_tensor(
                &active.iter().map(|&r| &rows[r]).collect::<Vec<_>>(),
            )?)
        } else {
            None
        };
        logits = model
            .net
            .forward(
                &Tensor::from_vec(step_ids, (n, 1), &dev)?,
                &Tensor::from_vec(step_pos, (n, 1), &dev)?,
                step_mask.as_ref(),
                Some(&mut cache),
                &[],
                Logits::Last,
            )?
            .logits
            .expect("logits requested");
    }
    stats.decode_secs += t1.elapsed().as_secs_f64();
    let gens = rows
        .into_iter()
        .map(|row| {
            let text = match row.finish {
                Some(Finish::Stop) => row.text,
                _ => tok.decode(&row.tokens, true)?,
            };
            Ok((
                row.prompt,
                Generation {
                    tokens: row.tokens,
                    text,
                    finish: row.finish.unwrap_or(Finish::Length),
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((gens, std::mem::take(stats)))
}

/// A batch's rows, one per sequence, whose key masks hide the left padding up to `len`,
/// the longest prompt.
struct Prefill {
    rows: Vec<Sequence>,
    len: usize,
}

/// `seqs` are the prompts of `chunk`, in its order.
fn left_pad(seqs: &[&[u32]], chunk: &[usize], pad_id: u32, seed: u64) -> Prefill {
    let (_, _, mask, len) = super::left_padded(seqs, pad_id);
    let rows = chunk
        .iter()
        .zip(seqs)
        .zip(mask.chunks(len.max(1)))
        .map(|((&i, seq), key_mask)| Sequence {
            prompt: i,
            tokens: Vec::new(),
            pos: seq.len() as u32,
            key_mask: key_mask.to_vec(),
            // Each prompt's own stream, so a prompt samples the same in any batch.
            rng: StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            finish: None,
            text: String::new(),
        })
        .collect();
    Prefill { rows, len }
}

/// Takes token `id` for `row` at decoding step `step`: EOS ends the row; otherwise the token
/// is kept, and a stop string or the token budget ends it.
fn accept(
    row: &mut Sequence,
    id: u32,
    step: usize,
    tok: &Tokenizer,
    params: &GenParams,
    stats: &mut GenStats,
) -> Result<()> {
    if tok.eos_ids.contains(&id) {
        row.finish = Some(Finish::Eos);
        return Ok(());
    }
    row.tokens.push(id);
    stats.generated_tokens += 1;
    if !params.stop.is_empty() {
        let text = tok.decode(&row.tokens, true)?;
        if let Some(cut) = params
            .stop
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            row.text = text[..cut].to_string();
            row.finish = Some(Finish::Stop);
        }
    }
    if row.finish.is_none() && step + 1 == params.max_new_tokens {
        row.finish = Some(Finish::Length);
    }
    Ok(())
}

/// Chooses the next token of each active row: argmax when greedy, else temperature and
/// top-p sampling from the row's own random stream.
fn pick_tokens(
    logits: &Tensor,
    params: &GenParams,
    rows: &mut [Sequence],
    active: &[usize],
) -> Result<Vec<u32>> {
    if params.temperature <= 0.0 {
        return Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
    }
    let all: Vec<Vec<f32>> = logits.to_vec2()?;
    let mut next = Vec::with_capacity(all.len());
    for (row_logits, &r) in all.iter().zip(active) {
        next.push(sample(row_logits, params, &mut rows[r].rng));
    }
    Ok(next)
}

fn sample(logits: &[f32], params: &GenParams, rng: &mut StdRng) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l - max) / params.temperature).exp()))
        .collect();
    let total: f32 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (k, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if kept >= params.top_p {
            cut = k + 1;
            break;
        }
    }
    let probs = &probs[..cut];
    let mass: f32 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f32>() * mass;
    for p in probs {
        u -= p.1;
        if u <= 0.0 {
            return p.0;
        }
    }
    probs[probs.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_batch_is_cut_in_two_halves_and_larger_sets_keep_their_batches() {
        let sizes = |n: usize, b: usize| {
            let order: Vec<usize> = (0..n).collect();
            let cut = batches(&order, b);
            assert_eq!(cut.concat(), order, "every prompt once, in order");
            cut.iter().map(|c| c.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(32, 32), vec![16, 16]);
        assert_eq!(sizes(17, 32), vec![9, 8]);
        assert_eq!(sizes(16, 32), vec![8, 8]);
        assert_eq!(sizes(15, 32), vec![15]);
        assert_eq!(sizes(200, 32), vec![32, 32, 32, 32, 32, 32, 8]);
        assert_eq!(sizes(33, 32), vec![32, 1]);
        assert_eq!(sizes(1, 1), vec![1]);
        assert!(sizes(0, 32).is_empty());
    }

    #[test]
    fn every_bad_decoding_setting_is_refused() {
        assert!(GenParams::default().validate().is_ok());
        let cases: Vec<(GenParams, &str)> = vec![
            (
                GenParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                GenParams {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                GenParams {
                    top_p: 2.0,
                    ..Default::default()
                },
                "top-p",
            ),
            (
                GenParams {
                    top_p: -0.5,
                    ..Default::default()
                },
                "top-p",
            ),
            (
                GenParams {
                    top_p: f32::NAN,
                    ..Default::default()
                },
                "top-p",
            ),
            (
                GenParams {
                    stop: vec!["".into()],
                    ..Default::default()
                },
                "stop string",
            ),
            (
                GenParams {
                    max_new_tokens: usize::MAX,
                    ..Default::default()
                },
                "max new tokens",
            ),
            (
                GenParams {
                    batch_size: 0,
                    ..Default::default()
                },
                "batch size",
            ),
        ];
        for (p, want) in cases {
            let err = p.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{p:?}: {err}");
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let params = GenParams {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        };
        // Token 2 has ~84 % of the mass, so it is the whole nucleus.
        let logits = [0.0, 1.0, 3.0, 0.5];
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(sample(&logits, &params, &mut rng), 2);
        }
    }

    #[test]
    fn sampling_is_deterministic_for_a_seed() {
        let params = GenParams {
            temperature: 1.0,
            top_p: 1.0,
            ..Default::default()
        };
        let logits = [0.1, 0.2, 0.3, 0.4, 0.5];
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample(&logits, &params, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
