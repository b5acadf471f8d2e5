//! Faults and hostile outputs (issue 17, files and faults): `kill -9` at random moments of
//! every command that writes a model, patch or probe, GGUF and Hugging Face; concurrent
//! writers; crafted patch files; outputs that are inputs, devices or too long; signals and
//! closed pipes. Every output must be absent or complete (byte-identical to an uninterrupted
//! run: the writers are deterministic), and a model present at `--out` must have its own
//! patch beside it.
//!
//! Seeded (`SCALPEL_FAULT_SEED`, default 17); `SCALPEL_FAULT_RUNS` sets the kills per
//! scenario (default 16); `SCALPEL_FAULT_ONLY` keeps the kill scenarios whose name holds it.
//!
//! Modules: [`kill`] (the `kill -9` loop), [`concurrency`] (concurrent writers), [`crafted`]
//! (crafted patch files), [`outputs`] (outputs that are inputs, devices, folders), [`signals`]
//! (long names, stale temporaries, closed pipes, SIGTERM/SIGINT); the shared fixture and
//! command helpers are here.

mod concurrency;
mod crafted;
mod hostile_inputs;
mod kill;
mod outputs;
mod signals;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use safetensors::{tensor::TensorView, Dtype};
use scalpel::formats::ggml::GgmlType;
use scalpel::formats::patch::sha256_hex;
use scalpel::formats::tiny::{self, HfDtype, TinySpec};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scalpel"));
    c.env(
        "SCALPEL_CACHE",
        std::env::temp_dir().join("scalpel-faults-cache"),
    );
    c
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let o = bin().args(args).output().unwrap();
    Run {
        status: o.status,
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn ok(args: &[&str]) -> Run {
    let r = run(args);
    assert!(r.status.success(), "{args:?}: {}", r.stderr);
    r
}

/// A refusal: exit code 1 (not a panic's 101, not a signal), one line naming `needle`.
fn refused(args: &[&str], needle: &str) {
    let r = run(args);
    assert_eq!(
        r.status.code(),
        Some(1),
        "{args:?}: {}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        r.stderr.trim_end().lines().count(),
        1,
        "{args:?}: {}",
        r.stderr
    );
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.contains(needle),
        "{args:?}: {needle:?} not in {}",
        r.stderr
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A probe of width `d` written directly.
fn probe_file(path: &Path, d: usize) {
    let w: Vec<u8> = (0..2 * d)
        .flat_map(|i| (((i * 37 % 11) as f32 - 5.0) / 10.0).to_le_bytes())
        .collect();
    let b = [0u8; 8];
    let t = [
        (
            "weight",
            TensorView::new(Dtype::F32, vec![2, d], &w).unwrap(),
        ),
        ("bias", TensorView::new(Dtype::F32, vec![2], &b).unwrap()),
    ];
    std::fs::write(
        path,
        safetensors::serialize(t, None::<std::collections::HashMap<String, String>>).unwrap(),
    )
    .unwrap();
}

/// Name → sha256 of every entry of a folder (a folder entry maps to "dir").
fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let h = if e.file_type().unwrap().is_dir() {
                "dir".into()
            } else {
                sha256_hex(&std::fs::read(e.path()).unwrap())
            };
            (e.file_name().to_string_lossy().into_owned(), h)
        })
        .collect()
}

/// What a path holds: None (absent), or a hash of the file / of the folder's listing.
fn state(p: &Path) -> Option<String> {
    let m = std::fs::symlink_metadata(p).ok()?;
    Some(if m.is_dir() {
        sha256_hex(format!("{:?}", files(p)).as_bytes())
    } else {
        sha256_hex(&std::fs::read(p).unwrap())
    })
}

fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".scalpel-tmp-"))
        .collect()
}

/// A model big enough that writing it takes some milliseconds (4 blocks, d 256, d_ff 1024).
fn spec(shards: usize) -> TinySpec {
    TinySpec {
        blocks: 4,
        d: 256,
        d_ff: 1024,
        heads: 8,
        kv_heads: 4,
        hf_shards: shards,
        ..TinySpec::default()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    gguf: PathBuf,
    hf: PathBuf,
    hf1: PathBuf,
    probe: PathBuf,
    data: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (gguf, hf, hf1) = (d.join("m.gguf"), d.join("hf"), d.join("hf1"));
    tiny::write_gguf(&gguf, &spec(1), 1, GgmlType::Q8_0).unwrap();
    tiny::write_hf_folder(&hf, &spec(3), 1, HfDtype::BF16).unwrap();
    tiny::write_hf_folder(&hf1, &spec(1), 2, HfDtype::BF16).unwrap();
    let probe = d.join("p.safetensors");
    probe_file(&probe, 256);
    let data = d.join("data.tsv");
    let words = ["kind", "nice", "awful", "rude", "calm", "mean"];
    let lines: Vec<String> = (0..40)
        .map(|i| format!("{}\tsample {i} is {}", i % 2, words[(i * 3 + i % 2) % 6]))
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    Fixture {
        dir,
        gguf,
        hf,
        hf1,
        probe,
        data,
    }
}

/// Edit arguments: model, α, output, patch.
fn edit_args(m: &Path, probe: &Path, alpha: &str, out: &Path, patch: &Path) -> Vec<String> {
    [
        "edit",
        s(m),
        s(probe),
        "--alpha",
        alpha,
        "--top-k",
        "64",
        "--out",
        s(out),
        "--patch",
        s(patch),
    ]
    .map(String::from)
    .to_vec()
}

/// `args` then `extra`.
fn with<'a>(extra: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    [args, extra].concat()
}

fn str_args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
