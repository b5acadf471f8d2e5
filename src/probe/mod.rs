//! Step 1 of Model Surgery: the behaviour probe — a linear classifier on pooled hidden
//! states whose undesirable-class row is the direction the surgery adds to gate rows.
//!
//! - [`collect`]: run the model over labelled texts and pool one vector per text at a
//!   chosen point, cached on disk;
//! - [`remote`]: pooled states from a server's `/v1/embeddings` (client only: its agreement
//!   with [`collect`] is not reached yet, see `docs/serving.md`);
//! - [`options`]: the probe's settings ([`FitOptions`]: point, token limit, method, epochs…)
//!   and [`layer`], the typed `--layer` spelling;
//! - [`fit`](mod@fit): the one entry point from pooled activations to a probe, used by
//!   `scalpel probe train` and the pipeline;
//! - [`train`](mod@train): fit the probe (the paper's Adam recipe, or a closed-form baseline);
//! - [`joint`]: one probe over every block's MLP input (a slice per block), stacked;
//! - [`fingerprint`]: the model's sha256, memoised, for cache keys;
//! - [`metrics`]: accuracy, ROC AUC, confusion matrix;
//! - [`file`]: the probe file, and [`meta`], its metadata as a struct.

pub mod collect;
pub mod file;
pub mod fingerprint;
pub mod fit;
pub mod joint;
pub mod layer;
mod linear;
mod logistic;
pub mod meta;
pub mod metrics;
pub mod options;
pub mod remote;
mod standardize;
pub mod train;

pub use collect::{
    collect, collect_loading, concat_row, mean_pool, mlp_blocks, parse_points, point_name,
    Activations, CollectOptions, CollectStats, Pool,
};
pub use file::{Direction, Probe};
pub use fingerprint::model_fingerprint;
pub use fit::{fit, Fitted};
pub use joint::train_joint;
pub use layer::Layer;
pub use meta::ProbeMeta;
pub use metrics::{metrics, Metrics};
pub use options::{EpochChoice, FitOptions, Method, MAX_LR};
pub use train::{check_split, train, TrainOptions, TrainReport, Trained};
