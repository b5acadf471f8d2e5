//! Crafted patch files: every inconsistency refused in one line, nothing written.

use std::path::Path;

use safetensors::{tensor::TensorView, SafeTensors};

use super::{edit_args, fixture, ok, refused, run, s, str_args, temps};

/// A change to a patch's JSON.
type JsonEdit = Box<dyn Fn(&mut serde_json::Value)>;

/// Rewrites a patch file's JSON (hashes and stored rows intact).
fn rewrite_patch(src: &Path, dst: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(src).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["scalpel.patch"]).unwrap();
    edit(&mut json);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                TensorView::new(t.dtype(), t.shape().to_vec(), t.data()).unwrap(),
            )
        })
        .collect();
    let meta = std::collections::HashMap::from([("scalpel.patch".to_string(), json.to_string())]);
    std::fs::write(dst, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

#[test]
fn crafted_patches_are_refused_in_one_line() {
    let f = fixture();
    let d = f.dir.path();
    for (m, out, patch) in [
        (&f.gguf, d.join("e.gguf"), d.join("e.patch")),
        (&f.hf, d.join("eh"), d.join("eh.patch")),
    ] {
        ok(&str_args(&edit_args(m, &f.probe, "0.5", &out, &patch)));
        let bad = d.join("bad.patch");
        let target = d.join("applied");
        let cases: Vec<(&str, JsonEdit)> = vec![
            (
                "more rows than it holds",
                Box::new(|j| j["tensors"][0]["n_rows"] = (1024 + 5).into()),
            ),
            (
                "fewer rows",
                Box::new(|j| j["tensors"][0]["n_rows"] = 3.into()),
            ),
            (
                "huge rows",
                Box::new(|j| j["tensors"][0]["n_rows"] = (1u64 << 62).into()),
            ),
            (
                "longer rows",
                Box::new(|j| j["tensors"][0]["row_len"] = 512.into()),
            ),
            (
                "unknown type",
                Box::new(|j| j["tensors"][0]["after_type"] = "Q9_9".into()),
            ),
            ("unknown format", Box::new(|j| j["format"] = "onnx".into())),
            (
                "no tensor",
                Box::new(|j| j["tensors"][0]["name"] = "no.such.weight".into()),
            ),
            ("version", Box::new(|j| j["version"] = 7.into())),
            (
                "short hash",
                Box::new(|j| j["tensors"][0]["sha256_before"] = "ab".into()),
            ),
        ];
        for (what, edit) in &cases {
            rewrite_patch(&patch, &bad, edit);
            for verb in ["apply", "revert"] {
                let model = if verb == "apply" {
                    m.as_path()
                } else {
                    out.as_path()
                };
                let r = run(&["patch", verb, s(model), s(&bad), "--out", s(&target)]);
                assert_eq!(r.status.code(), Some(1), "{what} {verb}: {}", r.stderr);
                assert_eq!(
                    r.stderr.trim_end().lines().count(),
                    1,
                    "{what}: {}",
                    r.stderr
                );
                assert!(!target.exists(), "{what} {verb}: output left behind");
            }
        }
        let truncated = std::fs::read(&patch).unwrap();
        std::fs::write(&bad, &truncated[..truncated.len() / 2]).unwrap();
        refused(
            &["patch", "apply", s(m), s(&bad), "--out", s(&target)],
            "not a scalpel patch",
        );
        assert!(temps(d).is_empty(), "{:?}", temps(d));
    }
}
