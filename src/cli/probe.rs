//! `scalpel probe`: train the behaviour probe on a labelled dataset, evaluate it on another,
//! score texts with it.

use super::probe_collect::{check_collect_args, collect_all, CollectArgs};
use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use scalpel::assets::{default_cache_dir, FetchOptions};
use scalpel::data::{self, BuiltinOptions, Dataset, JsonlFormat};
use scalpel::formats::io::{check_outputs, write_file, OutKind};
use scalpel::probe::{
    self, collect, concat_row, metrics, parse_points, point_name, Activations, CollectOptions,
    EpochChoice, Method, Pool, Probe, TrainOptions,
};
use scalpel::runtime::{LoadOptions, Model, Point, Precision};
use std::collections::BTreeMap;
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
    pub remote: super::probe_collect::RemoteArgs,
    /// Hidden state: `final` (final-norm output, the paper), `N` (residual after block N,
    /// 0-based), `mlp:N` (MLP input of block N), `mlp:all` (every block), or a comma-separated
    /// list — several points come from one pass and give one probe each, written to OUT with
    /// the point (`.mlp7`, `.final`, `.residual3`) before the extension.
    #[arg(long, default_value = "final")]
    pub layer: String,
    /// Pooling over tokens.
    #[arg(long, value_enum, default_value_t = Pool::Mean)]
    pub pool: Pool,
    /// Fitting method.
    #[arg(long, value_enum, default_value_t = Method::Paper)]
    pub method: Method,
    /// Epoch to keep (paper method): `best` (lowest held-out loss), `last`, or a 0-based
    /// number (`9` = after 10 passes, the paper's "epoch 9").
    #[arg(long, default_value = "best")]
    pub epoch: String,
    /// Adam learning rate (paper method).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Epochs (paper method).
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Mini-batch size (paper method).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// L2 penalty on the summed cross-entropy (logistic method).
    #[arg(long, default_value_t = 1.0)]
    pub l2: f64,
    /// Fit on per-dimension standardised features (training-split mean and deviation) and
    /// map the weights back; makes --l2 meaningful on RMSNorm outputs.
    #[arg(long)]
    pub standardize: bool,
    /// Average N probes: seeds of initialisation and batch order (paper method) or bootstrap
    /// resamples of the training split (closed-form methods).
    #[arg(long, default_value_t = 1)]
    pub ensemble: usize,
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
    pub layer: Option<String>,
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
    let epoch: EpochChoice = a.epoch.parse().context("--epoch")?;
    if let EpochChoice::Epoch(k) = epoch {
        // Checked before the (slow) collection; training checks it again.
        ensure!(
            k < a.epochs,
            "--epoch {k} does not exist: epochs are 0-based and there are {} (0..={})",
            a.epochs,
            a.epochs.saturating_sub(1)
        );
    }
    let opts = TrainOptions {
        method: a.method,
        seed: a.seed,
        lr: a.lr,
        batch_size: a.batch_size,
        epochs: a.epochs,
        epoch,
        l2: a.l2,
        standardize: a.standardize,
        ensemble: a.ensemble,
        ..TrainOptions::default()
    };
    // Everything checkable without the model is checked before the (slow) collection.
    opts.validate()?;
    check_collect_args(&a.collect)?;
    let ds = load_dataset(&a.data, a.seed)?;
    probe::check_split(ds.counts(), opts.test_fraction)
        .with_context(|| format!("dataset {}", ds.name))?;
    let max_tokens = a.collect.max_tokens.unwrap_or(128);
    let (acts, stats, precision) = match &a.remote.endpoint {
        Some(url) => {
            check_train_outputs(&a, &[Point::FinalNorm])?;
            let (acts, stats) = super::probe_collect::collect_remote(
                &a.remote, url, &a.model, &a.layer, &ds, a.pool, max_tokens,
            )?;
            (acts, stats, format!("server {url}"))
        }
        None => {
            let model = load_model(&a.model, a.collect.precision)?;
            let points = parse_points(&a.layer, model.config().num_layers)?;
            check_train_outputs(&a, &points)?;
            let (acts, stats) = collect_all(&model, &ds, points, a.pool, max_tokens, &a.collect)?;
            (acts, stats, format!("{:?}", model.precision).to_lowercase())
        }
    };
    let labels: Vec<u8> = ds.items.iter().map(|(_, l)| *l).collect();
    let model_sha = match stats.model_sha256.as_str() {
        "" => probe::model_fingerprint(&a.model, None)?,
        s => s.to_string(),
    };
    let joint = joint_blocks(a.joint, &acts)?;
    let many = acts.len() > 1 && joint.is_none();
    let mut entries = Vec::new();
    let groups: Vec<&[Activations]> = match joint {
        Some(_) => vec![&acts[..]],
        None => acts.chunks(1).collect(),
    };
    for group in groups {
        let act = &group[0];
        let (name, t) = match &joint {
            Some(_) => {
                let xs: Vec<&[f32]> = group.iter().map(|a| &a.data[..]).collect();
                let name = group
                    .iter()
                    .map(|a| point_name(a.point))
                    .collect::<Vec<_>>()
                    .join(",");
                let t = probe::train_joint(&xs, &labels, act.d, &opts)
                    .context("training the joint probe")?;
                (name, t)
            }
            None => {
                let name = point_name(act.point);
                let t = probe::train(&act.data, &labels, act.d, &opts)
                    .with_context(|| format!("training the probe at {name}"))?;
                (name, t)
            }
        };
        let r = &t.report;
        let metrics_json = serde_json::json!({"train": r.train, "test": r.test});
        let meta = BTreeMap::from([
            ("model".to_string(), a.model.display().to_string()),
            ("model_sha256".into(), model_sha.clone()),
            ("precision".into(), precision.clone()),
            ("point".into(), name.clone()),
            ("pool".into(), a.pool.name().into()),
            ("max_tokens".into(), max_tokens.to_string()),
            ("dataset".into(), ds.name.clone()),
            ("dataset_sha256".into(), ds.content_hash()),
            ("balanced".into(), a.data.balance.to_string()),
            ("seed".into(), a.seed.to_string()),
            (
                "method".into(),
                serde_json::to_value(a.method)?
                    .as_str()
                    .unwrap_or("")
                    .into(),
            ),
            ("train_options".into(), serde_json::to_string(&r.options)?),
            (
                "chosen_epoch".into(),
                r.chosen_epoch.map_or("none".into(), |e| e.to_string()),
            ),
            ("metrics".into(), metrics_json.to_string()),
            (
                "direction".into(),
                "row 1 of weight = class 1 = undesirable; the edit uses W[1]".into(),
            ),
        ]);
        let mut meta = meta;
        if let Some(blocks) = &joint {
            meta.insert("blocks".into(), blocks.clone());
        }
        let probe = Probe::new(t.weight.clone(), t.bias, meta)?;
        let out = if many {
            per_point_path(&a.out, act.point)
        } else {
            a.out.clone()
        };
        write_file(&out, &probe.to_bytes()?, a.force)?;
        if many {
            println!(
                "{name:>8}: test accuracy {:.2} %, ROC AUC {:.4}, train accuracy {:.2} % -> {}",
                100.0 * r.test.accuracy,
                r.test.roc_auc,
                100.0 * r.train.accuracy,
                out.display()
            );
        } else {
            print_single(&name, &t.report);
            println!("wrote {}", out.display());
        }
        entries.push(serde_json::json!({"point": name, "file": out, "report": t.report}));
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

/// Every output of `train` checked before the (slow) collection: one probe per point
/// unless joint.
fn check_train_outputs(a: &TrainArgs, points: &[Point]) -> Result<()> {
    let outs: Vec<PathBuf> = if points.len() > 1 && !a.joint {
        points.iter().map(|&p| per_point_path(&a.out, p)).collect()
    } else {
        vec![a.out.clone()]
    };
    let mut out_kinds: Vec<(&Path, OutKind)> =
        outs.iter().map(|p| (p.as_path(), OutKind::File)).collect();
    out_kinds.extend(a.report.as_deref().map(|p| (p, OutKind::File)));
    check_outputs(&inputs(&a.model, &a.data, None), &out_kinds, a.force)
}

/// The block list of a joint probe (`--joint`): every point must be an MLP input.
fn joint_blocks(joint: bool, acts: &[Activations]) -> Result<Option<String>> {
    if !joint {
        return Ok(None);
    }
    let points: Vec<Point> = acts.iter().map(|a| a.point).collect();
    match probe::mlp_blocks(&points) {
        Some(b) => Ok(Some(Probe::blocks_meta(&b))),
        None => bail!("--joint reads MLP inputs only: use --layer mlp:all or mlp:N,mlp:M,…"),
    }
}

/// Checks that a probe reads `points`: one point, or a joint probe's blocks.
fn check_points(probe: &Probe, points: &[Point], layer: &str) -> Result<()> {
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
    println!("probe at {name}, method {:?}", r.options.method);
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
    let layer = a
        .layer
        .clone()
        .or_else(|| probe.meta.get("point").cloned())
        .unwrap_or_else(|| "final".into());
    let points = parse_points(&layer, model.config().num_layers)?;
    check_points(&probe, &points, &layer)?;
    let pool = match (a.pool, probe.meta.get("pool").map(String::as_str)) {
        (Some(p), _) => p,
        (None, Some("last")) => Pool::Last,
        _ => Pool::Mean,
    };
    let max_tokens = a
        .collect
        .max_tokens
        .or_else(|| probe.meta.get("max_tokens").and_then(|s| s.parse().ok()))
        .unwrap_or(128);
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
    let layer = probe
        .meta
        .get("point")
        .cloned()
        .unwrap_or_else(|| "final".into());
    let points = parse_points(&layer, model.config().num_layers)?;
    check_points(&probe, &points, &layer)?;
    let pool = match probe.meta.get("pool").map(String::as_str) {
        Some("last") => Pool::Last,
        _ => Pool::Mean,
    };
    let max_tokens = probe
        .meta
        .get("max_tokens")
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
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
