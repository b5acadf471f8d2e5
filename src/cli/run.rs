//! `scalpel run [MODEL] [--config run.toml]`: the whole method with controls, one report
//! folder. Settings come from the defaults (the paper's recipe, quick evaluation), then the
//! TOML file, then these flags.

use anyhow::{Context, Result};
use clap::Args;
use scalpel::assets::FetchOptions;
use scalpel::eval::suites::Scorers;
use scalpel::pipeline::{self, Behaviour, Inputs, Profile, RunConfig};
use scalpel::surgery::recipes::Recipe;
use std::path::{Path, PathBuf};

/// Flags shared by `run`, `sweep` and `ablate`: each overrides the config file.
#[derive(Args, Debug, Default)]
pub struct ConfigArgs {
    /// Model (GGUF file or HF folder); default: the default model (fetched, verified).
    pub model: Option<PathBuf>,
    /// TOML file with any `RunConfig` field (see README); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Behaviour to remove.
    #[arg(long, value_enum)]
    pub behaviour: Option<Behaviour>,
    /// Output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// α of the edit.
    #[arg(long, allow_negative_numbers = true)]
    pub alpha: Option<f32>,
    /// Edit exactly K gate rows.
    #[arg(long, value_name = "K", conflicts_with = "fraction")]
    pub top_k: Option<usize>,
    /// Edit this fraction of all gate rows (default: the paper's 4.65 %).
    #[arg(long)]
    pub fraction: Option<f64>,
    /// Probe point: final (the paper), N (residual after block N) or mlp:N.
    #[arg(long)]
    pub layer: Option<String>,
    /// Quick evaluation (the default): subsets sized for minutes on two cores.
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// The paper's full evaluation protocol.
    #[arg(long)]
    pub full: bool,
    /// At most N prompts per generative suite.
    #[arg(long)]
    pub limit: Option<usize>,
    /// ToxiGen prompts per target group.
    #[arg(long)]
    pub toxigen_per_group: Option<usize>,
    /// WikiText-2 perplexity windows.
    #[arg(long)]
    pub ppl_windows: Option<usize>,
    /// KL windows.
    #[arg(long)]
    pub kl_windows: Option<usize>,
    /// Replace the suite list (e.g. `rtp,ppl,kl`).
    #[arg(long)]
    pub suites: Option<String>,
    /// Labelled TSV replacing the behaviour's dataset.
    #[arg(long)]
    pub data_file: Option<PathBuf>,
    /// Seed of the probe, sampling and bootstrap.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seed of the controls.
    #[arg(long)]
    pub control_seed: Option<u64>,
    /// Do not read or write the activation and evaluation caches.
    #[arg(long)]
    pub no_cache: bool,
    /// The localisation + edit: paper (default), value-damp, value-gate, aura, profs,
    /// distributed (see docs/recipes.md).
    #[arg(long, value_enum)]
    pub recipe: Option<Recipe>,
    /// The recipe's strength (default: its published setting; see docs/recipes.md).
    #[arg(long, allow_negative_numbers = true)]
    pub strength: Option<f32>,
    /// Then remove this behaviour too, on the edited model with a probe trained on it
    /// (repeatable; `run` only).
    #[arg(long, value_enum)]
    pub then: Vec<Behaviour>,
}

impl ConfigArgs {
    /// Defaults, then the file, then the flags.
    pub fn resolve(&self, default_out: &str) -> Result<RunConfig> {
        let mut c = match &self.config {
            Some(p) => RunConfig::from_toml_file(p)?,
            None => RunConfig {
                out: PathBuf::from(default_out),
                ..RunConfig::default()
            },
        };
        macro_rules! set {
            ($($f:ident),*) => {$(if let Some(v) = &self.$f { c.$f = v.clone().into(); })*};
        }
        set!(model, data_file, suites, limit, top_k);
        set!(toxigen_per_group, ppl_windows, kl_windows);
        if let Some(v) = self.behaviour {
            c.behaviour = v;
        }
        if let Some(v) = &self.out {
            c.out = v.clone();
        }
        if let Some(v) = self.alpha {
            c.alpha = v;
        }
        if let Some(v) = self.recipe {
            c.recipe = v;
        }
        if let Some(v) = self.strength {
            c.strength = Some(v);
        }
        if let Some(v) = self.fraction {
            c.fraction = v;
            c.top_k = None;
        }
        if let Some(v) = &self.layer {
            c.layer = v.clone();
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(v) = self.control_seed {
            c.control_seed = v;
        }
        if self.full {
            c.profile = Profile::Full;
        } else if self.quick {
            c.profile = Profile::Quick;
        }
        if self.no_cache {
            c.cache = false;
        }
        if !self.then.is_empty() {
            c.then = self.then.clone();
        }
        c.validate()?;
        let ins: Vec<&Path> = [
            c.model.as_deref(),
            c.data_file.as_deref(),
            c.prompts.as_deref(),
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
pub fn run(a: &RunArgs) -> Result<()> {
    let cfg = a.cfg.resolve("runs/detox")?;
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
pub fn sweep(a: &SweepArgs) -> Result<()> {
    use scalpel::pipeline::sweep::{parse_list, sweep, SweepOptions};
    let cfg = a.cfg.resolve("runs/sweep")?;
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
pub fn ablate(a: &AblateArgs) -> Result<()> {
    let cfg = a.cfg.resolve("runs/ablate")?;
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
    /// Skip the controls.
    #[arg(long)]
    pub no_controls: bool,
    /// Skip the prompting baseline (the same prompts after a politeness instruction).
    #[arg(long)]
    pub no_prompting: bool,
}

/// Runs `scalpel compare`.
pub fn compare(a: &CompareArgs) -> Result<()> {
    use scalpel::pipeline::compare::{compare, parse_grids, CompareOptions};
    use scalpel::pipeline::sweep::parse_list;
    let cfg = a.cfg.resolve("runs/compare")?;
    let opts = CompareOptions {
        grids: parse_grids(&a.recipes)?,
        controls: !a.no_controls,
        kl_targets: parse_list(&a.kl_targets, "--kl-targets")?,
        ppl_targets: parse_list(&a.ppl_targets, "--ppl-targets")?,
        prompting: !a.no_prompting,
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
