//! Output-side localisation recipes, next to the paper's gate-row edit (issue #13).
//!
//! The paper (Wang et al., "Model Surgery", step 2) locates a behaviour on the *input* side
//! of the MLP: gate rows that read the probe direction. The recipes here locate it where the
//! MLP *writes* into the residual stream, after the published methods:
//!
//! - [`value`]: toxic value vectors (Lee et al., ICML 2024): neurons whose value vector
//!   (column i of `ffn_down`) points along the probe direction; damp them (`value-damp`, up
//!   row scaled) or push their gate row away from the direction (`value-gate`).
//! - [`aura`]: AurA (Suau et al., ICML 2024): per-neuron ROC AUC of the pooled activation
//!   as a toxic-vs-clean classifier; damp each neuron with AUC > 0.5 by `1 − Gini`.
//! - [`profs`]: ProFS (Uppaal et al., ICLR 2025): project a rank-k "toxic subspace" of the
//!   layer's output embeddings out of `ffn_down` in the upper blocks.
//! - [`distributed`]: the paper's direction added to *every* gate row with the same total
//!   change as the paper's edit (Yang et al., EMNLP 2025: the behaviour is spread out).
//!
//! Which recipe, its strength and its controls: [`Recipe`], [`RecipeSettings`] (the
//! `--recipe` / `--strength` / `--rank` flags and config keys), [`Control`].
//!
//! Every recipe produces an [`EditPlan`] of per-row deltas, so the writers, the patch and
//! the checks are the paper's. A neuron's output in a gated MLP is
//! `down[:, i] · act(gate_i·x) · (up_i·x)`, so scaling the neuron by f is exactly the row
//! edit `up_i += (f − 1)·up_i`.

pub mod aura;
mod choice;
pub mod distributed;
pub mod neurons;
pub mod profs;
pub mod value;

pub use choice::{Control, Recipe, RecipeSettings};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{bail, Result};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::Serialize;

use super::directions::{block_vectors, BlockVectors};
use super::edit::{plan_edit, random_direction, EditOptions, EditPlan, RowEdit};
use super::model::{Matrix, MatrixTensor, ModelFile};
use super::select::{probe_hash, select, Count, Ranking, SelectOptions};
use crate::probe::{Direction, Probe};

/// One neuron: MLP row `row` of block `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Neuron {
    pub block: usize,
    pub row: usize,
}

/// `k` neurons drawn uniformly without replacement from `n_rows[b]` rows per block, seeded;
/// sorted by (block, row).
pub fn random_neurons(n_rows: &[usize], k: usize, seed: u64) -> Result<Vec<Neuron>> {
    let total: usize = n_rows.iter().sum();
    if k > total {
        bail!("{k} random neurons asked of a model with {total}");
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut idx = rand::seq::index::sample(&mut rng, total, k).into_vec();
    idx.sort_unstable();
    let mut out = Vec::with_capacity(k);
    let (mut b, mut start) = (0, 0);
    for i in idx {
        while i >= start + n_rows[b] {
            start += n_rows[b];
            b += 1;
        }
        out.push(Neuron {
            block: b,
            row: i - start,
        });
    }
    Ok(out)
}

/// Within each block, moves the given (row, factor) pairs onto random rows of that block
/// (seeded): the random-neuron control of a per-neuron damping, with the same count and
/// the same factors per block.
pub fn shuffle_within_blocks(
    factors: &[Vec<(usize, f32)>],
    n_rows: &[usize],
    seed: u64,
) -> Vec<Vec<(usize, f32)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    factors
        .iter()
        .zip(n_rows)
        .map(|(f, &n)| {
            let mut rows = rand::seq::index::sample(&mut rng, n, f.len()).into_vec();
            rows.shuffle(&mut rng);
            let mut out: Vec<(usize, f32)> = rows.into_iter().zip(f.iter().map(|x| x.1)).collect();
            out.sort_by_key(|x| x.0);
            out
        })
        .collect()
}

/// The plan that scales row `row` of `t` by `factor` (`row += (factor − 1)·row`), for every
/// `(row, factor)` of each block; factors of exactly 1 are left out.
pub fn scale_rows_plan(
    model: &ModelFile,
    matrix: Matrix,
    factors: &[Vec<(usize, f32)>],
    info: serde_json::Value,
) -> Result<EditPlan> {
    let tensors = model.matrix_tensors(matrix)?;
    if factors.len() != tensors.len() {
        bail!(
            "row factors cover {} blocks, the model has {}",
            factors.len(),
            tensors.len()
        );
    }
    let mut rows = Vec::new();
    for (t, f) in tensors.iter().zip(factors) {
        let mut r = vec![0f32; t.row_len];
        for &(row, factor) in f {
            if !factor.is_finite() {
                bail!("factor {factor} for {} row {row} is not finite", t.name);
            }
            if factor == 1.0 {
                continue;
            }
            model.read_row(t, row, &mut r)?;
            let delta: Arc<[f32]> = r.iter().map(|&x| (factor - 1.0) * x).collect();
            rows.push(RowEdit {
                tensor: t.name.clone(),
                row,
                delta,
            });
        }
        model.release(&t.name);
    }
    Ok(EditPlan { rows, info })
}

/// The whole of `t` decoded row by row (`n_rows × row_len`, row-major).
pub fn read_matrix(model: &ModelFile, t: &MatrixTensor) -> Result<Vec<f32>> {
    let mut m = vec![0f32; t.n_rows * t.row_len];
    for (r, out) in m.chunks_exact_mut(t.row_len).enumerate() {
        model.read_row(t, r, out)?;
    }
    model.release(&t.name);
    Ok(m)
}

/// The upper half of `n` blocks (ProFS edits the upper layers).
pub fn upper_half(n: usize) -> BTreeSet<usize> {
    (n / 2..n).collect()
}

/// Unit vector of `v` in f64.
pub(crate) fn unit(v: &[f32]) -> Result<Vec<f64>> {
    let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if !(n > 0.0 && n.is_finite()) {
        bail!("the direction has norm {n}; it must be finite and non-zero");
    }
    Ok(v.iter().map(|&x| x as f64 / n).collect())
}

/// Options of [`plan_recipe`].
#[derive(Debug, Clone, Serialize)]
pub struct RecipeOptions {
    pub recipe: Recipe,
    /// What the recipe scales: α for `paper`; the damping `1 − factor` for `value-damp`;
    /// the push in row norms for `value-gate`; the Gini multiplier for `aura` (1 = the
    /// paper); the projection weight for `profs` (1 = the paper); the total Frobenius change
    /// for `distributed`.
    pub strength: f32,
    /// Neurons (rows) chosen by `paper`, `value-damp` and `value-gate`.
    pub count: Count,
    /// The probe row used as the direction.
    pub direction: Direction,
    /// Rank of the ProFS subspace.
    pub rank: usize,
    /// Blocks ProFS edits (`None`: the upper half).
    pub blocks: Option<BTreeSet<usize>>,
    /// The recipe or one of its controls.
    pub control: Control,
}

impl Default for RecipeOptions {
    fn default() -> Self {
        RecipeOptions {
            recipe: Recipe::Paper,
            strength: crate::surgery::edit::PAPER_ALPHA,
            count: Count::default(),
            direction: Direction::Undesirable,
            rank: 2,
            blocks: None,
            control: Control::None,
        }
    }
}

/// Measurements on labelled text that `aura` and `profs` need (1 = undesirable).
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured<'a> {
    /// One label per text.
    pub labels: &'a [u8],
    /// Per block, `n × n_ff` pooled neuron activations ([`neurons::pooled_activations`]).
    pub neurons: Option<&'a [Vec<f32>]>,
    /// Per block, `n × d` mean-pooled residual states after the block (`None` for blocks
    /// not measured).
    pub residuals: Option<&'a [Option<Vec<f32>>]>,
}

/// What a recipe chose, besides the plan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecipeReport {
    /// Rows (neurons) edited per block.
    pub per_block: Vec<usize>,
    /// Neurons changed (rows of neuron matrices; `ffn_down` rows count as 0).
    pub neurons: usize,
    /// Frobenius norm of the planned change.
    pub delta_norm: f64,
}

/// Builds the edit plan of `opts.recipe` (or its control) for `model` from `probe` and, for
/// `aura` and `profs`, the measurements.
pub fn plan_recipe(
    model: &ModelFile,
    probe: &Probe,
    measured: &Measured<'_>,
    opts: &RecipeOptions,
) -> Result<(EditPlan, RecipeReport)> {
    if !opts.strength.is_finite() {
        bail!("strength {} is not finite", opts.strength);
    }
    let gates = model.matrix_tensors(Matrix::Gate)?;
    let n_rows: Vec<usize> = gates.iter().map(|t| t.n_rows).collect();
    let blocks = gates.len();
    let info = serde_json::json!({
        "method": format!("recipe:{}", opts.recipe.name()),
        "probe_hash": probe_hash(probe),
        "recipe": opts,
    });
    let plan = match opts.recipe {
        Recipe::Paper => plan_paper(model, probe, opts, info)?,
        Recipe::ValueDamp => plan_value_damp(model, probe, opts, &n_rows, info)?,
        Recipe::ValueGate => plan_value_gate(model, probe, opts, &n_rows, info)?,
        Recipe::Aura => plan_aura(model, measured, opts, &n_rows, info)?,
        Recipe::Profs => plan_profs(model, probe, measured, opts, blocks, info)?,
        Recipe::Distributed => plan_distributed(model, probe, opts, blocks, info)?,
    };
    let report = recipe_report(model, &gates, &plan)?;
    Ok((plan, report))
}

/// The refusal of a control the recipe does not have.
fn no_control<T>(recipe: Recipe, what: &str) -> Result<T> {
    bail!("recipe {} has no {what} control", recipe.name())
}

/// K of `count` among the model's `n_rows` neurons, refused when 0 or more than there are.
fn neuron_count(count: Count, n_rows: &[usize]) -> Result<usize> {
    let total: usize = n_rows.iter().sum();
    let k = match count {
        Count::Rows(k) => k,
        Count::Fraction(f) => (f * total as f64).round() as usize,
    };
    if k == 0 || k > total {
        bail!("K = {k}: choose between 1 and the model's {total} neurons");
    }
    Ok(k)
}

/// `paper`: the paper's selection and gate-row edit (its controls are the selection's random
/// ranking and the edit's random direction).
fn plan_paper(
    model: &ModelFile,
    probe: &Probe,
    opts: &RecipeOptions,
    info: serde_json::Value,
) -> Result<EditPlan> {
    let sopts = SelectOptions {
        count: opts.count,
        direction: opts.direction,
        ranking: match opts.control {
            Control::RandomNeurons(_) => Ranking::Random,
            _ => Ranking::AntiAligned,
        },
        seed: match opts.control {
            Control::RandomNeurons(s) => s,
            _ => 0,
        },
        ..SelectOptions::default()
    };
    let sel = select(model, probe, &sopts)?;
    let mut plan = plan_edit(
        &sel,
        probe,
        &EditOptions {
            alpha: opts.strength,
            random_direction: match opts.control {
                Control::RandomDirection(s) => Some(s),
                _ => None,
            },
            ..EditOptions::default()
        },
    )?;
    plan.info = info;
    Ok(plan)
}

/// The probe's per-block vectors and the K neurons `value-damp` and `value-gate` edit: those
/// whose value vector is most aligned with the ranking direction (a random direction for
/// `value-damp`'s random-direction control), or K random ones for the random-neuron control.
fn value_neurons(
    model: &ModelFile,
    probe: &Probe,
    opts: &RecipeOptions,
    n_rows: &[usize],
) -> Result<(BTreeMap<usize, BlockVectors>, Vec<Neuron>)> {
    let vecs = probe_vectors(model, probe, opts.direction, n_rows.len())?;
    let k = neuron_count(opts.count, n_rows)?;
    let rank: BTreeMap<usize, Vec<f32>> = match (opts.recipe, opts.control) {
        (Recipe::ValueDamp, Control::RandomDirection(s)) => vecs
            .iter()
            .map(|(&b, v)| (b, random_direction(v.rank.len(), 1.0, s)))
            .collect(),
        _ => vecs.iter().map(|(&b, v)| (b, v.rank.clone())).collect(),
    };
    let neurons = match opts.control {
        Control::RandomNeurons(s) => random_neurons(n_rows, k, s)?,
        _ => value::top_aligned(&value::value_cosines(model, &rank)?, k)?,
    };
    Ok((vecs, neurons))
}

/// `value-damp`: the chosen neurons' up rows scaled by `1 − strength`.
fn plan_value_damp(
    model: &ModelFile,
    probe: &Probe,
    opts: &RecipeOptions,
    n_rows: &[usize],
    info: serde_json::Value,
) -> Result<EditPlan> {
    let (_, neurons) = value_neurons(model, probe, opts, n_rows)?;
    let f = value::damp_factors(&neurons, n_rows.len(), opts.strength);
    scale_rows_plan(model, Matrix::Up, &f, info)
}

/// `value-gate`: the chosen neurons' gate rows pushed away from the probe's edit direction
/// (a random one for the random-direction control).
fn plan_value_gate(
    model: &ModelFile,
    probe: &Probe,
    opts: &RecipeOptions,
    n_rows: &[usize],
    info: serde_json::Value,
) -> Result<EditPlan> {
    let (vecs, neurons) = value_neurons(model, probe, opts, n_rows)?;
    let edit: BTreeMap<usize, Vec<f32>> = match opts.control {
        Control::RandomDirection(s) => vecs
            .iter()
            .map(|(&b, v)| (b, random_direction(v.edit.len(), 1.0, s)))
            .collect(),
        _ => vecs.into_iter().map(|(b, v)| (b, v.edit)).collect(),
    };
    value::gate_plan(model, &neurons, &edit, opts.strength, info)
}

/// `aura`: every neuron damped by its activation AUC (shuffled within blocks for the
/// random-neuron control).
fn plan_aura(
    model: &ModelFile,
    measured: &Measured<'_>,
    opts: &RecipeOptions,
    n_rows: &[usize],
    info: serde_json::Value,
) -> Result<EditPlan> {
    let Some(acts) = measured.neurons else {
        bail!("recipe aura needs pooled neuron activations on labelled text");
    };
    let aucs = aura::neuron_aucs(acts, n_rows, measured.labels)?;
    let f = aura::damp_factors(&aucs, opts.strength);
    let f = match opts.control {
        Control::None => f,
        Control::RandomNeurons(s) => shuffle_within_blocks(&f, n_rows, s),
        Control::RandomDirection(_) => return no_control(opts.recipe, "random-direction"),
    };
    scale_rows_plan(model, Matrix::Up, &f, info)
}

/// `profs`: each edited block's rank-k subspace of the residual states projected out of
/// `ffn_down` (for the random-direction control, a random subspace with a change of the
/// same size, [`profs::matched_random_subspace`]).
fn plan_profs(
    model: &ModelFile,
    probe: &Probe,
    measured: &Measured<'_>,
    opts: &RecipeOptions,
    blocks: usize,
    info: serde_json::Value,
) -> Result<EditPlan> {
    let Some(res) = measured.residuals else {
        bail!("recipe profs needs pooled residual states on labelled text");
    };
    let edit_blocks = opts.blocks.clone().unwrap_or_else(|| upper_half(blocks));
    let d = probe.width();
    let mut subspaces = Vec::new();
    for &b in &edit_blocks {
        let Some(Some(x)) = res.get(b) else {
            bail!("profs: no residual states measured after block {b}");
        };
        let (x1, x0) = split_by_label(x, d, measured.labels)?;
        let toxic = profs::subspace(&x1, &x0, d, opts.rank)?;
        let u = match opts.control {
            Control::None => toxic,
            Control::RandomDirection(s) => {
                profs::matched_random_subspace(model, b, &toxic, s.wrapping_add(b as u64))?
            }
            Control::RandomNeurons(_) => return no_control(opts.recipe, "random-neuron"),
        };
        subspaces.push((b, u));
    }
    profs::projection_plan(model, &subspaces, opts.strength, info)
}

/// `distributed`: the probe's edit direction (a random one for the random-direction
/// control) spread over every gate row.
fn plan_distributed(
    model: &ModelFile,
    probe: &Probe,
    opts: &RecipeOptions,
    blocks: usize,
    info: serde_json::Value,
) -> Result<EditPlan> {
    let vecs = probe_vectors(model, probe, opts.direction, blocks)?;
    let dirs: BTreeMap<usize, Vec<f32>> = match opts.control {
        Control::None => vecs.into_iter().map(|(b, v)| (b, v.edit)).collect(),
        Control::RandomDirection(s) => vecs
            .iter()
            .map(|(&b, v)| (b, random_direction(v.edit.len(), 1.0, s)))
            .collect(),
        Control::RandomNeurons(_) => return no_control(opts.recipe, "random-neuron"),
    };
    distributed::spread_plan(model, &dirs, opts.strength as f64, info)
}

/// Rows of neuron matrices (gate, up) that `plan` changes, per block.
fn recipe_report(
    model: &ModelFile,
    gates: &[MatrixTensor],
    plan: &EditPlan,
) -> Result<RecipeReport> {
    let mut per_block = vec![0usize; gates.len()];
    let neuron_tensors: BTreeMap<String, usize> = gates
        .iter()
        .map(|t| (t.name.clone(), t.block))
        .chain(
            model
                .matrix_tensors(Matrix::Up)?
                .into_iter()
                .map(|t| (t.name, t.block)),
        )
        .collect();
    for r in &plan.rows {
        if let Some(&b) = neuron_tensors.get(&r.tensor) {
            per_block[b] += 1;
        }
    }
    Ok(RecipeReport {
        neurons: per_block.iter().sum(),
        per_block,
        delta_norm: plan.delta_norm(),
    })
}

/// Per block, the probe's ranking vector in the residual stream (`g_p ⊙ w`) and its edit
/// vector in the gate rows' stored space (norm-aware, see [`super::directions`]).
fn probe_vectors(
    model: &ModelFile,
    probe: &Probe,
    which: Direction,
    blocks: usize,
) -> Result<BTreeMap<usize, BlockVectors>> {
    let mut out = BTreeMap::new();
    for b in 0..blocks {
        if let Some(v) = block_vectors(model, probe, which, Matrix::Gate, b, true)? {
            out.insert(b, v);
        }
    }
    if out.is_empty() {
        bail!("the probe reads none of the model's blocks");
    }
    Ok(out)
}

/// The rows of `x` (`n × d`) with label 1, then those with label 0.
fn split_by_label(x: &[f32], d: usize, labels: &[u8]) -> Result<(Vec<f32>, Vec<f32>)> {
    if x.len() != labels.len() * d {
        bail!(
            "{} pooled values for {} texts of width {d}",
            x.len(),
            labels.len()
        );
    }
    let (mut x1, mut x0) = (Vec::new(), Vec::new());
    for (r, &l) in x.chunks_exact(d).zip(labels) {
        let dst = if l == 1 { &mut x1 } else { &mut x0 };
        dst.extend_from_slice(r);
    }
    Ok((x1, x0))
}
