//! Faults and hostile outputs (issue 17, files and faults): `kill -9` at random moments of
//! every command that writes a model, patch or probe, GGUF and Hugging Face; concurrent
//! writers; crafted patch files; outputs that are inputs, devices or too long; signals and
//! closed pipes. Every output must be absent or complete (byte-identical to an uninterrupted
//! run: the writers are deterministic), and a model present at `--out` must have its own
//! patch beside it.
//!
//! Seeded (`SCALPEL_FAULT_SEED`, default 17); `SCALPEL_FAULT_RUNS` sets the kills per
//! scenario (default 16); `SCALPEL_FAULT_ONLY` keeps the kill scenarios whose name holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};
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

/// splitmix64: the kill delays, seeded.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// One kill scenario: the commands to alternate, and the outputs they write.
struct Scenario {
    name: &'static str,
    /// Command lines, used in turn (each with `--force` when `force`).
    cmds: Vec<Vec<String>>,
    force: bool,
    /// The model-like output, and the patch that belongs to it (if any).
    out: PathBuf,
    patch: Option<PathBuf>,
}

#[derive(Default, Debug)]
struct Tally {
    runs: usize,
    killed: usize,
    finished: usize,
    bad: Vec<String>,
}

/// Runs each command once uninterrupted (its outputs are the only valid ones, with their
/// wall time), then `n` times killed at a random moment in [0, 1.5 × that time], checking
/// the outputs after every kill; then one clean run, after which no temporary may remain.
fn kill_loop(sc: &Scenario, n: u64, rng: &mut Rng, tally: &mut Tally) {
    let dir = sc.out.parent().unwrap().to_path_buf();
    let with_force = |c: &Vec<String>| {
        let mut c = c.clone();
        if sc.force {
            c.push("--force".into());
        }
        c
    };
    let clear = || {
        for p in [Some(&sc.out), sc.patch.as_ref()].into_iter().flatten() {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_dir_all(p);
        }
    };
    // (model state, patch state) of each command's complete output.
    let mut valid = Vec::new();
    let mut wall = Duration::ZERO;
    for c in &sc.cmds {
        clear();
        let t = Instant::now();
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        ok(&args);
        wall = wall.max(t.elapsed());
        valid.push((state(&sc.out), sc.patch.as_ref().map(|p| state(p))));
    }
    let max_us = (wall.as_micros() as u64 * 3 / 2).max(1000);
    if !sc.force {
        clear();
    }
    for i in 0..n {
        let c = with_force(&sc.cmds[i as usize % sc.cmds.len()]);
        if !sc.force {
            clear();
        }
        let mut child = bin()
            .args(&c)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(max_us)));
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        tally.runs += 1;
        if o.status.success() {
            tally.finished += 1;
        } else if o.status.code().is_none() {
            tally.killed += 1;
        } else {
            tally.bad.push(format!(
                "{}: run {i} failed: {}",
                sc.name,
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let m = state(&sc.out);
        let p = sc.patch.as_ref().map(|p| state(p));
        let fine = match &m {
            // A model present is a complete one, with its own patch.
            Some(_) => valid.iter().any(|(vm, vp)| *vm == m && *vp == p),
            // No model: any patch present is a complete one.
            None => match &p {
                Some(Some(_)) => valid.iter().any(|(_, vp)| *vp == p),
                _ => true,
            },
        };
        if !fine {
            tally.bad.push(format!(
                "{}: run {i} (killed after ≤ {max_us} µs) left model {m:?} with patch {p:?}",
                sc.name
            ));
        }
        if sc.out.is_dir() {
            let inner = temps(&sc.out);
            if !inner.is_empty() {
                tally.bad.push(format!(
                    "{}: temporaries inside the output: {inner:?}",
                    sc.name
                ));
            }
        }
    }
    if !sc.force {
        clear();
    }
    let args: Vec<String> = with_force(&sc.cmds[0]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let left = temps(&dir);
    if !left.is_empty() {
        tally.bad.push(format!(
            "{}: temporaries of killed runs left after the next write: {left:?}",
            sc.name
        ));
    }
}

#[test]
fn kill_9_at_random_moments_leaves_complete_or_absent_outputs() {
    let f = fixture();
    let d = f.dir.path();
    let n = env_u64("SCALPEL_FAULT_RUNS", 16);
    let mut rng = Rng(env_u64("SCALPEL_FAULT_SEED", 17));
    let t0 = Instant::now();
    // Patches of two edits of each model, for apply / revert.
    let (pa, pb, ma, mb) = (
        d.join("a.patch"),
        d.join("b.patch"),
        d.join("a.gguf"),
        d.join("b.gguf"),
    );
    let args = |v: Vec<String>| v;
    ok(&str_args(&args(edit_args(
        &f.gguf, &f.probe, "0.5", &ma, &pa,
    ))));
    ok(&str_args(&args(edit_args(
        &f.gguf, &f.probe, "-0.5", &mb, &pb,
    ))));
    let (ha, hb, hpa, hpb) = (
        d.join("ha"),
        d.join("hb"),
        d.join("ha.patch"),
        d.join("hb.patch"),
    );
    ok(&str_args(&edit_args(&f.hf, &f.probe, "0.5", &ha, &hpa)));
    ok(&str_args(&edit_args(&f.hf, &f.probe, "-0.5", &hb, &hpb)));
    let o = |name: &str| d.join("kill").join(name);
    std::fs::create_dir_all(d.join("kill")).unwrap();
    let patch_cmd = |verb: &str, m: &Path, p: &Path, out: &Path| {
        ["patch", verb, s(m), s(p), "--out", s(out)]
            .map(String::from)
            .to_vec()
    };
    let scenarios = vec![
        Scenario {
            name: "edit gguf, fresh",
            cmds: vec![edit_args(
                &f.gguf,
                &f.probe,
                "0.5",
                &o("e.gguf"),
                &o("e.patch"),
            )],
            force: false,
            out: o("e.gguf"),
            patch: Some(o("e.patch")),
        },
        Scenario {
            name: "edit gguf --force over another edit",
            cmds: vec![
                edit_args(&f.gguf, &f.probe, "0.5", &o("ef.gguf"), &o("ef.patch")),
                edit_args(&f.gguf, &f.probe, "-0.5", &o("ef.gguf"), &o("ef.patch")),
            ],
            force: true,
            out: o("ef.gguf"),
            patch: Some(o("ef.patch")),
        },
        Scenario {
            name: "edit hf, fresh",
            cmds: vec![edit_args(&f.hf, &f.probe, "0.5", &o("h"), &o("h.patch"))],
            force: false,
            out: o("h"),
            patch: Some(o("h.patch")),
        },
        Scenario {
            name: "edit hf --force over another edit (3 shards / 1 shard)",
            cmds: vec![
                edit_args(&f.hf, &f.probe, "0.5", &o("hf"), &o("hf.patch")),
                edit_args(&f.hf1, &f.probe, "-0.5", &o("hf"), &o("hf.patch")),
            ],
            force: true,
            out: o("hf"),
            patch: Some(o("hf.patch")),
        },
        Scenario {
            name: "patch apply gguf --force (two patches in turn)",
            cmds: vec![
                patch_cmd("apply", &f.gguf, &pa, &o("pa.gguf")),
                patch_cmd("apply", &f.gguf, &pb, &o("pa.gguf")),
            ],
            force: true,
            out: o("pa.gguf"),
            patch: None,
        },
        Scenario {
            name: "patch revert gguf, fresh",
            cmds: vec![patch_cmd("revert", &ma, &pa, &o("pr.gguf"))],
            force: false,
            out: o("pr.gguf"),
            patch: None,
        },
        Scenario {
            name: "patch apply hf --force (two patches in turn)",
            cmds: vec![
                patch_cmd("apply", &f.hf, &hpa, &o("hpa")),
                patch_cmd("apply", &f.hf, &hpb, &o("hpa")),
            ],
            force: true,
            out: o("hpa"),
            patch: None,
        },
        Scenario {
            name: "patch revert hf, fresh",
            cmds: vec![patch_cmd("revert", &hb, &hpb, &o("hpr"))],
            force: false,
            out: o("hpr"),
            patch: None,
        },
        Scenario {
            name: "probe train --force",
            cmds: vec![[
                "probe",
                "train",
                s(&f.gguf),
                "--data-file",
                s(&f.data),
                "--no-cache",
                "--method",
                "logistic",
                "--out",
                s(&o("probe.st")),
            ]
            .map(String::from)
            .to_vec()],
            force: true,
            out: o("probe.st"),
            patch: None,
        },
    ];
    let mut report = Vec::new();
    let mut bad = Vec::new();
    let only = std::env::var("SCALPEL_FAULT_ONLY").unwrap_or_default();
    for sc in scenarios.iter().filter(|sc| sc.name.contains(&only)) {
        let mut t = Tally::default();
        kill_loop(sc, n, &mut rng, &mut t);
        report.push(format!(
            "{:55} runs {:3}  killed {:3}  finished {:3}  bad {}",
            sc.name,
            t.runs,
            t.killed,
            t.finished,
            t.bad.len()
        ));
        bad.extend(t.bad);
    }
    eprintln!(
        "fault suite: {} kills per scenario, seed {}, {:.1} s\n{}",
        n,
        env_u64("SCALPEL_FAULT_SEED", 17),
        t0.elapsed().as_secs_f64(),
        report.join("\n")
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `args` then `extra`.
fn with<'a>(extra: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    [args, extra].concat()
}

fn str_args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn concurrent_edits_to_one_output() {
    let f = fixture();
    let d = f.dir.path();
    let (out, patch) = (d.join("c.gguf"), d.join("c.patch"));
    let alphas = ["0.5", "-0.5"];
    // The valid (model, patch) pairs.
    let mut valid = Vec::new();
    for a in alphas {
        ok(&str_args(&edit_args(&f.gguf, &f.probe, a, &out, &patch)));
        valid.push((state(&out), state(&patch)));
        std::fs::remove_file(&out).unwrap();
        std::fs::remove_file(&patch).unwrap();
    }
    for force in [false, true] {
        for round in 0..8 {
            if !force {
                let _ = std::fs::remove_file(&out);
                let _ = std::fs::remove_file(&patch);
            }
            let kids: Vec<_> = alphas
                .iter()
                .map(|a| {
                    let mut c = edit_args(&f.gguf, &f.probe, a, &out, &patch);
                    if force {
                        c.push("--force".into());
                    }
                    bin()
                        .args(&c)
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            let outs: Vec<_> = kids
                .into_iter()
                .map(|k| k.wait_with_output().unwrap())
                .collect();
            let wins = outs.iter().filter(|o| o.status.success()).count();
            for o in outs.iter().filter(|o| !o.status.success()) {
                let e = String::from_utf8_lossy(&o.stderr);
                assert!(
                    o.status.code() == Some(1)
                        && (e.contains("already exists") || e.contains("appeared")),
                    "round {round}: {e}"
                );
            }
            if !force {
                assert_eq!(wins, 1, "round {round}: {wins} of two writers succeeded");
            }
            let pair = (state(&out), state(&patch));
            assert!(
                valid.contains(&pair),
                "force {force} round {round}: model and patch from different runs"
            );
            assert!(temps(d).is_empty(), "{:?}", temps(d));
        }
    }
}

/// A change to a patch's JSON.
type JsonEdit = Box<dyn Fn(&mut serde_json::Value)>;

/// Rewrites a patch file's JSON (hashes and stored rows intact).
fn rewrite_patch(src: &Path, dst: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(src).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["scalpel.patch"]).unwrap();
    edit(&mut json);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                TensorView::new(t.dtype(), t.shape().to_vec(), t.data()).unwrap(),
            )
        })
        .collect();
    let meta = std::collections::HashMap::from([("scalpel.patch".to_string(), json.to_string())]);
    std::fs::write(dst, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

#[test]
fn crafted_patches_are_refused_in_one_line() {
    let f = fixture();
    let d = f.dir.path();
    for (m, out, patch) in [
        (&f.gguf, d.join("e.gguf"), d.join("e.patch")),
        (&f.hf, d.join("eh"), d.join("eh.patch")),
    ] {
        ok(&str_args(&edit_args(m, &f.probe, "0.5", &out, &patch)));
        let bad = d.join("bad.patch");
        let target = d.join("applied");
        let cases: Vec<(&str, JsonEdit)> = vec![
            (
                "more rows than it holds",
                Box::new(|j| j["tensors"][0]["n_rows"] = (1024 + 5).into()),
            ),
            (
                "fewer rows",
                Box::new(|j| j["tensors"][0]["n_rows"] = 3.into()),
            ),
            (
                "huge rows",
                Box::new(|j| j["tensors"][0]["n_rows"] = (1u64 << 62).into()),
            ),
            (
                "longer rows",
                Box::new(|j| j["tensors"][0]["row_len"] = 512.into()),
            ),
            (
                "unknown type",
                Box::new(|j| j["tensors"][0]["after_type"] = "Q9_9".into()),
            ),
            ("unknown format", Box::new(|j| j["format"] = "onnx".into())),
            (
                "no tensor",
                Box::new(|j| j["tensors"][0]["name"] = "no.such.weight".into()),
            ),
            ("version", Box::new(|j| j["version"] = 7.into())),
            (
                "short hash",
                Box::new(|j| j["tensors"][0]["sha256_before"] = "ab".into()),
            ),
        ];
        for (what, edit) in &cases {
            rewrite_patch(&patch, &bad, edit);
            for verb in ["apply", "revert"] {
                let model = if verb == "apply" {
                    m.as_path()
                } else {
                    out.as_path()
                };
                let r = run(&["patch", verb, s(model), s(&bad), "--out", s(&target)]);
                assert_eq!(r.status.code(), Some(1), "{what} {verb}: {}", r.stderr);
                assert_eq!(
                    r.stderr.trim_end().lines().count(),
                    1,
                    "{what}: {}",
                    r.stderr
                );
                assert!(!target.exists(), "{what} {verb}: output left behind");
            }
        }
        let truncated = std::fs::read(&patch).unwrap();
        std::fs::write(&bad, &truncated[..truncated.len() / 2]).unwrap();
        refused(
            &["patch", "apply", s(m), s(&bad), "--out", s(&target)],
            "not a scalpel patch",
        );
        assert!(temps(d).is_empty(), "{:?}", temps(d));
    }
}

#[test]
fn outputs_that_are_inputs_are_refused_by_every_command() {
    let f = fixture();
    let d = f.dir.path();
    let (m, p, data) = (s(&f.gguf), s(&f.probe), s(&f.data));
    let before: Vec<_> = [&f.gguf, &f.probe, &f.data]
        .iter()
        .map(|x| state(x))
        .collect();
    let (patch, out) = (d.join("x.patch"), d.join("x.gguf"));
    ok(&str_args(&edit_args(
        &f.gguf, &f.probe, "0.5", &out, &patch,
    )));
    let link = d.join("hard.gguf");
    std::fs::hard_link(&f.gguf, &link).unwrap();
    let it = "is the input itself";
    for force in [&[][..], &["--force"][..]] {
        refused(&with(force, &["select", m, p, "--out", m]), it);
        refused(&with(force, &["select", m, p, "--out", p]), it);
        refused(&with(force, &["edit", m, p, "--out", m]), it);
        refused(&with(force, &["edit", m, p, "--out", s(&link)]), it);
        refused(&with(force, &["edit", m, p, "--out", p]), it);
        refused(
            &with(
                force,
                &["edit", m, p, "--out", s(&d.join("y.gguf")), "--patch", m],
            ),
            it,
        );
        refused(
            &with(
                force,
                &["edit", m, p, "--out", s(&d.join("y.gguf")), "--patch", p],
            ),
            it,
        );
        refused(&with(force, &["edit", s(&f.hf), p, "--out", s(&f.hf)]), it);
        refused(
            &with(force, &["edit", s(&f.hf), p, "--out", s(d)]),
            "holds the input",
        );
        refused(
            &with(force, &["patch", "apply", m, s(&patch), "--out", m]),
            it,
        );
        refused(
            &with(force, &["patch", "apply", m, s(&patch), "--out", s(&patch)]),
            it,
        );
        refused(
            &with(
                force,
                &["patch", "revert", s(&out), s(&patch), "--out", s(&out)],
            ),
            it,
        );
        refused(
            &with(
                force,
                &["probe", "train", m, "--data-file", data, "--out", m],
            ),
            it,
        );
        refused(
            &with(
                force,
                &["probe", "train", m, "--data-file", data, "--out", data],
            ),
            it,
        );
        let qp = d.join("q.st");
        let q = s(&qp);
        refused(
            &with(
                force,
                &[
                    "probe",
                    "train",
                    m,
                    "--data-file",
                    data,
                    "--out",
                    q,
                    "--report",
                    q,
                ],
            ),
            "same path",
        );
        refused(
            &with(
                force,
                &[
                    "probe",
                    "train",
                    m,
                    "--data-file",
                    data,
                    "--out",
                    q,
                    "--report",
                    m,
                ],
            ),
            it,
        );
        refused(
            &with(
                force,
                &["probe", "eval", m, p, "--data-file", data, "--report", p],
            ),
            it,
        );
    }
    refused(&["eval", m, "--out", m], it);
    refused(&["eval", m, "--out", s(d)], "holds the input");
    refused(&["run", m, "--out", m], it);
    refused(
        &[
            "edit",
            m,
            p,
            "--out",
            s(&d.join("z.gguf")),
            "--patch",
            s(&d.join("z.gguf")),
        ],
        "same path",
    );
    let after: Vec<_> = [&f.gguf, &f.probe, &f.data]
        .iter()
        .map(|x| state(x))
        .collect();
    assert_eq!(before, after, "an input was changed");
    assert!(!d.join("y.gguf").exists() && !d.join("q.st").exists());
}

#[test]
fn devices_folders_and_unwritable_outputs_are_refused() {
    let f = fixture();
    let d = f.dir.path();
    let (m, p) = (s(&f.gguf), s(&f.probe));
    for dev in ["/dev/null", "/dev/full"] {
        for force in [&[][..], &["--force"][..]] {
            refused(&with(force, &["edit", m, p, "--out", dev]), "device");
            refused(&with(force, &["select", m, p, "--out", dev]), "device");
            refused(
                &with(
                    force,
                    &["edit", m, p, "--out", s(&d.join("o.gguf")), "--patch", dev],
                ),
                "device",
            );
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(dev).unwrap().file_type().is_char_device());
    }
    // A folder that is not a model folder is never replaced by an HF output.
    let keep = d.join("keep");
    std::fs::create_dir_all(keep.join("sub")).unwrap();
    std::fs::write(keep.join("notes.txt"), "mine").unwrap();
    refused(
        &["edit", s(&f.hf), p, "--out", s(&keep), "--force"],
        "model folder",
    );
    assert_eq!(std::fs::read(keep.join("notes.txt")).unwrap(), b"mine");
    // A GGUF output never replaces a folder.
    refused(&["edit", m, p, "--out", s(&keep), "--force"], "a folder");
    // The patch path cannot be written: refused before the model is written, and the earlier
    // output at --out survives.
    let out = d.join("o.gguf");
    ok(&str_args(&edit_args(
        &f.gguf,
        &f.probe,
        "0.5",
        &out,
        &d.join("o.patch"),
    )));
    let old = state(&out);
    let bad_patch = d.join("o.gguf").join("x.patch");
    refused(
        &[
            "edit",
            m,
            p,
            "--alpha",
            "-1",
            "--out",
            s(&out),
            "--patch",
            s(&bad_patch),
            "--force",
        ],
        "not a folder",
    );
    assert_eq!(state(&out), old, "the earlier output was touched");
}

#[test]
fn force_replaces_a_folder_whole() {
    let f = fixture();
    let d = f.dir.path();
    let out = d.join("o");
    ok(&str_args(&edit_args(
        &f.hf,
        &f.probe,
        "0.5",
        &out,
        &d.join("a.patch"),
    )));
    assert!(files(&out).contains_key("model.safetensors.index.json"));
    let mut c = edit_args(&f.hf1, &f.probe, "0.5", &out, &d.join("b.patch"));
    c.push("--force".into());
    ok(&str_args(&c));
    let names: Vec<String> = files(&out).into_keys().collect();
    let want: Vec<String> = files(&f.hf1).into_keys().collect();
    assert_eq!(names, want, "stale files of the earlier output survived");
    assert!(temps(d).is_empty(), "{:?}", temps(d));
}

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
    // A closed stdout: a quiet exit, no panic.
    let mut child = bin()
        .args(["inspect", m])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
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
