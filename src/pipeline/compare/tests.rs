use super::*;
use crate::pipeline::rows::Row;

#[test]
fn interpolation_is_per_prompt_between_the_bracketing_points() {
    let base = [1.0, 1.0, 0.0, 1.0];
    let a = [0.0, 1.0, 0.0, 1.0];
    let b = [0.0, 0.0, 0.0, 0.0];
    let pts = [(0.2, 2.0f32, &b[..]), (0.1, 1.0f32, &a[..])];
    // 0.05 is half-way between the base (0) and the first point (0.1).
    let (y, br) = interpolate(&base, &pts, 0.05).unwrap();
    assert_eq!(y, vec![0.5, 1.0, 0.0, 1.0]);
    assert_eq!(br, (0.0, 1.0, 0.5));
    let (y, br) = interpolate(&base, &pts, 0.15).unwrap();
    assert!((y[1] - 0.5).abs() < 1e-12 && br.0 == 1.0 && br.1 == 2.0);
    assert!(
        interpolate(&base, &pts, 0.3).is_none(),
        "never extrapolated"
    );
}

#[test]
fn sign_flip_p_separates_a_consistent_difference_from_noise() {
    let strong = vec![-1.0; 20];
    assert!(sign_flip_p(&strong, 2000, 1) < 0.001);
    let noise: Vec<f64> = (0..20)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    assert!(sign_flip_p(&noise, 2000, 1) > 0.5);
    assert_eq!(sign_flip_p(&noise, 500, 3), sign_flip_p(&noise, 500, 3));
}

fn point(series: &str, strength: f32, kl: f64, toxic: Vec<f64>) -> SweepPoint {
    SweepPoint {
        series: series.into(),
        strength,
        kl,
        ppl_ratio: f64::NAN,
        toxic,
        prompts: None,
        row: Row {
            label: series.into(),
            suites: Vec::new(),
            wikitext_ppl: None,
            wikitext_size: None,
            ppl_ratio: None,
            ppl_nll_diff: None,
            kl: None,
            edit: None,
            warnings: Vec::new(),
        },
    }
}

/// One recipe at one strength against its random-neuron control, one KL target.
fn options(recipe: Recipe, strength: f32, kl: f64, split: PromptSplit) -> CompareOptions {
    CompareOptions {
        grids: vec![(recipe, vec![strength])],
        controls: ControlSet::Matched,
        kl_targets: vec![kl],
        ppl_targets: Vec::new(),
        prompting: false,
        split,
        control_grids: Vec::new(),
    }
}

#[test]
fn a_confirmation_reports_every_prompt_and_chooses_no_recipe() {
    let base = vec![1.0, 1.0, 1.0, 0.0, 1.0, 0.0];
    let points = vec![
        point("aura", 1.0, 0.2, vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0]),
        point("aura control-random-rows", 1.0, 0.2, base.clone()),
    ];
    let mut opts = options(Recipe::Aura, 1.0, 0.2, PromptSplit::Confirm);
    let mut cfg = RunConfig::default();
    cfg.eval.bootstrap = 200;
    let ids = (0..6).map(|i| i.to_string()).collect();
    let base = Some((ids, base));
    opts.ppl_targets = vec![1.1];
    let s = summarise(&cfg, &opts, "sha", &base, &points, Instant::now()).unwrap();
    assert_eq!(s.cells.len(), 2, "no perplexity measured: no ppl rows");
    // All six prompts: the base is 4/6 toxic, the recipe 1/6, its control 4/6.
    assert!((s.base_toxic_report[0] - 400.0 / 6.0).abs() < 1e-9);
    let cell = &s.cells[0];
    assert!((cell.toxic.unwrap()[0] - 100.0 / 6.0).abs() < 1e-9);
    assert!((cell.vs_control.as_ref().unwrap().1[0] + 50.0).abs() < 1e-9);
    assert!(cell.toxic_tune.is_none() && s.best.is_empty());
    let md = render(&s);
    assert!(md.contains("all reported") && md.contains("No best recipe"));
    // The same outcomes split in halves: only the odd prompts are reported.
    opts.split = PromptSplit::Halves;
    let s = summarise(&cfg, &opts, "sha", &base, &points, Instant::now()).unwrap();
    assert!((s.base_toxic_report[0] - 100.0 / 3.0).abs() < 1e-9);
    assert_eq!(s.best.len(), 1);
    assert!(render(&s).contains("3 tuning / 3 report"));
}

#[test]
fn sweep_table_shows_the_perplexity_measured_and_dashes_what_was_not() {
    use crate::eval::report::Ci;
    let ci = |estimate, lo, hi| Ci { estimate, lo, hi };
    let mut measured = point("paper", 4.0, 0.05, vec![0.0, 1.0]);
    measured.ppl_ratio = 1.1;
    measured.row.wikitext_ppl = Some(ci(23.1, 22.0, 24.0));
    measured.row.wikitext_size = Some((304, 310_992));
    measured.row.ppl_ratio = Some(1.1);
    measured.row.ppl_nll_diff = Some(ci(0.095, 0.09, 0.1));
    let unmeasured = point("paper control-random-rows", 4.0, 0.04, vec![1.0, 1.0]);
    let opts = options(Recipe::Paper, 4.0, 0.05, PromptSplit::Halves);
    let mut cfg = RunConfig::default();
    cfg.eval.bootstrap = 50;
    let base = Some((vec!["0".into(), "1".into()], vec![1.0, 1.0]));
    let points = [measured, unmeasured];
    let s = summarise(&cfg, &opts, "sha", &base, &points, Instant::now()).unwrap();
    let md = render(&s);
    // The base is the point's perplexity over its ratio: 23.1 / 1.1.
    assert!(
        md.contains("304 windows, 310992 tokens; base perplexity 21.000"),
        "{md}"
    );
    let e = |x: f64| x.exp();
    let row = format!(
        "| paper | 4 | 0.0500 | 23.100 | 1.1000 [{:.4}, {:.4}] | – | 50.0 |",
        e(0.09),
        e(0.1)
    );
    assert!(md.contains(&row), "{md}");
    assert!(
        md.contains("| paper control-random-rows | 4 | 0.0400 | – | – | – | 100.0 |"),
        "{md}"
    );
    assert!(!md.contains("NaN"), "{md}");
}

#[test]
fn controls_with_a_grid_of_their_own_are_evaluated_on_it() {
    let grids = parse_grids("paper=1,profs=0.5:1").unwrap();
    let mut opts = CompareOptions {
        control_grids: parse_control_grids("profs=4:8", &grids).unwrap(),
        grids,
        controls: ControlSet::Matched,
        kl_targets: vec![0.1],
        ppl_targets: Vec::new(),
        prompting: false,
        split: PromptSplit::Halves,
    };
    let got: Vec<(f32, String)> = jobs(&RunConfig::default(), &opts, 1.0)
        .into_iter()
        .map(|(s, v)| (s, v.label))
        .collect();
    let want = [
        (1.0, "paper"),
        (1.0, "paper control-random-rows"),
        (0.5, "profs"),
        (1.0, "profs"),
        (4.0, "profs control-random-direction"),
        (8.0, "profs control-random-direction"),
    ];
    let want: Vec<(f32, String)> = want.iter().map(|&(s, l)| (s, l.to_string())).collect();
    assert_eq!(got, want);
    opts.control_grids.clear();
    assert_eq!(jobs(&RunConfig::default(), &opts, 1.0).len(), 6);
    assert!(
        parse_control_grids("aura=2", &opts.grids).is_err(),
        "not compared"
    );
    assert!(
        parse_control_grids("profs", &opts.grids).is_err(),
        "no grid"
    );
    assert!(parse_control_grids("", &opts.grids).unwrap().is_empty());
}

#[test]
fn grids_parse_names_and_strengths() {
    let g = parse_grids("paper,aura=0.5:1").unwrap();
    assert_eq!(g[0].0, Recipe::Paper);
    assert_eq!(g[0].1, default_grid(Recipe::Paper));
    assert_eq!(g[1], (Recipe::Aura, vec![0.5, 1.0]));
    assert!(parse_grids("nope").is_err());
    // Refused before anything runs, in the recipes' grids and the controls' alike.
    for bad in [
        "aura=nan",
        "aura=inf",
        "aura=0",
        "aura=-1",
        "aura=1:1",
        "aura=1,aura=2",
    ] {
        assert!(parse_grids(bad).is_err(), "{bad}");
        let grids = parse_grids("aura=0.5").unwrap();
        assert!(parse_control_grids(bad, &grids).is_err(), "control {bad}");
    }
}

/// The prompting baseline follows the scored suite's protocol, and is refused before
/// anything runs where it cannot.
#[test]
fn the_prompting_baseline_takes_the_scored_suites_protocol() {
    assert_eq!(prompting_max_new("rtp", None, false).unwrap(), 20);
    assert_eq!(prompting_max_new("rtp", Some(8), false).unwrap(), 8);
    assert_eq!(prompting_max_new("file", None, false).unwrap(), 64);
    let err = prompting_max_new("toxigen", None, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--no-prompting"), "{err}");
    assert!(prompting_max_new("file", None, true).is_err());
}
