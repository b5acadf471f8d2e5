//! Surgery on the default model (needs `SCALPEL_MODEL`): the edited model differs from the
//! base only through the edited rows, checked against an independently built expectation,
//! and the patch reverts GGUF and HF outputs bit for bit.
//!
//! The expectation: an HF folder written from the base (every tensor dequantised to f32,
//! `crate::common::gguf_to_hf_folder`), edited by the HF writer in f32. The GGUF edited with
//! `keep_precision` (edited tensors stored as F32) must give the same logits when both are
//! loaded in f32; the re-quantised GGUF must be within a quantisation tolerance of it.

use std::collections::BTreeMap;
use std::path::Path;

use scalpel::formats::patch::{sha256_hex, Patch};
use scalpel::probe::Probe;
use scalpel::runtime::{LoadOptions, Logits, Model, Precision};
use scalpel::surgery::edit::random_direction;
use scalpel::surgery::{plan_edit, select, EditOptions, ModelFile, SelectOptions, Selection};
use scalpel::surgery::{write_edited, WriteOptions};

const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "You are such an idiot, I can't believe",
];

fn last_logits(path: &Path) -> Vec<Vec<f32>> {
    let m = Model::load(
        path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap();
    PROMPTS
        .iter()
        .map(|p| {
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

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn edit(model: &ModelFile, sel: &Selection, probe: &Probe, out: &Path, patch: &Path, keep: bool) {
    let plan = plan_edit(
        sel,
        probe,
        &EditOptions {
            alpha: 4.0,
            ..Default::default()
        },
    )
    .unwrap();
    let wo = WriteOptions {
        keep_precision: keep,
        force: false,
        patch: Some(patch.to_path_buf()),
    };
    let r = write_edited(model, &plan, out, &wo).unwrap();
    eprintln!("{}: {r:?}", out.display());
}

fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256_hex(&std::fs::read(e.path()).unwrap()),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn edited_logits_match_independent_expectation_and_patches_revert() {
    let base = crate::common::default_model();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    crate::common::gguf_to_hf_folder(&base, &p("hf"));

    // A probe of the real shape: ‖W[1]‖ = 1.035 as the reference run's, random direction.
    let w1 = random_direction(576, 1.035, 0);
    let w0: Vec<f32> = random_direction(576, 1.0, 1);
    let probe = Probe::new([w0, w1].concat(), [0.0, 0.0], Default::default()).unwrap();

    let (g, h) = (
        ModelFile::open(&base).unwrap(),
        ModelFile::open(&p("hf")).unwrap(),
    );
    let sel_g = select(&g, &probe, &SelectOptions::default()).unwrap();
    let sel_h = select(&h, &probe, &SelectOptions::default()).unwrap();
    assert_eq!(sel_g.k, 2143);
    // Same rows, same cosines: the HF folder holds the GGUF's rows decoded exactly.
    assert_eq!(sel_g.rows, sel_h.rows);

    edit(&g, &sel_g, &probe, &p("kp.gguf"), &p("kp.patch"), true);
    edit(&g, &sel_g, &probe, &p("q.gguf"), &p("q.patch"), false);
    edit(&h, &sel_h, &probe, &p("hf_e"), &p("hf.patch"), false);

    let l_base = last_logits(&base);
    let l_hf = last_logits(&p("hf_e"));
    let l_kp = last_logits(&p("kp.gguf"));
    let l_q = last_logits(&p("q.gguf"));
    let (d_edit, d_same, d_quant) = (
        max_diff(&l_base, &l_kp),
        max_diff(&l_hf, &l_kp),
        max_diff(&l_q, &l_kp),
    );
    eprintln!("max |Δlogit|: base vs edited {d_edit:.4}; HF-f32 edit vs GGUF keep-precision {d_same:.2e}; re-quantised vs keep-precision {d_quant:.4}");
    assert!(d_edit > 0.5, "the edit barely changed the logits: {d_edit}");
    assert!(
        d_same < 2e-3,
        "HF f32 edit and GGUF keep-precision edit differ: {d_same}"
    );
    assert!(
        d_quant < 0.25 * d_edit,
        "re-quantised edit is far from the exact one: {d_quant} (edit moved {d_edit})"
    );

    // Revert: original bytes back.
    let sha = |f: &Path| sha256_hex(&std::fs::read(f).unwrap());
    for (edited, patch, out) in [
        ("kp.gguf", "kp.patch", "kp_r.gguf"),
        ("q.gguf", "q.patch", "q_r.gguf"),
    ] {
        Patch::load(&p(patch))
            .unwrap()
            .write(&p(edited), &p(out), false, false)
            .unwrap();
        assert_eq!(sha(&p(out)), sha(&base), "{edited}");
    }
    Patch::load(&p("hf.patch"))
        .unwrap()
        .write(&p("hf_e"), &p("hf_r"), false, false)
        .unwrap();
    assert_eq!(files(&p("hf_r")), files(&p("hf")));
}
