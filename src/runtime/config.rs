//! Model hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.
//!
//! Both sources are mapped onto one [`ModelConfig`], so the forward pass never needs to
//! know which file format the weights came from — except for the RoPE layout, which
//! llama.cpp's converter changes (see [`ModelConfig::rope_interleaved`]).

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use std::collections::HashMap;
use std::path::Path;

/// Architectures the runtime can run. All are decoder-only with a gated MLP whose
/// `gate_proj` rows are what Model Surgery edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Arch {
    /// Llama 1/2/3, SmolLM, TinyLlama; also Mistral (same graph without sliding window).
    Llama,
    /// Qwen2 / Qwen2.5: Llama graph plus biases on q, k and v.
    Qwen2,
    /// Gemma 3 (text): extra norms, GeGLU, scaled embeddings, local/global attention
    /// (see [`crate::runtime::gemma3`]).
    Gemma3,
}

impl Arch {
    /// Maps a GGUF `general.architecture` or HF `architectures[0]` value.
    pub fn parse(name: &str) -> Option<Arch> {
        match name {
            "llama" | "mistral" | "LlamaForCausalLM" | "MistralForCausalLM" => Some(Arch::Llama),
            "qwen2" | "Qwen2ForCausalLM" => Some(Arch::Qwen2),
            "gemma3" | "Gemma3ForCausalLM" => Some(Arch::Gemma3),
            _ => None,
        }
    }
}

/// The hyper-parameters the forward pass needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    /// Llama-3 style frequency scaling, when the model has one.
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// True when q/k use biases (Qwen2).
    pub attention_bias: bool,
    /// llama.cpp's converter permutes the rows of q and k of Llama models so that RoPE
    /// rotates adjacent pairs (2i, 2i+1); Hugging Face checkpoints rotate halves
    /// (i, i + d/2). The weights are used as stored and the matching rotation is chosen.
    pub rope_interleaved: bool,
    /// Gemma 3 only (`None` otherwise): local attention layers and their RoPE.
    pub gemma: Option<GemmaExtras>,
}

/// What Gemma 3 adds to the Llama hyper-parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GemmaExtras {
    /// Keys a local layer's query sees: its own position and the `sliding_window - 1`
    /// before it.
    pub sliding_window: usize,
    /// Layer `i` is global (full attention) when `(i + 1) % pattern == 0`, local otherwise.
    pub sliding_window_pattern: usize,
    /// RoPE base of the local layers (the global ones use `rope_theta`).
    pub rope_local_theta: f32,
    /// Linear RoPE scaling factor of the global layers (1 when none).
    pub rope_global_factor: f32,
    /// Queries are scaled by `query_pre_attn_scalar^-1/2` (not always `head_dim^-1/2`).
    pub query_pre_attn_scalar: f64,
}

impl GemmaExtras {
    /// Whether layer `i` uses sliding-window (local) attention.
    pub fn is_local(&self, layer: usize) -> bool {
        !(layer + 1).is_multiple_of(self.sliding_window_pattern.max(1))
    }
}

/// Llama-3 RoPE frequency scaling (`rope_type = "llama3"`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// Upper bounds on sizes read from model files (see [`ModelConfig::validate`]).
pub const MAX_LAYERS: usize = 1024;
/// Hidden and feed-forward widths.
pub const MAX_WIDTH: usize = 1 << 20;
/// Attention heads (query or key/value).
pub const MAX_HEADS: usize = 4096;
/// Per-head dimension.
pub const MAX_HEAD_DIM: usize = 4096;
/// Vocabulary entries.
pub const MAX_VOCAB: usize = 1 << 22;
/// Context length: the RoPE table is `context × head_dim / 2` floats, allocated at load.
pub const MAX_CONTEXT: usize = 1 << 20;

fn md<'a>(meta: &'a HashMap<String, gguf_file::Value>, key: &str) -> Result<&'a gguf_file::Value> {
    meta.get(key)
        .with_context(|| format!("missing metadata key `{key}`"))
}

fn md_usize(meta: &HashMap<String, gguf_file::Value>, key: &str) -> Result<usize> {
    use gguf_file::Value as V;
    let v = md(meta, key)?;
    let n: i128 = match v {
        V::U8(x) => i128::from(*x),
        V::I8(x) => i128::from(*x),
        V::U16(x) => i128::from(*x),
        V::I16(x) => i128::from(*x),
        V::U32(x) => i128::from(*x),
        V::I32(x) => i128::from(*x),
        V::U64(x) => i128::from(*x),
        V::I64(x) => i128::from(*x),
        _ => bail!("metadata key `{key}` is not an integer"),
    };
    // A negative count read as unsigned would wrap to ~2^64 and abort an allocation later.
    if n < 0 {
        bail!("metadata key `{key}` is negative ({n})");
    }
    usize::try_from(n).with_context(|| format!("metadata key `{key}` = {n} is too large"))
}

/// `Ok(None)` when the key is absent; an error when present but not a valid count.
fn md_usize_opt(meta: &HashMap<String, gguf_file::Value>, key: &str) -> Result<Option<usize>> {
    match meta.contains_key(key) {
        true => md_usize(meta, key).map(Some),
        false => Ok(None),
    }
}

fn md_f32_opt(meta: &HashMap<String, gguf_file::Value>, key: &str) -> Result<Option<f32>> {
    match meta.contains_key(key) {
        true => md_f32(meta, key).map(Some),
        false => Ok(None),
    }
}

fn md_f32(meta: &HashMap<String, gguf_file::Value>, key: &str) -> Result<f32> {
    let v = md(meta, key)?;
    v.to_f32()
        .or_else(|_| v.to_f64().map(|x| x as f32))
        .with_context(|| format!("metadata key `{key}` is not a float"))
}

impl ModelConfig {
    /// Reads the configuration of a GGUF file from its metadata.
    pub fn from_gguf(
        meta: &HashMap<String, gguf_file::Value>,
        n_vocab_tensor: usize,
    ) -> Result<Self> {
        let arch_name = md(meta, "general.architecture")?
            .to_string()
            .context("`general.architecture` is not a string")?
            .clone();
        let arch = Arch::parse(&arch_name).with_context(|| {
            format!(
                "unsupported architecture `{arch_name}` (supported: llama, mistral, qwen2, gemma3)"
            )
        })?;
        let p = arch_name.as_str();
        let hidden_size = md_usize(meta, &format!("{p}.embedding_length"))?;
        let num_heads = md_usize(meta, &format!("{p}.attention.head_count"))?;
        let num_kv_heads =
            md_usize_opt(meta, &format!("{p}.attention.head_count_kv"))?.unwrap_or(num_heads);
        let head_dim = match md_usize_opt(meta, &format!("{p}.attention.key_length"))? {
            Some(k) => k,
            None => md_usize_opt(meta, &format!("{p}.rope.dimension_count"))?
                .unwrap_or(hidden_size / num_heads.max(1)),
        };
        let cfg = ModelConfig {
            arch,
            vocab_size: md_usize_opt(meta, &format!("{p}.vocab_size"))?.unwrap_or(n_vocab_tensor),
            hidden_size,
            intermediate_size: md_usize(meta, &format!("{p}.feed_forward_length"))?,
            num_layers: md_usize(meta, &format!("{p}.block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: md_f32(meta, &format!("{p}.attention.layer_norm_rms_epsilon"))? as f64,
            rope_theta: md_f32_opt(meta, &format!("{p}.rope.freq_base"))?.unwrap_or(10_000.0),
            rope_scaling: None,
            max_position_embeddings: md_usize_opt(meta, &format!("{p}.context_length"))?
                .unwrap_or(4096),
            tie_word_embeddings: false, // decided by the loader: no `output.weight` means tied
            attention_bias: arch == Arch::Qwen2,
            // llama.cpp permutes q/k only for the Llama family; Qwen2 and Gemma 3 keep HF's
            // layout (llama.cpp runs them with NeoX-style RoPE).
            rope_interleaved: arch == Arch::Llama,
            gemma: None,
        };
        if arch != Arch::Gemma3 {
            // Llama-3 frequency scaling travels as a `rope_freqs` tensor, not as this key;
            // linear (factor ≠ 1) or YaRN scaling is not implemented for these graphs, and
            // running without it would be another model, so it is refused.
            let key = format!("{p}.rope.scaling.type");
            if let Some(v) = meta.get(&key) {
                let t = v
                    .to_string()
                    .with_context(|| format!("metadata key `{key}` is not a string"))?;
                let factor = md_f32_opt(meta, &format!("{p}.rope.scaling.factor"))?;
                let no_op = t == "none" || (t == "linear" && matches!(factor, None | Some(1.0)));
                if !no_op {
                    bail!(
                        "unsupported {key} `{t}` (factor {}) for {arch_name}: only unscaled RoPE is implemented",
                        factor.map_or("none".into(), |f| f.to_string())
                    );
                }
            }
        }
        let mut cfg = cfg;
        if arch == Arch::Gemma3 {
            let head_dim = cfg.head_dim as f64;
            let scaling = meta
                .get(&format!("{p}.rope.scaling.type"))
                .and_then(|v| v.to_string().ok().cloned());
            let factor = match scaling.as_deref() {
                Some("linear") => md_f32(meta, &format!("{p}.rope.scaling.factor"))?,
                None | Some("none") => 1.0,
                Some(other) => bail!("unsupported {p}.rope.scaling.type `{other}` (only linear)"),
            };
            // llama.cpp hard-codes these for Gemma 3 (they are not in the GGUF metadata):
            // every 6th layer global, local RoPE base 10 000, queries scaled by head_dim^-1/2
            // (27B, whose query_pre_attn_scalar differs, is not supported here).
            cfg.gemma = Some(GemmaExtras {
                sliding_window: md_usize(meta, &format!("{p}.attention.sliding_window"))?,
                sliding_window_pattern: 6,
                rope_local_theta: 10_000.0,
                rope_global_factor: factor,
                query_pre_attn_scalar: head_dim,
            });
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let j: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let arch_name = j["architectures"][0]
            .as_str()
            .or_else(|| j["model_type"].as_str())
            .with_context(|| format!("{}: no `architectures` entry", path.display()))?;
        let arch = Arch::parse(arch_name).with_context(|| {
            format!(
                "{}: unsupported architecture `{arch_name}` (supported: LlamaForCausalLM, \
                 MistralForCausalLM, Qwen2ForCausalLM, Gemma3ForCausalLM)",
                path.display()
            )
        })?;
        let opt = |k: &str| -> Result<Option<usize>> {
            match &j[k] {
                serde_json::Value::Null => Ok(None),
                v => v
                    .as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .map(Some)
                    .with_context(|| {
                        format!(
                            "{}: `{k}` = {v} is not a non-negative integer",
                            path.display()
                        )
                    }),
            }
        };
        let get = |k: &str| -> Result<usize> {
            opt(k)?.with_context(|| format!("{}: missing integer `{k}`", path.display()))
        };
        let float = |k: &str, default: f64| -> Result<f64> {
            match &j[k] {
                serde_json::Value::Null => Ok(default),
                v => v
                    .as_f64()
                    .with_context(|| format!("{}: `{k}` = {v} is not a number", path.display())),
            }
        };
        let hidden_size = get("hidden_size")?;
        let num_heads = get("num_attention_heads")?;
        let gemma_rope_factor = match (&j["rope_scaling"], arch) {
            (serde_json::Value::Object(o), Arch::Gemma3)
                if o.get("rope_type")
                    .or(o.get("type"))
                    .and_then(|v| v.as_str())
                    == Some("linear") =>
            {
                o.get("factor").and_then(|v| v.as_f64()).unwrap_or(1.0) as f32
            }
            _ => 1.0,
        };
        let rope_scaling = match &j["rope_scaling"] {
            _ if gemma_rope_factor != 1.0 => None,
            serde_json::Value::Object(o)
                if o.get("rope_type")
                    .or(o.get("type"))
                    .and_then(|v| v.as_str())
                    == Some("llama3") =>
            {
                let f = |k: &str| o.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0) as f32;
                Some(RopeScaling {
                    factor: f("factor"),
                    low_freq_factor: f("low_freq_factor"),
                    high_freq_factor: f("high_freq_factor"),
                    original_max_position_embeddings: o
                        .get("original_max_position_embeddings")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(8192)
                        as usize,
                })
            }
            serde_json::Value::Null => None,
            other => bail!(
                "{}: unsupported rope_scaling {other} (only llama3 scaling is implemented)",
                path.display()
            ),
        };
        let cfg = ModelConfig {
            arch,
            vocab_size: get("vocab_size")?,
            hidden_size,
            intermediate_size: get("intermediate_size")?,
            num_layers: get("num_hidden_layers")?,
            num_heads,
            num_kv_heads: opt("num_key_value_heads")?.unwrap_or(num_heads),
            head_dim: opt("head_dim")?.unwrap_or(hidden_size / num_heads.max(1)),
            rms_norm_eps: float("rms_norm_eps", 1e-6)?,
            rope_theta: float("rope_theta", 10_000.0)? as f32,
            rope_scaling,
            max_position_embeddings: opt("max_position_embeddings")?.unwrap_or(4096),
            tie_word_embeddings: j["tie_word_embeddings"].as_bool().unwrap_or(false),
            attention_bias: arch == Arch::Qwen2 || j["attention_bias"].as_bool().unwrap_or(false),
            rope_interleaved: false,
            gemma: None,
        };
        let mut cfg = cfg;
        if arch == Arch::Gemma3 {
            // Newer configs list `layer_types`; older ones give `sliding_window_pattern`.
            let pattern = match j["layer_types"].as_array() {
                Some(types) => {
                    let global: Vec<usize> = types
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| t.as_str() == Some("full_attention"))
                        .map(|(i, _)| i + 1)
                        .collect();
                    let p = global.first().copied().unwrap_or(types.len() + 1);
                    if global.iter().enumerate().any(|(k, &g)| g != (k + 1) * p) {
                        bail!(
                            "{}: layer_types is not a regular local/global pattern",
                            path.display()
                        );
                    }
                    p
                }
                None => opt("sliding_window_pattern")?.unwrap_or(6),
            };
            cfg.gemma = Some(GemmaExtras {
                sliding_window: get("sliding_window")?,
                sliding_window_pattern: pattern,
                rope_local_theta: float("rope_local_base_freq", 10_000.0)? as f32,
                rope_global_factor: gemma_rope_factor,
                query_pre_attn_scalar: j["query_pre_attn_scalar"]
                    .as_f64()
                    .unwrap_or(cfg.head_dim as f64),
            });
            // Gemma checkpoints tie the output head by default.
            cfg.tie_word_embeddings = j["tie_word_embeddings"].as_bool().unwrap_or(true);
        }
        cfg.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        // Sizes are bounded before anything is allocated from them: a crafted file must be
        // refused with a message, not abort on a multi-terabyte allocation. The bounds are
        // far above any model the runtime can run on a CPU.
        let bounds: [(&str, usize, usize); 8] = [
            ("block count", self.num_layers, MAX_LAYERS),
            ("hidden size", self.hidden_size, MAX_WIDTH),
            ("feed-forward size", self.intermediate_size, MAX_WIDTH),
            ("attention head count", self.num_heads, MAX_HEADS),
            ("key/value head count", self.num_kv_heads, MAX_HEADS),
            ("head dimension", self.head_dim, MAX_HEAD_DIM),
            ("vocabulary size", self.vocab_size, MAX_VOCAB),
            ("context length", self.max_position_embeddings, MAX_CONTEXT),
        ];
        for (what, v, max) in bounds {
            if v > max {
                bail!("{what} {v} is out of range (at most {max} is supported)");
            }
        }
        if self.max_position_embeddings == 0 {
            bail!("context length is 0");
        }
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            bail!(
                "attention heads {} not a multiple of key/value heads {}",
                self.num_heads,
                self.num_kv_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            bail!(
                "head dimension {} is zero or odd; RoPE needs pairs",
                self.head_dim
            );
        }
        if self.hidden_size == 0 || self.num_layers == 0 || self.intermediate_size == 0 {
            bail!("zero-sized model dimension in config");
        }
        // NaN or 0 here makes every hidden state NaN (0/0 in RMSNorm, 1/0^x in RoPE), and a
        // NaN model must never reach an evaluation that would score it.
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            bail!(
                "RMSNorm epsilon {} must be finite and positive",
                self.rms_norm_eps
            );
        }
        let mut thetas = vec![("RoPE base", self.rope_theta)];
        if let Some(g) = &self.gemma {
            thetas.push(("local RoPE base", g.rope_local_theta));
            thetas.push(("RoPE scaling factor", g.rope_global_factor));
            if !(g.query_pre_attn_scalar.is_finite() && g.query_pre_attn_scalar > 0.0) {
                bail!(
                    "query_pre_attn_scalar {} must be finite and positive",
                    g.query_pre_attn_scalar
                );
            }
        }
        if let Some(r) = &self.rope_scaling {
            thetas.push(("RoPE scaling factor", r.factor));
            thetas.push(("RoPE low_freq_factor", r.low_freq_factor));
            thetas.push(("RoPE high_freq_factor", r.high_freq_factor));
            if r.high_freq_factor <= r.low_freq_factor || r.original_max_position_embeddings == 0 {
                bail!("RoPE llama3 scaling needs high_freq_factor > low_freq_factor and a positive original context");
            }
        }
        for (what, v) in thetas {
            if !(v.is_finite() && v > 0.0) {
                bail!("{what} {v} must be finite and positive");
            }
        }
        Ok(())
    }

    /// RoPE inverse frequencies, with Llama-3 scaling applied when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let base = rope_inv_freq_for(self.rope_theta, self.head_dim);
        let Some(s) = &self.rope_scaling else {
            return base;
        };
        let old = s.original_max_position_embeddings as f32;
        let low_wavelen = old / s.low_freq_factor;
        let high_wavelen = old / s.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }
}

/// Plain RoPE inverse frequencies `theta^(-2i/d)` for a head dimension `d`.
pub fn rope_inv_freq_for(theta: f32, d: usize) -> Vec<f32> {
    (0..d)
        .step_by(2)
        .map(|i| 1.0 / theta.powf(i as f32 / d as f32))
        .collect()
}
