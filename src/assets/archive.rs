//! Reading one member out of a wheel / zip or a (gzipped) tar, including members of
//! archives nested inside archives (the VADER sdist ships its data as a `.tar.gz` inside).

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

/// Archive formats told apart by file name, as pip and sdists name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Zip,
    TarGz,
    Tar,
}

fn kind_of(name: &str) -> Result<Kind> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".whl") || lower.ends_with(".zip") {
        Ok(Kind::Zip)
    } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        Ok(Kind::TarGz)
    } else if lower.ends_with(".tar") {
        Ok(Kind::Tar)
    } else {
        bail!("unknown archive type: {name}")
    }
}

/// Follows `members` (a path in `archive`, then a path inside that member, ...) and writes
/// the last one to `out`; returns its sha256. Intermediate archives go to a temp directory.
pub(crate) fn extract_chain(
    archive: &Path,
    members: &[String],
    out: &mut dyn Write,
) -> Result<String> {
    let Some((last, outer)) = members.split_last() else {
        bail!("no member path given for {}", archive.display());
    };
    let scratch = tempfile::Builder::new()
        .prefix("scalpel-nested-")
        .tempdir()
        .context("creating a temp directory")?;
    let mut current = archive.to_path_buf();
    for (i, member) in outer.iter().enumerate() {
        let file_name = member.rsplit('/').next().unwrap_or(member);
        let next = scratch.path().join(format!("{i}-{file_name}"));
        let mut file =
            File::create(&next).with_context(|| format!("creating {}", next.display()))?;
        extract(&current, member, &mut file)?;
        current = next;
    }
    extract(&current, last, out)
}

/// Writes one member of `archive` to `out` and returns its sha256.
pub(crate) fn extract(archive: &Path, member: &str, out: &mut dyn Write) -> Result<String> {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let context = || format!("reading {member} from {}", archive.display());
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let hash = match kind_of(&name)? {
        Kind::Zip => extract_zip(file, member, out),
        Kind::TarGz => extract_tar(
            flate2::read::GzDecoder::new(BufReader::new(file)),
            member,
            out,
        ),
        Kind::Tar => extract_tar(BufReader::new(file), member, out),
    };
    hash.with_context(context)
}

fn extract_zip(file: File, member: &str, out: &mut dyn Write) -> Result<String> {
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).context("not a valid zip archive")?;
    let mut entry = match zip.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => bail!("no such member in the archive"),
        Err(e) => return Err(e).context("reading the zip directory"),
    };
    let (_, hash) = super::copy_hashing(&mut entry, out)?;
    Ok(hash)
}

fn extract_tar(reader: impl Read, member: &str, out: &mut dyn Write) -> Result<String> {
    let want = member.trim_start_matches("./");
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().context("not a valid tar archive")? {
        let mut entry = entry.context("reading a tar entry")?;
        let path = entry.path().context("reading a tar entry name")?;
        let path = path.to_string_lossy();
        if path.trim_start_matches("./") != want {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            bail!("member is not a regular file");
        }
        let (_, hash) = super::copy_hashing(&mut entry, out)?;
        return Ok(hash);
    }
    bail!("no such member in the archive")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn nested_tar_gz_member() {
        let inner = tar_gz(&[("data/a.tsv", b"1\tx\n"), ("data/b.tsv", b"2\ty\n")]);
        let outer = tar_gz(&[
            ("pkg-1.0/README", b"hi"),
            ("pkg-1.0/res/inner.tar.gz", &inner),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkg-1.0.tar.gz");
        std::fs::write(&path, outer).unwrap();
        let chain = [
            "pkg-1.0/res/inner.tar.gz".to_string(),
            "data/b.tsv".to_string(),
        ];
        let mut out = Vec::new();
        extract_chain(&path, &chain, &mut out).unwrap();
        assert_eq!(out, b"2\ty\n");
        let missing = [
            "pkg-1.0/res/inner.tar.gz".to_string(),
            "data/c.tsv".to_string(),
        ];
        let err = extract_chain(&path, &missing, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("data/c.tsv"), "{err:#}");
    }

    #[test]
    fn zip_member_and_missing_member() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p-1-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        zip.start_file("p/data.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"payload").unwrap();
        zip.finish().unwrap();
        let mut out = Vec::new();
        extract(&path, "p/data.txt", &mut out).unwrap();
        assert_eq!(out, b"payload");
        let err = extract(&path, "p/other.txt", &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("no such member"), "{err:#}");
    }

    #[test]
    fn unknown_archive_type_is_an_error() {
        assert!(kind_of("x.rar").is_err());
        assert_eq!(kind_of("X.TGZ").unwrap(), Kind::TarGz);
    }
}
