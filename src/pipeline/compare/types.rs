//! What `scalpel compare` is given and what it returns: its options, the evaluated points,
//! the matched-damage cells and the summary written to `compare.json`.

use crate::pipeline::config::RunConfig;
use crate::pipeline::rows::Row;
use crate::surgery::recipes::Recipe;
use serde::{Deserialize, Serialize};

/// Which controls `compare` evaluates beside each recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ControlSet {
    /// Both controls a recipe has (random neurons, random direction).
    All,
    /// Only the control the matched-damage test compares against: random neurons where the
    /// recipe has them, else its random direction (ProFS, distributed). A third fewer
    /// evaluations than `all`.
    Matched,
    /// No controls.
    None,
}

/// How the prompts are divided between choosing and reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PromptSplit {
    /// Even positions tune (the best recipe is chosen on them), odd positions are reported.
    #[default]
    Halves,
    /// A confirmation: the recipes, strengths and targets were chosen on other prompts, so
    /// every prompt is reported and no best recipe is chosen.
    Confirm,
}

/// The strengths swept per recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareOptions {
    pub grids: Vec<(Recipe, Vec<f32>)>,
    /// Which of each recipe's controls are evaluated at every strength.
    pub controls: ControlSet,
    /// KL targets (nats/token).
    pub kl_targets: Vec<f64>,
    /// WikiText perplexity-ratio targets.
    pub ppl_targets: Vec<f64>,
    /// Evaluate the prompting baseline.
    pub prompting: bool,
    /// Which prompts choose and which are reported.
    #[serde(default)]
    pub split: PromptSplit,
    /// Strength grids of their own for some recipes' controls, when a control at the
    /// recipe's strengths never reaches the recipe's damage (ProFS's random subspace: KL
    /// 0.005 where the recipe reaches 0.14), so that both are compared at matched damage.
    #[serde(default)]
    pub control_grids: Vec<(Recipe, Vec<f32>)>,
}

/// One evaluated model of a series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepPoint {
    pub series: String,
    pub strength: f32,
    pub kl: f64,
    pub ppl_ratio: f64,
    /// 0/1 toxic outcome per RTP prompt, in the base's prompt order.
    pub toxic: Vec<f64>,
    /// The prompts themselves (first point only; the prompting baseline reuses them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<String>>,
    pub row: Row,
}

/// One series at one target damage, on the report half of the prompts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatchedCell {
    pub series: String,
    /// `kl` or `ppl_ratio`.
    pub measure: String,
    pub target: f64,
    /// % toxic on the report half with a 95 % bootstrap interval; `None`: not reached.
    pub toxic: Option<[f64; 3]>,
    /// Same on the tuning half (what the best recipe is chosen by).
    pub toxic_tune: Option<f64>,
    /// Strengths of the two bracketing points and the interpolation weight.
    pub bracket: Option<(f32, f32, f64)>,
    /// Against the recipe's random-neuron control (else its random-direction control) at
    /// the same target: mean paired difference (points of % toxic) with a 95 % interval,
    /// and a two-sided sign-flip permutation p.
    pub vs_control: Option<(String, [f64; 3], f64)>,
}

/// What `compare.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareSummary {
    pub scalpel_version: String,
    pub config: RunConfig,
    pub options: CompareOptions,
    pub model_sha256: String,
    /// The suite whose prompts are scored (`rtp`, `toxigen`, `file`).
    #[serde(default = "default_suite")]
    pub suite: String,
    pub base_toxic_report: [f64; 3],
    /// Base % toxic on all prompts (the plot's starting point).
    pub base_toxic_all: f64,
    pub prompts: usize,
    pub points: Vec<SweepPoint>,
    pub cells: Vec<MatchedCell>,
    /// Per target, the recipe with the least toxicity on the tuning half.
    pub best: Vec<(String, f64, String)>,
    /// The prompting baseline (no edit, KL 0): the instruction and % toxic on the report
    /// half [95 % CI].
    pub prompting: Option<(String, [f64; 3])>,
    pub wall_secs: f64,
}

fn default_suite() -> String {
    "rtp".into()
}
