//! How `scalpel probe` collects its features: scalpel's runtime on the model, or (`probe
//! train --endpoint`) a server's `/v1/embeddings`, for a model too large to load here
//! (docs/serving.md).

use anyhow::{ensure, Result};
use clap::Args;
use scalpel::assets::default_cache_dir;
use scalpel::data::Dataset;
use scalpel::probe::layer::LayerPart;
use scalpel::probe::remote::EmbeddingsEndpoint;
use scalpel::probe::{collect, Activations, CollectOptions, CollectStats, Layer, Pool};
use scalpel::runtime::{Model, Point, Precision};
use std::path::Path;
use std::time::Instant;

/// How hidden states are collected.
#[derive(Args, Debug)]
pub struct CollectArgs {
    /// Texts per forward pass.
    #[arg(long, default_value_t = 16)]
    pub forward_batch: usize,
    /// How the model's matrices are held (f32 measured fastest for batched collection).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Do not read or write the activation cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// Pooled states of `ds` at `points` from the local runtime (through the activation cache).
pub fn collect_all(
    model: &Model,
    ds: &Dataset,
    points: Vec<Point>,
    pool: Pool,
    max_tokens: usize,
    c: &CollectArgs,
) -> Result<(Vec<Activations>, CollectStats)> {
    let opts = CollectOptions {
        points,
        pool,
        max_tokens,
        batch_size: c.forward_batch,
        cache_dir: if c.no_cache {
            None
        } else {
            Some(default_cache_dir()?)
        },
        progress: true,
    };
    let (acts, stats) = collect(model, ds, &opts)?;
    let [n0, n1] = ds.counts();
    eprintln!(
        "{}: {} texts ({n0} desirable, {n1} undesirable), {} truncated at {max_tokens} tokens",
        ds.name,
        ds.items.len(),
        stats.truncated
    );
    if stats.computed_points > 0 {
        eprintln!(
            "collected {} point(s) over {} texts, {} tokens in {:.1} s: {:.1} texts/s, {:.0} tokens/s ({:?} weights, {} texts per batch)",
            stats.computed_points,
            stats.texts,
            stats.tokens,
            stats.secs,
            stats.texts as f64 / stats.secs.max(1e-9),
            stats.tokens as f64 / stats.secs.max(1e-9),
            model.precision,
            c.forward_batch
        );
    }
    if stats.cached_points > 0 {
        eprintln!(
            "{} point(s) read from the activation cache",
            stats.cached_points
        );
    }
    Ok((acts, stats))
}

/// Where `probe train` gets its features when a server computes them.
#[derive(Args, Debug, Default)]
pub struct RemoteArgs {
    /// Collect the final-norm states from this OpenAI-compatible `/v1/embeddings` server
    /// (llama.cpp `--embeddings` without a pooling type, or `--pooling mean`; vLLM's embedding
    /// task) instead of loading MODEL; MODEL is only hashed into the probe's metadata.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The `model` name sent to the endpoint (default: MODEL's path).
    #[arg(long, value_name = "NAME", requires = "endpoint")]
    pub served_model: Option<String>,
}

/// The pooled final-norm states of `ds` from the server `url` (one text per request).
pub fn collect_remote(
    a: &RemoteArgs,
    url: &str,
    model: &Path,
    layer: &Layer,
    ds: &Dataset,
    pool: Pool,
    max_tokens: usize,
) -> Result<(Vec<Activations>, CollectStats)> {
    ensure!(
        layer.parts() == [LayerPart::Final],
        "--layer {layer}: a server's embeddings are the final-norm states; --endpoint collects --layer final only"
    );
    let name = a
        .served_model
        .clone()
        .unwrap_or_else(|| model.display().to_string());
    let ep = EmbeddingsEndpoint::new(url, &name)?;
    let texts: Vec<String> = ds.items.iter().map(|(t, _)| t.clone()).collect();
    let pb = indicatif::ProgressBar::new(texts.len() as u64);
    let t0 = Instant::now();
    let acts = ep.collect(&texts, pool, max_tokens, Some(&pb))?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} texts from {url} (`{name}`) in {secs:.1} s",
        ds.name,
        texts.len()
    );
    let stats = CollectStats {
        texts: texts.len(),
        secs,
        computed_points: 1,
        ..CollectStats::default()
    };
    Ok((vec![acts], stats))
}
