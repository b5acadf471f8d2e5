//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The default model (SmolLM2-135M-Instruct Q4_1 GGUF) named by `SCALPEL_MODEL`, or `None`
/// with a printed skip line. `.ci/run` fetches the model and sets the variable.
pub fn default_model() -> Option<PathBuf> {
    match std::env::var_os("SCALPEL_MODEL") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "skipped: SCALPEL_MODEL is not set (run `scalpel fetch` and point it at the GGUF)"
            );
            None
        }
    }
}

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Writes a Hugging Face folder holding the same weights as a Llama GGUF (dequantised to
/// f32), so that the two loading paths can be compared. llama.cpp's converter permuted the
/// rows of q and k for interleaved RoPE; this undoes it: GGUF rows are grouped per head as
/// `[hd/2, 2]`, Hugging Face rows as `[2, hd/2]`.
pub fn gguf_to_hf_folder(gguf: &Path, dir: &Path) {
    use scalpel::runtime::{LoadOptions, Model};
    let model = Model::load(gguf, &LoadOptions::default()).unwrap();
    let cfg = model.config().clone();
    let mut file = std::fs::File::open(gguf).unwrap();
    let ct = gguf_file::Content::read(&mut file).unwrap();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let hd = cfg.head_dim;
    for name in ct.tensor_infos.keys() {
        let mut t = ct
            .tensor(&mut file, name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let heads = if name.ends_with("attn_q.weight") {
            Some(cfg.num_heads)
        } else if name.ends_with("attn_k.weight") {
            Some(cfg.num_kv_heads)
        } else {
            None
        };
        if let Some(nh) = heads {
            let d_in = t.dim(1).unwrap();
            t = t
                .reshape((nh, hd / 2, 2, d_in))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((nh * hd, d_in))
                .unwrap();
        }
        let stem = name
            .strip_suffix(".weight")
            .expect("llama GGUF tensors end in .weight");
        tensors.insert(
            format!("{}.weight", scalpel::formats::names::hf_name(stem)),
            t,
        );
    }
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": true,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    model.tokenizer.save_hf(dir).unwrap();
}

/// Prompts of the reference comparisons: plain text, ChatML, code, narrative.
pub const PROMPTS: &[&str] = &[
    "The capital of France is",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old woman who",
];

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Indices of the 5 largest values, largest first.
pub fn top5(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(5);
    idx
}

/// A real model file named by an environment variable (`scripts/test.sh` fetches it and
/// sets the variable), or `None` with a printed skip line.
pub fn model_from_env(var: &str, asset: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "skipped: {var} is not set (run `scalpel fetch {asset}` and point it at the GGUF)"
            );
            None
        }
    }
}
