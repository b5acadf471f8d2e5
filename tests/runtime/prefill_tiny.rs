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

/// `KvCache::stacked` by hand: each part's rows land in order, their positions ending at
/// `filled`, zeros before (padding) and after (room); `KvRows::row` cuts a row's last
/// positions; parts that disagree or do not fit are refused.
#[test]
fn stacked_rows_land_right_aligned() {
    use candle_core::DType;
    use scalpel::runtime::{KvCache, KvRows};
    let (h, d) = (2, 3);
    // Part a: 1 row of 2 positions; part b: 2 rows of 3. Values name (part, row, head, pos, dim).
    let part = |tag: f32, rows: usize, len: usize| -> KvRows {
        let one = |which: f32| -> Vec<f32> {
            let mut x = Vec::new();
            for r in 0..rows {
                for j in 0..h {
                    for p in 0..len {
                        for e in 0..d {
                            x.push(
                                which * 10_000.0
                                    + tag * 1000.0
                                    + (r * 100 + j * 10 + p) as f32
                                    + e as f32 / 10.0,
                            );
                        }
                    }
                }
            }
            x
        };
        KvRows {
            rows,
            heads: h,
            len,
            head_dim: d,
            dtype: DType::F32,
            layers: vec![[one(1.0), one(2.0)]],
        }
    };
    let (a, b) = (part(1.0, 1, 2), part(2.0, 2, 3));
    let (filled, cap) = (4, 6);
    let cache = KvCache::stacked(&[&a, &b], filled, cap).unwrap();
    assert_eq!(cache.len(), filled);
    let (k, v) = cache.layers().unwrap().remove(0);
    assert_eq!(k.dims(), &[3, h, filled, d]);
    let (k, v) = (flat(&k), flat(&v));
    // Cache row, its part, the row within it, and the part's length.
    for (row, src, r, len) in [(0, &a, 0, 2), (1, &b, 0, 3), (2, &b, 1, 3)] {
        for j in 0..h {
            for p in 0..filled {
                for e in 0..d {
                    let at = ((row * h + j) * filled + p) * d + e;
                    let want = |which: usize| match p.checked_sub(filled - len) {
                        Some(q) => src.layers[0][which][((r * h + j) * len + q) * d + e],
                        None => 0.0,
                    };
                    assert_eq!(
                        (k[at], v[at]),
                        (want(0), want(1)),
                        "row {row} head {j} pos {p} dim {e}"
                    );
                }
            }
        }
    }
    // A row cut back out of a stacked block is the part it came from.
    let whole = KvRows::of_cache(&KvCache::stacked(&[&b], 3, 3).unwrap()).unwrap();
    let again = KvRows::of_cache(&KvCache::stacked(&[&whole.row(1, 3)], 3, 3).unwrap()).unwrap();
    let second: Vec<f32> = b.layers[0][0][h * 3 * d..].to_vec();
    assert_eq!(again.layers[0][0], second);
    // Rows longer than the filled positions, filled past capacity, other shapes: refused.
    assert!(KvCache::stacked(&[&b], 2, 6).is_err());
    assert!(KvCache::stacked(&[&b], 4, 3).is_err());
    let mut other = part(3.0, 1, 2);
    other.heads = 1;
    other.layers = vec![[vec![0.0; 2 * d], vec![0.0; 2 * d]]];
    assert!(KvCache::stacked(&[&a, &other], 4, 6).is_err());
    assert!(KvCache::stacked(&[], 4, 6).is_err());
    let mut short = part(4.0, 1, 2);
    short.layers[0][1].pop();
    assert!(KvCache::stacked(&[&short], 4, 6).is_err());
}

fn flat(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}
