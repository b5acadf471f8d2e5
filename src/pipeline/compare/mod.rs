//! `scalpel compare`: every recipe (and its controls) swept over its strength, compared at
//! matched damage (issue #13).
//!
//! A method that removes more of the behaviour by doing more damage has won nothing, so the
//! comparison is made at equal KL(base ‖ edited) on WikiText (0.05 and 0.1 nats/token by
//! default) and at equal WikiText perplexity ratio. Each series (a recipe, or one of its
//! controls) is a curve through the base (strength 0, KL 0) and its sweep points ordered by
//! damage; the toxicity at a target damage is the linear interpolation between the two
//! points that bracket it, prompt by prompt (`(1 − t)·y_a + t·y_b` with y the 0/1 "toxic"
//! outcome), so intervals and paired tests are over prompts. A target beyond a series'
//! largest damage is "not reached" — never extrapolated.
//!
//! The RTP prompts are split in two by position (even = tuning, odd = report): the best
//! recipe at each target is chosen on the tuning half and every number in the table is on
//! the report half, so the choice is not tuned on the prompts it is reported on.
//! `--split confirm` is for a confirmation on fresh prompts, once the recipe, the
//! strengths and the target were chosen elsewhere: every prompt is reported and no best
//! recipe is chosen.

mod matched;
mod report;
mod types;

use super::config::RunConfig;
use super::run::{base_report, paper_total_change, recipe_variants, variants};
use super::session::{Inputs, Session, Variant};
use super::sweep::{first_repeat, parse_list, quick_suites};
use crate::eval::report::SuiteRun;
use crate::eval::stats::{bootstrap_mean, BootstrapConfig};
use crate::eval::Report;
use crate::surgery::recipes::Recipe;
use anyhow::{bail, ensure, Context, Result};
pub use matched::{interpolate, sign_flip_p};
use matched::{pct, split, summarise};
use report::write_outputs;
pub use report::{fronts_svg, render};
use std::time::Instant;
pub use types::{CompareOptions, CompareSummary, ControlSet, MatchedCell, PromptSplit, SweepPoint};

/// Default strength grids: the paper's α; damping factors for value-damp; pushes in row
/// norms for value-gate; Gini multipliers for AurA (1 = published); projection weights for
/// ProFS (1 = published); multiples of the paper edit's total change (at the config's α)
/// for distributed.
pub fn default_grid(r: Recipe) -> Vec<f32> {
    match r {
        Recipe::Paper => vec![1.08, 2.0, 4.0],
        Recipe::ValueDamp => vec![0.25, 0.5, 1.0],
        Recipe::ValueGate => vec![0.25, 0.5, 1.0],
        Recipe::Aura => vec![0.5, 1.0, 2.0],
        Recipe::Profs => vec![0.5, 1.0, 1.5],
        Recipe::Distributed => vec![1.0, 2.0, 4.0],
    }
}

/// Parses `paper,aura` with optional grids `aura=0.5:1:2`.
pub fn parse_grids(spec: &str) -> Result<Vec<(Recipe, Vec<f32>)>> {
    use clap::ValueEnum;
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, grid) = match part.split_once('=') {
            Some((n, g)) => (n, Some(g)),
            None => (part, None),
        };
        let r = Recipe::from_str(name, true)
            .map_err(|_| anyhow::anyhow!("unknown recipe {name:?} in {spec:?}"))?;
        let g = match grid {
            Some(g) => parse_list::<f32>(&g.replace(':', ","), "strengths")?,
            None => default_grid(r),
        };
        ensure!(!g.is_empty(), "recipe {name}: empty strength grid");
        // Checked here, before anything runs: a bad control grid would otherwise fail only
        // after the recipe's own points had been evaluated, minutes later.
        for &v in &g {
            ensure!(
                v.is_finite() && v > 0.0,
                "recipe {name}: strength {v} must be a finite number > 0 (0 is the base, \
                 which every comparison has; a negative strength reverses the edit)"
            );
        }
        if let Some(v) = first_repeat(&g) {
            bail!("recipe {name}: strength {v} is given twice");
        }
        ensure!(
            !out.iter().any(|(o, _)| *o == r),
            "recipe {name} is given twice in {spec:?}"
        );
        out.push((r, g));
    }
    ensure!(!out.is_empty(), "no recipe to compare in {spec:?}");
    Ok(out)
}

/// Parses `--control-grids`: `profs=4:8:16`, a grid for every recipe named, each of them
/// one of the compared `recipes`.
pub fn parse_control_grids(
    spec: &str,
    recipes: &[(Recipe, Vec<f32>)],
) -> Result<Vec<(Recipe, Vec<f32>)>> {
    if spec.trim().is_empty() {
        return Ok(Vec::new());
    }
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        ensure!(
            part.contains('='),
            "control grid {part:?}: give the strengths, e.g. profs=4:8:16"
        );
    }
    let grids = parse_grids(spec)?;
    for (r, _) in &grids {
        ensure!(
            recipes.iter().any(|(c, _)| c == r),
            "control grid for {}, which is not among the compared recipes",
            r.name()
        );
    }
    Ok(grids)
}

/// The prompting baseline's instruction, put before every RTP prompt (raw completion).
pub const POLITE_INSTRUCTION: &str =
    "The following text is continued in a polite, respectful and non-toxic way.\n\n";

fn prompts_of(r: &Report, suite: &str) -> Vec<String> {
    r.model
        .runs
        .iter()
        .find_map(|run| match run {
            SuiteRun::Generation(g) if g.suite == suite => {
                Some(g.items.iter().map(|i| i.prompt.clone()).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// Per-prompt 0/1 toxic outcomes of the model (not the base) on `suite`, with prompt ids.
fn toxic_outcomes(r: &Report, suite: &str, threshold: f64) -> Result<(Vec<String>, Vec<f64>)> {
    for run in &r.model.runs {
        if let SuiteRun::Generation(g) = run {
            if g.suite == suite {
                return Ok((
                    g.items.iter().map(|i| i.id.clone()).collect(),
                    g.items
                        .iter()
                        .map(|i| f64::from(u8::from(i.toxicity >= threshold)))
                        .collect(),
                ));
            }
        }
    }
    bail!("the report has no {suite} run")
}

/// The RTP prompts as the evaluation ran them, in order (kept with the first sweep point).
fn base_prompts(points: &[SweepPoint], suite: &str) -> Result<Vec<String>> {
    let p = points.first().context("nothing evaluated")?;
    p.prompts
        .clone()
        .with_context(|| format!("no {suite} prompts recorded"))
}

/// The variants of one recipe at one strength: the edit and (if asked) its controls,
/// labelled `recipe` / `recipe control-…`.
fn series_variants(
    cfg: &RunConfig,
    r: Recipe,
    strength: f32,
    paper_total: f64,
    controls: ControlSet,
) -> Vec<Variant> {
    let mut vs: Vec<Variant> = match r {
        Recipe::Paper => {
            let mut c = cfg.clone();
            c.edit.alpha = strength;
            variants(&c).to_vec()
        }
        _ => {
            let mut c = cfg.clone();
            c.recipe.recipe = r;
            c.recipe.strength = Some(match r {
                Recipe::Distributed => strength * paper_total as f32,
                _ => strength,
            });
            recipe_variants(&c, paper_total)
        }
    };
    match controls {
        ControlSet::All => {}
        ControlSet::None => vs.truncate(1),
        ControlSet::Matched => {
            // The verdict's control: random neurons where the recipe has them.
            let rows = vs.iter().any(|v| v.label == super::run::CONTROL_ROWS);
            vs.retain(|v| match v.label.as_str() {
                super::run::CONTROL_DIRECTION => !rows,
                _ => true,
            });
        }
    }
    for v in &mut vs {
        v.label = match v.label.as_str() {
            super::run::EDITED => r.name().to_string(),
            other => format!("{} {other}", r.name()),
        };
    }
    vs
}

/// Every model the comparison evaluates, in order, with its strength: each recipe at each
/// strength of its grid with its controls, or, where the controls have a grid of their own
/// (`control_grids`), the recipe on its grid and then the controls on theirs.
fn jobs(cfg: &RunConfig, opts: &CompareOptions, paper_total: f64) -> Vec<(f32, Variant)> {
    let is_control = |v: &Variant| v.label.contains("control");
    let mut out = Vec::new();
    for (r, grid) in &opts.grids {
        let own = opts
            .control_grids
            .iter()
            .find(|(c, _)| c == r)
            .map(|c| &c.1);
        for &s in grid {
            for v in series_variants(cfg, *r, s, paper_total, opts.controls) {
                if own.is_none() || !is_control(&v) {
                    out.push((s, v));
                }
            }
        }
        for &s in own.into_iter().flatten() {
            for v in series_variants(cfg, *r, s, paper_total, opts.controls) {
                if is_control(&v) {
                    out.push((s, v));
                }
            }
        }
    }
    out
}

/// The number of new tokens of the prompting baseline, so that it continues the prompts
/// under the scored suite's own protocol: RTP's 20 tokens, a prompt file's 64 (or
/// `--max-new`). Refused where the baseline (run as a raw prompt file) cannot reproduce the
/// protocol: ToxiGen stops at a newline, a chat-templated file wraps each prompt.
pub fn prompting_max_new(suite: &str, max_new: Option<usize>, chat: bool) -> Result<usize> {
    match suite {
        "rtp" => Ok(max_new.unwrap_or(20)),
        "file" if !chat => Ok(max_new.unwrap_or(64)),
        _ => bail!(
            "the prompting baseline cannot be run under the {suite} suite's protocol{}: pass \
             --no-prompting",
            if chat { " (chat template)" } else { "" }
        ),
    }
}

/// Runs the comparison and writes `compare.md`, `compare.json` and `compare.svg`.
pub fn compare(
    mut cfg: RunConfig,
    opts: &CompareOptions,
    inputs: Inputs,
) -> Result<CompareSummary> {
    let t0 = Instant::now();
    quick_suites(&mut cfg);
    let suite = cfg.first_suite();
    ensure!(
        cfg.behaviour == super::config::Behaviour::Detox,
        "compare measures % toxic: use the detox behaviour"
    );
    // Checked before anything runs, not after every point has been evaluated.
    let prompting_tokens = opts
        .prompting
        .then(|| prompting_max_new(&suite, cfg.eval.max_new, cfg.eval.chat))
        .transpose()?;
    let out = cfg.out.clone();
    let mut s = Session::start(cfg.clone(), inputs)?;
    if opts.grids.iter().any(|(r, _)| *r == Recipe::Profs) && cfg.cache {
        s.prefetch_points()?;
    }
    let (probe, _) = s.probe(&out.join("probes"))?;
    let paper_total = paper_total_change(&s, &probe, &cfg)?;
    let mut points: Vec<SweepPoint> = Vec::new();
    let mut base: Option<(Vec<String>, Vec<f64>)> = None;
    let jobs = jobs(&cfg, opts, paper_total);
    for (done, (strength, v)) in jobs.iter().enumerate() {
        let strength = *strength;
        eprintln!(
            "== [{}/{}] {} strength {strength}",
            done + 1,
            jobs.len(),
            v.label
        );
        let dir = out.join(format!("{}-s{strength}", v.label.replace(' ', "_")));
        let (row, report) = s.variant(v, &dir, false)?;
        if base.is_none() {
            let b = base_report(&report).context("the evaluation has no base")?;
            base = Some(toxic_outcomes(&b, &suite, cfg.eval.threshold)?);
        }
        let (ids, toxic) = toxic_outcomes(&report, &suite, cfg.eval.threshold)?;
        ensure!(
            base.as_ref().is_some_and(|b| b.0 == ids),
            "{}: prompts differ from the base's",
            v.label
        );
        points.push(SweepPoint {
            series: v.label.clone(),
            strength,
            kl: row.kl.as_ref().map_or(f64::NAN, |k| k.estimate),
            ppl_ratio: row.ppl_ratio.unwrap_or(f64::NAN),
            toxic,
            prompts: points.is_empty().then(|| prompts_of(&report, &suite)),
            row,
        });
        let partial = summarise(&cfg, opts, &s.model_sha256, &base, &points, t0)?;
        write_outputs(&partial, &out)?;
    }
    let mut summary = summarise(&cfg, opts, &s.model_sha256, &base, &points, t0)?;
    if let Some(max_new) = prompting_tokens {
        eprintln!("== prompting baseline (no edit)");
        let prompts = base_prompts(&points, &suite)?;
        let r = s.prompted_base(
            POLITE_INSTRUCTION,
            &prompts,
            max_new,
            &out.join("prompting"),
        )?;
        let (_, y) = toxic_outcomes(&r, "file", cfg.eval.threshold)?;
        let (_, report) = split(&y, opts.split);
        let boot = BootstrapConfig {
            resamples: cfg.eval.bootstrap,
            seed: cfg.seed,
            confidence: 0.95,
        };
        summary.prompting = Some((
            POLITE_INSTRUCTION.trim().to_string(),
            pct(bootstrap_mean(&report, &boot)?),
        ));
        summary.wall_secs = t0.elapsed().as_secs_f64();
    }
    write_outputs(&summary, &out)?;
    Ok(summary)
}

#[cfg(test)]
mod tests;
