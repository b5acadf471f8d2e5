//! The names of a run's models: rows of its table, folders of its report, and the `model`
//! names a server holds them under by default.

/// The unedited model.
pub const BASE: &str = "base";
/// The edited model.
pub const EDITED: &str = "edited";
/// The control with a random direction of the probe's norm in the same rows.
pub const CONTROL_DIRECTION: &str = "control-random-direction";
/// The control with the real direction in random rows.
pub const CONTROL_ROWS: &str = "control-random-rows";
