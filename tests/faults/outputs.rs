//! Outputs that are inputs, devices, folders or unwritable: refused before anything is
//! written; `--force` replaces a model folder whole.

use super::{edit_args, files, fixture, ok, refused, s, state, str_args, temps, with};

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
