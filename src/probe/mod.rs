//! Step 1 of Model Surgery: the behaviour probe — a linear classifier on pooled hidden
//! states whose undesirable-class row is the direction the surgery adds to gate rows.

pub mod file;

pub use file::{Direction, Probe};
