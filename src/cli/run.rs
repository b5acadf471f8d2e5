//! `scalpel run [MODEL] [--config run.toml]`: the whole method with controls, one report
//! folder. Settings come from the defaults (the paper's recipe, quick evaluation), then the
//! TOML file, then the flags given (each a `RunConfig` setting, declared there).

use anyhow::{Context, Result};
use clap::{ArgMatches, Args};
use scalpel::assets::FetchOptions;
use scalpel::eval::suites::Scorers;
use scalpel::pipeline::{self, Inputs, Profile, RunConfig};
use std::path::{Path, PathBuf};

/// Flags shared by `run`, `sweep`, `ablate` and `compare`: every setting of a run config
/// (see run.example.toml), each overriding the file.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// TOML file with any `RunConfig` setting (see run.example.toml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Shorthand for `--profile quick` (the default): subsets sized for minutes on two cores.
    #[arg(long, conflicts_with_all = ["full", "profile"])]
    pub quick: bool,
    /// Shorthand for `--profile full`: the paper's full evaluation protocol.
    #[arg(long, conflicts_with = "profile")]
    pub full: bool,
    #[command(flatten)]
    pub settings: RunConfig,
}

impl ConfigArgs {
    /// Defaults, then the file, then the flags given on the command line (`matches`).
    pub fn resolve(&self, matches: &ArgMatches, default_out: &str) -> Result<RunConfig> {
        let mut c = match &self.config {
            Some(p) => {
                let (c, warnings) = RunConfig::from_toml_file(p)?;
                for w in warnings {
                    eprintln!("WARNING {w}");
                }
                c
            }
            None => RunConfig {
                out: PathBuf::from(default_out),
                ..RunConfig::default()
            },
        };
        scalpel::settings::overlay(&mut c, matches)?;
        if self.full {
            c.eval.profile = Profile::Full;
        } else if self.quick {
            c.eval.profile = Profile::Quick;
        }
        c.validate()?;
        let ins: Vec<&Path> = [
            c.model.as_deref(),
            c.data_file.as_deref(),
            c.eval.prompts.as_deref(),
            c.then_data_file.as_deref(),
            self.config.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        scalpel::formats::io::check_not_input(&ins, &c.out)?;
        Ok(c)
    }
}

/// Arguments of `scalpel run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    #[command(flatten)]
    pub serve: super::serve::EndpointArgs,
}

/// Runs `scalpel run`.
pub fn run(a: &RunArgs, m: &ArgMatches) -> Result<()> {
    let cfg = a.cfg.resolve(m, "runs/detox")?;
    let fetch = FetchOptions::from_env()?;
    let scorers = Scorers::load(&fetch).context("loading the scorers")?;
    let out = cfg.out.clone();
    let inputs = Inputs {
        fetch: &fetch,
        scorers: &scorers,
        dataset: None,
    };
    if a.serve.adapters_only {
        return print_prepared(&pipeline::adapters::prepare(cfg, inputs)?);
    }
    let s = pipeline::run_served(cfg, inputs, a.serve.serving().as_ref())?;
    println!("{}", scalpel::pipeline::rows::table(&s.rows));
    println!("{}", s.verdict.text);
    for w in &s.warnings {
        eprintln!("WARNING {w}");
    }
    println!(
        "wall {:.0} s ({}); report {}",
        s.wall_secs,
        scalpel::progress::totals_line(&s.timings),
        out.join("summary.md").display()
    );
    Ok(())
}

fn print_prepared(p: &pipeline::adapters::Prepared) -> Result<()> {
    for (label, path, bytes) in &p.adapters {
        println!("{label}: {} ({bytes} bytes)", path.display());
    }
    if let Some(c) = &p.server_config {
        println!(
            "server config {}: python3 scripts/llamacpp_server.py --config_file {}; then scalpel run … --endpoint http://127.0.0.1:8080",
            c.display(),
            c.display()
        );
    }
    Ok(())
}

/// Arguments of `scalpel sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// α values.
    #[arg(long, default_value = "1.08,4,8")]
    pub alphas: String,
    /// K as fractions of all gate rows (half, once and twice the paper's 4.65 %).
    #[arg(long, default_value = "0.02325,0.0465,0.093")]
    pub fractions: String,
    /// Skip the two controls at every grid point.
    #[arg(long)]
    pub no_controls: bool,
}

/// Runs `scalpel sweep`.
pub fn sweep(a: &SweepArgs, m: &ArgMatches) -> Result<()> {
    use scalpel::pipeline::sweep::{parse_list, sweep, SweepOptions};
    let cfg = a.cfg.resolve(m, "runs/sweep")?;
    let grid = SweepOptions {
        alphas: parse_list(&a.alphas, "--alphas")?,
        fractions: parse_list(&a.fractions, "--fractions")?,
        controls: !a.no_controls,
    };
    grid.validate()?;
    let fetch = FetchOptions::from_env()?;
    let scorers = Scorers::load(&fetch).context("loading the scorers")?;
    let out = cfg.out.clone();
    let inputs = Inputs {
        fetch: &fetch,
        scorers: &scorers,
        dataset: None,
    };
    let s = sweep(cfg, &grid, inputs)?;
    println!("{}", scalpel::pipeline::rows::table(&s.rows));
    println!("Pareto front: {}", s.front.join(", "));
    println!(
        "wall {:.0} s; report {}",
        s.wall_secs,
        out.join("sweep.md").display()
    );
    Ok(())
}

/// Arguments of `scalpel ablate`.
#[derive(Args, Debug)]
pub struct AblateArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
}

/// Runs `scalpel ablate`.
pub fn ablate(a: &AblateArgs, m: &ArgMatches) -> Result<()> {
    let cfg = a.cfg.resolve(m, "runs/ablate")?;
    let fetch = FetchOptions::from_env()?;
    let scorers = Scorers::load(&fetch).context("loading the scorers")?;
    let out = cfg.out.clone();
    let inputs = Inputs {
        fetch: &fetch,
        scorers: &scorers,
        dataset: None,
    };
    let s = scalpel::pipeline::ablate::ablate(cfg, inputs)?;
    println!("{}", scalpel::pipeline::rows::table(&s.rows));
    println!(
        "wall {:.0} s; report {}",
        s.wall_secs,
        out.join("ablate.md").display()
    );
    Ok(())
}

/// Arguments of `scalpel compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Recipes, each with an optional strength grid: `paper,value-damp=0.25:0.5,aura`.
    #[arg(
        long,
        default_value = "paper,value-damp,value-gate,aura,profs,distributed"
    )]
    pub recipes: String,
    /// KL targets (nats/token).
    #[arg(long, default_value = "0.05,0.1")]
    pub kl_targets: String,
    /// WikiText perplexity-ratio targets.
    #[arg(long, default_value = "1.05,1.1")]
    pub ppl_targets: String,
    /// Controls evaluated beside each recipe: `all`, `matched` (the one the verdict tests
    /// against: random neurons, else random direction), `none`.
    #[arg(long, value_enum, default_value = "all")]
    pub controls: scalpel::pipeline::compare::ControlSet,
    /// Skip the prompting baseline (the same prompts after a politeness instruction).
    #[arg(long)]
    pub no_prompting: bool,
    /// `halves`: even prompts choose the best recipe, odd ones are reported; `confirm`: a
    /// confirmation on fresh prompts (recipes and strengths chosen on other prompts), every
    /// prompt reported.
    #[arg(long, value_enum, default_value = "halves")]
    pub split: scalpel::pipeline::compare::PromptSplit,
    /// Strength grids of their own for some recipes' controls, e.g. `profs=4:8:16`: for a
    /// control that never reaches the recipe's damage at the recipe's strengths.
    #[arg(long, default_value = "")]
    pub control_grids: String,
}

/// Runs `scalpel compare`.
pub fn compare(a: &CompareArgs, m: &ArgMatches) -> Result<()> {
    use scalpel::pipeline::compare::{compare, parse_control_grids, parse_grids, CompareOptions};
    use scalpel::pipeline::sweep::parse_list;
    let cfg = a.cfg.resolve(m, "runs/compare")?;
    let grids = parse_grids(&a.recipes)?;
    let opts = CompareOptions {
        control_grids: parse_control_grids(&a.control_grids, &grids)?,
        grids,
        controls: a.controls,
        kl_targets: parse_list(&a.kl_targets, "--kl-targets")?,
        ppl_targets: parse_list(&a.ppl_targets, "--ppl-targets")?,
        prompting: !a.no_prompting,
        split: a.split,
    };
    let fetch = FetchOptions::from_env()?;
    let scorers = Scorers::load(&fetch).context("loading the scorers")?;
    let out = cfg.out.clone();
    let inputs = Inputs {
        fetch: &fetch,
        scorers: &scorers,
        dataset: None,
    };
    let s = compare(cfg, &opts, inputs)?;
    println!("{}", scalpel::pipeline::compare::render(&s));
    println!(
        "wall {:.0} s; report {}",
        s.wall_secs,
        out.join("compare.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use clap::{CommandFactory, FromArgMatches};
    use scalpel::probe::EpochChoice;
    use scalpel::surgery::Count;

    /// `scalpel ARGS` resolved as `run` / `sweep` resolve it.
    fn resolve(args: &[&str]) -> anyhow::Result<scalpel::pipeline::RunConfig> {
        let m = Cli::command().try_get_matches_from(args)?;
        let sub = m.subcommand().unwrap().1;
        match Cli::from_arg_matches(&m)?.command {
            Command::Run(a) => a.cfg.resolve(sub, "runs/detox"),
            Command::Sweep(a) => a.cfg.resolve(sub, "runs/sweep"),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_given_override_the_file_and_the_rest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(
            &file,
            "out = \"o\"\nseed = 4\n[probe]\nlr = 0.001\n[select]\ncount = { rows = 9 }\n[edit]\nalpha = 4.0\n[eval]\nlimit = 5\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = resolve(&["scalpel", "run", "--config", f]).unwrap();
        assert_eq!((c.edit.alpha, c.probe.lr, c.seed), (4.0, 1e-3, 4));
        assert_eq!(c.select.count, Count::Rows(9));
        assert_eq!(c.probe.epoch, EpochChoice::Epoch(9));
        assert!(c.cache);
        let c = resolve(&[
            "scalpel",
            "run",
            "--config",
            f,
            "--alpha",
            "1.08",
            "--fraction",
            "0.1",
            "--epoch",
            "last",
            "--no-cache",
            "--full",
            "--probe-batch-size",
            "8",
            "--select-seed",
            "3",
            "--suites",
            "rtp,kl",
        ])
        .unwrap();
        // A flag at its default value still overrides the file.
        assert_eq!((c.edit.alpha, c.probe.lr, c.seed), (1.08, 1e-3, 4));
        assert_eq!(c.select.count, Count::Fraction(0.1));
        assert_eq!((c.probe.epoch, c.probe.batch_size), (EpochChoice::Last, 8));
        assert_eq!((c.select.seed, c.eval.limit), (3, Some(5)));
        assert_eq!(c.eval.profile, scalpel::pipeline::Profile::Full);
        assert_eq!(c.eval.suites.unwrap().to_string(), "rtp,kl");
        assert!(!c.cache);
        let c = resolve(&["scalpel", "sweep", "m.gguf"]).unwrap();
        assert_eq!(c.out, std::path::PathBuf::from("runs/sweep"));
        assert_eq!(c.model.as_deref(), Some(std::path::Path::new("m.gguf")));
    }

    #[test]
    fn a_typo_in_a_value_fails_before_anything_loads() {
        let err = resolve(&["scalpel", "run", "nope.gguf", "--layer", "mlp:x"]).unwrap_err();
        assert!(
            err.to_string().contains("\"x\" is not a block number"),
            "{err}"
        );
        let err = resolve(&["scalpel", "run", "--top-k", "3", "--fraction", "0.1"]).unwrap_err();
        assert!(err.to_string().contains("cannot be used with"), "{err}");
    }
}
