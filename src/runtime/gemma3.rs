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
//! gains at load. The capture points ([`Point`]) mean the same as in [`super::llama`].

use super::config::{rope_inv_freq_for, GemmaExtras, ModelConfig};
use super::llama::{attention_bias, KvCache, Logits, Output, Point, RmsNorm};
use super::weights::{Embedding, Linear, Precision, WeightSource};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

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

/// RoPE tables `[max_pos, head_dim/2]` for one base.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(inv_freq: Vec<f32>, max_pos: usize) -> Result<Self> {
        let half = inv_freq.len();
        let inv = Tensor::from_vec(inv_freq, (1, half), &Device::Cpu)?;
        let pos = Tensor::arange(0u32, max_pos as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?;
        let freqs = pos.matmul(&inv).context("RoPE table")?;
        Ok(Rope {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// `[b, t, head_dim/2]` cos and sin at the given flat positions.
    fn at(&self, flat_pos: &Tensor, b: usize, t: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.cos.dim(1)?;
        Ok((
            self.cos.index_select(flat_pos, 0)?.reshape((b, t, half))?,
            self.sin.index_select(flat_pos, 0)?.reshape((b, t, half))?,
        ))
    }
}

/// A loaded Gemma 3 model.
pub struct Gemma3 {
    /// Hyper-parameters.
    pub cfg: ModelConfig,
    extras: GemmaExtras,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
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
        let (embed, tied_head) = src.embedding(cfg.vocab_size, d, precision)?;
        cfg.tie_word_embeddings = !src.has("output", "weight");
        let lm_head = if cfg.tie_word_embeddings {
            tied_head
        } else {
            src.linear("output", cfg.vocab_size, d, false, precision)?
        };
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
        let flat_pos = positions.flatten_all()?;
        let local_rope = self.rope_local.at(&flat_pos, b, t)?;
        let global_rope = self.rope_global.at(&flat_pos, b, t)?;

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

        let mut x = (self.embed.forward(ids)? * (self.cfg.hidden_size as f64).sqrt())?;
        for (i, blk) in self.blocks.iter().enumerate().take(last_block) {
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
            capture(Point::MlpInput(i), &m);
            let g = blk.gate.forward(&m)?.gelu()?;
            let u = blk.up.forward(&m)?;
            let f = blk.down.forward(&(g * u)?)?;
            x = (x + blk.post_ffn_norm.forward(&f)?)?;
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

    fn attention(
        &self,
        blk: &Block,
        layer: usize,
        x: &Tensor,
        (cos, sin): &(Tensor, Tensor),
        bias: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let rep = nh / nkv;
        // Per-head RMSNorm on the last axis, then heads to axis 1.
        let split = |y: Tensor, heads: usize, norm: Option<&RmsNorm>| {
            let y = y.reshape((b, t, heads, hd))?;
            let y = match norm {
                Some(n) => n.forward(&y.contiguous()?)?,
                None => y,
            };
            y.transpose(1, 2)?.contiguous()
        };
        let q = split(blk.q.forward(x)?, nh, Some(&blk.q_norm))?;
        let k = split(blk.k.forward(x)?, nkv, Some(&blk.k_norm))?;
        let v = split(blk.v.forward(x)?, nkv, None)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k, v) = match cache {
            Some(cache) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        let total = k.dim(2)?;
        // As in the Llama pass: the query heads sharing a key/value head are stacked along
        // the sequence axis of one matmul instead of copying keys.
        let scale = 1.0 / self.extras.query_pre_attn_scalar.sqrt();
        let q = (q.reshape((b, nkv, rep * t, hd))? * scale)?;
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
}
