//! Moving finished temporaries into place, several as one unit.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::temp::{live, parent_of, remove_any, remove_stale, temp_path, TempOut};
use super::{check_replaceable, OutKind};

/// Moves `outs` into place as one unit; the LAST is the primary output (the model), those
/// before it depend on it (its patch).
///
/// Data are synced first. Then, holding an exclusive lock on every destination folder (so
/// concurrent scalpel processes take turns) and the temporaries' registry (so SIGINT/SIGTERM
/// wait for the moves), each destination is checked again ([`check_replaceable`]); with
/// `force` and several outputs the old primary is moved away first; then the dependants and
/// the primary are moved in, each with one `rename`: without `force` one that refuses to
/// replace anything. If a move fails, the outputs moved before it are removed again (they
/// did not exist before, or their model is gone), so a failure leaves no mixed state.
pub fn commit(mut outs: Vec<TempOut>, force: bool) -> Result<()> {
    for o in &outs {
        o.sync()?;
    }
    let mut dirs: Vec<PathBuf> = outs
        .iter()
        .map(|o| {
            let d = parent_of(&o.dest);
            d.canonicalize().unwrap_or(d)
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut locks = Vec::with_capacity(dirs.len());
    for d in &dirs {
        let f = File::open(d).with_context(|| format!("opening {}", d.display()))?;
        f.lock()
            .with_context(|| format!("locking {}", d.display()))?;
        locks.push(f);
    }
    let mut reg = live();
    for d in &dirs {
        remove_stale(d);
    }
    for o in &outs {
        check_replaceable(&o.dest, o.kind, force)?;
    }
    let mut trash = None;
    if force && outs.len() > 1 {
        let primary = outs.last().expect("several outputs");
        if fs::symlink_metadata(&primary.dest).is_ok() {
            let t = temp_path(&primary.dest, "old");
            remove_any(&t);
            reg.push(t.clone());
            fs::rename(&primary.dest, &t)
                .with_context(|| format!("moving the old {} away", primary.dest.display()))?;
            trash = Some(t);
        }
    }
    let mut placed: Vec<PathBuf> = Vec::new();
    for o in &outs {
        if let Err(e) = place(o, force, &mut reg) {
            for p in &placed {
                remove_any(p);
            }
            return Err(e);
        }
        placed.push(o.dest.clone());
    }
    for o in &mut outs {
        o.done = true;
        if let Some(k) = reg.iter().rposition(|p| p == &o.tmp) {
            reg.swap_remove(k);
        }
    }
    if let Some(t) = trash {
        remove_any(&t);
        if let Some(k) = reg.iter().rposition(|p| p == &t) {
            reg.swap_remove(k);
        }
    }
    for d in &dirs {
        // Makes the renames durable; some file systems cannot sync a folder, harmlessly.
        let _ = File::open(d).and_then(|f| f.sync_all());
    }
    drop(reg);
    drop(locks);
    Ok(())
}

/// Moves one temporary to its destination.
fn place(o: &TempOut, force: bool, reg: &mut Vec<PathBuf>) -> Result<()> {
    let ctx = || format!("moving {} to {}", o.tmp.display(), o.dest.display());
    let exists = fs::symlink_metadata(&o.dest).is_ok();
    if !exists || !force {
        return match rename_noreplace(&o.tmp, &o.dest, o.kind) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => bail!(
                "output {} appeared while writing (another writer?); left it alone (use --force to overwrite)",
                o.dest.display()
            ),
            r => r.with_context(ctx),
        };
    }
    match o.kind {
        OutKind::File => fs::rename(&o.tmp, &o.dest).with_context(ctx),
        OutKind::Folder => {
            // After the exchange the temporary's name holds the old folder: still registered,
            // so a signal now removes it, as does the line below.
            rename_exchange(&o.tmp, &o.dest).with_context(ctx)?;
            remove_any(&o.tmp);
            if let Some(k) = reg.iter().rposition(|p| p == &o.tmp) {
                reg.swap_remove(k);
            }
            Ok(())
        }
    }
}

#[cfg(target_os = "linux")]
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
    };
    let (a, b) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated strings that outlive the call; renameat2 reads
    // them and nothing else (called as a raw syscall: older C libraries lack the wrapper).
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether renameat2 reported that this file system (or kernel) lacks the flag.
#[cfg(target_os = "linux")]
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

/// `rename` that fails with `AlreadyExists` instead of replacing. Where the file system lacks
/// `RENAME_NOREPLACE`: `link` + `unlink` for files (link never replaces), and a plain rename
/// for folders (which cannot replace a non-empty folder; the folder lock keeps scalpel
/// writers apart).
fn rename_noreplace(from: &Path, to: &Path, kind: OutKind) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    match renameat2(from, to, libc::RENAME_NOREPLACE) {
        Err(e) if unsupported(&e) => {}
        r => return r,
    }
    match kind {
        OutKind::File => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        OutKind::Folder => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(from, to)
        }
    }
}

/// Swaps two folders in one step; where unsupported, moves the old one aside first (a
/// moment with no folder at `to`, never a mixed one).
fn rename_exchange(new: &Path, old: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    match renameat2(new, old, libc::RENAME_EXCHANGE) {
        Err(e) if unsupported(&e) => {}
        r => return r,
    }
    let aside = temp_path(old, "swap");
    fs::rename(old, &aside)?;
    fs::rename(new, old)?;
    fs::rename(&aside, new)
}
