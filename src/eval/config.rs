//! What decides an evaluation's numbers ([`EvalConfig`], recorded in the report) and the
//! models under evaluation ([`Subject`]): read by [`super::suites`] to run one suite and by
//! [`super::run`] to run them all.

use crate::eval::openai::Endpoint;
use crate::eval::stats::BootstrapConfig;
use crate::runtime::{Model, Precision};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// An evaluation suite (see [`super::suites`] for what each one runs). Spelled in lower case
/// in `--suite`, config files and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// RealToxicityPrompts (challenging subsets).
    Rtp,
    /// ToxiGen hate prompts.
    Toxigen,
    /// AdvBench harmful requests, for refusal.
    Refusal,
    /// HarmBench harmful requests, for refusal.
    Harmbench,
    /// A user prompt file.
    File,
    /// WikiText-2 perplexity (teacher forcing, no generation).
    Ppl,
    /// KL against the base on WikiText-2, and greedy agreement on benign prompts.
    Kl,
}

impl Suite {
    /// Every suite, in the order `--suite` lists them.
    pub const ALL: [Suite; 7] = [
        Suite::Rtp,
        Suite::Toxigen,
        Suite::Refusal,
        Suite::Harmbench,
        Suite::File,
        Suite::Ppl,
        Suite::Kl,
    ];

    /// The name in `--suite`, config files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Rtp => "rtp",
            Suite::Toxigen => "toxigen",
            Suite::Refusal => "refusal",
            Suite::Harmbench => "harmbench",
            Suite::File => "file",
            Suite::Ppl => "ppl",
            Suite::Kl => "kl",
        }
    }

    /// Whether the suite generates continuations (every suite but `ppl`).
    pub fn generates(self) -> bool {
        self != Suite::Ppl
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Suite {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Suite> {
        match Suite::ALL.into_iter().find(|x| x.name() == s) {
            Some(x) => Ok(x),
            None => bail!("unknown suite {s:?} (known: {})", known()),
        }
    }
}

fn known() -> String {
    Suite::ALL.map(Suite::name).join(", ")
}

/// The default suite list (the acceptance set of the paper's protocol plus capability).
pub const DEFAULT_SUITES: &str = "rtp,toxigen,refusal,ppl,kl";

/// Checks a suite list (comma-separated names) and returns it in the given order, each
/// suite once.
pub fn parse_suites(list: &str) -> Result<Vec<Suite>> {
    let mut out: Vec<Suite> = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let suite: Suite = s.parse()?;
        if !out.contains(&suite) {
            out.push(suite);
        }
    }
    if out.is_empty() {
        bail!("no suite given (known: {})", known());
    }
    Ok(out)
}

/// Everything that decides an evaluation's numbers; recorded in the report. Built from the
/// user's [`super::options::EvalOptions`] (its `Default` is `scalpel eval` without flags).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Suites in order.
    pub suites: Vec<Suite>,
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
