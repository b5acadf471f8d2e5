//! The tiny model as a Hugging Face folder: `config.json`, tokenizer files and safetensors
//! weights (one file, or shards with `model.safetensors.index.json`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

use super::{vocab, weights, Breakage, TinyFamily, TinySpec};

/// Storage dtype of the HF weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
}

impl HfDtype {
    fn st(self) -> Dtype {
        match self {
            HfDtype::F32 => Dtype::F32,
            HfDtype::F16 => Dtype::F16,
            HfDtype::BF16 => Dtype::BF16,
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            HfDtype::F32 => "float32",
            HfDtype::F16 => "float16",
            HfDtype::BF16 => "bfloat16",
        }
    }

    fn bytes(self, xs: &[f32]) -> Vec<u8> {
        match self {
            HfDtype::F32 => xs.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HfDtype::F16 => xs
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
            HfDtype::BF16 => xs
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
        }
    }
}

/// Writes the tiny model into folder `dir` (created if missing; files in it overwritten).
pub fn write_hf_folder(dir: &Path, spec: &TinySpec, seed: u64, dtype: HfDtype) -> Result<()> {
    write_inner(dir, spec, seed, dtype)
        .with_context(|| format!("writing tiny HF model {}", dir.display()))
}

fn write_inner(dir: &Path, spec: &TinySpec, seed: u64, dtype: HfDtype) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let (arch, model_type) = match (spec.breakage, spec.family) {
        (Breakage::UnknownArchitecture, _) => ("TinyUnknownForCausalLM", "tinyunknown"),
        (_, TinyFamily::Llama) => ("LlamaForCausalLM", "llama"),
        (_, TinyFamily::Qwen2) => ("Qwen2ForCausalLM", "qwen2"),
        (_, TinyFamily::Gemma3) => ("Gemma3ForCausalLM", "gemma3_text"),
    };
    let mut config = json!({
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": spec.d,
        "intermediate_size": spec.d_ff,
        "num_hidden_layers": spec.blocks,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": spec.head_dim(),
        "max_position_embeddings": spec.context,
        "rms_norm_eps": spec.rms_eps,
        "rope_theta": spec.rope_theta,
        "vocab_size": spec.vocab(),
        "tie_word_embeddings": spec.tie_embeddings,
        "hidden_act": "silu",
        "bos_token_id": vocab::BOS_ID,
        "eos_token_id": vocab::EOS_ID,
        "torch_dtype": dtype.torch_name(),
    });
    if spec.family == TinyFamily::Gemma3 {
        let layer_types: Vec<&str> = (0..spec.blocks)
            .map(|i| {
                if (i + 1) % 6 == 0 {
                    "full_attention"
                } else {
                    "sliding_attention"
                }
            })
            .collect();
        let extra = json!({
            "hidden_activation": "gelu_pytorch_tanh",
            "sliding_window": spec.sliding_window,
            "layer_types": layer_types,
            "rope_local_base_freq": 10000.0,
            "query_pre_attn_scalar": spec.head_dim(),
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
    }
    write_json(&dir.join("config.json"), &config)?;
    if spec.breakage != Breakage::MissingTokenizer {
        write_json(
            &dir.join("tokenizer.json"),
            &vocab::tokenizer_json(&vocab::vocab()),
        )?;
    }
    let tok_config = json!({
        "bos_token": vocab::SPECIALS[vocab::BOS_ID as usize],
        "eos_token": vocab::SPECIALS[vocab::EOS_ID as usize],
        "pad_token": vocab::SPECIALS[vocab::EOS_ID as usize],
        "chat_template": vocab::CHAT_TEMPLATE,
        "model_max_length": spec.context,
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": false,
    });
    write_json(&dir.join("tokenizer_config.json"), &tok_config)?;

    let tensors = weights(spec, seed)?;
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| dtype.bytes(&t.data)).collect();
    let n_shards = spec.hf_shards.min(tensors.len());
    let per = tensors.len().div_ceil(n_shards);
    let info = HashMap::from([("format".to_string(), "pt".to_string())]);
    let mut weight_map = serde_json::Map::new();
    let mut last_file = dir.join("model.safetensors");
    for (s, idx) in (0..tensors.len())
        .collect::<Vec<_>>()
        .chunks(per)
        .enumerate()
    {
        let file = if n_shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", s + 1, n_shards)
        };
        let views = idx
            .iter()
            .map(|&i| {
                let t = &tensors[i];
                weight_map.insert(t.name.clone(), json!(file));
                Ok((
                    t.name.clone(),
                    TensorView::new(dtype.st(), t.shape.clone(), &bytes[i])?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        last_file = dir.join(&file);
        safetensors::serialize_to_file(views, Some(info.clone()), &last_file)
            .with_context(|| format!("writing {}", last_file.display()))?;
    }
    if n_shards > 1 {
        let total: usize = bytes.iter().map(Vec::len).sum();
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_json(&dir.join("model.safetensors.index.json"), &index)?;
    }
    if spec.breakage == Breakage::Truncated {
        let f = std::fs::OpenOptions::new().write(true).open(&last_file)?;
        let len = f.metadata()?.len();
        f.set_len(len - 8)?;
    }
    Ok(())
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v)?;
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}
