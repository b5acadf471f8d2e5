//! Generation's grouped prefill (`runtime::prefill`) on tiny models of every family: the
//! stacked cache of several padded passes gives each prompt the logits of its own full
//! forward pass, at the prefill and at the first decoding step after it (Gemma's sliding
//! window included).

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::tiny::{write_gguf, TinyFamily, TinySpec};
use scalpel::runtime::prefill::{groups, prefill};
use scalpel::runtime::{LoadOptions, Logits, Model, Precision};

fn logits_all(m: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let (out, _) = m.forward_batch(&[ids.to_vec()], &[], Logits::All).unwrap();
    out.logits.unwrap().squeeze(0).unwrap().to_vec2().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn argmax(x: &[f32]) -> u32 {
    (0..x.len()).max_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap() as u32
}

fn grouped_prefill_equals_one_pass_per_prompt(family: TinyFamily) {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    let spec = TinySpec {
        family,
        blocks: 6,
        sliding_window: 4,
        ..TinySpec::default()
    };
    write_gguf(&gguf, &spec, 11, GgmlType::F32).unwrap();
    let m = Model::load(
        &gguf,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap();
    // Longest first, as generation sorts them; lengths that the grouping splits.
    let lens = [40usize, 38, 6, 5, 3, 2];
    assert!(groups(&lens).len() > 1, "{:?}", groups(&lens));
    let prompts: Vec<Vec<u32>> = lens
        .iter()
        .enumerate()
        .map(|(r, &n)| {
            (0..n)
                .map(|i| ((i * 37 + r * 11 + 5) % 250) as u32)
                .collect()
        })
        .collect();
    let seqs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let longest = lens[0];
    let (logits, mut cache) = prefill(&m, &seqs, longest + 1).unwrap();
    let logits: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    assert_eq!(cache.len(), longest);
    let mut next = Vec::new();
    for (r, p) in prompts.iter().enumerate() {
        let full = logits_all(&m, p);
        let d = max_diff(&logits[r], &full[p.len() - 1]);
        assert!(
            d < 1e-4,
            "{family:?}: prompt {r} prefill logits differ by {d}"
        );
        next.push(argmax(&logits[r]));
    }
    // One decoding step on the stacked cache, each row masked to its own prompt.
    let dev = candle_core::Device::Cpu;
    let b = prompts.len();
    let mask: Vec<u8> = lens
        .iter()
        .flat_map(|&n| (0..=longest).map(move |j| u8::from(j >= longest - n)))
        .collect();
    let pos: Vec<u32> = lens.iter().map(|&n| n as u32).collect();
    let out = m
        .net
        .forward(
            &candle_core::Tensor::from_vec(next.clone(), (b, 1), &dev).unwrap(),
            &candle_core::Tensor::from_vec(pos, (b, 1), &dev).unwrap(),
            Some(&candle_core::Tensor::from_vec(mask, (b, longest + 1), &dev).unwrap()),
            Some(&mut cache),
            &[],
            Logits::Last,
        )
        .unwrap();
    let step: Vec<Vec<f32>> = out.logits.unwrap().squeeze(1).unwrap().to_vec2().unwrap();
    for (r, p) in prompts.iter().enumerate() {
        let mut ids = p.clone();
        ids.push(next[r]);
        let full = logits_all(&m, &ids);
        let d = max_diff(&step[r], &full[ids.len() - 1]);
        assert!(d < 1e-4, "{family:?}: prompt {r} first step differs by {d}");
    }
}

#[test]
fn llama_grouped_prefill_equals_one_pass_per_prompt() {
    grouped_prefill_equals_one_pass_per_prompt(TinyFamily::Llama);
}

#[test]
fn qwen2_grouped_prefill_equals_one_pass_per_prompt() {
    grouped_prefill_equals_one_pass_per_prompt(TinyFamily::Qwen2);
}

#[test]
fn gemma3_grouped_prefill_equals_one_pass_per_prompt() {
    grouped_prefill_equals_one_pass_per_prompt(TinyFamily::Gemma3);
}
