//! Tokenizers: from `tokenizer.json` when the model has one, otherwise built from the GGUF
//! metadata (`tokenizer.ggml.*`).
//!
//! The GGUF path assembles a Hugging Face `tokenizer.json` document in memory and hands it
//! to the `tokenizers` crate, so the BPE itself is the well-tested library's. We do not use
//! candle's `TokenizerFromGguf`: for `tokenizer.ggml.pre = "smollm"` it adds a prefix space
//! ("Hello" → " Hello"), which gives wrong ids for chat prompts. The pre-tokenizer is
//! chosen from `tokenizer.ggml.pre` following llama.cpp's table. SentencePiece-style
//! vocabularies (`tokenizer.ggml.model = "llama"`, e.g. Gemma) use [`super::spm`].

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

use super::spm::Spm;

/// The encoder behind a [`Tokenizer`].
enum Backend {
    /// The `tokenizers` crate (byte-level BPE from GGUF, or a `tokenizer.json`).
    Hf(Box<tokenizers::Tokenizer>),
    /// Score-merge SentencePiece vocabulary from GGUF metadata.
    Spm(Box<Spm>),
}

impl Backend {
    fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Backend::Hf(t) => t.token_to_id(token),
            Backend::Spm(t) => t.id(token),
        }
    }
}

/// A tokenizer with the model's special-token conventions.
pub struct Tokenizer {
    inner: Backend,
    /// Beginning-of-sequence token, if the vocabulary has one.
    pub bos_id: Option<u32>,
    /// Whether a BOS token is prepended to every encoded text.
    pub add_bos: bool,
    /// Tokens that end generation (EOS, end-of-turn).
    pub eos_ids: Vec<u32>,
    /// Token used to fill padding positions (never attended to).
    pub pad_id: u32,
    /// The model's chat template (Jinja source), if it has one.
    pub chat_template: Option<String>,
    /// Human-readable description of where the tokenizer came from.
    pub source: String,
}

/// Split regexes of llama.cpp's `llama-bpe` and `qwen2` pre-tokenizers; GPT-2's own regex
/// is the one built into `tokenizers`' ByteLevel (`use_regex = true`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn strings(v: &Value, key: &str) -> Result<Vec<String>> {
    v.to_vec()
        .map_err(|e| anyhow!("{key}: {e}"))?
        .iter()
        .map(|x| x.to_string().cloned().map_err(|e| anyhow!("{key}: {e}")))
        .collect()
}

fn meta_u32(meta: &HashMap<String, Value>, key: &str) -> Option<u32> {
    meta.get(key).and_then(|v| v.to_u32().ok())
}

/// The pre-tokenizer JSON for a llama.cpp `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Result<serde_json::Value> {
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        // llama.cpp: split every digit, then GPT-2's byte-level regex, no prefix space.
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        "gpt2" | "default" | "gpt-2" => byte_level(true),
        "llama-bpe" | "llama3" | "falcon3" | "smaug-bpe" => json!({
            "type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]
        }),
        "qwen2" | "deepseek-r1-qwen" => json!({
            "type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]
        }),
        other => bail!(
            "unsupported tokenizer.ggml.pre `{other}` (supported: smollm, gpt2, llama-bpe, qwen2)"
        ),
    })
}

impl Tokenizer {
    /// Builds the tokenizer described by GGUF metadata.
    pub fn from_gguf(meta: &HashMap<String, gguf_file::Value>) -> Result<Self> {
        let model = meta
            .get("tokenizer.ggml.model")
            .context("no tokenizer in GGUF metadata (`tokenizer.ggml.model` missing)")?
            .to_string()
            .map_err(|e| anyhow!("tokenizer.ggml.model: {e}"))?
            .clone();
        if model == "llama" {
            return Self::spm_from_gguf(meta);
        }
        if model != "gpt2" {
            bail!(
                "unsupported tokenizer.ggml.model `{model}` (supported: byte-level BPE `gpt2`, \
                 SentencePiece `llama`)"
            );
        }
        let tokens = strings(
            meta.get("tokenizer.ggml.tokens")
                .context("GGUF metadata has no `tokenizer.ggml.tokens`")?,
            "tokenizer.ggml.tokens",
        )?;
        let merges = strings(
            meta.get("tokenizer.ggml.merges")
                .context("GGUF metadata has no `tokenizer.ggml.merges`")?,
            "tokenizer.ggml.merges",
        )?;
        let types: Vec<i32> = match meta.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| anyhow!("tokenizer.ggml.token_type: {e}"))?
                .iter()
                .map(|x| x.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let pre = meta
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| "default".into());

        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let merges: Vec<serde_json::Value> = merges
            .iter()
            .map(|m| {
                let (a, b) = m.split_once(' ').unwrap_or((m, ""));
                json!([a, b])
            })
            .collect();
        // Control (3) and user-defined (4) tokens are matched whole before BPE, as in
        // llama.cpp; only control tokens count as "special" (dropped when decoding).
        let added: Vec<serde_json::Value> = types
            .iter()
            .enumerate()
            .filter(|(_, ty)| **ty == 3 || **ty == 4)
            .map(|(i, ty)| {
                json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": *ty == 3})
            })
            .collect();
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer(&pre)?,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges}
        });
        let inner = Backend::Hf(Box::new(
            tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&doc)?)
                .map_err(|e| anyhow!("cannot build tokenizer from GGUF metadata: {e}"))?,
        ));

        Ok(Self::with_gguf_specials(
            inner,
            meta,
            false,
            format!("GGUF metadata (byte-level BPE, pre = {pre})"),
        ))
    }

    /// Wraps a backend with the special tokens and chat template of the GGUF metadata: BOS
    /// (added when `tokenizer.ggml.add_bos_token` says so, `add_bos_default` when it is
    /// absent), EOS / end-of-turn ids, padding and the template.
    fn with_gguf_specials(
        inner: Backend,
        meta: &HashMap<String, gguf_file::Value>,
        add_bos_default: bool,
        source: String,
    ) -> Self {
        let bos_id = meta_u32(meta, "tokenizer.ggml.bos_token_id");
        let add_bos = meta
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(add_bos_default)
            && bos_id.is_some();
        let mut eos_ids: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
            .iter()
            .filter_map(|k| meta_u32(meta, k))
            .collect();
        add_end_of_turn_tokens(&inner, &mut eos_ids);
        let pad_id = meta_u32(meta, "tokenizer.ggml.padding_token_id")
            .or(eos_ids.first().copied())
            .unwrap_or(0);
        let chat_template = meta
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok().cloned());
        Tokenizer {
            inner,
            bos_id,
            add_bos,
            eos_ids,
            pad_id,
            chat_template,
            source,
        }
    }

    /// The SentencePiece tokenizer of a GGUF vocabulary (`tokenizer.ggml.model = llama`).
    fn spm_from_gguf(meta: &HashMap<String, gguf_file::Value>) -> Result<Self> {
        let tokens = strings(
            meta.get("tokenizer.ggml.tokens")
                .context("GGUF metadata has no `tokenizer.ggml.tokens`")?,
            "tokenizer.ggml.tokens",
        )?;
        let scores: Vec<f32> = match meta.get("tokenizer.ggml.scores") {
            Some(v) => v
                .to_vec()
                .map_err(|e| anyhow!("tokenizer.ggml.scores: {e}"))?
                .iter()
                .map(|x| {
                    x.to_f32()
                        .map_err(|e| anyhow!("tokenizer.ggml.scores: {e}"))
                })
                .collect::<Result<_>>()?,
            None => vec![0.0; tokens.len()],
        };
        let types: Vec<i32> = match meta.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| anyhow!("tokenizer.ggml.token_type: {e}"))?
                .iter()
                .map(|x| x.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let flag = |key: &str, default: bool| {
            meta.get(key)
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(default)
        };
        let spm = Spm::new(
            tokens,
            scores,
            types,
            flag("tokenizer.ggml.add_space_prefix", true),
        )?;
        Ok(Self::with_gguf_specials(
            Backend::Spm(Box::new(spm)),
            meta,
            true,
            "GGUF metadata (SentencePiece scores)".into(),
        ))
    }

    /// Loads `tokenizer.json` (and `tokenizer_config.json` for the chat template and
    /// special tokens) from a Hugging Face folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            bail!("{}: no tokenizer.json in the model folder", dir.display());
        }
        let inner = Backend::Hf(Box::new(
            tokenizers::Tokenizer::from_file(&path)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?,
        ));
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = if cfg_path.exists() {
            serde_json::from_str(&std::fs::read_to_string(&cfg_path)?)
                .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?
        } else {
            json!({})
        };
        let token = |key: &str| -> Option<u32> {
            let v = &cfg[key];
            let s = v.as_str().or_else(|| v["content"].as_str())?;
            inner.token_to_id(s)
        };
        let bos_id = token("bos_token");
        // The tokenizer.json post-processor already adds BOS where the model wants it.
        let add_bos = false;
        let mut eos_ids: Vec<u32> = token("eos_token").into_iter().collect();
        add_end_of_turn_tokens(&inner, &mut eos_ids);
        let pad_id = token("pad_token").or(eos_ids.first().copied()).unwrap_or(0);
        let chat_template = match &cfg["chat_template"] {
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        };
        Ok(Tokenizer {
            inner,
            bos_id,
            add_bos,
            eos_ids,
            pad_id,
            chat_template,
            source: format!("{}", path.display()),
        })
    }

    /// Encodes text to ids. Special-token text (e.g. `<|im_start|>`) maps to its id; a BOS
    /// is prepended when the model wants one and the text does not already start with it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = match &self.inner {
            Backend::Hf(t) => t
                .encode(text, true)
                .map_err(|e| anyhow!("tokenizer: {e}"))?
                .get_ids()
                .to_vec(),
            Backend::Spm(t) => t.encode(text)?,
        };
        if let (true, Some(bos)) = (self.add_bos, self.bos_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Decodes ids to text; control tokens are dropped when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.inner {
            Backend::Hf(t) => t
                .decode(ids, skip_special)
                .map_err(|e| anyhow!("tokenizer: {e}")),
            Backend::Spm(t) => t.decode(ids, skip_special),
        }
    }

    /// Writes `tokenizer.json` and a `tokenizer_config.json` (special tokens, chat
    /// template) into a folder, as a Hugging Face checkpoint would have them.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let Backend::Hf(inner) = &self.inner else {
            bail!("writing a SentencePiece vocabulary as tokenizer.json is not supported");
        };
        inner
            .save(dir.join("tokenizer.json"), false)
            .map_err(|e| anyhow!("cannot write tokenizer.json: {e}"))?;
        let cfg = json!({
            "bos_token": self.bos_token(),
            "eos_token": self.eos_token(),
            "pad_token": self.id_to_token(self.pad_id),
            "chat_template": self.chat_template,
        });
        std::fs::write(
            dir.join("tokenizer_config.json"),
            serde_json::to_string_pretty(&cfg)?,
        )
        .with_context(|| format!("cannot write {}", dir.display()))?;
        Ok(())
    }

    /// The string form of one token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.inner {
            Backend::Hf(t) => t.id_to_token(id),
            Backend::Spm(t) => t.token(id).map(String::from),
        }
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Backend::Hf(t) => t.get_vocab_size(true),
            Backend::Spm(t) => t.len(),
        }
    }

    /// The text of the BOS token, if any.
    pub fn bos_token(&self) -> Option<String> {
        self.bos_id.and_then(|id| self.id_to_token(id))
    }

    /// The text of the first EOS token, if any.
    pub fn eos_token(&self) -> Option<String> {
        self.eos_ids.first().and_then(|&id| self.id_to_token(id))
    }
}

/// Chat models end a turn with a token that is not always the declared EOS (ChatML's
/// `<|im_end|>`, Llama 3's `<|eot_id|>`); generation must stop on those too.
fn add_end_of_turn_tokens(inner: &Backend, eos: &mut Vec<u32>) {
    for t in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"] {
        if let Some(id) = inner.token_to_id(t) {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
    }
}
