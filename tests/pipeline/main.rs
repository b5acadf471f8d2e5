//! The whole pipeline (`run`, `sweep`, `compare`) and probe collection on the default model.
//!
//! One test binary per area (issue #16: fewer crates, less link time); each module is
//! one former test file.

#[path = "../common/mod.rs"]
mod common;

mod default_model;
mod pipeline;
mod probe_collect;
