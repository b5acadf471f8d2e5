//! `scalpel edit MODEL PROBE --alpha A --out OUT [--patch PATCH]`: select, edit, write.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use scalpel::formats::io::CopyAhead;
use scalpel::formats::io::{check_not_input, check_outputs, OutKind};
use scalpel::surgery::adapter::{Adapter, AdapterFormat, DEFAULT_MAX_RANK};
use scalpel::surgery::{
    copy_ahead, plan_edit, write_edited_ahead, EditOptions, SelectOptions, WriteOptions,
};

use scalpel::probe::Probe;
use scalpel::surgery::recipes::{Recipe, RecipeSettings};
use scalpel::surgery::{EditPlan, ModelFile};

use super::select::{peak_rss_kib, per_block_line, run_selection};

/// Arguments of `scalpel edit`.
#[derive(Args, Debug)]
pub struct EditArgs {
    /// A GGUF file or a Hugging Face folder.
    pub model: PathBuf,
    /// The probe file (safetensors, weight [2, d]).
    pub probe: PathBuf,
    #[command(flatten)]
    pub edit: EditOptions,
    #[command(flatten)]
    pub sel: SelectOptions,
    /// GGUF: store edited tensors as F32 instead of re-quantising the edited rows.
    #[arg(long)]
    pub keep_precision: bool,
    /// Output model (GGUF file or HF folder, like the input); optional with --adapter.
    #[arg(long, required_unless_present = "adapter")]
    pub out: Option<PathBuf>,
    /// Also (or only) write the edit as a LoRA adapter on the unedited model: a GGUF file
    /// for llama.cpp / ollama when OUT ends in .gguf, else a PEFT folder.
    #[arg(long, value_name = "OUT")]
    pub adapter: Option<PathBuf>,
    /// Refuse an adapter whose exact rank per matrix is above this.
    #[arg(long, default_value_t = DEFAULT_MAX_RANK)]
    pub max_rank: usize,
    /// Also write the reversible patch here.
    #[arg(long)]
    pub patch: Option<PathBuf>,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub recipe: RecipeSettings,
    /// Control of a recipe: the same number of neurons with the same changes, at random.
    #[arg(long, value_name = "SEED")]
    pub random_neurons: Option<u64>,
    /// Labelled TSV (`label<TAB>text`, 1 = undesirable) that `aura` and `profs` measure on.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Tokens per text of `--data`.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
}

/// Runs `scalpel edit`.
pub fn run(a: &EditArgs) -> Result<()> {
    if a.recipe.recipe != Recipe::Paper {
        return run_recipe(a);
    }
    if a.random_neurons.is_some() || a.data.is_some() || a.recipe.strength.is_some() {
        anyhow::bail!("--random-neurons, --data and --strength belong to --recipe; the paper's edit takes --selection random, --alpha");
    }
    let t0 = Instant::now();
    check_edit_outputs(a)?;
    let ahead = start_copy(a)?;
    let (model, probe, sel) = run_selection(&a.model, &a.probe, &a.sel)?;
    let t_sel = t0.elapsed().as_secs_f64();
    let plan = plan_edit(&sel, &probe, &a.edit)?;
    let what = format!("K = {} of {} rows", sel.k, sel.total_rows);
    write_outputs(a, &model, &plan, &what, ahead)?;
    println!("per block    {}", per_block_line(&sel));
    println!(
        "wall {:.2} s (selection {:.2} s), peak RSS {} KiB",
        t0.elapsed().as_secs_f64(),
        t_sel,
        peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}

/// `scalpel edit --recipe NAME` for every recipe but the paper's.
fn run_recipe(a: &EditArgs) -> Result<()> {
    let t0 = Instant::now();
    check_edit_outputs(a)?;
    let ahead = start_copy(a)?;
    let probe = Probe::load(&a.probe)?;
    let model = ModelFile::open(&a.model)?;
    let (plan, what) = super::edit_recipe::recipe_plan(a, &model, &probe)?;
    write_outputs(a, &model, &plan, &what, ahead)?;
    println!(
        "wall {:.2} s, peak RSS {} KiB",
        t0.elapsed().as_secs_f64(),
        peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}

/// Every output checked before any work: the model, its patch and a GGUF adapter go
/// through the shared output checks; a PEFT adapter folder must at least not be an input.
fn check_edit_outputs(a: &EditArgs) -> Result<()> {
    let inputs = [a.model.as_path(), a.probe.as_path()];
    let mut outs = Vec::new();
    outs.extend(a.out.as_deref().map(|p| (p, OutKind::of_model(&a.model))));
    outs.extend(a.patch.as_deref().map(|p| (p, OutKind::File)));
    if let Some(ad) = a.adapter.as_deref() {
        match AdapterFormat::from_path(ad) {
            AdapterFormat::Gguf => outs.push((ad, OutKind::File)),
            AdapterFormat::Peft => check_not_input(&inputs, ad)?,
        }
    }
    check_outputs(&inputs, &outs, a.force)
}

fn write_options(a: &EditArgs) -> WriteOptions {
    WriteOptions {
        keep_precision: a.keep_precision,
        force: a.force,
        patch: a.patch.clone(),
    }
}

/// The copy of the model to `--out`, started before selection so that the two overlap.
fn start_copy(a: &EditArgs) -> Result<Option<CopyAhead>> {
    match &a.out {
        Some(out) => copy_ahead(&a.model, out, &write_options(a)),
        None => Ok(None),
    }
}

/// Writes the edited model (with its patch) and the adapter, whichever were asked for.
fn write_outputs(
    a: &EditArgs,
    model: &ModelFile,
    plan: &EditPlan,
    what: &str,
    ahead: Option<CopyAhead>,
) -> Result<()> {
    match &a.out {
        Some(out) => write_model(a, model, plan, out, what, ahead)?,
        None => println!("{what}"),
    }
    if let Some(path) = &a.adapter {
        let ad = Adapter::from_plan(model, plan, a.max_rank)?;
        report_adapter(&ad, path, a.force)?;
    }
    Ok(())
}

fn write_model(
    a: &EditArgs,
    model: &ModelFile,
    plan: &EditPlan,
    out: &std::path::Path,
    what: &str,
    ahead: Option<CopyAhead>,
) -> Result<()> {
    let r = write_edited_ahead(model, plan, out, &write_options(a), ahead)?;
    println!("edited {} rows in {} tensors ({what})", r.rows, r.tensors);
    println!(
        "change norm  intended {:.4}, stored {:.4} (error norm {:.4}, max |stored − intended| {:.3e})",
        plan.delta_norm(),
        r.stored_change_norm,
        r.error_norm,
        r.max_abs_error
    );
    println!("wrote        {} ({} bytes)", out.display(), r.bytes_written);
    if let (Some(p), Some(n)) = (&a.patch, r.patch_bytes) {
        println!(
            "patch        {} ({} bytes, {} rows)",
            p.display(),
            n,
            r.patch_rows
        );
    }
    Ok(())
}

/// Writes an adapter (format from the path) and prints what it holds.
pub fn report_adapter(ad: &Adapter, path: &std::path::Path, force: bool) -> Result<()> {
    let format = AdapterFormat::from_path(path);
    let bytes = ad.write(path, format, force)?;
    let ranks: Vec<usize> = ad.matrices.iter().map(|(_, m)| m.rank).collect();
    println!(
        "adapter      {} ({} {}, {} bytes): {} matrices, rank {} (exact ranks {}..={}), max |B·A − Δ| {:.3e}",
        path.display(),
        match format {
            AdapterFormat::Gguf => "GGUF LoRA",
            AdapterFormat::Peft => "PEFT folder",
        },
        if ad.requantised { "of the re-quantised rows" } else { "of the edit" },
        bytes,
        ad.matrices.len(),
        ad.rank(),
        ranks.iter().min().unwrap_or(&0),
        ranks.iter().max().unwrap_or(&0),
        ad.max_error()
    );
    Ok(())
}
