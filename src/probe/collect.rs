//! Activation collection: run the model over a labelled dataset in batches and keep one
//! pooled hidden-state vector per text at each requested [`Point`], cached on disk.
//!
//! Texts are tokenized (BOS added when the tokenizer wants one), cut to `max_tokens`, sorted
//! by length so that a batch pads little, and run right-padded; the mask keeps padding out of
//! the pooling. Several points (e.g. every block's MLP input) come from one forward pass.
//!
//! **Cache.** Each point's `n × d` matrix is stored as safetensors under
//! `<cache>/activations/`, named by the sha256 of a key made of the model fingerprint
//! ([`model_fingerprint`]), the model's precision, the dataset's content hash, the point, the
//! pooling and `max_tokens` — everything that changes the numbers, nothing that does not.

use super::file::serialize_f32;
use super::fingerprint::model_fingerprint;
use crate::data::Dataset;
use crate::formats::io::write_atomic;
use crate::runtime::overlap::two_at_a_time;
use crate::runtime::{Logits, Model, Point, Precision};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor, D};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How the states of a text's tokens become one vector.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// Mean over the real tokens, BOS included when the tokenizer adds it (the paper).
    #[default]
    Mean,
    /// The last real token's state.
    Last,
}

impl Pool {
    /// `mean` or `last`.
    pub fn name(self) -> &'static str {
        match self {
            Pool::Mean => "mean",
            Pool::Last => "last",
        }
    }
}

/// A point's canonical name: `final`, `residual:N` or `mlp:N` (blocks 0-based).
pub fn point_name(p: Point) -> String {
    match p {
        Point::FinalNorm => "final".into(),
        Point::Residual(i) => format!("residual:{i}"),
        Point::MlpInput(i) => format!("mlp:{i}"),
    }
}

/// Parses a [`super::Layer`] spelling (`final`, `N` / `residual:N`, `mlp:N`, `mlp:all`, or
/// a comma-separated list) and resolves it against the model's block count.
pub fn parse_points(s: &str, num_layers: usize) -> Result<Vec<Point>> {
    s.parse::<super::Layer>()?.points(num_layers)
}

/// Options of [`collect`].
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Where to read hidden states (one matrix each, all from the same forward passes).
    pub points: Vec<Point>,
    /// Pooling over tokens.
    pub pool: Pool,
    /// Texts longer than this many tokens (BOS included) are cut to their first
    /// `max_tokens` tokens.
    pub max_tokens: usize,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// The scalpel cache root (matrices go to `<root>/activations/`); `None` disables the
    /// cache.
    pub cache_dir: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            points: vec![Point::FinalNorm],
            pool: Pool::Mean,
            max_tokens: 128,
            batch_size: 16,
            cache_dir: None,
            progress: false,
        }
    }
}

/// The pooled hidden states of one point, one row per dataset item, in dataset order.
#[derive(Debug, Clone, PartialEq)]
pub struct Activations {
    /// Where they were read.
    pub point: Point,
    /// Width of a row (the hidden size).
    pub d: usize,
    /// `n × d`, row-major.
    pub data: Vec<f32>,
}

impl Activations {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
}

/// The blocks of `points` when every one is an MLP input (what a joint probe reads), in order.
pub fn mlp_blocks(points: &[Point]) -> Option<Vec<usize>> {
    points
        .iter()
        .map(|p| match p {
            Point::MlpInput(b) => Some(*b),
            _ => None,
        })
        .collect()
}

/// Text `i`'s features over several points, concatenated in order: what a joint probe
/// ([`super::joint`]) reads. One point gives its row unchanged.
pub fn concat_row(acts: &[Activations], i: usize) -> Vec<f32> {
    acts.iter().flat_map(|a| a.row(i).iter().copied()).collect()
}

/// What a [`collect`] call did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CollectStats {
    /// Texts run through the model (0 when everything came from the cache).
    pub texts: usize,
    /// Real tokens run (after truncation).
    pub tokens: usize,
    /// Texts cut to `max_tokens` (counted whether or not the cache was hit).
    pub truncated: usize,
    /// Points read from the cache.
    pub cached_points: usize,
    /// Points computed by running the model.
    pub computed_points: usize,
    /// Seconds spent in the model.
    pub secs: f64,
    /// The model fingerprint (sha256) used in the cache key; empty without a cache.
    pub model_sha256: String,
}

/// Pooled hidden states of every item of `ds` at every point of `opts.points`, from the
/// cache where present, otherwise from one series of forward passes over all missing points.
pub fn collect(
    model: &Model,
    ds: &Dataset,
    opts: &CollectOptions,
) -> Result<(Vec<Activations>, CollectStats)> {
    let mut run_on = |seqs: &[Vec<u32>], points: &[Point]| run(model, seqs, points, opts, &ds.name);
    collect_with(model, model.precision, &mut run_on, ds, opts)
}

/// [`collect`] from the same model at `precision`, loaded by `load` only when the cache
/// lacks a point: `keys` (the same file at any precision) tokenizes and names the cache
/// entries. A run that evaluates a quantised model need not hold its f32 copy to find that
/// the activations are cached.
pub fn collect_loading<M: std::borrow::Borrow<Model>>(
    keys: &Model,
    precision: Precision,
    load: &dyn Fn() -> Result<M>,
    ds: &Dataset,
    opts: &CollectOptions,
) -> Result<(Vec<Activations>, CollectStats)> {
    let mut run_on = |seqs: &[Vec<u32>], points: &[Point]| {
        let model = load()?;
        let model: &Model = model.borrow();
        ensure!(
            model.precision == precision && model.path == keys.path,
            "collection: the model loaded for the forward passes is not {} at {precision:?}",
            keys.path.display()
        );
        run(model, seqs, points, opts, &ds.name)
    };
    collect_with(keys, precision, &mut run_on, ds, opts)
}

/// Runs the model over the sequences at the points (a batch of missing points).
type RunPoints<'r> = dyn FnMut(&[Vec<u32>], &[Point]) -> Result<Vec<Vec<f32>>> + 'r;

fn collect_with(
    model: &Model,
    precision: Precision,
    run_points: &mut RunPoints<'_>,
    ds: &Dataset,
    opts: &CollectOptions,
) -> Result<(Vec<Activations>, CollectStats)> {
    ensure!(!opts.points.is_empty(), "no hidden-state point requested");
    ensure!(opts.max_tokens > 0, "--max-tokens must be at least 1");
    ensure!(opts.batch_size > 0, "batch size must be at least 1");
    ensure!(!ds.items.is_empty(), "dataset {} has no items", ds.name);
    let d = model.config().hidden_size;
    let n = ds.items.len();
    let mut seqs = Vec::with_capacity(n);
    let mut stats = CollectStats::default();
    for (text, _) in &ds.items {
        let mut ids = model
            .tokenizer
            .encode(text)
            .with_context(|| format!("tokenizing an item of {}", ds.name))?;
        if ids.len() > opts.max_tokens {
            ids.truncate(opts.max_tokens);
            stats.truncated += 1;
        }
        ensure!(
            !ids.is_empty(),
            "an item of {} tokenizes to nothing (empty text and no BOS)",
            ds.name
        );
        seqs.push(ids);
    }

    let paths: Option<Vec<PathBuf>> = match &opts.cache_dir {
        Some(dir) => {
            stats.model_sha256 = model_fingerprint(&model.path, Some(dir))?;
            let data_hash = ds.content_hash();
            Some(
                opts.points
                    .iter()
                    .map(|&p| {
                        let key = cache_key(&stats.model_sha256, precision, &data_hash, p, opts);
                        let name = hex(&Sha256::digest(key.as_bytes()));
                        dir.join("activations")
                            .join(format!("{}.safetensors", &name[..32]))
                    })
                    .collect(),
            )
        }
        None => None,
    };
    let mut out: Vec<Option<Activations>> = vec![None; opts.points.len()];
    if let Some(paths) = &paths {
        for ((slot, path), &p) in out.iter_mut().zip(paths).zip(&opts.points) {
            *slot = read_cached(path, p, n, d);
        }
    }
    let missing: Vec<usize> = (0..out.len()).filter(|&k| out[k].is_none()).collect();
    stats.cached_points = out.len() - missing.len();
    stats.computed_points = missing.len();
    if !missing.is_empty() {
        let points: Vec<Point> = missing.iter().map(|&k| opts.points[k]).collect();
        let start = Instant::now();
        let mats = run_points(&seqs, &points)?;
        stats.secs = start.elapsed().as_secs_f64();
        stats.texts = n;
        stats.tokens = seqs.iter().map(Vec::len).sum();
        for (&k, data) in missing.iter().zip(mats) {
            let act = Activations {
                point: opts.points[k],
                d,
                data,
            };
            if let Some(paths) = &paths {
                write_cached(
                    &paths[k],
                    &act,
                    &cache_key_meta(&stats, model, precision, ds, opts, act.point),
                )?;
            }
            out[k] = Some(act);
        }
    }
    Ok((out.into_iter().map(|a| a.expect("filled")).collect(), stats))
}

/// The string the cache file name is the hash of.
fn cache_key(
    model_sha: &str,
    precision: Precision,
    data_hash: &str,
    p: Point,
    o: &CollectOptions,
) -> String {
    format!(
        "scalpel-activations-v1|model={model_sha}|precision={:?}|data={data_hash}|point={}|pool={}|max_tokens={}",
        precision,
        point_name(p),
        o.pool.name(),
        o.max_tokens
    )
}

fn cache_key_meta(
    stats: &CollectStats,
    model: &Model,
    precision: Precision,
    ds: &Dataset,
    o: &CollectOptions,
    p: Point,
) -> BTreeMap<String, String> {
    let data_hash = ds.content_hash();
    BTreeMap::from([
        (
            "key".into(),
            cache_key(&stats.model_sha256, precision, &data_hash, p, o),
        ),
        ("model_path".into(), model.path.display().to_string()),
        ("dataset".into(), ds.name.clone()),
    ])
}

/// Metadata key of the sha256 of the cached feature bytes, recorded when written.
const FEATURES_SHA256: &str = "features_sha256";

/// A cached matrix of the right shape, or `None` (missing, unreadable or mismatched entries
/// are recomputed and overwritten). A file whose features do not match the content hash
/// recorded when it was written (edited, damaged, or from before the hash) is recomputed
/// with a warning: bad features would otherwise train a probe that looks perfect.
fn read_cached(path: &Path, p: Point, n: usize, d: usize) -> Option<Activations> {
    let bytes = std::fs::read(path).ok()?;
    let st = SafeTensors::deserialize(&bytes).ok()?;
    let t = st.tensor("features").ok()?;
    if t.dtype() != safetensors::Dtype::F32 || t.shape() != [n, d] {
        return None;
    }
    let recorded = SafeTensors::read_metadata(&bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().as_ref()?.get(FEATURES_SHA256).cloned());
    let actual = hex(&Sha256::digest(t.data()));
    if recorded.as_deref() != Some(actual.as_str()) {
        eprintln!(
            "WARNING activation cache {}: content does not match its recorded sha256; recomputing",
            path.display()
        );
        return None;
    }
    let data = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(Activations { point: p, d, data })
}

fn write_cached(path: &Path, act: &Activations, meta: &BTreeMap<String, String>) -> Result<()> {
    let n = act.data.len() / act.d;
    let mut meta = meta.clone();
    let raw: Vec<u8> = act.data.iter().flat_map(|x| x.to_le_bytes()).collect();
    meta.insert(FEATURES_SHA256.into(), hex(&Sha256::digest(&raw)));
    let bytes = serialize_f32(&[("features", &[n, act.d], &act.data)], &meta)?;
    write_atomic(path, &bytes)
        .with_context(|| format!("writing the activation cache {}", path.display()))
}

/// Runs the model over `seqs` (longest first, in batches) and returns one `n × d` matrix per
/// point, rows in the original order.
fn run(
    model: &Model,
    seqs: &[Vec<u32>],
    points: &[Point],
    opts: &CollectOptions,
    name: &str,
) -> Result<Vec<Vec<f32>>> {
    let d = model.config().hidden_size;
    let n = seqs.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Longest first: similar lengths share a batch, and the largest batch (the one most
    // likely to run out of memory) comes first. Stable, so ties keep dataset order.
    order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
    let mut mats = vec![vec![0f32; n * d]; points.len()];
    let pb = if opts.progress {
        crate::progress::bar(
            n,
            format!("collecting {name}"),
            "{msg} {bar:30} {pos}/{len} texts [{elapsed}<{eta}] {per_sec}",
        )
    } else {
        crate::progress::hidden(n)
    };
    // Pooled states of one batch, per point.
    let pooled = |chunk: &[usize]| -> Result<Vec<Vec<f32>>> {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| seqs[i].clone()).collect();
        let (out, mask) = model
            .forward_batch(&batch, points, Logits::None)
            .with_context(|| format!("running the model over {name}"))?;
        out.hidden
            .iter()
            .map(|h| pool_states(h, &mask, &batch, opts.pool))
            .collect()
    };
    let chunks: Vec<&[usize]> = order.chunks(opts.batch_size).collect();
    two_at_a_time(
        &chunks,
        |chunk| pooled(chunk),
        |chunk, per_point| {
            for (k, pooled) in per_point.iter().enumerate() {
                for (r, &i) in chunk.iter().enumerate() {
                    mats[k][i * d..(i + 1) * d].copy_from_slice(&pooled[r * d..(r + 1) * d]);
                }
            }
            pb.inc(chunk.len() as u64);
            Ok(())
        },
    )?;
    pb.finish_and_clear();
    for (m, p) in mats.iter().zip(points) {
        if let Some(i) = m.iter().position(|v| !v.is_finite()) {
            bail!(
                "hidden state at {} of item {} is not finite (NaN or ±inf)",
                point_name(*p),
                i / d
            );
        }
    }
    Ok(mats)
}

/// Mean over the real tokens of `[b, t, d]` hidden states (`mask` `[b, t]`, 1 = real):
/// the paper's pooling. Padding never contributes.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1f32, f32::MAX)?;
    sum.broadcast_div(&count)
}

/// Pools `[b, t, d]` states of right-padded `batch` to `b × d` values.
fn pool_states(h: &Tensor, mask: &Tensor, batch: &[Vec<u32>], pool: Pool) -> Result<Vec<f32>> {
    let h = h.to_dtype(DType::F32)?;
    let pooled = match pool {
        Pool::Mean => mean_pool(&h, mask)?,
        Pool::Last => {
            let (b, t, d) = h.dims3()?;
            let idx: Vec<u32> = batch
                .iter()
                .enumerate()
                .map(|(s, ids)| (s * t + ids.len() - 1) as u32)
                .collect();
            let idx = Tensor::from_vec(idx, b, h.device())?;
            h.reshape((b * t, d))?.index_select(&idx, 0)?
        }
    };
    Ok(pooled.flatten_all()?.to_vec1::<f32>()?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
