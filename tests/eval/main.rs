//! Evaluation: suites, servers (eval, probe and run through an endpoint), and the scorers against their own Python packages.
//!
//! One test binary per area (issue #16: fewer crates, less link time); each module is
//! one former test file.

#[path = "../common/mod.rs"]
mod common;

mod eval;
mod eval_endpoint;
mod hatesonar_agreement;
mod hatesonar_synthetic;
mod serving;
mod vader_agreement;
