//! Streaming writer of a modified copy of a Hugging Face folder.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{HfFolder, HfTensor};
use crate::formats::io::{check_outputs, commit, copy_range, OutKind, TempOut, TensorSlot};

/// Returns the new bytes of a replaced tensor from `(tensor, old bytes)`.
pub type HfProducer<'p> = dyn FnMut(&HfTensor, &[u8]) -> Result<Vec<u8>> + 'p;

/// Writes the changed rows of a replaced tensor into its slot, prefilled with the old bytes:
/// `(tensor, old bytes, slot)`.
pub type HfSlotProducer<'p> = dyn FnMut(&HfTensor, &[u8], &mut TensorSlot<'_>) -> Result<()> + 'p;

/// A copy of a Hugging Face folder with some tensors replaced.
///
/// Every top-level regular file that is not a weight shard (config, tokenizer files, the
/// index, README, …) is copied byte for byte; subfolders and hidden files are skipped. Each
/// shard keeps its header and layout; replaced tensors keep their dtype and shape, so the
/// index stays valid. The whole folder is written under a temporary name beside the output
/// and moved (or, with `--force`, swapped) into place when complete: a reader sees the old
/// folder or the new one, never a mix, and no file of an earlier output survives.
pub struct HfRewrite<'a> {
    src: &'a HfFolder,
    replaced: HashSet<String>,
}

impl<'a> HfRewrite<'a> {
    /// A rewrite of `src` that changes nothing yet.
    pub fn new(src: &'a HfFolder) -> Self {
        HfRewrite {
            src,
            replaced: HashSet::new(),
        }
    }

    /// Declares that tensor `name` will be replaced (same dtype and shape).
    pub fn replace(&mut self, name: &str) -> Result<()> {
        self.src.require_tensor(name)?;
        self.replaced.insert(name.to_string());
        Ok(())
    }

    /// Writes the folder to `out`. `produce(tensor, old_bytes)` is called for each replaced
    /// tensor, in file order, and returns its new bytes (same length: same dtype and shape;
    /// see [`super::encode_values`]). Refuses `out` equal to the input, and an existing `out`
    /// unless `force` (then it is replaced whole, if it is a model folder).
    pub fn write(&self, out: &Path, force: bool, produce: &mut HfProducer<'_>) -> Result<()> {
        let r = check_outputs(&[&self.src.dir], &[(out, OutKind::Folder)], force)
            .and_then(|_| self.stage(out, produce))
            .and_then(|tmp| commit(vec![tmp], force));
        r.with_context(|| format!("writing HF model folder {}", out.display()))
    }

    /// [`HfRewrite::write`] into a temporary folder beside `out`, not yet moved into place
    /// and with no check of `out` (the caller checked every output first).
    pub fn stage(&self, out: &Path, produce: &mut HfProducer<'_>) -> Result<TempOut> {
        self.stage_rows(out, &mut |t, bytes, slot| {
            let new = produce(t, bytes)?;
            if new.len() != t.end - t.start {
                bail!(
                    "got {} bytes, expected {} ({:?} {:?})",
                    new.len(),
                    t.end - t.start,
                    t.dtype,
                    t.shape
                );
            }
            slot.write_rows(0, &new)
        })
    }

    /// Like [`HfRewrite::stage`], writing only rows: every shard is copied whole, file to
    /// file, and `produce(tensor, old_bytes, slot)` writes the rows that change into the
    /// copy (a replaced tensor keeps its dtype, shape and offset).
    pub fn stage_rows(&self, out: &Path, produce: &mut HfSlotProducer<'_>) -> Result<TempOut> {
        self.stage_inner(out, produce)
            .with_context(|| format!("writing HF model folder {}", out.display()))
    }

    fn stage_inner(&self, out: &Path, produce: &mut HfSlotProducer<'_>) -> Result<TempOut> {
        let src = self.src;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let tmp = TempOut::folder(out)?;
        let shard_names: HashSet<&str> = src.shard_files().into_iter().collect();

        let mut entries: Vec<_> = std::fs::read_dir(&src.dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let name_s = name.to_string_lossy();
            if name_s.starts_with('.') || !e.file_type()?.is_file() {
                continue;
            }
            if shard_names.contains(name_s.as_ref()) {
                continue;
            }
            let mut w = File::create(tmp.path().join(&name))?;
            let mut r = std::fs::File::open(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            std::io::copy(&mut r, &mut w)?;
        }

        for (si, file) in src.shard_files().into_iter().enumerate() {
            let w = File::create(tmp.path().join(file))?;
            // The whole shard (header, every tensor, gaps) goes file to file, as `cp` copies
            // it; the changed rows are written over the copy.
            let len = src.shard_bytes(si).len() as u64;
            copy_range(src.shard_handle(si), 0, &w, 0, len)
                .with_context(|| format!("copying {file}"))?;
            for t in src.tensors.iter().filter(|t| t.shard == si) {
                if !self.replaced.contains(&t.name) {
                    continue;
                }
                let size = (t.end - t.start) as u64;
                let rows = t.shape.first().copied().filter(|&r| r > 0).unwrap_or(1) as u64;
                let mut slot = TensorSlot::new(&w, t.start as u64, size, size / rows, true);
                let r = produce(t, src.tensor_bytes(t), &mut slot);
                src.release(t);
                r.with_context(|| format!("tensor {}", t.name))?;
            }
        }
        Ok(tmp)
    }
}
