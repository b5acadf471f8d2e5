//! GGUF reader: parses the header from a memory map and hands out tensor bytes by slice.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

use super::{align_up, MetaType, MetaValue, TensorInfo, DEFAULT_ALIGNMENT, MAGIC};
use crate::formats::ggml::GgmlType;

/// ggml tensors have at most 4 dimensions (GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;
/// Deepest array nesting accepted; real files use 1 (arrays of scalars or strings).
const MAX_ARRAY_DEPTH: u32 = 4;

/// An opened GGUF file: header parsed, data section memory-mapped.
pub struct GgufFile {
    /// The path it was opened from (used in error messages).
    pub path: PathBuf,
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section and of each tensor.
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_start: u64,
    mmap: Mmap,
    /// The mapped file, for copies that bypass the map ([`GgufFile::file`]).
    file: File,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file: header, metadata, tensor infos, and that every
    /// tensor's data lies inside the file. Errors are one line naming the file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the map is read-only; a file truncated by another process while mapped
        // would fault, which is the same contract every GGUF loader (llama.cpp too) accepts.
        let mmap =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        parse(path, mmap, file).with_context(|| format!("reading GGUF {}", path.display()))
    }

    /// The open file behind the map: writers copy from it file to file
    /// ([`crate::formats::io::copy_range`]), so untouched bytes never enter this process.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A string value; error if missing or not a UTF-8 string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.typed(key, MetaValue::as_str, "a string")
    }

    /// An integer value of any width; error if missing, not an integer, or negative.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.typed(key, MetaValue::as_u64, "an unsigned integer")
    }

    /// A numeric value; error if missing or not a number.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.typed(key, MetaValue::as_f64, "a number")
    }

    /// A boolean value; error if missing or not a boolean.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.typed(key, MetaValue::as_bool, "a boolean")
    }

    /// An array of strings (lossy for non-UTF-8 entries); error if missing or another type.
    pub fn get_strings(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            Some(MetaValue::Strings(a)) => Ok(a
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect()),
            Some(_) => bail!(
                "{}: key {key} is not an array of strings",
                self.path.display()
            ),
            None => bail!("{}: missing key {key}", self.path.display()),
        }
    }

    /// `general.architecture`, the prefix of the model's hyper-parameter keys.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// An architecture-scoped integer, e.g. `arch_u64("block_count")` reads
    /// `llama.block_count` in a llama file.
    pub fn arch_u64(&self, suffix: &str) -> Result<u64> {
        self.get_u64(&format!("{}.{suffix}", self.architecture()?))
    }

    /// An architecture-scoped number, e.g. `arch_f64("rope.freq_base")`.
    pub fn arch_f64(&self, suffix: &str) -> Result<f64> {
        self.get_f64(&format!("{}.{suffix}", self.architecture()?))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        f: impl Fn(&'a MetaValue) -> Option<T>,
        what: &str,
    ) -> Result<T> {
        match self.get(key) {
            Some(v) => match f(v) {
                Some(x) => Ok(x),
                None => bail!("{}: key {key} is not {what}", self.path.display()),
            },
            None => bail!("{}: missing key {key}", self.path.display()),
        }
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor named `name`, or an error naming file and tensor.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name)
            .with_context(|| format!("{}: no tensor {name}", self.path.display()))
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_start + info.offset) as usize;
        &self.mmap[start..start + info.n_bytes() as usize]
    }

    /// Drops this process's mapping of a tensor's pages once it has been read (they stay in
    /// the page cache): streaming a whole model through the map would otherwise count the
    /// entire file in the resident set. Best effort; the bytes remain readable.
    pub fn release(&self, info: &TensorInfo) {
        let start = (self.data_start + info.offset) as usize;
        crate::formats::io::release_range(&self.mmap, start, info.n_bytes() as usize);
    }

    /// The raw bytes of row `row` of a tensor (rows are ne0 elements, stored contiguously).
    pub fn row_bytes(&self, info: &TensorInfo, row: u64) -> Result<&[u8]> {
        if row >= info.n_rows() {
            bail!(
                "{}: row {row} out of range for tensor {} ({} rows)",
                self.path.display(),
                info.name,
                info.n_rows()
            );
        }
        let rb = info.row_bytes() as usize;
        let start = row as usize * rb;
        Ok(&self.tensor_bytes(info)[start..start + rb])
    }
}

/// A bounds-checked little-endian cursor over the header.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let end = (self.pos as u64).checked_add(n);
        match end {
            Some(end) if end <= self.buf.len() as u64 => {
                let s = &self.buf[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            _ => bail!(
                "file truncated: {what} at byte {} needs {n} bytes, file has {}",
                self.pos,
                self.buf.len()
            ),
        }
    }
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into()?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into()?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into()?))
    }
    fn bytes(&mut self, what: &str) -> Result<Vec<u8>> {
        Ok(self.str_bytes(what)?.to_vec())
    }
    fn str_bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        let n = self.u64(what)?;
        self.take(n, what)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let b = self.bytes(what)?;
        String::from_utf8(b).map_err(|_| anyhow::anyhow!("{what} is not valid UTF-8"))
    }

    fn value(&mut self, ty: MetaType, key: &str, depth: u32) -> Result<MetaValue> {
        Ok(match ty {
            MetaType::U8 => MetaValue::U8(self.u8(key)?),
            MetaType::I8 => MetaValue::I8(self.u8(key)? as i8),
            MetaType::U16 => MetaValue::U16(self.u16(key)?),
            MetaType::I16 => MetaValue::I16(self.u16(key)? as i16),
            MetaType::U32 => MetaValue::U32(self.u32(key)?),
            MetaType::I32 => MetaValue::I32(self.u32(key)? as i32),
            MetaType::F32 => MetaValue::F32(f32::from_bits(self.u32(key)?)),
            MetaType::Bool => MetaValue::Bool(self.u8(key)? != 0),
            MetaType::String => MetaValue::String(self.bytes(key)?),
            MetaType::U64 => MetaValue::U64(self.u64(key)?),
            MetaType::I64 => MetaValue::I64(self.u64(key)? as i64),
            MetaType::F64 => MetaValue::F64(f64::from_bits(self.u64(key)?)),
            MetaType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    bail!("metadata key {key}: arrays nested deeper than {MAX_ARRAY_DEPTH}");
                }
                let et = self.u32(key)?;
                let et = MetaType::from_id(et)
                    .with_context(|| format!("metadata key {key}: unknown array type {et}"))?;
                let n = self.u64(key)?;
                if n > self.remaining() / et.min_size() {
                    bail!("metadata key {key}: absurd array length {n}");
                }
                if et == MetaType::String {
                    let mut a = super::StringArray::with_capacity(n as usize);
                    for _ in 0..n {
                        a.push(self.str_bytes(key)?);
                    }
                    return Ok(MetaValue::Strings(a));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, key, depth + 1)?);
                }
                MetaValue::Array(et, items)
            }
        })
    }
}

fn parse(path: &Path, mmap: Mmap, file: File) -> Result<GgufFile> {
    let mut c = Cursor { buf: &mmap, pos: 0 };
    let magic = c.u32("magic")?;
    if magic != MAGIC {
        bail!("bad magic {:?} (not a GGUF file)", magic.to_le_bytes());
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        bail!("unsupported GGUF version {version} (supported: 2, 3)");
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // Each key/value needs at least a key length, a type and one byte; each tensor info a
    // name length, n_dims, one dim, a type and an offset.
    if n_kv > c.remaining() / 13 {
        bail!(
            "absurd metadata count {n_kv} for a {} byte file (truncated or corrupt)",
            mmap.len()
        );
    }
    if n_tensors > c.remaining() / 32 {
        bail!(
            "absurd tensor count {n_tensors} for a {} byte file (truncated or corrupt)",
            mmap.len()
        );
    }
    let mut metadata = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.u32(&key)?;
        let ty = MetaType::from_id(ty)
            .with_context(|| format!("metadata key {key}: unknown value type {ty}"))?;
        let v = c.value(ty, &key, 0)?;
        metadata.push((key, v));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => bail!("general.alignment {v} is not a power of two"),
        },
    };
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor #{i} name"))?;
        let n_dims = c.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            bail!("tensor {name}: {n_dims} dimensions (1..={MAX_DIMS} allowed)");
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&name)?);
        }
        let ty_id = c.u32(&name)?;
        let ty = GgmlType::from_id(ty_id)
            .with_context(|| format!("tensor {name}: unknown ggml type {ty_id}"))?;
        let offset = c.u64(&name)?;
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }
    let data_start = align_up(c.pos as u64, alignment);
    let file_len = mmap.len() as u64;
    for t in &tensors {
        let n = t
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .with_context(|| format!("tensor {}: absurd dims {:?}", t.name, t.dims))?;
        if t.row_len() % t.ty.block_size() as u64 != 0 {
            bail!(
                "tensor {}: row length {} is not a multiple of the {} block size {}",
                t.name,
                t.row_len(),
                t.ty,
                t.ty.block_size()
            );
        }
        let bytes =
            t.ty.bytes_for(n)
                .with_context(|| format!("tensor {}: absurd size", t.name))?;
        if t.offset % alignment != 0 {
            bail!(
                "tensor {}: offset {} is not a multiple of the alignment {alignment}",
                t.name,
                t.offset
            );
        }
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => bail!(
                "file truncated: tensor {} ({} bytes at data offset {}) extends past the end \
                 of the file ({file_len} bytes)",
                t.name,
                bytes,
                t.offset
            ),
        }
    }
    let mut names = std::collections::HashSet::new();
    for t in &tensors {
        if !names.insert(t.name.as_str()) {
            bail!("duplicate tensor name {}", t.name);
        }
    }
    Ok(GgufFile {
        path: path.to_path_buf(),
        version,
        metadata,
        tensors,
        alignment,
        data_start,
        mmap,
        file,
    })
}
