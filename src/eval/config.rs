//! What decides an evaluation's numbers ([`EvalConfig`], recorded in the report) and the
//! models under evaluation ([`Subject`]): read by [`super::suites`] to run one suite and by
//! [`super::run`] to run them all.

use crate::eval::openai::Endpoint;
use crate::eval::stats::BootstrapConfig;
use crate::runtime::{Model, Precision};
use anyhow::{bail, Context, Result};
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
    /// The settings that change `suite`'s cached result, as the JSON of its cache key.
    ///
    /// Settings the suite never reads are left out, so that its entry survives a change to
    /// them: a ToxiGen comparison reuses the perplexity of an RTP one, which used to be
    /// recomputed (a minute per model on the default model) because the key held every
    /// setting. The threshold, the bootstrap and the KL windows are applied after the
    /// cached runs (summaries, KL), so no key holds them. The `file` suite's prompts enter
    /// by content (sha256), not only by path, so an edited file is never served the
    /// results of its earlier version.
    pub fn cache_key(&self, suite: Suite) -> Result<serde_json::Value> {
        let mut c = self.clone();
        c.suites.clear();
        c.allow_tokenizer_mismatch = false;
        c.threshold = 0.0;
        c.bootstrap_resamples = 0;
        c.kl_windows = 0;
        c.kl_window = 0;
        if suite == Suite::Ppl {
            // WikiText windows from the start of the corpus: no prompts, no sampling.
            c.limit = None;
            c.max_new = None;
            c.seed = 0;
            c.batch_size = 0;
        } else {
            c.ppl_window = 0;
            c.ppl_windows = None;
        }
        if suite != Suite::Toxigen {
            c.toxigen_per_group = 0;
        }
        if suite != Suite::Kl {
            c.benign_prompts = 0;
        }
        let mut file_sha256 = None;
        if suite == Suite::File {
            if let Some(p) = &self.prompt_file {
                file_sha256 = Some(file_sha256_hex(p)?);
            }
        } else {
            c.prompt_file = None;
            c.prompt_field.clear();
            c.prompt_file_chat = false;
        }
        let mut key = serde_json::to_value(c)?;
        if let Some(h) = file_sha256 {
            key["prompt_file_sha256"] = h.into();
        }
        Ok(key)
    }

    /// The key of cache entries written before [`EvalConfig::cache_key`] held only a
    /// suite's own settings: every setting but the suite list. `None` for the `file` suite,
    /// whose earlier key held the prompt file's path and not its contents.
    pub fn legacy_cache_key(&self, suite: Suite) -> Option<serde_json::Value> {
        let mut c = self.clone();
        c.suites.clear();
        c.allow_tokenizer_mismatch = false;
        (suite != Suite::File)
            .then(|| serde_json::to_value(c).ok())
            .flatten()
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

/// The sha256 of a file's contents, streamed.
fn file_sha256_hex(path: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("prompt file {}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)
        .with_context(|| format!("prompt file {}: cannot read", path.display()))?;
    Ok(format!("{:x}", h.finalize()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Precision;

    fn key(c: &EvalConfig, s: Suite) -> serde_json::Value {
        c.cache_key(s).unwrap()
    }

    /// A suite's key moves with the settings it reads and with no other, so that a cached
    /// result is reused exactly when it would come out the same.
    #[test]
    fn a_suite_key_holds_the_settings_that_suite_reads() {
        let base = EvalConfig::default();
        let changed = |f: &dyn Fn(&mut EvalConfig)| {
            let mut c = base.clone();
            f(&mut c);
            c
        };
        let others = [
            changed(&|c| c.threshold = 0.7),
            changed(&|c| c.bootstrap_resamples = 10),
            changed(&|c| c.kl_windows = 3),
            changed(&|c| c.kl_window = 64),
            changed(&|c| c.suites = vec![Suite::Ppl]),
        ];
        for suite in Suite::ALL.into_iter().filter(|&s| s != Suite::File) {
            for c in &others {
                assert_eq!(key(&base, suite), key(c, suite), "{suite}");
            }
            let precision = changed(&|c| c.precision = Precision::F32);
            assert_ne!(key(&base, suite), key(&precision, suite), "{suite}");
        }
        // Perplexity: only its windows (and the precision, above).
        for c in [
            changed(&|c| c.limit = Some(7)),
            changed(&|c| c.max_new = Some(5)),
            changed(&|c| c.toxigen_per_group = 3),
            changed(&|c| c.seed = 9),
            changed(&|c| c.benign_prompts = 2),
        ] {
            assert_eq!(key(&base, Suite::Ppl), key(&c, Suite::Ppl));
        }
        assert_ne!(
            key(&base, Suite::Ppl),
            key(&changed(&|c| c.ppl_windows = Some(4)), Suite::Ppl)
        );
        assert_ne!(
            key(&base, Suite::Ppl),
            key(&changed(&|c| c.ppl_window = 512), Suite::Ppl)
        );
        // Generation: prompts, sampling and lengths; ToxiGen its groups, KL its prompts.
        for s in [Suite::Rtp, Suite::Toxigen, Suite::Kl] {
            assert_eq!(
                key(&base, s),
                key(&changed(&|c| c.ppl_windows = Some(4)), s)
            );
            for c in [
                changed(&|c| c.limit = Some(7)),
                changed(&|c| c.max_new = Some(5)),
                changed(&|c| c.seed = 9),
            ] {
                assert_ne!(key(&base, s), key(&c, s), "{s}");
            }
        }
        let groups = changed(&|c| c.toxigen_per_group = 3);
        assert_eq!(key(&base, Suite::Rtp), key(&groups, Suite::Rtp));
        assert_ne!(key(&base, Suite::Toxigen), key(&groups, Suite::Toxigen));
        let benign = changed(&|c| c.benign_prompts = 2);
        assert_eq!(key(&base, Suite::Rtp), key(&benign, Suite::Rtp));
        assert_ne!(key(&base, Suite::Kl), key(&benign, Suite::Kl));
    }

    /// The earlier key is every setting but the suite list (what entries written before
    /// per-suite keys were filed under), and is never used for a prompt file.
    #[test]
    fn the_legacy_key_is_every_setting_but_the_suite_list() {
        let c = EvalConfig {
            threshold: 0.7,
            suites: vec![Suite::Rtp, Suite::Ppl],
            ..Default::default()
        };
        let old = c.legacy_cache_key(Suite::Ppl).unwrap();
        let mut want = serde_json::to_value(&c).unwrap();
        want["suites"] = serde_json::json!([]);
        assert_eq!(old, want);
        assert_eq!(old["threshold"], 0.7);
        assert_ne!(old, key(&c, Suite::Ppl));
        assert!(c.legacy_cache_key(Suite::File).is_none());
    }

    /// The `file` suite's key follows the prompts' contents, not only the file's name.
    #[test]
    fn a_prompt_file_enters_its_key_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prompts.txt");
        std::fs::write(&path, "one\ntwo\n").unwrap();
        let c = EvalConfig {
            prompt_file: Some(path.clone()),
            ..Default::default()
        };
        let before = key(&c, Suite::File);
        assert_eq!(before, key(&c, Suite::File));
        std::fs::write(&path, "one\nthree\n").unwrap();
        assert_ne!(before, key(&c, Suite::File));
        // Other suites do not read the file.
        assert_eq!(key(&c, Suite::Rtp), key(&EvalConfig::default(), Suite::Rtp));
        std::fs::remove_file(&path).unwrap();
        let err = c.cache_key(Suite::File).unwrap_err().to_string();
        assert!(err.contains("prompts.txt"), "{err}");
    }
}
