//! Concurrent writers to one output: one wins (or, with `--force`, the last), never a model
//! and a patch from different runs.

use std::process::Stdio;

use super::{bin, edit_args, fixture, ok, state, str_args, temps};

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
