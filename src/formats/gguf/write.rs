//! GGUF writer: header first (offsets computed from the declared types), then tensor data
//! streamed one tensor at a time into a temp file that is renamed over the output at the end.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{align_up, GgufFile, MetaValue, TensorInfo, DEFAULT_ALIGNMENT, MAGIC};
use crate::formats::ggml::GgmlType;
use crate::formats::io::{check_outputs, commit, OutKind, TempOut};

/// A tensor to write: its data's size follows from `dims` and `ty`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Dimensions, ne0 first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
}

/// Writes a GGUF file at `path` (replacing it if present).
///
/// The alignment is `general.alignment` from `metadata` if present, else 32. `data` is called
/// once per tensor, in order, and must write exactly that tensor's bytes; padding is added
/// here. The file appears at `path` only when complete.
pub fn write_gguf(
    path: &Path,
    version: u32,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorSpec],
    data: &mut dyn FnMut(usize, &TensorSpec, &mut dyn Write) -> Result<()>,
) -> Result<()> {
    let tmp = stage_gguf(path, version, metadata, tensors, data)?;
    commit(vec![tmp], true).with_context(|| format!("writing GGUF {}", path.display()))
}

/// [`write_gguf`] into a temporary beside `path`, not yet moved into place (see
/// [`crate::formats::io::commit`]).
pub fn stage_gguf(
    path: &Path,
    version: u32,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorSpec],
    data: &mut dyn FnMut(usize, &TensorSpec, &mut dyn Write) -> Result<()>,
) -> Result<TempOut> {
    write_inner(path, version, metadata, tensors, data)
        .with_context(|| format!("writing GGUF {}", path.display()))
}

fn write_inner(
    path: &Path,
    version: u32,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorSpec],
    data: &mut dyn FnMut(usize, &TensorSpec, &mut dyn Write) -> Result<()>,
) -> Result<TempOut> {
    if !(2..=3).contains(&version) {
        bail!("cannot write GGUF version {version}");
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => bail!("general.alignment {v} is not a power of two"),
        },
    };
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in tensors {
        let n: u64 = t.dims.iter().product();
        let bytes =
            t.ty.bytes_for(n)
                .filter(|_| t.dims.first().copied().unwrap_or(1) % t.ty.block_size() as u64 == 0);
        match bytes {
            Some(b) if !t.dims.is_empty() && t.dims.len() <= 4 => sizes.push(b),
            _ => bail!(
                "tensor {}: dims {:?} do not fit type {} (rows must be whole blocks)",
                t.name,
                t.dims,
                t.ty
            ),
        }
    }

    let tmp = TempOut::file(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp.open()?);
    // The header (vocabulary included) is a few MB at most: build it whole, then stream data.
    let mut head = Vec::with_capacity(1 << 16);
    head.extend_from_slice(&MAGIC.to_le_bytes());
    head.extend_from_slice(&version.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut head, k.as_bytes());
        head.extend_from_slice(&(v.meta_type() as u32).to_le_bytes());
        put_value(&mut head, v).with_context(|| format!("metadata key {k}"))?;
    }
    let mut offset = 0u64;
    for (t, &size) in tensors.iter().zip(&sizes) {
        put_str(&mut head, t.name.as_bytes());
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&t.ty.id().to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offset = align_up(offset + size, alignment);
    }
    head.resize(align_up(head.len() as u64, alignment) as usize, 0);
    w.write_all(&head)?;

    for (i, (t, &size)) in tensors.iter().zip(&sizes).enumerate() {
        let mut cw = Counting {
            inner: &mut w,
            n: 0,
        };
        data(i, t, &mut cw).with_context(|| format!("tensor {}", t.name))?;
        if cw.n != size {
            bail!(
                "tensor {}: got {} bytes of data, expected {size}",
                t.name,
                cw.n
            );
        }
        let pad = align_up(size, alignment) - size;
        w.write_all(&vec![0u8; pad as usize])?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    drop(file);
    Ok(tmp)
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s);
}

fn put_value(buf: &mut Vec<u8>, v: &MetaValue) -> Result<()> {
    match v {
        MetaValue::U8(x) => buf.push(*x),
        MetaValue::I8(x) => buf.push(*x as u8),
        MetaValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => buf.push(*x as u8),
        MetaValue::String(s) => put_str(buf, s),
        MetaValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(et, items) => {
            buf.extend_from_slice(&(*et as u32).to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                if it.meta_type() != *et {
                    bail!("array of {et:?} holds a {:?}", it.meta_type());
                }
                put_value(buf, it)?;
            }
        }
    }
    Ok(())
}

/// Counts the bytes a producer writes, so a wrong-sized tensor is an error, not a corrupt file.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(b)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the new bytes of a replaced tensor: `(input info, input bytes, output)`.
pub type TensorProducer<'p> = dyn FnMut(&TensorInfo, &[u8], &mut dyn Write) -> Result<()> + 'p;

/// A copy of a GGUF file with some tensors replaced and some metadata changed.
///
/// Metadata and tensor infos keep the input's order and version; tensors not replaced are
/// copied byte for byte, so a rewrite with no changes reproduces the input exactly (for
/// inputs written, like llama.cpp's, with every tensor in order and zero padding).
pub struct GgufRewrite<'a> {
    src: &'a GgufFile,
    new_types: HashMap<String, GgmlType>,
    metadata: Vec<(String, MetaValue)>,
}

impl<'a> GgufRewrite<'a> {
    /// A rewrite of `src` that changes nothing yet.
    pub fn new(src: &'a GgufFile) -> Self {
        GgufRewrite {
            src,
            new_types: HashMap::new(),
            metadata: src.metadata.clone(),
        }
    }

    /// Declares that tensor `name` will be written anew with type `ty` (same or different
    /// from the input's), same dims. Its bytes come from the producer given to [`write`].
    ///
    /// [`write`]: GgufRewrite::write
    pub fn replace(&mut self, name: &str, ty: GgmlType) -> Result<()> {
        let t = self.src.require_tensor(name)?;
        if t.row_len() % ty.block_size() as u64 != 0 {
            bail!(
                "{}: tensor {name} rows of {} elements cannot be stored as {ty}",
                self.src.path.display(),
                t.row_len()
            );
        }
        self.new_types.insert(name.to_string(), ty);
        Ok(())
    }

    /// Sets a metadata key: in place if present (order kept), appended otherwise.
    pub fn set_metadata(&mut self, key: &str, value: MetaValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Writes the result to `out`. `produce(info, old_bytes, w)` is called, in file order,
    /// for each replaced tensor and must write its new bytes in the declared type. Refuses
    /// `out` equal to the input, and an existing `out` unless `force`.
    pub fn write(&self, out: &Path, force: bool, produce: &mut TensorProducer<'_>) -> Result<()> {
        check_outputs(&[&self.src.path], &[(out, OutKind::File)], force)?;
        let tmp = self.stage(out, produce)?;
        commit(vec![tmp], force).with_context(|| format!("writing GGUF {}", out.display()))
    }

    /// [`GgufRewrite::write`] into a temporary beside `out`, not yet moved into place and
    /// with no check of `out` (the caller checked every output first).
    pub fn stage(&self, out: &Path, produce: &mut TensorProducer<'_>) -> Result<TempOut> {
        let specs: Vec<TensorSpec> = self
            .src
            .tensors
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: self.new_types.get(&t.name).copied().unwrap_or(t.ty),
            })
            .collect();
        let src = self.src;
        stage_gguf(
            out,
            src.version,
            &self.metadata,
            &specs,
            &mut |i, _spec, w| {
                let info = &src.tensors[i];
                let bytes = src.tensor_bytes(info);
                let r = if self.new_types.contains_key(&info.name) {
                    produce(info, bytes, w)
                } else {
                    Ok(w.write_all(bytes)?)
                };
                src.release(info);
                r
            },
        )
    }
}
