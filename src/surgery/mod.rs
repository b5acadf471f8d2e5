//! Steps 2 and 3 of Model Surgery: select the behaviour region, edit it, write the result.
//!
//! - [`model`]: the gate / up projections of a GGUF file or HF folder, row by row.
//! - [`select`]: global cosine ranking of rows against the probe direction → a [`Selection`].
//! - [`directions`]: each block's ranking and edit vectors (per-block probes, norm gains).
//! - [`activation`]: per-neuron scores measured on labelled text, for activation ranking.
//! - [`edit`]: the per-row changes as an [`EditPlan`] (`row += α · w` for the paper).
//! - [`recipes`]: output-side localisations (value vectors, AurA, ProFS) and a distributed
//!   edit, each a [`recipes::Recipe`] building an [`EditPlan`] for the same writers.
//! - [`write`]: streams the edited model and its [`crate::formats::patch::Patch`].
//! - [`adapter`]: the edit as a LoRA adapter (GGUF for llama.cpp / ollama, PEFT folder).
//!
//! The flow `select → plan_edit → write_edited` holds at most one tensor in memory besides
//! the plan; everything else is read through memory maps.

pub mod activation;
pub mod adapter;
pub mod directions;
pub mod edit;
pub mod model;
pub mod recipes;
pub mod select;
pub mod write;

pub use edit::{plan_edit, EditOptions, EditPlan, Operation, RowEdit, Scale};
pub use model::{Matrix, MatrixTensor, ModelFile};
pub use select::{select, select_with, Count, Ranking, SelectOptions, Selection};
pub use write::{copy_ahead, write_edited, write_edited_ahead, WriteOptions, WriteReport};
