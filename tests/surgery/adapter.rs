//! The edit as a LoRA adapter (`surgery::adapter`).
//!
//! Without peers: on tiny models, the adapter files read back (dims, names, metadata) and
//! `W + B·A` rebuilt from them equals the `--keep-precision` edited tensor bit for bit (the
//! paper's shared delta) or within the stated tolerance (per-row scales); `patch to-adapter`
//! gives the same adapter as the edit; a re-quantised patch is refused, not approximated.
//!
//! With peers (`SCALPEL_PEERS_PYTHON`, a Python with llama-cpp-python, transformers, peft;
//! `scripts/test.sh` sets it) and the default model: llama.cpp with the GGUF adapter vs
//! llama.cpp on the keep-precision edit, `lora_scale` s vs the edit at s·α, and
//! transformers + PEFT vs scalpel's edited HF folder (`scripts/adapter_check.py`).

use crate::common::server::{all_f32, peers_python};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::gguf::GgufFile;
use scalpel::formats::patch::Patch;
use scalpel::formats::quant;
use scalpel::formats::tiny::{self, TinySpec};
use scalpel::probe::Probe;
use scalpel::surgery::adapter::{Adapter, AdapterFormat, DEFAULT_MAX_RANK};
use scalpel::surgery::edit::random_direction;
use scalpel::surgery::{
    plan_edit, select, write_edited, Count, EditOptions, EditPlan, ModelFile, Scale, SelectOptions,
    WriteOptions,
};

fn probe(d: usize, norm: f64) -> Probe {
    let w1 = random_direction(d, norm, 7);
    let w0 = random_direction(d, 1.0, 8);
    Probe::new([w0, w1].concat(), [0.0, 0.0], BTreeMap::new()).unwrap()
}

fn plan(model: &ModelFile, rows: Count, alpha: f32, scale: Scale) -> EditPlan {
    let d = model.matrix_tensors(Default::default()).unwrap()[0].row_len;
    let p = probe(d, 1.035);
    let sel = select(
        model,
        &p,
        &SelectOptions {
            count: rows,
            ..Default::default()
        },
    )
    .unwrap();
    plan_edit(
        &sel,
        &p,
        &EditOptions {
            alpha,
            scale,
            ..Default::default()
        },
    )
    .unwrap()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn decode(ty: GgmlType, row_len: usize, bytes: &[u8]) -> Vec<f32> {
    let rb = quant::row_bytes(ty, row_len).unwrap();
    let mut out = vec![0f32; bytes.len() / rb * row_len];
    for (r, chunk) in bytes.chunks_exact(rb).enumerate() {
        quant::decode_row(ty, chunk, &mut out[r * row_len..(r + 1) * row_len]).unwrap();
    }
    out
}

/// W + B·A (f32, in the order an engine adds it) for every tensor the GGUF adapter names,
/// compared with the keep-precision edit; returns the largest |difference|.
fn check_gguf_adapter(base: &Path, edited: &Path, adapter: &Path) -> f32 {
    let (b, e, a) = (
        GgufFile::open(base).unwrap(),
        GgufFile::open(edited).unwrap(),
        GgufFile::open(adapter).unwrap(),
    );
    assert_eq!(a.get_str("general.type").unwrap(), "adapter");
    assert_eq!(a.get_str("adapter.type").unwrap(), "lora");
    assert_eq!(
        a.get_str("general.architecture").unwrap(),
        b.architecture().unwrap()
    );
    let alpha = a.get_f64("adapter.lora.alpha").unwrap();
    let mut worst = 0f32;
    let mut seen = 0;
    for t in b.tensors.iter().filter(|t| t.name.contains("ffn_gate")) {
        let et = e.require_tensor(&t.name).unwrap();
        assert_eq!(et.ty, GgmlType::F32);
        let want = f32s(e.tensor_bytes(et));
        let (n, d) = (t.n_rows() as usize, t.row_len() as usize);
        let w = decode(t.ty, d, b.tensor_bytes(t));
        let (Some(la), Some(lb)) = (
            a.tensor(&format!("{}.lora_a", t.name)),
            a.tensor(&format!("{}.lora_b", t.name)),
        ) else {
            assert_eq!(
                w, want,
                "{}: no adapter tensors but the edit changed it",
                t.name
            );
            continue;
        };
        seen += 1;
        // llama.cpp's own shape checks.
        assert_eq!(la.dims[0], t.dims[0], "{}", la.name);
        assert_eq!(lb.dims[1], t.dims[1], "{}", lb.name);
        assert_eq!(la.dims[1], lb.dims[0], "{}", la.name);
        let r = la.dims[1] as usize;
        assert_eq!(alpha, r as f64, "alpha = r, so the engines' scale is 1");
        let (av, bv) = (f32s(a.tensor_bytes(la)), f32s(a.tensor_bytes(lb)));
        for i in 0..n {
            for j in 0..d {
                let ab: f32 = (0..r).map(|k| bv[i * r + k] * av[k * d + j]).sum();
                worst = worst.max((w[i * d + j] + ab - want[i * d + j]).abs());
            }
        }
    }
    assert!(seen > 0, "the adapter holds no gate tensor");
    worst
}

fn write(ad: &Adapter, p: &Path) -> u64 {
    ad.write(p, AdapterFormat::from_path(p), false).unwrap()
}

#[test]
fn gguf_adapter_rebuilds_the_keep_precision_edit() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F32] {
        tiny::write_gguf(&p("m.gguf"), &TinySpec::default(), 3, ty).unwrap();
        let model = ModelFile::open(&p("m.gguf")).unwrap();
        for scale in [Scale::Absolute, Scale::RowNorm] {
            let plan = plan(&model, Count::Rows(20), 1.08, scale);
            let wo = WriteOptions {
                keep_precision: true,
                force: true,
                patch: Some(p("e.patch")),
            };
            write_edited(&model, &plan, &p("e.gguf"), &wo).unwrap();
            let ad = Adapter::from_plan(&model, &plan, DEFAULT_MAX_RANK).unwrap();
            assert_eq!(ad.rank(), 1, "{ty} {scale:?}: the paper's edit is rank 1");
            let _ = std::fs::remove_file(p("a.gguf"));
            write(&ad, &p("a.gguf"));
            let worst = check_gguf_adapter(&p("m.gguf"), &p("e.gguf"), &p("a.gguf"));
            eprintln!("{ty} {scale:?}: max |W + B·A − edit| = {worst:.3e}");
            match scale {
                // One shared delta: A = α·w, B = 1, so W + 1·δ is the edit's own sum.
                Scale::Absolute => assert_eq!(worst, 0.0, "{ty}"),
                _ => assert!(worst < 1e-6, "{ty} {scale:?}: {worst}"),
            }
            // The patch of the keep-precision edit gives the same factorisation.
            let from_patch =
                Adapter::from_patch(&model, &Patch::load(&p("e.patch")).unwrap(), 8).unwrap();
            assert_eq!(from_patch.rank(), 1);
            let _ = std::fs::remove_file(p("b.gguf"));
            write(&from_patch, &p("b.gguf"));
            let worst = check_gguf_adapter(&p("m.gguf"), &p("e.gguf"), &p("b.gguf"));
            assert!(worst < 1e-6, "{ty} {scale:?} from patch: {worst}");
        }
    }
}

#[test]
fn peft_folder_names_shapes_and_product() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    tiny::write_hf_folder(&p("hf"), &TinySpec::default(), 5, tiny::HfDtype::F32).unwrap();
    let model = ModelFile::open(&p("hf")).unwrap();
    let plan = plan(&model, Count::Rows(12), 2.0, Scale::Absolute);
    let ad = Adapter::from_plan(&model, &plan, DEFAULT_MAX_RANK).unwrap();
    write(&ad, &p("peft"));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("peft/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 1);
    assert_eq!(cfg["lora_alpha"], 1);
    assert_eq!(cfg["target_modules"], serde_json::json!(["gate_proj"]));
    let bytes = std::fs::read(p("peft/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let by_tensor = plan.by_tensor().unwrap();
    for (name, rows) in by_tensor {
        let stem = format!("base_model.model.{}", name.strip_suffix(".weight").unwrap());
        let a = st.tensor(&format!("{stem}.lora_A.weight")).unwrap();
        let b = st.tensor(&format!("{stem}.lora_B.weight")).unwrap();
        assert_eq!(a.shape(), &[1, 64]);
        assert_eq!(b.shape(), &[128, 1]);
        let (av, bv) = (f32s(a.data()), f32s(b.data()));
        let edited: BTreeMap<usize, &[f32]> = rows.iter().copied().collect();
        for (i, &bi) in bv.iter().enumerate() {
            let got: Vec<f32> = av.iter().map(|&x| bi * x).collect();
            match edited.get(&i) {
                Some(d) => assert_eq!(&got[..], *d, "{name} row {i}"),
                None => assert!(got.iter().all(|&x| x == 0.0), "{name} row {i}"),
            }
        }
    }
}

#[test]
fn requantised_patch_is_refused_not_approximated() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    tiny::write_gguf(&p("m.gguf"), &TinySpec::default(), 3, GgmlType::Q4_1).unwrap();
    let model = ModelFile::open(&p("m.gguf")).unwrap();
    let plan = plan(&model, Count::Rows(40), 1.08, Scale::Absolute);
    let wo = WriteOptions {
        keep_precision: false,
        force: false,
        patch: Some(p("q.patch")),
    };
    write_edited(&model, &plan, &p("q.gguf"), &wo).unwrap();
    let patch = Patch::load(&p("q.patch")).unwrap();
    let e = Adapter::from_patch(&model, &patch, 4).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("re-quantised to Q4_1"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    // Exported at its exact (high) rank when asked; the product then gives the stored rows.
    let ad = Adapter::from_patch(&model, &patch, 1000).unwrap();
    assert!(ad.requantised && ad.rank() > 4, "rank {}", ad.rank());
    // The patch does not fit the edited model.
    let edited = ModelFile::open(&p("q.gguf")).unwrap();
    let e = Adapter::from_patch(&edited, &patch, 1000).unwrap_err();
    assert!(
        e.to_string()
            .contains("not the one the patch was made from"),
        "{e}"
    );
}

fn scalpel(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_edit_adapter_and_patch_to_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    tiny::write_gguf(
        Path::new(&p("m.gguf")),
        &TinySpec::default(),
        3,
        GgmlType::Q8_0,
    )
    .unwrap();
    probe(64, 1.0).save(Path::new(&p("probe.st"))).unwrap();
    // Adapter alone, no model output.
    let o = scalpel(&[
        "edit",
        &p("m.gguf"),
        &p("probe.st"),
        "--top-k",
        "10",
        "--adapter",
        &p("a.gguf"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("GGUF LoRA of the edit"), "{out}");
    assert!(!Path::new(&p("e.gguf")).exists());
    // Model, patch and PEFT adapter together; then the patch's adapter.
    let o = scalpel(&[
        "edit",
        &p("m.gguf"),
        &p("probe.st"),
        "--top-k",
        "10",
        "--keep-precision",
        "--out",
        &p("e.gguf"),
        "--patch",
        &p("e.patch"),
        "--adapter",
        &p("peft"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(Path::new(&p("peft/adapter_model.safetensors")).exists());
    let o = scalpel(&[
        "patch",
        "to-adapter",
        &p("e.patch"),
        "--model",
        &p("m.gguf"),
        "--out",
        &p("b.gguf"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        check_gguf_adapter(
            Path::new(&p("m.gguf")),
            Path::new(&p("e.gguf")),
            Path::new(&p("b.gguf"))
        ) < 1e-6
    );
    // Existing output refused; wrong model refused: one line, non-zero exit.
    for args in [
        vec![
            "patch",
            "to-adapter",
            &p("e.patch"),
            "--model",
            &p("m.gguf"),
            "--out",
            &p("b.gguf"),
        ],
        vec![
            "patch",
            "to-adapter",
            &p("e.patch"),
            "--model",
            &p("e.gguf"),
            "--out",
            &p("c.gguf"),
        ],
    ] {
        let o = scalpel(&args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

fn run_check(py: &Path, args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/adapter_check.py");
    let o = Command::new(py).arg(script).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "adapter_check.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The default model's paper-shaped edit (K = 4.65 %, α = 1.08, a probe direction of the
/// reference run's norm 1.035, random since the behaviour does not matter here).
fn default_edit(model: &ModelFile, alpha: f32) -> EditPlan {
    let p = probe(576, 1.035);
    let sel = select(model, &p, &SelectOptions::default()).unwrap();
    plan_edit(
        &sel,
        &p,
        &EditOptions {
            alpha,
            ..Default::default()
        },
    )
    .unwrap()
}

fn keep(model: &ModelFile, plan: &EditPlan, out: &Path) {
    let wo = WriteOptions {
        keep_precision: true,
        ..Default::default()
    };
    write_edited(model, plan, out, &wo).unwrap();
}

#[test]
#[ignore = "needs SCALPEL_PEERS_PYTHON and SCALPEL_MODEL"]
fn llamacpp_with_the_adapter_equals_the_keep_precision_edit() {
    let (py, base) = (peers_python(), crate::common::default_model());
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let s = |n: &str| p(n).to_str().unwrap().to_string();
    let model = ModelFile::open(&base).unwrap();
    let plan = default_edit(&model, 1.08);
    keep(&model, &plan, &p("e.gguf"));
    keep(&model, &default_edit(&model, 0.0), &p("b0.gguf"));
    all_f32(&base, &p("f.gguf"));
    let f32_model = ModelFile::open(&p("f.gguf")).unwrap();
    keep(&f32_model, &default_edit(&f32_model, 1.08), &p("fe.gguf"));
    keep(
        &f32_model,
        &default_edit(&f32_model, 2.0 * 1.08),
        &p("fe2.gguf"),
    );
    let ad = Adapter::from_plan(&model, &plan, DEFAULT_MAX_RANK).unwrap();
    let bytes = write(&ad, &p("a.gguf"));
    eprintln!(
        "GGUF adapter: {bytes} bytes, rank {}, {} matrices",
        ad.rank(),
        ad.matrices.len()
    );
    let r = run_check(
        &py,
        &[
            "llamacpp",
            "--base",
            base.to_str().unwrap(),
            "--base-kp",
            &s("b0.gguf"),
            "--edited",
            &s("e.gguf"),
            "--adapter",
            &s("a.gguf"),
            "--base-f32",
            &s("f.gguf"),
            "--edited-f32",
            &s("fe.gguf"),
            "--scaled-f32",
            &s("fe2.gguf"),
            "--scale",
            "2",
        ],
    );
    eprintln!("{r}");
    let f = |k: &str| r[k].as_f64().unwrap();
    assert!(f("edit_effect_f32") > 0.1, "the edit must move the logits");
    // All weights F32: only the order of f32 sums differs ((W+Δ)x vs Wx + B(Ax)).
    assert!(f("adapter_vs_edit_f32") < 1e-3, "{r}");
    assert!(f("scaled_vs_edit_at_s_alpha_f32") < 1e-3, "{r}");
    // Quantised base tensors: llama.cpp rounds their inputs to 8 bits, so a last-bit
    // difference in the gate's output flips a rounding now and then; many positions still
    // agree exactly, and the rest differ by less than the edit's own effect.
    assert!(f("positions_identical_kp") >= 0.25, "{r}");
    assert!(f("adapter_vs_edit_kp") < f("edit_effect_kp"), "{r}");
}

#[test]
#[ignore = "needs SCALPEL_PEERS_PYTHON and SCALPEL_MODEL"]
fn peft_adapter_in_transformers_equals_the_edited_folder() {
    let (py, base) = (peers_python(), crate::common::default_model());
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let s = |n: &str| p(n).to_str().unwrap().to_string();
    crate::common::gguf_to_hf_folder(&base, &p("hf"));
    let model = ModelFile::open(&p("hf")).unwrap();
    let plan = default_edit(&model, 1.08);
    write_edited(&model, &plan, &p("hf_e"), &WriteOptions::default()).unwrap();
    let ad = Adapter::from_plan(&model, &plan, DEFAULT_MAX_RANK).unwrap();
    let bytes = write(&ad, &p("peft"));
    eprintln!("PEFT adapter: {bytes} bytes, rank {}", ad.rank());
    let r = run_check(
        &py,
        &[
            "peft",
            "--hf-base",
            &s("hf"),
            "--hf-edited",
            &s("hf_e"),
            "--adapter",
            &s("peft"),
        ],
    );
    eprintln!("{r}");
    assert!(r["edit_effect"].as_f64().unwrap() > 0.1, "{r}");
    assert!(r["peft_vs_edit"].as_f64().unwrap() < 1e-3, "{r}");
}

fn continuations(report: &Path, who: &str) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    json[who]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["items"].as_array().unwrap().iter())
        .map(|i| i["continuation"].as_str().unwrap().to_string())
        .collect()
}

/// One llama-cpp-python server holding the base with the adapter ("edit"), the
/// keep-precision edited file ("edit-file") and the base ("base"): `scalpel eval --endpoint
/// --served-model` gets the same greedy continuations from the adapter as from the edited
/// file, and the base's from the same server.
#[test]
#[ignore = "needs SCALPEL_PEERS_PYTHON and SCALPEL_MODEL"]
fn eval_against_a_server_with_the_adapter_loaded() {
    let base = crate::common::default_model();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let s = |n: &str| p(n).to_str().unwrap().to_string();
    // Every weight F32 and an f32 KV cache: on Q4_1 matrices llama.cpp rounds inputs to 8
    // bits, where a last-bit difference between B(Ax) and (W+Δ)x can flip a rounding and,
    // at a near-tie, a greedy token (see llamacpp_with_the_adapter_equals_…).
    all_f32(&base, &p("b0.gguf"));
    let model = ModelFile::open(&p("b0.gguf")).unwrap();
    let plan = default_edit(&model, 4.0);
    keep(&model, &plan, &p("e.gguf"));
    write(
        &Adapter::from_plan(&model, &plan, DEFAULT_MAX_RANK).unwrap(),
        &p("a.gguf"),
    );
    let port = crate::common::server::free_port();
    let entry = |alias: &str, m: &str, lora: Option<&str>| {
        serde_json::json!({"model": m, "model_alias": alias, "lora_path": lora,
            "n_ctx": 2048, "n_threads": 2, "seed": 0, "type_k": 0, "type_v": 0})
    };
    let cfg = serde_json::json!({
        "host": "127.0.0.1", "port": port,
        "models": [
            entry("base", &s("b0.gguf"), None),
            entry("edit", &s("b0.gguf"), Some(&s("a.gguf"))),
            entry("edit-file", &s("e.gguf"), None),
        ],
    });
    std::fs::write(p("server.json"), cfg.to_string()).unwrap();
    let server = crate::common::server::start(port, &["--config_file", &s("server.json")]);
    let url = server.url.clone();
    let eval = |served: &str, out: &str| {
        let o = scalpel(&[
            "eval",
            &s("e.gguf"),
            "--baseline",
            &s("b0.gguf"),
            "--endpoint",
            &url,
            "--served-model",
            served,
            "--baseline-served-model",
            "base",
            "--suite",
            "rtp",
            "--limit",
            "6",
            "--max-new",
            "16",
            "--no-cache",
            "--bootstrap",
            "50",
            "--out",
            out,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    eval("edit", &s("r_adapter"));
    eval("edit-file", &s("r_file"));
    let (ca, cf) = (
        continuations(&p("r_adapter"), "model"),
        continuations(&p("r_file"), "model"),
    );
    let cb = continuations(&p("r_adapter"), "base");
    eprintln!("adapter: {ca:?}\nedited file: {cf:?}\nbase: {cb:?}");
    assert_eq!(ca.len(), 6);
    assert_eq!(
        ca, cf,
        "greedy continuations: adapter vs edited file on one server"
    );
    assert_ne!(ca, cb, "the edit at α = 4 changes some continuation");
}
