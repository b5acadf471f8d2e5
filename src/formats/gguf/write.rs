//! GGUF writer: header first (offsets computed from the declared types), then tensor data
//! streamed one tensor at a time into a temp file that is renamed over the output at the end.
//! A rewrite of an existing file copies what it keeps file to file and writes only the rest.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{align_up, GgufFile, MetaValue, TensorInfo, DEFAULT_ALIGNMENT, MAGIC};
use crate::formats::ggml::GgmlType;
use crate::formats::io::{
    check_outputs, commit, copy_range, CopyAhead, OutKind, TempOut, TensorSlot,
};

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

/// A GGUF file's header, padded to the alignment, and where each tensor's data goes.
struct Layout {
    head: Vec<u8>,
    alignment: u64,
    /// Bytes of each tensor's data.
    sizes: Vec<u64>,
    /// Offset of each tensor's data, relative to the end of `head`.
    offsets: Vec<u64>,
}

impl Layout {
    /// Zero bytes after tensor `i` (to the next aligned offset).
    fn pad(&self, i: usize) -> u64 {
        align_up(self.sizes[i], self.alignment) - self.sizes[i]
    }
}

/// Checks the tensors and builds the header (the vocabulary included, a few MB at most).
fn layout(
    version: u32,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorSpec],
) -> Result<Layout> {
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
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for (t, &size) in tensors.iter().zip(&sizes) {
        put_str(&mut head, t.name.as_bytes());
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&t.ty.id().to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = align_up(offset + size, alignment);
    }
    head.resize(align_up(head.len() as u64, alignment) as usize, 0);
    Ok(Layout {
        head,
        alignment,
        sizes,
        offsets,
    })
}

fn write_inner(
    path: &Path,
    version: u32,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorSpec],
    data: &mut dyn FnMut(usize, &TensorSpec, &mut dyn Write) -> Result<()>,
) -> Result<TempOut> {
    let lay = layout(version, metadata, tensors)?;
    let tmp = TempOut::file(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp.open()?);
    w.write_all(&lay.head)?;
    for (i, (t, &size)) in tensors.iter().zip(&lay.sizes).enumerate() {
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
        w.write_all(&vec![0u8; lay.pad(i) as usize])?;
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
        MetaValue::Strings(a) => {
            buf.extend_from_slice(&(super::MetaType::String as u32).to_le_bytes());
            buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for s in a.iter() {
                put_str(buf, s);
            }
        }
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

/// Writes the rows of a replaced tensor into its place in the output: `(input info, input
/// bytes, slot)`. The slot is prefilled with the old bytes when the type did not change.
pub type SlotProducer<'p> = dyn FnMut(&TensorInfo, &[u8], &mut TensorSlot<'_>) -> Result<()> + 'p;

/// A copy of a GGUF file with some tensors replaced and some metadata changed.
///
/// Metadata and tensor infos keep the input's order and version; tensors not replaced are
/// copied byte for byte, file to file, so a rewrite with no changes reproduces the input
/// exactly (for inputs written, like llama.cpp's, with every tensor in order and zero
/// padding).
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
        self.stage_slots(out, true, None, &mut |info, bytes, slot| {
            produce(info, bytes, slot)
        })
        .with_context(|| format!("writing GGUF {}", out.display()))
    }

    /// Like [`GgufRewrite::stage`], writing only rows: a replaced tensor whose type did not
    /// change is copied with the rest, and `produce` writes just the rows that change (its
    /// offset does not move); one stored in a new type gets every row, in order. `ahead`, a
    /// copy of the input started earlier, becomes the output when the output is the input
    /// outside the rows `produce` writes; otherwise it is dropped and the copy made here.
    pub fn stage_rows(
        &self,
        out: &Path,
        ahead: Option<CopyAhead>,
        produce: &mut SlotProducer<'_>,
    ) -> Result<TempOut> {
        self.stage_slots(out, false, ahead, produce)
            .with_context(|| format!("writing GGUF {}", out.display()))
    }

    /// The output, file to file: header, then every byte not replaced in as few
    /// `copy_file_range` calls as the layout allows (one for the whole file when no size
    /// changes), then the replaced tensors' rows. `whole`: producers write every byte.
    fn stage_slots(
        &self,
        out: &Path,
        whole: bool,
        ahead: Option<CopyAhead>,
        produce: &mut SlotProducer<'_>,
    ) -> Result<TempOut> {
        let src = self.src;
        let specs: Vec<TensorSpec> = src
            .tensors
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: self.new_types.get(&t.name).copied().unwrap_or(t.ty),
            })
            .collect();
        let lay = layout(src.version, &self.metadata, &specs)?;
        let head = lay.head.len() as u64;
        let mut copies = Copies::default();
        // Bytes that are not the input's: a changed header, padding the input lacks.
        let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
        // An unchanged header is copied with the data: one copy from offset 0, page-aligned
        // like `cp`'s (the kernel copies misaligned ranges noticeably slower).
        if src.data_start == head && same_bytes(src.file(), 0, &lay.head)? {
            copies.push(0, 0, head);
        } else {
            writes.push((0, lay.head.clone()));
        }
        let mut slots = Vec::new();
        for (i, info) in src.tensors.iter().enumerate() {
            let (s, d, size) = (
                src.data_start + info.offset,
                head + lay.offsets[i],
                lay.sizes[i],
            );
            let prefill = match self.new_types.get(&info.name) {
                None => true,
                Some(&ty) => ty == info.ty && !whole,
            };
            if prefill {
                copies.push(s, d, size);
            }
            if self.new_types.contains_key(&info.name) {
                slots.push((i, d, prefill));
            }
            let pad = lay.pad(i);
            if !(prefill && copies.extend_if_zero(src.file(), s + size, d + size, pad)?) {
                writes.push((d + size, vec![0u8; pad as usize]));
            }
        }
        let src_len = src.file().metadata()?.len();
        let is_copy = writes.is_empty() && copies.runs == [(0, 0, src_len)];
        let tmp = match ahead {
            Some(a) if is_copy && a.copies(src.file())? => a.finish()?,
            other => {
                // Its temporary has our name for `out`: gone before we make ours.
                drop(other);
                let tmp = TempOut::file(out)?;
                let file = tmp.open()?;
                for (at, bytes) in &writes {
                    file.write_all_at(bytes, *at)?;
                }
                copies.run(src.file(), &file)?;
                tmp
            }
        };
        let file = tmp.open()?;
        for (i, d, prefill) in slots {
            let (info, size) = (&src.tensors[i], lay.sizes[i]);
            let row_bytes = specs[i].ty.bytes_for(info.row_len()).unwrap_or(size);
            let mut slot = TensorSlot::new(&file, d, size, row_bytes, prefill);
            let r =
                produce(info, src.tensor_bytes(info), &mut slot).and_then(|_| slot.finish(whole));
            src.release(info);
            r.with_context(|| format!("tensor {}", info.name))?;
        }
        drop(file);
        Ok(tmp)
    }
}

/// Whether `file` holds `bytes` at `at`.
fn same_bytes(file: &File, at: u64, bytes: &[u8]) -> Result<bool> {
    let mut buf = vec![0u8; bytes.len()];
    match file.read_exact_at(&mut buf, at) {
        Ok(()) => Ok(buf == bytes),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Byte ranges to copy from the input to the output, merged where both sides are contiguous.
#[derive(Default)]
struct Copies {
    /// (input offset, output offset, length)
    runs: Vec<(u64, u64, u64)>,
}

impl Copies {
    fn push(&mut self, src: u64, dst: u64, len: u64) {
        match self.runs.last_mut() {
            Some((s, d, n)) if *s + *n == src && *d + *n == dst => *n += len,
            _ => self.runs.push((src, dst, len)),
        }
    }

    /// Extends the last run over `len` padding bytes when the input holds zeros there too
    /// (llama.cpp's files do): then the padding is copied with the data, not written.
    fn extend_if_zero(&mut self, input: &File, src: u64, dst: u64, len: u64) -> Result<bool> {
        if len == 0 {
            return Ok(true);
        }
        if !matches!(self.runs.last(), Some(&(s, d, n)) if s + n == src && d + n == dst) {
            return Ok(false);
        }
        let mut buf = vec![0u8; len as usize];
        match input.read_exact_at(&mut buf, src) {
            Ok(()) if buf.iter().all(|&b| b == 0) => {
                self.push(src, dst, len);
                Ok(true)
            }
            Ok(()) => Ok(false),
            // The input ends before its last tensor's padding: write the zeros instead.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn run(&self, input: &File, out: &File) -> Result<()> {
        for &(s, d, n) in &self.runs {
            copy_range(input, s, out, d, n)?;
        }
        Ok(())
    }
}
