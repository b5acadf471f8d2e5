//! Output-file safety shared by the writers: temp files beside the output, renamed into place
//! only when complete, and checks that we never overwrite the input or an unasked-for file.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A temp file beside its destination, removed on drop unless committed.
pub(crate) struct TempFile {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempFile {
    /// Creates `.NAME.scalpel-tmp-PID` in the destination's folder (same file system, so the
    /// final rename is atomic).
    pub(crate) fn create(dest: &Path) -> Result<TempFile> {
        let name = dest
            .file_name()
            .with_context(|| format!("{} has no file name", dest.display()))?;
        let tmp = dest.with_file_name(format!(
            ".{}.scalpel-tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(TempFile {
            tmp,
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    /// The temp file, opened for writing.
    pub(crate) fn file(&self) -> Result<File> {
        OpenOptions::new()
            .write(true)
            .open(&self.tmp)
            .with_context(|| format!("opening {}", self.tmp.display()))
    }

    /// Flushes to disk and renames over the destination.
    pub(crate) fn commit(mut self) -> Result<()> {
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Absolute, symlink-free form of a path that may not exist yet (its parent must).
fn resolved(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    Some(parent.join(p.file_name()?))
}

/// Whether two paths name the same file (either may not exist yet).
pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    matches!((resolved(a), resolved(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses to write `output` when it is the input itself, or exists and `force` is off.
pub(crate) fn check_output_path(input: &Path, output: &Path, force: bool) -> Result<()> {
    if let (Some(a), Some(b)) = (resolved(input), resolved(output)) {
        if a == b {
            bail!(
                "output {} is the input itself; write to another path",
                output.display()
            );
        }
    }
    if output.exists() && !force {
        bail!(
            "output {} already exists (use --force to overwrite)",
            output.display()
        );
    }
    Ok(())
}

/// Writes a small file (probe, plan, report) atomically: a temp file beside `dest`, renamed
/// over it when complete, so a crash never leaves a half-written output.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = TempFile::create(dest)?;
    let mut f = tmp.file()?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", dest.display()))?;
    drop(f);
    tmp.commit()
}

/// `madvise(MADV_DONTNEED)` on a range of a read-only file map: the pages leave this
/// process's resident set and are read again from the page cache if touched.
pub(crate) fn release_range(map: &memmap2::Mmap, start: usize, len: usize) {
    if len == 0 || start >= map.len() {
        return;
    }
    let len = len.min(map.len() - start);
    // SAFETY: the map is read-only and private, never written through, so dropping its pages
    // loses nothing: a later access faults them in again with the file's same contents.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
}
