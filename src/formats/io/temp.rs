//! Temporary outputs: their names, the registry the signal handler empties, and the removal of
//! those left by dead processes.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::OutKind;

/// Marks a temporary: `.NAME` + this + `PID[-TAG]`.
const TAG: &str = ".scalpel-tmp-";

/// Temporaries of this process not yet moved into place or removed.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The registry, usable after a panic elsewhere (the data is only a list of paths).
pub(super) fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every temporary of this process and keeps the registry locked: for the signal
/// handler and the broken-pipe exit, which exit right after. A commit in progress holds the
/// registry, so it finishes first (its outputs are then complete, or absent).
pub fn remove_live_temps() {
    let mut l = live();
    for p in l.drain(..) {
        remove_any(&p);
    }
    std::mem::forget(l);
}

/// Removes a file or folder, ignoring errors (cleanup only).
pub(super) fn remove_any(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// `.NAME.scalpel-tmp-PID[-TAG]` beside `dest`. A long NAME is cut (at a byte; names are
/// bytes) and followed by `~` and 8 hex digits of its sha256, so the name stays within 255
/// bytes and two long names sharing a prefix still differ.
pub(super) fn temp_path(dest: &Path, tag: &str) -> PathBuf {
    let name = dest.file_name().unwrap_or(OsStr::new("out")).as_bytes();
    let tail = match tag {
        "" => format!("{TAG}{}", std::process::id()),
        t => format!("{TAG}{}-{t}", std::process::id()),
    };
    let mut b = Vec::with_capacity(256);
    b.push(b'.');
    if 1 + name.len() + tail.len() <= 255 {
        b.extend_from_slice(name);
    } else {
        let hash = Sha256::digest(name);
        let keep = 255 - 1 - tail.len() - 9;
        b.extend_from_slice(&name[..keep]);
        b.push(b'~');
        b.extend(
            hash[..4]
                .iter()
                .flat_map(|x| format!("{x:02x}").into_bytes()),
        );
    }
    b.extend_from_slice(tail.as_bytes());
    dest.with_file_name(OsString::from_vec(b))
}

/// The process id in a temporary's name, if it is one.
fn temp_pid(name: &OsStr) -> Option<u32> {
    let b = name.as_bytes();
    if b.first() != Some(&b'.') {
        return None;
    }
    let at = b.windows(TAG.len()).rposition(|w| w == TAG.as_bytes())? + TAG.len();
    let digits: Vec<u8> = b[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Whether a folder entry is a scalpel temporary.
pub(super) fn is_temp_name(name: &OsStr) -> bool {
    temp_pid(name).is_some()
}

/// Removes the temporaries in `dir` whose process is gone (`kill -9`, power loss). Checks
/// `/proc/PID`; where there is no `/proc`, removes nothing.
pub(super) fn remove_stale(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    let me = std::process::id();
    for e in rd.flatten() {
        if let Some(pid) = temp_pid(&e.file_name()) {
            if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
                remove_any(&e.path());
            }
        }
    }
}

/// The folder an output goes into.
pub(super) fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// An output being written: a temporary file or folder beside its destination, removed on
/// drop (or by the signal handler) unless [`super::commit`] moved it into place.
#[derive(Debug)]
pub struct TempOut {
    pub(super) tmp: PathBuf,
    pub(super) dest: PathBuf,
    pub(super) kind: OutKind,
    pub(super) done: bool,
}

impl TempOut {
    fn new(dest: &Path, kind: OutKind) -> Result<TempOut> {
        dest.file_name()
            .with_context(|| format!("{} has no file name", dest.display()))?;
        remove_stale(&parent_of(dest));
        let tmp = temp_path(dest, "");
        // Registered before it exists, so a signal between the two still removes it.
        live().push(tmp.clone());
        let t = TempOut {
            tmp,
            dest: dest.to_path_buf(),
            kind,
            done: false,
        };
        // A leftover of an earlier process with our pid (pids are reused) is ours to replace.
        remove_any(&t.tmp);
        match kind {
            OutKind::File => {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&t.tmp)
                    .with_context(|| format!("creating {}", t.tmp.display()))?;
            }
            OutKind::Folder => {
                fs::create_dir(&t.tmp).with_context(|| format!("creating {}", t.tmp.display()))?;
            }
        }
        Ok(t)
    }

    /// A temporary file for `dest`.
    pub fn file(dest: &Path) -> Result<TempOut> {
        Self::new(dest, OutKind::File)
    }

    /// A temporary folder for `dest`; fill it with [`TempOut::path`]`.join(name)`.
    pub fn folder(dest: &Path) -> Result<TempOut> {
        Self::new(dest, OutKind::Folder)
    }

    /// The temporary's path.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary file, opened for writing.
    pub fn open(&self) -> Result<File> {
        OpenOptions::new()
            .write(true)
            .open(&self.tmp)
            .with_context(|| format!("opening {}", self.tmp.display()))
    }

    /// Bytes written so far (all files of a folder).
    pub fn size(&self) -> Result<u64> {
        match self.kind {
            OutKind::File => Ok(fs::metadata(&self.tmp)?.len()),
            OutKind::Folder => Ok(fs::read_dir(&self.tmp)?
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()),
        }
    }

    /// Flushes the data to disk (every file of a folder, and the folder).
    pub(super) fn sync(&self) -> Result<()> {
        let ctx = || format!("syncing {}", self.tmp.display());
        if self.kind == OutKind::Folder {
            for e in fs::read_dir(&self.tmp).with_context(ctx)? {
                File::open(e.with_context(ctx)?.path())
                    .and_then(|f| f.sync_all())
                    .with_context(ctx)?;
            }
        }
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .with_context(ctx)
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.done {
            remove_any(&self.tmp);
            let mut l = live();
            if let Some(i) = l.iter().rposition(|p| p == &self.tmp) {
                l.swap_remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_stay_within_255_bytes_and_differ() {
        let a = "a".repeat(244) + ".gguf";
        let b = "a".repeat(244) + ".guff";
        let (ta, tb) = (
            temp_path(Path::new(&a), ""),
            temp_path(Path::new(&b), "probe"),
        );
        for t in [&ta, &tb] {
            let n = t.file_name().unwrap();
            assert!(n.len() <= 255, "{} bytes", n.len());
            assert_eq!(temp_pid(n), Some(std::process::id()));
        }
        assert_ne!(ta.file_name(), tb.file_name());
        let short = temp_path(Path::new("dir/m.gguf"), "");
        assert_eq!(
            short,
            Path::new(&format!("dir/.m.gguf.scalpel-tmp-{}", std::process::id()))
        );
        assert_eq!(temp_pid(OsStr::new("m.gguf.scalpel-tmp-12")), None);
        assert_eq!(temp_pid(OsStr::new(".m.gguf")), None);
    }
}
