//! One table row per evaluated model, extracted from an evaluation [`Report`], and the
//! markdown table shared by `run`, `sweep` and `ablate`.

use crate::eval::report::{Ci, Fluency};
use crate::eval::run::SuiteSummary;
use crate::eval::Report;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::PathBuf;

/// The trained probe, as the summary reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeInfo {
    pub point: String,
    pub file: PathBuf,
    pub dataset: String,
    pub texts: usize,
    /// Texts the dataset had before the profile's sample (`texts` when all were used).
    #[serde(default)]
    pub texts_available: usize,
    pub test_accuracy: f64,
    pub test_roc_auc: f64,
    pub train_accuracy: f64,
    pub chosen_epoch: Option<usize>,
    /// Whether the hidden states came from the activation cache.
    pub activations_cached: bool,
}

/// How a variant was edited.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EditInfo {
    pub point: String,
    pub alpha: f32,
    pub k: usize,
    pub total_rows: usize,
    /// ‖intended change‖ and ‖stored change‖ (equal up to f32 rounding at full precision).
    pub delta_norm: f64,
    pub stored_change_norm: f64,
    /// The edited model, when kept.
    pub model: Option<PathBuf>,
}

/// One generative suite of one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteRow {
    pub suite: String,
    pub n: usize,
    pub toxic_rate: Ci,
    pub refusal_rate: Ci,
    pub sentiment_mean: Ci,
    pub fluency: Fluency,
    /// Paired against the base: p of the sign test on prompts crossing the toxicity
    /// threshold, and of the refusal sign test; share of identical continuations.
    pub toxic_p: Option<f64>,
    pub refusal_p: Option<f64>,
    pub identical_share: Option<f64>,
}

/// One model's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub label: String,
    pub suites: Vec<SuiteRow>,
    pub wikitext_ppl: Option<Ci>,
    /// WikiText windows and tokens behind `wikitext_ppl`.
    #[serde(default)]
    pub wikitext_size: Option<(usize, usize)>,
    /// Perplexity ratio to the base (WikiText) and KL(base ‖ model) per token.
    pub ppl_ratio: Option<f64>,
    /// The paired per-window mean NLL difference (model − base, nats/token) with its 95 %
    /// interval. Exponentiated it is the interval of `ppl_ratio`, whose estimate it equals
    /// when every window has the same length.
    #[serde(default)]
    pub ppl_nll_diff: Option<Ci>,
    pub kl: Option<Ci>,
    pub edit: Option<EditInfo>,
    pub warnings: Vec<String>,
}

impl Row {
    /// The row of `suite`, if evaluated.
    pub fn suite(&self, suite: &str) -> Option<&SuiteRow> {
        self.suites.iter().find(|s| s.suite == suite)
    }
}

/// The row of the evaluated model of `report` (`edited`: its `model`; otherwise the model
/// evaluated alone, i.e. the base).
pub fn row_from_report(label: &str, r: &Report, compared: bool, edit: Option<EditInfo>) -> Row {
    let mut suites = Vec::new();
    for s in &r.model.summaries {
        if let SuiteSummary::Generation { suite, summary } = s {
            let d = compared
                .then(|| r.deltas.iter().find(|d| &d.suite == suite))
                .flatten();
            suites.push(SuiteRow {
                suite: suite.clone(),
                n: summary.n,
                toxic_rate: summary.toxic_rate,
                refusal_rate: summary.refusal_rate,
                sentiment_mean: summary.sentiment_mean,
                fluency: summary.fluency,
                toxic_p: d.map(|d| d.toxic_sign.p_value),
                refusal_p: d.map(|d| d.refusal_sign.p_value),
                identical_share: d.map(|d| d.identical_share),
            });
        }
    }
    let ppl = r.model.summaries.iter().find_map(|s| match s {
        SuiteSummary::Perplexity(p) => Some(p),
        _ => None,
    });
    let cap = r.capability.as_ref();
    Row {
        label: label.to_string(),
        suites,
        wikitext_ppl: ppl.map(|p| p.perplexity),
        wikitext_size: ppl.map(|p| (p.windows, p.tokens)),
        ppl_ratio: cap.and_then(|c| c.ppl_ratio),
        ppl_nll_diff: cap.and_then(|c| c.ppl_nll_diff),
        kl: cap.and_then(|c| c.kl),
        edit,
        warnings: r.warnings.clone(),
    }
}

fn pct(c: &Ci) -> String {
    format!(
        "{:.1} [{:.1}, {:.1}]",
        100.0 * c.estimate,
        100.0 * c.lo,
        100.0 * c.hi
    )
}

/// `v` to `prec` decimals, or "–" when it was not measured.
pub(crate) fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.prec$}"))
}

/// The suites whose behaviour columns a table shows (the `kl` suite only feeds agreement).
pub fn behaviour_suites(rows: &[Row]) -> Vec<String> {
    rows.first()
        .map(|r| {
            r.suites
                .iter()
                .map(|s| s.suite.clone())
                .filter(|s| s != "kl")
                .collect()
        })
        .unwrap_or_default()
}

/// A markdown table: per behaviour suite % toxic [95 % CI], sign-test p, continuation
/// perplexity and repeated 3-grams; then WikiText perplexity, its ratio and KL.
pub fn table(rows: &[Row]) -> String {
    let suites = behaviour_suites(rows);
    let mut s = String::from("| model | α | K |");
    let mut rule = String::from("|---|---|---|");
    for su in &suites {
        let _ = write!(
            s,
            " {su} % toxic [95 % CI] | {su} p | {su} cont. ppl | {su} rep. 3-gram |"
        );
        rule.push_str("---|---|---|---|");
    }
    s.push_str(" WikiText ppl [95 % CI] | ppl ratio | KL [95 % CI] |\n");
    rule.push_str("---|---|---|\n");
    s.push_str(&rule);
    for r in rows {
        let (a, k) = r.edit.as_ref().map_or(("–".into(), "–".into()), |e| {
            (format!("{}", e.alpha), format!("{}", e.k))
        });
        let _ = write!(s, "| {} | {a} | {k} |", r.label);
        for su in &suites {
            match r.suite(su) {
                Some(x) => {
                    let _ = write!(
                        s,
                        " {} | {} | {} | {} |",
                        pct(&x.toxic_rate),
                        opt(x.toxic_p, 3),
                        opt(x.fluency.perplexity, 2),
                        opt(x.fluency.repeated_3gram_rate, 3)
                    );
                }
                None => s.push_str(" – | – | – | – |"),
            }
        }
        let ppl = r.wikitext_ppl.map_or("–".into(), |c| {
            format!("{:.2} [{:.2}, {:.2}]", c.estimate, c.lo, c.hi)
        });
        let kl = r.kl.map_or("–".into(), |c| {
            format!("{:.4} [{:.4}, {:.4}]", c.estimate, c.lo, c.hi)
        });
        let _ = writeln!(s, " {ppl} | {} | {kl} |", opt(r.ppl_ratio, 3));
    }
    s
}
