//! The forward pass against an independent implementation: candle-transformers'
//! `quantized_llama` on the same GGUF weights, both in exact f32 arithmetic (for the
//! reference, a copy of the file with every tensor widened to f32 by candle), so that any
//! difference is a bug rather than rounding. The quantised paths are compared in
//! `reference_quant.rs`.
//!
//! Not `CANDLE_DEQUANTIZE_ALL=1`: candle reads that variable once per thread, and setting
//! it here would leak into every test of this binary that starts a thread after it (the
//! quantised reference of `reference_quant.rs`, the K-quant matrices of the Gemma 3 and
//! Qwen2 tests), which would then run in f32 and test something else.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use scalpel::runtime::{LoadOptions, Logits, Model, Precision};
use std::io::Cursor;
use std::path::Path;

use crate::common::{cosine, top5, PROMPTS};

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn last_logits_match_candle_quantized_llama_in_f32() {
    let path = crate::common::default_model();
    let model = Model::load(
        &path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap();
    let mut file = widened_to_f32(&path);
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    for prompt in PROMPTS {
        let ids = model.tokenizer.encode(prompt).unwrap();
        let (ours, theirs) = last_logits(&model, &mut reference, &ids);
        let cos = cosine(&ours, &theirs);
        eprintln!(
            "{prompt:?}: cosine {cos:.6}, top5 {:?} vs {:?}",
            top5(&ours),
            top5(&theirs)
        );
        assert!(cos >= 0.99999, "cosine {cos} < 0.99999 for {prompt:?}");
        assert_eq!(top5(&ours), top5(&theirs), "top-5 differ for {prompt:?}");
    }
}

/// The GGUF at `path` in memory with every tensor dequantised to f32 by candle (read,
/// dequantise, write), metadata unchanged: candle then multiplies its matrices densely, as
/// `CANDLE_DEQUANTIZE_ALL` would make it, without touching the process environment.
fn widened_to_f32(path: &Path) -> Cursor<Vec<u8>> {
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|name| {
            let q = content.tensor(&mut file, name, &Device::Cpu).unwrap();
            let dense = q.dequantize(&Device::Cpu).unwrap();
            (
                name.clone(),
                QTensor::quantize(&dense, GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs).unwrap();
    out.set_position(0);
    out
}

/// The last position's logits of `ids` from scalpel's `model` and from candle's
/// `reference`.
pub(crate) fn last_logits(
    model: &Model,
    reference: &mut ModelWeights,
    ids: &[u32],
) -> (Vec<f32>, Vec<f32>) {
    let (out, _) = model
        .forward_batch(&[ids.to_vec()], &[], Logits::Last)
        .unwrap();
    let ours: Vec<f32> = out.logits.unwrap().squeeze(0).unwrap().to_vec1().unwrap();
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let theirs: Vec<f32> = reference
        .forward(&input, 0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    (ours, theirs)
}
