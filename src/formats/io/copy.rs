//! File-to-file copies of byte ranges, at explicit offsets in both files.
//!
//! Writers copy every byte they do not change with `copy_file_range`, as `cp` does: the data
//! stays in the kernel (or is shared, on file systems with reflinks) and never enters this
//! process's memory. Where the kernel refuses (across file systems on older kernels, or file
//! systems without support) a buffered `pread`/`pwrite` loop copies the same bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};

use super::TempOut;

/// Buffer of the fallback copy.
const BUF: usize = 1 << 20;

/// Copies `len` bytes at `src_off` of `src` to `dst_off` of `dst`. Errors when `src` ends
/// before `len` bytes (the input changed while writing).
pub fn copy_range(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> Result<()> {
    let done = kernel_copy(src, src_off, dst, dst_off, len)?;
    if done < len {
        buffered_copy(
            src,
            src_off + done,
            dst,
            dst_off + done,
            len - done,
            len,
            done,
        )?;
    }
    Ok(())
}

/// Bytes `copy_file_range` copied before it finished or refused (0 when it is unavailable).
#[cfg(target_os = "linux")]
fn kernel_copy(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> Result<u64> {
    use std::os::unix::io::AsRawFd;
    let (mut so, mut d_o) = (src_off as libc::loff_t, dst_off as libc::loff_t);
    let mut done = 0u64;
    while done < len {
        // Large requests are split by the kernel anyway; 1 GiB keeps the count in range.
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open files borrowed for the call; the offsets are
        // local variables the kernel reads and advances; no memory of ours is written.
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d_o, want, 0)
        };
        if n > 0 {
            done += n as u64;
            continue;
        }
        if n == 0 {
            bail!("input ended after {done} of {len} bytes (file changed while writing?)");
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            // Not possible between these files: copy the rest through a buffer.
            Some(
                libc::EXDEV
                | libc::ENOSYS
                | libc::EOPNOTSUPP
                | libc::EINVAL
                | libc::EPERM
                | libc::EBADF
                | libc::ETXTBSY,
            ) => return Ok(done),
            _ => return Err(e.into()),
        }
    }
    Ok(done)
}

#[cfg(not(target_os = "linux"))]
fn kernel_copy(_: &File, _: u64, _: &File, _: u64, _: u64) -> Result<u64> {
    Ok(0)
}

/// The copy through a buffer; `total` and `before` only word the error.
fn buffered_copy(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
    total: u64,
    before: u64,
) -> Result<()> {
    let mut buf = vec![0u8; BUF.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = match src.read_at(&mut buf[..want], src_off + done) {
            Ok(0) => bail!(
                "input ended after {} of {total} bytes (file changed while writing?)",
                before + done
            ),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        dst.write_all_at(&buf[..n], dst_off + done)?;
        done += n as u64;
    }
    Ok(())
}

/// A whole input file being copied to the temporary of an output, on a thread of its own.
///
/// Started before the edit is planned, the copy (a kernel `memcpy` of the whole file, as long
/// as `cp` takes) overlaps the row selection on the other core instead of following it; a
/// writer whose output is the input byte for byte outside the edited rows takes the copy
/// ([`CopyAhead::finish`]) and writes only the rows. A writer that cannot use it drops it:
/// the drop waits for the copy and removes the temporary, before the writer makes its own
/// under the same name.
pub struct CopyAhead {
    /// (device, inode, length) of the input when the copy started.
    input: (u64, u64, u64),
    job: Option<JoinHandle<Result<TempOut>>>,
}

impl CopyAhead {
    /// Starts copying the file at `src` to a temporary for `dest`.
    pub fn start(src: &Path, dest: &Path) -> Result<CopyAhead> {
        let input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let m = input.metadata()?;
        let id = (m.dev(), m.ino(), m.len());
        let tmp = TempOut::file(dest)?;
        let out = tmp.open()?;
        let job = std::thread::Builder::new()
            .name("copy-ahead".into())
            .spawn(move || {
                copy_range(&input, 0, &out, 0, id.2)
                    .with_context(|| format!("copying to {}", tmp.path().display()))?;
                start_writeback(&out, id.2);
                Ok(tmp)
            })?;
        Ok(CopyAhead {
            input: id,
            job: Some(job),
        })
    }

    /// Whether this is a copy of `file` as it is now (same file, same length).
    pub fn copies(&self, file: &File) -> Result<bool> {
        let m = file.metadata()?;
        Ok((m.dev(), m.ino(), m.len()) == self.input)
    }

    /// The temporary with the whole input in it, once the copy is done.
    pub fn finish(mut self) -> Result<TempOut> {
        match self.job.take() {
            Some(job) => job
                .join()
                .map_err(|_| anyhow!("the copy-ahead thread panicked"))?,
            None => bail!("the copy-ahead was already taken"),
        }
    }
}

impl Drop for CopyAhead {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            // The temporary (dropped with the thread's result) is removed.
            let _ = job.join();
        }
    }
}

/// Starts writing the first `len` bytes of `file` to disk without waiting, so that the final
/// `fsync` (after the edited rows) waits for what is left instead of the whole copy: the
/// disk works while the caller still selects rows. Only a hint; a refusal changes nothing.
fn start_writeback(file: &File, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: the descriptor is an open file borrowed for the call; no memory is passed.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                0,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, len);
}

/// The place of one tensor in an output file: rows are written to it with `pwrite`.
///
/// A slot is either *prefilled* (the tensor's old bytes were already copied there, file to
/// file, because its encoding did not change: write only the rows that change, in any
/// order) or empty (write every row, in order; [`TensorSlot::finish`] checks that all were).
pub struct TensorSlot<'f> {
    file: &'f File,
    start: u64,
    len: u64,
    row_bytes: u64,
    prefilled: bool,
    /// Bytes written in order from the start (empty slots, and the `Write` interface).
    cursor: u64,
}

impl<'f> TensorSlot<'f> {
    /// The slot of `len` bytes at `start` of `file`, made of rows of `row_bytes` bytes.
    pub fn new(file: &'f File, start: u64, len: u64, row_bytes: u64, prefilled: bool) -> Self {
        TensorSlot {
            file,
            start,
            len,
            row_bytes: row_bytes.max(1),
            prefilled,
            cursor: 0,
        }
    }

    /// Whether the old bytes are already in place (only changed rows need writing).
    pub fn prefilled(&self) -> bool {
        self.prefilled
    }

    /// Writes whole rows starting at row `first`.
    pub fn write_rows(&mut self, first: usize, bytes: &[u8]) -> Result<()> {
        let at = first as u64 * self.row_bytes;
        let n = bytes.len() as u64;
        if !n.is_multiple_of(self.row_bytes) || at + n > self.len {
            bail!(
                "{n} bytes at row {first} do not fit a tensor of {} bytes in rows of {}",
                self.len,
                self.row_bytes
            );
        }
        if !self.prefilled && at != self.cursor {
            bail!(
                "rows of a re-encoded tensor must be written in order (row {first}, expected {})",
                self.cursor / self.row_bytes
            );
        }
        self.file.write_all_at(bytes, self.start + at)?;
        if at == self.cursor {
            self.cursor += n;
        }
        Ok(())
    }

    /// Checks that an empty slot was filled, or that `whole` bytes were written in order.
    pub fn finish(&self, whole: bool) -> Result<()> {
        if (whole || !self.prefilled) && self.cursor != self.len {
            bail!("got {} bytes of data, expected {}", self.cursor, self.len);
        }
        Ok(())
    }
}

/// Appends in order, like a file of the tensor's size (for producers that stream bytes).
impl io::Write for TensorSlot<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.cursor + b.len() as u64 > self.len {
            return Err(io::Error::other(format!(
                "more than the tensor's {} bytes",
                self.len
            )));
        }
        self.file.write_all_at(b, self.start + self.cursor)?;
        self.cursor += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn file_with(dir: &std::path::Path, name: &str, bytes: &[u8]) -> File {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap()
    }

    fn contents(mut f: &File) -> Vec<u8> {
        use std::io::Seek;
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn kernel_and_buffered_copies_agree_at_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let src = file_with(dir.path(), "src", &data);
        let a = file_with(dir.path(), "a", &[]);
        let b = file_with(dir.path(), "b", &[]);
        copy_range(&src, 12_345, &a, 100, 2_500_000).unwrap();
        buffered_copy(&src, 12_345, &b, 100, 2_500_000, 2_500_000, 0).unwrap();
        let (ca, cb) = (contents(&a), contents(&b));
        assert_eq!(ca, cb);
        assert_eq!(ca.len(), 2_500_100);
        assert!(ca[..100].iter().all(|&x| x == 0));
        assert_eq!(&ca[100..], &data[12_345..12_345 + 2_500_000]);
    }

    #[test]
    fn a_short_input_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = file_with(dir.path(), "src", &[1u8; 1000]);
        let dst = file_with(dir.path(), "dst", &[]);
        let e = copy_range(&src, 900, &dst, 0, 200).unwrap_err().to_string();
        assert!(e.contains("input ended after 100 of 200 bytes"), "{e}");
        let e = buffered_copy(&src, 900, &dst, 0, 200, 200, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("input ended after 100 of 200 bytes"), "{e}");
    }
}
