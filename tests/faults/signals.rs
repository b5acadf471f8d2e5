//! Long names, stale temporaries, closed pipes and SIGTERM/SIGINT while writing.

use std::process::Stdio;
use std::time::Duration;

use super::{bin, files, fixture, ok, s, temps};

#[test]
fn long_names_stale_temporaries_pipes_and_signals() {
    let f = fixture();
    let d = f.dir.path();
    let (m, p) = (s(&f.gguf), s(&f.probe));
    // A valid 244-byte output name.
    let long = d.join(format!("{}.gguf", "m".repeat(239)));
    ok(&["edit", m, p, "--top-k", "8", "--out", s(&long)]);
    assert!(long.exists());
    // A temporary of a dead process is removed by the next write into its folder; one of a
    // live process (this test) is left alone.
    let dead = d.join(".x.gguf.scalpel-tmp-4194999");
    let live = d.join(format!(".y.gguf.scalpel-tmp-{}", std::process::id()));
    std::fs::write(&dead, "x").unwrap();
    std::fs::write(&live, "y").unwrap();
    ok(&[
        "select",
        m,
        p,
        "--top-k",
        "8",
        "--out",
        s(&d.join("plan.json")),
    ]);
    assert!(!dead.exists() && live.exists());
    std::fs::remove_file(&live).unwrap();
    // A closed stdout: a quiet exit, no panic. The pipe's read end is closed before the
    // child starts, so its first write fails (closing it after the spawn raced the child,
    // which could fill the pipe's buffer first and exit 0 on a busy machine).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = bin()
        .args(["inspect", m])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(141), "{err}");
    // SIGTERM and SIGINT while writing: exit 128 + signal (or done), no temporary left.
    let hf_out = d.join("sig");
    for (sig, rounds) in [(libc::SIGTERM, 6u64), (libc::SIGINT, 6)] {
        for i in 0..rounds {
            let _ = std::fs::remove_dir_all(&hf_out);
            let child = bin()
                .args(["edit", s(&f.hf), p, "--top-k", "64", "--out", s(&hf_out)])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(20 + 15 * i));
            // SAFETY: sends a signal to our own child, whose pid is valid until waited for.
            unsafe { libc::kill(child.id() as i32, sig) };
            let o = child.wait_with_output().unwrap();
            use std::os::unix::process::ExitStatusExt;
            let code = o.status.code();
            assert!(
                code == Some(0) || code == Some(128 + sig) || o.status.signal() == Some(sig),
                "signal {sig}: {:?} {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(temps(d).is_empty(), "signal {sig}: left {:?}", temps(d));
            if hf_out.exists() {
                assert_eq!(files(&hf_out).len(), files(&f.hf).len(), "partial output");
            }
            assert!(code != Some(0) || hf_out.exists());
        }
    }
}
