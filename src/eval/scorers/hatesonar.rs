//! Toxicity: a Rust port of the hatesonar classifier (`hatesonar==0.1.0`, file
//! `hatesonar/model/model.onnx`).
//!
//! The ONNX graph written by skl2onnx is a classic text pipeline, and this module executes it op
//! by op, reading every parameter from the file:
//!
//! | op | what it does here |
//! |---|---|
//! | `Reshape`, `Flatten` | shape changes; a single text stays a single row |
//! | `StringNormalizer` | lower-cases the text (simple one-to-one case mapping, see [`change_case`]) |
//! | `com.microsoft:Tokenizer` | all matches of `tokenexp` (e.g. `[a-zA-Z0-9_]+`), shorter than `mincharnum` dropped |
//! | `TfIdfVectorizer` | unigram counts over `pool_strings` (mode TF / IDF / TFIDF) |
//! | `Mul` | times the idf initializer |
//! | `ai.onnx.ml:Normalizer` | L1 / L2 / MAX row normalisation; an all-zero row stays zero |
//! | `ai.onnx.ml:LinearClassifier` | `x·Wᵀ + b`, label = first arg-max, post-transform SOFTMAX / LOGISTIC / NONE |
//! | `Cast`, `ZipMap` | type changes of the label / probabilities |
//!
//! Any other op is refused at load with an error naming it. The graph is checked when it is
//! loaded (every node input is produced earlier with the right kind of value), so scoring a
//! text cannot fail afterwards.
//!
//! Arithmetic is done in `f64` and rounded to `f32` at the end; onnxruntime works in `f32`,
//! and the two agree to ~1e-7 (the agreement test asserts 1e-5).

mod exec;

pub use exec::change_case;
use exec::{argmax, run_op};

use super::onnx::{read_model, NodeProto, TensorProto};
use anyhow::{bail, ensure, Context, Result};
use regex::Regex;
use std::collections::HashMap;
use std::path::Path;

/// Class names of the three outputs, in the order of [`HateSonar::probs`].
pub const CLASS_NAMES: [&str; 3] = ["hate_speech", "offensive_language", "neither"];

/// The hatesonar text classifier, loaded from its ONNX file.
#[derive(Debug, Clone)]
pub struct HateSonar {
    steps: Vec<Step>,
    input: String,
    probs_output: String,
    label_output: Option<String>,
}

/// Output of one classification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Predicted class label (0 hate speech, 1 offensive language, 2 neither).
    pub label: i64,
    /// Probabilities of hate speech, offensive language, neither.
    pub probs: [f32; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Floats,
    Label,
}

#[derive(Debug, Clone)]
enum Value {
    /// Strings of one row (the text, or its tokens).
    Text(Vec<String>),
    /// One row of numbers.
    Floats(Vec<f64>),
    /// A class label.
    Label(i64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Lower,
    Upper,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TfIdfMode {
    Tf,
    Idf,
    TfIdf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Norm {
    L1,
    L2,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PostTransform {
    None,
    Softmax,
    Logistic,
}

#[derive(Debug, Clone)]
enum Op {
    /// Reshape / Flatten / Cast / ZipMap: no change to a single row.
    PassThrough,
    StringNormalizer(Case),
    Tokenizer {
        regex: Regex,
        min_chars: usize,
    },
    TfIdf {
        vocab: HashMap<String, usize>,
        dim: usize,
        mode: TfIdfMode,
        weights: Vec<f64>,
    },
    Mul(Vec<f64>),
    Normalizer(Norm),
    LinearClassifier {
        coefficients: Vec<f64>,
        intercepts: Vec<f64>,
        n_features: usize,
        post: PostTransform,
    },
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    /// The one non-constant input.
    input: String,
    outputs: Vec<String>,
}

impl HateSonar {
    /// Load the classifier from hatesonar's `model.onnx`.
    ///
    /// Fails with a one-line error if the file cannot be read or decoded, if the graph uses an
    /// op this port does not implement (the error names it), or if the classes are not the
    /// three hatesonar classes `[0, 1, 2]`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_model(&read_model(path)?)
            .with_context(|| format!("loading hatesonar classifier {}", path.display()))
    }

    fn from_model(model: &super::onnx::ModelProto) -> Result<Self> {
        let graph = model.graph.as_ref().context("the ONNX file has no graph")?;
        let initializers: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        ensure!(
            graph.input.len() == 1,
            "expected one graph input, found {}",
            graph.input.len()
        );
        let input = graph.input[0].name.clone();
        let mut kinds: HashMap<String, Kind> = HashMap::from([(input.clone(), Kind::Text)]);
        let mut steps = Vec::with_capacity(graph.node.len());
        for node in &graph.node {
            let step = build_step(node, &initializers, &kinds)?;
            let out_kinds = output_kinds(&step, &kinds);
            ensure!(
                step.outputs.len() <= out_kinds.len(),
                "{}: {} outputs, at most {} supported",
                node.describe(),
                step.outputs.len(),
                out_kinds.len()
            );
            for (name, kind) in step.outputs.iter().zip(out_kinds) {
                kinds.insert(name.clone(), kind);
            }
            steps.push(step);
        }
        let mut probs_output = None;
        let mut label_output = None;
        for out in &graph.output {
            match kinds.get(&out.name) {
                Some(Kind::Floats) if probs_output.is_none() => {
                    probs_output = Some(out.name.clone())
                }
                Some(Kind::Label) if label_output.is_none() => {
                    label_output = Some(out.name.clone())
                }
                _ => {}
            }
        }
        let probs_output =
            probs_output.context("no graph output carries the class probabilities")?;
        let classifier = steps
            .iter()
            .find_map(|s| match &s.op {
                Op::LinearClassifier { intercepts, .. } => Some(intercepts.len()),
                _ => None,
            })
            .context("the graph has no LinearClassifier")?;
        ensure!(
            classifier == 3,
            "expected 3 classes, the classifier has {classifier}"
        );
        Ok(Self {
            steps,
            input,
            probs_output,
            label_output,
        })
    }

    /// Probabilities of (hate speech, offensive language, neither) for `text`.
    pub fn probs(&self, text: &str) -> [f32; 3] {
        // `predict` can only fail on a graph that `load` would have rejected.
        self.predict(text).map_or([f32::NAN; 3], |p| p.probs)
    }

    /// Toxicity of `text`: P(hate speech) + P(offensive language), in [0, 1].
    pub fn toxicity(&self, text: &str) -> f32 {
        let p = self.probs(text);
        p[0] + p[1]
    }

    /// Toxicity of each text of a batch.
    pub fn toxicity_batch<S: AsRef<str>>(&self, texts: &[S]) -> Vec<f32> {
        texts.iter().map(|t| self.toxicity(t.as_ref())).collect()
    }

    /// Label and probabilities for `text`.
    pub fn predict(&self, text: &str) -> Result<Prediction> {
        let mut env: HashMap<&str, Value> =
            HashMap::from([(self.input.as_str(), Value::Text(vec![text.to_string()]))]);
        for step in &self.steps {
            let x = env
                .get(step.input.as_str())
                .with_context(|| format!("value {:?} missing", step.input))?;
            let outs = run_op(&step.op, x)?;
            for (name, v) in step.outputs.iter().zip(outs) {
                env.insert(name.as_str(), v);
            }
        }
        let probs = match env.get(self.probs_output.as_str()) {
            Some(Value::Floats(p)) if p.len() == 3 => [p[0] as f32, p[1] as f32, p[2] as f32],
            _ => bail!("output {:?} is not 3 probabilities", self.probs_output),
        };
        let label = match self.label_output.as_deref().and_then(|n| env.get(n)) {
            Some(Value::Label(l)) => *l,
            // No label output in the graph: the arg-max of the probabilities.
            _ => argmax(&probs.map(f64::from)) as i64,
        };
        Ok(Prediction { label, probs })
    }
}

/// Kinds of the outputs a step produces, given the kinds known so far.
fn output_kinds(step: &Step, kinds: &HashMap<String, Kind>) -> Vec<Kind> {
    match &step.op {
        Op::PassThrough => vec![kinds[&step.input]],
        Op::StringNormalizer(_) | Op::Tokenizer { .. } => vec![Kind::Text],
        Op::TfIdf { .. } | Op::Mul(_) | Op::Normalizer(_) => vec![Kind::Floats],
        Op::LinearClassifier { .. } => vec![Kind::Label, Kind::Floats],
    }
}

/// Check one node and turn it into a step.
fn build_step(
    node: &NodeProto,
    inits: &HashMap<&str, &TensorProto>,
    kinds: &HashMap<String, Kind>,
) -> Result<Step> {
    let what = node.describe();
    // Exactly one input is a computed value; the others must be constants.
    let computed: Vec<&String> = node
        .input
        .iter()
        .filter(|i| !inits.contains_key(i.as_str()))
        .collect();
    ensure!(
        computed.len() == 1,
        "{what}: expected one computed input, found {}",
        computed.len()
    );
    let input = computed[0].clone();
    let kind = *kinds
        .get(&input)
        .with_context(|| format!("{what}: input {input:?} is not produced by an earlier node"))?;
    let need = |want: Kind| -> Result<()> {
        ensure!(
            kind == want,
            "{what}: input {input:?} is {kind:?}, expected {want:?}"
        );
        Ok(())
    };
    let constant = |i: usize| -> Result<&TensorProto> {
        let name = node
            .input
            .get(i)
            .with_context(|| format!("{what}: missing input {i}"))?;
        inits
            .get(name.as_str())
            .copied()
            .with_context(|| format!("{what}: input {name:?} is not a constant"))
    };
    let op = match (node.domain.as_str(), node.op_type.as_str()) {
        ("", "Reshape") => {
            // Only reshapes that keep a single text a single row, e.g. `[-1]`.
            let shape = constant(1)?.to_i64()?;
            ensure!(
                shape.iter().all(|&d| d == -1 || d == 1),
                "{what}: unsupported target shape {shape:?}"
            );
            Op::PassThrough
        }
        ("", "Flatten") => Op::PassThrough,
        ("", "Cast") => {
            // To INT64 (7) for the label, FLOAT (1) / DOUBLE (11) for numbers.
            let to = node.attr_req("to")?.i;
            let ok = match kind {
                Kind::Label => to == 7,
                Kind::Floats => to == 1 || to == 11,
                Kind::Text => to == 8,
            };
            ensure!(ok, "{what}: unsupported cast of {kind:?} to data type {to}");
            Op::PassThrough
        }
        ("ai.onnx.ml", "ZipMap") => {
            need(Kind::Floats)?;
            Op::PassThrough
        }
        ("", "StringNormalizer") => {
            need(Kind::Text)?;
            ensure!(
                node.attr("stopwords").is_none_or(|a| a.strings.is_empty()),
                "{what}: stopwords are not supported"
            );
            let case = match node.attr_s("case_change_action", "NONE")?.as_str() {
                "LOWER" => Case::Lower,
                "UPPER" => Case::Upper,
                "NONE" => Case::Keep,
                other => bail!("{what}: unknown case_change_action {other:?}"),
            };
            Op::StringNormalizer(case)
        }
        ("com.microsoft", "Tokenizer") => {
            need(Kind::Text)?;
            ensure!(
                node.attr_i("mark", 0) == 0,
                "{what}: mark=1 (start/end markers) is not supported"
            );
            ensure!(
                node.attr("separators").is_none_or(|a| a.strings.is_empty()),
                "{what}: separator tokenisation is not supported, only tokenexp"
            );
            let exp = node.attr_s("tokenexp", "")?;
            ensure!(!exp.is_empty(), "{what}: no tokenexp");
            let regex = Regex::new(&exp).with_context(|| format!("{what}: tokenexp {exp:?}"))?;
            let min_chars = usize::try_from(node.attr_i("mincharnum", 1)).unwrap_or(1);
            Op::Tokenizer { regex, min_chars }
        }
        ("", "TfIdfVectorizer") => {
            need(Kind::Text)?;
            build_tfidf(node)?
        }
        ("", "Mul") => {
            need(Kind::Floats)?;
            let other = node
                .input
                .iter()
                .position(|i| *i != input)
                .context("Mul with one input")?;
            Op::Mul(
                constant(other)?
                    .to_f32()?
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            )
        }
        ("ai.onnx.ml", "Normalizer") => {
            need(Kind::Floats)?;
            let norm = match node.attr_s("norm", "MAX")?.as_str() {
                "L1" => Norm::L1,
                "L2" => Norm::L2,
                "MAX" => Norm::Max,
                other => bail!("{what}: unknown norm {other:?}"),
            };
            Op::Normalizer(norm)
        }
        ("ai.onnx.ml", "LinearClassifier") => {
            need(Kind::Floats)?;
            build_linear(node)?
        }
        (domain, op) => {
            let op = if domain.is_empty() {
                op.to_string()
            } else {
                format!("{domain}:{op}")
            };
            bail!("unsupported ONNX op {op} (node {:?}); this port implements only the hatesonar pipeline", node.name)
        }
    };
    Ok(Step {
        op,
        input,
        outputs: node.output.clone(),
    })
}

fn build_tfidf(node: &NodeProto) -> Result<Op> {
    let what = node.describe();
    let min_n = node.attr_i("min_gram_length", 1);
    let max_n = node.attr_i("max_gram_length", 1);
    ensure!(
        min_n == 1 && max_n == 1,
        "{what}: only unigrams are supported, found n-grams {min_n}..={max_n}"
    );
    let mode = match node.attr_s("mode", "")?.as_str() {
        "TF" => TfIdfMode::Tf,
        "IDF" => TfIdfMode::Idf,
        "TFIDF" => TfIdfMode::TfIdf,
        other => bail!("{what}: unknown mode {other:?}"),
    };
    let pool = &node.attr_req("pool_strings")?.strings;
    let indexes = &node.attr_req("ngram_indexes")?.ints;
    ensure!(
        pool.len() == indexes.len(),
        "{what}: {} pool strings but {} ngram indexes",
        pool.len(),
        indexes.len()
    );
    // ngram_counts[k] is where the (k+1)-grams start in the pool; with unigrams only, the whole
    // pool up to the bigrams' start (if any) is unigrams.
    let counts = &node.attr_req("ngram_counts")?.ints;
    let end = counts.get(1).map_or(pool.len() as i64, |&c| c);
    let start = counts.first().copied().unwrap_or(0);
    ensure!(
        0 <= start && start <= end && end as usize <= pool.len(),
        "{what}: bad ngram_counts {counts:?}"
    );
    let mut vocab = HashMap::with_capacity(pool.len());
    let mut dim = 0usize;
    for k in start as usize..end as usize {
        let word = String::from_utf8(pool[k].clone())
            .with_context(|| format!("{what}: pool string {k} is not UTF-8"))?;
        let idx =
            usize::try_from(indexes[k]).with_context(|| format!("{what}: negative ngram index"))?;
        dim = dim.max(idx + 1);
        vocab.insert(word, idx);
    }
    let weights: Vec<f64> = match node.attr("weights") {
        Some(a) if !a.floats.is_empty() => a.floats.iter().map(|&w| f64::from(w)).collect(),
        _ => vec![1.0; dim],
    };
    ensure!(
        weights.len() >= dim,
        "{what}: {} weights for {dim} outputs",
        weights.len()
    );
    Ok(Op::TfIdf {
        vocab,
        dim,
        mode,
        weights,
    })
}

fn build_linear(node: &NodeProto) -> Result<Op> {
    let what = node.describe();
    let labels = &node.attr_req("classlabels_ints")?.ints;
    ensure!(
        labels.as_slice() == [0, 1, 2],
        "{what}: expected class labels [0, 1, 2], found {labels:?}"
    );
    let coefficients: Vec<f64> = node
        .attr_req("coefficients")?
        .floats
        .iter()
        .map(|&c| f64::from(c))
        .collect();
    let n = labels.len();
    let intercepts: Vec<f64> = match node.attr("intercepts") {
        Some(a) => a.floats.iter().map(|&c| f64::from(c)).collect(),
        None => vec![0.0; n],
    };
    ensure!(
        intercepts.len() == n,
        "{what}: {} intercepts for {n} classes",
        intercepts.len()
    );
    ensure!(
        !coefficients.is_empty() && coefficients.len().is_multiple_of(n),
        "{what}: {} coefficients do not split into {n} classes",
        coefficients.len()
    );
    let post = match node.attr_s("post_transform", "NONE")?.as_str() {
        "NONE" => PostTransform::None,
        "SOFTMAX" => PostTransform::Softmax,
        "LOGISTIC" => PostTransform::Logistic,
        other => bail!("{what}: post_transform {other:?} is not supported"),
    };
    // `multi_class` only matters for binary classifiers in onnxruntime; three classes here.
    Ok(Op::LinearClassifier {
        n_features: coefficients.len() / n,
        coefficients,
        intercepts,
        post,
    })
}
