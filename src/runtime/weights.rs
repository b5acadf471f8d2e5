//! Where the weights come from: a GGUF file or a Hugging Face safetensors folder.
//!
//! The forward pass asks for tensors by their role (`blk.3.ffn_gate`), and the source maps
//! the role to the file's own tensor name. GGUF matrices stay quantised by default (candle's
//! quantised matmul), so a GGUF model needs about its file size in memory.

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::kernels::{self, BlockType, Inputs, QuantMatrix, BATCHED_MIN_ROWS};
use crate::formats::ggml::GgmlType;
use crate::formats::names::{hf_name_in, Layout};
use crate::formats::quant;

/// How matrices are held in memory for the forward pass.
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
pub enum Precision {
    /// As stored in the file (quantised GGUF matrices stay quantised).
    #[default]
    Native,
    /// Everything dequantised to f32: ~4 bytes per parameter, fastest for large batches.
    F32,
    /// Quantised matrices re-quantised to Q8_0 at load: candle has SIMD kernels for Q8_0
    /// but not for every type (Q4_1 is a scalar loop), so this trades a small rounding
    /// error for speed in single-stream generation.
    #[serde(rename = "q8-0")]
    Q8_0,
    /// Quantised matrices as stored, their inputs rounded to 8 bits per block of 32 and
    /// multiplied with integer dot products (AVX2, AVX-512 VNNI) as llama.cpp does:
    /// faster single-stream generation, not bit-exact (see `runtime::kernels::int8`).
    /// Types without such a kernel behave as `native`.
    Int8Activations,
}

/// The matrix of a linear layer: candle's (quantised or dense) matmul, or our exact SIMD
/// kernels for Q4_1, Q8_0 and Q5_0 (see [`super::kernels`]).
#[derive(Debug, Clone)]
enum Matrix {
    Candle(QMatMul),
    Quant(Arc<QuantMatrix>),
}

/// From this many input rows on, a quantised matrix is widened to f32 for one GEMM
/// (prompt processing, collection); from [`BATCHED_MIN_ROWS`] rows up to here the kernels'
/// batched path decodes each weight row once per call instead. Measured on the default
/// model (16 and 32 prompts, greedy, 2 threads): the GEMM led from about 100 rows of a
/// prefill, the batched kernels below.
const GEMM_MIN_ROWS: usize = 64;

/// The token embedding table: dense, or quantised rows dequantised on lookup so that a
/// quantised table is never held in f32.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// `[vocab, d]` f32.
    Dense(Tensor),
    /// Rows in their GGUF encoding.
    Quant(Arc<QuantMatrix>),
    /// Rows of another ggml type (K-quants, Q5_0, ...), decoded by
    /// [`crate::formats::quant`] on lookup.
    Rows {
        ty: GgmlType,
        data: Arc<Vec<u8>>,
        n: usize,
        k: usize,
    },
}

impl Embedding {
    /// Looks up `[b, t]` ids, giving `[b, t, d]`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        match self {
            Embedding::Dense(table) => {
                table
                    .index_select(&ids.flatten_all()?, 0)?
                    .reshape((b, t, ()))
            }
            Embedding::Quant(m) => {
                let flat = ids.flatten_all()?.to_vec1::<u32>()?;
                let mut out = vec![0f32; flat.len() * m.k];
                for (i, &id) in flat.iter().enumerate() {
                    if id as usize >= m.n {
                        candle_core::bail!("token id {id} outside the vocabulary of {}", m.n);
                    }
                    m.dequantize_row(id as usize, &mut out[i * m.k..(i + 1) * m.k]);
                }
                Tensor::from_vec(out, (b, t, m.k), ids.device())
            }
            Embedding::Rows { ty, data, n, k } => {
                let flat = ids.flatten_all()?.to_vec1::<u32>()?;
                let rb = data.len() / n;
                let mut out = vec![0f32; flat.len() * k];
                for (i, &id) in flat.iter().enumerate() {
                    let id = id as usize;
                    if id >= *n {
                        candle_core::bail!("token id {id} outside the vocabulary of {n}");
                    }
                    quant::decode_row(
                        *ty,
                        &data[id * rb..(id + 1) * rb],
                        &mut out[i * k..(i + 1) * k],
                    )
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                }
                Tensor::from_vec(out, (b, t, *k), ids.device())
            }
        }
    }
}

/// A linear layer `y = x Wᵀ (+ b)` over quantised or dense weights.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Matrix,
    bias: Option<Tensor>,
}

impl Linear {
    /// Applies the layer to `[.., in]`, giving `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let k = *x.dims().last().expect("matmul input has a last dim");
        let m = x.elem_count() / k.max(1);
        let y = match &self.weight {
            Matrix::Candle(QMatMul::QTensor(q)) if batched_rows(q, m).is_some() => {
                let (ty, n) = batched_rows(q, m).expect("checked by the guard");
                let y = kernels::matmul_rows(ty, &q.data()?, n, k, &flat(x)?, m)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                with_width(y, x, n)?
            }
            // candle multiplies some types (Q5_0, Q5_1, ...) with a scalar loop per input
            // row; for many rows, widening the weights once and calling the f32 GEMM is an
            // order of magnitude faster.
            Matrix::Candle(QMatMul::QTensor(q)) if m >= GEMM_MIN_ROWS => {
                gemm(x, &q.dequantize(x.device())?)?
            }
            Matrix::Candle(w) => w.forward(x)?,
            // Many input rows (prompt processing, probe collection): widening the weights
            // once and calling the f32 GEMM beats the kernels; the values are the same, so
            // results stay exact.
            Matrix::Quant(w) if m >= GEMM_MIN_ROWS => gemm(
                x,
                &Tensor::from_vec(w.dequantize(), (w.n, w.k), x.device())?,
            )?,
            Matrix::Quant(w) => with_width(w.matmul(&flat(x)?, m), x, w.n)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `x` as one flat row-major vector.
fn flat(x: &Tensor) -> candle_core::Result<Vec<f32>> {
    x.flatten_all()?.to_vec1::<f32>()
}

/// A row-major product `y` shaped as `x` with its last dimension `n`.
fn with_width(y: Vec<f32>, x: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("matmul input has a last dim") = n;
    Tensor::from_vec(y, dims, x.device())
}

/// `x Wᵀ` with the f32 GEMM, for `x` `[.., k]` and dense `w` `[n, k]`.
fn gemm(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("matmul input has a last dim");
    let mut out = dims;
    *out.last_mut().expect("non-empty") = w.dim(0)?;
    x.reshape((x.elem_count() / k, k))?
        .matmul(&w.t()?)?
        .reshape(out)
}

/// For a quantised matrix candle would multiply and a batch of [`BATCHED_MIN_ROWS`] up
/// to [`GEMM_MIN_ROWS`] input rows: its type and output rows, to go through the kernels'
/// batched path (candle rounds the inputs of such a batch to 8 bits, and its per-row loop
/// decodes the matrix once per input row).
fn batched_rows(q: &QTensor, m: usize) -> Option<(GgmlType, usize)> {
    let dims = q.shape().dims();
    let (n, k) = (dims[0], *dims.get(1)?);
    let ty = ggml_type(q.dtype())?;
    let quantised = !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    let rows = (BATCHED_MIN_ROWS..GEMM_MIN_ROWS).contains(&m);
    (quantised && dims.len() == 2 && k.is_multiple_of(32) && rows).then_some((ty, n))
}

/// Reads tensors by role from one of the supported file formats.
pub enum WeightSource {
    Gguf {
        path: PathBuf,
        file: File,
        content: gguf_file::Content,
    },
    SafeTensors {
        dir: PathBuf,
        st: candle_core::safetensors::MmapedSafetensors,
        /// How the roles map to this checkpoint's tensor names.
        layout: Layout,
    },
}

impl WeightSource {
    /// Opens a GGUF file (reading its header) or a Hugging Face folder.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let dir = path.to_path_buf();
            let index = dir.join("model.safetensors.index.json");
            let files: Vec<PathBuf> = if index.exists() {
                let text = std::fs::read_to_string(&index)
                    .with_context(|| format!("cannot read {}", index.display()))?;
                let j: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not valid JSON", index.display()))?;
                let map = j["weight_map"]
                    .as_object()
                    .with_context(|| format!("{}: no `weight_map`", index.display()))?;
                let mut shards: Vec<String> = map
                    .values()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect();
                shards.sort();
                shards.dedup();
                shards.into_iter().map(|s| dir.join(s)).collect()
            } else {
                let single = dir.join("model.safetensors");
                if !single.exists() {
                    bail!(
                        "{}: neither model.safetensors nor model.safetensors.index.json found",
                        dir.display()
                    );
                }
                vec![single]
            };
            // SAFETY of the mmap: the files are opened read-only and scalpel never writes
            // to an input model; another process truncating them is outside our control,
            // as for every mmap-based loader.
            let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
                .map_err(one_line)
                .with_context(|| format!("cannot read safetensors in {}", dir.display()))?;
            Ok(WeightSource::SafeTensors {
                dir,
                st,
                layout: Layout::Llama,
            })
        } else {
            let mut file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let content = gguf_file::Content::read(&mut file)
                .map_err(one_line)
                .with_context(|| format!("{} is not a readable GGUF file", path.display()))?;
            Ok(WeightSource::Gguf {
                path: path.to_path_buf(),
                file,
                content,
            })
        }
    }

    /// Sets the tensor-name layout of a Hugging Face checkpoint (GGUF names do not vary).
    pub fn set_layout(&mut self, new: Layout) {
        if let WeightSource::SafeTensors { layout, .. } = self {
            *layout = new;
        }
    }

    /// True for a Hugging Face folder (whose Gemma norm gains are stored as `w`, where
    /// llama.cpp's converter stored `1 + w`).
    pub fn is_safetensors(&self) -> bool {
        matches!(self, WeightSource::SafeTensors { .. })
    }

    /// The file or folder the weights come from.
    pub fn path(&self) -> &Path {
        match self {
            WeightSource::Gguf { path, .. } => path,
            WeightSource::SafeTensors { dir, .. } => dir,
        }
    }

    /// True when the model has a tensor for this role (with suffix `.weight`/`.bias`).
    pub fn has(&self, role: &str, suffix: &str) -> bool {
        match self {
            WeightSource::Gguf { content, .. } => content
                .tensor_infos
                .contains_key(&format!("{role}.{suffix}")),
            WeightSource::SafeTensors { st, layout, .. } => st
                .get(&format!("{}.{suffix}", hf_name_in(*layout, role)))
                .is_ok(),
        }
    }

    /// The shape of a tensor in the forward pass's convention (`[out, in]` for matrices).
    pub fn shape(&self, role: &str) -> Result<Vec<usize>> {
        match self {
            WeightSource::Gguf { content, path, .. } => {
                let name = format!("{role}.weight");
                let info = content
                    .tensor_infos
                    .get(&name)
                    .with_context(|| format!("{}: missing tensor `{name}`", path.display()))?;
                Ok(info.shape.dims().to_vec())
            }
            WeightSource::SafeTensors { st, dir, layout } => {
                let name = format!("{}.weight", hf_name_in(*layout, role));
                let view = st
                    .get(&name)
                    .map_err(|_| anyhow::anyhow!("{}: missing tensor `{name}`", dir.display()))?;
                Ok(view.shape().to_vec())
            }
        }
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        let WeightSource::Gguf {
            path,
            file,
            content,
        } = self
        else {
            unreachable!("qtensor is only called on GGUF sources")
        };
        if !content.tensor_infos.contains_key(name) {
            bail!("{}: missing tensor `{name}`", path.display());
        }
        content
            .tensor(file, name, &Device::Cpu)
            .map_err(one_line)
            .with_context(|| format!("{}: cannot read tensor `{name}`", path.display()))
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        match self {
            WeightSource::Gguf { .. } => {
                let q = self.qtensor(name)?;
                Ok(q.dequantize(&Device::Cpu)?)
            }
            WeightSource::SafeTensors { st, dir, .. } => {
                let t = st
                    .load(name, &Device::Cpu)
                    .map_err(|_| anyhow::anyhow!("{}: missing tensor `{name}`", dir.display()))?;
                Ok(t.to_dtype(DType::F32)?)
            }
        }
    }

    fn file_name(&self, role: &str, suffix: &str) -> String {
        match self {
            WeightSource::Gguf { .. } => format!("{role}.{suffix}"),
            WeightSource::SafeTensors { layout, .. } => {
                format!("{}.{suffix}", hf_name_in(*layout, role))
            }
        }
    }

    /// Loads a vector (norm gain or bias) as f32.
    pub fn vector(&mut self, role: &str, suffix: &str, len: usize) -> Result<Tensor> {
        let name = self.file_name(role, suffix);
        let t = self.dense(&name)?.flatten_all()?;
        if t.dim(0)? != len {
            bail!(
                "{}: tensor `{name}` has {} elements, expected {len}",
                self.path().display(),
                t.dim(0)?
            );
        }
        Ok(t)
    }

    /// Loads a matrix `[out, in]` as a linear layer, checking its shape.
    pub fn linear(
        &mut self,
        role: &str,
        out_dim: usize,
        in_dim: usize,
        bias: bool,
        precision: Precision,
    ) -> Result<Linear> {
        let name = self.file_name(role, "weight");
        let weight = match self {
            WeightSource::Gguf { .. } => {
                let q = self.qtensor(&name)?;
                check_dims(self.path(), &name, q.shape().dims(), &[out_dim, in_dim])?;
                matrix(q, precision)?
            }
            WeightSource::SafeTensors { .. } => {
                let t = self.dense(&name)?;
                check_dims(self.path(), &name, t.dims(), &[out_dim, in_dim])?;
                Matrix::Candle(QMatMul::Tensor(t))
            }
        };
        let bias = if bias {
            Some(self.vector(role, "bias", out_dim)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Loads the token embedding table `[vocab, d]`, and the same weights as a linear
    /// layer for tied output heads (sharing memory).
    pub fn embedding(
        &mut self,
        vocab: usize,
        d: usize,
        precision: Precision,
    ) -> Result<(Embedding, Linear)> {
        let name = self.file_name("token_embd", "weight");
        match self {
            WeightSource::Gguf { .. } => {
                let q = self.qtensor(&name)?;
                check_dims(self.path(), &name, q.shape().dims(), &[vocab, d])?;
                let head = matrix(q, precision)?;
                let table = match &head {
                    Matrix::Quant(m) => Embedding::Quant(m.clone()),
                    Matrix::Candle(QMatMul::Tensor(t)) => Embedding::Dense(t.clone()),
                    Matrix::Candle(_) => {
                        let q = self.qtensor(&name)?;
                        match ggml_type(q.dtype()).filter(|t| quant::can_decode(*t)) {
                            // A quantised table is decoded row by row on lookup rather
                            // than held in f32 (4 bytes per parameter).
                            Some(ty) => Embedding::Rows {
                                ty,
                                data: Arc::new(q.data()?.into_owned()),
                                n: vocab,
                                k: d,
                            },
                            None => Embedding::Dense(q.dequantize(&Device::Cpu)?),
                        }
                    }
                };
                Ok((
                    table,
                    Linear {
                        weight: head,
                        bias: None,
                    },
                ))
            }
            WeightSource::SafeTensors { .. } => {
                let t = self.dense(&name)?;
                check_dims(self.path(), &name, t.dims(), &[vocab, d])?;
                Ok((
                    Embedding::Dense(t.clone()),
                    Linear {
                        weight: Matrix::Candle(QMatMul::Tensor(t)),
                        bias: None,
                    },
                ))
            }
        }
    }
}

/// candle errors carry a backtrace in their `Display` when `RUST_BACKTRACE` is set; users
/// get one line.
fn one_line(e: candle_core::Error) -> anyhow::Error {
    let text = e.to_string();
    anyhow::anyhow!("{}", text.lines().next().unwrap_or("candle error").trim())
}

fn check_dims(path: &Path, name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        bail!(
            "{}: tensor `{name}` has shape {got:?}, expected {want:?}",
            path.display()
        );
    }
    Ok(())
}

/// Our ggml type for one of candle's.
fn ggml_type(t: GgmlDType) -> Option<GgmlType> {
    Some(match t {
        GgmlDType::F32 => GgmlType::F32,
        GgmlDType::F16 => GgmlType::F16,
        GgmlDType::BF16 => GgmlType::BF16,
        GgmlDType::Q4_0 => GgmlType::Q4_0,
        GgmlDType::Q4_1 => GgmlType::Q4_1,
        GgmlDType::Q5_0 => GgmlType::Q5_0,
        GgmlDType::Q5_1 => GgmlType::Q5_1,
        GgmlDType::Q8_0 => GgmlType::Q8_0,
        GgmlDType::Q4K => GgmlType::Q4_K,
        GgmlDType::Q5K => GgmlType::Q5_K,
        GgmlDType::Q6K => GgmlType::Q6_K,
        _ => return None,
    })
}

fn matrix(q: QTensor, precision: Precision) -> Result<Matrix> {
    let block = match q.dtype() {
        GgmlDType::Q4_1 => Some(BlockType::Q4_1),
        GgmlDType::Q8_0 => Some(BlockType::Q8_0),
        GgmlDType::Q5_0 => Some(BlockType::Q5_0),
        _ => None,
    };
    let inputs = match precision {
        Precision::Native => Some(Inputs::Exact),
        Precision::Int8Activations => Some(Inputs::Int8),
        Precision::F32 | Precision::Q8_0 => None,
    };
    if let (Some(inputs), Some(ty)) = (inputs, block) {
        let dims = q.shape().dims().to_vec();
        let data = q.data()?.into_owned();
        return Ok(Matrix::Quant(Arc::new(
            QuantMatrix::new(ty, dims[0], dims[1], data)?.with_inputs(inputs),
        )));
    }
    Ok(Matrix::Candle(qmatmul(q, precision)?))
}

fn qmatmul(q: QTensor, precision: Precision) -> Result<QMatMul> {
    let dense_type = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
    Ok(match precision {
        // candle's own quantised matmuls already round their inputs to 8 bits.
        Precision::Native | Precision::Int8Activations => QMatMul::from_arc(Arc::new(q))?,
        Precision::F32 => QMatMul::Tensor(q.dequantize(&Device::Cpu)?),
        Precision::Q8_0 if dense_type || q.dtype() == GgmlDType::Q8_0 => {
            QMatMul::from_arc(Arc::new(q))?
        }
        Precision::Q8_0 => {
            let dense = q.dequantize(&Device::Cpu)?;
            if dense.dim(1)? % 32 != 0 {
                QMatMul::from_arc(Arc::new(q))?
            } else {
                QMatMul::from_arc(Arc::new(QTensor::quantize(&dense, GgmlDType::Q8_0)?))?
            }
        }
    })
}

/// Reads the GGUF metadata and tensor directory without loading tensors.
pub fn gguf_metadata(source: &WeightSource) -> Option<&gguf_file::Content> {
    match source {
        WeightSource::Gguf { content, .. } => Some(content),
        WeightSource::SafeTensors { .. } => None,
    }
}
