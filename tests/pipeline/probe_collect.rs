//! Activation collection on a tiny random Llama: where the points are, pooling and padding,
//! multi-point passes, truncation and the activation cache.

use scalpel::data::Dataset;
use scalpel::formats::tiny::{self, TinySpec};
use scalpel::probe::{collect, collect_loading, parse_points, CollectOptions, Pool};
use scalpel::runtime::{LoadOptions, Logits, Model, Point, Precision};
use std::path::Path;

fn tiny_model(dir: &Path) -> (Model, TinySpec) {
    let spec = TinySpec {
        blocks: 3,
        ..TinySpec::default()
    };
    let path = crate::common::tiny_gguf(dir, &spec, 11);
    let model = Model::load(
        &path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap();
    (model, spec)
}

fn dataset() -> Dataset {
    let texts = [
        "hello there",
        "a somewhat longer sentence about nothing at all, padded later",
        "x",
        "the quick brown fox jumps over the lazy dog",
        "bad words here",
        "good morning to you and yours",
    ];
    Dataset::new(
        "tiny",
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), (i % 2) as u8))
            .collect(),
    )
    .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn mlp_input_is_the_normed_residual_that_the_mlp_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (model, spec) = tiny_model(dir.path());
    let w = tiny::weights(&spec, 11).unwrap();
    let get = |name: &str| &w.iter().find(|t| t.name == name).unwrap().data;
    let ids = model.tokenizer.encode("the quick brown fox").unwrap();
    let (d, f) = (spec.d, spec.d_ff);
    for i in 0..spec.blocks {
        let (out, _) = model
            .forward_batch(
                std::slice::from_ref(&ids),
                &[Point::MlpInput(i), Point::Residual(i)],
                Logits::None,
            )
            .unwrap();
        let m = out.hidden[0]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let r = out.hidden[1]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let p = format!("model.layers.{i}");
        let (gate, up, down) = (
            get(&format!("{p}.mlp.gate_proj.weight")),
            get(&format!("{p}.mlp.up_proj.weight")),
            get(&format!("{p}.mlp.down_proj.weight")),
        );
        let norm_w = get(&format!("{p}.post_attention_layernorm.weight"));
        for tok in 0..ids.len() {
            let mt = &m[tok * d..(tok + 1) * d];
            // The MLP by hand from the tiny weights: act = silu(gate·m) ⊙ (up·m); out = down·act.
            let act: Vec<f32> = (0..f)
                .map(|j| {
                    let g: f32 = (0..d).map(|k| gate[j * d + k] * mt[k]).sum();
                    let u: f32 = (0..d).map(|k| up[j * d + k] * mt[k]).sum();
                    g / (1.0 + (-g).exp()) * u
                })
                .collect();
            // The residual before the MLP = residual after the block − the MLP's output.
            let pre: Vec<f32> = (0..d)
                .map(|k| r[tok * d + k] - (0..f).map(|j| down[k * f + j] * act[j]).sum::<f32>())
                .collect();
            let rms = (pre.iter().map(|x| x * x).sum::<f32>() / d as f32 + spec.rms_eps).sqrt();
            let want: Vec<f32> = pre.iter().zip(norm_w).map(|(x, g)| x / rms * g).collect();
            let diff = max_abs_diff(mt, &want);
            assert!(diff < 1e-4, "block {i} token {tok}: {diff}");
        }
    }
}

#[test]
fn pooling_ignores_padding_and_one_pass_gives_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let (model, spec) = tiny_model(dir.path());
    let ds = dataset();
    let all = parse_points("mlp:all", spec.blocks).unwrap();
    assert_eq!(all.len(), spec.blocks);
    for pool in [Pool::Mean, Pool::Last] {
        let opts = |points: Vec<Point>, batch_size| CollectOptions {
            points,
            pool,
            batch_size,
            ..CollectOptions::default()
        };
        let (alone, _) = collect(&model, &ds, &opts(vec![Point::MlpInput(1)], 1)).unwrap();
        let (batched, stats) = collect(&model, &ds, &opts(all.clone(), 4)).unwrap();
        assert_eq!(stats.computed_points, spec.blocks);
        assert_eq!(batched[1].point, Point::MlpInput(1));
        let diff = max_abs_diff(&alone[0].data, &batched[1].data);
        assert!(diff < 1e-5, "{pool:?}: alone vs padded batch {diff}");
        // Direct computation for one text: mean (or last) of the per-token states.
        let ids = model.tokenizer.encode(&ds.items[3].0).unwrap();
        let (out, _) = model
            .forward_batch(
                std::slice::from_ref(&ids),
                &[Point::MlpInput(1)],
                Logits::None,
            )
            .unwrap();
        let h = out.hidden[0].squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let want: Vec<f32> = match pool {
            Pool::Mean => (0..spec.d)
                .map(|k| h.iter().map(|row| row[k]).sum::<f32>() / ids.len() as f32)
                .collect(),
            Pool::Last => h[ids.len() - 1].clone(),
        };
        assert!(max_abs_diff(alone[0].row(3), &want) < 1e-5, "{pool:?}");
    }
}

#[test]
fn truncation_is_counted_and_cache_is_hit_and_keyed() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = tiny_model(dir.path());
    let cache = dir.path().join("cache");
    let ds = dataset();
    let opts = |points: Vec<Point>, max_tokens| CollectOptions {
        points,
        max_tokens,
        cache_dir: Some(cache.clone()),
        ..CollectOptions::default()
    };
    let entries = || {
        std::fs::read_dir(cache.join("activations"))
            .unwrap()
            .count()
    };
    let (first, s1) = collect(&model, &ds, &opts(vec![Point::FinalNorm], 8)).unwrap();
    assert_eq!((s1.computed_points, s1.cached_points), (1, 0));
    assert!(s1.truncated >= 2, "{s1:?}");
    assert_eq!(s1.model_sha256.len(), 64);
    let (again, s2) = collect(&model, &ds, &opts(vec![Point::FinalNorm], 8)).unwrap();
    assert_eq!((s2.computed_points, s2.cached_points, s2.texts), (0, 1, 0));
    assert_eq!(s2.truncated, s1.truncated);
    assert_eq!(first, again);
    assert_eq!(entries(), 1);
    // Another point, another max length, another dataset: new entries.
    let (_, s3) = collect(
        &model,
        &ds,
        &opts(vec![Point::FinalNorm, Point::Residual(0)], 8),
    )
    .unwrap();
    assert_eq!((s3.computed_points, s3.cached_points), (1, 1));
    assert_eq!(entries(), 2);
    let (longer, _) = collect(&model, &ds, &opts(vec![Point::FinalNorm], 128)).unwrap();
    assert_eq!(entries(), 3);
    assert_ne!(
        longer[0].data, first[0].data,
        "truncation changes long texts"
    );
    let mut other = ds.clone();
    other.items[0].1 = 1;
    collect(&model, &other, &opts(vec![Point::FinalNorm], 8)).unwrap();
    assert_eq!(entries(), 4);
}

/// `collect_loading` finds the entries `collect` wrote for the f32 model while holding only the
/// native one, loads the f32 model only for a point the cache lacks, gives the same numbers,
/// and refuses a loader that returns another precision.
#[test]
fn collect_loading_loads_only_on_a_cache_miss() {
    let dir = tempfile::tempdir().unwrap();
    let (f32_model, _) = tiny_model(dir.path());
    let native = Model::load(
        &f32_model.path,
        &LoadOptions {
            precision: Precision::Native,
        },
    )
    .unwrap();
    let ds = dataset();
    let opts = |points: Vec<Point>| CollectOptions {
        points,
        max_tokens: 16,
        cache_dir: Some(dir.path().join("cache")),
        ..CollectOptions::default()
    };
    let (want, _) = collect(&f32_model, &ds, &opts(vec![Point::FinalNorm])).unwrap();
    let loads = std::cell::Cell::new(0);
    let load = |precision| {
        loads.set(loads.get() + 1);
        Model::load(&f32_model.path, &LoadOptions { precision })
    };
    let f32_load = || load(Precision::F32);
    let (hit, s) = collect_loading(
        &native,
        Precision::F32,
        &f32_load,
        &ds,
        &opts(vec![Point::FinalNorm]),
    )
    .unwrap();
    assert_eq!((loads.get(), s.cached_points), (0, 1));
    assert_eq!(hit, want);
    let points = vec![Point::FinalNorm, Point::Residual(1)];
    let (both, s) = collect_loading(
        &native,
        Precision::F32,
        &f32_load,
        &ds,
        &opts(points.clone()),
    )
    .unwrap();
    assert_eq!((loads.get(), s.cached_points, s.computed_points), (1, 1, 1));
    assert_eq!(both, collect(&f32_model, &ds, &opts(points)).unwrap().0);
    let wrong = || load(Precision::Native);
    let e = collect_loading(
        &native,
        Precision::F32,
        &wrong,
        &ds,
        &opts(vec![Point::Residual(0)]),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("forward passes"), "{e:#}");
}

#[test]
fn bad_points_are_one_line_errors() {
    for (s, want) in [
        ("mlp:9", "does not exist"),
        ("abc", "not a block number"),
        ("attn:1", "expected final"),
    ] {
        let err = parse_points(s, 3).unwrap_err().to_string();
        assert!(err.contains(want), "{s}: {err}");
        assert!(!err.contains('\n'));
    }
    assert_eq!(parse_points("2", 3).unwrap(), vec![Point::Residual(2)]);
    assert_eq!(
        parse_points("final, mlp:1,mlp:all", 2).unwrap(),
        vec![Point::FinalNorm, Point::MlpInput(1), Point::MlpInput(0)]
    );
}
