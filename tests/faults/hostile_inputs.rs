//! Hostile inputs (issue #17, values and validation): crafted GGUF metadata and HF configs,
//! models that produce non-finite values, edits that would store them, crafted probes,
//! tampered caches and absurd flags. Every case must be refused with a one-line error that
//! names the cause, quickly, and before anything is written. Tiny models only: no download.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scalpel::data::Dataset;
use scalpel::formats::ggml::GgmlType;
use scalpel::formats::gguf::{GgufFile, MetaValue};
use scalpel::formats::quant;
use scalpel::formats::tiny::{self, HfDtype, TinySpec};
use scalpel::probe::{collect, CollectOptions, Pool, Probe};
use scalpel::runtime::generate::{generate, GenParams};
use scalpel::runtime::{LoadOptions, Logits, Model, Point, Precision};
use scalpel::surgery::{
    plan_edit, select, write_edited, Count, EditOptions, ModelFile, SelectOptions, WriteOptions,
};

fn load(path: &Path) -> anyhow::Result<Model> {
    Model::load(
        path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
}

fn load_error(path: &Path) -> String {
    let t0 = Instant::now();
    let err = match load(path) {
        Ok(_) => panic!("{} loaded although its metadata is broken", path.display()),
        Err(e) => format!("{e:#}"),
    };
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(!err.contains('\n'), "not one line: {err}");
    err
}

#[test]
fn crafted_gguf_metadata_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default(); // 2 blocks
    let cases: Vec<(&str, MetaValue, &str)> = vec![
        ("ARCH.block_count", MetaValue::I32(-1), "is negative"),
        ("ARCH.block_count", MetaValue::I64(-1), "is negative"),
        ("ARCH.block_count", MetaValue::U32(1), "holds more blocks"),
        (
            "ARCH.block_count",
            MetaValue::U32(3),
            "block 2 has no tensors",
        ),
        ("ARCH.block_count", MetaValue::U64(1 << 40), "block count"),
        (
            "ARCH.context_length",
            MetaValue::U32(4_000_000_000),
            "context length",
        ),
        ("ARCH.context_length", MetaValue::I32(-5), "is negative"),
        (
            "ARCH.context_length",
            MetaValue::U32(0),
            "context length is 0",
        ),
        (
            "ARCH.embedding_length",
            MetaValue::U64(1 << 40),
            "hidden size",
        ),
        (
            "ARCH.attention.head_count_kv",
            MetaValue::I32(-2),
            "is negative",
        ),
        (
            "ARCH.attention.layer_norm_rms_epsilon",
            MetaValue::F32(f32::NAN),
            "epsilon",
        ),
        (
            "ARCH.attention.layer_norm_rms_epsilon",
            MetaValue::F32(0.0),
            "epsilon",
        ),
        ("ARCH.rope.freq_base", MetaValue::F32(f32::NAN), "RoPE base"),
        ("ARCH.rope.freq_base", MetaValue::F32(0.0), "RoPE base"),
        (
            "ARCH.rope.scaling.type",
            MetaValue::string("yarn"),
            "rope.scaling.type `yarn`",
        ),
    ];
    for (i, (key, value, want)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("m{i}.gguf"));
        tiny::write_gguf_with_meta(&path, &spec, 1, GgmlType::F32, &[(key, value.clone())])
            .unwrap();
        let err = load_error(&path);
        assert!(err.contains(want), "{key} = {value:?}: {err}");
    }
    // Linear RoPE scaling by 4 is refused; by 1 it is no scaling and loads.
    let linear = |f: f32| {
        [
            ("ARCH.rope.scaling.type", MetaValue::string("linear")),
            ("ARCH.rope.scaling.factor", MetaValue::F32(f)),
        ]
    };
    let path = dir.path().join("linear4.gguf");
    tiny::write_gguf_with_meta(&path, &spec, 1, GgmlType::F32, &linear(4.0)).unwrap();
    assert!(load_error(&path).contains("rope.scaling.type `linear` (factor 4)"));
    let path = dir.path().join("linear1.gguf");
    tiny::write_gguf_with_meta(&path, &spec, 1, GgmlType::F32, &linear(1.0)).unwrap();
    load(&path).unwrap();
    // The writer's own file, untouched, loads (the cases above differ by one key each).
    let ok = dir.path().join("ok.gguf");
    tiny::write_gguf_with_meta(&ok, &spec, 1, GgmlType::F32, &[]).unwrap();
    load(&ok).unwrap();
}

#[test]
fn crafted_hf_configs_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "num_hidden_layers",
            serde_json::json!(1u64 << 40),
            "block count",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(1),
            "holds more blocks",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(-1),
            "not a non-negative integer",
        ),
        (
            "max_position_embeddings",
            serde_json::json!(1u64 << 33),
            "context length",
        ),
        (
            "num_key_value_heads",
            serde_json::json!(-1),
            "not a non-negative integer",
        ),
        ("rms_norm_eps", serde_json::json!(0.0), "epsilon"),
        ("rope_theta", serde_json::json!(0.0), "RoPE base"),
        ("rope_theta", serde_json::json!("big"), "is not a number"),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "unsupported rope_scaling",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
            "RoPE",
        ),
    ];
    for (i, (key, value, want)) in cases.into_iter().enumerate() {
        let hf = dir.path().join(format!("hf{i}"));
        tiny::write_hf_folder(&hf, &spec, 1, HfDtype::F32).unwrap();
        let cfg_path = hf.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        cfg[key] = value.clone();
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let err = load_error(&hf);
        assert!(err.contains(want), "{key} = {value}: {err}");
    }
}

/// A tiny F32 GGUF whose `tensor` holds a NaN (written into the file's bytes: the writers
/// refuse to encode one).
fn nan_model(dir: &Path, tensor: &str) -> PathBuf {
    let path = dir.join("nan.gguf");
    tiny::write_gguf(&path, &TinySpec::default(), 3, GgmlType::F32).unwrap();
    let at = {
        let f = GgufFile::open(&path).unwrap();
        let info = f.require_tensor(tensor).unwrap();
        (f.data_start + info.offset) as usize
    };
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_model_with_non_finite_values_is_an_error_wherever_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = load(&nan_model(dir.path(), "blk.0.attn_norm.weight")).unwrap();
    let ids = model.tokenizer.encode("hello tiny model").unwrap();
    // Perplexity / KL (every position's logits).
    let err = format!(
        "{:#}",
        model
            .forward_batch(std::slice::from_ref(&ids), &[], Logits::All)
            .err()
            .expect("NaN logits must be an error")
    );
    assert!(err.contains("non-finite logits"), "{err}");
    // Probe collection (hidden states only, no logits).
    let err = format!(
        "{:#}",
        model
            .forward_batch(
                std::slice::from_ref(&ids),
                &[Point::FinalNorm],
                Logits::None
            )
            .err()
            .expect("NaN hidden states must be an error")
    );
    assert!(err.contains("non-finite hidden states"), "{err}");
    // Generation: not an empty "Eos" continuation.
    let err = format!(
        "{:#}",
        generate(&model, &[ids], &GenParams::default(), None).unwrap_err()
    );
    assert!(err.contains("non-finite"), "{err}");
    // Collection through the library entry point (the probe-training path).
    let ds = Dataset::new("d", vec![("good text".into(), 0), ("bad text".into(), 1)]).unwrap();
    let opts = CollectOptions {
        points: vec![Point::MlpInput(1)],
        pool: Pool::Mean,
        max_tokens: 16,
        batch_size: 2,
        cache_dir: None,
        progress: false,
    };
    assert!(collect(&model, &ds, &opts).is_err());
}

#[test]
fn encoding_refuses_values_beyond_the_types_range() {
    // Quantised types keep their block scale (and Q4_1 its minimum) in f16: 1e7 fits f32
    // but not the f16 scale (1e7 / 127 for Q8_0 is still beyond 65504).
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::F16,
    ] {
        let row = vec![1e7f32; 32];
        let err = quant::encode_row(ty, &row).unwrap_err().to_string();
        assert!(err.contains("beyond the type's range"), "{ty}: {err}");
    }
    // Large but representable values still encode, in f32 anything finite does.
    quant::encode_row(GgmlType::Q4_1, &[6e4f32; 32]).unwrap();
    quant::encode_row(GgmlType::F32, &[3e38f32; 32]).unwrap();
    assert!(quant::encode_row(GgmlType::F32, &[f32::INFINITY; 32]).is_err());
}

#[test]
fn an_edit_never_writes_a_non_finite_value() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.gguf");
    tiny::write_gguf(&src, &TinySpec::default(), 11, GgmlType::Q4_1).unwrap();
    let model = ModelFile::open(&src).unwrap();
    let d = model.matrix_tensors(Default::default()).unwrap()[0].row_len;
    let w: Vec<f32> = (0..2 * d).map(|i| (i * 7 % 13) as f32 - 6.0).collect();
    let probe = Probe::new(w, [0.0, 0.0], BTreeMap::new()).unwrap();
    let sel = select(
        &model,
        &probe,
        &SelectOptions {
            count: Count::Rows(4),
            ..Default::default()
        },
    )
    .unwrap();
    // α = 1e38 on a direction with values up to 6: the change itself overflows f32.
    let err = plan_edit(
        &sel,
        &probe,
        &EditOptions {
            alpha: 1e38,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("non-finite"), "{err}");
    // α = 1e6: finite in f32, but Q4_1 stores the block scale in f16.
    let plan = plan_edit(
        &sel,
        &probe,
        &EditOptions {
            alpha: 1e6,
            ..Default::default()
        },
    )
    .unwrap();
    let out = dir.path().join("e.gguf");
    let wo = WriteOptions {
        keep_precision: false,
        force: false,
        patch: None,
    };
    let err = format!("{:#}", write_edited(&model, &plan, &out, &wo).unwrap_err());
    assert!(err.contains("beyond the type's range"), "{err}");
    assert!(!out.exists(), "a refused edit left {}", out.display());
}

#[test]
fn crafted_probe_blocks_are_refused_with_their_reason() {
    let meta = |blocks: &str, point: &str| {
        BTreeMap::from([
            ("blocks".to_string(), blocks.to_string()),
            ("point".to_string(), point.to_string()),
        ])
    };
    let w = vec![0.5f32; 2 * 128];
    let err = Probe::new(w.clone(), [0.0; 2], meta("0,-1", "mlp:0,mlp:1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"-1\" is not a block number"), "{err}");
    let err = Probe::new(w.clone(), [0.0; 2], meta("1,1", "mlp:1,mlp:1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("listed twice"), "{err}");
    // Off by one: blocks 1,2 on a 2-block model (blocks 0 and 1).
    let p = Probe::new(w.clone(), [0.0; 2], meta("1,2", "mlp:1,mlp:2")).unwrap();
    let err = p.check_blocks(2).unwrap_err().to_string();
    assert!(err.contains("reads block 2"), "{err}");
    // Blocks edited without the points they were trained on.
    let p = Probe::new(w.clone(), [0.0; 2], meta("1,0", "mlp:0,mlp:1")).unwrap();
    let err = p.check_blocks(2).unwrap_err().to_string();
    assert!(err.contains("inconsistent"), "{err}");
    Probe::new(w, [0.0; 2], meta("0,1", "mlp:0,mlp:1"))
        .unwrap()
        .check_blocks(2)
        .unwrap();
}

#[test]
fn a_tampered_activation_cache_is_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    tiny::write_gguf(&path, &TinySpec::default(), 5, GgmlType::F32).unwrap();
    let model = load(&path).unwrap();
    let ds = Dataset::new(
        "d",
        vec![("good text".into(), 0), ("bad text here".into(), 1)],
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let opts = CollectOptions {
        points: vec![Point::FinalNorm],
        pool: Pool::Mean,
        max_tokens: 16,
        batch_size: 2,
        cache_dir: Some(cache.clone()),
        progress: false,
    };
    let (first, s1) = collect(&model, &ds, &opts).unwrap();
    assert_eq!(s1.computed_points, 1);
    let (_, s2) = collect(&model, &ds, &opts).unwrap();
    assert_eq!(s2.cached_points, 1, "an intact cache entry is used");
    // Overwrite the last feature value in place (the file stays valid safetensors).
    let file = std::fs::read_dir(cache.join("activations"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&1234.5f32.to_le_bytes());
    std::fs::write(&file, bytes).unwrap();
    let (again, s3) = collect(&model, &ds, &opts).unwrap();
    assert_eq!(s3.computed_points, 1, "a tampered entry must be recomputed");
    assert_eq!(first[0].data, again[0].data);
}

/// Runs the release binary with `args`; returns (exit ok, stderr).
fn scalpel(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(args)
        .current_dir(cwd)
        .env("SCALPEL_CACHE", cwd.join("cache"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_are_refused_before_any_work_or_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The model does not exist: a refusal that names the flag proves the check came first.
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "nope.gguf", "--alpha", "NaN", "--out", "o"],
            "alpha",
        ),
        (
            &["run", "nope.gguf", "--fraction", "5", "--out", "o"],
            "fraction",
        ),
        (
            &["run", "nope.gguf", "--ppl-windows", "0", "--out", "o"],
            "--ppl-windows",
        ),
        (
            &["sweep", "nope.gguf", "--alphas", "nan", "--out", "o"],
            "--alphas",
        ),
        (
            &["sweep", "nope.gguf", "--fractions", "2", "--out", "o"],
            "--fractions",
        ),
        (
            &["eval", "nope.gguf", "--threshold", "NaN", "--out", "o"],
            "threshold",
        ),
        (
            &["eval", "nope.gguf", "--ppl-windows", "0", "--out", "o"],
            "--ppl-windows",
        ),
        (
            &["eval", "nope.gguf", "--endpoint", "http://", "--out", "o"],
            "no host",
        ),
        (
            &["eval", "nope.gguf", "--endpoint-timeout", "0", "--out", "o"],
            "positive",
        ),
        (
            &["generate", "nope.gguf", "-p", "x", "--temperature", "NaN"],
            "temperature",
        ),
        (
            &["generate", "nope.gguf", "-p", "x", "--temperature=-1"],
            "temperature",
        ),
        (
            &["generate", "nope.gguf", "-p", "x", "--top-p", "2"],
            "top-p",
        ),
        (
            &["generate", "nope.gguf", "-p", "x", "--stop", ""],
            "stop string",
        ),
        (
            &[
                "generate",
                "nope.gguf",
                "-p",
                "x",
                "--max-tokens",
                "18446744073709551615",
            ],
            "max new tokens",
        ),
        (
            &[
                "probe",
                "train",
                "nope.gguf",
                "--data",
                "x",
                "--lr",
                "1e30",
                "--out",
                "o",
            ],
            "learning rate",
        ),
        (
            &[
                "probe",
                "train",
                "nope.gguf",
                "--data",
                "x",
                "--ensemble",
                "0",
                "--out",
                "o",
            ],
            "ensemble",
        ),
        (
            &[
                "probe",
                "train",
                "nope.gguf",
                "--data",
                "x",
                "--epochs",
                "0",
                "--out",
                "o",
            ],
            "epochs",
        ),
        (
            &[
                "probe",
                "train",
                "nope.gguf",
                "--data",
                "x",
                "--batch-size",
                "0",
                "--out",
                "o",
            ],
            "batch size",
        ),
    ];
    for (args, want) in cases {
        let (ok, err) = scalpel(args, d);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!d.join("o").exists(), "{args:?} wrote its output");
    }
    // A config file with bad keys is refused the same way.
    let cfg = d.join("bad.toml");
    for (text, want) in [
        ("alpha = nan", "alpha"),
        ("epochs = 0", "epochs"),
        ("batch_size = 0", "batch_size"),
        ("threshold = 2.0", "threshold"),
    ] {
        // The old flat layout: read with a warning naming the key's table, then refused.
        std::fs::write(&cfg, format!("out = \"o\"\n{text}\n")).unwrap();
        let (ok, err) = scalpel(&["run", "nope.gguf", "--config", cfg.to_str().unwrap()], d);
        assert!(!ok && err.contains(want), "{text}: {err}");
        assert!(
            err.contains("WARNING config ") && err.contains("old flat layout"),
            "{text}: {err}"
        );
        assert!(!d.join("o").exists(), "{text}: the run wrote its output");
    }
}

#[test]
fn probe_train_refuses_too_few_rows_for_a_held_out_split() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("m.gguf");
    tiny::write_gguf(&model, &TinySpec::default(), 1, GgmlType::F32).unwrap();
    let data = d.join("two.tsv");
    std::fs::write(&data, "0\tgood\n1\tbad\n").unwrap();
    let (ok, err) = scalpel(
        &[
            "probe",
            "train",
            model.to_str().unwrap(),
            "--data-file",
            data.to_str().unwrap(),
            "--out",
            "p.safetensors",
        ],
        d,
    );
    assert!(!ok, "a 2-row probe was trained");
    assert!(err.contains("too few for a held-out split"), "{err}");
    assert!(!d.join("p.safetensors").exists());
}

#[test]
fn generate_refuses_an_over_long_prompt_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("m.gguf");
    tiny::write_gguf(&model, &TinySpec::default(), 1, GgmlType::F32).unwrap();
    let long = "word ".repeat(10_000); // 50 000 characters
    let t0 = Instant::now();
    let (ok, err) = scalpel(&["generate", model.to_str().unwrap(), "-p", &long], d);
    assert!(!ok);
    assert!(err.contains("--max-prompt-tokens"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // Within the limit it runs.
    let (ok, err) = scalpel(
        &[
            "generate",
            model.to_str().unwrap(),
            "-p",
            "word word",
            "--max-tokens",
            "2",
        ],
        d,
    );
    assert!(ok, "{err}");
}
