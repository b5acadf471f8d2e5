//! The runtime on the real default model: tokenizer ids and greedy text against llama.cpp
//! (stored by `scripts/llamacpp_reference.py`), the safetensors path against the GGUF path,
//! padding, and batched generation.

use scalpel::probe::mean_pool;
use scalpel::runtime::generate::{generate, GenParams};
use scalpel::runtime::{LoadOptions, Logits, Model, Point, Precision};

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/llamacpp_reference.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn tokenizer_ids_equal_llama_cpp_and_round_trip() {
    let path = crate::common::default_model();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    for case in reference()["tokens"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = model.tokenizer.encode(text).unwrap();
        assert_eq!(
            ids,
            ids_of(&case["ids"]),
            "ids differ from llama.cpp for {text:?}"
        );
        assert_eq!(
            model.tokenizer.decode(&ids, false).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn greedy_text_matches_llama_cpp() {
    let path = crate::common::default_model();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let cases = reference()["generations"].as_array().unwrap().clone();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids_of(&c["ids"])).collect();
    for (c, p) in cases.iter().zip(&prompts) {
        assert_eq!(
            &model
                .tokenizer
                .encode(c["prompt"].as_str().unwrap())
                .unwrap(),
            p
        );
    }
    // One prompt at a time, as llama.cpp ran them: padding changes the shapes of the
    // attention matmuls, hence summation order, and 8-bit activation rounding can turn that
    // into a flipped near-tie.
    let params = GenParams {
        max_new_tokens: 20,
        batch_size: 1,
        ..Default::default()
    };
    let (gens, _) = generate(&model, &prompts, &params, None).unwrap();
    for (c, g) in cases.iter().zip(&gens) {
        let want = ids_of(&c["greedy20"]);
        // llama.cpp rounds every matmul input to 8 bits and keeps its KV cache in f16;
        // scalpel's native path is exact (equal to f32 weights). Near-ties therefore flip —
        // on the chat prompt llama.cpp's rounding turns "The capital of France is Paris."
        // into "L'Étoile, …" — so the check is that our first token is among llama.cpp's
        // top 5, and the printed agreement length is information, not a criterion.
        let top5 = ids_of(&c["top5"]);
        let agree = g
            .tokens
            .iter()
            .zip(&want)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "agree on {agree} of {} greedy tokens: {:?}",
            want.len(),
            g.text
        );
        assert!(
            top5.contains(&g.tokens[0]),
            "first token {} not in llama.cpp's top 5 {top5:?}",
            g.tokens[0]
        );
    }
    assert!(gens[0].text.starts_with(" Paris"), "got {:?}", gens[0].text);
    assert!(
        gens[1].text.contains("Paris"),
        "chat answer {:?}",
        gens[1].text
    );
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn batched_left_padded_generation_equals_one_at_a_time() {
    let path = crate::common::default_model();
    // f32 weights: with quantised matmul, the 8-bit rounding of activations can amplify the
    // last-bit differences that padding causes in attention into a flipped near-tie.
    let model = Model::load(
        &path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap();
    let texts = [
        "The capital of France is",
        "Water boils at a temperature of",
        "Hi",
        "Once upon a time, in a small village at the edge of a great forest, there lived an old woman who",
    ];
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| model.tokenizer.encode(t).unwrap())
        .collect();
    let params = GenParams {
        max_new_tokens: 12,
        batch_size: 4,
        ..Default::default()
    };
    let (batched, _) = generate(&model, &prompts, &params, None).unwrap();
    let single = GenParams {
        batch_size: 1,
        ..params
    };
    let (alone, _) = generate(&model, &prompts, &single, None).unwrap();
    for (a, b) in batched.iter().zip(&alone) {
        assert_eq!(a.tokens, b.tokens, "{:?} vs {:?}", a.text, b.text);
    }
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn mean_pooling_ignores_padding() {
    let path = crate::common::default_model();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let short = model.tokenizer.encode("You are kind.").unwrap();
    let long = model
        .tokenizer
        .encode("A much longer sentence that forces padding of the other one.")
        .unwrap();
    let pooled = |seqs: &[Vec<u32>]| {
        let (out, mask) = model
            .forward_batch(seqs, &[Point::FinalNorm], Logits::None)
            .unwrap();
        mean_pool(&out.hidden[0], &mask)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    };
    let alone = pooled(std::slice::from_ref(&short));
    let batched = pooled(&[long, short]);
    let diff = alone[0]
        .iter()
        .zip(&batched[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "max abs difference {diff}");
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn safetensors_folder_gives_the_same_hidden_states_as_the_gguf() {
    let path = crate::common::default_model();
    let dir = tempfile::tempdir().unwrap();
    crate::common::gguf_to_hf_folder(&path, dir.path());
    let f32_opts = LoadOptions {
        precision: Precision::F32,
    };
    let gguf = Model::load(&path, &f32_opts).unwrap();
    let hf = Model::load(dir.path(), &f32_opts).unwrap();
    let native = Model::load(&path, &LoadOptions::default()).unwrap();
    let text = "The quick brown fox jumps over the lazy dog, and then it rests.";
    let ids = gguf.tokenizer.encode(text).unwrap();
    assert_eq!(
        hf.tokenizer.encode(text).unwrap(),
        ids,
        "tokenizer.json written from the GGUF"
    );
    let points = [Point::Residual(14), Point::FinalNorm];
    let run = |m: &Model| {
        let (out, _) = m
            .forward_batch(std::slice::from_ref(&ids), &points, Logits::None)
            .unwrap();
        out.hidden
            .iter()
            .map(|h| h.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    let rel = |a: &[f32], b: &[f32]| {
        let num: f32 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt();
        num / b.iter().map(|y| y * y).sum::<f32>().sqrt()
    };
    let (g, h, n) = (run(&gguf), run(&hf), run(&native));
    for k in 0..points.len() {
        let exact = rel(&h[k], &g[k]);
        let quant = rel(&n[k], &h[k]);
        eprintln!("{:?}: rel L2 f32 GGUF vs safetensors {exact:.2e}, native Q4_1 vs safetensors {quant:.2e}", points[k]);
        assert!(exact < 1e-4, "f32 GGUF and safetensors differ: {exact}");
        // The native kernels multiply the stored weights with f32 inputs: exact up to
        // summation order, like the f32 path.
        assert!(quant < 1e-4, "native GGUF and safetensors differ: {quant}");
    }
}
