//! `scalpel select / edit / patch` from the command line: bad input gives one line, a
//! non-zero exit and no file.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype};
use scalpel::formats::ggml::GgmlType;
use scalpel::formats::gguf::{write_gguf, MetaValue, TensorSpec};
use scalpel::formats::tiny::{self, TinySpec};

fn scalpel(args: &[&str]) -> (bool, String, String) {
    crate::common::scalpel(args).parts()
}

/// A probe file written directly (so NaN can be stored, which `Probe::new` refuses).
fn probe_file(path: &Path, d: usize, fill: impl Fn(usize) -> f32) {
    let w: Vec<u8> = (0..2 * d).flat_map(|i| fill(i).to_le_bytes()).collect();
    let b = [0u8; 8];
    let t = [
        (
            "weight",
            TensorView::new(Dtype::F32, vec![2, d], &w).unwrap(),
        ),
        ("bias", TensorView::new(Dtype::F32, vec![2], &b).unwrap()),
    ];
    std::fs::write(
        path,
        safetensors::serialize(t, None::<HashMap<String, String>>).unwrap(),
    )
    .unwrap();
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

struct Fixture {
    dir: tempfile::TempDir,
    model: PathBuf,
    probe: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    tiny::write_gguf(&model, &TinySpec::default(), 1, GgmlType::Q4_1).unwrap();
    let probe = dir.path().join("p.safetensors");
    probe_file(&probe, 64, |i| ((i * 37 % 11) as f32 - 5.0) / 10.0);
    Fixture { dir, model, probe }
}

/// Runs an edit that must fail with `needle` in its one-line error and leave no new file.
fn refused(f: &Fixture, model: &Path, probe: &Path, extra: &[&str], needle: &str) {
    let before = listing(f.dir.path());
    let out = f.dir.path().join("out.gguf");
    let patch = f.dir.path().join("out.patch");
    let mut args = vec![
        "edit",
        model.to_str().unwrap(),
        probe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--patch",
        patch.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, _, err) = scalpel(&args);
    assert!(!ok, "{args:?} succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{needle:?} not in {err}"
    );
    assert_eq!(listing(f.dir.path()), before, "files left behind");
}

#[test]
fn select_edit_patch_roundtrip() {
    let f = fixture();
    let p = |n: &str| f.dir.path().join(n).to_str().unwrap().to_string();
    let (m, pr) = (f.model.to_str().unwrap(), f.probe.to_str().unwrap());
    let (ok, out, err) = scalpel(&["select", m, pr, "--top-k", "9", "--out", &p("plan.json")]);
    assert!(ok, "{err}");
    assert!(out.contains("selected 9 of 256 rows"), "{out}");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["rows"].as_array().unwrap().len(), 9);
    let (ok, out, err) = scalpel(&[
        "edit",
        m,
        pr,
        "--alpha",
        "-2",
        "--blocks",
        "1",
        "--top-k",
        "5",
        "--out",
        &p("e.gguf"),
        "--patch",
        &p("e.patch"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("per block    0:0 1:5"), "{out}");
    assert!(out.contains("peak RSS"), "{out}");
    let (ok, _, err) = scalpel(&[
        "patch",
        "revert",
        &p("e.gguf"),
        &p("e.patch"),
        "--out",
        &p("r.gguf"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(p("r.gguf")).unwrap(),
        std::fs::read(&f.model).unwrap()
    );
    // Existing output without --force.
    let (ok, _, err) = scalpel(&[
        "patch",
        "revert",
        &p("e.gguf"),
        &p("e.patch"),
        "--out",
        &p("r.gguf"),
    ]);
    assert!(!ok && err.contains("already exists"), "{err}");
}

#[test]
fn wrong_width_probe() {
    let f = fixture();
    let probe = f.dir.path().join("narrow.safetensors");
    probe_file(&probe, 32, |i| i as f32 / 64.0);
    refused(
        &f,
        &f.model,
        &probe,
        &[],
        "probe has width 32 but the model's hidden size is 64",
    );
}

#[test]
fn non_finite_probe() {
    let f = fixture();
    for (name, bad) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        let probe = f.dir.path().join(format!("{name}.safetensors"));
        probe_file(&probe, 64, |i| if i == 70 { bad } else { 0.1 });
        refused(&f, &f.model, &probe, &[], "non-finite");
    }
}

#[test]
fn k_too_large_and_zero() {
    let f = fixture();
    refused(
        &f,
        &f.model,
        &f.probe,
        &["--top-k", "257"],
        "K = 257 is larger than the 256 rows",
    );
    refused(&f, &f.model, &f.probe, &["--top-k", "0"], "K = 0");
    refused(&f, &f.model, &f.probe, &["--fraction", "0.001"], "K = 0");
    refused(
        &f,
        &f.model,
        &f.probe,
        &["--blocks", "0-5"],
        "block 2 does not exist",
    );
}

#[test]
fn model_without_gate() {
    let f = fixture();
    let model = f.dir.path().join("nogate.gguf");
    let meta = vec![(
        "general.architecture".to_string(),
        MetaValue::string("llama"),
    )];
    let specs = [TensorSpec {
        name: "token_embd.weight".into(),
        dims: vec![64, 4],
        ty: GgmlType::F32,
    }];
    write_gguf(&model, 3, &meta, &specs, &mut |_, _, w| {
        Ok(w.write_all(&[0u8; 64 * 4 * 4])?)
    })
    .unwrap();
    refused(&f, &model, &f.probe, &[], "no ffn_gate projection tensors");
}

#[test]
fn output_equal_to_input() {
    let f = fixture();
    let before = std::fs::read(&f.model).unwrap();
    let m = f.model.to_str().unwrap();
    let (ok, _, err) = scalpel(&["edit", m, f.probe.to_str().unwrap(), "--out", m, "--force"]);
    assert!(
        !ok && err.trim_end().lines().count() == 1 && err.contains("is the input itself"),
        "{err}"
    );
    assert_eq!(std::fs::read(&f.model).unwrap(), before);
    let p = f.dir.path().join("x.patch");
    let (ok, _, err) = scalpel(&[
        "edit",
        m,
        f.probe.to_str().unwrap(),
        "--out",
        p.to_str().unwrap(),
        "--patch",
        p.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("same path"), "{err}");
    assert!(!p.exists());
}
