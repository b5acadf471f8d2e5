//! Surgery on the real Gemma 3 and Qwen2 files (needs `SCALPEL_GEMMA3_MODEL` /
//! `SCALPEL_QWEN2_MODEL`): their `ffn_gate` rows are Q5_0, re-quantised after the edit.
//! The re-quantised edit must stay close to the exact one (the same edit stored as F32,
//! `keep_precision`) compared with how far the edit moves the logits, and the edited file
//! must load and generate. That llama.cpp loads the edits is checked by
//! `scripts/llamacpp_load_check.py` (see the README).

use std::path::Path;

use scalpel::probe::Probe;
use scalpel::runtime::generate::{generate, GenParams};
use scalpel::runtime::{LoadOptions, Logits, Model, Precision};
use scalpel::surgery::edit::random_direction;
use scalpel::surgery::{plan_edit, select, EditOptions, ModelFile, SelectOptions};
use scalpel::surgery::{write_edited, WriteOptions};

const PROMPTS: [&str; 2] = [
    "The capital of France is",
    "You are such an idiot, I can't believe",
];

fn last_logits(m: &Model) -> Vec<f32> {
    PROMPTS
        .iter()
        .flat_map(|p| {
            let ids = m.tokenizer.encode(p).unwrap();
            let (out, _) = m.forward_batch(&[ids], &[], Logits::Last).unwrap();
            out.logits
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn f32_model(path: &Path) -> Model {
    Model::load(
        path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn edit_requantises_close_to_exact(base: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let file = ModelFile::open(base).unwrap();
    let d = f32_model(base).config().hidden_size;
    let probe = Probe::new(
        [random_direction(d, 1.0, 1), random_direction(d, 1.0, 0)].concat(),
        [0.0, 0.0],
        Default::default(),
    )
    .unwrap();
    let sel = select(&file, &probe, &SelectOptions::default()).unwrap();
    let plan = plan_edit(
        &sel,
        &probe,
        // The paper's α (1.08) on a unit-norm direction.
        &EditOptions::default(),
    )
    .unwrap();
    let write = |name: &str, keep: bool| {
        let out = dir.path().join(name);
        let wo = WriteOptions {
            keep_precision: keep,
            force: false,
            patch: None,
        };
        write_edited(&file, &plan, &out, &wo).unwrap();
        out
    };
    let (exact, requant) = (write("exact.gguf", true), write("q.gguf", false));
    let l_base = last_logits(&f32_model(base));
    let l_exact = last_logits(&f32_model(&exact));
    let l_q = last_logits(&f32_model(&requant));
    let (d_edit, d_quant) = (max_diff(&l_base, &l_exact), max_diff(&l_q, &l_exact));
    eprintln!(
        "{}: K = {}, max |Δlogit| base vs edited {d_edit:.4}, re-quantised vs exact {d_quant:.4}",
        base.display(),
        sel.k
    );
    assert!(d_edit > 0.5, "the edit barely changed the logits: {d_edit}");
    assert!(
        d_quant < 0.25 * d_edit,
        "re-quantised edit far from exact: {d_quant} vs {d_edit}"
    );

    let m = Model::load(&requant, &LoadOptions::default()).unwrap();
    let ids = m.tokenizer.encode(PROMPTS[0]).unwrap();
    let params = GenParams {
        max_new_tokens: 5,
        batch_size: 1,
        ..Default::default()
    };
    let (g, _) = generate(&m, &[ids], &params, None).unwrap();
    assert!(
        !g[0].tokens.is_empty(),
        "the edited model generated nothing"
    );
    eprintln!(
        "edited model continues {:?} with {:?}",
        PROMPTS[0], g[0].text
    );
}

#[test]
#[ignore = "needs SCALPEL_GEMMA3_MODEL"]
fn gemma3_edit_requantises_close_to_exact() {
    let p = crate::common::model_from_env("SCALPEL_GEMMA3_MODEL", "gemma3-270m-q4km");
    edit_requantises_close_to_exact(&p);
}

#[test]
#[ignore = "needs SCALPEL_QWEN2_MODEL"]
fn qwen2_edit_requantises_close_to_exact() {
    let p =
        crate::common::model_from_env("SCALPEL_QWEN2_MODEL", "qwen2.5-coder-0.5b-instruct-q4km");
    edit_requantises_close_to_exact(&p);
}
