//! Tiny random models (Llama, Qwen2 or Gemma 3 graph), written deterministically from a
//! seed, for tests.
//!
//! [`write_gguf`] and [`write_hf_folder`] with the same [`TinySpec`] and seed describe the
//! same model (up to the storage type's rounding): both are written from [`weights`], which
//! holds every tensor in Hugging Face naming and layout. The GGUF side follows llama.cpp's
//! converter (`convert_hf_to_gguf.py`), including its reordering of `q_proj` / `k_proj`
//! rows (see [`permute_qk`]).
//!
//! [`Breakage`] writes broken variants for error-path tests.

mod gguf_out;
mod hf_out;
pub mod vocab;

pub use gguf_out::{write_gguf, write_gguf_with_meta};
pub use hf_out::{write_hf_folder, HfDtype};

use anyhow::{bail, Result};

/// Which graph a tiny model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TinyFamily {
    /// Llama (GGUF q/k rows permuted for interleaved RoPE).
    #[default]
    Llama,
    /// Qwen2: Llama plus q/k/v biases; q/k not permuted.
    Qwen2,
    /// Gemma 3: q/k norms, post-attention and post-feed-forward norms, GeGLU, local
    /// layers with a sliding window (every 6th layer global, as llama.cpp assumes).
    Gemma3,
}

/// Hyper-parameters of a tiny model. The vocabulary is fixed ([`vocab::vocab`], 304 tokens).
#[derive(Clone, Debug)]
pub struct TinySpec {
    /// The graph.
    pub family: TinyFamily,
    /// Gemma 3 only: keys a local layer sees (its own position included).
    pub sliding_window: usize,
    /// Number of transformer blocks.
    pub blocks: usize,
    /// Hidden size (a multiple of 32 for quantised GGUF types).
    pub d: usize,
    /// MLP width (a multiple of 32 for quantised GGUF types).
    pub d_ff: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Context length.
    pub context: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Share the output matrix with the token embedding (no `output.weight` / `lm_head`).
    pub tie_embeddings: bool,
    /// Number of safetensors shards of the HF folder (1: a single `model.safetensors`).
    pub hf_shards: usize,
    /// A defect to write on purpose.
    pub breakage: Breakage,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            family: TinyFamily::Llama,
            sliding_window: 4,
            blocks: 2,
            d: 64,
            d_ff: 128,
            heads: 4,
            kv_heads: 2,
            context: 256,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
            tie_embeddings: false,
            hf_shards: 1,
            breakage: Breakage::None,
        }
    }
}

/// Defects for error-path tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakage {
    /// A correct model.
    None,
    /// The (last) weight file is cut short in the middle of its last tensor.
    Truncated,
    /// `blk.0.ffn_gate.weight` / layer 0 `gate_proj` has one row too many (`d_ff + 1`).
    WrongShape,
    /// Architecture `tinyunknown` (GGUF keys `tinyunknown.*`; HF `TinyUnknownForCausalLM`).
    UnknownArchitecture,
    /// No tokenizer: no `tokenizer.*` GGUF keys; no `tokenizer.json` in the HF folder.
    MissingTokenizer,
}

impl TinySpec {
    /// Size of the fixed vocabulary.
    pub fn vocab(&self) -> usize {
        vocab::vocab().tokens.len()
    }

    /// Per-head dimension.
    pub fn head_dim(&self) -> usize {
        self.d / self.heads
    }

    /// Checks the dimensions are consistent.
    pub fn validate(&self) -> Result<()> {
        if self.blocks == 0 || self.d == 0 || self.d_ff == 0 || self.heads == 0 {
            bail!("tiny spec: blocks, d, d_ff and heads must be positive: {self:?}");
        }
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            bail!(
                "tiny spec: heads {} not a multiple of kv_heads {}",
                self.heads,
                self.kv_heads
            );
        }
        if !self.d.is_multiple_of(self.heads) || !self.head_dim().is_multiple_of(2) {
            bail!(
                "tiny spec: d {} must split into {} heads of even size",
                self.d,
                self.heads
            );
        }
        if self.hf_shards == 0 {
            bail!("tiny spec: hf_shards must be at least 1");
        }
        Ok(())
    }
}

/// One tensor in Hugging Face naming and layout (row-major, slowest axis first).
#[derive(Clone, Debug)]
pub struct TinyTensor {
    /// HF name, e.g. `model.layers.0.mlp.gate_proj.weight`.
    pub name: String,
    /// HF shape, e.g. `[d_ff, d]`.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// All tensors of the tiny model in HF naming, in a fixed order. Each tensor's values depend
/// only on `seed` and its name.
pub fn weights(spec: &TinySpec, seed: u64) -> Result<Vec<TinyTensor>> {
    spec.validate()?;
    let (d, v, kv_dim) = (spec.d, spec.vocab(), spec.kv_heads * spec.head_dim());
    let mut out = Vec::new();
    let gemma = spec.family == TinyFamily::Gemma3;
    // Gemma's checkpoints store a norm gain as `w` in `x · (1 + w)`.
    let norm_centre = if gemma { 0.0 } else { 1.0 };
    let mut add = |name: String, shape: Vec<usize>, norm: bool| {
        let n = shape.iter().product();
        let mut rng = Rng::new(seed, &name);
        let fan_in = *shape.last().unwrap_or(&1) as f32;
        let data = if norm {
            (0..n).map(|_| norm_centre + 0.1 * rng.uniform()).collect()
        } else {
            (0..n).map(|_| rng.uniform() / fan_in.sqrt()).collect()
        };
        out.push(TinyTensor { name, shape, data });
    };
    add("model.embed_tokens.weight".into(), vec![v, d], false);
    for i in 0..spec.blocks {
        let p = format!("model.layers.{i}");
        let gate_rows = if i == 0 && spec.breakage == Breakage::WrongShape {
            spec.d_ff + 1
        } else {
            spec.d_ff
        };
        add(format!("{p}.input_layernorm.weight"), vec![d], true);
        add(format!("{p}.self_attn.q_proj.weight"), vec![d, d], false);
        add(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv_dim, d],
            false,
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv_dim, d],
            false,
        );
        add(format!("{p}.self_attn.o_proj.weight"), vec![d, d], false);
        if spec.family == TinyFamily::Qwen2 {
            // Biases as vectors of small random values (not norm-like).
            add(format!("{p}.self_attn.q_proj.bias"), vec![d], false);
            add(format!("{p}.self_attn.k_proj.bias"), vec![kv_dim], false);
            add(format!("{p}.self_attn.v_proj.bias"), vec![kv_dim], false);
        }
        if gemma {
            let hd = spec.head_dim();
            add(format!("{p}.self_attn.q_norm.weight"), vec![hd], true);
            add(format!("{p}.self_attn.k_norm.weight"), vec![hd], true);
            add(
                format!("{p}.pre_feedforward_layernorm.weight"),
                vec![d],
                true,
            );
            add(
                format!("{p}.post_feedforward_layernorm.weight"),
                vec![d],
                true,
            );
        }
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![d],
            true,
        );
        add(
            format!("{p}.mlp.gate_proj.weight"),
            vec![gate_rows, d],
            false,
        );
        add(format!("{p}.mlp.up_proj.weight"), vec![spec.d_ff, d], false);
        add(
            format!("{p}.mlp.down_proj.weight"),
            vec![d, spec.d_ff],
            false,
        );
    }
    add("model.norm.weight".into(), vec![d], true);
    if !spec.tie_embeddings {
        add("lm_head.weight".into(), vec![v, d], false);
    }
    Ok(out)
}

pub use super::names::gguf_name;

/// The GGUF name of a tiny tensor in its family's layout.
pub fn gguf_name_for(family: TinyFamily, hf: &str) -> Option<String> {
    let layout = match family {
        TinyFamily::Gemma3 => super::names::Layout::Gemma,
        _ => super::names::Layout::Llama,
    };
    super::names::gguf_name_in(layout, hf)
}

/// Reorders the rows of an HF `q_proj` (`n_head` = heads) or `k_proj` (`n_head` = kv heads)
/// weight into llama.cpp's GGUF order, as `LlamaModel.permute` in `convert_hf_to_gguf.py`.
///
/// HF stores each head's rotary pairs as (first half, second half) — row `j` pairs with row
/// `j + head_dim/2` ("rotate_half" RoPE) — while llama.cpp rotates adjacent rows (2j, 2j+1).
/// So within each head, GGUF row `2j + i` is HF row `i * head_dim/2 + j` (i ∈ {0, 1}).
/// `ffn_gate` and the other matrices are not permuted.
pub fn permute_qk(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for j in 0..hd / 2 {
            for i in 0..2 {
                let dst = h * hd + 2 * j + i;
                let src = h * hd + i * (hd / 2) + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// splitmix64, seeded from the seed and the tensor name: stable across versions and
/// platforms, unlike `rand`'s StdRng.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, name: &str) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Rng(seed ^ h)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

#[cfg(test)]
mod tests;
