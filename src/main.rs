//! The `scalpel` command line: a thin layer over the library. Each subcommand lives in its
//! own file under `src/cli/` and only parses arguments, calls the library and prints.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(err) = cli::run(args) {
        // One line, with the whole context chain ("what: where: why"), and a non-zero exit.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
