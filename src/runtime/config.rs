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

fn md<'a>(meta: &'a HashMap<String, gguf_file::Value>, key: &str) -> Result<&'a gguf_file::Value> {
    meta.get(key)
        .with_context(|| format!("missing metadata key `{key}`"))
}

fn md_usize(meta: &HashMap<String, gguf_file::Value>, key: &str) -> Result<usize> {
    let v = md(meta, key)?;
    let n = match v {
        gguf_file::Value::U64(x) => *x,
        gguf_file::Value::I64(x) => *x as u64,
        _ => v
            .to_u32()
            .map(u64::from)
            .or_else(|_| v.to_i32().map(|x| x as u64))
            .with_context(|| format!("metadata key `{key}` is not an integer"))?,
    };
    Ok(n as usize)
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
            md_usize(meta, &format!("{p}.attention.head_count_kv")).unwrap_or(num_heads);
        let head_dim = md_usize(meta, &format!("{p}.attention.key_length"))
            .or_else(|_| md_usize(meta, &format!("{p}.rope.dimension_count")))
            .unwrap_or(hidden_size / num_heads.max(1));
        let cfg = ModelConfig {
            arch,
            vocab_size: md_usize(meta, &format!("{p}.vocab_size")).unwrap_or(n_vocab_tensor),
            hidden_size,
            intermediate_size: md_usize(meta, &format!("{p}.feed_forward_length"))?,
            num_layers: md_usize(meta, &format!("{p}.block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: md_f32(meta, &format!("{p}.attention.layer_norm_rms_epsilon"))? as f64,
            rope_theta: md_f32(meta, &format!("{p}.rope.freq_base")).unwrap_or(10_000.0),
            rope_scaling: None,
            max_position_embeddings: md_usize(meta, &format!("{p}.context_length")).unwrap_or(4096),
            tie_word_embeddings: false, // decided by the loader: no `output.weight` means tied
            attention_bias: arch == Arch::Qwen2,
            // llama.cpp permutes q/k only for the Llama family; Qwen2 and Gemma 3 keep HF's
            // layout (llama.cpp runs them with NeoX-style RoPE).
            rope_interleaved: arch == Arch::Llama,
            gemma: None,
        };
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
        let get = |k: &str| -> Result<usize> {
            j[k].as_u64()
                .map(|x| x as usize)
                .with_context(|| format!("{}: missing integer `{k}`", path.display()))
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
            num_kv_heads: get("num_key_value_heads").unwrap_or(num_heads),
            head_dim: get("head_dim").unwrap_or(hidden_size / num_heads.max(1)),
            rms_norm_eps: j["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta: j["rope_theta"].as_f64().unwrap_or(10_000.0) as f32,
            rope_scaling,
            max_position_embeddings: get("max_position_embeddings").unwrap_or(4096),
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
                None => get("sliding_window_pattern").unwrap_or(6),
            };
            cfg.gemma = Some(GemmaExtras {
                sliding_window: get("sliding_window")?,
                sliding_window_pattern: pattern,
                rope_local_theta: j["rope_local_base_freq"].as_f64().unwrap_or(10_000.0) as f32,
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
        if !self.head_dim.is_multiple_of(2) {
            bail!("head dimension {} is odd; RoPE needs pairs", self.head_dim);
        }
        if self.hidden_size == 0 || self.num_layers == 0 || self.intermediate_size == 0 {
            bail!("zero-sized model dimension in config");
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
