//! The patch file: what an edit changed, small enough to keep beside the model, exact
//! enough to undo it bit for bit.
//!
//! A safetensors file. For each touched tensor `NAME` it holds `NAME/rows` (I64 `[n]`, the
//! row indices), `NAME/before` and `NAME/after` (U8 `[n, row bytes]`, the rows in the
//! tensor's encoding before and after, quantised rows as their raw bytes). One metadata key,
//! `scalpel.patch`, holds JSON: format, what produced the edit, and per tensor its types and
//! the sha256 of its bytes before and after (one key because safetensors keeps metadata in
//! a hash map, and one JSON string keeps the file's bytes deterministic).
//!
//! A row is stored when it cannot be rebuilt from the other side: when its bytes differ
//! (same type), or when the tensor changed type (`--keep-precision` stores edited GGUF
//! tensors as F32) and converting the row back does not give the original bytes. Rows that
//! round-trip are rebuilt by conversion, so a keep-precision patch stays small and revert
//! is still exact; the sha256 of every rebuilt tensor is checked before anything is written.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::formats::ggml::GgmlType;
use crate::formats::gguf::GgufFile;
use crate::formats::io::{check_outputs, commit, OutKind, TempOut};
use crate::formats::quant;
use crate::formats::safetensors::{HfFolder, HfRewrite};
use crate::formats::ModelFormat;

/// The metadata key holding the patch description.
pub const META_KEY: &str = "scalpel.patch";

/// One touched tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchTensor {
    /// Tensor name.
    pub name: String,
    /// Rows of the tensor.
    pub n_rows: usize,
    /// Elements per row.
    pub row_len: usize,
    /// Encoding before the edit (ggml type name; safetensors F32/F16/BF16 use the ggml type
    /// with the same bytes).
    pub before_type: String,
    /// Encoding after the edit.
    pub after_type: String,
    /// sha256 (hex) of the tensor's bytes before.
    pub sha256_before: String,
    /// sha256 (hex) of the tensor's bytes after.
    pub sha256_after: String,
    /// Stored rows, ascending.
    #[serde(skip)]
    pub rows: Vec<u64>,
    /// Those rows before, concatenated.
    #[serde(skip)]
    pub before: Vec<u8>,
    /// Those rows after, concatenated.
    #[serde(skip)]
    pub after: Vec<u8>,
}

/// A patch: a format (`gguf` or `hf`), a description of the edit, the touched tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// File format version of the patch.
    pub version: u32,
    /// The kind of model it applies to (`gguf` or `hf` in the file).
    pub format: ModelFormat,
    /// What produced the edit (probe hash, α, K, options).
    pub info: serde_json::Value,
    /// Touched tensors, in the model's file order.
    pub tensors: Vec<PatchTensor>,
}

/// sha256 (hex) of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn ggml(name: &str) -> Result<GgmlType> {
    GgmlType::from_name(name).with_context(|| format!("patch names unknown type {name}"))
}

/// Converts one row between encodings; `None` when `to` cannot be encoded.
fn convert(bytes: &[u8], from: GgmlType, to: GgmlType, row_len: usize) -> Result<Option<Vec<u8>>> {
    if from == to {
        return Ok(Some(bytes.to_vec()));
    }
    if !quant::can_encode(to) {
        return Ok(None);
    }
    let mut x = vec![0f32; row_len];
    quant::decode_row(from, bytes, &mut x)?;
    Ok(Some(quant::encode_row(to, &x)?))
}

/// A [`PatchTensor`] built row range by row range, for writers that never hold a whole
/// tensor: both sha256 are computed as the rows go by.
pub struct TensorDiff {
    t: PatchTensor,
    row_bytes: (usize, usize),
    types: (GgmlType, GgmlType),
    hashes: (Sha256, Sha256),
    next_row: usize,
}

impl TensorDiff {
    /// The diff of a tensor of `n_rows` rows of `row_len` values, stored as `before_type`
    /// before and `after_type` after.
    pub fn new(
        name: &str,
        n_rows: usize,
        row_len: usize,
        before_type: GgmlType,
        after_type: GgmlType,
    ) -> Result<TensorDiff> {
        Ok(TensorDiff {
            t: PatchTensor {
                name: name.to_string(),
                n_rows,
                row_len,
                before_type: before_type.name().to_string(),
                after_type: after_type.name().to_string(),
                sha256_before: String::new(),
                sha256_after: String::new(),
                rows: Vec::new(),
                before: Vec::new(),
                after: Vec::new(),
            },
            row_bytes: (
                quant::row_bytes(before_type, row_len)?,
                quant::row_bytes(after_type, row_len)?,
            ),
            types: (before_type, after_type),
            hashes: (Sha256::new(), Sha256::new()),
            next_row: 0,
        })
    }

    /// The next rows, before and after; keeps those that conversion cannot rebuild.
    pub fn rows(&mut self, before: &[u8], after: &[u8]) -> Result<()> {
        let (rb0, rb1) = self.row_bytes;
        let n = before.len() / rb0.max(1);
        if before.len() != n * rb0 || after.len() != n * rb1 || self.next_row + n > self.t.n_rows {
            bail!(
                "tensor {}: before and after sizes do not match {} rows",
                self.t.name,
                self.t.n_rows
            );
        }
        let (from, to) = self.types;
        for i in 0..n {
            let (b, a) = (
                &before[i * rb0..(i + 1) * rb0],
                &after[i * rb1..(i + 1) * rb1],
            );
            let fwd = convert(b, from, to, self.t.row_len)?;
            let back = convert(a, to, from, self.t.row_len)?;
            if fwd.as_deref() != Some(a) || back.as_deref() != Some(b) {
                self.t.rows.push((self.next_row + i) as u64);
                self.t.before.extend_from_slice(b);
                self.t.after.extend_from_slice(a);
            }
        }
        self.hashes.0.update(before);
        self.hashes.1.update(after);
        self.next_row += n;
        Ok(())
    }

    /// The next rows, unchanged (same bytes before and after, so the types must agree).
    pub fn unchanged(&mut self, bytes: &[u8]) -> Result<()> {
        if self.types.0 != self.types.1 {
            bail!("tensor {}: changed type, so every row changed", self.t.name);
        }
        let rb = self.row_bytes.0.max(1);
        if !bytes.len().is_multiple_of(rb) || self.next_row + bytes.len() / rb > self.t.n_rows {
            bail!(
                "tensor {}: {} bytes are not whole rows of it",
                self.t.name,
                bytes.len()
            );
        }
        self.hashes.0.update(bytes);
        self.hashes.1.update(bytes);
        self.next_row += bytes.len() / rb;
        Ok(())
    }

    /// The patch entry, once every row went by.
    pub fn finish(mut self) -> Result<PatchTensor> {
        if self.next_row != self.t.n_rows {
            bail!(
                "tensor {}: diff of {} rows, the tensor has {}",
                self.t.name,
                self.next_row,
                self.t.n_rows
            );
        }
        self.t.sha256_before = hex(&self.hashes.0.finalize());
        self.t.sha256_after = hex(&self.hashes.1.finalize());
        Ok(self.t)
    }
}

impl PatchTensor {
    /// Compares a tensor before and after and keeps the rows that conversion cannot rebuild.
    pub fn diff(
        name: &str,
        row_len: usize,
        before_type: GgmlType,
        before: &[u8],
        after_type: GgmlType,
        after: &[u8],
    ) -> Result<PatchTensor> {
        let rb0 = quant::row_bytes(before_type, row_len)?;
        let n_rows = before.len() / rb0.max(1);
        let mut d = TensorDiff::new(name, n_rows, row_len, before_type, after_type)?;
        d.rows(before, after)?;
        d.finish()
    }

    /// The tensor on the other side: `forward` = before → after (apply), else after → before
    /// (revert). Checks the input's and the result's sha256.
    pub fn rebuild(&self, input: &[u8], forward: bool) -> Result<Vec<u8>> {
        let (from, to) = (ggml(&self.before_type)?, ggml(&self.after_type)?);
        let (from, to, want_in, want_out, stored_from, stored_to) = if forward {
            (
                from,
                to,
                &self.sha256_before,
                &self.sha256_after,
                &self.before,
                &self.after,
            )
        } else {
            (
                to,
                from,
                &self.sha256_after,
                &self.sha256_before,
                &self.after,
                &self.before,
            )
        };
        let got = sha256_hex(input);
        if &got != want_in {
            bail!(
                "tensor {} is not the one the patch expects (sha256 {}… ≠ {}…): the patch was made for another model",
                self.name,
                got.get(..12).unwrap_or(&got),
                want_in.get(..12).unwrap_or(want_in)
            );
        }
        let (rb_in, rb_out) = (
            quant::row_bytes(from, self.row_len)?,
            quant::row_bytes(to, self.row_len)?,
        );
        // The sha256 matched, but the patch's JSON (outside the hashes) claims the shape.
        if self.n_rows.checked_mul(rb_in) != Some(input.len()) {
            bail!(
                "tensor {}: the patch says {} rows of {} values, the model's tensor holds {} bytes (corrupt patch?)",
                self.name,
                self.n_rows,
                self.row_len,
                input.len()
            );
        }
        let mut out = Vec::with_capacity(self.n_rows * rb_out);
        let mut stored = self.rows.iter().enumerate().peekable();
        for r in 0..self.n_rows {
            let row_in = &input[r * rb_in..(r + 1) * rb_in];
            match stored.peek() {
                Some(&(i, &sr)) if sr == r as u64 => {
                    if stored_from[i * rb_in..(i + 1) * rb_in] != *row_in {
                        bail!(
                            "tensor {}: stored row {r} differs from the model's (corrupt patch?)",
                            self.name
                        );
                    }
                    out.extend_from_slice(&stored_to[i * rb_out..(i + 1) * rb_out]);
                    stored.next();
                }
                _ => match convert(row_in, from, to, self.row_len)? {
                    Some(v) => out.extend_from_slice(&v),
                    None => bail!("tensor {}: row {r} is missing from the patch", self.name),
                },
            }
        }
        if &sha256_hex(&out) != want_out {
            bail!(
                "tensor {}: rebuilt bytes do not match the patch's sha256 (corrupt patch?)",
                self.name
            );
        }
        Ok(out)
    }
}

impl Patch {
    /// Serialises the patch (deterministic bytes).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for t in &self.tensors {
            let n = t.rows.len();
            let rows: Vec<u8> = t
                .rows
                .iter()
                .flat_map(|&r| (r as i64).to_le_bytes())
                .collect();
            data.push((format!("{}/rows", t.name), Dtype::I64, vec![n], rows));
            let (b, a) = (t.before.len() / n.max(1), t.after.len() / n.max(1));
            data.push((
                format!("{}/before", t.name),
                Dtype::U8,
                vec![n, b],
                t.before.clone(),
            ));
            data.push((
                format!("{}/after", t.name),
                Dtype::U8,
                vec![n, a],
                t.after.clone(),
            ));
        }
        let views = data
            .iter()
            .map(|(name, dt, shape, bytes)| {
                Ok((name.clone(), TensorView::new(*dt, shape.clone(), bytes)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = HashMap::from([(META_KEY.to_string(), serde_json::to_string(self)?)]);
        Ok(safetensors::serialize(views, Some(meta))?)
    }

    /// Writes the patch atomically; refuses an existing file unless `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<u64> {
        check_outputs(&[], &[(path, OutKind::File)], force)?;
        let (tmp, n) = self.stage(path)?;
        commit(vec![tmp], force)?;
        Ok(n)
    }

    /// Writes the patch into a temporary beside `path`, to be moved into place together with
    /// its model ([`crate::formats::io::commit`]); returns it and its size in bytes.
    pub fn stage(&self, path: &Path) -> Result<(TempOut, u64)> {
        use std::io::Write;
        let bytes = self.to_bytes()?;
        let tmp = TempOut::file(path)?;
        tmp.open()?
            .write_all(&bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok((tmp, bytes.len() as u64))
    }

    /// Reads a patch file.
    pub fn load(path: &Path) -> Result<Patch> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_bytes(&bytes)
            .with_context(|| format!("{} is not a scalpel patch", path.display()))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Patch> {
        let (_, meta) = SafeTensors::read_metadata(bytes)?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .with_context(|| format!("no {META_KEY} metadata"))?;
        let mut p: Patch = serde_json::from_str(json)?;
        if p.version != 1 {
            bail!("patch version {} is not supported", p.version);
        }
        let st = SafeTensors::deserialize(bytes)?;
        for t in &mut p.tensors {
            let get = |part: &str| {
                st.tensor(&format!("{}/{part}", t.name))
                    .with_context(|| format!("no tensor {}/{part}", t.name))
            };
            t.rows = get("rows")?
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u64)
                .collect();
            t.before = get("before")?.data().to_vec();
            t.after = get("after")?.data().to_vec();
            let n = t.rows.len();
            let (rb0, rb1) = (
                quant::row_bytes(ggml(&t.before_type)?, t.row_len)?,
                quant::row_bytes(ggml(&t.after_type)?, t.row_len)?,
            );
            if n.checked_mul(rb0) != Some(t.before.len())
                || n.checked_mul(rb1) != Some(t.after.len())
                || t.rows.windows(2).any(|w| w[0] >= w[1])
                || t.rows.last().is_some_and(|&r| r >= t.n_rows as u64)
            {
                bail!("tensor {}: stored rows are inconsistent", t.name);
            }
        }
        Ok(p)
    }

    /// Writes `model` with the patch applied (`forward`) or reverted to `out`. Every touched
    /// tensor's sha256 is checked against the patch before anything is written.
    pub fn write(&self, model: &Path, out: &Path, force: bool, forward: bool) -> Result<()> {
        let side = |t: &PatchTensor| -> Result<(GgmlType, GgmlType, String)> {
            let (b, a) = (ggml(&t.before_type)?, ggml(&t.after_type)?);
            Ok(if forward {
                (b, a, t.sha256_before.clone())
            } else {
                (a, b, t.sha256_after.clone())
            })
        };
        let what = if forward { "apply" } else { "revert" };
        let mismatch = |name: &str| {
            format!(
                "patch does not fit {}: tensor {name} differs from the one the patch {} (wrong model, or {})",
                model.display(),
                if forward { "was made from" } else { "wrote" },
                if forward { "already edited?" } else { "not edited with this patch?" }
            )
        };
        let format = ModelFormat::of_path(model);
        check_outputs(&[model], &[(out, format.out_kind())], force)?;
        if format != self.format {
            bail!(
                "patch is for a {} model, {} is not one",
                self.format,
                model.display()
            );
        }
        if format == ModelFormat::Hf {
            let src = HfFolder::open(model)?;
            let mut rw = HfRewrite::new(&src);
            for t in &self.tensors {
                let st = src.require_tensor(&t.name)?;
                let (ty_in, _, hash) = side(t)?;
                let bytes = src.tensor_bytes(st);
                let fits = quant::row_bytes(ty_in, t.row_len)
                    .ok()
                    .and_then(|rb| rb.checked_mul(t.n_rows))
                    == Some(bytes.len());
                if !fits || sha256_hex(bytes) != hash {
                    bail!("{}", mismatch(&t.name));
                }
                rw.replace(&t.name)?;
            }
            let by_name: HashMap<&str, &PatchTensor> =
                self.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
            rw.write(out, force, &mut |t, bytes| {
                by_name[t.name.as_str()].rebuild(bytes, forward)
            })
            .with_context(|| format!("patch {what}"))
        } else {
            let src = GgufFile::open(model)?;
            let mut rw = crate::formats::gguf::GgufRewrite::new(&src);
            for t in &self.tensors {
                let info = src.require_tensor(&t.name)?;
                let (ty_in, ty_out, hash) = side(t)?;
                if info.ty != ty_in
                    || info.n_rows() != t.n_rows as u64
                    || info.row_len() != t.row_len as u64
                    || sha256_hex(src.tensor_bytes(info)) != hash
                {
                    bail!("{}", mismatch(&t.name));
                }
                rw.replace(&t.name, ty_out)?;
            }
            let by_name: HashMap<&str, &PatchTensor> =
                self.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
            rw.write(out, force, &mut |info, bytes, w| {
                let new = by_name[info.name.as_str()].rebuild(bytes, forward)?;
                Ok(w.write_all(&new)?)
            })
            .with_context(|| format!("patch {what}"))
        }
    }
}
