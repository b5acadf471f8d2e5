//! Pure text scorers: each maps a model continuation (or a list of them) to numbers.
//!
//! - [`hatesonar`]: toxicity = P(hate) + P(offensive) of the hatesonar classifier, executed from
//!   its ONNX file through the small protobuf reader in [`onnx`].
//! - [`refusal`]: does a response contain one of the paper's refusal markers?
//! - [`sentiment`]: VADER compound / pos / neu / neg (port of `vaderSentiment` 3.3.2).
//! - [`fluency`]: degeneration statistics of continuations.

pub mod fluency;
pub mod hatesonar;
pub mod onnx;
pub mod refusal;
pub mod sentiment;
