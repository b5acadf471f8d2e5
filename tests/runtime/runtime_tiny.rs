//! The runtime on tiny random models the test writes itself: GGUF and safetensors describe
//! the same weights, and every kind of broken file gives a one-line error naming it.

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::tiny::{write_gguf, write_hf_folder, Breakage, HfDtype, TinySpec};
use scalpel::runtime::generate::{generate, GenParams};
use scalpel::runtime::{LoadOptions, Logits, Model, Point, Precision};
use std::path::Path;

fn load(path: &Path) -> anyhow::Result<Model> {
    Model::load(
        path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
}

fn error_of(path: &Path) -> String {
    match load(path) {
        Ok(_) => panic!("{} loaded although it is broken", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn gguf_and_safetensors_of_the_same_weights_agree() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    let gguf = dir.path().join("tiny.gguf");
    let hf = dir.path().join("hf");
    write_gguf(&gguf, &spec, 7, GgmlType::F32).unwrap();
    write_hf_folder(&hf, &spec, 7, HfDtype::F32).unwrap();
    let (a, b) = (load(&gguf).unwrap(), load(&hf).unwrap());
    let text = "hello world, hello tiny model";
    let ids = a.tokenizer.encode(text).unwrap();
    assert_eq!(b.tokenizer.encode(text).unwrap(), ids);
    let points = [Point::MlpInput(0), Point::Residual(1), Point::FinalNorm];
    let (oa, _) = a
        .forward_batch(std::slice::from_ref(&ids), &points, Logits::All)
        .unwrap();
    let (ob, _) = b
        .forward_batch(std::slice::from_ref(&ids), &points, Logits::All)
        .unwrap();
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (x, y) in oa
        .hidden
        .iter()
        .chain(oa.logits.iter())
        .zip(ob.hidden.iter().chain(ob.logits.iter()))
    {
        let (x, y) = (flat(x), flat(y));
        let diff = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        // Same f32 values, q/k rows permuted for interleaved RoPE: only summation order differs.
        assert!(diff < 1e-4, "max abs difference {diff}");
    }
    let params = GenParams {
        max_new_tokens: 6,
        ..Default::default()
    };
    let (ga, _) = generate(&a, std::slice::from_ref(&ids), &params, None).unwrap();
    let (gb, _) = generate(&b, &[ids], &params, None).unwrap();
    assert_eq!(ga[0].tokens, gb[0].tokens);
}

#[test]
fn quantised_tiny_gguf_loads_in_every_precision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.gguf");
    write_gguf(&path, &TinySpec::default(), 3, GgmlType::Q4_1).unwrap();
    for p in [
        Precision::Native,
        Precision::Int8Activations,
        Precision::Q8_0,
        Precision::F32,
    ] {
        let m = Model::load(&path, &LoadOptions { precision: p }).unwrap();
        let ids = m.tokenizer.encode("abc").unwrap();
        let (out, _) = m.forward_batch(&[ids], &[], Logits::Last).unwrap();
        let v = out
            .logits
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{p:?}");
    }
}

#[test]
fn broken_files_give_one_line_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (Breakage::Truncated, "cannot read tensor"),
        (Breakage::WrongShape, "blk.0.ffn_gate.weight"),
        (Breakage::UnknownArchitecture, "tinyunknown"),
        (Breakage::MissingTokenizer, "tokenizer"),
    ];
    for (breakage, needle) in cases {
        let spec = TinySpec {
            breakage,
            ..TinySpec::default()
        };
        let path = dir.path().join(format!("{breakage:?}.gguf"));
        write_gguf(&path, &spec, 1, GgmlType::F32).unwrap();
        let msg = error_of(&path);
        assert!(
            !msg.contains('\n'),
            "{breakage:?}: multi-line error {msg:?}"
        );
        assert!(
            msg.contains(needle),
            "{breakage:?}: {msg:?} does not name {needle:?}"
        );
        assert!(
            msg.contains(&path.display().to_string()),
            "{breakage:?}: {msg:?} does not name the file"
        );
    }
    let hf_cases = [
        (Breakage::WrongShape, "gate_proj"),
        (Breakage::UnknownArchitecture, "TinyUnknownForCausalLM"),
        (Breakage::MissingTokenizer, "tokenizer.json"),
        (Breakage::Truncated, "safetensors"),
    ];
    for (breakage, needle) in hf_cases {
        let spec = TinySpec {
            breakage,
            ..TinySpec::default()
        };
        let path = dir.path().join(format!("hf-{breakage:?}"));
        write_hf_folder(&path, &spec, 1, HfDtype::F16).unwrap();
        let msg = error_of(&path);
        assert!(
            !msg.contains('\n'),
            "{breakage:?}: multi-line error {msg:?}"
        );
        assert!(
            msg.contains(needle),
            "{breakage:?}: {msg:?} does not name {needle:?}"
        );
    }
    let missing = error_of(&dir.path().join("nope.gguf"));
    assert!(missing.contains("nope.gguf"), "{missing}");
}
