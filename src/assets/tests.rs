//! Unit tests of the asset fetcher.
use super::*;

#[test]
fn split_url_maps_to_mirror_path() {
    let (h, p) = split_url("https://raw.githubusercontent.com/o/r/c/data/x.csv").unwrap();
    assert_eq!((h, p), ("raw.githubusercontent.com", "o/r/c/data/x.csv"));
    assert!(split_url("http://example.com/x").is_err());
    assert!(split_url("https://example.com/../etc/passwd").is_err());
    assert!(split_url("https://example.com/a//b").is_err());
    assert!(split_url("https://example.com").is_err());
}

#[test]
fn file_name_is_last_component() {
    let a = Asset::package_member(
        "m",
        "p",
        "1",
        Dist::Sdist,
        &["p-1/a.tar.gz", "d/x.tsv"],
        "00",
        "MIT",
    );
    assert_eq!(a.file_name(), "x.tsv");
    let u = Asset::url("u", "https://h/a/b.txt", "AB", "MIT");
    assert_eq!((u.file_name(), u.sha256.as_str()), ("b.txt", "ab"));
}

#[test]
fn sha256_of_known_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("abc");
    std::fs::write(&p, b"abc").unwrap();
    assert_eq!(
        sha256_file(&p).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn last_line_skips_blank_lines() {
    assert_eq!(last_line(b"first\nERROR: boom\n\n"), "ERROR: boom");
    assert_eq!(last_line(b""), "(no message)");
}
