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
//!
//! Further steps (probe, select, edit, eval) and the file formats live beside it.

pub mod eval;
pub mod runtime;
