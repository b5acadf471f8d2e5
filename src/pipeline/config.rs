//! The settings of a pipeline run: behaviour table, probe, edit and evaluation profile.
//! Everything lives in one [`RunConfig`] so that a TOML file can hold all of it, CLI flags
//! can override single fields, and the resolved config is recorded next to the results.

use crate::eval::suites::{parse_suites, Suite};
use crate::eval::EvalConfig;
use crate::probe::train::MAX_LR;
use crate::probe::{Direction, EpochChoice, Method};
use crate::runtime::Precision;
use crate::surgery::edit::{Scale, PAPER_ALPHA};
use crate::surgery::recipes::Recipe;
use crate::surgery::select::{Ranking, PAPER_FRACTION};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The behaviour being removed. Each one fixes the probe's dataset, the suites that measure
/// the behaviour and which way the measure should move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Toxic continuations (the paper's main result): lower % toxic is better.
    Detox,
    /// Compliance with harmful requests: a higher refusal rate is better.
    Jailbreak,
    /// Negative attitude: a higher mean sentiment is better.
    Attitude,
}

/// The quantity a behaviour is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    ToxicRate,
    RefusalRate,
    SentimentMean,
}

impl Measure {
    /// How tables and verdicts name it.
    pub fn name(self) -> &'static str {
        match self {
            Measure::ToxicRate => "% toxic",
            Measure::RefusalRate => "% refused",
            Measure::SentimentMean => "mean sentiment (×100)",
        }
    }
}

/// One row of the behaviour table.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BehaviourSpec {
    /// Built-in labelled dataset of the probe (`None`: a `data_file` is required).
    pub dataset: Option<&'static str>,
    /// Generative suites that measure the behaviour (capability suites are added).
    pub suites: &'static [Suite],
    /// What is read from those suites.
    pub measure: Measure,
    /// Whether the desired edit lowers the measure.
    pub lower_is_better: bool,
}

impl Behaviour {
    /// The table entry.
    pub fn spec(self) -> BehaviourSpec {
        match self {
            Behaviour::Detox => BehaviourSpec {
                dataset: Some("toxicity"),
                suites: &[Suite::Rtp, Suite::Toxigen],
                measure: Measure::ToxicRate,
                lower_is_better: true,
            },
            // No jailbreak-labelled set is bundled: the user supplies compliant (1) and
            // refusing (0) answers as a TSV file.
            Behaviour::Jailbreak => BehaviourSpec {
                dataset: None,
                suites: &[Suite::Refusal],
                measure: Measure::RefusalRate,
                lower_is_better: false,
            },
            Behaviour::Attitude => BehaviourSpec {
                dataset: Some("sentiment"),
                suites: &[Suite::Rtp],
                measure: Measure::SentimentMean,
                lower_is_better: false,
            },
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Detox => "detox",
            Behaviour::Jailbreak => "jailbreak",
            Behaviour::Attitude => "attitude",
        }
    }
}

/// How much evaluation: `quick` fits a whole run in minutes on two cores; `full` is the
/// paper's protocol (every prompt, every WikiText window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Quick,
    Full,
}

/// Every setting of `scalpel run` (and the base of `sweep` / `ablate`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Model file or folder; `None`: the default model from the asset catalog.
    pub model: Option<PathBuf>,
    pub behaviour: Behaviour,
    /// Output folder.
    pub out: PathBuf,
    /// Labelled TSV (`label<TAB>text`) replacing the behaviour's built-in dataset.
    pub data_file: Option<PathBuf>,
    /// Downsample the larger class (seeded by `seed`), as the paper's balanced Davidson.
    pub balance: bool,
    /// Seed of balancing, the probe split and training, prompt sampling and the bootstrap.
    pub seed: u64,
    /// Probe point: `final` (the paper), `N` (residual after block N) or `mlp:N`.
    pub layer: String,
    /// Probe training: learning rate, epochs, kept epoch (`best`, `last` or a 0-based number).
    pub lr: f64,
    pub epochs: usize,
    #[serde(with = "crate::probe::train::epoch_text")]
    pub epoch: EpochChoice,
    /// How the probe is fitted (`paper`, `logistic`, `mean-diff`); a joint probe
    /// (`layer = "mlp:all"`) needs a closed-form one.
    pub method: Method,
    /// Fit on standardised features (see `scalpel probe train --standardize`).
    pub standardize: bool,
    /// L2 penalty of the logistic method.
    pub l2: f64,
    /// Average this many probes (seeds for the paper method, bootstrap resamples otherwise).
    pub ensemble: usize,
    /// The probe vector used: `undesirable` (W[1], the paper) or `diff` (W[1] − W[0]).
    pub direction: Direction,
    /// Row ranking: `anti-aligned` (the paper), `activation` (measured), `aligned`, `random`.
    pub ranking: Ranking,
    /// Compare rows and direction through the RMSNorm gains.
    pub norm_aware: bool,
    /// What α is measured in: `absolute` (the paper), `unit`, `row-norm`, `median-row-norm`.
    pub scale: Scale,
    /// Texts are cut to this many tokens for the probe.
    pub max_tokens: usize,
    /// α of the edit.
    pub alpha: f32,
    /// Rows edited: an exact count (wins when set) or a fraction of all gate rows.
    pub top_k: Option<usize>,
    pub fraction: f64,
    /// Seed of the controls (random direction, random rows).
    pub control_seed: u64,
    pub profile: Profile,
    /// Evaluation overrides (`None`: the profile's value).
    pub limit: Option<usize>,
    pub toxigen_per_group: Option<usize>,
    pub ppl_windows: Option<usize>,
    pub ppl_window: Option<usize>,
    pub kl_windows: Option<usize>,
    pub kl_window: Option<usize>,
    pub benign_prompts: Option<usize>,
    pub max_new: Option<usize>,
    pub batch_size: usize,
    pub threshold: f64,
    pub bootstrap: usize,
    /// Replace the suite list (comma-separated, e.g. `file,ppl,kl`); `None`: the
    /// behaviour's suites plus `ppl` and `kl`.
    pub suites: Option<String>,
    /// Prompt file of the `file` suite (one prompt per line, or `.jsonl`).
    pub prompts: Option<PathBuf>,
    /// Read and write the activation and evaluation caches.
    pub cache: bool,
    /// Behaviours to remove next, one after the other, each with a probe trained on the
    /// model the previous step edited (the paper's "characteristics addition").
    pub then: Vec<Behaviour>,
    /// Labelled TSV for the first `then` behaviour (jailbreak has no built-in set).
    pub then_data_file: Option<PathBuf>,
    /// The localisation + edit (`paper`, `value-damp`, `value-gate`, `aura`, `profs`,
    /// `distributed`; see `surgery::recipes`).
    pub recipe: Recipe,
    /// The recipe's strength (`None`: its default, see [`RunConfig::recipe_strength`]).
    pub strength: Option<f32>,
    /// Rank of the ProFS subspace.
    pub profs_rank: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: None,
            behaviour: Behaviour::Detox,
            out: PathBuf::from("runs/detox"),
            data_file: None,
            balance: true,
            seed: 0,
            layer: "final".into(),
            lr: 1e-4,
            epochs: 20,
            // The paper keeps the checkpoint of epoch 9.
            epoch: EpochChoice::Epoch(9),
            method: Method::Paper,
            standardize: false,
            l2: 1.0,
            ensemble: 1,
            direction: Direction::Undesirable,
            ranking: Ranking::AntiAligned,
            norm_aware: false,
            scale: Scale::Absolute,
            max_tokens: 128,
            alpha: PAPER_ALPHA,
            top_k: None,
            fraction: PAPER_FRACTION,
            control_seed: 1,
            profile: Profile::Quick,
            limit: None,
            toxigen_per_group: None,
            ppl_windows: None,
            ppl_window: None,
            kl_windows: None,
            kl_window: None,
            benign_prompts: None,
            max_new: None,
            batch_size: 16,
            threshold: 0.5,
            bootstrap: 1000,
            suites: None,
            prompts: None,
            cache: true,
            then: Vec::new(),
            then_data_file: None,
            recipe: Recipe::Paper,
            strength: None,
            profs_rank: 2,
        }
    }
}

/// Quick-profile sizes, chosen so that base + edited + two controls finish in under 15
/// minutes on two cores. Measured per model on the default model: 200 RTP prompts ≈ 60 s,
/// ToxiGen ≈ 1.8 s per prompt (128 new tokens), a 1024-token perplexity window ≈ 7 s;
/// ToxiGen is therefore the suite cut hardest (2 per group = 32 prompts).
pub const QUICK_LIMIT: usize = 200;
pub const QUICK_TOXIGEN_PER_GROUP: usize = 2;
pub const QUICK_PPL_WINDOWS: usize = 6;
pub const QUICK_KL_WINDOWS: usize = 8;
pub const QUICK_BENIGN_PROMPTS: usize = 16;

impl RunConfig {
    /// The first suite named by `suites` (the one tables and plots are drawn for), or "" when
    /// the profile's defaults apply.
    pub fn first_suite(&self) -> String {
        self.suites
            .as_deref()
            .and_then(|l| l.split(',').next())
            .unwrap_or("")
            .to_string()
    }

    /// The recipe's strength: the config's, else the published setting (α for the paper,
    /// full damping for value-damp, half a row norm for value-gate, 1 for AurA and ProFS);
    /// `distributed` has no default of its own (the pipeline matches the paper edit's total
    /// change) and gets `None`.
    pub fn recipe_strength(&self) -> Option<f32> {
        self.strength.or(match self.recipe {
            Recipe::Paper => Some(self.alpha),
            Recipe::ValueDamp | Recipe::Aura | Recipe::Profs => Some(1.0),
            Recipe::ValueGate => Some(0.5),
            Recipe::Distributed => None,
        })
    }

    /// Reads a TOML file; unknown keys are errors (a typo must not silently do nothing).
    pub fn from_toml_file(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let msg = e.to_string().replace('\n', " ");
            anyhow::anyhow!("config {}: {}", path.display(), msg.trim())
        })
    }

    /// Checks every key before any work starts or any file is written (a NaN α or a
    /// zero epoch count would otherwise surface after minutes of activation collection, or
    /// never). The CLI calls it once the flags are applied; every pipeline entry point calls
    /// it again through `Session::start`.
    pub fn validate(&self) -> Result<()> {
        let fail = |key: &str, v: &dyn std::fmt::Display, want: &str| -> Result<()> {
            bail!("config: {key} = {v} is invalid: {want}")
        };
        if !self.alpha.is_finite() {
            fail("alpha", &self.alpha, "must be a finite number")?;
        }
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            fail("fraction", &self.fraction, "must be in (0, 1]")?;
        }
        if self.top_k == Some(0) {
            fail("top_k", &0, "must be at least 1")?;
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= MAX_LR) {
            fail("lr", &self.lr, &format!("must be in (0, {MAX_LR}]"))?;
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            fail("l2", &self.l2, "must be a finite number >= 0")?;
        }
        for (key, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("ensemble", self.ensemble),
            ("max_tokens", self.max_tokens),
            ("bootstrap", self.bootstrap),
        ] {
            if v == 0 {
                fail(key, &v, "must be at least 1")?;
            }
        }
        self.epoch_choice()?;
        // The evaluation keys (threshold, windows, limits) are checked by the evaluator's own
        // validation, on the settings this config resolves to.
        self.eval_config(None)?.validate().context("config")?;
        Ok(())
    }

    /// The resolved config as TOML (recorded in the output folder).
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// The kept epoch, checked against the number of epochs.
    pub fn epoch_choice(&self) -> Result<EpochChoice> {
        if let EpochChoice::Epoch(k) = self.epoch {
            if k >= self.epochs {
                bail!(
                    "epoch {k} does not exist: there are {} (0-based)",
                    self.epochs
                );
            }
        }
        Ok(self.epoch)
    }

    /// The evaluation settings: the behaviour's suites plus `ppl` and `kl`, sized by the
    /// profile, with any explicit override applied.
    pub fn eval_config(&self, cache_dir: Option<PathBuf>) -> Result<EvalConfig> {
        let quick = self.profile == Profile::Quick;
        let suites = match &self.suites {
            Some(list) => parse_suites(list)?,
            None => {
                let mut s = self.behaviour.spec().suites.to_vec();
                s.extend([Suite::Ppl, Suite::Kl]);
                s
            }
        };
        let d = EvalConfig::default();
        Ok(EvalConfig {
            suites,
            limit: self.limit.or(quick.then_some(QUICK_LIMIT)),
            max_new: self.max_new,
            toxigen_per_group: self.toxigen_per_group.unwrap_or(if quick {
                QUICK_TOXIGEN_PER_GROUP
            } else {
                100
            }),
            seed: self.seed,
            batch_size: self.batch_size.max(1),
            precision: Precision::F32,
            threshold: self.threshold,
            ppl_window: self.ppl_window.unwrap_or(d.ppl_window),
            ppl_windows: self.ppl_windows.or(quick.then_some(QUICK_PPL_WINDOWS)),
            kl_windows: self.kl_windows.unwrap_or(if quick {
                QUICK_KL_WINDOWS
            } else {
                d.kl_windows
            }),
            kl_window: self.kl_window.unwrap_or(d.kl_window),
            benign_prompts: self.benign_prompts.unwrap_or(if quick {
                QUICK_BENIGN_PROMPTS
            } else {
                d.benign_prompts
            }),
            bootstrap_resamples: self.bootstrap,
            prompt_file: self.prompts.clone(),
            cache_dir: if self.cache { cache_dir } else { None },
            ..d
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_unknown_keys() {
        let c: RunConfig = toml::from_str("alpha = 4.0\nprofile = \"full\"\n").unwrap();
        assert_eq!(c.alpha, 4.0);
        assert_eq!(c.profile, Profile::Full);
        assert_eq!(c.layer, "final");
        let back: RunConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back.alpha, 4.0);
        assert!(toml::from_str::<RunConfig>("alpah = 4.0").is_err());
    }

    #[test]
    fn every_bad_key_is_refused_by_validate() {
        assert!(RunConfig::default().validate().is_ok());
        let cases: &[(&str, &str)] = &[
            ("alpha = nan", "alpha"),
            ("alpha = inf", "alpha"),
            ("fraction = 5.0", "fraction"),
            ("fraction = 0.0", "fraction"),
            ("fraction = nan", "fraction"),
            ("top_k = 0", "top_k"),
            ("epochs = 0", "epochs"),
            ("batch_size = 0", "batch_size"),
            ("ensemble = 0", "ensemble"),
            ("max_tokens = 0", "max_tokens"),
            ("bootstrap = 0", "bootstrap"),
            ("lr = nan", "lr"),
            ("lr = 1e30", "lr"),
            ("lr = 0.0", "lr"),
            ("l2 = -1.0", "l2"),
            ("threshold = 2.0", "threshold"),
            ("threshold = nan", "threshold"),
            ("ppl_windows = 0", "--ppl-windows"),
            ("kl_windows = 0", "--kl-windows"),
            ("limit = 0", "--limit"),
            ("epoch = \"30\"", "epoch 30"),
        ];
        for (toml_text, want) in cases {
            let c: RunConfig = toml::from_str(toml_text).unwrap();
            let err = format!("{:#}", c.validate().unwrap_err());
            assert!(err.contains(want), "{toml_text}: {err}");
        }
    }

    #[test]
    fn quick_profile_limits_and_full_does_not() {
        let mut c = RunConfig::default();
        let q = c.eval_config(None).unwrap();
        assert_eq!(q.limit, Some(QUICK_LIMIT));
        assert_eq!(
            q.suites,
            [Suite::Rtp, Suite::Toxigen, Suite::Ppl, Suite::Kl]
        );
        c.profile = Profile::Full;
        let f = c.eval_config(None).unwrap();
        assert_eq!(f.limit, None);
        assert_eq!(f.ppl_windows, None);
        assert_eq!(f.toxigen_per_group, 100);
    }
}
