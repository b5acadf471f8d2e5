//! Checks on the real default model (SmolLM2-135M-Instruct Q4_1 GGUF), ignored unless asked
//! for: `SCALPEL_MODEL=<path> cargo test --release -- --include-ignored` (as
//! `scripts/test.sh` runs them).

use std::path::PathBuf;

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::gguf::{GgufFile, GgufRewrite};
use scalpel::formats::quant;
use sha2::{Digest, Sha256};

fn model() -> PathBuf {
    std::env::var_os("SCALPEL_MODEL")
        .map(PathBuf::from)
        .expect("SCALPEL_MODEL is not set (path of SmolLM2-135M-Instruct.Q4_1.gguf)")
}

fn sha_file(p: &std::path::Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    format!("{:x}", h.finalize())
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn header_is_read_as_llama_cpp_wrote_it() {
    let p = model();
    let g = GgufFile::open(&p).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 272);
    assert_eq!(g.metadata.len(), 33);
    let count = |ty| g.tensors.iter().filter(|t| t.ty == ty).count();
    assert_eq!(count(GgmlType::Q8_0), 1);
    assert_eq!(count(GgmlType::Q4_1), 210);
    assert_eq!(count(GgmlType::F32), 61);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.arch_u64("block_count").unwrap(), 30);
    assert_eq!(g.arch_u64("embedding_length").unwrap(), 576);
    assert_eq!(g.arch_u64("feed_forward_length").unwrap(), 1536);
    assert_eq!(g.get_strings("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(g.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    let gate = g.require_tensor("blk.0.ffn_gate.weight").unwrap();
    assert_eq!(
        (gate.row_len(), gate.n_rows(), gate.ty),
        (576, 1536, GgmlType::Q4_1)
    );
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn unchanged_rewrite_is_byte_identical() {
    let p = model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.gguf");
    let g = GgufFile::open(&p).unwrap();
    let t = std::time::Instant::now();
    GgufRewrite::new(&g)
        .write(&out, false, &mut |_, _, _| unreachable!())
        .unwrap();
    eprintln!("rewrite took {:?}", t.elapsed());
    assert_eq!(sha_file(&p), sha_file(&out));
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn reencoding_real_gate_rows_is_stable() {
    let p = model();
    let g = GgufFile::open(&p).unwrap();
    let (mut rows, mut same, mut worst_steps) = (0usize, 0usize, 0f32);
    for b in 0..30 {
        let t = g
            .require_tensor(&format!("blk.{b}.ffn_gate.weight"))
            .unwrap();
        let n = t.row_len() as usize;
        let mut x = vec![0f32; n];
        let mut y = vec![0f32; n];
        for r in 0..t.n_rows() {
            let orig = g.row_bytes(t, r).unwrap();
            quant::decode_row(t.ty, orig, &mut x).unwrap();
            let re = quant::encode_row(t.ty, &x).unwrap();
            quant::decode_row(t.ty, &re, &mut y).unwrap();
            rows += 1;
            same += (re == orig) as usize;
            for (blk, (xb, yb)) in orig.chunks(20).zip(x.chunks(32).zip(y.chunks(32))) {
                let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                for (a, c) in xb.iter().zip(yb) {
                    let steps = (a - c).abs() / d.max(f32::MIN_POSITIVE);
                    worst_steps = worst_steps.max(steps);
                    assert!(steps <= 1.001, "block {b} row {r}: {a} -> {c} (d {d})");
                }
            }
        }
    }
    eprintln!(
        "{same}/{rows} gate rows re-encode byte-identically; worst change {worst_steps} steps"
    );
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn gate_replaced_as_f32_keeps_the_decoded_values() {
    let p = model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f32gate.gguf");
    let g = GgufFile::open(&p).unwrap();
    let mut rw = GgufRewrite::new(&g);
    rw.replace("blk.3.ffn_gate.weight", GgmlType::F32).unwrap();
    rw.write(&out, false, &mut |info, old, w| {
        let x = quant::decode_tensor(info.ty, old, info.row_len() as usize)?;
        Ok(w.write_all(&quant::encode_row(GgmlType::F32, &x)?)?)
    })
    .unwrap();
    let h = GgufFile::open(&out).unwrap();
    for (t, u) in g.tensors.iter().zip(&h.tensors) {
        if t.name == "blk.3.ffn_gate.weight" {
            let a = quant::decode_tensor(t.ty, g.tensor_bytes(t), 576).unwrap();
            let b = quant::decode_tensor(u.ty, h.tensor_bytes(u), 576).unwrap();
            assert_eq!(a, b);
        } else {
            assert_eq!(g.tensor_bytes(t), h.tensor_bytes(u), "{}", t.name);
        }
    }
}
