//! Selection, edit, patch, recipes and adapters, on tiny models and the shipped ones.
//!
//! One test binary per area (issue #16: fewer crates, less link time); each module is
//! one former test file.

#[path = "../common/mod.rs"]
mod common;

mod adapter;
mod families_surgery;
mod recipes;
mod recipes_profs;
mod surgery;
mod surgery_default;
mod surgery_variants;
