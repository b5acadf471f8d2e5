//! `scalpel eval` and the evaluation library: self-comparison on the real model, the
//! degeneration warning on synthetic broken continuations, and bad input.

use scalpel::assets::FetchOptions;
use scalpel::eval::kl::BaseLogits;
use scalpel::eval::markdown::{render, write_report};
use scalpel::eval::report::{GenRun, Item, SuiteRun, Throughput};
use scalpel::eval::run::{ModelReport, Report};
use scalpel::eval::{run_suites, EvalConfig, Subject, Suite};
use scalpel::formats::tiny::TinySpec;
use scalpel::runtime::{LoadOptions, Model, Precision};
use std::path::{Path, PathBuf};

fn tiny_model(dir: &Path) -> PathBuf {
    crate::common::tiny_gguf(dir, &TinySpec::default(), 1)
}

/// Runs `scalpel eval` expecting failure; returns stderr.
fn eval_fails(args: &[&str]) -> String {
    let out = crate::common::scalpel(std::iter::once("eval").chain(args.iter().copied()));
    assert!(!out.ok, "eval succeeded: {args:?}");
    let err = out.stderr;
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn empty_prompt_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let prompts = dir.path().join("empty.txt");
    std::fs::write(&prompts, "\n  \n").unwrap();
    let err = eval_fails(&[
        model.to_str().unwrap(),
        "--suite",
        "file",
        "--prompts",
        prompts.to_str().unwrap(),
        "--no-cache",
    ]);
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn prompt_longer_than_the_context_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let prompts = dir.path().join("long.txt");
    // The tiny model's context is 256 tokens; 400 words are well past it.
    std::fs::write(&prompts, format!("short prompt\n{}\n", "word ".repeat(400))).unwrap();
    let err = eval_fails(&[
        model.to_str().unwrap(),
        "--suite",
        "file",
        "--prompts",
        prompts.to_str().unwrap(),
        "--no-cache",
    ]);
    assert!(err.contains("exceeds the context of 256"), "{err}");
    assert!(err.contains("long/2"), "names the prompt: {err}");
}

#[test]
fn unknown_suite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let err = eval_fails(&[model.to_str().unwrap(), "--suite", "rtp,nope"]);
    assert!(err.contains("unknown suite \"nope\""), "{err}");
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn different_tokenizers_are_refused_unless_allowed() {
    let real = crate::common::default_model();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let err = eval_fails(&[
        model.to_str().unwrap(),
        "--baseline",
        real.to_str().unwrap(),
        "--suite",
        "ppl",
        "--no-cache",
    ]);
    assert!(err.contains("different tokenizers"), "{err}");
    assert!(err.contains("--allow-tokenizer-mismatch"), "{err}");
}

fn synthetic_run(cont: &dyn Fn(usize) -> (String, f64, f64)) -> GenRun {
    let items = (0..30)
        .map(|i| {
            let (c, tox, nll) = cont(i);
            let n = c.split_whitespace().count();
            Item {
                id: format!("rtp/{i}"),
                group: Some(format!("g{}", i % 3)),
                prompt: "So I said".into(),
                continuation: c,
                new_tokens: n,
                finish: "Length".into(),
                toxicity: tox,
                refusal: false,
                sentiment: 0.0,
                nll_sum: nll * n as f64,
                nll_tokens: n,
            }
        })
        .collect();
    GenRun {
        suite: "rtp".into(),
        prompt_set: "rtp".into(),
        licences: vec!["synthetic: none".into()],
        chat: false,
        max_new_tokens: 20,
        stop: vec![],
        items,
        throughput: Throughput::default(),
    }
}

/// A "detoxified" model whose continuations are loops and junk: the report must say so
/// beside the toxicity drop, in report.json and report.md.
#[test]
fn degeneration_warning_fires_on_broken_continuations() {
    let cfg = EvalConfig {
        suites: vec![Suite::Rtp],
        ..Default::default()
    };
    let boot = cfg.bootstrap();
    let base = synthetic_run(&|i| {
        (
            format!("that the council would meet again on day {i} of the month"),
            if i % 4 == 0 { 0.9 } else { 0.1 },
            1.4,
        )
    });
    let edited = synthetic_run(&|_| {
        (
            "the the the the the the the ### ### the the".into(),
            0.02,
            5.0,
        )
    });
    let model_report = |label: &str, run: GenRun| ModelReport {
        label: label.into(),
        path: "synthetic".into(),
        fingerprint: "0".repeat(64),
        backend: "local".into(),
        summaries: vec![scalpel::eval::run::SuiteSummary::Generation {
            suite: "rtp".into(),
            summary: scalpel::eval::report::summarize_gen(&run, 0.5, &boot).unwrap(),
        }],
        runs: vec![SuiteRun::Generation(run)],
    };
    let delta = scalpel::eval::report::compare_gen(&base, &edited, 0.5, &boot).unwrap();
    assert!(
        delta.toxic_rate.estimate < -0.2,
        "the toxicity 'drop' is there"
    );
    assert!(!delta.warnings.is_empty());
    let report = Report {
        scalpel_version: "test".into(),
        config: cfg,
        base: Some(model_report("base", base)),
        model: model_report("edited", edited),
        warnings: delta.warnings.clone(),
        deltas: vec![delta],
        capability: None,
        throughput: Throughput::default(),
        wall_secs: 0.0,
    };
    let md = render(&report);
    assert!(
        md.contains("**WARNING** rtp: continuation perplexity"),
        "{md}"
    );
    assert!(md.contains("repeated 3-gram rate"), "{md}");
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&report, dir.path()).unwrap();
    assert!(files.iter().any(|f| f.ends_with("toxicity_rtp.svg")));
    assert!(files.iter().any(|f| f.ends_with("groups_rtp.svg")));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(
        json["model"]["runs"][0]["items"].as_array().unwrap().len(),
        30
    );
    assert!(json["warnings"].as_array().unwrap().len() >= 2);
}

/// The default model against itself (two separate loads, no cache): KL is exactly 0,
/// every continuation is identical, perplexities are equal and nothing is flagged.
#[test]
#[ignore = "needs SCALPEL_MODEL, SCALPEL_HATESONAR_ONNX and SCALPEL_VADER_DIR"]
fn model_against_itself_gives_zero_kl_and_identical_continuations() {
    let path = crate::common::default_model();
    let scorers = crate::common::scorers();
    let opts = LoadOptions {
        precision: Precision::F32,
    };
    let a = Model::load(&path, &opts).unwrap();
    let b = Model::load(&path, &opts).unwrap();
    let cfg = EvalConfig {
        suites: vec![Suite::Rtp, Suite::Ppl, Suite::Kl],
        limit: Some(6),
        max_new: Some(8),
        ppl_window: 128,
        ppl_windows: Some(2),
        kl_windows: 2,
        kl_window: 64,
        benign_prompts: 4,
        cache_dir: None,
        ..Default::default()
    };
    let subject = |label: &str, m| Subject {
        label: label.into(),
        model: m,
        endpoint: None,
        fingerprint: "self".into(),
    };
    let fetch = FetchOptions::from_env().unwrap();
    let report = run_suites(
        &subject("edited", &b),
        Some(&subject("base", &a)),
        &cfg,
        &scorers,
        &fetch,
    )
    .unwrap();
    let cap = report.capability.as_ref().unwrap();
    let kl = cap.kl.unwrap();
    assert_eq!(kl.estimate, 0.0, "KL of a model with itself");
    assert_eq!(cap.ppl_ratio, Some(1.0));
    assert_eq!(report.deltas.len(), 2);
    for d in &report.deltas {
        assert_eq!(d.identical_share, 1.0, "{}", d.suite);
        assert_eq!(d.toxic_sign.base_only + d.toxic_sign.edited_only, 0);
        assert!(d.warnings.is_empty());
    }
    assert!(report.warnings.is_empty());
    let SuiteRun::Generation(g) = &report.model.runs[0] else {
        panic!("rtp first")
    };
    assert_eq!(g.items.len(), 6);
    assert!(g
        .items
        .iter()
        .all(|i| i.nll_tokens > 0 && i.nll_sum.is_finite()));
}

/// KL windows are cached per ordered pair of models: the second call reads the entry (shown
/// by planting a valid entry with other values), an entry whose JSON no longer matches its
/// recorded hash is recomputed, and swapping the two models is another entry.
#[test]
#[ignore = "needs SCALPEL_MIRROR (WikiText-2 test)"]
fn kl_windows_are_cached_per_pair_and_checked() {
    use scalpel::eval::cache::kl_cached;
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let opts = LoadOptions {
        precision: Precision::F32,
    };
    let a = Model::load(
        &crate::common::tiny_gguf(&da, &TinySpec::default(), 1),
        &opts,
    )
    .unwrap();
    let b = Model::load(
        &crate::common::tiny_gguf(&db, &TinySpec::default(), 2),
        &opts,
    )
    .unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let cfg = EvalConfig {
        kl_windows: 2,
        kl_window: 32,
        cache_dir: Some(cache.clone()),
        ..Default::default()
    };
    let subject = |label: &str, m, fp: &str| Subject {
        label: label.into(),
        model: m,
        endpoint: None,
        fingerprint: fp.into(),
    };
    let (base, other) = (subject("base", &a, "fa"), subject("other", &b, "fb"));
    let fetch = FetchOptions::from_env().unwrap();
    let store = BaseLogits::default();
    let kl = kl_cached(&base, &other, &cfg, &store, &fetch).unwrap();
    assert_eq!(kl.len(), 2);
    assert!(kl.iter().all(|&k| k > 0.0 && k.is_finite()), "{kl:?}");
    let entries = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let files = entries();
    assert_eq!(files.len(), 1, "{files:?}");
    let planted = "[9.0,9.0]";
    let checked = format!(
        "sha256:{}\n{planted}",
        crate::common::sha256_hex(planted.as_bytes())
    );
    std::fs::write(&files[0], &checked).unwrap();
    assert_eq!(
        kl_cached(&base, &other, &cfg, &store, &fetch).unwrap(),
        vec![9.0, 9.0]
    );
    std::fs::write(&files[0], checked.replace("9.0,9.0", "0.5,0.5")).unwrap();
    assert_eq!(kl_cached(&base, &other, &cfg, &store, &fetch).unwrap(), kl);
    let swapped = kl_cached(&other, &base, &cfg, &store, &fetch).unwrap();
    assert_ne!(swapped, kl);
    assert_eq!(entries().len(), 2);
}
