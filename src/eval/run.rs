//! The library entry point: evaluate a model (and its baseline) on a list of suites and
//! build the [`Report`]. `scalpel eval` is a thin layer over [`run_suites`]; a pipeline that
//! evaluates base, edited and control models calls it once per non-base model (base results
//! come from the cache after the first call).

use crate::assets::FetchOptions;
use crate::eval::cache::{kl_cached, run_suite_cached};
use crate::eval::capability;
use crate::eval::config::{EvalConfig, Subject, Suite};
use crate::eval::report::{
    compare_gen, compare_ppl, summarize_gen, summarize_ppl, CapabilityDelta, Ci, GenDelta,
    GenSummary, PplSummary, SuiteRun, Throughput, PPL_RISE_WARN,
};
use crate::eval::stats::bootstrap_mean;
use crate::eval::suites::{preflight, Scorers};
use crate::runtime::Model;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Aggregates of one suite on one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SuiteSummary {
    Generation { suite: String, summary: GenSummary },
    Perplexity(PplSummary),
}

/// One model's results: raw runs (every prompt, continuation and score) and aggregates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelReport {
    pub label: String,
    pub path: String,
    pub fingerprint: String,
    /// `local` or the endpoint URL.
    pub backend: String,
    pub summaries: Vec<SuiteSummary>,
    pub runs: Vec<SuiteRun>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scalpel_version: String,
    pub config: EvalConfig,
    /// The baseline, when one was given.
    pub base: Option<ModelReport>,
    /// The model evaluated.
    pub model: ModelReport,
    /// Paired comparisons per generative suite (edited − base).
    pub deltas: Vec<GenDelta>,
    /// Perplexity ratio, KL and their warnings.
    pub capability: Option<CapabilityDelta>,
    /// Every warning (degeneration, perplexity rise), also printed in `report.md`.
    pub warnings: Vec<String>,
    /// Generation speed over all generative suites and models.
    pub throughput: Throughput,
    pub wall_secs: f64,
}

fn evaluate(
    subject: &Subject,
    nll_ref: &Subject,
    cfg: &EvalConfig,
    scorers: &Scorers,
    fetch: &FetchOptions,
) -> Result<ModelReport> {
    let boot = cfg.bootstrap();
    let mut runs = Vec::new();
    let mut summaries = Vec::new();
    for &suite in &cfg.suites {
        let run = run_suite_cached(suite, subject, nll_ref, cfg, scorers, fetch)?;
        summaries.push(match &run {
            SuiteRun::Generation(g) => SuiteSummary::Generation {
                suite: g.suite.clone(),
                summary: summarize_gen(g, cfg.threshold, &boot)?,
            },
            SuiteRun::Perplexity(p) => SuiteSummary::Perplexity(summarize_ppl(p, &boot)?),
        });
        runs.push(run);
    }
    Ok(ModelReport {
        label: subject.label.clone(),
        path: subject.model.path.display().to_string(),
        fingerprint: subject.fingerprint.clone(),
        backend: subject
            .endpoint
            .map_or("local".into(), |e| e.base_url.clone()),
        summaries,
        runs,
    })
}

/// Whether `model` and `baseline` share a tokenizer; an error when they do not and
/// `allow_mismatch` is off (token-level comparisons between them would be meaningless).
pub fn check_tokenizers(model: &Model, baseline: &Model, allow_mismatch: bool) -> Result<bool> {
    let same = capability::same_tokenizer(&baseline.tokenizer, &model.tokenizer);
    if !same && !allow_mismatch {
        bail!(
            "{} and baseline {} have different tokenizers ({} vs {} tokens); pass --allow-tokenizer-mismatch to compare them anyway (KL is then skipped)",
            model.path.display(),
            baseline.path.display(),
            model.tokenizer.vocab_size(),
            baseline.tokenizer.vocab_size()
        );
    }
    Ok(same)
}

/// Evaluates `model` on `cfg.suites` and, with a `baseline`, the baseline too, then compares
/// them prompt by prompt. Continuation NLLs are always computed under the baseline (the
/// model itself when there is none). Refuses models whose tokenizers differ unless
/// `cfg.allow_tokenizer_mismatch`.
pub fn run_suites(
    model: &Subject,
    baseline: Option<&Subject>,
    cfg: &EvalConfig,
    scorers: &Scorers,
    fetch: &FetchOptions,
) -> Result<Report> {
    cfg.validate()?;
    let t0 = Instant::now();
    let same_tok = match baseline {
        Some(b) => check_tokenizers(model.model, b.model, cfg.allow_tokenizer_mismatch)?,
        None => true,
    };
    preflight(model.model, cfg, fetch)?;
    let nll_ref = baseline.unwrap_or(model);
    let base = match baseline {
        Some(b) => Some(evaluate(b, b, cfg, scorers, fetch)?),
        None => None,
    };
    let edited = evaluate(model, nll_ref, cfg, scorers, fetch)?;
    let boot = cfg.bootstrap();
    let mut deltas = Vec::new();
    let mut capability = None;
    let mut warnings = Vec::new();
    if let (Some(b), Some(base_rep)) = (baseline, &base) {
        let mut cap = CapabilityDelta {
            ppl_ratio: None,
            ppl_nll_diff: None,
            kl: None,
            kl_windows: 0,
            kl_skipped: None,
            warnings: Vec::new(),
        };
        for (rb, re) in base_rep.runs.iter().zip(&edited.runs) {
            match (rb, re) {
                (SuiteRun::Generation(gb), SuiteRun::Generation(ge)) => {
                    let d = compare_gen(gb, ge, cfg.threshold, &boot)?;
                    warnings.extend(d.warnings.iter().cloned());
                    deltas.push(d);
                }
                (SuiteRun::Perplexity(pb), SuiteRun::Perplexity(pe)) if same_tok => {
                    let (ratio, diff) = compare_ppl(pb, pe, &boot)?;
                    cap.ppl_ratio = Some(ratio);
                    cap.ppl_nll_diff = Some(diff);
                    if ratio > PPL_RISE_WARN {
                        cap.warnings.push(format!(
                            "ppl: WikiText-2 perplexity rose {:.0} % over the base",
                            (ratio - 1.0) * 100.0
                        ));
                    }
                }
                _ => {}
            }
        }
        if cfg.suites.contains(&Suite::Kl) {
            if same_tok {
                let kl = kl_cached(b, model, cfg, &scorers.base_logits, fetch)?;
                cap.kl = Some(Ci::from(bootstrap_mean(&kl, &boot)?));
                cap.kl_windows = kl.len();
            } else {
                cap.kl_skipped = Some("the tokenizers differ".into());
            }
        }
        warnings.extend(cap.warnings.iter().cloned());
        capability = Some(cap);
    }
    let mut tp = (0usize, 0usize, 0usize, 0.0f64);
    for m in base.iter().chain(std::iter::once(&edited)) {
        for r in &m.runs {
            if let SuiteRun::Generation(g) = r {
                tp.0 += g.throughput.prompts;
                tp.1 += g.throughput.prompt_tokens;
                tp.2 += g.throughput.generated_tokens;
                tp.3 += g.throughput.secs;
            }
        }
    }
    Ok(Report {
        scalpel_version: env!("CARGO_PKG_VERSION").into(),
        config: cfg.clone(),
        base,
        model: edited,
        deltas,
        capability,
        warnings,
        throughput: Throughput::new(tp.0, tp.1, tp.2, tp.3),
        wall_secs: t0.elapsed().as_secs_f64(),
    })
}
