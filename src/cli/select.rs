//! `scalpel select MODEL PROBE --out plan.json`: rank gate rows against the probe and write
//! the selection plan.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use scalpel::formats::io::{check_outputs, write_file, OutKind};
use scalpel::probe::Probe;
use scalpel::surgery::{select, ModelFile, Ranking, SelectOptions, Selection};

/// Arguments of `scalpel select`.
#[derive(Args, Debug)]
pub struct SelectArgs {
    /// A GGUF file or a Hugging Face folder.
    pub model: PathBuf,
    /// The probe file (safetensors, weight [2, d]).
    pub probe: PathBuf,
    #[command(flatten)]
    pub sel: SelectOptions,
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
    opts: &SelectOptions,
) -> Result<(ModelFile, Probe, Selection)> {
    if opts.ranking == Ranking::Activation {
        bail!("--selection activation needs labelled activations: use `scalpel run` or `scalpel ablate` with ranking = \"activation\" in [select]");
    }
    let probe = Probe::load(probe)?;
    let m = ModelFile::open(model)?;
    let cache = scalpel::assets::default_cache_dir().ok();
    if let Some(w) = probe.other_model_warning(model, cache.as_deref())? {
        eprintln!("WARNING {w}");
    }
    let s = select(&m, &probe, opts)?;
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
