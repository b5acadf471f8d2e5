//! Subcommand definitions and dispatch.

mod bench;
mod edit;
mod edit_recipe;
mod eval;
mod fetch;
mod generate;
mod inspect;
mod patch;
mod probe;
mod probe_collect;
mod run;
mod select;
mod serve;

use clap::{ArgMatches, Parser, Subcommand};

/// Model Surgery: edit a few gate-projection rows of an LLM to change a behaviour, and
/// measure that the behaviour changed and the model did not get worse.
#[derive(Parser, Debug)]
#[command(name = "scalpel", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// All subcommands; one file per subcommand under `src/cli/`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Evaluate a model (and its baseline): toxicity, refusal, sentiment, fluency, perplexity, KL.
    Eval(eval::EvalArgs),
    /// Fetch models and datasets into the cache (sha256-verified; a mirror can stand in).
    Fetch(fetch::FetchArgs),
    /// Show what a model holds: architecture, dims, metadata, tensors, tokenizer.
    Inspect(inspect::InspectArgs),
    /// Continue prompts with a model (greedy or sampled, batched).
    Generate(generate::GenerateArgs),
    /// Train, evaluate or apply the behaviour probe (step 1 of Model Surgery).
    Probe(probe::ProbeArgs),
    /// Measure the runtime's throughput (prompt, batched forward, generation).
    Bench(bench::BenchArgs),
    /// Rank gate rows against a probe and write the selection plan (JSON).
    Select(select::SelectArgs),
    /// Select rows, add α·w to them, write the edited model and (optionally) a patch.
    Edit(edit::EditArgs),
    /// Apply or revert a patch written by `edit`.
    Patch(patch::PatchArgs),
    /// The whole method: probe, select, edit, evaluate base, edited and two controls.
    Run(run::RunArgs),
    /// Grid over α and K with controls; table and trade-off plot with the Pareto front.
    Sweep(run::SweepArgs),
    /// The paper's ablations as one table on the same prompts and scorers.
    Ablate(run::AblateArgs),
    /// Every recipe and its controls swept over strength, compared at matched KL and
    /// perplexity ratio (table, JSON, plot).
    Compare(run::CompareArgs),
}

/// Runs one parsed command line; `matches` tells the run commands which flags were given
/// (those override the config file).
pub fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    // A mistyped or unavailable SCALPEL_ISA is an error here, not a silent fallback.
    scalpel::runtime::kernels::isa::requested()?;
    let sub = matches.subcommand().map_or(matches, |(_, m)| m);
    match cli.command {
        Command::Eval(a) => eval::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Generate(a) => generate::run(a),
        Command::Probe(a) => probe::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Select(a) => select::run(&a),
        Command::Edit(a) => edit::run(&a),
        Command::Patch(a) => patch::run(&a),
        Command::Run(a) => run::run(&a, sub),
        Command::Sweep(a) => run::sweep(&a, sub),
        Command::Ablate(a) => run::ablate(&a, sub),
        Command::Compare(a) => run::compare(&a, sub),
    }
}
