//! Model fingerprints: the sha256 of the model's bytes, memoised so that it is computed once
//! per file version rather than on every run.
//!
//! The memo is a small JSON sidecar in the cache (`<cache>/fingerprints/<sha256 of the
//! canonical path>.json`) holding the path, size and modification time it was computed for;
//! a file whose size or mtime changed is hashed again.

use crate::assets::sha256_file;
use crate::formats::io::write_atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

#[derive(Serialize, Deserialize, PartialEq)]
struct Memo {
    path: String,
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

/// The fingerprint of a model file (its sha256) or of a Hugging Face folder (the sha256 of
/// the list `name<TAB>sha256<LF>` over its regular files in name order, hidden files
/// skipped). With `cache_dir`, the result is memoised under `<cache_dir>/fingerprints/`.
pub fn model_fingerprint(path: &Path, cache_dir: Option<&Path>) -> Result<String> {
    let canon = path
        .canonicalize()
        .with_context(|| format!("cannot read model {}", path.display()))?;
    let files = model_files(&canon)?;
    let (mut size, mut mtime_ns) = (0u64, 0u128);
    for f in &files {
        let m = std::fs::metadata(f).with_context(|| format!("cannot stat {}", f.display()))?;
        size += m.len();
        let t = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        mtime_ns = mtime_ns.max(t);
    }
    let memo_path = cache_dir.map(|dir| {
        let key = hex(&Sha256::digest(canon.to_string_lossy().as_bytes()));
        dir.join("fingerprints").join(format!("{key}.json"))
    });
    if let Some(mp) = &memo_path {
        if let Some(memo) = std::fs::read(mp)
            .ok()
            .and_then(|b| serde_json::from_slice::<Memo>(&b).ok())
        {
            if memo.path == canon.to_string_lossy()
                && memo.size == size
                && memo.mtime_ns == mtime_ns
            {
                return Ok(memo.sha256);
            }
        }
    }
    let sha256 = if canon.is_dir() {
        let mut h = Sha256::new();
        for f in &files {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            h.update(format!("{name}\t{}\n", sha256_file(f)?).as_bytes());
        }
        hex(&h.finalize())
    } else {
        sha256_file(&canon)?
    };
    if let Some(mp) = &memo_path {
        let memo = Memo {
            path: canon.to_string_lossy().into_owned(),
            size,
            mtime_ns,
            sha256: sha256.clone(),
        };
        // A memo that cannot be written only costs a re-hash next time.
        let _ = write_atomic(mp, &serde_json::to_vec_pretty(&memo)?);
    }
    Ok(sha256)
}

/// The file itself, or a folder's regular non-hidden files in name order.
fn model_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memoised_and_refreshed_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (model, cache) = (dir.path().join("m.gguf"), dir.path().join("cache"));
        std::fs::write(&model, b"abc").unwrap();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(model_fingerprint(&model, Some(&cache)).unwrap(), want);
        let memo = std::fs::read_dir(cache.join("fingerprints"))
            .unwrap()
            .count();
        assert_eq!(memo, 1);
        // A memo with a forged hash but matching size/mtime is trusted: proves it is read.
        let mp = std::fs::read_dir(cache.join("fingerprints"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&mp)
            .unwrap()
            .replace(want, "forged");
        std::fs::write(&mp, text).unwrap();
        assert_eq!(model_fingerprint(&model, Some(&cache)).unwrap(), "forged");
        // Another size: hashed again.
        std::fs::write(&model, b"abcd").unwrap();
        assert_ne!(model_fingerprint(&model, Some(&cache)).unwrap(), "forged");
        let err = model_fingerprint(&dir.path().join("missing"), None).unwrap_err();
        assert!(err.to_string().contains("cannot read model"));
    }
}
