//! Writes an edited model: copies the input file to file (untouched bytes never pass through
//! this process), writes the rows an [`EditPlan`] changes over the copy (or converts the
//! touched tensors with `--keep-precision`), and records a [`Patch`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::edit::EditPlan;
use super::model::ModelFile;
use crate::formats::ggml::GgmlType;
use crate::formats::gguf::{GgufFile, GgufRewrite};
use crate::formats::io::{check_outputs, commit, CopyAhead, OutKind, TempOut, TensorSlot};
use crate::formats::patch::{Patch, PatchTensor, TensorDiff};
use crate::formats::quant;
use crate::formats::safetensors::{HfFolder, HfRewrite};

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

/// The edit of one tensor, as [`EditPlan::by_tensor`] groups it: rows ascending, with deltas.
type Rows<'p> = [(usize, &'p [f32])];

/// One touched tensor's geometry and encodings.
struct Touched<'a> {
    name: &'a str,
    n_rows: usize,
    row_len: usize,
    ty_in: GgmlType,
    ty_out: GgmlType,
}

/// Re-encodes the edited rows (old + delta, in `ty_out`), accumulating the stored change
/// and the re-quantisation error in row order.
fn encode_rows(
    t: &Touched,
    bytes: &[u8],
    rows: &Rows,
    report: &mut WriteReport,
) -> Result<Vec<Vec<u8>>> {
    let rb_in = quant::row_bytes(t.ty_in, t.row_len)?;
    let (mut old, mut new) = (vec![0f32; t.row_len], vec![0f32; t.row_len]);
    let mut out = Vec::with_capacity(rows.len());
    for &(r, delta) in rows {
        quant::decode_row(t.ty_in, &bytes[r * rb_in..(r + 1) * rb_in], &mut old)?;
        let want: Vec<f32> = old.iter().zip(delta).map(|(a, d)| a + d).collect();
        let enc =
            quant::encode_row(t.ty_out, &want).with_context(|| format!("{} row {r}", t.name))?;
        quant::decode_row(t.ty_out, &enc, &mut new)?;
        for ((n, o), w) in new.iter().zip(&old).zip(&want) {
            report.stored_change_norm += ((n - o) as f64).powi(2);
            report.max_abs_error = report.max_abs_error.max((n - w).abs() as f64);
            report.error_norm += ((n - w) as f64).powi(2);
        }
        out.push(enc);
    }
    Ok(out)
}

/// Writes one touched tensor into its slot: only the edited rows when the slot already holds
/// the old bytes (same type), else every row converted, in chunks of about 1 MiB, so memory
/// stays O(edited rows) either way. Returns its patch entry when `diff` is asked for.
fn write_tensor(
    t: &Touched,
    bytes: &[u8],
    rows: &Rows,
    slot: &mut TensorSlot<'_>,
    report: &mut WriteReport,
    diff: bool,
) -> Result<Option<PatchTensor>> {
    let enc = encode_rows(t, bytes, rows, report)?;
    let rb_in = quant::row_bytes(t.ty_in, t.row_len)?;
    let mut d = match diff {
        true => Some(TensorDiff::new(
            t.name, t.n_rows, t.row_len, t.ty_in, t.ty_out,
        )?),
        false => None,
    };
    if slot.prefilled() {
        let mut next = 0;
        for (&(r, _), e) in rows.iter().zip(&enc) {
            slot.write_rows(r, e)?;
            if let Some(d) = &mut d {
                d.unchanged(&bytes[next * rb_in..r * rb_in])?;
                d.rows(&bytes[r * rb_in..(r + 1) * rb_in], e)?;
            }
            next = r + 1;
        }
        if let Some(d) = &mut d {
            d.unchanged(&bytes[next * rb_in..])?;
        }
    } else {
        let rb_out = quant::row_bytes(t.ty_out, t.row_len)?;
        let chunk = ((1 << 20) / rb_out).max(1);
        let (mut x, mut buf) = (vec![0f32; t.row_len], Vec::with_capacity(chunk * rb_out));
        let mut edited = rows.iter().map(|r| r.0).zip(&enc).peekable();
        for first in (0..t.n_rows).step_by(chunk) {
            let end = (first + chunk).min(t.n_rows);
            buf.clear();
            for r in first..end {
                match edited.next_if(|&(e, _)| e == r) {
                    Some((_, e)) => buf.extend_from_slice(e),
                    None => {
                        // Decoding is exact in f32, so untouched rows keep their values.
                        quant::decode_row(t.ty_in, &bytes[r * rb_in..(r + 1) * rb_in], &mut x)?;
                        buf.extend_from_slice(&quant::encode_row(t.ty_out, &x)?);
                    }
                }
            }
            slot.write_rows(first, &buf)?;
            if let Some(d) = &mut d {
                d.rows(&bytes[first * rb_in..end * rb_in], &buf)?;
            }
        }
    }
    d.map(TensorDiff::finish).transpose()
}

/// Writes `model` with `plan` applied to `out` (and the patch to `opts.patch`).
///
/// Everything is checked before the first byte is written: tensors exist and are matrices,
/// rows are in range and edited once, deltas have the row length and are finite, the type
/// can be re-encoded, outputs are not the input, not each other, replaceable (a regular file
/// or a model folder) and exist only with `force`, and their folders are writable. Every
/// byte the edit keeps is copied file to file (`copy_file_range`, as `cp` does) and only the
/// edited rows are written, so time is about a copy's and memory O(edited rows). Model and
/// patch are written as temporaries and moved into place as one unit
/// ([`crate::formats::io::commit`]): at no instant is the model at `out` without its own
/// patch, and when anything fails before the move (the patch included) neither appears.
pub fn write_edited(
    model: &ModelFile,
    plan: &EditPlan,
    out: &Path,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    write_edited_ahead(model, plan, out, opts, None)
}

/// Starts copying the model at `model` to a temporary for `out` while the caller selects
/// and plans ([`CopyAhead`]), where [`write_edited_ahead`] can take the copy as its output:
/// a GGUF file (what [`ModelFile::open`] reads a file as) kept in its own types. `None` for
/// an HF folder and with `keep_precision`, whose layouts change.
pub fn copy_ahead(model: &Path, out: &Path, opts: &WriteOptions) -> Result<Option<CopyAhead>> {
    if model.is_dir() || opts.keep_precision {
        return Ok(None);
    }
    CopyAhead::start(model, out).map(Some)
}

/// [`write_edited`] with a copy of the input started earlier ([`copy_ahead`]); the output is
/// the same bytes with or without it.
pub fn write_edited_ahead(
    model: &ModelFile,
    plan: &EditPlan,
    out: &Path,
    opts: &WriteOptions,
    ahead: Option<CopyAhead>,
) -> Result<WriteReport> {
    let groups = plan.by_tensor()?;
    let shapes = check_plan(model, &groups, opts)?;
    let mut outputs = vec![(out, model.format().out_kind())];
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
        format: model.format(),
        info: plan.info.clone(),
        tensors: Vec::new(),
    };
    let diff = opts.patch.is_some();
    let mut edit = |t: &Touched, bytes: &[u8], slot: &mut TensorSlot<'_>| -> Result<()> {
        let rows = &groups[t.name];
        if let Some(p) = write_tensor(t, bytes, rows, slot, &mut report, diff)? {
            patch.tensors.push(p);
        }
        Ok(())
    };
    let staged = match model {
        ModelFile::Gguf(src) => {
            stage_gguf(src, &shapes, opts.keep_precision, out, ahead, &mut edit)?
        }
        ModelFile::Hf(src) => stage_hf(src, &shapes, opts.keep_precision, out, &mut edit)?,
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

/// (rows, row length, encoding) of each touched tensor, after checking the plan against the
/// model: rows in range, deltas of the row length and finite, the encoding re-encodable.
fn check_plan<'p>(
    model: &ModelFile,
    groups: &BTreeMap<&'p str, Vec<(usize, &'p [f32])>>,
    opts: &WriteOptions,
) -> Result<BTreeMap<&'p str, (usize, usize, GgmlType)>> {
    let mut shapes = BTreeMap::new();
    for (&name, rows) in groups {
        let t = model.matrix(name)?;
        let (n_rows, row_len, ty) = (t.n_rows, t.row_len, t.ty);
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
    Ok(shapes)
}

/// What the touched tensors become, per format.
type Shapes<'p> = BTreeMap<&'p str, (usize, usize, GgmlType)>;
/// Writes one touched tensor into its slot.
type Edit<'e> = dyn FnMut(&Touched, &[u8], &mut TensorSlot<'_>) -> Result<()> + 'e;

/// The edited GGUF as a temporary: touched tensors keep their type, or become F32 with
/// `keep_precision` (then the tensors after them move, and are copied to their new place).
fn stage_gguf(
    src: &GgufFile,
    shapes: &Shapes,
    keep_precision: bool,
    out: &Path,
    ahead: Option<CopyAhead>,
    edit: &mut Edit<'_>,
) -> Result<TempOut> {
    let ty_out = |ty: GgmlType| if keep_precision { GgmlType::F32 } else { ty };
    let mut rw = GgufRewrite::new(src);
    for (&name, &(_, _, ty)) in shapes {
        rw.replace(name, ty_out(ty))?;
    }
    rw.stage_rows(out, ahead, &mut |info, bytes, slot| {
        let (n_rows, row_len, ty) = shapes[info.name.as_str()];
        let t = Touched {
            name: &info.name,
            n_rows,
            row_len,
            ty_in: ty,
            ty_out: ty_out(ty),
        };
        edit(&t, bytes, slot)
    })
}

/// The edited Hugging Face folder as a temporary: tensors keep their dtype.
fn stage_hf(
    src: &HfFolder,
    shapes: &Shapes,
    keep_precision: bool,
    out: &Path,
    edit: &mut Edit<'_>,
) -> Result<TempOut> {
    if keep_precision {
        bail!("--keep-precision is for GGUF; HF tensors are rewritten in their own dtype");
    }
    let mut rw = HfRewrite::new(src);
    for &name in shapes.keys() {
        rw.replace(name)?;
    }
    rw.stage_rows(out, &mut |st, bytes, slot| {
        let (n_rows, row_len, ty) = shapes[st.name.as_str()];
        let t = Touched {
            name: &st.name,
            n_rows,
            row_len,
            ty_in: ty,
            ty_out: ty,
        };
        edit(&t, bytes, slot)
    })
}
