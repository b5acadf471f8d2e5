//! The shared machinery of `run`, `sweep` and `ablate`: one base model, probes trained on
//! demand (one per hidden-state point, from cached activations), and edited variants that
//! are written, evaluated against the base and summarised as [`Row`]s.

use super::config::RunConfig;
use super::rows::{row_from_report, EditInfo, ProbeInfo, Row};
use crate::assets::{self, FetchOptions};
use crate::data::{self, BuiltinOptions, Dataset};
use crate::eval::markdown::write_report;
use crate::eval::suites::{fingerprint, preflight, Scorers};
use crate::eval::{run_suites, EvalConfig, Report, Subject};
use crate::probe::{self, collect, parse_points, point_name, CollectOptions, Pool, Probe};
use crate::runtime::{LoadOptions, Model, Precision};
use crate::surgery::{
    plan_edit, select, write_edited, EditOptions, ModelFile, SelectOptions, WriteOptions,
};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a session is given besides its config: asset access and the scorers (injectable
/// so that tests can bring their own), and optionally a dataset replacing the built-in one.
pub struct Inputs<'a> {
    pub fetch: &'a FetchOptions,
    pub scorers: &'a Scorers,
    pub dataset: Option<Dataset>,
}

/// One edited model to build and evaluate.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Label in tables and folder name under the output folder.
    pub label: String,
    /// Probe point (`final`, `mlp:N`, `N`).
    pub point: String,
    pub select: SelectOptions,
    pub edit: EditOptions,
}

/// A base model with its probes and evaluation settings.
pub struct Session<'a> {
    pub cfg: RunConfig,
    pub model_path: PathBuf,
    pub model_sha256: String,
    pub eval: EvalConfig,
    pub base: Model,
    pub file: ModelFile,
    fetch: &'a FetchOptions,
    scorers: &'a Scorers,
    dataset: Dataset,
    probes: BTreeMap<String, (Probe, ProbeInfo)>,
    base_fingerprint: String,
}

/// The model a config names, or the catalog's default model.
pub fn resolve_model(cfg: &RunConfig, fetch: &FetchOptions) -> Result<PathBuf> {
    match &cfg.model {
        Some(p) => Ok(p.clone()),
        None => assets::fetch(assets::default_model(), fetch),
    }
}

impl<'a> Session<'a> {
    /// Loads the base model and the probe dataset; checks the evaluation settings before
    /// anything slow runs.
    pub fn open(cfg: RunConfig, inputs: Inputs<'a>, eval: EvalConfig) -> Result<Session<'a>> {
        let model_path = resolve_model(&cfg, inputs.fetch)?;
        let base = Model::load(
            &model_path,
            &LoadOptions {
                precision: Precision::F32,
            },
        )
        .with_context(|| format!("loading {}", model_path.display()))?;
        preflight(&base, &eval, inputs.fetch)?;
        let file = ModelFile::open(&model_path)?;
        let dataset = match (inputs.dataset, &cfg.data_file) {
            (Some(d), _) => d,
            (None, Some(f)) => data::load_tsv(f)?,
            (None, None) => match cfg.behaviour.spec().dataset {
                Some(name) => data::builtin(name, inputs.fetch, &BuiltinOptions::default())?,
                None => bail!(
                    "behaviour {} has no built-in dataset: give data_file (label<TAB>text, 1 = undesirable)",
                    cfg.behaviour.name()
                ),
            },
        };
        let dataset = if cfg.balance {
            dataset.balanced(cfg.seed)
        } else {
            dataset
        };
        dataset.validate()?;
        let model_sha256 = probe::model_fingerprint(&model_path, Some(&inputs.fetch.cache_dir))?;
        // The same content hash the evaluation cache uses; computed once above.
        let base_fingerprint = model_sha256.clone();
        Ok(Session {
            cfg,
            model_path,
            model_sha256,
            eval,
            base,
            file,
            fetch: inputs.fetch,
            scorers: inputs.scorers,
            dataset,
            probes: BTreeMap::new(),
            base_fingerprint,
        })
    }

    /// The probe at `point`, trained on first use and saved to `dir`.
    pub fn probe(&mut self, point: &str, dir: &Path) -> Result<(Probe, ProbeInfo)> {
        if let Some(p) = self.probes.get(point) {
            return Ok(p.clone());
        }
        let points = parse_points(point, self.base.config().num_layers)?;
        if points.len() != 1 {
            bail!("probe point {point:?}: the pipeline trains one probe per point");
        }
        let opts = CollectOptions {
            points,
            pool: Pool::Mean,
            max_tokens: self.cfg.max_tokens,
            batch_size: 16,
            cache_dir: self.cfg.cache.then(|| self.fetch.cache_dir.clone()),
            progress: true,
        };
        let (acts, stats) = collect(&self.base, &self.dataset, &opts)?;
        let labels: Vec<u8> = self.dataset.items.iter().map(|(_, l)| *l).collect();
        let topts = probe::TrainOptions {
            seed: self.cfg.seed,
            lr: self.cfg.lr,
            epochs: self.cfg.epochs,
            epoch: self.cfg.epoch_choice()?,
            ..probe::TrainOptions::default()
        };
        let act = &acts[0];
        let t = probe::train(&act.data, &labels, act.d, &topts)
            .with_context(|| format!("training the probe at {point}"))?;
        let name = point_name(act.point);
        let meta = BTreeMap::from([
            ("model".to_string(), self.model_path.display().to_string()),
            ("model_sha256".into(), self.model_sha256.clone()),
            ("precision".into(), "f32".into()),
            ("point".into(), name.clone()),
            ("pool".into(), "mean".into()),
            ("max_tokens".into(), self.cfg.max_tokens.to_string()),
            ("dataset".into(), self.dataset.name.clone()),
            ("dataset_sha256".into(), self.dataset.content_hash()),
            ("balanced".into(), self.cfg.balance.to_string()),
            ("seed".into(), self.cfg.seed.to_string()),
            (
                "train_options".into(),
                serde_json::to_string(&t.report.options)?,
            ),
            (
                "direction".into(),
                "row 1 of weight = class 1 = undesirable; the edit uses W[1]".into(),
            ),
        ]);
        let probe = Probe::new(t.weight.clone(), t.bias, meta)?;
        let file = dir.join(format!("probe.{}.safetensors", name.replace(':', "")));
        probe.save(&file)?;
        let info = ProbeInfo {
            point: name,
            file: file.clone(),
            dataset: self.dataset.name.clone(),
            texts: self.dataset.items.len(),
            test_accuracy: t.report.test.accuracy,
            test_roc_auc: t.report.test.roc_auc,
            train_accuracy: t.report.train.accuracy,
            chosen_epoch: t.report.chosen_epoch,
            activations_cached: stats.computed_points == 0,
        };
        crate::formats::io::write_atomic(
            &dir.join(format!("probe.{}.json", info.point.replace(':', ""))),
            serde_json::to_string_pretty(&serde_json::json!({"info": info, "report": t.report}))?
                .as_bytes(),
        )?;
        self.probes.insert(point.to_string(), (probe, info));
        Ok(self.probes[point].clone())
    }

    /// The base subject for [`run_suites`].
    fn base_subject(&self) -> Subject<'_> {
        Subject {
            label: "base".into(),
            model: &self.base,
            endpoint: None,
            fingerprint: self.base_fingerprint.clone(),
        }
    }

    /// Evaluates the base model alone (its row; cached by the evaluation cache).
    pub fn base_row(&self, dir: &Path) -> Result<Row> {
        let report = run_suites(
            &self.base_subject(),
            None,
            &self.eval,
            self.scorers,
            self.fetch,
        )?;
        write_report(&report, dir)?;
        Ok(row_from_report("base", &report, false, None))
    }

    /// Builds `v` into `dir` (probe, plan, edited model kept at full precision, patch),
    /// evaluates it against the base and returns its row. With `keep_model` false the
    /// edited model is deleted after evaluation (sweeps would otherwise fill the disk);
    /// the patch stays and rebuilds it.
    pub fn variant(&mut self, v: &Variant, dir: &Path, keep_model: bool) -> Result<(Row, Report)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let probes_dir = self.cfg.out.join("probes");
        let (probe, _) = self.probe(&v.point, &probes_dir)?;
        let sel = select(&self.file, &probe, &v.select)?;
        crate::formats::io::write_atomic(
            &dir.join("plan.json"),
            serde_json::to_string_pretty(&sel)?.as_bytes(),
        )?;
        let plan = plan_edit(&sel, &probe, &v.edit)?;
        let model_out = dir.join(self.edited_name("model"));
        let w = write_edited(
            &self.file,
            &plan,
            &model_out,
            &WriteOptions {
                // Re-quantising a small edit to Q4_1 distorts it (error about a third of the
                // change at α = 1.08): evaluate the exact edit.
                keep_precision: true,
                force: true,
                patch: Some(dir.join("edit.patch.safetensors")),
            },
        )?;
        let edited = Model::load(
            &model_out,
            &LoadOptions {
                precision: Precision::F32,
            },
        )?;
        let subject = Subject {
            label: v.label.clone(),
            model: &edited,
            endpoint: None,
            fingerprint: fingerprint(&model_out)?,
        };
        let base = self.base_subject();
        let report = run_suites(&subject, Some(&base), &self.eval, self.scorers, self.fetch)?;
        write_report(&report, &dir.join("eval"))?;
        drop(edited);
        if !keep_model {
            remove_model(&model_out)?;
        }
        let info = EditInfo {
            point: point_name(parse_points(&v.point, self.base.config().num_layers)?[0]),
            alpha: v.edit.alpha,
            k: sel.k,
            total_rows: sel.total_rows,
            delta_norm: plan.delta_norm(),
            stored_change_norm: w.stored_change_norm,
            model: keep_model.then(|| model_out.clone()),
        };
        Ok((row_from_report(&v.label, &report, true, Some(info)), report))
    }

    /// `name.gguf` for a GGUF input, `name/` for a Hugging Face folder.
    pub fn edited_name(&self, name: &str) -> String {
        match self.file.format() {
            "gguf" => format!("{name}.gguf"),
            _ => name.to_string(),
        }
    }

    /// Also writes the edit re-quantised to the input's storage type (the small file to
    /// ship); returns the stored error norm against the intended change.
    pub fn write_requantised(&mut self, v: &Variant, out: &Path) -> Result<f64> {
        let probes_dir = self.cfg.out.join("probes");
        let (probe, _) = self.probe(&v.point, &probes_dir)?;
        let sel = select(&self.file, &probe, &v.select)?;
        let plan = plan_edit(&sel, &probe, &v.edit)?;
        let w = write_edited(
            &self.file,
            &plan,
            out,
            &WriteOptions {
                keep_precision: false,
                force: true,
                patch: None,
            },
        )?;
        Ok(w.error_norm)
    }
}

fn remove_model(p: &Path) -> Result<()> {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    r.with_context(|| format!("removing {}", p.display()))
}
