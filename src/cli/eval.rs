//! `scalpel eval`: evaluate a model, optionally against its baseline, and write a report.

use anyhow::{Context, Result};
use clap::Args;
use scalpel::assets::FetchOptions;
use scalpel::eval::markdown::write_report;
use scalpel::eval::openai::Endpoint;
use scalpel::eval::run::check_tokenizers;
use scalpel::eval::suites::{fingerprint, parse_suites, preflight, Scorers, Suite, DEFAULT_SUITES};
use scalpel::eval::{run_suites, EvalOptions, Subject};
use scalpel::runtime::{LoadOptions, Model};
use std::path::PathBuf;
use std::time::Duration;

/// A clap parser for a positive, finite number of seconds (at most a week).
pub(super) fn positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v > 0.0 && v <= 7.0 * 86400.0 {
        Ok(v)
    } else {
        Err(format!(
            "{s} must be a positive number of seconds (at most a week)"
        ))
    }
}

/// Arguments of `scalpel eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The model to evaluate (GGUF file or Hugging Face folder).
    pub model: PathBuf,
    /// The unedited model to compare against (paired differences, KL, agreement); the
    /// perplexity of every continuation is computed under it.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Output folder for report.json, report.md and the SVG plots.
    #[arg(long, default_value = "eval-report")]
    pub out: PathBuf,
    #[command(flatten)]
    pub opts: EvalOptions,
    /// Seed of sampling, subsampling and bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Generate MODEL's continuations with an OpenAI-compatible server
    /// (e.g. http://127.0.0.1:8080); MODEL is still loaded for tokenizing, ppl and KL.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Seconds one endpoint request may take, every byte of the answer included.
    #[arg(long, default_value_t = scalpel::eval::openai::DEFAULT_REQUEST_TIMEOUT.as_secs_f64(), value_parser = positive_secs)]
    pub endpoint_timeout: f64,
    /// Seconds all endpoint requests of the run may take together (default: no limit).
    #[arg(long, value_parser = positive_secs)]
    pub endpoint_deadline: Option<f64>,
    /// The `model` name sent to the endpoint: the adapter or model alias the server holds
    /// (vLLM `--lora-modules NAME=…`, llama-cpp-python's `model_alias`); default MODEL's path.
    #[arg(long, value_name = "NAME", requires = "endpoint")]
    pub served_model: Option<String>,
    /// Generate the baseline's continuations on the endpoint too, under this model name
    /// (e.g. the base model beside an adapter on one server).
    #[arg(long, value_name = "NAME", requires_all = ["endpoint", "baseline"])]
    pub baseline_served_model: Option<String>,
    /// Compare models whose tokenizers differ (KL is then skipped).
    #[arg(long)]
    pub allow_tokenizer_mismatch: bool,
    /// Do not read or write the result cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// Runs `scalpel eval`.
pub fn run(a: EvalArgs) -> Result<()> {
    let ins: Vec<&std::path::Path> = [Some(&a.model), a.baseline.as_ref(), a.opts.prompts.as_ref()]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect();
    scalpel::formats::io::check_not_input(&ins, &a.out)?;
    let fetch = FetchOptions::from_env()?;
    let cache = (!a.no_cache).then(|| fetch.cache_dir.join("eval"));
    let default_suites = parse_suites(DEFAULT_SUITES)?;
    let mut cfg = a.opts.config(&default_suites, a.seed, cache);
    if a.opts.prompts.is_some() && !cfg.suites.contains(&Suite::File) {
        cfg.suites.push(Suite::File);
    }
    cfg.allow_tokenizer_mismatch = a.allow_tokenizer_mismatch;
    // Every setting is checked before any model loads or file is written.
    cfg.validate()?;
    let endpoint = a
        .endpoint
        .as_deref()
        .map(|u| {
            let name = a.served_model.clone();
            Endpoint::new(u, &name.unwrap_or_else(|| a.model.display().to_string()))?
                .with_deadlines(
                    Duration::from_secs_f64(a.endpoint_timeout),
                    a.endpoint_deadline.map(Duration::from_secs_f64),
                )
        })
        .transpose()?;
    let opts = LoadOptions {
        precision: a.opts.precision,
    };
    let model = Model::load(&a.model, &opts)?;
    let subject = Subject {
        label: if a.baseline.is_some() {
            "edited"
        } else {
            "model"
        }
        .into(),
        model: &model,
        endpoint: endpoint.as_ref(),
        fingerprint: fingerprint(&a.model)?,
    };
    let base_model = a
        .baseline
        .as_ref()
        .map(|p| Model::load(p, &opts))
        .transpose()?;
    let base_endpoint = match (&a.endpoint, &a.baseline_served_model) {
        (Some(u), Some(name)) => Some(Endpoint::new(u, name)?.with_deadlines(
            Duration::from_secs_f64(a.endpoint_timeout),
            a.endpoint_deadline.map(Duration::from_secs_f64),
        )?),
        _ => None,
    };
    let base = match (&a.baseline, &base_model) {
        (Some(p), Some(m)) => Some(Subject {
            label: "base".into(),
            model: m,
            endpoint: base_endpoint.as_ref(),
            fingerprint: fingerprint(p)?,
        }),
        _ => None,
    };
    // Cheap checks first: a tokenizer mismatch or a bad prompt file fails before the
    // scorers load and before any generation.
    if let Some(b) = &base {
        check_tokenizers(&model, b.model, cfg.allow_tokenizer_mismatch)?;
    }
    preflight(&model, &cfg, &fetch)?;
    let scorers = Scorers::load(&fetch).context("loading the scorers")?;
    let report = run_suites(&subject, base.as_ref(), &cfg, &scorers, &fetch)?;
    let files = write_report(&report, &a.out)?;
    for w in &report.warnings {
        eprintln!("WARNING {w}");
    }
    let t = &report.throughput;
    eprintln!(
        "{} prompts, {} generated tokens in {:.1} s of generation: {:.2} prompts/s, {:.1} tokens/s; wall {:.1} s",
        t.prompts, t.generated_tokens, t.secs, t.prompts_per_sec, t.tokens_per_sec, report.wall_secs
    );
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
