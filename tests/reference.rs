//! The forward pass against an independent implementation: candle-transformers'
//! `quantized_llama` on the same GGUF weights.

mod common;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use scalpel::runtime::{LoadOptions, Logits, Model};

const PROMPTS: &[&str] = &[
    "The capital of France is",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old woman who",
];

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn top5(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(5);
    idx
}

#[test]
fn last_logits_match_candle_quantized_llama() {
    let Some(path) = common::default_model() else {
        return;
    };
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
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
        assert!(cos >= 0.999, "cosine {cos} < 0.999 for {prompt:?}");
        assert_eq!(top5(&ours), top5(&theirs), "top-5 differ for {prompt:?}");
    }
}
