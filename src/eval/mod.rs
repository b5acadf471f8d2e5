//! Evaluation: did the edit change the behaviour, and did the model stay fluent?
//!
//! Everything here works on text the model already produced, so it runs without a model:
//!
//! - [`scorers`]: per-text scores. [`scorers::hatesonar`] (toxicity, a port of the hatesonar
//!   TF-IDF + logistic-regression classifier read from its ONNX file), [`scorers::refusal`]
//!   (the paper's refusal markers), [`scorers::sentiment`] (VADER), [`scorers::fluency`]
//!   (repetition, distinct-n, non-word tokens, empty outputs; perplexity slot for per-text NLLs).
//! - [`stats`]: turning per-text scores into numbers with uncertainty: bootstrap intervals of a
//!   mean, paired bootstrap of a base-vs-edited difference, and an exact sign test.
//!
//! Running evaluations (these need a model):
//!
//! - [`suites`]: prompt sets + the paper's generation protocols, and suite execution (local
//!   runtime or an OpenAI-compatible endpoint, [`openai`]); [`cache`]: their results and
//!   the KL windows, kept per model by content;
//! - [`capability`]: teacher-forced NLL (continuation fluency, WikiText-2 perplexity),
//!   tokenizer equality; [`kl`]: KL between the base and a model, the base's logits kept for
//!   the process; [`prompt_states`]: continuations' NLL from the
//!   base model's prompt states, run once per prompt set and kept for the process;
//! - [`options`]: the settings a user gives ([`EvalOptions`], a [`Profile`]), resolved into
//!   [`config`]: everything that decides an evaluation's numbers ([`EvalConfig`]) and the
//!   models under it ([`Subject`]);
//! - [`run`]: the entry point [`run::run_suites`] and the [`run::Report`];
//! - [`report`]: per-prompt records, aggregates, paired comparisons, degeneration warnings;
//! - [`markdown`], [`plots`]: `report.md`, SVG plots, and writing the report folder.
//!
//! Scorers that need a third-party file (the ONNX model, the VADER lexicon) load it at run time
//! from a path; none of those files is part of the repository.

pub mod cache;
pub mod capability;
pub mod config;
pub mod kl;
pub mod markdown;
pub mod openai;
pub mod options;
pub mod plots;
pub mod prompt_states;
pub mod report;
pub mod run;
pub mod scorers;
pub mod stats;
pub mod suites;

pub use config::{EvalConfig, Subject, Suite};
pub use options::{EvalOptions, Profile, SuiteList};
pub use run::{run_suites, Report};
