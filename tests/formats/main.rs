//! File formats and assets: GGUF and safetensors round trips, the asset catalog, datasets.
//!
//! One test binary per area (issue #16: fewer crates, less link time); each module is
//! one former test file.

#[path = "../common/mod.rs"]
mod common;

mod assets;
mod data;
mod gguf_rw;
mod safetensors_rw;
