//! The settings of a pipeline run: the run-wide keys (model, behaviour, output, seeds,
//! recipe) and one table per step, each the option struct that step owns — `[probe]`
//! ([`FitOptions`]), `[select]` ([`SelectOptions`]), `[edit]` ([`EditOptions`]), `[eval]`
//! ([`EvalOptions`]). [`RunConfig`] is at once the TOML file, the flags of `run` / `sweep` /
//! `ablate` / `compare` (which override the file) and the record next to the results.
//! Files in the flat layout of earlier versions are read with a warning per moved key
//! ([`super::legacy`]).

use crate::eval::suites::Suite;
use crate::eval::{EvalConfig, EvalOptions};
use crate::probe::FitOptions;
use crate::surgery::recipes::RecipeSettings;
use crate::surgery::{EditOptions, SelectOptions};
use anyhow::{bail, ensure, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::eval::Profile;

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

/// Probe texts the quick profile trains on (a seeded stratified sample of the balanced
/// set). Collecting the probe's activations is compute-bound (every text through every
/// block), and all 8,326 balanced Davidson tweets took half of a quick run from an empty
/// cache; on the default model 2,000 of them give a probe of the same held-out accuracy
/// (docs/performance.md). `--full` or `--probe-texts N` uses more.
pub const QUICK_PROBE_TEXTS: usize = 2000;

/// Every setting of `scalpel run` (and the base of `sweep` / `ablate` / `compare`). As clap
/// `Args` these are also those commands' flags; the defaults are the flags' (the paper's
/// recipe, the quick evaluation profile, the paper's epoch 9).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(default)]
#[command(
    mut_arg("epoch", |a| a.default_value("9")),
    mut_arg("profile", |a| a.default_value("quick")),
    mut_arg("fit_batch_size", |a| a.long("probe-batch-size")),
    mut_arg("select_seed", |a| a.long("select-seed"))
)]
pub struct RunConfig {
    /// Model (GGUF file or Hugging Face folder); default: the default model (fetched,
    /// verified).
    pub model: Option<PathBuf>,
    /// Behaviour to remove.
    #[arg(long, value_enum, default_value_t = Behaviour::Detox)]
    pub behaviour: Behaviour,
    /// Output folder.
    #[arg(long, default_value = "runs/detox")]
    pub out: PathBuf,
    /// Labelled TSV (`label<TAB>text`, 1 = undesirable) replacing the behaviour's dataset.
    #[arg(long)]
    pub data_file: Option<PathBuf>,
    /// Downsample the larger class (seeded by `seed`), as the paper's balanced Davidson
    /// (config file only).
    #[arg(skip = true)]
    pub balance: bool,
    /// At most N probe texts: a seeded sample stratified by class, taken after balancing
    /// (default: all; quick profile: 2000).
    #[arg(long, value_name = "N")]
    pub probe_texts: Option<usize>,
    /// Seed of balancing, the probe split and training, prompt sampling and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seed of the controls (random direction, random rows).
    #[arg(long, default_value_t = 1)]
    pub control_seed: u64,
    /// Read and write the activation and evaluation caches (`--no-cache`: do not).
    #[arg(long = "no-cache", action = clap::ArgAction::SetFalse)]
    pub cache: bool,
    /// Then remove this behaviour too, on the edited model with a probe trained on it
    /// (repeatable; `run` only): the paper's "characteristics addition".
    #[arg(long, value_enum)]
    pub then: Vec<Behaviour>,
    /// Labelled TSV for the first `then` behaviour (jailbreak has no built-in set; config
    /// file only).
    #[arg(skip)]
    pub then_data_file: Option<PathBuf>,
    /// The localisation + edit and its strength (`recipe`, `strength`, `profs_rank`).
    #[command(flatten)]
    #[serde(flatten)]
    pub recipe: RecipeSettings,
    /// `[probe]`: where the probe reads and how it is fitted.
    #[command(flatten, next_help_heading = "Probe (config table [probe])")]
    #[serde(deserialize_with = "probe_table")]
    pub probe: FitOptions,
    /// `[select]`: which rows are edited.
    #[command(flatten, next_help_heading = "Selection (config table [select])")]
    pub select: SelectOptions,
    /// `[edit]`: how the selected rows change.
    #[command(flatten, next_help_heading = "Edit (config table [edit])")]
    pub edit: EditOptions,
    /// `[eval]`: what the models are measured on, and how much.
    #[command(flatten, next_help_heading = "Evaluation (config table [eval])")]
    #[serde(deserialize_with = "eval_table")]
    pub eval: EvalOptions,
}

impl Default for RunConfig {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

/// A table read over the run's defaults for it, so that a partial table keeps the run's
/// values (epoch 9, the quick profile) rather than the struct's own. TOML values carry NaN
/// (which JSON cannot); a JSON `null` (a `None` in summary.json) leaves the default.
fn over_defaults<'de, D: Deserializer<'de>, T: Serialize + DeserializeOwned>(
    d: D,
    defaults: T,
) -> std::result::Result<T, D::Error> {
    use serde::de::Error;
    let given = BTreeMap::<String, Option<toml::Value>>::deserialize(d)?;
    let mut table = match toml::Value::try_from(defaults).map_err(D::Error::custom)? {
        toml::Value::Table(t) => t,
        _ => return Err(D::Error::custom("settings are not a table")),
    };
    table.extend(given.into_iter().filter_map(|(k, v)| Some((k, v?))));
    T::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)
}

fn probe_table<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<FitOptions, D::Error> {
    over_defaults(d, RunConfig::default().probe)
}

fn eval_table<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<EvalOptions, D::Error> {
    over_defaults(d, RunConfig::default().eval)
}

impl RunConfig {
    /// The first suite named by `[eval] suites` (the one tables and plots are drawn for), or
    /// "" when the behaviour's defaults apply.
    pub fn first_suite(&self) -> String {
        let first = self.eval.suites.as_ref().and_then(|s| s.0.first());
        first.map_or(String::new(), |s| s.name().to_string())
    }

    /// The recipe's strength: the config's, else the published setting (see
    /// [`crate::surgery::recipes::Recipe::default_strength`]); `distributed` has no default
    /// of its own (the pipeline matches the paper edit's total change) and gets `None`.
    pub fn recipe_strength(&self) -> Option<f32> {
        self.recipe.strength_or_default(self.edit.alpha)
    }

    /// Reads a TOML file over the defaults; unknown keys are errors (a typo must not
    /// silently do nothing). Returns the warnings of an old flat file, one per moved key.
    pub fn from_toml_file(path: &Path) -> Result<(RunConfig, Vec<String>)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let (cfg, warnings) = RunConfig::from_toml_str(&text)
            .with_context(|| format!("config {}", path.display()))?;
        let at = |w: String| format!("config {}: {w}", path.display());
        Ok((cfg, warnings.into_iter().map(at).collect()))
    }

    /// [`RunConfig::from_toml_file`] on text (warnings without the file's name).
    pub fn from_toml_str(text: &str) -> Result<(RunConfig, Vec<String>)> {
        let one_line =
            |e: &dyn std::fmt::Display| e.to_string().replace('\n', " ").trim().to_string();
        let table: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!(one_line(&e)))?;
        let (table, warnings) = super::legacy::translate(table)?;
        let given = serde_json::to_value(&table)?;
        let cfg = RunConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!(one_line(&e)))?;
        if let Some(key) = unknown_key(&given, &serde_json::to_value(&cfg)?, "") {
            bail!("unknown key `{key}` (every key: run.example.toml)");
        }
        Ok((cfg, warnings))
    }

    /// Checks every key before any work starts or any file is written (a NaN α or a
    /// zero epoch count would otherwise surface after minutes of activation collection, or
    /// never). The CLI calls it once the flags are applied; every pipeline entry point calls
    /// it again through `Session::start`.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.edit.alpha.is_finite(),
            "config [edit]: alpha = {} is invalid: must be a finite number",
            self.edit.alpha
        );
        self.select.count.validate().context("config [select]")?;
        self.probe.validate().context("config [probe]")?;
        if let Some(n) = self.probe_texts {
            ensure!(
                n >= 2,
                "config: probe_texts = {n} is invalid: the probe needs at least one text of each class"
            );
        }
        for (key, v) in [
            ("batch_size", self.eval.batch_size),
            ("bootstrap", self.eval.bootstrap),
        ] {
            ensure!(
                v >= 1,
                "config [eval]: {key} = {v} is invalid: must be at least 1"
            );
        }
        // The other evaluation keys (threshold, windows, limits) are checked by the
        // evaluator's own validation, on the settings this config resolves to.
        self.eval_config(None).validate().context("config [eval]")?;
        Ok(())
    }

    /// How many probe texts to keep at most: `probe_texts`, else the profile's size (`None`:
    /// all of them).
    pub fn probe_text_limit(&self) -> Option<usize> {
        self.probe_texts
            .or((self.eval.profile == Profile::Quick).then_some(QUICK_PROBE_TEXTS))
    }

    /// The resolved config as TOML (recorded in the output folder).
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// The evaluation settings: the behaviour's suites plus `ppl` and `kl` unless the config
    /// names suites, sized by the profile unless sizes are given.
    pub fn eval_config(&self, cache_dir: Option<PathBuf>) -> EvalConfig {
        let mut suites = self.behaviour.spec().suites.to_vec();
        suites.extend([Suite::Ppl, Suite::Kl]);
        let cache = if self.cache { cache_dir } else { None };
        self.eval.config(&suites, self.seed, cache)
    }
}

/// The first key of `given` (dotted path) that reading did not keep: a key no setting has.
fn unknown_key(given: &serde_json::Value, read: &serde_json::Value, at: &str) -> Option<String> {
    let (serde_json::Value::Object(g), serde_json::Value::Object(r)) = (given, read) else {
        return None;
    };
    g.iter().find_map(|(k, v)| {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match r.get(k) {
            None => Some(path),
            Some(kept) => unknown_key(v, kept, &path),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::EpochChoice;
    use crate::surgery::Count;

    fn read(text: &str) -> RunConfig {
        RunConfig::from_toml_str(text).unwrap().0
    }

    #[test]
    fn tables_round_trip_and_partial_tables_keep_the_run_defaults() {
        let c = read("[edit]\nalpha = 4.0\n[eval]\nprofile = \"full\"\n[probe]\nlr = 1e-3\n");
        assert_eq!(c.edit.alpha, 4.0);
        assert_eq!(c.eval.profile, Profile::Full);
        assert_eq!(c.probe.lr, 1e-3);
        // The run keeps the paper's epoch 9 even when [probe] sets something else.
        assert_eq!(c.probe.epoch, EpochChoice::Epoch(9));
        assert_eq!(c.probe.layer.to_string(), "final");
        let back = read(&c.to_toml().unwrap());
        assert_eq!(back.to_toml().unwrap(), c.to_toml().unwrap());
        // Direct serde (summary.json) gives the same defaults.
        let direct: RunConfig = toml::from_str("[probe]\nlr = 1e-3\n").unwrap();
        assert_eq!(direct.probe.epoch, EpochChoice::Epoch(9));
        assert_eq!(direct.eval.profile, Profile::Quick);
        let json = serde_json::to_string(&c).unwrap();
        let again: RunConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(again.to_toml().unwrap(), c.to_toml().unwrap());
    }

    #[test]
    fn unknown_keys_and_bad_spellings_are_refused_when_read() {
        for (text, want) in [
            ("alpah = 4.0", "unknown key `alpah`"),
            ("[edit]\nalpah = 4.0", "alpah"),
            ("[select]\ncount = { rows = 3, extra = 1 }", "count"),
            ("[probe]\nlayer = \"mlp:x\"", "\"x\" is not a block number"),
            (
                "[probe]\nepoch = \"soon\"",
                "expected best, last or a 0-based epoch",
            ),
            ("[eval]\nsuites = \"rtp,tox\"", "unknown suite"),
        ] {
            let err = format!("{:#}", RunConfig::from_toml_str(text).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains('\n'), "{text}: {err}");
        }
    }

    #[test]
    fn an_old_flat_file_reads_as_the_same_settings_with_warnings() {
        let (old, warnings) = RunConfig::from_toml_str(
            "alpha = 4.0\nlayer = \"mlp:3\"\nepoch = \"last\"\ntop_k = 7\nsuites = \"rtp,ppl\"\nbatch_size = 8\nseed = 5\n",
        )
        .unwrap();
        let new = read(
            "seed = 5\n[probe]\nlayer = \"mlp:3\"\nepoch = \"last\"\n[select]\ncount = { rows = 7 }\n[edit]\nalpha = 4.0\n[eval]\nsuites = \"rtp,ppl\"\nbatch_size = 8\n",
        );
        assert_eq!(old.to_toml().unwrap(), new.to_toml().unwrap());
        assert_eq!(old.select.count, Count::Rows(7));
        assert_eq!(warnings.len(), 6, "{warnings:?}");
        for (w, table) in warnings.iter().zip([
            "[probe]", "[probe]", "[edit]", "[eval]", "[eval]", "[select]",
        ]) {
            assert!(w.contains(table), "{w}");
        }
    }

    #[test]
    fn every_bad_key_is_refused_by_validate() {
        assert!(RunConfig::default().validate().is_ok());
        let cases: &[(&str, &str)] = &[
            ("[edit]\nalpha = nan", "alpha"),
            ("[edit]\nalpha = inf", "alpha"),
            ("[select]\ncount = { fraction = 5.0 }", "fraction"),
            ("[select]\ncount = { fraction = 0.0 }", "fraction"),
            ("[select]\ncount = { fraction = nan }", "fraction"),
            ("[select]\ncount = { rows = 0 }", "top_k"),
            ("[probe]\nepochs = 0", "epochs"),
            ("[probe]\nbatch_size = 0", "batch_size"),
            ("[eval]\nbatch_size = 0", "batch_size"),
            ("[probe]\nensemble = 0", "ensemble"),
            ("[probe]\nmax_tokens = 0", "max_tokens"),
            ("[eval]\nbootstrap = 0", "bootstrap"),
            ("[probe]\nlr = nan", "lr"),
            ("[probe]\nlr = 1e30", "lr"),
            ("[probe]\nlr = 0.0", "lr"),
            ("[probe]\nl2 = -1.0", "l2"),
            ("[eval]\nthreshold = 2.0", "threshold"),
            ("[eval]\nthreshold = nan", "threshold"),
            ("[eval]\nppl_windows = 0", "--ppl-windows"),
            ("[eval]\nkl_windows = 0", "--kl-windows"),
            ("[eval]\nlimit = 0", "--limit"),
            ("[probe]\nepoch = \"30\"", "epoch 30"),
        ];
        for (toml_text, want) in cases {
            let c = read(toml_text);
            let err = format!("{:#}", c.validate().unwrap_err());
            assert!(err.contains(want), "{toml_text}: {err}");
        }
    }

    #[test]
    fn quick_profile_limits_and_full_does_not() {
        let mut c = RunConfig::default();
        let q = c.eval_config(None);
        assert_eq!(q.limit, Some(crate::eval::options::QUICK_LIMIT));
        assert_eq!(
            q.suites,
            [Suite::Rtp, Suite::Toxigen, Suite::Ppl, Suite::Kl]
        );
        c.eval.profile = Profile::Full;
        let f = c.eval_config(None);
        assert_eq!(f.limit, None);
        assert_eq!(f.ppl_windows, None);
        assert_eq!(f.toxigen_per_group, 100);
    }
}
