//! GGUF (llama.cpp / ollama) files: a streaming reader and writer of our own.
//!
//! Why not candle's `quantized::gguf_file`: its writer always writes GGUF version 2, ignores
//! `general.alignment` (always 32), loses the order of metadata and tensors (it goes through
//! hash maps) and needs every tensor in memory at once. Model surgery must write a file that
//! differs from the input only in the edited tensors — a no-op rewrite has to be byte-identical
//! — and must not hold a 7B model in memory, so we keep the input's order, version and
//! alignment, map the input instead of reading it, and stream the output tensor by tensor.
//!
//! Layout (all little-endian): magic `GGUF`, version (u32; 2 and 3 supported), tensor count
//! (u64), metadata count (u64), metadata key/value pairs, tensor infos (name, dims with ne0
//! first, ggml type, offset relative to the data section), zero padding to the alignment,
//! then the tensor data, each tensor starting at an aligned offset.

mod read;
mod value;
mod write;

pub use read::GgufFile;
pub use value::{MetaType, MetaValue, StringArray};
pub use write::{write_gguf, GgufRewrite, SlotProducer, TensorProducer, TensorSpec};

use crate::formats::ggml::GgmlType;

/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The GGUF magic, `b"GGUF"` read as a little-endian u32.
pub const MAGIC: u32 = 0x4655_4747;

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.ffn_gate.weight`.
    pub name: String,
    /// Dimensions, ne0 first: a matrix of `rows` rows of `cols` elements is `[cols, rows]`.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Total number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Elements per row (ne0): the contiguous, block-quantised axis.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of all dims but the first.
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Bytes of the tensor's data (validated when the file was opened).
    pub fn n_bytes(&self) -> u64 {
        self.ty.bytes_for(self.n_elements()).unwrap_or(0)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        self.ty.bytes_for(self.row_len()).unwrap_or(0)
    }

    /// Shape in the PyTorch / Hugging Face convention (slowest axis first).
    pub fn torch_shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two).
pub(crate) fn align_up(x: u64, align: u64) -> u64 {
    x.div_ceil(align) * align
}
