//! `scalpel run` end to end on a tiny random model: every stage wired (probe, selection,
//! edit, controls, evaluation, summary), every artefact written, the summary parseable.

use scalpel::assets::FetchOptions;
use scalpel::eval::EvalOptions;
use scalpel::formats::ggml::GgmlType;
use scalpel::formats::tiny::{self, TinySpec};
use scalpel::pipeline::sweep::{self, SweepOptions};
use scalpel::pipeline::{self, ablate, Inputs, RunConfig, RunSummary};
use scalpel::probe::EpochChoice;
use std::path::Path;

/// A tiny model of `blocks` blocks, three prompts, and a config that evaluates them with
/// the `file` suite plus two short perplexity and KL windows, without caches.
fn tiny_config(dir: &Path, blocks: usize) -> RunConfig {
    let model = dir.join("tiny.gguf");
    let spec = TinySpec {
        blocks,
        ..TinySpec::default()
    };
    tiny::write_gguf(&model, &spec, 3, GgmlType::F32).unwrap();
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "Those people are\nI think that\nThe weather is\n").unwrap();
    let mut c = RunConfig {
        model: Some(model),
        balance: false,
        cache: false,
        out: dir.join("run"),
        ..RunConfig::default()
    };
    c.probe.epochs = 3;
    c.probe.epoch = EpochChoice::Last;
    c.probe.lr = 1e-2;
    c.edit.alpha = 4.0;
    c.eval = EvalOptions {
        suites: Some("file,ppl,kl".parse().unwrap()),
        prompts: Some(prompts),
        max_new: Some(4),
        ppl_windows: Some(2),
        ppl_window: 64,
        kl_windows: 2,
        kl_window: 64,
        benign_prompts: Some(3),
        bootstrap: 50,
        ..c.eval
    };
    c
}

#[test]
#[ignore = "needs SCALPEL_HATESONAR_ONNX and SCALPEL_VADER_DIR"]
fn run_writes_every_artefact_on_a_tiny_model() {
    let scorers = crate::common::scorers();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(dir.path(), 2);
    // A second behaviour on the edited model, from a labelled file.
    let tsv = dir.path().join("then.tsv");
    let lines: Vec<String> = crate::common::toy_dataset("tiny")
        .items
        .iter()
        .map(|(t, l)| format!("{l}\t{t}"))
        .collect();
    std::fs::write(&tsv, lines.join("\n")).unwrap();
    cfg.then = vec![pipeline::Behaviour::Attitude];
    cfg.then_data_file = Some(tsv);
    // The probe reads a stratified 40 of the 48 texts, and the summary says so.
    cfg.probe_texts = Some(40);
    let out = cfg.out.clone();
    let fetch = FetchOptions::from_env().unwrap();
    let t0 = std::time::Instant::now();
    let s = pipeline::run(
        cfg,
        Inputs {
            fetch: &fetch,
            scorers: &scorers,
            dataset: Some(crate::common::toy_dataset("tiny")),
        },
    )
    .unwrap();
    eprintln!("tiny pipeline: {:.1} s", t0.elapsed().as_secs_f64());
    // The second step ran on the first step's edited model and reports both.
    assert_eq!(s.then.len(), 1);
    let t = &s.then[0];
    assert_eq!(t.model, out.join("edited/model.gguf"));
    assert_eq!(t.rows.len(), 4);
    assert!(out.join("then-attitude/summary.json").is_file());
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## Then: attitude"), "{md}");
    assert_eq!((s.probe.texts, s.probe.texts_available), (40, 48));
    assert!(md.contains("(40 of its 48 texts, a seeded sample"), "{md}");
    let labels: Vec<&str> = s.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "base",
            "edited",
            "control-random-direction",
            "control-random-rows"
        ]
    );
    for r in &s.rows {
        assert_eq!(r.suite("file").unwrap().n, 3, "{}", r.label);
        assert!(r.wikitext_ppl.is_some(), "{}", r.label);
    }
    for r in &s.rows[1..] {
        assert!(r.kl.is_some() && r.ppl_ratio.is_some(), "{}", r.label);
        assert!(r.edit.as_ref().unwrap().k > 0);
    }
    // The random-direction control keeps the edit's norm.
    let (e, c) = (
        s.rows[1].edit.as_ref().unwrap(),
        s.rows[2].edit.as_ref().unwrap(),
    );
    assert!((e.delta_norm - c.delta_norm).abs() < 1e-3 * e.delta_norm);
    for f in [
        "summary.md",
        "summary.json",
        "config.toml",
        "tradeoff.svg",
        "probes/probe.final.safetensors",
        "probes/probe.final.json",
        "base/eval/report.json",
        "edited/model.gguf",
        "edited/model.requantised.gguf",
        "edited/plan.json",
        "edited/edit.patch.safetensors",
        "edited/eval/report.json",
        "edited/eval/report.md",
        "control-random-direction/eval/report.json",
        "control-random-rows/edit.patch.safetensors",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let back: RunSummary =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(back.rows.len(), 4);
    // Where the time went: every stage of the method is timed, per model where it runs per
    // model, and the next step's stages are its own.
    use scalpel::progress::Stage;
    let timed = |stage: Stage, subject: &str| {
        back.timings
            .iter()
            .any(|t| t.stage == stage && t.subject.starts_with(subject))
    };
    for (stage, subject) in [
        (Stage::Collection, ""),
        (Stage::Training, ""),
        (Stage::Edit, "edited"),
        (Stage::Edit, "control-random-rows"),
        (Stage::Generation, "base file"),
        (Stage::Generation, "edited file"),
        (Stage::Scoring, "edited file"),
        (Stage::Perplexity, ""),
        (Stage::Kl, "control-random-direction"),
    ] {
        assert!(
            timed(stage, subject),
            "no {stage:?} stage for {subject:?}: {:?}",
            back.timings
        );
    }
    assert!(!t.timings.is_empty() && t.timings.iter().all(|x| x.secs >= 0.0));
    assert!(md.contains("Where the time went: collection"), "{md}");
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## Verdict") && md.contains("control-random-rows"));
    // The resolved config is in the table layout and reads back as it was run, warning-free.
    let toml_text = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        toml_text.contains("[probe]") && toml_text.contains("[eval]"),
        "{toml_text}"
    );
    let (resolved, warnings) = RunConfig::from_toml_str(&toml_text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(resolved.edit.alpha, 4.0);
    assert_eq!(resolved.probe.epoch, EpochChoice::Last);
    assert_eq!(back.config.eval.bootstrap, 50);
}

#[test]
#[ignore = "needs SCALPEL_HATESONAR_ONNX and SCALPEL_VADER_DIR"]
fn sweep_and_ablate_run_on_a_tiny_model() {
    let scorers = crate::common::scorers();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(dir.path(), 4);
    let fetch = FetchOptions::from_env().unwrap();
    let inputs = || Inputs {
        fetch: &fetch,
        scorers: &scorers,
        dataset: Some(crate::common::toy_dataset("tiny")),
    };
    let grid = SweepOptions {
        alphas: vec![8.0],
        fractions: vec![0.05],
        controls: true,
    };
    cfg.out = dir.path().join("sweep");
    let s = sweep::sweep(cfg.clone(), &grid, inputs()).unwrap();
    // base + one grid point × (edit + 2 controls)
    assert_eq!(s.rows.len(), 4);
    assert!(!s.front.is_empty());
    for f in ["sweep.md", "sweep.json", "sweep.svg"] {
        assert!(cfg.out.join(f).is_file(), "missing {f}");
    }
    cfg.out = dir.path().join("ablate");
    let a = ablate::ablate(cfg.clone(), inputs()).unwrap();
    // base, surgery, 2 controls, 5 recipes, 2 paper ablations, 4 quarters, 2 probe points,
    // 9 variants.
    assert_eq!(a.rows.len(), 26);
    let md = std::fs::read_to_string(cfg.out.join("ablate.md")).unwrap();
    for label in [
        "joint probe: block i edited with its own slice",
        "activation-ranked rows, joint probe slices",
        "norm-aware ranking and edit (final probe)",
        "α relative to each row's norm",
        "most aligned rows, subtracted",
        "up instead of gate",
        "without quarter 4",
        "probe at middle block (mlp:2)",
        "recipe: value-damp",
        "recipe: value-gate",
        "recipe: aura",
        "recipe: profs",
        "recipe: distributed",
    ] {
        assert!(md.contains(label), "{label}");
    }
}

#[test]
#[ignore = "needs SCALPEL_HATESONAR_ONNX and SCALPEL_VADER_DIR"]
fn run_with_a_recipe_reports_it_with_its_controls() {
    let scorers = crate::common::scorers();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(dir.path(), 2);
    cfg.recipe.recipe = scalpel::surgery::recipes::Recipe::Aura;
    let out = cfg.out.clone();
    let fetch = FetchOptions::from_env().unwrap();
    let s = pipeline::run(
        cfg,
        Inputs {
            fetch: &fetch,
            scorers: &scorers,
            dataset: Some(crate::common::toy_dataset("tiny")),
        },
    )
    .unwrap();
    // base, the AurA edit and its random-neuron control (AurA has no direction to randomise).
    let labels: Vec<&str> = s.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["base", "edited", "control-random-rows"]);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("Recipe `aura`"), "{md}");
    assert!(out.join("edited/plan.json").is_file());
}
