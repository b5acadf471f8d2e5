//! Model file formats: GGUF (llama.cpp, ollama) and Hugging Face safetensors folders.
//!
//! Everything here streams: files are memory-mapped, a tensor (or one row of it) is read
//! without touching the others, and writers copy untouched tensors byte for byte into a temp
//! file beside the output that is renamed into place only when complete. Model surgery
//! edits a few rows of each block's `ffn_gate` / `gate_proj` and must leave every other byte
//! of the user's file as it was.
//!
//! - [`ggml`]: ggml tensor types and block geometry.
//! - [`gguf`]: GGUF reader and writer.
//! - [`io`]: output-file safety shared by the writers (temp file beside the output, renamed
//!   when complete; never the input, never an unasked-for file).
//! - [`names`]: tensor names, llama.cpp's and Hugging Face's, from one table per layout.
//! - [`patch`]: the reversible patch of an edit (rows before and after, sha256 of tensors).
//! - [`quant`]: row-wise decode / encode of ggml types (llama.cpp's reference quantizers).
//! - [`safetensors`]: Hugging Face folders (single file or sharded), reader and writer.
//! - [`summary`]: a format-independent summary of a model (`scalpel inspect`).
//! - [`tiny`]: deterministic tiny random Llama, Qwen2 and Gemma 3 models (GGUF and HF) for
//!   tests.

pub mod ggml;
pub mod gguf;
pub mod io;
pub mod names;
pub mod patch;
pub mod quant;
pub mod safetensors;
pub mod summary;
pub mod tiny;

use std::path::Path;

/// The model formats scalpel reads and writes. Spelled `gguf` and `hf` in patches, JSON and
/// messages (serde and `Display`); `scalpel inspect` calls a folder `hf-safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// One GGUF file (llama.cpp, ollama).
    Gguf,
    /// A Hugging Face folder of safetensors shards and config files.
    Hf,
}

impl ModelFormat {
    /// The format of a model path: a folder is a Hugging Face model, anything else GGUF.
    pub fn of_path(path: &Path) -> ModelFormat {
        if path.is_dir() {
            ModelFormat::Hf
        } else {
            ModelFormat::Gguf
        }
    }

    /// `gguf` or `hf`, as patches store it.
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Hf => "hf",
        }
    }

    /// `gguf` or `hf-safetensors`, as `scalpel inspect` shows it.
    pub fn long_name(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Hf => "hf-safetensors",
        }
    }

    /// What an output of this format is: one file, or a folder.
    pub fn out_kind(self) -> io::OutKind {
        match self {
            ModelFormat::Gguf => io::OutKind::File,
            ModelFormat::Hf => io::OutKind::Folder,
        }
    }
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
