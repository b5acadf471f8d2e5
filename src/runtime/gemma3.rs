//! The Gemma 3 (text) forward pass, top to bottom.
//!
//! ```text
//! x = embed(ids) · √d
//! for each block i (local = sliding-window attention unless (i+1) % 6 == 0):
//!     h = rms_norm(x)
//!     q, k, v = Wq·h, Wk·h, Wv·h;  q, k = rms_norm per head (q_norm, k_norm)
//!     q, k = rope(q, k)            -- base 10 000 on local layers, rope_theta on global ones
//!     a = attn(q / √query_pre_attn_scalar, k, v)   -- causal (+ window on local layers)
//!     x = x + rms_norm(Wo·a)                       -- post-attention norm
//!     m = rms_norm(x)                              -- the "MLP input" the gate rows read
//!     x = x + rms_norm(down(gelu_tanh(gate·m) * up·m))   -- post-feed-forward norm
//! h = rms_norm(x)
//! logits = h · Eᵀ                                   -- tied embeddings
//! ```
//!
//! Every RMSNorm multiplies by `1 + w` in Hugging Face's code; llama.cpp's converter stores
//! `1 + w` in the GGUF, so GGUF gains are used as stored and `1` is added to Hugging Face
//! gains at load. The capture points ([`Point`]) mean the same as in [`super::llama`]; the shared pieces
//! (attention, RoPE tables, cache, captures and the tail) live in [`super::layers`].

use super::config::{rope_inv_freq_for, GemmaExtras, ModelConfig};
use super::layers::{
    attention, attention_bias, embedding_and_head, split_heads, KvCache, Logits, Output, Pass,
    Point, RmsNorm, Rope, RopeAt,
};
use super::weights::{Embedding, Linear, Precision, WeightSource};
use anyhow::{Context, Result};
use candle_core::Tensor;

struct Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    o: Linear,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: RmsNorm,
}

/// A loaded Gemma 3 model.
pub struct Gemma3 {
    /// Hyper-parameters.
    pub cfg: ModelConfig,
    extras: GemmaExtras,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    pub(crate) lm_head: Linear,
    rope_local: Rope,
    rope_global: Rope,
}

impl Gemma3 {
    /// Loads every tensor the forward pass needs from `src`, checking shapes.
    pub fn load(
        src: &mut WeightSource,
        mut cfg: ModelConfig,
        precision: Precision,
    ) -> Result<Self> {
        let extras = cfg
            .gemma
            .clone()
            .context("Gemma 3 configuration without its local-attention parameters")?;
        let d = cfg.hidden_size;
        let hd = cfg.head_dim;
        let (kv_out, q_out) = (cfg.num_kv_heads * hd, cfg.num_heads * hd);
        let (embed, lm_head) = embedding_and_head(src, &mut cfg, precision)?;
        let eps = cfg.rms_norm_eps;
        let shift = if src.is_safetensors() { 1.0 } else { 0.0 };
        let norm = |src: &mut WeightSource, role: &str, len: usize| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: (src.vector(role, "weight", len)? + shift)?,
                eps,
            })
        };
        let f = cfg.intermediate_size;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: norm(src, &format!("{p}.attn_norm"), d)?,
                q: src.linear(&format!("{p}.attn_q"), q_out, d, false, precision)?,
                k: src.linear(&format!("{p}.attn_k"), kv_out, d, false, precision)?,
                v: src.linear(&format!("{p}.attn_v"), kv_out, d, false, precision)?,
                q_norm: norm(src, &format!("{p}.attn_q_norm"), hd)?,
                k_norm: norm(src, &format!("{p}.attn_k_norm"), hd)?,
                o: src.linear(&format!("{p}.attn_output"), d, q_out, false, precision)?,
                post_attn_norm: norm(src, &format!("{p}.post_attention_norm"), d)?,
                ffn_norm: norm(src, &format!("{p}.ffn_norm"), d)?,
                gate: src.linear(&format!("{p}.ffn_gate"), f, d, false, precision)?,
                up: src.linear(&format!("{p}.ffn_up"), f, d, false, precision)?,
                down: src.linear(&format!("{p}.ffn_down"), d, f, false, precision)?,
                post_ffn_norm: norm(src, &format!("{p}.post_ffw_norm"), d)?,
            });
        }
        let final_norm = norm(src, "output_norm", d)?;
        let max_pos = cfg.max_position_embeddings;
        let global: Vec<f32> = rope_inv_freq_for(cfg.rope_theta, hd)
            .into_iter()
            .map(|f| f / extras.rope_global_factor)
            .collect();
        Ok(Gemma3 {
            rope_local: Rope::new(rope_inv_freq_for(extras.rope_local_theta, hd), max_pos)?,
            rope_global: Rope::new(global, max_pos)?,
            cfg,
            extras,
            embed,
            blocks,
            norm: final_norm,
            lm_head,
        })
    }

    /// Runs the model; arguments and result as [`super::Llama::forward`].
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
        let global_bias = attention_bias(b, t, past, key_mask, None)?;
        let local_bias = attention_bias(b, t, past, key_mask, Some(self.extras.sliding_window))?;
        let local_rope = self.rope_local.at(positions)?;
        let global_rope = self.rope_global.at(positions)?;
        let mut pass = Pass::new(points, logits, self.blocks.len());

        let mut x = (self.embed.forward(ids)? * (self.cfg.hidden_size as f64).sqrt())?;
        for (i, blk) in self.blocks.iter().enumerate().take(pass.blocks) {
            let local = self.extras.is_local(i);
            let (rope, bias) = if local {
                (&local_rope, local_bias.as_ref())
            } else {
                (&global_rope, global_bias.as_ref())
            };
            let h = blk.attn_norm.forward(&x)?;
            let a = self.attention(blk, i, &h, rope, bias, cache.as_deref_mut())?;
            x = (x + blk.post_attn_norm.forward(&a)?)?;
            let m = blk.ffn_norm.forward(&x)?;
            pass.capture(Point::MlpInput(i), &m);
            let g = blk.gate.forward(&m)?.gelu()?;
            let u = blk.up.forward(&m)?;
            let f = blk.down.forward(&(g * u)?)?;
            x = (x + blk.post_ffn_norm.forward(&f)?)?;
            pass.capture(Point::Residual(i), &x);
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        pass.finish(&x, &self.norm, &self.lm_head)
    }

    /// Block `layer`'s self-attention on its normed input `x`, through the output
    /// projection (before the post-attention norm).
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
        let q = split_heads(blk.q.forward(x)?, nh, hd, Some(&blk.q_norm))?;
        let k = split_heads(blk.k.forward(x)?, nkv, hd, Some(&blk.k_norm))?;
        let v = split_heads(blk.v.forward(x)?, nkv, hd, None)?;
        let q = rope.rotate(&q, false)?;
        let k = rope.rotate(&k, false)?;
        let scale = 1.0 / self.extras.query_pre_attn_scalar.sqrt();
        let y = attention(&q, k, v, scale, bias, cache.map(|c| (c, layer)))?;
        blk.o.forward(&y)
    }
}
