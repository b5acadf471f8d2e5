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
//! Scorers that need a third-party file (the ONNX model, the VADER lexicon) load it at run time
//! from a path; none of those files is part of the repository.

pub mod scorers;
pub mod stats;
