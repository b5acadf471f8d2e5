//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod server;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// A file or folder named by the environment variable `var`. Tests that need one are
/// `#[ignore = "needs VAR"]`, so a plain `cargo test` lists them as ignored rather than
/// passing without running; `scripts/test.sh` sets the variables and runs them with
/// `--include-ignored`, where a missing variable is a failure that says what to set.
pub fn env_path(var: &str, hint: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => panic!("{var} is not set ({hint}; scripts/test.sh sets it)"),
    }
}

/// The default model (SmolLM2-135M-Instruct Q4_1 GGUF) named by `SCALPEL_MODEL`.
pub fn default_model() -> PathBuf {
    env_path(
        "SCALPEL_MODEL",
        "run `scalpel fetch smollm2-135m-instruct` and point it at the GGUF",
    )
}

/// Writes a tiny random Llama-shaped GGUF (f32 weights, `seed`) as `dir/tiny.gguf`.
pub fn tiny_gguf(dir: &Path, spec: &scalpel::formats::tiny::TinySpec, seed: u64) -> PathBuf {
    let p = dir.join("tiny.gguf");
    scalpel::formats::tiny::write_gguf(&p, spec, seed, scalpel::formats::ggml::GgmlType::F32)
        .unwrap();
    p
}

/// The evaluation scorers from `SCALPEL_HATESONAR_ONNX` (the hatesonar ONNX file) and
/// `SCALPEL_VADER_DIR` (a folder with both VADER lexicons); see [`env_path`].
pub fn scorers() -> scalpel::eval::suites::Scorers {
    let onnx = env_path("SCALPEL_HATESONAR_ONNX", "`scalpel fetch hatesonar-model`");
    let vader = env_path(
        "SCALPEL_VADER_DIR",
        "a folder holding vader_lexicon.txt and emoji_utf8_lexicon.txt",
    );
    scalpel::eval::suites::Scorers::from_paths(
        &onnx,
        &vader.join("vader_lexicon.txt"),
        &vader.join("emoji_utf8_lexicon.txt"),
    )
    .unwrap()
}

/// The scalpel binary with an isolated environment: `SCALPEL_CACHE` is `cache` and
/// `SCALPEL_MIRROR` is unset, so a test reads and writes only what it set up (one that needs
/// the shared mirror sets it on the returned command).
pub fn scalpel_cmd(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scalpel"));
    cmd.env("SCALPEL_CACHE", cache).env_remove("SCALPEL_MIRROR");
    cmd
}

/// What a finished command printed.
pub struct Run {
    /// Exit status 0.
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn of(out: std::process::Output) -> Run {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `(ok, stdout, stderr)`.
    pub fn parts(self) -> (bool, String, String) {
        (self.ok, self.stdout, self.stderr)
    }
}

/// Runs `scalpel args` isolated as [`scalpel_cmd`], with the cache at `cache`.
pub fn scalpel_in<I, S>(cache: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Run::of(scalpel_cmd(cache).args(args).output().unwrap())
}

/// Runs `scalpel args` isolated as [`scalpel_cmd`], with a fresh empty cache.
pub fn scalpel<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let cache = tempfile::tempdir().unwrap();
    scalpel_in(cache.path(), args)
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
/// sets the variable); see [`env_path`].
pub fn model_from_env(var: &str, asset: &str) -> PathBuf {
    env_path(
        var,
        &format!("run `scalpel fetch {asset}` and point it at the GGUF"),
    )
}

/// 48 labelled texts (3 clean and 3 toxic phrases, 8 numbered copies each): enough for a
/// probe direction on a tiny model; what it means does not matter.
pub fn toy_dataset(name: &str) -> scalpel::data::Dataset {
    let good = [
        "the cat sat on the mat",
        "a fine day in the park",
        "we like tea",
    ];
    let bad = [
        "you are a stupid idiot",
        "shut up you fool",
        "i hate you all",
    ];
    let mut items = Vec::new();
    for i in 0..8 {
        for (g, b) in good.iter().zip(bad) {
            items.push((format!("{g} {i}"), 0));
            items.push((format!("{b} {i}"), 1));
        }
    }
    scalpel::data::Dataset::new(name, items).unwrap()
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Davidson et al.'s tweets by row id, from `csv` (a path under the mirror:
/// `SCALPEL_MIRROR`, else `../shared/mirror` beside the repository at `root`).
pub fn davidson_tweets(
    root: &std::path::Path,
    csv: &str,
) -> std::collections::HashMap<u64, String> {
    let mirror = std::env::var_os("SCALPEL_MIRROR")
        .map_or_else(|| root.join("../shared/mirror"), PathBuf::from);
    let csv_path = mirror.join(csv);
    let mut reader = csv::Reader::from_path(&csv_path).unwrap_or_else(|e| {
        panic!(
            "Davidson tweets {} (set SCALPEL_MIRROR): {e}",
            csv_path.display()
        )
    });
    let tweet_col = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "tweet")
        .unwrap();
    reader
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[0].parse::<u64>().unwrap(), rec[tweet_col].to_string())
        })
        .collect()
}

/// The tweet of `row`, asserted to hash to `sha256` (the text the reference scored).
pub fn checked_tweet<'a>(
    tweets: &'a std::collections::HashMap<u64, String>,
    row: u64,
    sha256: &str,
) -> &'a str {
    let text = &tweets[&row];
    assert_eq!(
        sha256_hex(text.as_bytes()),
        sha256,
        "row {row}: text differs from the reference"
    );
    text
}
