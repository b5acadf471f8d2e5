//! The library entry point: evaluate a model (and its baseline) on a list of suites and
//! build the [`Report`]. `scalpel eval` is a thin layer over [`run_suites`]; a pipeline that
//! evaluates base, edited and control models calls it once per non-base model (base results
//! come from the cache after the first call).

use crate::assets::FetchOptions;
use crate::eval::capability;
use crate::eval::openai::Endpoint;
use crate::eval::report::{
    compare_gen, compare_ppl, summarize_gen, summarize_ppl, CapabilityDelta, Ci, GenDelta,
    GenSummary, PplSummary, SuiteRun, Throughput, PPL_RISE_WARN,
};
use crate::eval::stats::{bootstrap_mean, BootstrapConfig};
use crate::eval::suites::{preflight, run_suite_cached, wikitext_windows, Scorers};
use crate::runtime::{Model, Precision};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// Everything that decides an evaluation's numbers; recorded in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Suites in order (see [`crate::eval::suites::SUITES`]).
    pub suites: Vec<String>,
    /// At most this many prompts per generative suite (a seeded subsample).
    pub limit: Option<usize>,
    /// Overrides every suite's number of new tokens (quick runs).
    pub max_new: Option<usize>,
    /// ToxiGen prompts per target group.
    pub toxigen_per_group: usize,
    /// Seed of prompt sampling, `--limit` subsampling and the bootstrap.
    pub seed: u64,
    /// Prompts per generation batch.
    pub batch_size: usize,
    /// How the local models hold their matrices (changes the numbers slightly: recorded).
    pub precision: Precision,
    /// hatesonar toxicity at or above which a continuation counts as toxic.
    pub threshold: f64,
    /// WikiText-2 perplexity window (tokens) and an optional cap on the number of windows.
    pub ppl_window: usize,
    pub ppl_windows: Option<usize>,
    /// KL: windows and their length (tokens).
    pub kl_windows: usize,
    pub kl_window: usize,
    /// Benign prompts for greedy agreement with the base.
    pub benign_prompts: usize,
    /// The `file` suite: prompt file, JSONL field, chat template on/off.
    pub prompt_file: Option<PathBuf>,
    pub prompt_field: String,
    pub prompt_file_chat: bool,
    /// Bootstrap resamples of every interval.
    pub bootstrap_resamples: usize,
    /// Compare models whose tokenizers differ (token-level measures are skipped).
    pub allow_tokenizer_mismatch: bool,
    /// Where suite results are cached; `None` disables the cache.
    #[serde(skip)]
    pub cache_dir: Option<PathBuf>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            suites: crate::eval::suites::DEFAULT_SUITES
                .split(',')
                .map(String::from)
                .collect(),
            limit: None,
            max_new: None,
            toxigen_per_group: 100,
            seed: 0,
            batch_size: 16,
            precision: Precision::F32,
            threshold: 0.5,
            ppl_window: 1024,
            ppl_windows: None,
            kl_windows: 8,
            kl_window: 256,
            benign_prompts: 32,
            prompt_file: None,
            prompt_field: "prompt".into(),
            prompt_file_chat: false,
            bootstrap_resamples: 1000,
            allow_tokenizer_mismatch: false,
            cache_dir: None,
        }
    }
}

impl EvalConfig {
    /// The settings that change a single suite's results (the suite list does not).
    pub fn cache_key(&self) -> serde_json::Value {
        let mut c = self.clone();
        c.suites.clear();
        c.allow_tokenizer_mismatch = false;
        serde_json::to_value(c).unwrap_or_default()
    }

    /// Refuses settings that would run and report something misleading (a NaN threshold
    /// counts nothing as toxic; zero windows or prompts give empty measures). Called before
    /// any model loads.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            (0.0..=1.0).contains(&self.threshold),
            "threshold {} must be in [0, 1]",
            self.threshold
        );
        let counts = [
            ("batch size", Some(self.batch_size)),
            ("--ppl-window", Some(self.ppl_window)),
            ("--ppl-windows", self.ppl_windows),
            ("--kl-windows", Some(self.kl_windows)),
            ("--kl-window", Some(self.kl_window)),
            ("--benign-prompts", Some(self.benign_prompts)),
            ("--bootstrap", Some(self.bootstrap_resamples)),
            ("--limit", self.limit),
            ("--max-new", self.max_new),
            ("--toxigen-per-group", Some(self.toxigen_per_group)),
        ];
        for (flag, v) in counts {
            ensure!(v != Some(0), "{flag} must be at least 1");
        }
        ensure!(
            self.ppl_window >= 2 && self.kl_window >= 2,
            "perplexity and KL windows need at least 2 tokens"
        );
        if let Some(m) = self.max_new {
            ensure!(
                m <= crate::runtime::generate::MAX_NEW_TOKENS,
                "--max-new {m} is out of range"
            );
        }
        Ok(())
    }

    /// Bootstrap settings.
    pub fn bootstrap(&self) -> BootstrapConfig {
        BootstrapConfig {
            resamples: self.bootstrap_resamples,
            seed: self.seed,
            confidence: 0.95,
        }
    }
}

/// A model under evaluation.
pub struct Subject<'a> {
    /// Name in the report ("base", "edited", "control-random-rows", ...).
    pub label: String,
    /// The local model: tokenizer, chat template, and logits for `ppl` / `kl` / NLL.
    pub model: &'a Model,
    /// When set, continuations come from this server instead of the local model.
    pub endpoint: Option<&'a Endpoint>,
    /// Content fingerprint of the model files ([`crate::eval::suites::fingerprint`]).
    pub fingerprint: String,
}

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
    for suite in &cfg.suites {
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
        if cfg.suites.iter().any(|s| s == "kl") {
            if same_tok {
                let (windows, _) =
                    wikitext_windows(b.model, fetch, cfg.kl_window, Some(cfg.kl_windows))?;
                let kl = capability::kl_per_window(b.model, model.model, &windows)?;
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
