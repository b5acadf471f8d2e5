//! `scalpel patch apply|revert MODEL PATCH --out OUT`: replay or undo an edit exactly.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use scalpel::formats::io::{check_outputs, OutKind};
use scalpel::formats::patch::Patch;
use scalpel::surgery::adapter::{Adapter, DEFAULT_MAX_RANK};
use scalpel::surgery::ModelFile;

/// Arguments of `scalpel patch`.
#[derive(Args, Debug)]
pub struct PatchArgs {
    #[command(subcommand)]
    pub action: PatchAction,
}

/// What to do with the patch.
#[derive(Subcommand, Debug)]
pub enum PatchAction {
    /// Apply a patch to the model it was made from.
    Apply(PatchIo),
    /// Undo a patch on the edited model: gives back the original bytes.
    Revert(PatchIo),
    /// Write the patch's edit as a LoRA adapter for the unedited model (GGUF when OUT ends
    /// in .gguf, else a PEFT folder); refuses an edit that is not of low rank.
    ToAdapter(ToAdapterArgs),
}

/// Arguments of `scalpel patch to-adapter`.
#[derive(Args, Debug)]
pub struct ToAdapterArgs {
    /// The patch file written by `scalpel edit --patch`.
    pub patch: PathBuf,
    /// The unedited model the patch was made from.
    #[arg(long)]
    pub model: PathBuf,
    /// The adapter: a .gguf file, or a PEFT folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Refuse an adapter whose exact rank per matrix is above this.
    #[arg(long, default_value_t = DEFAULT_MAX_RANK)]
    pub max_rank: usize,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Model, patch, output.
#[derive(Args, Debug)]
pub struct PatchIo {
    /// A GGUF file or a Hugging Face folder.
    pub model: PathBuf,
    /// The patch file written by `scalpel edit --patch`.
    pub patch: PathBuf,
    /// Output model.
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Runs `scalpel patch`.
pub fn run(a: &PatchArgs) -> Result<()> {
    let (io, forward) = match &a.action {
        PatchAction::Apply(io) => (io, true),
        PatchAction::Revert(io) => (io, false),
        PatchAction::ToAdapter(t) => {
            let p = Patch::load(&t.patch)?;
            let model = ModelFile::open(&t.model)?;
            let ad = Adapter::from_patch(&model, &p, t.max_rank)?;
            return super::edit::report_adapter(&ad, &t.out, t.force);
        }
    };
    check_outputs(
        &[io.model.as_path(), io.patch.as_path()],
        &[(io.out.as_path(), OutKind::of_model(&io.model))],
        io.force,
    )?;
    let p = Patch::load(&io.patch)?;
    p.write(&io.model, &io.out, io.force, forward)?;
    let rows: usize = p.tensors.iter().map(|t| t.rows.len()).sum();
    println!(
        "{} {} tensors ({rows} stored rows) → {}",
        if forward { "applied" } else { "reverted" },
        p.tensors.len(),
        io.out.display()
    );
    Ok(())
}
