//! `scalpel inspect` end to end on tiny models.

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::tiny::{self, Breakage, HfDtype, TinySpec};

fn inspect(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let inspect = std::ffi::OsStr::new("inspect");
    crate::common::scalpel(std::iter::once(inspect).chain(args.iter().copied())).parts()
}

#[test]
fn inspect_gguf_and_hf_folder_as_json_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("t.gguf");
    let h = dir.path().join("hf");
    let spec = TinySpec {
        hf_shards: 2,
        ..TinySpec::default()
    };
    tiny::write_gguf(&g, &spec, 1, GgmlType::Q8_0).unwrap();
    tiny::write_hf_folder(&h, &spec, 1, HfDtype::BF16).unwrap();
    for (p, arch, tok_model, bos) in [
        (&g, "llama", "gpt2", "1"),
        (&h, "LlamaForCausalLM", "BPE", "<|im_start|>"),
    ] {
        let (ok, out, err) = inspect(&[p.as_os_str(), "--json".as_ref()]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["architecture"], arch);
        assert_eq!(v["dims"]["blocks"], 2);
        assert_eq!(v["dims"]["d_ff"], 128);
        assert_eq!(v["tensors"].as_array().unwrap().len(), 21);
        assert_eq!(v["tokenizer"]["model"], tok_model);
        assert_eq!(v["tokenizer"]["vocab_size"], 304);
        assert_eq!(v["tokenizer"]["bos"], bos);
        assert_eq!(v["tokenizer"]["chat_template"], true);
        let (ok, text, _) = inspect(&[p.as_os_str()]);
        assert!(ok && text.contains("d_ff 128") && text.contains("chat template yes"));
    }
    let (_, text, _) = inspect(&[g.as_os_str()]);
    assert!(
        text.contains("tokenizer.ggml.tokens = [String; 304]"),
        "{text}"
    );
    let gate = text
        .lines()
        .find(|l| l.contains("blk.0.ffn_gate.weight"))
        .unwrap();
    assert!(
        gate.contains("Q8_0") && gate.ends_with("[128, 64]"),
        "{gate}"
    );
}

#[test]
fn inspect_errors_are_one_line_with_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("broken.gguf");
    let spec = TinySpec {
        breakage: Breakage::Truncated,
        ..TinySpec::default()
    };
    tiny::write_gguf(&g, &spec, 1, GgmlType::F32).unwrap();
    let (ok, _, err) = inspect(&[g.as_os_str()]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: reading GGUF") && err.contains("broken.gguf"),
        "{err}"
    );
    let (ok, _, err) = inspect(&[dir.path().join("none").as_os_str()]);
    assert!(!ok && err.contains("opening"), "{err}");
}
