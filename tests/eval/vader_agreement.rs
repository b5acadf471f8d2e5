//! Agreement of the Rust VADER port with `vaderSentiment==3.3.2`.
//!
//! Needs the `vaderSentiment/` folder of the sdist (`vader_lexicon.txt`,
//! `emoji_utf8_lexicon.txt`) at `$SCALPEL_VADER_DIR` (the test is ignored unless asked for; `scripts/test.sh` sets it), and
//! the Davidson tweets under `$SCALPEL_MIRROR` (default `../shared/mirror`). Expectations:
//! `tests/data/vader_expected.json`, made by `scripts/vader_expectations.py`.

use crate::common::{checked_tweet, davidson_tweets, sha256_hex};
use scalpel::eval::scorers::sentiment::{Polarity, Vader};
use serde::Deserialize;
use std::path::PathBuf;

/// Python sums valences in a different order only on 3.12+ (compensated `sum`); 1e-9 leaves
/// room for that and nothing else.
const TOLERANCE: f64 = 1e-9;

#[derive(Deserialize)]
struct Scores {
    compound: f64,
    pos: f64,
    neu: f64,
    neg: f64,
    compound_rounded: f64,
}

#[derive(Deserialize)]
struct Row {
    row: u64,
    sha256: String,
    #[serde(flatten)]
    scores: Scores,
}

#[derive(Deserialize)]
struct Own {
    text: String,
    #[serde(flatten)]
    scores: Scores,
}

#[derive(Deserialize)]
struct Expected {
    lexicon_sha256: String,
    emoji_lexicon_sha256: String,
    davidson_csv: String,
    davidson: Vec<Row>,
    own: Vec<Own>,
}

/// Largest difference over the four scores; panics with `what` when above tolerance or when
/// the rounded compound differs.
fn check(got: Polarity, want: &Scores, what: &str) -> f64 {
    let d = [
        (got.compound - want.compound).abs(),
        (got.pos - want.pos).abs(),
        (got.neu - want.neu).abs(),
        (got.neg - want.neg).abs(),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    assert!(
        d <= TOLERANCE,
        "{what}: rust {got:?} python compound {} pos {} neu {} neg {}",
        want.compound,
        want.pos,
        want.neu,
        want.neg
    );
    assert_eq!(
        got.rounded().compound,
        want.compound_rounded,
        "{what}: rounded compound"
    );
    d
}

#[test]
#[ignore = "needs SCALPEL_VADER_DIR and the Davidson tweets (SCALPEL_MIRROR)"]
fn rust_port_matches_python_vader() {
    let dir = std::env::var_os("SCALPEL_VADER_DIR").expect(
        "set SCALPEL_VADER_DIR to the vaderSentiment/ folder of the vadersentiment==3.3.2 sdist (scripts/test.sh does)",
    );
    let dir = PathBuf::from(dir);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let expected: Expected = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/data/vader_expected.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("vader_lexicon.txt")).unwrap()),
        expected.lexicon_sha256
    );
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("emoji_utf8_lexicon.txt")).unwrap()),
        expected.emoji_lexicon_sha256
    );
    let vader = Vader::load_dir(&dir).unwrap();

    let mut worst = 0.0f64;
    for e in &expected.own {
        worst = worst.max(check(
            vader.polarity_scores(&e.text),
            &e.scores,
            &format!("text {:?}", e.text),
        ));
    }
    eprintln!(
        "own texts: {} agree, max |diff| {worst:e}",
        expected.own.len()
    );

    let tweets = davidson_tweets(&root, &expected.davidson_csv);
    let mut worst = 0.0f64;
    for e in &expected.davidson {
        let text = checked_tweet(&tweets, e.row, &e.sha256);
        worst = worst.max(check(
            vader.polarity_scores(text),
            &e.scores,
            &format!("row {}", e.row),
        ));
    }
    assert!(expected.davidson.len() >= 200);
    eprintln!(
        "Davidson rows: {} agree, max |diff| {worst:e}",
        expected.davidson.len()
    );
}

#[test]
fn missing_lexicon_is_a_one_line_error() {
    let err = format!("{:#}", Vader::load_dir("/nonexistent/vader").unwrap_err());
    assert!(
        err.contains("/nonexistent/vader/vader_lexicon.txt") && !err.contains('\n'),
        "{err}"
    );
}
