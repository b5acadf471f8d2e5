//! `scalpel select MODEL PROBE --out plan.json`: rank gate rows against the probe and write
//! the selection plan.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use scalpel::formats::io::{check_outputs, write_file, OutKind};
use scalpel::probe::{Direction, Probe};
use scalpel::surgery::select::{parse_blocks, PAPER_FRACTION};
use scalpel::surgery::{select, Count, Matrix, ModelFile, Ranking, SelectOptions, Selection};

/// Selection options shared by `select` and `edit`.
#[derive(Args, Debug)]
pub struct SelectionArgs {
    /// Select exactly K rows.
    #[arg(long, value_name = "K", conflicts_with = "fraction")]
    pub top_k: Option<usize>,
    /// Select this fraction of all rows (default: the paper's 16384/352256 ≈ 0.0465).
    #[arg(long, value_name = "F")]
    pub fraction: Option<f64>,
    /// Probe vector: W[1] (undesirable, the paper) or W[1] − W[0].
    #[arg(long, value_enum, default_value_t)]
    pub direction: Direction,
    /// Matrix whose rows are ranked and edited.
    #[arg(long, value_enum, default_value_t)]
    pub matrix: Matrix,
    /// Which rows: most anti-aligned (the paper), most aligned, or random.
    #[arg(long, value_enum, default_value_t)]
    pub selection: Ranking,
    /// Seed of `--selection random`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only these blocks may hold selected rows, e.g. `0-6,15-29`.
    #[arg(long, value_name = "LIST")]
    pub blocks: Option<String>,
    /// Rank rows through the RMSNorm gains (block i's row as g_i ⊙ r against g_probe ⊙ w)
    /// and map the edit back through the gain.
    #[arg(long)]
    pub norm_aware: bool,
}

impl SelectionArgs {
    /// The library options.
    pub fn options(&self) -> Result<SelectOptions> {
        let count = match (self.top_k, self.fraction) {
            (Some(k), _) => Count::Rows(k),
            (None, Some(f)) => Count::Fraction(f),
            (None, None) => Count::Fraction(PAPER_FRACTION),
        };
        if self.selection == Ranking::Activation {
            bail!("--selection activation needs labelled activations: use `scalpel run` or `scalpel ablate` with ranking = \"activation\"");
        }
        Ok(SelectOptions {
            count,
            direction: self.direction,
            matrix: self.matrix,
            ranking: self.selection,
            seed: self.seed,
            blocks: self.blocks.as_deref().map(parse_blocks).transpose()?,
            norm_aware: self.norm_aware,
        })
    }
}

/// Arguments of `scalpel select`.
#[derive(Args, Debug)]
pub struct SelectArgs {
    /// A GGUF file or a Hugging Face folder.
    pub model: PathBuf,
    /// The probe file (safetensors, weight [2, d]).
    pub probe: PathBuf,
    #[command(flatten)]
    pub sel: SelectionArgs,
    /// Where to write the plan (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite an existing plan.
    #[arg(long)]
    pub force: bool,
}

/// Loads the model and probe and runs the selection.
pub fn run_selection(
    model: &Path,
    probe: &Path,
    sel: &SelectionArgs,
) -> Result<(ModelFile, Probe, Selection)> {
    let opts = sel.options()?;
    let probe = Probe::load(probe)?;
    let m = ModelFile::open(model)?;
    let cache = scalpel::assets::default_cache_dir().ok();
    if let Some(w) = probe.other_model_warning(model, cache.as_deref())? {
        eprintln!("WARNING {w}");
    }
    let s = select(&m, &probe, &opts)?;
    Ok((m, probe, s))
}

/// Rows selected per block, on one line.
pub fn per_block_line(s: &Selection) -> String {
    s.per_block
        .iter()
        .map(|b| format!("{}:{}", b.block, b.selected))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Peak resident memory of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `scalpel select`.
pub fn run(a: &SelectArgs) -> Result<()> {
    let t0 = Instant::now();
    check_outputs(
        &[a.model.as_path(), a.probe.as_path()],
        &[(a.out.as_path(), OutKind::File)],
        a.force,
    )?;
    let (_, _, s) = run_selection(&a.model, &a.probe, &a.sel)?;
    let json = serde_json::to_string_pretty(&s)?;
    write_file(&a.out, json.as_bytes(), a.force)?;
    let (lo, hi) = (
        s.rows
            .iter()
            .map(|r| r.cosine)
            .fold(f32::INFINITY, f32::min),
        s.rows
            .iter()
            .map(|r| r.cosine)
            .fold(f32::NEG_INFINITY, f32::max),
    );
    println!(
        "selected {} of {} rows ({:.2} %), cosine {lo:.4} .. {hi:.4}",
        s.k,
        s.total_rows,
        100.0 * s.k as f64 / s.total_rows as f64
    );
    println!("per block  {}", per_block_line(&s));
    println!("plan       {}", a.out.display());
    println!(
        "wall {:.2} s, peak RSS {} KiB",
        t0.elapsed().as_secs_f64(),
        peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}
