//! Hugging Face folders: reading single-file and sharded layouts, the streaming writer, and
//! error paths, on tiny models.

use std::path::Path;

use scalpel::formats::safetensors::{decode_values, encode_values, Dtype, HfFolder, HfRewrite};
use scalpel::formats::tiny::{self, HfDtype, TinySpec};

const GATE: &str = "model.layers.1.mlp.gate_proj.weight";

fn write_tiny(dir: &Path, shards: usize, dtype: HfDtype) -> HfFolder {
    let spec = TinySpec {
        hf_shards: shards,
        ..TinySpec::default()
    };
    tiny::write_hf_folder(dir, &spec, 11, dtype).unwrap();
    HfFolder::open(dir).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn sharded_folder_is_listed_and_read_lazily() {
    let dir = tempfile::tempdir().unwrap();
    let h = write_tiny(&dir.path().join("m"), 3, HfDtype::BF16);
    assert!(h.sharded);
    assert_eq!(h.shard_files().len(), 3);
    assert_eq!(h.tensors.len(), 1 + 9 * 2 + 2);
    let t = h.require_tensor(GATE).unwrap();
    assert_eq!((t.dtype, t.shape.clone()), (Dtype::BF16, vec![128, 64]));
    let w = tiny::weights(&TinySpec::default(), 11).unwrap();
    let want = &w.iter().find(|x| x.name == GATE).unwrap().data;
    let got = h.tensor_f32(t).unwrap();
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= b.abs() / 128.0, "{a} vs {b}");
    }
    assert_eq!(h.config_u64("num_hidden_layers").unwrap(), 2);
}

#[test]
fn rewrite_keeps_every_untouched_byte_and_the_index() {
    for (shards, dtype) in [(1, HfDtype::F32), (3, HfDtype::BF16), (2, HfDtype::F16)] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let h = write_tiny(&a, shards, dtype);
        let mut rw = HfRewrite::new(&h);
        rw.replace(GATE).unwrap();
        rw.write(&b, false, &mut |t, old| {
            let mut x = decode_values(t.dtype, old)?;
            x[5] += 0.5;
            encode_values(t.dtype, &x)
        })
        .unwrap();
        assert_eq!(files(&a), files(&b));
        let h2 = HfFolder::open(&b).unwrap();
        let t = h.require_tensor(GATE).unwrap();
        for f in files(&a) {
            let (x, y) = (
                std::fs::read(a.join(&f)).unwrap(),
                std::fs::read(b.join(&f)).unwrap(),
            );
            assert_eq!(x.len(), y.len(), "{f}");
            if f == h.shard_files()[t.shard] {
                assert_eq!(x[..t.start], y[..t.start], "{f} before the edited tensor");
                assert_eq!(x[t.end..], y[t.end..], "{f} after the edited tensor");
                let (old, new) = (h.tensor_f32(t).unwrap(), h2.tensor_f32(t).unwrap());
                assert!((new[5] - old[5] - 0.5).abs() < 0.01);
                assert_eq!(old[..5], new[..5]);
            } else {
                assert!(x == y, "{f} differs");
            }
        }
    }
}

#[test]
fn writer_refuses_unsafe_outputs_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let h = write_tiny(&a, 2, HfDtype::F16);
    let keep = &mut |_: &_, old: &[u8]| Ok(old.to_vec());
    let e = format!(
        "{:#}",
        HfRewrite::new(&h).write(&a, true, keep).unwrap_err()
    );
    assert!(e.contains("is the input itself"), "{e}");
    let b = dir.path().join("b");
    std::fs::create_dir(&b).unwrap();
    let e = format!(
        "{:#}",
        HfRewrite::new(&h).write(&b, false, keep).unwrap_err()
    );
    assert!(e.contains("already exists"), "{e}");
    HfRewrite::new(&h).write(&b, true, keep).unwrap();
    assert_eq!(files(&a), files(&b));

    let c = dir.path().join("c");
    let mut rw = HfRewrite::new(&h);
    rw.replace(GATE).unwrap();
    let e = format!(
        "{:#}",
        rw.write(&c, false, &mut |_, _| Ok(vec![1, 2, 3]))
            .unwrap_err()
    );
    assert!(e.contains(GATE) && e.contains("got 3 bytes"), "{e}");
    assert!(!c.exists(), "a half-written output folder was left");
    assert!(rw.replace("no.such").is_err());
}

#[test]
fn open_errors_name_the_folder_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    write_tiny(&a, 2, HfDtype::F32);
    let err = |p: &Path| format!("{:#}", HfFolder::open(p).unwrap_err());
    let index = a.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        text.replace("model-00002-of-00002", "model-00009-of-00002"),
    )
    .unwrap();
    let e = err(&a);
    assert!(
        e.contains("model-00009-of-00002.safetensors") && e.contains("opening"),
        "{e}"
    );
    std::fs::write(
        &index,
        text.replacen("model-00002-of-00002", "model-00001-of-00002", 1),
    )
    .unwrap();
    assert!(err(&a).contains("which does not hold it"));
    std::fs::write(&index, "{").unwrap();
    assert!(err(&a).contains("parsing"));
    std::fs::remove_file(a.join("config.json")).unwrap();
    let e = err(&a);
    assert!(
        e.contains("config.json") && e.contains(&a.display().to_string()),
        "{e}"
    );
    let e = err(&dir.path().join("nope"));
    assert!(e.contains("not a folder"), "{e}");
}
