//! The forward pass: tiny hand-checked models, the three families against llama.cpp and transformers references.
//!
//! One test binary per area (issue #16: fewer crates, less link time); each module is
//! one former test file.

#[path = "../common/mod.rs"]
mod common;

mod families;
mod prefill_tiny;
mod reference;
mod reference_quant;
mod runtime;
mod runtime_families_tiny;
mod runtime_tiny;
