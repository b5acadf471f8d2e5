//! Step 2 of the method: rank every row of every block's gate projection by its cosine with
//! the probe direction, globally, and keep the K most anti-aligned.
//!
//! Variants (see [`super::directions`]): a joint probe gives each block its own direction;
//! norm-aware ranking compares rows through the norm gains; [`Ranking::Activation`] ranks by
//! measured activations instead of by a cosine ([`super::activation`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rand::{rngs::StdRng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod cosines;

use super::directions::block_vectors;
use super::model::{Matrix, MatrixTensor, ModelFile};
use crate::probe::{Direction, Probe};
use cosines::cosines;

/// The paper's K for LLaMA-2-7B as a fraction: 16,384 of 32 × 11,008 gate rows (≈ 4.65 %).
pub const PAPER_FRACTION: f64 = 16384.0 / 352256.0;

/// How many rows to select: `--top-k K` or `--fraction F` on the command line, `count =
/// { rows = K }` or `count = { fraction = F }` in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Count {
    /// Exactly this many rows.
    Rows(usize),
    /// This fraction of all rows of the matrix in the whole model (not only the allowed
    /// blocks, so that leaving blocks out keeps the paper's K), rounded to nearest.
    Fraction(f64),
}

impl Default for Count {
    fn default() -> Self {
        Count::Fraction(PAPER_FRACTION)
    }
}

impl Count {
    /// Refuses no rows and fractions outside (0, 1] before any model is read.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Count::Rows(0) => bail!("top_k = 0: select at least 1 row"),
            Count::Fraction(f) if !(f > 0.0 && f <= 1.0) => {
                bail!("fraction = {f}: must be in (0, 1]")
            }
            _ => Ok(()),
        }
    }
}

// Two exclusive flags make one value, which clap's derive does not express: written out.
impl clap::FromArgMatches for Count {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut c = Count::default();
        c.update_from_arg_matches(m)?;
        Ok(c)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        if let Ok(Some(&k)) = m.try_get_one::<usize>("top_k") {
            *self = Count::Rows(k);
        } else if let Ok(Some(&f)) = m.try_get_one::<f64>("fraction") {
            *self = Count::Fraction(f);
        }
        Ok(())
    }
}

impl clap::Args for Count {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(
            clap::Arg::new("top_k")
                .long("top-k")
                .value_name("K")
                .value_parser(clap::value_parser!(usize))
                .conflicts_with("fraction")
                .help("Select exactly K rows"),
        )
        .arg(
            clap::Arg::new("fraction")
                .long("fraction")
                .value_name("F")
                .value_parser(clap::value_parser!(f64))
                .help(
                    "Select this fraction of all rows (default: the paper's 16384/352256 ≈ 0.0465)",
                ),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Which rows the ranking keeps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Ranking {
    /// Most negative cosine with the direction (the paper).
    #[default]
    AntiAligned,
    /// Most positive cosine (the paper's "aligned rows, subtract" ablation).
    Aligned,
    /// Uniformly random rows, seeded (the "random rows" control).
    Random,
    /// Lowest measured score first: the standardised class difference of the neuron's
    /// pooled pre-activation (most negative = least active on undesirable text relative to
    /// desirable text). Needs scores ([`select_with`]).
    Activation,
}

/// Options of [`select`]: the flags of `scalpel select` / `edit` and the `[select]` table of
/// a run config (recorded in the plan as they are).
#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct SelectOptions {
    /// K.
    #[command(flatten)]
    pub count: Count,
    /// Probe vector: W[1] (undesirable, the paper) or W[1] − W[0].
    #[arg(long, value_enum, default_value_t)]
    pub direction: Direction,
    /// Matrix whose rows are ranked and edited.
    #[arg(long, value_enum, default_value_t)]
    pub matrix: Matrix,
    /// Which rows: most anti-aligned (the paper), most aligned, random, or by measured
    /// activation (needs labelled activations: `run` / `ablate` only).
    #[arg(long = "selection", value_enum, default_value_t)]
    pub ranking: Ranking,
    /// Seed of `--selection random`.
    #[arg(
        id = "select_seed",
        long = "seed",
        value_name = "SEED",
        default_value_t
    )]
    pub seed: u64,
    /// Only these blocks may hold selected rows, e.g. `0-6,15-29` (default: all).
    #[arg(long, value_name = "LIST", value_parser = parse_blocks)]
    pub blocks: Option<BTreeSet<usize>>,
    /// Rank rows through the RMSNorm gains (block i's row as g_i ⊙ r against g_probe ⊙ w)
    /// and map the edit back through the gain.
    #[arg(long)]
    pub norm_aware: bool,
}

/// One selected row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SelectedRow {
    /// Block index.
    pub block: usize,
    /// Row (MLP neuron) in that block's matrix.
    pub row: usize,
    /// Cosine between the row and the direction (through the gains when norm-aware).
    pub cosine: f32,
    /// The ranking score when it is not the cosine ([`Ranking::Activation`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// Euclidean norm of the stored row.
    pub norm: f32,
}

/// Per-block summary of a selection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockCount {
    /// Block index.
    pub block: usize,
    /// The block's tensor.
    pub tensor: String,
    /// Rows in the tensor.
    pub rows: usize,
    /// Rows selected in it.
    pub selected: usize,
    /// Median Euclidean norm of its rows (the unit of [`super::edit::Scale::MedianRowNorm`]).
    pub median_norm: f32,
}

/// The result of [`select`]: the plan file's content (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    /// sha256 of the probe's weight and bias ([`probe_hash`]).
    pub probe_hash: String,
    /// The options used.
    pub options: SelectOptions,
    /// K, resolved to a count.
    pub k: usize,
    /// Rows of the matrix in the whole model.
    pub total_rows: usize,
    /// Per block, in block order.
    pub per_block: Vec<BlockCount>,
    /// Selected rows ordered by (block, row).
    pub rows: Vec<SelectedRow>,
    /// Per eligible block, the edit direction in the stored row's space (α not applied).
    #[serde(skip)]
    pub vectors: BTreeMap<usize, Arc<[f32]>>,
}

impl Selection {
    /// The tensor name of a block.
    pub fn tensor(&self, block: usize) -> &str {
        &self.per_block[block].tensor
    }
}

/// sha256 (hex) of a probe's weight then bias as little-endian f32: identifies the probe
/// independently of the file's metadata.
pub fn probe_hash(probe: &Probe) -> String {
    let mut h = Sha256::new();
    for x in probe.weight.iter().chain(&probe.bias) {
        h.update(x.to_le_bytes());
    }
    hex(&h.finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a direction is usable: finite and not zero.
pub(crate) fn check_direction(w: &[f32]) -> Result<f64> {
    if let Some(i) = w.iter().position(|x| !x.is_finite()) {
        bail!("probe direction has a non-finite value (NaN or ±inf) at index {i}");
    }
    let norm = w.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if norm == 0.0 {
        bail!("probe direction is the zero vector");
    }
    Ok(norm)
}

/// Resolves K against the model's row count, refusing 0 and more rows than are eligible.
fn resolve_count(count: Count, total: usize, eligible: usize) -> Result<usize> {
    let k = match count {
        Count::Rows(k) => k,
        Count::Fraction(f) => {
            if !(f > 0.0 && f <= 1.0) {
                bail!("fraction {f} is not in (0, 1]");
            }
            (f * total as f64).round() as usize
        }
    };
    if k == 0 {
        bail!("K = 0 selects no rows; use a positive --top-k or a larger --fraction");
    }
    if k > eligible {
        bail!("K = {k} is larger than the {eligible} rows available in the selected blocks");
    }
    Ok(k)
}

/// Ranks the rows of `opts.matrix` by cosine with the probe direction and keeps K.
///
/// Reads each block's tensor one row at a time (decoded to f32), blocks in parallel. Ties are broken
/// by (block, row), so the result is deterministic.
pub fn select(model: &ModelFile, probe: &Probe, opts: &SelectOptions) -> Result<Selection> {
    select_with(model, probe, opts, None)
}

/// [`select`] with measured per-row scores (`scores[block][row]`), which
/// [`Ranking::Activation`] ranks by.
pub fn select_with(
    model: &ModelFile,
    probe: &Probe,
    opts: &SelectOptions,
    scores: Option<&[Vec<f32>]>,
) -> Result<Selection> {
    let tensors = model.matrix_tensors(opts.matrix)?;
    check_inputs(model, probe, opts, scores, &tensors)?;
    let mut vectors = BTreeMap::new();
    let mut ranking_vectors = BTreeMap::new();
    for t in &tensors {
        let allowed = opts.blocks.as_ref().is_none_or(|s| s.contains(&t.block));
        if !allowed {
            continue;
        }
        if let Some(v) = block_vectors(
            model,
            probe,
            opts.direction,
            opts.matrix,
            t.block,
            opts.norm_aware,
        )? {
            check_direction(&v.edit).with_context(|| format!("block {}", t.block))?;
            vectors.insert(t.block, Arc::from(v.edit.clone()));
            ranking_vectors.insert(t.block, v);
        }
    }
    let total: usize = tensors.iter().map(|t| t.n_rows).sum();
    let eligible: usize = tensors
        .iter()
        .filter(|t| vectors.contains_key(&t.block))
        .map(|t| t.n_rows)
        .sum();
    let k = resolve_count(opts.count, total, eligible)?;

    // Blocks are independent: rank them in parallel (each result is the same as a serial
    // pass; blocks are concatenated in order).
    let per_tensor: Vec<(usize, Vec<SelectedRow>)> = tensors
        .par_iter()
        .filter_map(|t| ranking_vectors.get(&t.block).map(|v| (t, v)))
        .map(|(t, v)| {
            let rows = cosines(model, t, v)?
                .into_iter()
                .enumerate()
                .map(|(row, (cosine, norm))| SelectedRow {
                    block: t.block,
                    row,
                    cosine,
                    score: None,
                    norm,
                })
                .collect();
            model.release(&t.name);
            Ok((t.block, rows))
        })
        .collect::<Result<_>>()?;
    let mut all: Vec<SelectedRow> = Vec::with_capacity(eligible);
    let mut medians = vec![0f32; tensors.len()];
    for (block, mut rows) in per_tensor {
        let mut norms: Vec<f32> = rows.iter().map(|r| r.norm).collect();
        norms.sort_by(f32::total_cmp);
        medians[block] = norms.get(norms.len() / 2).copied().unwrap_or(0.0);
        if let (Ranking::Activation, Some(s)) = (opts.ranking, scores) {
            let s = &s[block];
            if s.len() != rows.len() {
                bail!(
                    "activation scores for block {block} have {} rows, the tensor {}",
                    s.len(),
                    rows.len()
                );
            }
            for r in &mut rows {
                r.score = Some(s[r.row]);
            }
        }
        all.extend(rows);
    }
    order(&mut all, opts.ranking, opts.seed, k);
    all.sort_by_key(key);
    let per_block = tensors
        .iter()
        .map(|t| BlockCount {
            block: t.block,
            tensor: t.name.clone(),
            rows: t.n_rows,
            selected: all.iter().filter(|r| r.block == t.block).count(),
            median_norm: medians[t.block],
        })
        .collect();
    Ok(Selection {
        probe_hash: probe_hash(probe),
        options: opts.clone(),
        k,
        total_rows: total,
        per_block,
        rows: all,
        vectors,
    })
}

/// Everything `select_with` can refuse before reading a row: the direction, the matrix, the
/// probe against the model's blocks and widths, the block list, the activation scores.
fn check_inputs(
    model: &ModelFile,
    probe: &Probe,
    opts: &SelectOptions,
    scores: Option<&[Vec<f32>]>,
    tensors: &[MatrixTensor],
) -> Result<()> {
    check_direction(&probe.direction(opts.direction))?;
    if opts.matrix == Matrix::Down {
        bail!("ffn_down has one row per hidden dimension, not per neuron: select gate or up rows");
    }
    probe
        .check_blocks(tensors.len())
        .with_context(|| format!("{}", model.path().display()))?;
    for t in tensors {
        probe
            .check_width(t.row_len)
            .with_context(|| format!("{}", model.path().display()))?;
    }
    if let Some(bs) = &opts.blocks {
        if let Some(&b) = bs.iter().find(|&&b| b >= tensors.len()) {
            bail!(
                "block {b} does not exist (the model has {} blocks)",
                tensors.len()
            );
        }
    }
    if opts.ranking == Ranking::Activation {
        match scores {
            None => bail!("activation ranking needs measured scores (pooled MLP inputs)"),
            Some(s) if s.len() != tensors.len() => bail!(
                "activation scores cover {} blocks, the model has {}",
                s.len(),
                tensors.len()
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Puts the `k` rows to edit first, in the ranking's order (ties broken by block and row;
/// `Random` samples `k` rows with `seed`), and drops the rest.
fn order(all: &mut Vec<SelectedRow>, ranking: Ranking, seed: u64, k: usize) {
    match ranking {
        Ranking::AntiAligned => first_k(all, k, |a, b| {
            a.cosine.total_cmp(&b.cosine).then(key(a).cmp(&key(b)))
        }),
        Ranking::Aligned => first_k(all, k, |a, b| {
            b.cosine.total_cmp(&a.cosine).then(key(a).cmp(&key(b)))
        }),
        Ranking::Activation => first_k(all, k, |a, b| {
            let (x, y) = (a.score.unwrap_or(0.0), b.score.unwrap_or(0.0));
            x.total_cmp(&y).then(key(a).cmp(&key(b)))
        }),
        Ranking::Random => {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut idx = rand::seq::index::sample(&mut rng, all.len(), k).into_vec();
            idx.sort_unstable();
            *all = idx.into_iter().map(|i| all[i]).collect();
        }
    }
    all.truncate(k);
}

/// The `k` first rows in `cmp`'s order, sorted: the order is total (ties broken by block
/// and row), so this is the full sort's prefix without sorting the other ~95 %.
fn first_k(
    all: &mut [SelectedRow],
    k: usize,
    cmp: impl Fn(&SelectedRow, &SelectedRow) -> std::cmp::Ordering,
) {
    if k > 0 && k < all.len() {
        all.select_nth_unstable_by(k - 1, &cmp);
    }
    let k = k.min(all.len());
    all[..k].sort_by(&cmp);
}

fn key(r: &SelectedRow) -> (usize, usize) {
    (r.block, r.row)
}

/// Parses a block list like `0-6,15-29` or `3,5` into a set.
pub fn parse_blocks(spec: &str) -> Result<BTreeSet<usize>> {
    let mut set = BTreeSet::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad block list {spec:?}: expected e.g. 0-6,15-29");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().with_context(bad)?,
                    b.trim().parse().with_context(bad)?,
                );
                if a > b {
                    bail!("bad block range {part:?}: start after end");
                }
                set.extend(a..=b);
            }
            None => {
                set.insert(part.parse().with_context(bad)?);
            }
        }
    }
    if set.is_empty() {
        bail!("empty block list {spec:?}");
    }
    Ok(set)
}
