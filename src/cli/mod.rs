//! Subcommand definitions and dispatch.

mod fetch;

use clap::{Parser, Subcommand};

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
    /// Fetch pinned models and datasets into the cache and print their paths.
    Fetch(fetch::FetchArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Fetch(args) => fetch::run(args),
    }
}
