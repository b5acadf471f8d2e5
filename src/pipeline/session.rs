//! The shared machinery of `run`, `sweep` and `ablate`: one base model, probes trained on
//! demand (one per hidden-state point, from cached activations), and edited variants that
//! are written, evaluated against the base and summarised as [`Row`]s.

use super::config::RunConfig;
use super::labels::{BASE, CONTROL_DIRECTION, CONTROL_ROWS, EDITED};
use super::rows::{row_from_report, EditInfo, ProbeInfo, Row};
use super::serving::{self, Serving};
use crate::assets::{self, FetchOptions};
use crate::data::{self, BuiltinOptions, Dataset};
use crate::eval::markdown::write_report;
use crate::eval::openai::Endpoint;
use crate::eval::suites::{fingerprint, preflight, Scorers};
use crate::eval::{run_suites, EvalConfig, Report, Subject};
use crate::probe::meta::DIRECTION_NOTE;
use crate::probe::{
    self, collect_loading, mlp_blocks, parse_points, point_name, Activations, CollectOptions,
    CollectStats, FitOptions, Pool, Probe, ProbeMeta, TrainOptions,
};
use crate::progress::{stage, Stage};
use crate::runtime::{LoadOptions, Model, Point, Precision};
use crate::surgery::activation::activation_scores;
use crate::surgery::recipes::{
    neurons::pooled_activations, plan_recipe, Measured, Recipe, RecipeOptions,
};
use crate::surgery::{
    plan_edit, select_with, write_edited, EditOptions, EditPlan, Matrix, ModelFile, Ranking,
    SelectOptions, Selection, WriteOptions,
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
    /// The probe: its point (`final`, `mlp:N`, …; `mlp:all` for a joint probe) and fit.
    pub fit: FitOptions,
    pub select: SelectOptions,
    pub edit: EditOptions,
    /// A recipe replacing `select` + `edit` (`None`: the paper's selection and edit as set
    /// there; the probe still comes from `fit`).
    pub recipe: Option<RecipeOptions>,
}

/// A base model with its probes and evaluation settings.
pub struct Session<'a> {
    pub cfg: RunConfig,
    pub model_path: PathBuf,
    pub model_sha256: String,
    pub eval: EvalConfig,
    /// The base model at the evaluation's precision: evaluation runs on it. Activations are
    /// collected from the model in f32 ([`Session::f32_base`]), loaded only for a collection.
    pub base: Model,
    pub file: ModelFile,
    fetch: &'a FetchOptions,
    scorers: &'a Scorers,
    dataset: Dataset,
    /// The probe dataset's size before the profile's sample ([`RunConfig::probe_text_limit`]).
    available: usize,
    probes: BTreeMap<String, (Probe, ProbeInfo)>,
    scores: Option<Vec<Vec<f32>>>,
    neurons: Option<Vec<Vec<f32>>>,
    residuals: Option<Vec<Option<Vec<f32>>>>,
    base_fingerprint: String,
    /// A server's clients by the run's labels, when it generates ([`Session::serve`]).
    served: Option<BTreeMap<String, Endpoint>>,
}

/// The base model in f32 ([`Session::f32_base`]): the session's own, or a copy loaded for
/// one collection.
enum F32Base<'s> {
    Shared(&'s Model),
    Loaded(Box<Model>),
}

impl std::borrow::Borrow<Model> for F32Base<'_> {
    fn borrow(&self) -> &Model {
        self
    }
}

impl std::ops::Deref for F32Base<'_> {
    type Target = Model;
    fn deref(&self) -> &Model {
        match self {
            F32Base::Shared(m) => m,
            F32Base::Loaded(m) => m,
        }
    }
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
                precision: eval.precision,
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
        let available = dataset.items.len();
        let dataset = match cfg.probe_text_limit() {
            Some(n) => dataset.subsample(n, cfg.seed),
            None => dataset,
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
            available,
            probes: BTreeMap::new(),
            scores: None,
            neurons: None,
            residuals: None,
            base_fingerprint,
            served: None,
        })
    }

    /// Creates the output folder `cfg.out` and opens a session evaluating with the config's
    /// settings (evaluation cache under the asset cache): what `run`, `sweep` and `ablate`
    /// all start with.
    pub fn start(cfg: RunConfig, inputs: Inputs<'a>) -> Result<Session<'a>> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.out)
            .with_context(|| format!("creating {}", cfg.out.display()))?;
        let eval = cfg.eval_config(Some(inputs.fetch.cache_dir.join("eval")));
        Session::open(cfg, inputs, eval)
    }

    /// Mean-pooled states of the probe dataset at `points`, texts cut to `max_tokens`
    /// (through the activation cache).
    fn collect_at(
        &self,
        points: Vec<Point>,
        max_tokens: usize,
    ) -> Result<(Vec<Activations>, CollectStats)> {
        let opts = CollectOptions {
            points,
            pool: Pool::Mean,
            max_tokens,
            batch_size: 16,
            cache_dir: self.cfg.cache.then(|| self.fetch.cache_dir.clone()),
            progress: true,
        };
        let _timed = stage(Stage::Collection, self.dataset.name.clone());
        collect_loading(
            &self.base,
            Precision::F32,
            &|| self.f32_base(),
            &self.dataset,
            &opts,
        )
    }

    /// [`Session::collect_at`] with the config's token limit.
    fn collect(&self, points: Vec<Point>) -> Result<(Vec<Activations>, CollectStats)> {
        self.collect_at(points, self.cfg.probe.max_tokens)
    }

    /// The probe dataset's labels.
    fn labels(&self) -> Vec<u8> {
        self.dataset.items.iter().map(|(_, l)| *l).collect()
    }

    /// The probe of the config's `[probe]` settings (see [`Session::probe_with`]).
    pub fn probe(&mut self, dir: &Path) -> Result<(Probe, ProbeInfo)> {
        let fit = self.cfg.probe.clone();
        self.probe_with(&fit, dir)
    }

    /// The probe `fit` describes, trained on first use and saved to `dir`. Several MLP-input
    /// points (`mlp:all`) give one joint probe over those blocks.
    pub fn probe_with(&mut self, fit: &FitOptions, dir: &Path) -> Result<(Probe, ProbeInfo)> {
        let key = serde_json::to_string(fit)?;
        if let Some(p) = self.probes.get(&key) {
            return Ok(p.clone());
        }
        let points = fit.layer.points(self.base.config().num_layers)?;
        let joint = points.len() > 1;
        if joint && mlp_blocks(&points).is_none() {
            bail!(
                "probe point {:?}: several points make a joint probe, which reads MLP inputs only",
                fit.layer.to_string()
            );
        }
        let (acts, stats) = self.collect_at(points, fit.max_tokens)?;
        let meta = ProbeMeta {
            model: Some(self.model_path.display().to_string()),
            model_sha256: Some(self.model_sha256.clone()),
            precision: Some("f32".into()),
            // A joint probe is named as the config spells it (`mlp:all`).
            point: joint.then(|| fit.layer.to_string()),
            pool: Some(Pool::Mean),
            max_tokens: Some(fit.max_tokens),
            dataset: Some(self.dataset.name.clone()),
            dataset_sha256: Some(self.dataset.content_hash()),
            balanced: Some(self.cfg.balance),
            seed: Some(self.cfg.seed),
            direction: Some(DIRECTION_NOTE.into()),
            ..ProbeMeta::default()
        };
        let timed = stage(Stage::Training, fit.layer.to_string());
        let opts = TrainOptions::new(fit.clone(), self.cfg.seed);
        let f = probe::fit(&acts, &self.labels(), &opts, meta, joint)?;
        drop(timed);
        let probe = f.probe()?;
        let name = f.meta.point.clone().unwrap_or_default();
        let stem = match fit.tag().as_str() {
            "paper" => format!("probe.{}", name.replace(':', "")),
            tag => format!("probe.{}.{tag}", name.replace(':', "")),
        };
        let file = dir.join(format!("{stem}.safetensors"));
        probe.save(&file)?;
        let r = &f.report;
        let info = ProbeInfo {
            point: name,
            file: file.clone(),
            dataset: self.dataset.name.clone(),
            texts: self.dataset.items.len(),
            texts_available: self.available,
            test_accuracy: r.test.accuracy,
            test_roc_auc: r.test.roc_auc,
            train_accuracy: r.train.accuracy,
            chosen_epoch: r.chosen_epoch,
            activations_cached: stats.computed_points == 0,
        };
        crate::formats::io::write_atomic(
            &dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(&serde_json::json!({"info": info, "report": r}))?
                .as_bytes(),
        )?;
        self.probes.insert(key.clone(), (probe, info));
        Ok(self.probes[&key].clone())
    }

    /// Per-neuron activation scores of the gate rows ([`crate::surgery::activation`]), from
    /// the probe dataset's pooled MLP inputs (cached activations); computed once.
    pub fn activation_scores(&mut self, matrix: Matrix) -> Result<Vec<Vec<f32>>> {
        if let Some(s) = &self.scores {
            return Ok(s.clone());
        }
        let (acts, _) = self.collect(parse_points("mlp:all", self.base.config().num_layers)?)?;
        let labels = self.labels();
        let xs: Vec<&[f32]> = acts.iter().map(|a| &a.data[..]).collect();
        let s = activation_scores(&self.file, matrix, &xs, &labels)?;
        self.scores = Some(s.clone());
        Ok(s)
    }

    /// Fills the activation cache with the final norm and every residual point in one pass over
    /// the probe data (the paper's probe and ProFS then read it instead of running twice).
    pub fn prefetch_points(&self) -> Result<()> {
        let mut p = vec![Point::FinalNorm];
        p.extend(residual_points(self.base.config().num_layers));
        self.collect(p).map(|_| ())
    }

    /// Generates every continuation of this session's evaluations on a server: the base
    /// under `serving.names.base`, each variant under its label's name, with the variant's
    /// adapter file checked against its edit first ([`serving::check_adapter`]).
    pub fn serve(&mut self, serving: &Serving) -> Result<()> {
        let labels = [BASE, EDITED, CONTROL_DIRECTION, CONTROL_ROWS];
        let endpoints = labels
            .iter()
            .map(|l| Ok((l.to_string(), serving.endpoint(l)?)));
        self.served = Some(endpoints.collect::<Result<_>>()?);
        Ok(())
    }

    /// The base model in f32, what activations are collected from: the evaluation's model
    /// when that runs in f32, else loaded for the caller and dropped after it. Keeping an f32
    /// copy for the whole session held memory evaluation never reads: a 0.5 B model's is
    /// 2 GB, half of `scalpel compare`'s peak on Qwen2.5-Coder-0.5B.
    fn f32_base(&self) -> Result<F32Base<'_>> {
        if self.base.precision == Precision::F32 {
            return Ok(F32Base::Shared(&self.base));
        }
        let m = Model::load(
            &self.model_path,
            &LoadOptions {
                precision: Precision::F32,
            },
        )
        .with_context(|| format!("loading {}", self.model_path.display()))?;
        Ok(F32Base::Loaded(Box::new(m)))
    }

    /// The base subject for [`run_suites`].
    fn base_subject(&self) -> Subject<'_> {
        Subject {
            label: "base".into(),
            model: &self.base,
            endpoint: self.served.as_ref().and_then(|s| s.get(BASE)),
            fingerprint: self.base_fingerprint.clone(),
        }
    }

    /// The prompting baseline: the base model, unedited, on `prompts` each preceded by
    /// `instruction` (raw completion, `max_new` tokens, the `file` suite), scored like the
    /// rest. Prompts are written as JSONL into `dir`.
    pub fn prompted_base(
        &self,
        instruction: &str,
        prompts: &[String],
        max_new: usize,
        dir: &Path,
    ) -> Result<Report> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join("prompts.jsonl");
        let mut text = String::new();
        for p in prompts {
            text.push_str(
                &serde_json::json!({ "prompt": format!("{instruction}{p}") }).to_string(),
            );
            text.push('\n');
        }
        crate::formats::io::write_atomic(&file, text.as_bytes())?;
        let eval = EvalConfig {
            suites: vec![crate::eval::Suite::File],
            limit: None,
            max_new: Some(max_new),
            prompt_file: Some(file),
            prompt_field: "prompt".into(),
            prompt_file_chat: false,
            ..self.eval.clone()
        };
        let report = run_suites(&self.base_subject(), None, &eval, self.scorers, self.fetch)?;
        write_report(&report, &dir.join("eval"))?;
        Ok(report)
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
        let (probe, _) = self.probe_with(&v.fit, &probes_dir)?;
        let timed = stage(Stage::Edit, v.label.clone());
        let (plan, k, total_rows, record) = self.plan(&probe, v)?;
        crate::formats::io::write_atomic(
            &dir.join("plan.json"),
            serde_json::to_string_pretty(&record)?.as_bytes(),
        )?;
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
        drop(timed);
        let endpoint = match &self.served {
            Some(s) => Some(s.get(&v.label).with_context(|| {
                format!("{}: the server holds no model for it (a served run evaluates the base, the edit and its two controls)", v.label)
            })?),
            None => None,
        };
        if endpoint.is_some() {
            serving::check_adapter(&self.file, &plan, &serving::adapter_path(&self.file, dir))?;
        }
        let edited = Model::load(
            &model_out,
            &LoadOptions {
                precision: self.eval.precision,
            },
        )?;
        let subject = Subject {
            label: v.label.clone(),
            model: &edited,
            endpoint,
            fingerprint: fingerprint(&model_out)?,
        };
        let base = self.base_subject();
        let report = run_suites(&subject, Some(&base), &self.eval, self.scorers, self.fetch)?;
        write_report(&report, &dir.join("eval"))?;
        drop(edited);
        if !keep_model {
            remove_model(&model_out)?;
        }
        let points = v.fit.layer.points(self.base.config().num_layers)?;
        let info = EditInfo {
            point: if points.len() == 1 {
                point_name(points[0])
            } else {
                v.fit.layer.to_string()
            },
            alpha: v.recipe.as_ref().map_or(v.edit.alpha, |r| r.strength),
            k,
            total_rows,
            delta_norm: plan.delta_norm(),
            stored_change_norm: w.stored_change_norm,
            model: keep_model.then(|| model_out.clone()),
        };
        Ok((row_from_report(&v.label, &report, true, Some(info)), report))
    }

    /// The variant's edit plan, the number of neurons (rows) it changes, the model's gate
    /// rows, and what to record as `plan.json` (the selection, or the recipe's report).
    pub fn plan(
        &mut self,
        probe: &Probe,
        v: &Variant,
    ) -> Result<(EditPlan, usize, usize, serde_json::Value)> {
        let Some(r) = &v.recipe else {
            let sel = self.select(probe, v)?;
            let plan = plan_edit(&sel, probe, &v.edit)?;
            let record = serde_json::to_value(&sel)?;
            return Ok((plan, sel.k, sel.total_rows, record));
        };
        let labels = self.labels();
        // AurA's neuron activations: every `stride`-th text (at most AURA_TEXTS of them, so
        // the extra forward pass stays within minutes), with their labels.
        let stride = self.dataset.items.len().div_ceil(AURA_TEXTS).max(1);
        let mut labels = labels;
        if r.recipe == Recipe::Aura {
            labels = labels.into_iter().step_by(stride).collect();
        }
        if r.recipe == Recipe::Aura && self.neurons.is_none() {
            let texts: Vec<&str> = self
                .dataset
                .items
                .iter()
                .step_by(stride)
                .map(|(t, _)| t.as_str())
                .collect();
            eprintln!(
                "measuring pooled neuron activations on {} texts",
                texts.len()
            );
            self.neurons = Some(pooled_activations(
                &*self.f32_base()?,
                &self.file,
                &texts,
                self.cfg.probe.max_tokens,
                16,
            )?);
        }
        if r.recipe == Recipe::Profs && self.residuals.is_none() {
            let n = self.base.config().num_layers;
            let (acts, _) = self.collect(residual_points(n))?;
            let mut res = vec![None; n];
            for a in acts {
                if let Point::Residual(b) = a.point {
                    res[b] = Some(a.data);
                }
            }
            self.residuals = Some(res);
        }
        let measured = Measured {
            labels: &labels,
            neurons: self.neurons.as_deref(),
            residuals: self.residuals.as_deref(),
        };
        let (plan, report) = plan_recipe(&self.file, probe, &measured, r)?;
        let total: usize = self
            .file
            .matrix_tensors(Matrix::Gate)?
            .iter()
            .map(|t| t.n_rows)
            .sum();
        let record = serde_json::json!({"recipe": r, "report": report});
        Ok((plan, report.neurons, total, record))
    }

    /// The variant's selection (with measured scores when it ranks by activation).
    pub fn select(&mut self, probe: &Probe, v: &Variant) -> Result<Selection> {
        let scores = match v.select.ranking {
            Ranking::Activation => Some(self.activation_scores(v.select.matrix)?),
            _ => None,
        };
        select_with(&self.file, probe, &v.select, scores.as_deref())
    }

    /// `name.gguf` for a GGUF input, `name/` for a Hugging Face folder.
    pub fn edited_name(&self, name: &str) -> String {
        use crate::formats::ModelFormat;
        match self.file.format() {
            ModelFormat::Gguf => format!("{name}.gguf"),
            ModelFormat::Hf => name.to_string(),
        }
    }

    /// Also writes the edit re-quantised to the input's storage type (the small file to
    /// ship); returns the stored error norm against the intended change.
    pub fn write_requantised(&mut self, v: &Variant, out: &Path) -> Result<f64> {
        let probes_dir = self.cfg.out.join("probes");
        let (probe, _) = self.probe_with(&v.fit, &probes_dir)?;
        let (plan, ..) = self.plan(&probe, v)?;
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

/// Texts AurA's activations are measured on, at most (every k-th text of the probe data).
pub const AURA_TEXTS: usize = 3000;

fn residual_points(n: usize) -> Vec<Point> {
    (0..n).map(Point::Residual).collect()
}

fn remove_model(p: &Path) -> Result<()> {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    r.with_context(|| format!("removing {}", p.display()))
}
