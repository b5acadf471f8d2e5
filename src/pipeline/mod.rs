//! The whole method in one call: train the probe, select and edit gate rows, evaluate the
//! base, the edited model and two controls, and write one report folder
//! ([`run::run`]); the α / K grid ([`sweep`]) and the paper's ablations ([`ablate`]) build
//! on the same [`session::Session`]. Their settings: [`config::RunConfig`] (one table per
//! step), with [`legacy`] reading files of the earlier flat layout.

pub mod ablate;
pub mod adapters;
pub mod compare;
pub mod config;
pub mod labels;
pub mod legacy;
pub mod plots;
pub mod rows;
pub mod run;
pub mod serving;
pub mod session;
pub mod sweep;

pub use config::{Behaviour, Profile, RunConfig};
pub use rows::Row;
pub use run::{run, run_served, RunSummary, Verdict};
pub use serving::{ServedNames, Serving};
pub use session::{Inputs, Session, Variant};
