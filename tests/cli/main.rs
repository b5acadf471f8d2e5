//! Command-line behaviour: fetch, inspect, probe, select/edit/patch through the binary.
//!
//! One test binary per area (issue #16: fewer crates, less link time); each module is
//! one former test file.

#[path = "../common/mod.rs"]
mod common;

mod cli_fetch;
mod cli_inspect;
mod cli_probe;
mod cli_surgery;
