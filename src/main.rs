//! The `scalpel` command line: a thin layer over the library. Each subcommand lives in its
//! own file under `src/cli/` and only parses arguments, calls the library and prints.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(err) = cli::run(args) {
        // One line, with the whole context chain ("what: where: why"), and a non-zero exit.
        // Some library errors (candle's) append a backtrace after a newline: keep line one.
        let chain: Vec<String> = err
            .chain()
            .map(|e| {
                e.to_string()
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
