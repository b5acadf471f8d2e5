//! Writes an edited model: streams the input tensor by tensor, copies untouched tensors byte
//! for byte, rebuilds the touched ones from an [`EditPlan`], and records a [`Patch`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::edit::EditPlan;
use super::model::ModelFile;
use crate::formats::ggml::GgmlType;
use crate::formats::gguf::GgufRewrite;
use crate::formats::io::{check_outputs, commit, OutKind};
use crate::formats::patch::{Patch, PatchTensor};
use crate::formats::quant;
use crate::formats::safetensors::HfRewrite;

/// Options of [`write_edited`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// GGUF only: store each touched tensor as F32 (every row decoded exactly, edited rows
    /// not re-quantised) instead of re-quantising the edited rows to the original type.
    pub keep_precision: bool,
    /// Overwrite existing outputs.
    pub force: bool,
    /// Where to write the patch, if anywhere.
    pub patch: Option<PathBuf>,
}

/// What [`write_edited`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteReport {
    /// Tensors rewritten.
    pub tensors: usize,
    /// Rows edited.
    pub rows: usize,
    /// Frobenius norm of the change as stored (after re-quantisation), all rows together.
    pub stored_change_norm: f64,
    /// Largest |stored − intended| over all edited values (0 with F32 storage).
    pub max_abs_error: f64,
    /// Frobenius norm of stored − intended over all edited rows (the re-quantisation error).
    pub error_norm: f64,
    /// Bytes of the model output (file, or all files of the folder).
    pub bytes_written: u64,
    /// Bytes of the patch file, if written.
    pub patch_bytes: Option<u64>,
    /// Rows stored in the patch (edited rows whose bytes changed, plus rows that do not
    /// round-trip through a type change); 0 when no patch is written (the diff, with its
    /// sha256 of every touched tensor, is only computed for a patch).
    pub patch_rows: usize,
}

/// Rebuilds one touched tensor: returns its new bytes, accumulating the stored change.
fn edit_tensor(
    name: &str,
    row_len: usize,
    ty_in: GgmlType,
    ty_out: GgmlType,
    bytes: &[u8],
    rows: &[(usize, &[f32])],
    report: &mut WriteReport,
) -> Result<Vec<u8>> {
    let (rb_in, rb_out) = (
        quant::row_bytes(ty_in, row_len)?,
        quant::row_bytes(ty_out, row_len)?,
    );
    let n_rows = bytes.len() / rb_in;
    // Same type: copy the tensor, replace only the edited rows. New type: convert every row
    // (decoding is exact in f32, so untouched rows keep their values).
    let mut out = if ty_in == ty_out {
        bytes.to_vec()
    } else {
        let mut out = Vec::with_capacity(n_rows * rb_out);
        let mut x = vec![0f32; row_len];
        for r in 0..n_rows {
            quant::decode_row(ty_in, &bytes[r * rb_in..(r + 1) * rb_in], &mut x)?;
            out.extend_from_slice(&quant::encode_row(ty_out, &x)?);
        }
        out
    };
    let (mut old, mut new) = (vec![0f32; row_len], vec![0f32; row_len]);
    for &(r, delta) in rows {
        quant::decode_row(ty_in, &bytes[r * rb_in..(r + 1) * rb_in], &mut old)?;
        let want: Vec<f32> = old.iter().zip(delta).map(|(a, d)| a + d).collect();
        let enc = quant::encode_row(ty_out, &want).with_context(|| format!("{name} row {r}"))?;
        quant::decode_row(ty_out, &enc, &mut new)?;
        for ((n, o), w) in new.iter().zip(&old).zip(&want) {
            report.stored_change_norm += ((n - o) as f64).powi(2);
            report.max_abs_error = report.max_abs_error.max((n - w).abs() as f64);
            report.error_norm += ((n - w) as f64).powi(2);
        }
        out[r * rb_out..(r + 1) * rb_out].copy_from_slice(&enc);
    }
    Ok(out)
}

/// Writes `model` with `plan` applied to `out` (and the patch to `opts.patch`).
///
/// Everything is checked before the first byte is written: tensors exist and are matrices,
/// rows are in range and edited once, deltas have the row length and are finite, the type
/// can be re-encoded, outputs are not the input, not each other, replaceable (a regular file
/// or a model folder) and exist only with `force`, and their folders are writable. Model and
/// patch are written as temporaries and moved into place as one unit
/// ([`crate::formats::io::commit`]): at no instant is the model at `out` without its own patch.
pub fn write_edited(
    model: &ModelFile,
    plan: &EditPlan,
    out: &Path,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    let groups = plan.by_tensor()?;
    let mut shapes: BTreeMap<&str, (usize, usize, GgmlType)> = BTreeMap::new();
    for (&name, rows) in &groups {
        let (n_rows, row_len, ty) = tensor_shape(model, name)?;
        for &(r, d) in rows {
            if r >= n_rows {
                bail!("edit plan: row {r} out of range for {name} ({n_rows} rows)");
            }
            if d.len() != row_len {
                bail!(
                    "edit plan: delta of {} values for {name}, whose rows have {row_len}",
                    d.len()
                );
            }
            if let Some(i) = d.iter().position(|x| !x.is_finite()) {
                bail!("edit plan: delta for {name} row {r} is not finite at {i}");
            }
        }
        if !opts.keep_precision && !quant::can_encode(ty) {
            bail!("{name} is {ty}, which scalpel cannot re-quantise; use --keep-precision (stores it as F32)");
        }
        shapes.insert(name, (n_rows, row_len, ty));
    }
    let kind = match model {
        ModelFile::Gguf(_) => OutKind::File,
        ModelFile::Hf(_) => OutKind::Folder,
    };
    let mut outputs = vec![(out, kind)];
    if let Some(p) = &opts.patch {
        if crate::formats::io::same_path(p, out) {
            bail!("--patch and --out are the same path {}", p.display());
        }
        outputs.push((p.as_path(), OutKind::File));
    }
    check_outputs(&[model.path()], &outputs, opts.force)?;
    let mut report = WriteReport {
        tensors: groups.len(),
        rows: plan.rows.len(),
        ..Default::default()
    };
    let mut patch = Patch {
        version: 1,
        format: model.format().to_string(),
        info: plan.info.clone(),
        tensors: Vec::new(),
    };
    let staged = match model {
        ModelFile::Gguf(src) => {
            let mut rw = GgufRewrite::new(src);
            for (&name, &(_, _, ty)) in &shapes {
                rw.replace(
                    name,
                    if opts.keep_precision {
                        GgmlType::F32
                    } else {
                        ty
                    },
                )?;
            }
            rw.stage(out, &mut |info, bytes, w| {
                let ty_out = if opts.keep_precision {
                    GgmlType::F32
                } else {
                    info.ty
                };
                let row_len = info.row_len() as usize;
                let new = edit_tensor(
                    &info.name,
                    row_len,
                    info.ty,
                    ty_out,
                    bytes,
                    &groups[info.name.as_str()],
                    &mut report,
                )?;
                if opts.patch.is_some() {
                    patch.tensors.push(PatchTensor::diff(
                        &info.name, row_len, info.ty, bytes, ty_out, &new,
                    )?);
                }
                Ok(w.write_all(&new)?)
            })?
        }
        ModelFile::Hf(src) => {
            if opts.keep_precision {
                bail!("--keep-precision is for GGUF; HF tensors are rewritten in their own dtype");
            }
            let mut rw = HfRewrite::new(src);
            for &name in shapes.keys() {
                rw.replace(name)?;
            }
            rw.stage(out, &mut |t, bytes| {
                let (_, row_len, ty) = shapes[t.name.as_str()];
                let new = edit_tensor(
                    &t.name,
                    row_len,
                    ty,
                    ty,
                    bytes,
                    &groups[t.name.as_str()],
                    &mut report,
                )?;
                if opts.patch.is_some() {
                    patch
                        .tensors
                        .push(PatchTensor::diff(&t.name, row_len, ty, bytes, ty, &new)?);
                }
                Ok(new)
            })?
        }
    };
    report.bytes_written = staged.size()?;
    report.stored_change_norm = report.stored_change_norm.sqrt();
    report.error_norm = report.error_norm.sqrt();
    report.patch_rows = patch.tensors.iter().map(|t| t.rows.len()).sum();
    let mut unit = Vec::with_capacity(2);
    if let Some(p) = &opts.patch {
        let (tmp, n) = patch.stage(p)?;
        report.patch_bytes = Some(n);
        unit.push(tmp);
    }
    // The model last: it is the output the patch belongs to (see `commit`).
    unit.push(staged);
    commit(unit, opts.force)?;
    Ok(report)
}

/// (rows, row length, encoding) of a 2-D tensor of either format.
fn tensor_shape(model: &ModelFile, name: &str) -> Result<(usize, usize, GgmlType)> {
    let t = model.matrix(name)?;
    Ok((t.n_rows, t.row_len, t.ty))
}
