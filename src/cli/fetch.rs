//! `scalpel fetch`: download (or copy from a mirror) pinned assets into the cache.

use anyhow::{bail, Result};
use clap::Args;
use scalpel::assets::{self, FetchOptions};
use std::path::PathBuf;

/// Fetch pinned models and datasets into the cache and print their paths.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Asset names (a trailing `*` matches a prefix, e.g. `rtp-*`); default: the default model.
    pub names: Vec<String>,
    /// Fetch every asset in the catalog.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Directory that mirrors URL assets as `DIR/<host>/<url path>` (default: $SCALPEL_MIRROR).
    #[arg(long, value_name = "DIR")]
    pub mirror: Option<PathBuf>,
    /// List the catalog (name, licence, origin) instead of fetching.
    #[arg(long)]
    pub list: bool,
}

/// Runs `scalpel fetch`.
pub fn run(args: FetchArgs) -> Result<()> {
    if args.list {
        for a in assets::catalog() {
            println!("{}\t{}\t{}", a.name, a.licence, a.origin);
        }
        return Ok(());
    }
    let mut opts = FetchOptions::from_env()?;
    if args.mirror.is_some() {
        opts.mirror = args.mirror;
    }
    let selected: Vec<&assets::Asset> = if args.all {
        assets::catalog().iter().collect()
    } else if args.names.is_empty() {
        vec![assets::default_model()]
    } else {
        let mut v = Vec::new();
        for name in &args.names {
            let found = assets::matching(name);
            if found.is_empty() {
                bail!("no asset matches {name:?} (see `scalpel fetch --list`)");
            }
            v.extend(found);
        }
        v
    };
    for path in assets::fetch_all(&selected, &opts)? {
        println!("{}", path.display());
    }
    Ok(())
}
