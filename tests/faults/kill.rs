//! The `kill -9` loop: every command that writes a model, patch or probe, killed at seeded
//! random moments; the outputs must be absent or complete.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{bin, edit_args, fixture, ok, s, state, str_args, temps};

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
