//! `scalpel probe train / eval / score` end to end on a tiny random model, and on the default
//! model when `SCALPEL_MODEL` is set.

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::tiny::{self, TinySpec};
use scalpel::probe::Probe;
use std::collections::BTreeMap;
use std::path::Path;

fn scalpel(cache: &Path, args: &[&str]) -> (bool, String, String) {
    crate::common::scalpel_in(cache, args).parts()
}

fn write_tsv(path: &Path, n: usize, one_class: bool) {
    let words = [
        "kind", "nice", "awful", "rude", "calm", "mean", "sweet", "nasty",
    ];
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let label = if one_class { 1 } else { i % 2 };
            let w = words[(i * 3 + label * 5) % words.len()];
            format!("{label}\tsample {i} is {w} and {}", words[i % 8])
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn train_eval_score_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (model, cache, data) = (d.join("tiny.gguf"), d.join("cache"), d.join("data.tsv"));
    tiny::write_gguf(&model, &TinySpec::default(), 3, GgmlType::F32).unwrap();
    write_tsv(&data, 60, false);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (m, f) = (s(&model), s(&data));
    let (p1, p2, report) = (
        s(&d.join("p1.st")),
        s(&d.join("p2.st")),
        s(&d.join("r.json")),
    );
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec!["probe", "train", &m, "--data-file", &f, "--out", out];
        args.extend_from_slice(extra);
        scalpel(&cache, &args)
    };
    let (ok, out, err) = train(&p1, &["--report", &report, "--epoch", "9"]);
    assert!(ok, "{err}");
    assert!(err.contains("collected 1 point(s) over 60 texts"), "{err}");
    assert!(
        out.contains("<- kept") && out.contains("true \\ pred"),
        "{out}"
    );
    let (ok, _, err) = train(&p2, &["--epoch", "9"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("1 point(s) read from the activation cache"),
        "{err}"
    );
    assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    let probe = Probe::load(Path::new(&p1)).unwrap();
    for key in [
        "model_sha256",
        "point",
        "pool",
        "dataset",
        "dataset_sha256",
        "seed",
        "method",
        "metrics",
        "direction",
    ] {
        assert!(probe.meta.contains_key(key), "no {key} in {:?}", probe.meta);
    }
    assert_eq!(probe.meta["chosen_epoch"], "9");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        r["probes"][0]["report"]["epochs"].as_array().unwrap().len(),
        20
    );

    for method in ["mean-diff", "logistic"] {
        let (ok, _, err) = train(
            &s(&d.join("m.st")),
            &["--method", method, "--pool", "last", "--force"],
        );
        assert!(ok, "{method}: {err}");
    }
    let (ok, out, err) = train(&s(&d.join("multi.st")), &["--layer", "final,mlp:1"]);
    assert!(ok, "{err}");
    assert!(
        d.join("multi.final.st").exists() && d.join("multi.mlp1.st").exists(),
        "{out}"
    );

    let (ok, out, err) = scalpel(&cache, &["probe", "eval", &m, &p1, "--data-file", &f]);
    assert!(ok, "{err}");
    assert!(out.contains("accuracy"), "{out}");
    let (ok, out, err) = scalpel(
        &cache,
        &[
            "probe", "score", &m, &p1, "--text", "hello", "--text", "bye",
        ],
    );
    assert!(ok, "{err}");
    let p: f64 = out
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..=1.0).contains(&p), "{out}");
    assert_eq!(out.lines().count(), 2);
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (model, cache) = (d.join("tiny.gguf"), d.join("cache"));
    tiny::write_gguf(&model, &TinySpec::default(), 3, GgmlType::F32).unwrap();
    let m = model.to_str().unwrap();
    let narrow = d.join("narrow.st");
    Probe::new(vec![0.5; 64], [0.0, 0.0], BTreeMap::new())
        .unwrap()
        .save(&narrow)
        .unwrap();
    let (good, one, empty) = (d.join("g.tsv"), d.join("one.tsv"), d.join("empty.tsv"));
    write_tsv(&good, 20, false);
    write_tsv(&one, 20, true);
    std::fs::write(&empty, "").unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "eval".into(),
                m.into(),
                p(&narrow),
                "--data-file".into(),
                p(&good),
            ],
            "width 32",
        ),
        (
            vec![
                "train".into(),
                m.into(),
                "--data-file".into(),
                p(&one),
                "--out".into(),
                p(&d.join("x")),
            ],
            "both classes",
        ),
        (
            vec![
                "train".into(),
                m.into(),
                "--data-file".into(),
                p(&empty),
                "--out".into(),
                p(&d.join("x")),
            ],
            "is empty",
        ),
        (
            vec![
                "train".into(),
                m.into(),
                "--data-file".into(),
                p(&good),
                "--layer".into(),
                "mlp:7".into(),
                "--out".into(),
                p(&d.join("x")),
            ],
            "does not exist",
        ),
        (
            vec![
                "train".into(),
                m.into(),
                "--data-file".into(),
                p(&good),
                "--epoch".into(),
                "20".into(),
                "--out".into(),
                p(&d.join("x")),
            ],
            "0-based",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["probe"];
        full.extend(args.iter().map(String::as_str));
        let (ok, _, err) = scalpel(&cache, &full);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        // Progress lines may precede it; the error itself is one line, and the last.
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(want),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("error").count(), 1, "{args:?}: {err}");
    }
}

/// A few hundred real tweets through the default model: the probe must find the signal, and
/// pooling must not depend on the batch.
#[test]
#[ignore = "needs SCALPEL_MODEL and the toxicity dataset (SCALPEL_MIRROR)"]
fn default_model_probe_on_a_toxicity_sample() {
    let model_path = crate::common::default_model();
    use scalpel::assets::FetchOptions;
    use scalpel::data::{builtin, BuiltinOptions, Dataset};
    use scalpel::probe::{collect, train, CollectOptions, FitOptions, Method, TrainOptions};
    use scalpel::runtime::{LoadOptions, Model, Point, Precision};
    let fetch = FetchOptions::from_env().unwrap();
    let full = builtin(
        "toxicity",
        &fetch,
        &BuiltinOptions {
            balance_seed: Some(0),
            ..Default::default()
        },
    )
    .expect("the toxicity dataset (from the cache, or SCALPEL_MIRROR)");
    let ds = Dataset::new(
        "toxicity-sample",
        full.shuffled(1).items.into_iter().take(240).collect(),
    )
    .unwrap();
    let model = Model::load(
        &model_path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap();
    let opts = CollectOptions {
        points: vec![Point::FinalNorm, Point::MlpInput(7)],
        batch_size: 16,
        ..Default::default()
    };
    let (acts, stats) = collect(&model, &ds, &opts).unwrap();
    eprintln!("{:.1} texts/s", stats.texts as f64 / stats.secs);
    let few = Dataset {
        name: "few".into(),
        items: ds.items[..5].to_vec(),
    };
    let (alone, _) = collect(
        &model,
        &few,
        &CollectOptions {
            batch_size: 1,
            ..opts.clone()
        },
    )
    .unwrap();
    for k in 0..2 {
        let diff = alone[k]
            .data
            .iter()
            .zip(&acts[k].data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("point {k}: max |alone − padded batch| = {diff:.2e}");
        // Padding changes the shapes of the attention matmuls, hence the summation order:
        // last-bit differences through 30 blocks; measured 4.8e-6 at the final norm.
        assert!(diff < 1e-5, "point {k}: alone vs batched {diff}");
    }
    let labels: Vec<u8> = ds.items.iter().map(|(_, l)| *l).collect();
    for act in &acts {
        let t = train(
            &act.data,
            &labels,
            act.d,
            &TrainOptions::new(
                FitOptions {
                    method: Method::Logistic,
                    ..Default::default()
                },
                0,
            ),
        )
        .unwrap();
        eprintln!(
            "{:?}: train AUC {:.3}, test accuracy {:.3}",
            act.point, t.report.train.roc_auc, t.report.test.accuracy
        );
        assert!(
            t.report.test.roc_auc > 0.6,
            "{:?}: {:?}",
            act.point,
            t.report.test
        );
    }
}

/// Probe files written by main's binary before the settings refactor (commit 44b6b2a):
/// `scalpel probe train tiny.gguf --data-file d.tsv --no-cache` with the extra flags below, in
/// a folder holding `tiny.gguf` (TinySpec::default(), seed 3, F32) and `d.tsv`
/// (`write_tsv(60)`). Today's binary must read them (metadata typed and written back
/// unchanged, scoring works) and write the same bytes from the same command.
#[test]
fn probe_files_of_the_previous_layout_read_and_are_reproduced_byte_for_byte() {
    use scalpel::probe::{Method, Pool, ProbeMeta};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probes_main");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny::write_gguf(&d.join("tiny.gguf"), &TinySpec::default(), 3, GgmlType::F32).unwrap();
    write_tsv(&d.join("d.tsv"), 60, false);
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("main.final.safetensors", &[], &["main.final.safetensors"]),
        (
            "main.joint.safetensors",
            &[
                "--layer",
                "mlp:all",
                "--joint",
                "--method",
                "logistic",
                "--standardize",
            ],
            &["main.joint.safetensors"],
        ),
        (
            "main.multi.safetensors",
            &[
                "--layer",
                "final,mlp:1",
                "--method",
                "mean-diff",
                "--max-tokens",
                "16",
            ],
            &[
                "main.multi.final.safetensors",
                "main.multi.mlp1.safetensors",
            ],
        ),
    ];
    for (out, flags, files) in cases {
        let mut args = vec!["probe", "train", "tiny.gguf", "--data-file", "d.tsv"];
        args.extend_from_slice(flags);
        args.extend(["--no-cache", "--out", out]);
        let run = crate::common::scalpel_cmd(&d.join("cache"))
            .args(&args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        for f in *files {
            let (old, new) = (fixtures.join(f), d.join(f));
            assert_eq!(
                std::fs::read(&old).unwrap(),
                std::fs::read(&new).unwrap(),
                "{f}"
            );
            let p = Probe::load(&old).unwrap();
            let meta = ProbeMeta::from_map(&p.meta).unwrap();
            assert_eq!(
                meta.to_map().unwrap(),
                p.meta,
                "{f}: metadata not written back as read"
            );
            assert_eq!(meta.pool, Some(Pool::Mean));
            assert!(meta.other.is_empty(), "{f}: {:?}", meta.other);
            let (ok, out, err) = scalpel(
                &d.join("cache"),
                &[
                    "probe",
                    "score",
                    d.join("tiny.gguf").to_str().unwrap(),
                    old.to_str().unwrap(),
                    "--text",
                    "a kind sample",
                ],
            );
            assert!(ok && out.contains("a kind sample"), "{f}: {err}");
        }
    }
    let joint = ProbeMeta::from_map(
        &Probe::load(&fixtures.join("main.joint.safetensors"))
            .unwrap()
            .meta,
    )
    .unwrap();
    assert_eq!(joint.blocks.as_deref(), Some("0,1"));
    assert_eq!(joint.point.as_deref(), Some("mlp:0,mlp:1"));
    assert_eq!(joint.method, Some(Method::Logistic));
    let multi = ProbeMeta::from_map(
        &Probe::load(&fixtures.join("main.multi.mlp1.safetensors"))
            .unwrap()
            .meta,
    )
    .unwrap();
    assert_eq!(
        (multi.max_tokens, multi.point.as_deref()),
        (Some(16), Some("mlp:1"))
    );
    assert_eq!(multi.chosen_epoch.as_deref(), Some("none"));
}
