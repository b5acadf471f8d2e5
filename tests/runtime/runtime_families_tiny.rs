//! Qwen2 and Gemma 3 graphs on tiny random models the test writes itself: the forward pass
//! against a direct, loop-by-loop computation from the Hugging Face weights (written here,
//! following the Hugging Face modelling code), GGUF against safetensors, and cached
//! generation against full forward passes (Gemma's sliding window included).

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::tiny::{
    weights, write_gguf, write_hf_folder, HfDtype, TinyFamily, TinySpec, TinyTensor,
};
use scalpel::runtime::generate::{generate, GenParams};
use scalpel::runtime::{Arch, KvCache, LoadOptions, Logits, Model, Point, Precision};
use std::collections::HashMap;
use std::path::Path;

fn spec(family: TinyFamily) -> TinySpec {
    TinySpec {
        family,
        // Six blocks so that Gemma has five local layers and one global one (layer 5).
        blocks: 6,
        sliding_window: 4,
        ..TinySpec::default()
    }
}

fn load(path: &Path) -> Model {
    Model::load(
        path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap()
}

/// Twelve token ids: longer than the sliding window of 4.
const IDS: [u32; 12] = [5, 17, 33, 101, 7, 250, 64, 12, 199, 3, 88, 140];

/// Logits of every position, computed directly in f64 from the HF-layout weights.
fn direct_logits(spec: &TinySpec, w: &[TinyTensor], ids: &[u32]) -> Vec<Vec<f64>> {
    let t: HashMap<&str, &TinyTensor> = w.iter().map(|x| (x.name.as_str(), x)).collect();
    let get = |n: &str| -> Vec<f64> { t[n].data.iter().map(|&x| x as f64).collect() };
    let gemma = spec.family == TinyFamily::Gemma3;
    let (d, hd, nh, nkv) = (spec.d, spec.head_dim(), spec.heads, spec.kv_heads);
    let eps = spec.rms_eps as f64;
    let norm = |x: &[f64], g: &[f64]| -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let r = 1.0 / (ms + eps).sqrt();
        let shift = if gemma { 1.0 } else { 0.0 };
        x.iter().zip(g).map(|(v, g)| v * r * (g + shift)).collect()
    };
    // y = W x (+ b) for W [out, in] row-major.
    let mv = |wm: &[f64], x: &[f64], b: Option<Vec<f64>>| -> Vec<f64> {
        let n = x.len();
        (0..wm.len() / n)
            .map(|r| {
                let s: f64 = wm[r * n..(r + 1) * n]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum();
                s + b.as_ref().map_or(0.0, |b| b[r])
            })
            .collect()
    };
    let rope = |v: &mut [f64], pos: usize, theta: f64| {
        for i in 0..hd / 2 {
            let a = pos as f64 * theta.powf(-((2 * i) as f64) / hd as f64);
            let (x1, x2) = (v[i], v[i + hd / 2]);
            v[i] = x1 * a.cos() - x2 * a.sin();
            v[i + hd / 2] = x2 * a.cos() + x1 * a.sin();
        }
    };
    let n = ids.len();
    let emb = get("model.embed_tokens.weight");
    let scale = if gemma { (d as f64).sqrt() } else { 1.0 };
    let mut xs: Vec<Vec<f64>> = ids
        .iter()
        .map(|&id| {
            emb[id as usize * d..(id as usize + 1) * d]
                .iter()
                .map(|v| v * scale)
                .collect()
        })
        .collect();
    for l in 0..spec.blocks {
        let p = format!("model.layers.{l}");
        let g = |s: &str| get(&format!("{p}.{s}"));
        let bias = |s: &str| (spec.family == TinyFamily::Qwen2).then(|| g(s));
        let local = gemma && (l + 1) % 6 != 0;
        let theta = if local {
            10_000.0
        } else {
            spec.rope_theta as f64
        };
        let (mut q, mut k, mut v) = (vec![], vec![], vec![]);
        for (pos, x) in xs.iter().enumerate() {
            let h = norm(x, &g("input_layernorm.weight"));
            let mut qi = mv(
                &g("self_attn.q_proj.weight"),
                &h,
                bias("self_attn.q_proj.bias"),
            );
            let mut ki = mv(
                &g("self_attn.k_proj.weight"),
                &h,
                bias("self_attn.k_proj.bias"),
            );
            let vi = mv(
                &g("self_attn.v_proj.weight"),
                &h,
                bias("self_attn.v_proj.bias"),
            );
            for (y, heads, nn) in [(&mut qi, nh, "q_norm"), (&mut ki, nkv, "k_norm")] {
                for hh in 0..heads {
                    let head = &mut y[hh * hd..(hh + 1) * hd];
                    if gemma {
                        let normed = norm(head, &g(&format!("self_attn.{nn}.weight")));
                        head.copy_from_slice(&normed);
                    }
                    rope(head, pos, theta);
                }
            }
            q.push(qi);
            k.push(ki);
            v.push(vi);
        }
        for i in 0..n {
            let mut att = vec![0f64; nh * hd];
            for hh in 0..nh {
                let kh = hh / (nh / nkv);
                let visible: Vec<usize> = (0..=i)
                    .filter(|&j| !local || i - j < spec.sliding_window)
                    .collect();
                let s: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        (0..hd)
                            .map(|c| q[i][hh * hd + c] * k[j][kh * hd + c])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (&j, ej) in visible.iter().zip(&e) {
                    for c in 0..hd {
                        att[hh * hd + c] += ej / z * v[j][kh * hd + c];
                    }
                }
            }
            let o = mv(&g("self_attn.o_proj.weight"), &att, None);
            let o = if gemma {
                norm(&o, &g("post_attention_layernorm.weight"))
            } else {
                o
            };
            xs[i].iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let pre = if gemma {
                "pre_feedforward_layernorm.weight"
            } else {
                "post_attention_layernorm.weight"
            };
            let m = norm(&xs[i], &g(pre));
            let gate = mv(&g("mlp.gate_proj.weight"), &m, None);
            let up = mv(&g("mlp.up_proj.weight"), &m, None);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(&a, &u)| {
                    let f = if gemma {
                        let c = (2.0 / std::f64::consts::PI).sqrt();
                        0.5 * a * (1.0 + (c * (a + 0.044715 * a * a * a)).tanh())
                    } else {
                        a / (1.0 + (-a).exp())
                    };
                    f * u
                })
                .collect();
            let f = mv(&g("mlp.down_proj.weight"), &act, None);
            let f = if gemma {
                norm(&f, &g("post_feedforward_layernorm.weight"))
            } else {
                f
            };
            xs[i].iter_mut().zip(&f).for_each(|(x, f)| *x += f);
        }
    }
    let head = if spec.tie_embeddings {
        emb.clone()
    } else {
        get("lm_head.weight")
    };
    xs.iter()
        .map(|x| mv(&head, &norm(x, &get("model.norm.weight")), None))
        .collect()
}

fn logits_all(m: &Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let (out, _) = m.forward_batch(&[ids.to_vec()], &[], Logits::All).unwrap();
    out.logits.unwrap().squeeze(0).unwrap().to_vec2().unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

fn forward_equals_direct_computation(family: TinyFamily) {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(family);
    let w = weights(&spec, 11).unwrap();
    let want = direct_logits(&spec, &w, &IDS);
    let gguf = dir.path().join("tiny.gguf");
    let hf = dir.path().join("hf");
    write_gguf(&gguf, &spec, 11, GgmlType::F32).unwrap();
    write_hf_folder(&hf, &spec, 11, HfDtype::F32).unwrap();
    for path in [&gguf, &hf] {
        let m = load(path);
        let arch = match family {
            TinyFamily::Gemma3 => Arch::Gemma3,
            TinyFamily::Qwen2 => Arch::Qwen2,
            TinyFamily::Llama => Arch::Llama,
        };
        assert_eq!(m.config().arch, arch);
        let diff = max_diff(&logits_all(&m, &IDS), &want);
        eprintln!(
            "{family:?} {}: max |Δlogit| vs direct = {diff:.2e}",
            path.display()
        );
        // f32 against f64 arithmetic on logits of size ~1.
        assert!(
            diff < 1e-4,
            "{family:?} {}: max |Δlogit| {diff}",
            path.display()
        );
    }
}

#[test]
fn qwen2_forward_equals_direct_computation() {
    forward_equals_direct_computation(TinyFamily::Qwen2);
}

#[test]
fn gemma3_forward_equals_direct_computation() {
    forward_equals_direct_computation(TinyFamily::Gemma3);
}

/// A pass long enough for the attention to take its queries in blocks (`runtime::layers`:
/// 128 per block from 256 positions on, each against the keys up to its last query) against
/// the direct computation, every family, GGUF and safetensors; Gemma's sliding window of 4
/// crosses every block boundary.
#[test]
fn long_pass_in_query_blocks_equals_direct_computation() {
    for family in [TinyFamily::Llama, TinyFamily::Qwen2, TinyFamily::Gemma3] {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec(family);
        spec.context = 512;
        let vocab = spec.vocab() as u32;
        let ids: Vec<u32> = (0..300u32).map(|i| (i * 37 + 11) % vocab).collect();
        let w = weights(&spec, 11).unwrap();
        let want = direct_logits(&spec, &w, &ids);
        let gguf = dir.path().join("tiny.gguf");
        write_gguf(&gguf, &spec, 11, GgmlType::F32).unwrap();
        let diff = max_diff(&logits_all(&load(&gguf), &ids), &want);
        eprintln!("{family:?}, 300 positions: max |Δlogit| vs direct = {diff:.2e}");
        assert!(
            diff < 1e-4,
            "{family:?}: max |Δlogit| {diff} over 300 positions"
        );
    }
}

/// The direct computation is sensitive to what it checks: without the window, Gemma's
/// logits after position 4 change.
#[test]
fn gemma3_window_changes_late_positions() {
    let mut wide = spec(TinyFamily::Gemma3);
    wide.sliding_window = 64;
    let narrow = spec(TinyFamily::Gemma3);
    let w = weights(&narrow, 11).unwrap();
    let (a, b) = (
        direct_logits(&narrow, &w, &IDS),
        direct_logits(&wide, &w, &IDS),
    );
    let early = max_diff(
        &a[..4]
            .iter()
            .map(|r| r.iter().map(|&x| x as f32).collect())
            .collect::<Vec<_>>(),
        &b[..4],
    );
    let late = max_diff(
        &a[4..]
            .iter()
            .map(|r| r.iter().map(|&x| x as f32).collect())
            .collect::<Vec<_>>(),
        &b[4..],
    );
    assert!(early < 1e-5, "positions inside the window differ: {early}");
    assert!(late > 1e-3, "the window has no effect: {late}");
}

/// Decoding with the KV cache (a 3-token prefill, then one token at a time, the window
/// applied over cached keys) gives the logits of one full forward pass, position by
/// position; and greedy generation runs on the same path.
fn cached_generation_equals_full_passes(family: TinyFamily) {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&gguf, &spec(family), 5, GgmlType::F32).unwrap();
    let m = load(&gguf);
    let full = logits_all(&m, &IDS);
    let dev = candle_core::Device::Cpu;
    let mut cache = KvCache::new(m.config().num_layers, IDS.len());
    let mut start = 0;
    for end in [3, 4, 5, 6, 7, 8, 9, 10, 11, 12] {
        let ids = candle_core::Tensor::new(&IDS[start..end], &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let pos: Vec<u32> = (start as u32..end as u32).collect();
        let pos = candle_core::Tensor::new(pos.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let out = m
            .net
            .forward(&ids, &pos, None, Some(&mut cache), &[], Logits::Last)
            .unwrap();
        let got: Vec<f32> = out.logits.unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        let diff = got
            .iter()
            .zip(&full[end - 1])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-4,
            "{family:?}: position {} differs by {diff}",
            end - 1
        );
        start = end;
    }
    let params = GenParams {
        max_new_tokens: 4,
        batch_size: 1,
        ..Default::default()
    };
    let (g, _) = generate(&m, &[IDS.to_vec()], &params, None).unwrap();
    let row = &full[IDS.len() - 1];
    let argmax = (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap() as u32;
    assert_eq!(g[0].tokens[0], argmax, "{family:?}: first generated token");
}

#[test]
fn qwen2_cached_generation_equals_full_passes() {
    cached_generation_equals_full_passes(TinyFamily::Qwen2);
}

#[test]
fn gemma3_cached_generation_equals_full_passes() {
    cached_generation_equals_full_passes(TinyFamily::Gemma3);
}

/// The capture points exist and the MLP input is the pre-feed-forward norm's output: the
/// gate rows' dot products with it equal the first matmul of the MLP.
#[test]
fn gemma3_capture_points_are_the_gate_input() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(TinyFamily::Gemma3);
    let hf = dir.path().join("hf");
    write_hf_folder(&hf, &spec, 2, HfDtype::F32).unwrap();
    let m = load(&hf);
    let points = [Point::MlpInput(0), Point::Residual(5), Point::FinalNorm];
    let (out, _) = m
        .forward_batch(&[IDS.to_vec()], &points, Logits::None)
        .unwrap();
    for h in &out.hidden {
        assert_eq!(h.dims(), &[1, IDS.len(), spec.d]);
    }
    // Position 0 of block 0 by hand: embed · √d, norm, attention over itself only
    // (softmax of one key = 1: the output is o_proj · v), post-attention norm, residual,
    // then the pre-feed-forward norm.
    let w = weights(&spec, 2).unwrap();
    let t: HashMap<&str, Vec<f64>> = w
        .iter()
        .map(|x| (x.name.as_str(), x.data.iter().map(|&v| v as f64).collect()))
        .collect();
    let d = spec.d;
    let eps = spec.rms_eps as f64;
    let norm = |x: &[f64], g: &[f64]| -> Vec<f64> {
        let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
        x.iter().zip(g).map(|(v, g)| v * r * (1.0 + g)).collect()
    };
    let mv = |wm: &[f64], x: &[f64]| -> Vec<f64> {
        (0..wm.len() / x.len())
            .map(|r| {
                wm[r * x.len()..(r + 1) * x.len()]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    };
    let id = IDS[0] as usize;
    let x: Vec<f64> = t["model.embed_tokens.weight"][id * d..(id + 1) * d]
        .iter()
        .map(|v| v * (d as f64).sqrt())
        .collect();
    let h = norm(&x, &t["model.layers.0.input_layernorm.weight"]);
    let v = mv(&t["model.layers.0.self_attn.v_proj.weight"], &h);
    let hd = spec.head_dim();
    let rep = spec.heads / spec.kv_heads;
    let att: Vec<f64> = (0..spec.heads)
        .flat_map(|hh| v[(hh / rep) * hd..(hh / rep + 1) * hd].to_vec())
        .collect();
    let o = norm(
        &mv(&t["model.layers.0.self_attn.o_proj.weight"], &att),
        &t["model.layers.0.post_attention_layernorm.weight"],
    );
    let x1: Vec<f64> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
    let want = norm(&x1, &t["model.layers.0.pre_feedforward_layernorm.weight"]);
    let got: Vec<f32> = out.hidden[0]
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-4, "MlpInput(0) at position 0 differs by {diff}");
}
