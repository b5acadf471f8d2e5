//! The matrices surgery reads and edits, found by name in either file format.
//!
//! Surgery needs only a few things from a model: which tensors are the gate (or up)
//! projections of which block, their rows as f32, and their raw bytes. Both GGUF and
//! Hugging Face folders are memory-mapped, so reading one block's gate never loads the rest.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::formats::ggml::GgmlType;
use crate::formats::gguf::GgufFile;
use crate::formats::quant;
use crate::formats::safetensors::{Dtype, HfFolder};
use crate::formats::ModelFormat;

/// Which projection of the MLP is edited: both have one row per MLP neuron, in hidden space.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Matrix {
    /// `ffn_gate` / `mlp.gate_proj` (the paper).
    #[default]
    Gate,
    /// `ffn_up` / `mlp.up_proj` (the paper's ablation).
    Up,
    /// `ffn_down` / `mlp.down_proj`: one row per hidden dimension, `n_ff` long (the output
    /// side, edited by the ProFS recipe; not a neuron matrix, so not for selection).
    Down,
}

impl Matrix {
    fn gguf_part(self) -> &'static str {
        match self {
            Matrix::Gate => "ffn_gate",
            Matrix::Up => "ffn_up",
            Matrix::Down => "ffn_down",
        }
    }
    fn hf_part(self) -> &'static str {
        match self {
            Matrix::Gate => "mlp.gate_proj",
            Matrix::Up => "mlp.up_proj",
            Matrix::Down => "mlp.down_proj",
        }
    }
}

/// One block's edited matrix: `n_rows` rows of `row_len` (= hidden size) elements.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixTensor {
    /// Block index.
    pub block: usize,
    /// Tensor name in the file's own naming.
    pub name: String,
    /// Rows (MLP neurons).
    pub n_rows: usize,
    /// Elements per row (the hidden size).
    pub row_len: usize,
    /// Row encoding: the GGUF type, or the safetensors dtype as the ggml type with the same
    /// little-endian bytes (F32, F16, BF16).
    pub ty: GgmlType,
}

/// A model file opened for surgery.
#[derive(Debug)]
pub enum ModelFile {
    /// A GGUF file.
    Gguf(GgufFile),
    /// A Hugging Face folder.
    Hf(HfFolder),
}

impl ModelFile {
    /// Opens a GGUF file, or a Hugging Face folder when `path` is a directory.
    pub fn open(path: &Path) -> Result<ModelFile> {
        if path.is_dir() {
            Ok(ModelFile::Hf(HfFolder::open(path)?))
        } else {
            Ok(ModelFile::Gguf(GgufFile::open(path)?))
        }
    }

    /// The file or folder.
    pub fn path(&self) -> &Path {
        match self {
            ModelFile::Gguf(g) => &g.path,
            ModelFile::Hf(h) => &h.dir,
        }
    }

    /// Which of the two formats it is.
    pub fn format(&self) -> ModelFormat {
        match self {
            ModelFile::Gguf(_) => ModelFormat::Gguf,
            ModelFile::Hf(_) => ModelFormat::Hf,
        }
    }

    /// Every block's `matrix`, ordered by block. Errors when there is none (not a gated-MLP
    /// model), when blocks are missing, or when the tensors are not 2-D matrices.
    pub fn matrix_tensors(&self, matrix: Matrix) -> Result<Vec<MatrixTensor>> {
        let names: Vec<(usize, &str)> = match self {
            ModelFile::Gguf(g) => g
                .tensors
                .iter()
                .filter_map(|t| {
                    Some((
                        block_of(&t.name, "blk.", matrix.gguf_part())?,
                        t.name.as_str(),
                    ))
                })
                .collect(),
            ModelFile::Hf(h) => h
                .tensors
                .iter()
                .filter_map(|t| {
                    Some((
                        block_of(&t.name, "model.layers.", matrix.hf_part())?,
                        t.name.as_str(),
                    ))
                })
                .collect(),
        };
        if names.is_empty() {
            bail!(
                "{}: no {} projection tensors (blk.N.{}.weight / model.layers.N.{}.weight); surgery needs a gated-MLP model",
                self.path().display(),
                matrix.gguf_part(),
                matrix.gguf_part(),
                matrix.hf_part()
            );
        }
        let mut out = Vec::with_capacity(names.len());
        for (block, name) in names {
            out.push(MatrixTensor {
                block,
                ..self.matrix(name)?
            });
        }
        out.sort_by_key(|t| t.block);
        for (i, t) in out.iter().enumerate() {
            if t.block != i {
                bail!(
                    "{}: block {i} has no {} tensor",
                    self.path().display(),
                    matrix.gguf_part()
                );
            }
        }
        Ok(out)
    }

    /// Any 2-D tensor by name, as a matrix of rows (`block` is 0 when the name has none).
    pub fn matrix(&self, name: &str) -> Result<MatrixTensor> {
        let (n_rows, row_len, ty) = match self {
            ModelFile::Gguf(g) => {
                let t = g.require_tensor(name)?;
                if t.dims.len() != 2 {
                    bail!(
                        "{}: {name} has dims {:?}, expected a matrix",
                        g.path.display(),
                        t.dims
                    );
                }
                (t.n_rows() as usize, t.row_len() as usize, t.ty)
            }
            ModelFile::Hf(h) => {
                let t = h.require_tensor(name)?;
                if t.shape.len() != 2 {
                    bail!(
                        "{}: {name} has shape {:?}, expected a matrix",
                        h.dir.display(),
                        t.shape
                    );
                }
                let ty = match t.dtype {
                    Dtype::F32 => GgmlType::F32,
                    Dtype::F16 => GgmlType::F16,
                    Dtype::BF16 => GgmlType::BF16,
                    d => bail!(
                        "{}: {name} is {d:?}; surgery edits F32, F16 and BF16",
                        h.dir.display()
                    ),
                };
                (t.shape[0], t.shape[1], ty)
            }
        };
        if !quant::can_decode(ty) {
            bail!(
                "{}: {name} is stored as {ty}, which scalpel cannot decode",
                self.path().display()
            );
        }
        Ok(MatrixTensor {
            block: 0,
            name: name.to_string(),
            n_rows,
            row_len,
            ty,
        })
    }

    /// Drops this process's mapping of a tensor's pages after reading it (keeps the resident
    /// set to about one tensor while scanning every block).
    pub fn release(&self, name: &str) {
        match self {
            ModelFile::Gguf(g) => {
                if let Some(t) = g.tensor(name) {
                    g.release(t)
                }
            }
            ModelFile::Hf(h) => {
                if let Some(t) = h.tensor(name) {
                    h.release(t)
                }
            }
        }
    }

    /// The raw bytes of a tensor by name.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        match self {
            ModelFile::Gguf(g) => Ok(g.tensor_bytes(g.require_tensor(name)?)),
            ModelFile::Hf(h) => Ok(h.tensor_bytes(h.require_tensor(name)?)),
        }
    }

    /// The raw bytes of one row of `t`.
    pub fn row_bytes(&self, t: &MatrixTensor, row: usize) -> Result<&[u8]> {
        if row >= t.n_rows {
            bail!("row {row} out of range for {} ({} rows)", t.name, t.n_rows);
        }
        let rb = quant::row_bytes(t.ty, t.row_len)?;
        let bytes = self.tensor_bytes(&t.name)?;
        Ok(&bytes[row * rb..(row + 1) * rb])
    }

    /// The gain of an RMSNorm as f32: the norm block `b`'s MLP reads through, or the final
    /// norm for `None`. Gemma's Hugging Face weights store `w` for a gain of `1 + w` (its GGUF
    /// stores the gain itself); Gemma is told apart by its `pre_feedforward_layernorm`.
    pub fn norm_gain(&self, block: Option<usize>) -> Result<Vec<f32>> {
        let gemma_hf = match self {
            ModelFile::Hf(h) => h
                .tensor("model.layers.0.pre_feedforward_layernorm.weight")
                .is_some(),
            ModelFile::Gguf(_) => false,
        };
        let name = match (self, block) {
            (ModelFile::Gguf(_), Some(b)) => format!("blk.{b}.ffn_norm.weight"),
            (ModelFile::Gguf(_), None) => "output_norm.weight".to_string(),
            (ModelFile::Hf(_), Some(b)) if gemma_hf => {
                format!("model.layers.{b}.pre_feedforward_layernorm.weight")
            }
            (ModelFile::Hf(_), Some(b)) => {
                format!("model.layers.{b}.post_attention_layernorm.weight")
            }
            (ModelFile::Hf(_), None) => "model.norm.weight".to_string(),
        };
        let (ty, len) = match self {
            ModelFile::Gguf(g) => {
                let t = g.require_tensor(&name)?;
                (t.ty, t.dims.iter().product::<u64>() as usize)
            }
            ModelFile::Hf(h) => {
                let t = h.require_tensor(&name)?;
                let ty = match t.dtype {
                    Dtype::F32 => GgmlType::F32,
                    Dtype::F16 => GgmlType::F16,
                    Dtype::BF16 => GgmlType::BF16,
                    d => bail!("{}: {name} is {d:?}", h.dir.display()),
                };
                (ty, t.shape.iter().product())
            }
        };
        let mut out = vec![0f32; len];
        quant::decode_row(ty, self.tensor_bytes(&name)?, &mut out)
            .with_context(|| format!("{}: {name}", self.path().display()))?;
        if gemma_hf {
            out.iter_mut().for_each(|g| *g += 1.0);
        }
        Ok(out)
    }

    /// Decodes row `row` of `t` into `out` (`t.row_len` values).
    pub fn read_row(&self, t: &MatrixTensor, row: usize, out: &mut [f32]) -> Result<()> {
        quant::decode_row(t.ty, self.row_bytes(t, row)?, out)
            .with_context(|| format!("{}: {} row {row}", self.path().display(), t.name))
    }
}

/// Block index of `PREFIX{n}.{part}.weight`, if `name` has that form.
fn block_of(name: &str, prefix: &str, part: &str) -> Option<usize> {
    let rest = name.strip_prefix(prefix)?;
    let (n, tail) = rest.split_once('.')?;
    if tail != format!("{part}.weight") {
        return None;
    }
    n.parse().ok()
}
