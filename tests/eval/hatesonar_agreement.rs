//! Agreement of the Rust hatesonar port with the Python package (onnxruntime).
//!
//! Needs the model file `hatesonar/model/model.onnx` of the `hatesonar==0.1.0` wheel at
//! `$SCALPEL_HATESONAR_ONNX` (the test is ignored unless asked for; `scripts/test.sh` sets it) and the Davidson tweets under
//! `$SCALPEL_MIRROR` (default `../shared/mirror`). Expectations: `tests/data/hatesonar_expected.json`,
//! made by `scripts/hatesonar_expectations.py`.

use crate::common::{checked_tweet, davidson_tweets, sha256_hex};
use scalpel::eval::scorers::hatesonar::HateSonar;
use serde::Deserialize;
use std::path::PathBuf;

const TOLERANCE: f32 = 1e-5;

#[derive(Deserialize)]
struct Expected {
    model_sha256: String,
    davidson_csv: String,
    davidson: Vec<Row>,
    own: Vec<Own>,
}

#[derive(Deserialize)]
struct Row {
    row: u64,
    sha256: String,
    probs: [f32; 3],
}

#[derive(Deserialize)]
struct Own {
    text: String,
    probs: [f32; 3],
}

fn max_diff(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|i| (a[i] - b[i]).abs()).fold(0.0, f32::max)
}

#[test]
#[ignore = "needs SCALPEL_HATESONAR_ONNX and the Davidson tweets (SCALPEL_MIRROR)"]
fn rust_port_matches_python_hatesonar() {
    let onnx = std::env::var_os("SCALPEL_HATESONAR_ONNX").expect(
        "set SCALPEL_HATESONAR_ONNX to hatesonar/model/model.onnx of hatesonar==0.1.0 (scripts/test.sh does)",
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let expected: Expected = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/data/hatesonar_expected.json")).unwrap(),
    )
    .unwrap();
    let model_bytes = std::fs::read(&onnx).unwrap();
    assert_eq!(
        sha256_hex(&model_bytes),
        expected.model_sha256,
        "not the hatesonar 0.1.0 model file"
    );
    let sonar = HateSonar::load(&onnx).unwrap();

    // Texts written for the test.
    let mut worst = 0.0f32;
    for e in &expected.own {
        let got = sonar.probs(&e.text);
        let d = max_diff(got, e.probs);
        assert!(
            d <= TOLERANCE,
            "text {:?}: rust {got:?} python {:?}",
            e.text,
            e.probs
        );
        worst = worst.max(d);
    }
    eprintln!(
        "own texts: {} agree, max |diff| {worst:e}",
        expected.own.len()
    );

    // Davidson tweets, read from the mirror and identified by row id + sha256.
    let tweets = davidson_tweets(&root, &expected.davidson_csv);
    let mut worst = 0.0f32;
    let mut crossed = 0;
    for e in &expected.davidson {
        let text = checked_tweet(&tweets, e.row, &e.sha256);
        let got = sonar.probs(text);
        let d = max_diff(got, e.probs);
        assert!(
            d <= TOLERANCE,
            "row {}: rust {got:?} python {:?}",
            e.row,
            e.probs
        );
        worst = worst.max(d);
        crossed += usize::from(sonar.toxicity(text) >= 0.5);
    }
    assert!(expected.davidson.len() >= 200);
    eprintln!(
        "Davidson rows: {} agree, max |diff| {worst:e}; {crossed} with toxicity >= 0.5",
        expected.davidson.len()
    );
}
