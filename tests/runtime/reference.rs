//! The forward pass against an independent implementation: candle-transformers'
//! `quantized_llama` on the same GGUF weights, both in exact f32 arithmetic (weights
//! dequantised, `CANDLE_DEQUANTIZE_ALL=1` for the reference), so that any difference is a
//! bug rather than rounding. The quantised paths are compared in `reference_quant.rs`.

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use scalpel::runtime::{LoadOptions, Logits, Model, Precision};

use crate::common::{cosine, top5, PROMPTS};

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn last_logits_match_candle_quantized_llama_in_f32() {
    let path = crate::common::default_model();
    // candle reads this once per thread, at the first quantised matmul it builds; this file
    // holds a single test so no other thread has read it yet.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let model = Model::load(
        &path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    for prompt in PROMPTS {
        let ids = model.tokenizer.encode(prompt).unwrap();
        let (out, _) = model
            .forward_batch(std::slice::from_ref(&ids), &[], Logits::Last)
            .unwrap();
        let ours: Vec<f32> = out.logits.unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
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
