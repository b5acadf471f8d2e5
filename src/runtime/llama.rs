//! The Llama-family forward pass (Llama, Mistral, SmolLM, Qwen2), top to bottom.
//!
//! ```text
//! x = embed(ids)
//! for each block i:
//!     x = x + attn(rms_norm(x))                     -- GQA, RoPE, causal + padding mask
//!     m = rms_norm(x)                               -- the "MLP input" the gate rows read
//!     x = x + down(silu(gate·m) * up·m)             -- Model Surgery edits rows of `gate`
//! h = rms_norm(x)                                   -- the paper's probe reads this state
//! logits = h · Eᵀ
//! ```
//!
//! Unlike candle-transformers' models, the pass can hand back any of these intermediate
//! states ([`Point`]), skips the output head when no logits are wanted, and stops after the
//! last block anyone asked about.

use super::config::ModelConfig;
use super::weights::{Embedding, Linear, Precision, WeightSource};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};

/// A place in the network whose activations can be captured, each `[batch, seq, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Point {
    /// The residual stream after block `i` (0-based).
    Residual(usize),
    /// The input of block `i`'s MLP: the post-attention RMSNorm output, which is what the
    /// gate rows take their dot product with.
    MlpInput(usize),
    /// The output of the final RMSNorm (what HF calls `hidden_states[L]`; the paper's probe).
    FinalNorm,
}

/// Which logits to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None: the output head (vocab × d, the largest matmul) is skipped.
    None,
    /// Only the last column (`[batch, vocab]`): with left padding, every sequence's last token.
    Last,
    /// Every position (`[batch, seq, vocab]`).
    All,
}

/// What a forward pass returns.
pub struct Output {
    /// Logits as requested.
    pub logits: Option<Tensor>,
    /// One `[batch, seq, d]` tensor per requested point, in request order.
    pub hidden: Vec<Tensor>,
}

/// RMSNorm with a gain vector (Gemma's `1 + w` is stored as such in GGUF, and added at
/// load from Hugging Face checkpoints).
pub(crate) struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

impl RmsNorm {
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32)
    }
}

struct Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Per-layer key/value cache, preallocated so that each decoding step writes in place.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// A cache for `capacity` positions (prompt + generated tokens).
    pub fn new(num_layers: usize, capacity: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
            capacity,
        }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the given batch rows (sequences that are still generating).
    pub fn retain_rows(&mut self, rows: &Tensor) -> candle_core::Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        Ok(())
    }

    /// Records that a forward pass of `t` positions has appended to every layer.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Writes a layer's new keys and values; returns all of them so far.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, h, t, d) = k.dims4()?;
        let start = self.len;
        if start + t > self.capacity {
            candle_core::bail!(
                "key/value cache full: {} + {t} positions > capacity {}",
                start,
                self.capacity
            );
        }
        let slot = &mut self.layers[layer];
        if slot.is_none() {
            let z = Tensor::zeros((b, h, self.capacity, d), k.dtype(), k.device())?;
            *slot = Some((z.clone(), z.copy()?));
        }
        let (kc, vc) = slot.as_ref().expect("allocated above");
        kc.slice_set(&k.contiguous()?, 2, start)?;
        vc.slice_set(&v.contiguous()?, 2, start)?;
        Ok((kc.narrow(2, 0, start + t)?, vc.narrow(2, 0, start + t)?))
    }
}

/// A loaded Llama-family model.
pub struct Llama {
    /// Hyper-parameters.
    pub cfg: ModelConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    /// RoPE tables `[max_pos, head_dim/2]`.
    cos: Tensor,
    sin: Tensor,
}

impl Llama {
    /// Loads every tensor the forward pass needs from `src`, checking shapes.
    pub fn load(
        src: &mut WeightSource,
        mut cfg: ModelConfig,
        precision: Precision,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let (kv_out, q_out) = (
            cfg.num_kv_heads * cfg.head_dim,
            cfg.num_heads * cfg.head_dim,
        );
        let (embed, tied_head) = src.embedding(cfg.vocab_size, d, precision)?;
        cfg.tie_word_embeddings = !src.has("output", "weight");
        let lm_head = if cfg.tie_word_embeddings {
            tied_head
        } else {
            src.linear("output", cfg.vocab_size, d, false, precision)?
        };
        let eps = cfg.rms_norm_eps;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("blk.{i}");
            let bias = cfg.attention_bias;
            let f = cfg.intermediate_size;
            blocks.push(Block {
                attn_norm: RmsNorm {
                    weight: src.vector(&format!("{p}.attn_norm"), "weight", d)?,
                    eps,
                },
                q: src.linear(&format!("{p}.attn_q"), q_out, d, bias, precision)?,
                k: src.linear(&format!("{p}.attn_k"), kv_out, d, bias, precision)?,
                v: src.linear(&format!("{p}.attn_v"), kv_out, d, bias, precision)?,
                o: src.linear(&format!("{p}.attn_output"), d, q_out, false, precision)?,
                ffn_norm: RmsNorm {
                    weight: src.vector(&format!("{p}.ffn_norm"), "weight", d)?,
                    eps,
                },
                gate: src.linear(&format!("{p}.ffn_gate"), f, d, false, precision)?,
                up: src.linear(&format!("{p}.ffn_up"), f, d, false, precision)?,
                down: src.linear(&format!("{p}.ffn_down"), d, f, false, precision)?,
            });
        }
        let norm = RmsNorm {
            weight: src.vector("output_norm", "weight", d)?,
            eps,
        };
        let inv_freq = cfg.rope_inv_freq();
        let half = inv_freq.len();
        let max_pos = cfg.max_position_embeddings;
        let inv = Tensor::from_vec(inv_freq, (1, half), &Device::Cpu)?;
        let pos = Tensor::arange(0u32, max_pos as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?;
        let freqs = pos.matmul(&inv).context("RoPE table")?;
        Ok(Llama {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
        })
    }

    /// Runs the model.
    ///
    /// - `ids`: `[b, t]` u32 token ids; `positions`: `[b, t]` u32 RoPE positions (they differ
    ///   between rows under left padding).
    /// - `key_mask`: `[b, past + t]` u8, 1 for real tokens; `None` when nothing is padded.
    /// - `cache`: when given, keys/values are appended and earlier ones attended to.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        key_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        points: &[Point],
        logits: Logits,
    ) -> Result<Output> {
        let (b, t) = ids.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.len());
        let bias = attention_bias(b, t, past, key_mask, None)?;
        let flat_pos = positions.flatten_all()?;
        let half = self.cfg.head_dim / 2;
        let cos = self.cos.index_select(&flat_pos, 0)?.reshape((b, t, half))?;
        let sin = self.sin.index_select(&flat_pos, 0)?.reshape((b, t, half))?;

        // Blocks past the deepest requested point are skipped when no logits are wanted.
        let last_block = if logits != Logits::None || points.contains(&Point::FinalNorm) {
            self.blocks.len()
        } else {
            points
                .iter()
                .map(|p| match p {
                    Point::Residual(i) | Point::MlpInput(i) => i + 1,
                    Point::FinalNorm => self.blocks.len(),
                })
                .max()
                .unwrap_or(0)
        };
        let mut hidden: Vec<Option<Tensor>> = vec![None; points.len()];
        let mut capture = |p: Point, x: &Tensor| {
            for (slot, want) in hidden.iter_mut().zip(points) {
                if *want == p {
                    *slot = Some(x.clone());
                }
            }
        };

        let mut x = self.embed.forward(ids)?;
        for (i, blk) in self.blocks.iter().enumerate().take(last_block) {
            let h = blk.attn_norm.forward(&x)?;
            let a = self.attention(blk, i, &h, &cos, &sin, bias.as_ref(), cache.as_deref_mut())?;
            x = (x + a)?;
            let m = blk.ffn_norm.forward(&x)?;
            capture(Point::MlpInput(i), &m);
            let g = candle_nn::ops::silu(&blk.gate.forward(&m)?)?;
            let u = blk.up.forward(&m)?;
            x = (x + blk.down.forward(&(g * u)?)?)?;
            capture(Point::Residual(i), &x);
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        let mut logits_out = None;
        if last_block == self.blocks.len() {
            let h = self.norm.forward(&x)?;
            capture(Point::FinalNorm, &h);
            logits_out = match logits {
                Logits::None => None,
                Logits::Last => Some(
                    self.lm_head
                        .forward(&h.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?)?,
                ),
                Logits::All => Some(self.lm_head.forward(&h)?),
            };
        }
        let hidden = hidden
            .into_iter()
            .map(|h| h.context("requested hidden state was not computed"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Output {
            logits: logits_out,
            hidden,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        blk: &Block,
        layer: usize,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let rep = nh / nkv;
        let split = |y: Tensor, heads: usize| -> candle_core::Result<Tensor> {
            y.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = split(blk.q.forward(x)?, nh)?;
        let k = split(blk.k.forward(x)?, nkv)?;
        let v = split(blk.v.forward(x)?, nkv)?;
        let rope = |y: &Tensor| {
            if c.rope_interleaved {
                candle_nn::rotary_emb::rope_i(y, cos, sin)
            } else {
                candle_nn::rotary_emb::rope(y, cos, sin)
            }
        };
        let (q, k) = (rope(&q)?, rope(&k)?);
        let (k, v) = match cache {
            Some(cache) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        let total = k.dim(2)?;
        // Grouped-query attention without copying keys: the `rep` query heads that share a
        // key/value head are stacked along the sequence axis of one matmul.
        let q = (q.reshape((b, nkv, rep * t, hd))? * (1.0 / (hd as f64).sqrt()))?;
        let att = q.matmul(&k.t()?)?.reshape((b, nkv, rep, t, total))?;
        let att = match bias {
            Some(bias) => att.broadcast_add(&bias.unsqueeze(1)?)?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att.reshape((b, nkv, rep * t, total))?)?;
        let y = att.matmul(&v)?.reshape((b, nh, t, hd))?;
        let y = y.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        blk.o.forward(&y)
    }

    /// Hidden size d.
    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }
}

/// The additive attention bias `[b, 1, t, past + t]`: 0 where query i may attend key j
/// (causal, key not padding, and with a `window` fewer than `window` positions back), −∞
/// elsewhere. A query always sees itself, so padded query rows never become all −∞
/// (which would give NaN). Within a row, padding only precedes or follows the real tokens,
/// so index distance equals position distance between real tokens.
pub(crate) fn attention_bias(
    b: usize,
    t: usize,
    past: usize,
    key_mask: Option<&Tensor>,
    window: Option<usize>,
) -> candle_core::Result<Option<Tensor>> {
    let total = past + t;
    let window_bites = window.is_some_and(|w| total > w);
    if key_mask.is_none() && t == 1 && !window_bites {
        return Ok(None);
    }
    let keys: Vec<u8> = match key_mask {
        Some(m) => m.to_dtype(DType::U8)?.flatten_all()?.to_vec1()?,
        None => vec![1; b * total],
    };
    if keys.len() != b * total {
        candle_core::bail!("key mask has {} entries, expected {b}×{total}", keys.len());
    }
    let mut bias = vec![0f32; b * t * total];
    for s in 0..b {
        for i in 0..t {
            let row = &mut bias[(s * t + i) * total..(s * t + i + 1) * total];
            for (j, v) in row.iter_mut().enumerate() {
                let causal = j <= past + i && window.is_none_or(|w| past + i - j < w);
                let visible = keys[s * total + j] != 0 || j == past + i;
                if !(causal && visible) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
    }
    Ok(Some(
        Tensor::from_vec(bias, (b, t, total), &Device::Cpu)?.unsqueeze(1)?,
    ))
}

/// Mean over the real tokens of `[b, t, d]` hidden states (`mask` `[b, t]`, 1 = real):
/// the paper's pooling. Padding never contributes.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1f32, f32::MAX)?;
    sum.broadcast_div(&count)
}
