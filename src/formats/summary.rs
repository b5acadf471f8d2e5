//! A format-independent summary of a model file or folder, for `scalpel inspect`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::gguf::{GgufFile, MetaValue};
use super::safetensors::HfFolder;
use super::ModelFormat;

fn long_name<S: serde::Serializer>(f: &ModelFormat, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.long_name())
}

/// What `scalpel inspect` shows.
#[derive(Debug, Serialize)]
pub struct ModelSummary {
    /// Shown and serialised as `gguf` or `hf-safetensors`.
    #[serde(serialize_with = "long_name")]
    pub format: ModelFormat,
    /// The file or folder.
    pub path: String,
    /// GGUF `general.architecture` or HF `architectures[0]`.
    pub architecture: Option<String>,
    /// Hyper-parameters, where present.
    pub dims: Dims,
    /// Total bytes of the weight files.
    pub weight_bytes: u64,
    /// GGUF metadata or `config.json` entries as display strings (arrays as type and length).
    pub metadata: Vec<(String, String)>,
    /// Every tensor, in file order.
    pub tensors: Vec<TensorRow>,
    /// Tokenizer facts.
    pub tokenizer: TokenizerFacts,
}

/// Model hyper-parameters.
#[allow(missing_docs)]
#[derive(Debug, Default, Serialize)]
pub struct Dims {
    pub blocks: Option<u64>,
    pub d: Option<u64>,
    pub d_ff: Option<u64>,
    pub heads: Option<u64>,
    pub kv_heads: Option<u64>,
    pub context: Option<u64>,
    pub vocab: Option<u64>,
}

/// One tensor.
#[derive(Debug, Serialize)]
pub struct TensorRow {
    /// Name.
    pub name: String,
    /// ggml type or safetensors dtype.
    pub dtype: String,
    /// Shape, slowest axis first (PyTorch order; a GGUF `ffn_gate` is `[d_ff, d]`).
    pub shape: Vec<u64>,
    /// Bytes of data.
    pub bytes: u64,
}

/// Tokenizer facts.
#[derive(Debug, Default, Serialize)]
pub struct TokenizerFacts {
    /// Present at all.
    pub present: bool,
    /// GGUF `tokenizer.ggml.model` or tokenizer.json `model.type`.
    pub model: Option<String>,
    /// GGUF `tokenizer.ggml.pre` or tokenizer.json pre-tokenizer type.
    pub pre: Option<String>,
    /// Number of tokens.
    pub vocab_size: Option<u64>,
    /// BOS id (GGUF) or token (HF).
    pub bos: Option<String>,
    /// EOS id (GGUF) or token (HF).
    pub eos: Option<String>,
    /// Whether a chat template exists.
    pub chat_template: bool,
}

/// Summarises a GGUF file or a Hugging Face folder.
pub fn summarize(path: &Path) -> Result<ModelSummary> {
    if path.is_dir() {
        return summarize_hf(&HfFolder::open(path)?);
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        bail!(
            "{}: give the folder that holds config.json, not a .safetensors file",
            path.display()
        );
    }
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::Read::read_exact(&mut f, &mut magic).ok();
    if &magic != b"GGUF" {
        bail!(
            "{}: neither a GGUF file nor a Hugging Face folder",
            path.display()
        );
    }
    Ok(summarize_gguf(&GgufFile::open(path)?))
}

fn summarize_gguf(g: &GgufFile) -> ModelSummary {
    let arch = g.architecture().ok().map(str::to_string);
    let au = |k: &str| g.arch_u64(k).ok();
    let tok = g.get_str("tokenizer.ggml.model").ok();
    let vocab_size = g
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_strings)
        .map(|a| a.len() as u64);
    ModelSummary {
        format: ModelFormat::Gguf,
        path: g.path.display().to_string(),
        architecture: arch,
        dims: Dims {
            blocks: au("block_count"),
            d: au("embedding_length"),
            d_ff: au("feed_forward_length"),
            heads: au("attention.head_count"),
            kv_heads: au("attention.head_count_kv"),
            context: au("context_length"),
            vocab: au("vocab_size").or(vocab_size),
        },
        weight_bytes: g.file_len(),
        metadata: g
            .metadata
            .iter()
            .map(|(k, v)| {
                let s = v.to_string();
                let s = if s.len() > 80 {
                    format!(
                        "{}… ({} chars)",
                        s.chars().take(60).collect::<String>(),
                        s.len()
                    )
                } else {
                    s
                };
                (k.clone(), s)
            })
            .collect(),
        tensors: g
            .tensors
            .iter()
            .map(|t| TensorRow {
                name: t.name.clone(),
                dtype: t.ty.to_string(),
                shape: t.torch_shape(),
                bytes: t.n_bytes(),
            })
            .collect(),
        tokenizer: TokenizerFacts {
            present: tok.is_some(),
            model: tok.map(str::to_string),
            pre: g.get_str("tokenizer.ggml.pre").ok().map(str::to_string),
            vocab_size,
            bos: g
                .get_u64("tokenizer.ggml.bos_token_id")
                .ok()
                .map(|x| x.to_string()),
            eos: g
                .get_u64("tokenizer.ggml.eos_token_id")
                .ok()
                .map(|x| x.to_string()),
            chat_template: g.get("tokenizer.chat_template").is_some(),
        },
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{} items]", a.len()),
        Value::Object(o) => format!("{{{} keys}}", o.len()),
        other => other.to_string(),
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// A special token in tokenizer_config.json: a string or `{"content": ...}`.
fn token_str(v: Option<&Value>) -> Option<String> {
    let v = v?;
    v.as_str()
        .or_else(|| v.get("content")?.as_str())
        .map(str::to_string)
}

fn summarize_hf(h: &HfFolder) -> Result<ModelSummary> {
    let c = |k: &str| h.config.get(k).and_then(Value::as_u64);
    let metadata = h
        .config
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), short(v))).collect())
        .unwrap_or_default();
    let tj = read_json(&h.dir.join("tokenizer.json"));
    let tc = read_json(&h.dir.join("tokenizer_config.json"));
    let tokenizer = match &tj {
        None => TokenizerFacts::default(),
        Some(t) => {
            let model = t.get("model");
            let vocab = model.and_then(|m| m.get("vocab")).map(|v| match v {
                Value::Object(o) => o.len() as u64,
                Value::Array(a) => a.len() as u64,
                _ => 0,
            });
            let added_extra = t
                .get("added_tokens")
                .and_then(Value::as_array)
                .map(|a| {
                    let vmap = model
                        .and_then(|m| m.get("vocab"))
                        .and_then(Value::as_object);
                    a.iter()
                        .filter(|x| {
                            let c = x.get("content").and_then(Value::as_str).unwrap_or("");
                            vmap.is_none_or(|m| !m.contains_key(c))
                        })
                        .count() as u64
                })
                .unwrap_or(0);
            TokenizerFacts {
                present: true,
                model: model
                    .and_then(|m| m.get("type"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                pre: t
                    .get("pre_tokenizer")
                    .and_then(|p| p.get("type"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                vocab_size: vocab.map(|v| v + added_extra),
                bos: token_str(tc.as_ref().and_then(|c| c.get("bos_token"))),
                eos: token_str(tc.as_ref().and_then(|c| c.get("eos_token"))),
                chat_template: tc.as_ref().and_then(|c| c.get("chat_template")).is_some()
                    || h.dir.join("chat_template.jinja").exists(),
            }
        }
    };
    Ok(ModelSummary {
        format: ModelFormat::Hf,
        path: h.dir.display().to_string(),
        architecture: h.architecture().map(str::to_string),
        dims: Dims {
            blocks: c("num_hidden_layers"),
            d: c("hidden_size"),
            d_ff: c("intermediate_size"),
            heads: c("num_attention_heads"),
            kv_heads: c("num_key_value_heads"),
            context: c("max_position_embeddings"),
            vocab: c("vocab_size"),
        },
        weight_bytes: h.tensors.iter().map(|t| (t.end - t.start) as u64).sum(),
        metadata,
        tensors: h
            .tensors
            .iter()
            .map(|t| TensorRow {
                name: t.name.clone(),
                dtype: format!("{:?}", t.dtype),
                shape: t.shape.iter().map(|&x| x as u64).collect(),
                bytes: (t.end - t.start) as u64,
            })
            .collect(),
        tokenizer,
    })
}
