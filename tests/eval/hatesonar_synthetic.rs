//! The hatesonar executor on a small hand-built ONNX graph with the same op types, so every op
//! is checked against hand-computed values without the real model file.

use prost::Message;
use scalpel::eval::scorers::hatesonar::HateSonar;
use scalpel::eval::scorers::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};

fn attr_s(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: s.as_bytes().to_vec(),
        r#type: 3,
        ..Default::default()
    }
}
fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: 2,
        ..Default::default()
    }
}
fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: 7,
        ..Default::default()
    }
}
fn attr_floats(name: &str, floats: &[f32]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        floats: floats.to_vec(),
        r#type: 6,
        ..Default::default()
    }
}
fn node(
    op: &str,
    domain: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: format!("{op}_node"),
        op_type: op.into(),
        attribute,
        domain: domain.into(),
    }
}

const INTERCEPTS: [f32; 3] = [0.1, 0.0, -0.2];

/// lower-case → tokens `[a-z]+` of ≥ 2 chars → TF over (bad, good, ugly) → × idf (1, 2, 0.5)
/// → L2 → identity-coefficient classifier with intercepts → softmax → ZipMap.
fn model() -> ModelProto {
    let mut pool = AttributeProto {
        name: "pool_strings".into(),
        r#type: 8,
        ..Default::default()
    };
    pool.strings = ["bad", "good", "ugly"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let nodes = vec![
        node("Reshape", "", &["text", "shape"], &["flat"], vec![]),
        node(
            "StringNormalizer",
            "",
            &["flat"],
            &["norm"],
            vec![attr_s("case_change_action", "LOWER")],
        ),
        node(
            "Tokenizer",
            "com.microsoft",
            &["norm"],
            &["toks"],
            vec![
                attr_s("tokenexp", "[a-z]+"),
                attr_i("mincharnum", 2),
                attr_i("mark", 0),
                attr_s("pad_value", "#"),
            ],
        ),
        node(
            "TfIdfVectorizer",
            "",
            &["toks"],
            &["tf"],
            vec![
                attr_s("mode", "TF"),
                attr_i("min_gram_length", 1),
                attr_i("max_gram_length", 1),
                attr_ints("ngram_counts", &[0]),
                attr_ints("ngram_indexes", &[0, 1, 2]),
                pool,
            ],
        ),
        node("Mul", "", &["tf", "idf"], &["w"], vec![]),
        node(
            "Normalizer",
            "ai.onnx.ml",
            &["w"],
            &["n"],
            vec![attr_s("norm", "L2")],
        ),
        node(
            "LinearClassifier",
            "ai.onnx.ml",
            &["n"],
            &["label", "prob"],
            vec![
                attr_ints("classlabels_ints", &[0, 1, 2]),
                attr_floats(
                    "coefficients",
                    &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                ),
                attr_floats("intercepts", &INTERCEPTS),
                attr_s("post_transform", "SOFTMAX"),
            ],
        ),
        node(
            "Cast",
            "",
            &["label"],
            &["out_label"],
            vec![attr_i("to", 7)],
        ),
        node(
            "ZipMap",
            "ai.onnx.ml",
            &["prob"],
            &["out_prob"],
            vec![attr_ints("classlabels_int64s", &[0, 1, 2])],
        ),
    ];
    let shape = TensorProto {
        name: "shape".into(),
        dims: vec![1],
        data_type: 7,
        int64_data: vec![-1],
        ..Default::default()
    };
    let idf_raw: Vec<u8> = [1.0f32, 2.0, 0.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let idf = TensorProto {
        name: "idf".into(),
        dims: vec![3],
        data_type: 1,
        raw_data: idf_raw,
        ..Default::default()
    };
    ModelProto {
        ir_version: 10,
        producer_name: "test".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: vec![shape, idf],
            input: vec![ValueInfoProto {
                name: "text".into(),
            }],
            output: vec![
                ValueInfoProto {
                    name: "out_label".into(),
                },
                ValueInfoProto {
                    name: "out_prob".into(),
                },
            ],
        }),
        opset_import: vec![],
    }
}

fn write(model: &ModelProto) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    (dir, path)
}

fn softmax(s: [f64; 3]) -> [f64; 3] {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e = s.map(|x| (x - m).exp());
    let z: f64 = e.iter().sum();
    e.map(|x| x / z)
}

#[test]
fn every_op_matches_hand_computation() {
    let (_dir, path) = write(&model());
    let sonar = HateSonar::load(&path).unwrap();
    // "Bad BAD good a ugly!": tokens bad bad good ugly ("a" is too short); counts (2, 1, 1)
    // × idf (1, 2, 0.5) = (2, 2, 0.5); L2 norm sqrt(8.25).
    let norm = 8.25f64.sqrt();
    let b = INTERCEPTS.map(f64::from);
    let want = softmax([2.0 / norm + b[0], 2.0 / norm + b[1], 0.5 / norm + b[2]]);
    let p = sonar.predict("Bad BAD good a ugly!").unwrap();
    for i in 0..3 {
        assert!(
            (f64::from(p.probs[i]) - want[i]).abs() < 1e-6,
            "{:?} vs {want:?}",
            p.probs
        );
    }
    assert_eq!(p.label, 0); // 2/n + 0.1 beats 2/n + 0
    assert!((sonar.toxicity("Bad BAD good a ugly!") - (p.probs[0] + p.probs[1])).abs() < 1e-7);

    // No known word: an all-zero row stays zero through the L2 normaliser, so only the
    // intercepts remain.
    let want = softmax(b);
    for text in ["", "a b c", "nothing known here 123"] {
        let p = sonar.probs(text);
        for i in 0..3 {
            assert!((f64::from(p[i]) - want[i]).abs() < 1e-6, "{text:?}: {p:?}");
        }
    }
    // The dotted capital I lower-cases to a plain "i" (simple mapping), joining the token.
    assert_eq!(sonar.probs("Bİd"), sonar.probs("bid"));
    assert_eq!(sonar.toxicity_batch(&["good", "bad"]).len(), 2);
}

#[test]
fn unknown_op_is_named_in_the_error() {
    let mut m = model();
    let g = m.graph.as_mut().unwrap();
    g.node[4].op_type = "Gemm".into();
    let (_dir, path) = write(&m);
    let err = format!("{:#}", HateSonar::load(&path).unwrap_err());
    assert!(err.contains("unsupported ONNX op Gemm"), "{err}");
    assert!(!err.contains('\n'), "one-line error: {err}");
}

#[test]
fn bad_files_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.onnx");
    let err = format!("{:#}", HateSonar::load(&missing).unwrap_err());
    assert!(err.contains("none.onnx"), "{err}");
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\xff\xff\xff not protobuf").unwrap();
    let err = format!("{:#}", HateSonar::load(&junk).unwrap_err());
    assert!(err.contains("decoding ONNX protobuf"), "{err}");

    // Wrong number of classes.
    let mut m = model();
    let g = m.graph.as_mut().unwrap();
    g.node[6].attribute[0] = attr_ints("classlabels_ints", &[0, 1]);
    let (_d, path) = write(&m);
    assert!(HateSonar::load(&path).is_err());
}
