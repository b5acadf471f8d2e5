//! `scalpel probe`: train the behaviour probe on a labelled dataset, evaluate it on another,
//! score texts with it.

use super::probe_collect::{collect_all, collect_remote, CollectArgs, RemoteArgs};
use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use scalpel::assets::{default_cache_dir, FetchOptions};
use scalpel::data::{self, BuiltinOptions, Dataset, JsonlFormat};
use scalpel::formats::io::{check_outputs, write_file, OutKind};
use scalpel::probe::meta::DIRECTION_NOTE;
use scalpel::probe::{
    self, collect, concat_row, metrics, mlp_blocks, point_name, Activations, CollectOptions,
    FitOptions, Layer, Pool, Probe, ProbeMeta, TrainOptions,
};
use scalpel::runtime::{LoadOptions, Model, Point, Precision};
use std::path::{Path, PathBuf};

/// Arguments of `scalpel probe`.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    #[command(subcommand)]
    pub command: ProbeCommand,
}

/// `scalpel probe` subcommands.
#[derive(Subcommand, Debug)]
pub enum ProbeCommand {
    /// Collect pooled hidden states over a labelled dataset and train a probe.
    Train(TrainArgs),
    /// Accuracy, ROC AUC and confusion matrix of a probe on a labelled dataset.
    Eval(EvalArgs),
    /// P(undesirable) of texts under a probe.
    Score(ScoreArgs),
}

/// Format of `--data-file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// `label<TAB>text` lines.
    Tsv,
    /// JSON lines with `text` and `label` fields.
    Jsonl,
    /// Two files of one text per line: desirable, then undesirable.
    Lines,
}

/// Which labelled texts to use.
#[derive(Args, Debug)]
pub struct DataArgs {
    /// Built-in dataset: toxicity, toxigen-demos or sentiment.
    #[arg(long, conflicts_with = "data_file")]
    pub data: Option<String>,
    /// A labelled file (two for `--format lines`: desirable texts, then undesirable).
    #[arg(long, num_args = 1..=2)]
    pub data_file: Vec<PathBuf>,
    /// Format of --data-file.
    #[arg(long, value_enum, default_value_t = FileFormat::Tsv)]
    pub format: FileFormat,
    /// Downsample the larger class to the size of the smaller (seeded by --seed).
    #[arg(long)]
    pub balance: bool,
}

/// Arguments of `scalpel probe train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// GGUF file or Hugging Face folder.
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub collect: CollectArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub fit: FitOptions,
    /// Pooling over tokens.
    #[arg(long, value_enum, default_value_t = Pool::Mean)]
    pub pool: Pool,
    /// Seed of balancing, the 90/10 split, initialisation and batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// With several MLP-input points (e.g. `--layer mlp:all`): fit one joint probe over all
    /// of them (a weight slice per block, stacked per-block logistic probes; needs
    /// `--method logistic`) instead of one probe per point.
    #[arg(long)]
    pub joint: bool,
    /// Probe file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the report (metrics, loss per epoch, collection speed) as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `scalpel probe eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// GGUF file or Hugging Face folder.
    pub model: PathBuf,
    /// Probe file.
    pub probe: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub collect: CollectArgs,
    /// Override the probe's hidden-state point (default: the one in its metadata).
    #[arg(long)]
    pub layer: Option<Layer>,
    /// Override the probe's token limit (default: the one in its metadata, else 128).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Override the probe's pooling.
    #[arg(long, value_enum)]
    pub pool: Option<Pool>,
    /// Seed of --balance.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the metrics as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Overwrite an existing report.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `scalpel probe score`.
#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// GGUF file or Hugging Face folder.
    pub model: PathBuf,
    /// Probe file.
    pub probe: PathBuf,
    /// Text to score (repeatable).
    #[arg(long, required = true)]
    pub text: Vec<String>,
    /// How the model's matrices are held.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

/// Runs `scalpel probe`.
pub fn run(a: ProbeArgs) -> Result<()> {
    match a.command {
        ProbeCommand::Train(a) => train(a),
        ProbeCommand::Eval(a) => eval(a),
        ProbeCommand::Score(a) => score(a),
    }
}

fn load_dataset(a: &DataArgs, seed: u64) -> Result<Dataset> {
    let ds = match (&a.data, a.data_file.as_slice()) {
        (Some(name), _) => {
            data::builtin(name, &FetchOptions::from_env()?, &BuiltinOptions::default())?
        }
        (None, []) => bail!("no dataset given (use --data NAME or --data-file FILE)"),
        (None, files) => match (a.format, files) {
            (FileFormat::Tsv, [f]) => data::load_tsv(f)?,
            (FileFormat::Jsonl, [f]) => data::load_jsonl(f, &JsonlFormat::default())?,
            (FileFormat::Lines, [good, bad]) => data::load_lines(good, bad)?,
            (FileFormat::Lines, _) => {
                bail!("--format lines needs two --data-file values: desirable, then undesirable")
            }
            (_, _) => bail!("--format tsv and jsonl take one --data-file"),
        },
    };
    let ds = if a.balance { ds.balanced(seed) } else { ds };
    ds.validate()?;
    Ok(ds)
}

/// The files a command reads: the model, the data files and the probe.
fn inputs<'a>(model: &'a Path, data: &'a DataArgs, probe: Option<&'a Path>) -> Vec<&'a Path> {
    let mut v = vec![model];
    v.extend(data.data_file.iter().map(PathBuf::as_path));
    v.extend(probe);
    v
}

fn load_model(path: &Path, precision: Precision) -> Result<Model> {
    Model::load(path, &LoadOptions { precision })
        .with_context(|| format!("loading {}", path.display()))
}

/// `probe.safetensors` → `probe.mlp7.safetensors`.
fn per_point_path(out: &Path, p: Point) -> PathBuf {
    let tag = point_name(p).replace(':', "");
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    let name = match out.extension() {
        Some(ext) => format!("{stem}.{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{tag}"),
    };
    out.with_file_name(name)
}

fn train(a: TrainArgs) -> Result<()> {
    let opts = TrainOptions::new(a.fit.clone(), a.seed);
    // Everything checkable without the model is checked before the (slow) collection.
    opts.validate()?;
    ensure!(
        a.collect.forward_batch >= 1,
        "--forward-batch must be at least 1"
    );
    let ds = load_dataset(&a.data, a.seed)?;
    probe::check_split(ds.counts(), opts.test_fraction)
        .with_context(|| format!("dataset {}", ds.name))?;
    let max_tokens = a.fit.max_tokens;
    let (outs, acts, stats, precision) = match &a.remote.endpoint {
        Some(url) => {
            let outs = train_outputs(&a, &[Point::FinalNorm])?;
            let (acts, stats) = collect_remote(
                &a.remote,
                url,
                &a.model,
                &a.fit.layer,
                &ds,
                a.pool,
                max_tokens,
            )?;
            (outs, acts, stats, format!("server {url}"))
        }
        None => {
            let model = load_model(&a.model, a.collect.precision)?;
            let points = a.fit.layer.points(model.config().num_layers)?;
            if a.joint && mlp_blocks(&points).is_none() {
                bail!("--joint reads MLP inputs only: use --layer mlp:all or mlp:N,mlp:M,…");
            }
            let outs = train_outputs(&a, &points)?;
            let (acts, stats) = collect_all(&model, &ds, points, a.pool, max_tokens, &a.collect)?;
            let precision = format!("{:?}", model.precision).to_lowercase();
            (outs, acts, stats, precision)
        }
    };
    let labels: Vec<u8> = ds.items.iter().map(|(_, l)| *l).collect();
    let model_sha = match stats.model_sha256.as_str() {
        "" => probe::model_fingerprint(&a.model, None)?,
        s => s.to_string(),
    };
    let meta = ProbeMeta {
        model: Some(a.model.display().to_string()),
        model_sha256: Some(model_sha.clone()),
        precision: Some(precision),
        pool: Some(a.pool),
        max_tokens: Some(max_tokens),
        dataset: Some(ds.name.clone()),
        dataset_sha256: Some(ds.content_hash()),
        balanced: Some(a.data.balance),
        seed: Some(a.seed),
        direction: Some(DIRECTION_NOTE.into()),
        ..ProbeMeta::default()
    };
    let groups: Vec<&[Activations]> = match a.joint {
        true => vec![&acts[..]],
        false => acts.chunks(1).collect(),
    };
    let mut entries = Vec::new();
    for (group, out) in groups.into_iter().zip(&outs) {
        let mut f = probe::fit(group, &labels, &opts, meta.clone(), a.joint)?;
        f.meta.record_results(&f.report);
        write_file(out, &f.probe()?.to_bytes()?, a.force)?;
        let name = f.meta.point.clone().unwrap_or_default();
        print_fitted(&name, &f.report, out, outs.len() > 1);
        entries.push(serde_json::json!({"point": name, "file": out, "report": f.report}));
    }
    if let Some(path) = &a.report {
        let report = serde_json::json!({
            "model": a.model, "model_sha256": model_sha, "dataset": ds.name,
            "dataset_sha256": ds.content_hash(), "counts": ds.counts(), "pool": a.pool,
            "max_tokens": max_tokens, "collect": stats, "probes": entries,
        });
        write_file(
            path,
            serde_json::to_string_pretty(&report)?.as_bytes(),
            a.force,
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The probe files `probe train` writes (one per point unless joint), checked with the
/// report before the (slow) collection.
fn train_outputs(a: &TrainArgs, points: &[Point]) -> Result<Vec<PathBuf>> {
    let outs: Vec<PathBuf> = if points.len() > 1 && !a.joint {
        points.iter().map(|&p| per_point_path(&a.out, p)).collect()
    } else {
        vec![a.out.clone()]
    };
    let mut out_kinds: Vec<(&Path, OutKind)> =
        outs.iter().map(|p| (p.as_path(), OutKind::File)).collect();
    out_kinds.extend(a.report.as_deref().map(|p| (p, OutKind::File)));
    check_outputs(&inputs(&a.model, &a.data, None), &out_kinds, a.force)?;
    Ok(outs)
}

/// One line per probe when there are several, else the loss curve and the metrics.
fn print_fitted(name: &str, r: &probe::TrainReport, out: &Path, many: bool) {
    if many {
        println!(
            "{name:>8}: test accuracy {:.2} %, ROC AUC {:.4}, train accuracy {:.2} % -> {}",
            100.0 * r.test.accuracy,
            r.test.roc_auc,
            100.0 * r.train.accuracy,
            out.display()
        );
    } else {
        print_single(name, r);
        println!("wrote {}", out.display());
    }
}

/// Checks that a probe reads `points`: one point, or a joint probe's blocks.
fn check_points(probe: &Probe, points: &[Point], layer: &Layer) -> Result<()> {
    match probe.blocks() {
        None => ensure!(
            points.len() == 1,
            "--layer {layer}: a probe reads one point"
        ),
        Some(b) => ensure!(
            points.len() == b.len(),
            "--layer {layer}: the joint probe reads {} blocks",
            b.len()
        ),
    }
    Ok(())
}

fn print_single(name: &str, r: &probe::TrainReport) {
    println!("probe at {name}, method {:?}", r.options.fit.method);
    if !r.epochs.is_empty() {
        println!(
            "{:>5} {:>10} {:>9} {:>10} {:>9}",
            "epoch", "train loss", "train acc", "test loss", "test acc"
        );
        for e in &r.epochs {
            let mark = if r.chosen_epoch == Some(e.epoch) {
                "  <- kept"
            } else {
                ""
            };
            println!(
                "{:>5} {:>10.4} {:>8.2}% {:>10.4} {:>8.2}%{mark}",
                e.epoch,
                e.train_loss,
                100.0 * e.train_accuracy,
                e.test_loss,
                100.0 * e.test_accuracy
            );
        }
    }
    println!("{}", r.train.table("train"));
    println!("{}", r.test.table("test (held out)"));
}

/// Where and how a probe reads: the point, pooling and token limit its metadata records
/// (else the paper's `final`, mean, and the default limit), each overridable.
fn reading(
    probe: &Probe,
    layer: Option<&Layer>,
    pool: Option<Pool>,
    max_tokens: Option<usize>,
) -> Result<(Layer, Pool, usize)> {
    let meta = ProbeMeta::from_map(&probe.meta)?;
    let layer = match (layer, &meta.point) {
        (Some(l), _) => l.clone(),
        (None, Some(p)) => p.parse().context("probe metadata point")?,
        (None, None) => Layer::default(),
    };
    let pool = pool.or(meta.pool).unwrap_or_default();
    let max_tokens = max_tokens
        .or(meta.max_tokens)
        .unwrap_or_else(|| FitOptions::default().max_tokens);
    Ok((layer, pool, max_tokens))
}

fn eval(a: EvalArgs) -> Result<()> {
    if let Some(r) = &a.report {
        let ins = inputs(&a.model, &a.data, Some(&a.probe));
        check_outputs(&ins, &[(r.as_path(), OutKind::File)], a.force)?;
    }
    let probe = Probe::load(&a.probe)?;
    let ds = load_dataset(&a.data, a.seed)?;
    let model = load_model(&a.model, a.collect.precision)?;
    probe
        .check_blocks(model.config().num_layers)
        .and_then(|_| probe.check_width(model.config().hidden_size))
        .with_context(|| format!("{}", a.probe.display()))?;
    if let Some(w) = probe.other_model_warning(&a.model, default_cache_dir().ok().as_deref())? {
        eprintln!("WARNING {w}");
    }
    let (layer, pool, max_tokens) = reading(&probe, a.layer.as_ref(), a.pool, a.max_tokens)
        .with_context(|| format!("{}", a.probe.display()))?;
    let points = layer.points(model.config().num_layers)?;
    check_points(&probe, &points, &layer)?;
    let (acts, _) = collect_all(&model, &ds, points, pool, max_tokens, &a.collect)?;
    let p1: Vec<f64> = (0..ds.items.len())
        .map(|i| f64::from(probe.prob_undesirable(&concat_row(&acts, i))))
        .collect();
    let labels: Vec<u8> = ds.items.iter().map(|(_, l)| *l).collect();
    let m = metrics(&p1, &labels);
    println!(
        "{}",
        m.table(&format!(
            "{} on {} ({layer}, {})",
            a.probe.display(),
            ds.name,
            pool.name()
        ))
    );
    if let Some(path) = &a.report {
        let report = serde_json::json!({
            "probe": a.probe, "dataset": ds.name, "dataset_sha256": ds.content_hash(),
            "point": layer, "pool": pool, "max_tokens": max_tokens, "metrics": m,
        });
        write_file(
            path,
            serde_json::to_string_pretty(&report)?.as_bytes(),
            a.force,
        )?;
    }
    Ok(())
}

fn score(a: ScoreArgs) -> Result<()> {
    let probe = Probe::load(&a.probe)?;
    let model = load_model(&a.model, a.precision)?;
    probe
        .check_width(model.config().hidden_size)
        .with_context(|| format!("{}", a.probe.display()))?;
    let (layer, pool, max_tokens) =
        reading(&probe, None, None, None).with_context(|| format!("{}", a.probe.display()))?;
    let points = layer.points(model.config().num_layers)?;
    check_points(&probe, &points, &layer)?;
    // Unlabelled: the label is a placeholder and no cache is used.
    let ds = Dataset {
        name: "--text".into(),
        items: a.text.iter().map(|t| (t.clone(), 0)).collect(),
    };
    let opts = CollectOptions {
        points,
        pool,
        max_tokens,
        ..CollectOptions::default()
    };
    let (acts, _) = collect(&model, &ds, &opts)?;
    for (i, t) in a.text.iter().enumerate() {
        println!("{:.4}\t{t}", probe.prob_undesirable(&concat_row(&acts, i)));
    }
    Ok(())
}
