//! The model runtime: load a Llama-family or Gemma 3 model from GGUF or safetensors,
//! tokenize, run a forward pass that exposes hidden states, and generate.
//!
//! - [`config`]: hyper-parameters from GGUF metadata or `config.json`;
//! - [`weights`]: tensors by role from either file format;
//! - [`tokenizer`] (with [`spm`] for SentencePiece vocabularies) and [`chat`]: ids and the
//!   model's own chat template;
//! - [`llama`] (Llama, Mistral, SmolLM, Qwen2) and [`gemma3`]: the forward passes, top to
//!   bottom, chosen by architecture in [`Net`], built from the shared [`layers`];
//! - [`generate`]: batched generation with a KV cache; [`overlap`]: independent batches
//!   two at a time, so that one pass fills the other's serial gaps;
//! - [`kernels`]: SIMD matmuls for Q4_1, Q8_0 and Q5_0 weights on every instruction set
//!   (exact by default; 8-bit inputs with `Precision::Int8Activations`).

pub mod chat;
pub mod config;
pub mod gemma3;
pub mod generate;
pub mod kernels;
pub mod layers;
pub mod llama;
pub mod overlap;
pub mod prefill;
pub mod spm;
pub mod tokenizer;
pub mod weights;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

pub use config::{Arch, ModelConfig};
pub use gemma3::Gemma3;
pub use layers::{KvCache, KvRows, Logits, Output, Point};
pub use llama::Llama;
pub use tokenizer::Tokenizer;
pub use weights::Precision;

/// Options for [`Model::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// How matrices are held in memory.
    pub precision: Precision,
}

/// The network of a model, by architecture family.
pub enum Net {
    /// Llama, Mistral, SmolLM, Qwen2.
    Llama(Llama),
    /// Gemma 3.
    Gemma3(Gemma3),
}

impl Net {
    /// Hyper-parameters.
    pub fn cfg(&self) -> &ModelConfig {
        match self {
            Net::Llama(n) => &n.cfg,
            Net::Gemma3(n) => &n.cfg,
        }
    }

    /// Runs the model (see [`Llama::forward`] for the arguments).
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        key_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        points: &[Point],
        logits: Logits,
    ) -> Result<Output> {
        let out = match self {
            Net::Llama(n) => n.forward(ids, positions, key_mask, cache, points, logits),
            Net::Gemma3(n) => n.forward(ids, positions, key_mask, cache, points, logits),
        }?;
        // A broken model (NaN/inf weights, a zero RMS epsilon) must fail wherever it is
        // evaluated: NaN logits otherwise read as perplexity 1, KL 0 or an instant EOS.
        if let Some(l) = &out.logits {
            ensure_finite(l, "logits")?;
        }
        for h in &out.hidden {
            ensure_finite(h, "hidden states")?;
        }
        Ok(out)
    }

    /// Hidden size d.
    pub fn hidden_size(&self) -> usize {
        self.cfg().hidden_size
    }

    /// The output head (vocab × d).
    fn head(&self) -> &weights::Linear {
        match self {
            Net::Llama(n) => &n.lm_head,
            Net::Gemma3(n) => &n.lm_head,
        }
    }
}

/// Errors when `t` holds a NaN or an infinity. Reads contiguous CPU f32 storage in place
/// (no copy: the logits of a perplexity window are ~200 MB); anything else is converted.
pub fn ensure_finite(t: &Tensor, what: &str) -> Result<()> {
    let finite = {
        let (storage, layout) = t.storage_and_layout();
        match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(cpu), Some((a, b))) if t.dtype() == DType::F32 => {
                Some(cpu.as_slice::<f32>()?[a..b].iter().all(|v| v.is_finite()))
            }
            _ => None,
        }
    };
    let finite = match finite {
        Some(f) => f,
        None => t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite()),
    };
    anyhow::ensure!(
        finite,
        "the model produced non-finite {what} (NaN or infinity): its weights or metadata are broken"
    );
    Ok(())
}

/// A model ready to run: configuration, weights and tokenizer.
pub struct Model {
    /// The network.
    pub net: Net,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The file or folder it was loaded from.
    pub path: PathBuf,
    /// How its matrices are held (hidden states differ slightly between precisions, so
    /// caches of activations are keyed by it).
    pub precision: Precision,
}

impl Model {
    /// Loads a GGUF file or a Hugging Face folder (`config.json` + safetensors).
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model> {
        let mut src = weights::WeightSource::open(path)?;
        let (cfg, tokenizer) = match weights::gguf_metadata(&src) {
            Some(ct) => {
                let n_vocab = ct
                    .tensor_infos
                    .get("token_embd.weight")
                    .map(|t| t.shape.dims()[0])
                    .unwrap_or(0);
                let cfg = ModelConfig::from_gguf(&ct.metadata, n_vocab)
                    .with_context(|| format!("{}", path.display()))?;
                let tok = Tokenizer::from_gguf(&ct.metadata)
                    .with_context(|| format!("{}", path.display()))?;
                (cfg, tok)
            }
            None => (
                ModelConfig::from_hf_config(&path.join("config.json"))?,
                Tokenizer::from_hf_dir(path)?,
            ),
        };
        if cfg.arch == Arch::Gemma3 {
            src.set_layout(crate::formats::names::Layout::Gemma);
        }
        check_block_count(&src, cfg.num_layers)?;
        let net = match cfg.arch {
            Arch::Llama | Arch::Qwen2 => Net::Llama(Llama::load(&mut src, cfg, opts.precision)?),
            Arch::Gemma3 => Net::Gemma3(Gemma3::load(&mut src, cfg, opts.precision)?),
        };
        Ok(Model {
            net,
            tokenizer,
            path: path.to_path_buf(),
            precision: opts.precision,
        })
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        self.net.cfg()
    }

    /// Formats a single user message with the model's chat template (ending with the
    /// assistant turn's opening).
    pub fn chat_prompt(&self, user: &str) -> Result<String> {
        let template = match (&self.tokenizer.chat_template, self.config().arch) {
            (Some(t), _) => t.as_str(),
            // Gemma 3 base GGUFs carry no template; llama.cpp then uses its built-in Gemma
            // format, which is the one the instruction-tuned checkpoints ship.
            (None, Arch::Gemma3) => chat::GEMMA_TEMPLATE,
            (None, _) => anyhow::bail!("{}: the model has no chat template", self.path.display()),
        };
        chat::render(
            template,
            &[chat::Message::user(user)],
            true,
            self.tokenizer.bos_token().as_deref(),
            self.tokenizer.eos_token().as_deref(),
        )
    }

    /// Logits of final-norm states `[n, d]` (what [`Point::FinalNorm`] captures): the output
    /// head alone, the same product a forward pass ends with. Teacher-forced scoring asks
    /// the pass for the final norm and runs the head only on the positions it scores: on
    /// RTP prompts about half the positions are context or padding, and the head (vocab × d,
    /// the largest matrix) and the log-softmax over the vocabulary there cost a sixth of
    /// scoring.
    pub fn head_logits(&self, h: &Tensor) -> Result<Tensor> {
        let logits = self.net.head().forward(h)?;
        ensure_finite(&logits, "logits")?;
        Ok(logits)
    }

    /// Runs a right-padded batch of token sequences and returns the requested points
    /// (`[b, t, d]` each), the padding mask `[b, t]` (1 = real token) and, if asked, the
    /// logits of every position.
    pub fn forward_batch(
        &self,
        seqs: &[Vec<u32>],
        points: &[Point],
        logits: Logits,
    ) -> Result<(Output, Tensor)> {
        let (ids, positions, mask) = right_padded(seqs, self.tokenizer.pad_id)?;
        let padded = seqs.iter().any(|s| s.len() != seqs[0].len());
        let out = self.net.forward(
            &ids,
            &positions,
            padded.then_some(&mask),
            None,
            points,
            logits,
        )?;
        Ok((out, mask))
    }
}

/// Refuses a block count that disagrees with the blocks stored (as llama.cpp does): fewer
/// would silently run a truncated model, more would fail on a missing tensor mid-load.
fn check_block_count(src: &weights::WeightSource, n: usize) -> Result<()> {
    let has = |i: usize| src.has(&format!("blk.{i}.ffn_gate"), "weight");
    if !has(n - 1) {
        anyhow::bail!(
            "{}: the block count says {n} but block {} has no tensors",
            src.path().display(),
            n - 1
        );
    }
    if has(n) {
        anyhow::bail!(
            "{}: the block count says {n} but the file holds more blocks (block {n} exists)",
            src.path().display()
        );
    }
    Ok(())
}

/// Left-padded sequences as flat row-major `[b, len]` vectors, `len` the longest: ids (`pad`
/// before each sequence), positions (each sequence from 0, padding at 0) and the key mask
/// (0 on padding). What prefills with a key/value cache use, so that every sequence ends at
/// the same index.
pub fn left_padded(seqs: &[&[u32]], pad: u32) -> (Vec<u32>, Vec<u32>, Vec<u8>, usize) {
    let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let n = seqs.len() * len;
    let (mut ids, mut pos, mut mask) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for s in seqs {
        let gap = len - s.len();
        ids.extend(std::iter::repeat_n(pad, gap).chain(s.iter().copied()));
        pos.extend((0..len).map(|j| j.saturating_sub(gap) as u32));
        mask.extend((0..len).map(|j| u8::from(j >= gap)));
    }
    (ids, pos, mask, len)
}

/// Builds `[b, t]` ids, positions and mask tensors for right-padded sequences.
pub fn right_padded(seqs: &[Vec<u32>], pad: u32) -> Result<(Tensor, Tensor, Tensor)> {
    anyhow::ensure!(!seqs.is_empty(), "empty batch");
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    anyhow::ensure!(t > 0, "batch of empty sequences");
    let b = seqs.len();
    let mut ids = vec![pad; b * t];
    let mut mask = vec![0u8; b * t];
    let mut pos = vec![0u32; b * t];
    for (s, seq) in seqs.iter().enumerate() {
        for (j, &id) in seq.iter().enumerate() {
            ids[s * t + j] = id;
            mask[s * t + j] = 1;
        }
        for (j, p) in pos[s * t..(s + 1) * t].iter_mut().enumerate() {
            *p = j as u32;
        }
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(ids, (b, t), &dev)?,
        Tensor::from_vec(pos, (b, t), &dev)?,
        Tensor::from_vec(mask, (b, t), &dev)?.to_dtype(DType::U8)?,
    ))
}
