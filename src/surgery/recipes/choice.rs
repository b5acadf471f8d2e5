//! Which recipe a run or `scalpel edit` uses ([`Recipe`]) and how strongly
//! ([`RecipeSettings`]), and the controls it is compared with ([`Control`]).

use serde::Serialize;

/// A whole localisation + edit, picked by one word.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// The paper: the K gate rows most anti-aligned with the probe direction get `+α·w`.
    #[default]
    Paper,
    /// Lee et al.: the K neurons whose value vector is most aligned with the probe
    /// direction are damped by the factor `1 − strength` (their up row scaled).
    ValueDamp,
    /// Lee et al.: the same neurons' gate rows are pushed away from the probe direction,
    /// `gate_i −= strength·‖gate_i‖·ŵ`, so they fire less where the direction is present.
    ValueGate,
    /// Suau et al.: every neuron with activation AUC > 0.5 damped by
    /// `1 − strength·2·(AUC − 0.5)` (strength 1 is the published recipe).
    Aura,
    /// Uppaal et al.: `W_down ← (I − strength·P)·W_down` in the upper half of the blocks,
    /// P the projector on each block's rank-k toxic subspace.
    Profs,
    /// The probe direction added to every gate row, `row += c·ŵ`, with c chosen so that
    /// the total (Frobenius) change is `strength` (the paper edit's total, for comparison).
    Distributed,
}

impl Recipe {
    /// The recipe's name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Paper => "paper",
            Recipe::ValueDamp => "value-damp",
            Recipe::ValueGate => "value-gate",
            Recipe::Aura => "aura",
            Recipe::Profs => "profs",
            Recipe::Distributed => "distributed",
        }
    }

    /// The published strength (α for the paper, full damping for value-damp, half a row norm
    /// for value-gate, 1 for AurA and ProFS); `distributed` has none (`None`).
    pub fn default_strength(self, alpha: f32) -> Option<f32> {
        match self {
            Recipe::Paper => Some(alpha),
            Recipe::ValueDamp | Recipe::Aura | Recipe::Profs => Some(1.0),
            Recipe::ValueGate => Some(0.5),
            Recipe::Distributed => None,
        }
    }

    /// Whether the recipe has `control` (AurA has no direction to randomise; ProFS and the
    /// distributed edit change every row, so there are no other neurons to move them to).
    pub fn has_control(self, control: Control) -> bool {
        match control {
            Control::None => true,
            Control::RandomNeurons(_) => !matches!(self, Recipe::Profs | Recipe::Distributed),
            Control::RandomDirection(_) => self != Recipe::Aura,
        }
    }

    /// Whether the recipe needs labelled text run through the model (not only the probe).
    pub fn needs_activations(self) -> bool {
        matches!(self, Recipe::Aura | Recipe::Profs)
    }
}

/// Which localisation + edit is used, and how strongly: flags of `scalpel edit` and the
/// top-level `recipe`, `strength`, `profs_rank` keys of a run config.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, clap::Args)]
#[serde(default)]
pub struct RecipeSettings {
    /// The localisation + edit: paper (default), value-damp, value-gate, aura, profs,
    /// distributed (see docs/recipes.md).
    #[arg(long, value_enum, default_value_t)]
    pub recipe: Recipe,
    /// The recipe's strength (default: its published setting, see docs/recipes.md;
    /// `distributed`: the total Frobenius change, required by `edit`, the paper edit's total
    /// in a run).
    #[arg(long, allow_negative_numbers = true)]
    pub strength: Option<f32>,
    /// Rank of the ProFS subspace.
    #[arg(long = "rank", value_name = "RANK", default_value_t = 2)]
    pub profs_rank: usize,
}

impl Default for RecipeSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl RecipeSettings {
    /// The strength given, else the recipe's published one (`alpha` for the paper).
    pub fn strength_or_default(&self, alpha: f32) -> Option<f32> {
        self.strength.or(self.recipe.default_strength(alpha))
    }
}

/// The control a recipe is built as, at the same number of neurons and size of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Control {
    /// The recipe itself.
    #[default]
    None,
    /// The same number of neurons with the same changes, drawn at random (seeded).
    RandomNeurons(u64),
    /// The same neurons (or rows) with a random direction / subspace of the same size.
    RandomDirection(u64),
}
