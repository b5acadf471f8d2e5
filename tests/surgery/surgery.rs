//! Selection, edit, writers and patch on tiny models, checked against a direct computation.

use std::collections::BTreeMap;
use std::path::Path;

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::gguf::GgufFile;
use scalpel::formats::patch::{sha256_hex, Patch};
use scalpel::formats::quant;
use scalpel::formats::safetensors::HfFolder;
use scalpel::formats::tiny::{self, HfDtype, TinySpec};
use scalpel::probe::Probe;
use scalpel::surgery::edit::random_direction;
use scalpel::surgery::{
    plan_edit, select, write_edited, Count, EditOptions, ModelFile, Operation, Ranking,
    SelectOptions, WriteOptions,
};

const ALPHA: f32 = 1.5;

/// A probe whose W[1] is the negated row 7 of block 1's gate (plus a little noise), so that
/// row must come first.
fn probe_for(model: &ModelFile) -> Probe {
    let t = &model.matrix_tensors(Default::default()).unwrap()[1];
    let mut row = vec![0f32; t.row_len];
    model.read_row(t, 7, &mut row).unwrap();
    let noise = random_direction(t.row_len, 0.01, 3);
    let w1: Vec<f32> = row.iter().zip(&noise).map(|(x, n)| -x + n).collect();
    let w0 = random_direction(t.row_len, 1.0, 4);
    Probe::new([w0, w1].concat(), [0.1, -0.1], BTreeMap::new()).unwrap()
}

/// Every gate row decoded, with its cosine against `w`, ranked by (cosine, block, row).
fn direct_ranking(model: &ModelFile, w: &[f32]) -> Vec<(usize, usize, f32)> {
    let wn = w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let mut all = Vec::new();
    for t in model.matrix_tensors(Default::default()).unwrap() {
        let rb = quant::row_bytes(t.ty, t.row_len).unwrap();
        let bytes = model.tensor_bytes(&t.name).unwrap();
        for r in 0..t.n_rows {
            let mut g = vec![0f32; t.row_len];
            quant::decode_row(t.ty, &bytes[r * rb..(r + 1) * rb], &mut g).unwrap();
            let dot: f64 = g.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum();
            let gn = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            all.push((t.block, r, (dot / (gn * wn)) as f32));
        }
    }
    all.sort_by(|a, b| a.2.total_cmp(&b.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    all
}

/// One quantisation step of a block of 32 target values. Rounding to nearest moves a value
/// by half a step; the f16 scale adds a little more, so the bound checked is one step.
fn step(ty: GgmlType, block: &[f32]) -> f32 {
    let max = block.iter().cloned().fold(f32::MIN, f32::max);
    let min = block.iter().cloned().fold(f32::MAX, f32::min);
    let amax = block.iter().map(|x| x.abs()).fold(0.0, f32::max);
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::Q8_0 => amax / 127.0,
        GgmlType::Q4_1 => (max - min) / 15.0,
        GgmlType::Q5_0 => amax / 16.0,
        _ => unreachable!(),
    }
}

/// Selects 10 rows, edits them with α, and checks everything against a direct computation.
fn check_gguf(ty: GgmlType, keep_precision: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (src, out, pfile) = (
        dir.path().join("m.gguf"),
        dir.path().join("e.gguf"),
        dir.path().join("e.patch"),
    );
    tiny::write_gguf(&src, &TinySpec::default(), 11, ty).unwrap();
    let model = ModelFile::open(&src).unwrap();
    let probe = probe_for(&model);
    let w = probe.row(1).to_vec();
    let opts = SelectOptions {
        count: Count::Rows(10),
        ..Default::default()
    };
    let sel = select(&model, &probe, &opts).unwrap();

    // Selection: the 10 most negative cosines, row (1, 7) among them with cosine ≈ −1.
    let direct = direct_ranking(&model, &w);
    let mut want: Vec<_> = direct[..10].to_vec();
    want.sort_by_key(|r| (r.0, r.1));
    let got: Vec<_> = sel
        .rows
        .iter()
        .map(|r| (r.block, r.row, r.cosine))
        .collect();
    for (g, d) in got.iter().zip(&want) {
        assert_eq!((g.0, g.1), (d.0, d.1));
        assert!((g.2 - d.2).abs() < 1e-6, "{g:?} vs {d:?}");
    }
    assert_eq!(direct[0].0..=direct[0].1, 1..=7);
    assert!(direct[0].2 < -0.99);
    assert_eq!(sel.per_block.iter().map(|b| b.selected).sum::<usize>(), 10);

    // Edit.
    let plan = plan_edit(
        &sel,
        &probe,
        &EditOptions {
            alpha: ALPHA,
            ..Default::default()
        },
    )
    .unwrap();
    let wo = WriteOptions {
        keep_precision,
        force: false,
        patch: Some(pfile.clone()),
    };
    write_edited(&model, &plan, &out, &wo).unwrap();
    let (a, b) = (GgufFile::open(&src).unwrap(), GgufFile::open(&out).unwrap());
    assert_eq!(a.metadata, b.metadata);
    let edited: BTreeMap<(String, usize), ()> = plan
        .rows
        .iter()
        .map(|r| ((r.tensor.clone(), r.row), ()))
        .collect();
    for ta in &a.tensors {
        let tb = b.require_tensor(&ta.name).unwrap();
        let touched = edited.keys().any(|k| k.0 == ta.name);
        if !touched {
            assert_eq!(
                a.tensor_bytes(ta),
                b.tensor_bytes(tb),
                "{} changed",
                ta.name
            );
            continue;
        }
        assert_eq!(tb.ty, if keep_precision { GgmlType::F32 } else { ty });
        let n = ta.row_len() as usize;
        for r in 0..ta.n_rows() as usize {
            let (mut x, mut y) = (vec![0f32; n], vec![0f32; n]);
            quant::decode_row(ta.ty, a.row_bytes(ta, r as u64).unwrap(), &mut x).unwrap();
            quant::decode_row(tb.ty, b.row_bytes(tb, r as u64).unwrap(), &mut y).unwrap();
            if !edited.contains_key(&(ta.name.clone(), r)) {
                assert_eq!(x, y, "{} row {r} changed", ta.name);
                if tb.ty == ta.ty {
                    assert_eq!(
                        a.row_bytes(ta, r as u64).unwrap(),
                        b.row_bytes(tb, r as u64).unwrap()
                    );
                }
                continue;
            }
            let want: Vec<f32> = x.iter().zip(&w).map(|(g, w)| g + ALPHA * w).collect();
            if tb.ty == GgmlType::F32 {
                assert_eq!(y, want, "{} row {r}", ta.name);
            } else {
                for (yb, wb) in y.chunks(32).zip(want.chunks(32)) {
                    let tol = step(tb.ty, wb);
                    for (p, q) in yb.iter().zip(wb) {
                        assert!(
                            (p - q).abs() <= tol + 1e-6,
                            "{} row {r}: {p} vs {q} (tol {tol})",
                            ta.name
                        );
                    }
                }
            }
        }
    }

    // Revert gives the original bytes; apply gives the edited bytes; the wrong input is refused.
    let patch = Patch::load(&pfile).unwrap();
    let rev = dir.path().join("r.gguf");
    patch.write(&out, &rev, false, false).unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&rev).unwrap()),
        sha256_hex(&std::fs::read(&src).unwrap())
    );
    let app = dir.path().join("a.gguf");
    patch.write(&src, &app, false, true).unwrap();
    assert_eq!(std::fs::read(&app).unwrap(), std::fs::read(&out).unwrap());
    let err = patch
        .write(&out, &dir.path().join("x.gguf"), false, true)
        .unwrap_err();
    assert!(format!("{err:#}").contains("patch does not fit"), "{err:#}");
    assert!(!dir.path().join("x.gguf").exists());
}

#[test]
fn gguf_f32_edit_is_exact() {
    check_gguf(GgmlType::F32, false);
}

#[test]
fn gguf_q8_0_edit_within_one_step() {
    check_gguf(GgmlType::Q8_0, false);
}

#[test]
fn gguf_q4_1_edit_within_one_step() {
    check_gguf(GgmlType::Q4_1, false);
}

/// Q5_0 is the type of `ffn_gate` in the Gemma 3 and Qwen2 Q4_K_M files.
#[test]
fn gguf_q5_0_edit_within_one_step() {
    check_gguf(GgmlType::Q5_0, false);
}

#[test]
fn gguf_q4_1_keep_precision_is_exact_and_reverts() {
    check_gguf(GgmlType::Q4_1, true);
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

fn check_hf(dtype: HfDtype, shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (src, out, pfile) = (
        dir.path().join("m"),
        dir.path().join("e"),
        dir.path().join("e.patch"),
    );
    let spec = TinySpec {
        hf_shards: shards,
        ..Default::default()
    };
    tiny::write_hf_folder(&src, &spec, 5, dtype).unwrap();
    let model = ModelFile::open(&src).unwrap();
    let probe = probe_for(&model);
    let opts = SelectOptions {
        count: Count::Rows(12),
        ..Default::default()
    };
    let sel = select(&model, &probe, &opts).unwrap();
    let plan = plan_edit(
        &sel,
        &probe,
        &EditOptions {
            alpha: -0.7,
            operation: Operation::Subtract,
            random_direction: None,
            scale: Default::default(),
        },
    )
    .unwrap();
    write_edited(
        &model,
        &plan,
        &out,
        &WriteOptions {
            patch: Some(pfile.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let (a, b) = (HfFolder::open(&src).unwrap(), HfFolder::open(&out).unwrap());
    let w = probe.row(1);
    for ta in &a.tensors {
        let tb = b.require_tensor(&ta.name).unwrap();
        assert_eq!((ta.dtype, &ta.shape), (tb.dtype, &tb.shape));
        let rows: Vec<usize> = plan
            .rows
            .iter()
            .filter(|r| r.tensor == ta.name)
            .map(|r| r.row)
            .collect();
        if rows.is_empty() {
            assert_eq!(
                a.tensor_bytes(ta),
                b.tensor_bytes(tb),
                "{} changed",
                ta.name
            );
            continue;
        }
        let (x, y) = (a.tensor_f32(ta).unwrap(), b.tensor_f32(tb).unwrap());
        let n = ta.shape[1];
        for r in 0..ta.shape[0] {
            let (xr, yr) = (&x[r * n..(r + 1) * n], &y[r * n..(r + 1) * n]);
            if !rows.contains(&r) {
                assert_eq!(xr, yr);
                continue;
            }
            // −(−0.7) · w = +0.7 · w, rounded once to the dtype.
            let want: Vec<f32> = xr.iter().zip(w).map(|(g, w)| g + 0.7 * w).collect();
            let enc = scalpel::formats::safetensors::encode_values(ta.dtype, &want).unwrap();
            let want = scalpel::formats::safetensors::decode_values(ta.dtype, &enc).unwrap();
            assert_eq!(yr, &want[..]);
        }
    }
    let rev = dir.path().join("r");
    Patch::load(&pfile)
        .unwrap()
        .write(&out, &rev, false, false)
        .unwrap();
    assert_eq!(files(&rev), files(&src));
}

#[test]
fn hf_f32_edit_exact_and_reverts() {
    check_hf(HfDtype::F32, 1);
}

#[test]
fn hf_bf16_sharded_edit_exact_and_reverts() {
    check_hf(HfDtype::BF16, 2);
}

#[test]
fn variants_and_determinism() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.gguf");
    let spec = TinySpec {
        blocks: 4,
        ..Default::default()
    };
    tiny::write_gguf(&src, &spec, 2, GgmlType::Q8_0).unwrap();
    let model = ModelFile::open(&src).unwrap();
    let probe = probe_for(&model);
    let base = SelectOptions {
        count: Count::Rows(20),
        ..Default::default()
    };

    // Aligned = the other end of the same ranking.
    let w = probe.row(1).to_vec();
    let direct = direct_ranking(&model, &w);
    let al = select(
        &model,
        &probe,
        &SelectOptions {
            ranking: Ranking::Aligned,
            ..base.clone()
        },
    )
    .unwrap();
    let mut top: Vec<_> = direct[direct.len() - 20..]
        .iter()
        .map(|r| (r.0, r.1))
        .collect();
    top.sort();
    assert_eq!(
        al.rows.iter().map(|r| (r.block, r.row)).collect::<Vec<_>>(),
        top
    );

    // Block subset: only those blocks hold rows; random selection is seeded.
    let sub = SelectOptions {
        blocks: Some([0, 3].into()),
        ..base.clone()
    };
    assert!(select(&model, &probe, &sub)
        .unwrap()
        .rows
        .iter()
        .all(|r| r.block == 0 || r.block == 3));
    let rnd = |seed| {
        select(
            &model,
            &probe,
            &SelectOptions {
                ranking: Ranking::Random,
                seed,
                ..base.clone()
            },
        )
        .unwrap()
        .rows
    };
    assert_eq!(rnd(1), rnd(1));
    assert_ne!(rnd(1), rnd(2));

    // Up projection, fraction, random direction of the same norm.
    let up = SelectOptions {
        matrix: scalpel::surgery::Matrix::Up,
        count: Count::Fraction(0.05),
        ..base.clone()
    };
    let s = select(&model, &probe, &up).unwrap();
    assert_eq!(s.k, (0.05f64 * 4.0 * 128.0).round() as usize);
    assert!(s.per_block[0].tensor.ends_with("ffn_up.weight"));
    let p = plan_edit(
        &s,
        &probe,
        &EditOptions {
            random_direction: Some(9),
            ..Default::default()
        },
    )
    .unwrap();
    let n: f32 = p.rows[0].delta.iter().map(|x| x * x).sum::<f32>().sqrt();
    let wn: f32 = w.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.08 * wn).abs() < 1e-4 * wn);

    // Same inputs → same bytes, model and patch.
    let run = |tag: &str| {
        let (o, pf) = (
            dir.path().join(format!("{tag}.gguf")),
            dir.path().join(format!("{tag}.patch")),
        );
        let sel = select(&model, &probe, &base).unwrap();
        let plan = plan_edit(&sel, &probe, &EditOptions::default()).unwrap();
        write_edited(
            &model,
            &plan,
            &o,
            &WriteOptions {
                patch: Some(pf.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        (std::fs::read(o).unwrap(), std::fs::read(pf).unwrap())
    };
    assert_eq!(run("a"), run("b"));
}

/// A write that fails halfway (after the copy, between two tensors' rows: a delta beyond
/// f16's range) leaves neither the model nor its patch, nor any temporary, in either format.
#[test]
fn a_failed_write_leaves_no_model_and_no_patch() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("m.gguf");
    tiny::write_gguf(&gguf, &TinySpec::default(), 3, GgmlType::F16).unwrap();
    let hf = dir.path().join("m");
    tiny::write_hf_folder(&hf, &TinySpec::default(), 3, HfDtype::F16).unwrap();
    for (model, prefix, out) in [
        (&gguf, "blk.{}.ffn_gate.weight", dir.path().join("o.gguf")),
        (
            &hf,
            "model.layers.{}.mlp.gate_proj.weight",
            dir.path().join("o"),
        ),
    ] {
        let model = ModelFile::open(model).unwrap();
        let d = TinySpec::default().d;
        let row = |block: usize, row: usize, x: f32| scalpel::surgery::edit::RowEdit {
            tensor: prefix.replace("{}", &block.to_string()),
            row,
            delta: vec![x; d].into(),
        };
        let plan = scalpel::surgery::EditPlan {
            rows: vec![row(0, 1, 0.25), row(1, 2, 1e6)],
            info: serde_json::Value::Null,
        };
        let patch = dir.path().join("o.patch");
        let before: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let e = write_edited(
            &model,
            &plan,
            &out,
            &WriteOptions {
                patch: Some(patch.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("beyond the type's range"),
            "{e:#}"
        );
        assert!(!out.exists() && !patch.exists(), "{}", out.display());
        let after: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(before, after, "a temporary was left behind");
    }
}

/// The copy started before selection ([`copy_ahead`]) changes nothing in the output: the same
/// bytes with and without it, in the GGUF's own types; with `--keep-precision` (a new layout,
/// where the copy cannot serve) the writer drops it and writes the same file as without; a
/// write that fails after taking it leaves no temporary.
#[test]
fn copy_ahead_gives_the_same_bytes_and_leaves_nothing_on_failure() {
    use scalpel::formats::io::CopyAhead;
    use scalpel::surgery::{copy_ahead, write_edited_ahead};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.gguf");
    tiny::write_gguf(&src, &TinySpec::default(), 5, GgmlType::Q4_1).unwrap();
    let model = ModelFile::open(&src).unwrap();
    let probe = probe_for(&model);
    let sel = select(
        &model,
        &probe,
        &SelectOptions {
            count: Count::Rows(12),
            ..Default::default()
        },
    )
    .unwrap();
    let plan = plan_edit(&sel, &probe, &EditOptions::default()).unwrap();
    let names = || -> Vec<_> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    for keep_precision in [false, true] {
        let wo = WriteOptions {
            keep_precision,
            ..Default::default()
        };
        let (plain, fast) = (dir.path().join("plain.gguf"), dir.path().join("fast.gguf"));
        write_edited(&model, &plan, &plain, &wo).unwrap();
        let ahead = match keep_precision {
            false => copy_ahead(&src, &fast, &wo).unwrap(),
            // `copy_ahead` declines this case; given one anyway, the writer must drop it.
            true => Some(CopyAhead::start(&src, &fast).unwrap()),
        };
        assert!(ahead.is_some());
        write_edited_ahead(&model, &plan, &fast, &wo, ahead).unwrap();
        assert_eq!(
            std::fs::read(&plain).unwrap(),
            std::fs::read(&fast).unwrap(),
            "keep_precision {keep_precision}"
        );
        std::fs::remove_file(&plain).unwrap();
        std::fs::remove_file(&fast).unwrap();
    }
    assert!(copy_ahead(
        &src,
        &dir.path().join("x.gguf"),
        &WriteOptions {
            keep_precision: true,
            ..Default::default()
        }
    )
    .unwrap()
    .is_none());
    let before = names();
    let bad = scalpel::surgery::EditPlan {
        rows: vec![scalpel::surgery::edit::RowEdit {
            tensor: "blk.1.ffn_gate.weight".into(),
            row: 2,
            delta: vec![f32::INFINITY; TinySpec::default().d].into(),
        }],
        info: serde_json::Value::Null,
    };
    let out = dir.path().join("o.gguf");
    let ahead = copy_ahead(&src, &out, &WriteOptions::default()).unwrap();
    assert!(write_edited_ahead(&model, &bad, &out, &WriteOptions::default(), ahead).is_err());
    assert_eq!(before, names(), "a temporary or output was left behind");
}
