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
//! last block anyone asked about; those shared pieces live in [`super::layers`].

use super::config::ModelConfig;
use super::layers::{
    attention, attention_bias, embedding_and_head, split_heads, KvCache, Logits, Output, Pass,
    Point, RmsNorm, Rope, RopeAt,
};
use super::weights::{Embedding, Linear, Precision, WeightSource};
use anyhow::Result;
use candle_core::Tensor;

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

/// A loaded Llama-family model.
pub struct Llama {
    /// Hyper-parameters.
    pub cfg: ModelConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    pub(crate) lm_head: Linear,
    rope: Rope,
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
        let (embed, lm_head) = embedding_and_head(src, &mut cfg, precision)?;
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
        Ok(Llama {
            rope: Rope::new(cfg.rope_inv_freq(), cfg.max_position_embeddings)?,
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
    /// - `points`: the states to hand back; blocks past the deepest one are skipped when
    ///   `logits` is [`Logits::None`].
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
        let rope = self.rope.at(positions)?;
        let mut pass = Pass::new(points, logits, self.blocks.len());

        let mut x = self.embed.forward(ids)?;
        for (i, blk) in self.blocks.iter().enumerate().take(pass.blocks) {
            let h = blk.attn_norm.forward(&x)?;
            let a = self.attention(blk, i, &h, &rope, bias.as_ref(), cache.as_deref_mut())?;
            x = (x + a)?;
            let m = blk.ffn_norm.forward(&x)?;
            pass.capture(Point::MlpInput(i), &m);
            let g = candle_nn::ops::silu(&blk.gate.forward(&m)?)?;
            let u = blk.up.forward(&m)?;
            x = (x + blk.down.forward(&(g * u)?)?)?;
            pass.capture(Point::Residual(i), &x);
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        pass.finish(&x, &self.norm, &self.lm_head)
    }

    /// Block `layer`'s self-attention on its normed input `x`, through the output
    /// projection.
    fn attention(
        &self,
        blk: &Block,
        layer: usize,
        x: &Tensor,
        rope: &RopeAt,
        bias: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let q = split_heads(blk.q.forward(x)?, nh, hd, None)?;
        let k = split_heads(blk.k.forward(x)?, nkv, hd, None)?;
        let v = split_heads(blk.v.forward(x)?, nkv, hd, None)?;
        let q = rope.rotate(&q, c.rope_interleaved)?;
        let k = rope.rotate(&k, c.rope_interleaved)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let y = attention(&q, k, v, scale, bias, cache.map(|c| (c, layer)))?;
        blk.o.forward(&y)
    }

    /// Hidden size d.
    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }
}
