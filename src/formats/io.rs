//! Output safety, the one place every writer goes through (the "write" end of the paper's
//! surgery step, and every probe, plan, patch and report): outputs are checked before any work
//! starts, written beside their destination under a temporary name, and moved into place only
//! when complete, several outputs (a model and its patch) as one unit.
//!
//! The rules, for every command:
//! - an output is never an input (same path, same file through a link, or a folder holding
//!   the input), and two outputs are never the same file;
//! - an existing output is replaced only with `--force`, and only when it is a regular file
//!   (file outputs) or a model folder (folder outputs: empty, or `config.json` beside regular
//!   files only); devices, pipes, links and other folders are refused even with `--force`;
//! - without `--force` the final move refuses to replace anything (`renameat2` with
//!   `RENAME_NOREPLACE`), and the re-check and moves of concurrent scalpel processes are
//!   serialised by a lock on the destination's folder, so of two writers exactly one wins;
//! - a folder is written whole beside the target and swapped in (`RENAME_EXCHANGE`), so a
//!   reader sees the old folder or the new one, never a mix, and no stale file survives;
//! - a model and its patch: the old model is moved away first, then the patch, then the model
//!   is moved in, so at every instant a model present at `--out` has its own patch beside it;
//! - temporaries are `.NAME.scalpel-tmp-PID` (shortened with a hash when NAME is long, so the
//!   name stays within 255 bytes); SIGINT/SIGTERM remove them ([`remove_live_temps`]); those of
//!   dead processes (`kill -9`) are removed by the next write into the same folder.
//!
//! Inputs are memory-mapped. A file truncated by another process while scalpel reads it
//! raises SIGBUS; the binary turns that into a one-line error and exit code 135, outputs stay
//! absent (their temporaries are removed by the next write). Do not modify a model while
//! scalpel reads it.

mod commit;
mod copy;
mod temp;

pub use commit::commit;
pub use copy::{copy_range, CopyAhead, TensorSlot};
pub use temp::{remove_live_temps, TempOut};

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What an output path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutKind {
    /// One regular file (GGUF, probe, patch, plan, report).
    File,
    /// A Hugging Face model folder.
    Folder,
}

impl OutKind {
    /// The kind a model output has: a folder for a Hugging Face input folder.
    pub fn of_model(input: &Path) -> OutKind {
        if input.is_dir() {
            OutKind::Folder
        } else {
            OutKind::File
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

/// Whether two paths name the same file: same resolved path, or (both existing) the same
/// device and inode (hard links, bind mounts).
pub fn same_path(a: &Path, b: &Path) -> bool {
    if matches!((resolved(a), resolved(b)), (Some(x), Some(y)) if x == y) {
        return true;
    }
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Whether `inner` lies inside the folder `outer`.
fn inside(inner: &Path, outer: &Path) -> bool {
    matches!((resolved(inner), resolved(outer)), (Some(i), Some(o)) if i.starts_with(&o))
}

/// Refuses an output that is an input, or exists when `force` is off (the historical check,
/// kept for callers with one input and one file output).
pub fn check_output_path(input: &Path, output: &Path, force: bool) -> Result<()> {
    check_outputs(&[input], &[(output, OutKind::File)], force)
}

/// Checks every output of a command before any work starts: not an input, not another
/// output, replaceable (see the module rules), and its folder writable.
pub fn check_outputs(inputs: &[&Path], outputs: &[(&Path, OutKind)], force: bool) -> Result<()> {
    for (i, &(out, kind)) in outputs.iter().enumerate() {
        let name = out
            .file_name()
            .with_context(|| format!("output {} has no file name", out.display()))?;
        if name.len() > 255 {
            bail!(
                "output name {} is {} bytes; file names hold at most 255",
                out.display(),
                name.len()
            );
        }
        check_not_input(inputs, out)?;
        for &(other, _) in &outputs[..i] {
            if same_path(other, out) {
                bail!(
                    "outputs {} and {} are the same path",
                    other.display(),
                    out.display()
                );
            }
        }
        check_replaceable(out, kind, force)?;
        check_writable(out)?;
    }
    Ok(())
}

/// Refuses an output (file or folder) that is one of `inputs` or holds one of them: for
/// outputs that are folders scalpel adds files to (report folders), which need no more.
pub fn check_not_input(inputs: &[&Path], out: &Path) -> Result<()> {
    for &inp in inputs {
        if same_path(inp, out) {
            bail!(
                "output {} is the input itself; write to another path",
                out.display()
            );
        }
        if inside(inp, out) {
            bail!(
                "output {} holds the input {}; write to another path",
                out.display(),
                inp.display()
            );
        }
    }
    Ok(())
}

/// Refuses an existing `out` that is not of `kind`'s replaceable sort, or exists without
/// `force`. Runs again under the folder lock at commit time.
pub(crate) fn check_replaceable(out: &Path, kind: OutKind, force: bool) -> Result<()> {
    let meta = match fs::symlink_metadata(out) {
        // A missing folder on the way is reported by `check_writable`.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", out.display())),
        Ok(m) => m,
    };
    let ft = meta.file_type();
    let what = if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "a device, pipe or socket"
    };
    let fits = match kind {
        OutKind::File => ft.is_file(),
        OutKind::Folder => ft.is_dir() && is_model_folder(out),
    };
    if !fits {
        let want = match kind {
            OutKind::File => "a regular file",
            OutKind::Folder => "a model folder (empty, or config.json beside regular files)",
        };
        bail!(
            "output {} exists and is {what}; scalpel replaces only {want}, even with --force",
            out.display()
        );
    }
    if !force {
        bail!(
            "output {} already exists (use --force to overwrite)",
            out.display()
        );
    }
    Ok(())
}

/// Empty, or `config.json` beside regular files only (scalpel's temporaries aside): a folder
/// `--force` may replace whole without destroying anything that is not a model.
fn is_model_folder(dir: &Path) -> bool {
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    let mut config = false;
    let mut any = false;
    for e in rd {
        let Ok(e) = e else { return false };
        let name = e.file_name();
        if temp::is_temp_name(&name) {
            continue;
        }
        any = true;
        match e.file_type() {
            Ok(t) if t.is_file() => config |= name == "config.json",
            _ => return false,
        }
    }
    !any || config
}

/// The nearest existing folder at or above `out`'s parent must be a folder we can create
/// files in: tried with a temporary of `out`'s own name, removed at once.
fn check_writable(out: &Path) -> Result<()> {
    let mut dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    loop {
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => bail!(
                "cannot write {}: {} is not a folder",
                out.display(),
                dir.display()
            ),
            Err(_) => match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
                _ => {
                    dir = PathBuf::from(".");
                    break;
                }
            },
        }
    }
    let name = out.file_name().context("output has no file name")?;
    let probe = temp::temp_path(&dir.join(name), "probe");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| {
            format!(
                "cannot write {}: {} is not writable",
                out.display(),
                dir.display()
            )
        })?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Writes a small file (probe, plan, report) atomically, replacing a regular file already
/// there: a temporary beside `dest`, moved over it when complete.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    write_file(dest, bytes, true)
}

/// Writes a small file atomically; without `force` an existing `dest` is refused, also when
/// it appears while writing (no check-then-rename race).
pub fn write_file(dest: &Path, bytes: &[u8], force: bool) -> Result<()> {
    use std::io::Write;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = TempOut::file(dest)?;
    let mut f = tmp.open()?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", dest.display()))?;
    drop(f);
    commit(vec![tmp], force)
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
