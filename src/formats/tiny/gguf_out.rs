//! The tiny model as a GGUF file, laid out like llama.cpp's converter output.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{gguf_name_for, permute_qk, vocab, weights, Breakage, TinyFamily, TinySpec};
use crate::formats::ggml::GgmlType;
use crate::formats::gguf::{self, MetaType, MetaValue, TensorSpec};
use crate::formats::quant;

/// Writes the tiny model as a GGUF v3 file. Matrices and the token embedding are stored as
/// `ty` (any type [`quant::can_encode`] accepts; quantised types need `d` and `d_ff` to be
/// multiples of 32); norms are F32.
pub fn write_gguf(path: &Path, spec: &TinySpec, seed: u64, ty: GgmlType) -> Result<()> {
    write_gguf_with_meta(path, spec, seed, ty, &[])
}

/// [`write_gguf`] with metadata keys replaced or added (crafted-metadata tests: a negative
/// block count, a NaN epsilon, an unsupported RoPE scaling …). A key written as
/// `ARCH.suffix` has `ARCH` replaced by the file's architecture.
pub fn write_gguf_with_meta(
    path: &Path,
    spec: &TinySpec,
    seed: u64,
    ty: GgmlType,
    overrides: &[(&str, MetaValue)],
) -> Result<()> {
    if !quant::can_encode(ty) {
        bail!("tiny GGUF: cannot write weights as {ty}");
    }
    let arch = match (spec.breakage, spec.family) {
        (Breakage::UnknownArchitecture, _) => "tinyunknown",
        (_, TinyFamily::Llama) => "llama",
        (_, TinyFamily::Qwen2) => "qwen2",
        (_, TinyFamily::Gemma3) => "gemma3",
    };
    let mut tensors = weights(spec, seed)?;
    for t in &mut tensors {
        // llama.cpp's converter permutes q/k for Llama only, and stores Gemma's norm
        // gains as `1 + w`.
        if spec.family == TinyFamily::Gemma3 && t.name.ends_with("norm.weight") {
            t.data.iter_mut().for_each(|x| *x += 1.0);
        }
        if spec.family != TinyFamily::Llama {
            continue;
        }
        if t.name.ends_with("q_proj.weight") {
            t.data = permute_qk(&t.data, t.shape[0], t.shape[1], spec.heads);
        } else if t.name.ends_with("k_proj.weight") {
            t.data = permute_qk(&t.data, t.shape[0], t.shape[1], spec.kv_heads);
        }
    }
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|t| TensorSpec {
            name: gguf_name_for(spec.family, &t.name).expect("every tiny tensor has a GGUF name"),
            dims: t.shape.iter().rev().map(|&x| x as u64).collect(),
            ty: if t.shape.len() == 1 {
                GgmlType::F32
            } else {
                ty
            },
        })
        .collect();

    let u32v = |x: usize| MetaValue::U32(x as u32);
    let mut md: Vec<(String, MetaValue)> = vec![
        ("general.architecture".into(), MetaValue::string(arch)),
        (
            "general.name".into(),
            MetaValue::string("scalpel tiny llama"),
        ),
    ];
    let mut arch_kv = |k: &str, v: MetaValue| md.push((format!("{arch}.{k}"), v));
    arch_kv("block_count", u32v(spec.blocks));
    arch_kv("context_length", u32v(spec.context));
    arch_kv("embedding_length", u32v(spec.d));
    arch_kv("feed_forward_length", u32v(spec.d_ff));
    arch_kv("attention.head_count", u32v(spec.heads));
    arch_kv("attention.head_count_kv", u32v(spec.kv_heads));
    arch_kv("rope.freq_base", MetaValue::F32(spec.rope_theta));
    arch_kv(
        "attention.layer_norm_rms_epsilon",
        MetaValue::F32(spec.rms_eps),
    );
    arch_kv("vocab_size", u32v(spec.vocab()));
    arch_kv("rope.dimension_count", u32v(spec.head_dim()));
    if spec.family == TinyFamily::Gemma3 {
        arch_kv("attention.key_length", u32v(spec.head_dim()));
        arch_kv("attention.value_length", u32v(spec.head_dim()));
        arch_kv("attention.sliding_window", u32v(spec.sliding_window));
    }
    if spec.breakage != Breakage::MissingTokenizer {
        let v = vocab::vocab();
        md.extend([
            ("tokenizer.ggml.model".into(), MetaValue::string("gpt2")),
            ("tokenizer.ggml.pre".into(), MetaValue::string("smollm")),
            (
                "tokenizer.ggml.tokens".into(),
                MetaValue::strings(&v.tokens),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                MetaValue::Array(
                    MetaType::I32,
                    v.token_types.iter().map(|&t| MetaValue::I32(t)).collect(),
                ),
            ),
            (
                "tokenizer.ggml.merges".into(),
                MetaValue::strings(&v.merges),
            ),
            (
                "tokenizer.ggml.bos_token_id".into(),
                MetaValue::U32(vocab::BOS_ID),
            ),
            (
                "tokenizer.ggml.eos_token_id".into(),
                MetaValue::U32(vocab::EOS_ID),
            ),
            (
                "tokenizer.ggml.padding_token_id".into(),
                MetaValue::U32(vocab::EOS_ID),
            ),
            (
                "tokenizer.ggml.add_bos_token".into(),
                MetaValue::Bool(false),
            ),
            (
                "tokenizer.chat_template".into(),
                MetaValue::string(vocab::CHAT_TEMPLATE),
            ),
        ]);
    }
    md.push(("general.quantization_version".into(), MetaValue::U32(2)));
    for (k, v) in overrides {
        let key = match k.strip_prefix("ARCH.") {
            Some(rest) => format!("{arch}.{rest}"),
            None => k.to_string(),
        };
        match md.iter_mut().find(|(name, _)| *name == key) {
            Some(slot) => slot.1 = v.clone(),
            None => md.push((key, v.clone())),
        }
    }

    gguf::write_gguf(path, 3, &md, &specs, &mut |i, s, w: &mut dyn Write| {
        let t = &tensors[i];
        let row = *t.shape.last().unwrap_or(&1);
        for r in t.data.chunks_exact(row) {
            w.write_all(&quant::encode_row(s.ty, r)?)?;
        }
        Ok(())
    })?;
    if spec.breakage == Breakage::Truncated {
        truncate_last_tensor(path)?;
    }
    Ok(())
}

/// Cuts the file in the middle of its last tensor.
fn truncate_last_tensor(path: &Path) -> Result<()> {
    let cut = {
        let g = gguf::GgufFile::open(path)?;
        let last = g.tensors.last().context("no tensors")?;
        g.data_start + last.offset + last.n_bytes() / 2
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(cut))
        .with_context(|| format!("truncating {}", path.display()))
}
