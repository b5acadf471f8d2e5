//! Step 1 of Model Surgery: the behaviour probe — a linear classifier on pooled hidden
//! states whose undesirable-class row is the direction the surgery adds to gate rows.
//!
//! - [`collect`]: run the model over labelled texts and pool one vector per text at a
//!   chosen point, cached on disk;
//! - [`remote`]: pooled states from a server's `/v1/embeddings` (client only: its agreement
//!   with [`collect`] is not reached yet, see `docs/serving.md`);
//! - [`train`](mod@train): fit the probe (the paper's Adam recipe, or a closed-form baseline);
//! - [`joint`]: one probe over every block's MLP input (a slice per block), stacked;
//! - [`fingerprint`]: the model's sha256, memoised, for cache keys;
//! - [`metrics`]: accuracy, ROC AUC, confusion matrix;
//! - [`file`]: the probe file.

pub mod collect;
pub mod file;
pub mod fingerprint;
pub mod joint;
mod linear;
mod logistic;
pub mod metrics;
pub mod remote;
mod standardize;
pub mod train;

pub use collect::{
    collect, concat_row, mean_pool, mlp_blocks, parse_points, point_name, Activations,
    CollectOptions, CollectStats, Pool,
};
pub use file::{Direction, Probe};
pub use fingerprint::model_fingerprint;
pub use joint::train_joint;
pub use metrics::{metrics, Metrics};
pub use train::{check_split, train, EpochChoice, Method, TrainOptions, TrainReport, Trained};
