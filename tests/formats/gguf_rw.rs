//! GGUF reader and writer: round trips, rewrites and every error path, on tiny models and
//! hand-made files. The default model's round trip lives in `default_model.rs`.

use std::io::Write;
use std::path::Path;

use candle_core::quantized::gguf_file;
use scalpel::formats::ggml::GgmlType;
use scalpel::formats::gguf::{write_gguf, GgufFile, GgufRewrite, MetaValue, TensorSpec};
use scalpel::formats::quant;
use scalpel::formats::tiny::{self, TinyFamily, TinySpec};
use sha2::{Digest, Sha256};

fn sha(p: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

fn err(p: &Path) -> String {
    format!("{:#}", GgufFile::open(p).unwrap_err())
}

/// A one-tensor GGUF with no metadata: the tensor type field is at byte 45.
fn one_tensor(p: &Path) -> Vec<u8> {
    let spec = TensorSpec {
        name: "t".into(),
        dims: vec![4],
        ty: GgmlType::F32,
    };
    write_gguf(p, 3, &[], &[spec], &mut |_, _, w| {
        Ok(w.write_all(&[0u8; 16])?)
    })
    .unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn unchanged_rewrite_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_1] {
        let a = dir.path().join(format!("a-{ty}.gguf"));
        let b = dir.path().join(format!("b-{ty}.gguf"));
        tiny::write_gguf(&a, &TinySpec::default(), 5, ty).unwrap();
        let g = GgufFile::open(&a).unwrap();
        GgufRewrite::new(&g)
            .write(&b, false, &mut |_, _, _| panic!("nothing replaced"))
            .unwrap();
        assert_eq!(sha(&a), sha(&b), "{ty}");
    }
}

#[test]
fn replaced_tensor_changes_type_and_everything_else_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.gguf");
    let b = dir.path().join("b.gguf");
    tiny::write_gguf(&a, &TinySpec::default(), 5, GgmlType::Q4_1).unwrap();
    let g = GgufFile::open(&a).unwrap();
    let mut rw = GgufRewrite::new(&g);
    rw.replace("blk.1.ffn_gate.weight", GgmlType::F32).unwrap();
    rw.set_metadata("general.name", MetaValue::string("edited"));
    rw.write(&b, false, &mut |info, old, w| {
        let mut x = quant::decode_tensor(info.ty, old, info.row_len() as usize)?;
        x[0] += 1.0;
        for r in x.chunks(info.row_len() as usize) {
            w.write_all(&quant::encode_row(GgmlType::F32, r)?)?;
        }
        Ok(())
    })
    .unwrap();
    let h = GgufFile::open(&b).unwrap();
    assert_eq!(h.get_str("general.name").unwrap(), "edited");
    assert_eq!(
        g.metadata.iter().map(|m| &m.0).collect::<Vec<_>>(),
        h.metadata.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    for (t, u) in g.tensors.iter().zip(&h.tensors) {
        assert_eq!(t.name, u.name);
        assert_eq!(u.offset % h.alignment, 0);
        if t.name == "blk.1.ffn_gate.weight" {
            assert_eq!(u.ty, GgmlType::F32);
            let old = quant::decode_tensor(t.ty, g.tensor_bytes(t), 64).unwrap();
            let new = quant::decode_tensor(u.ty, h.tensor_bytes(u), 64).unwrap();
            assert_eq!(new[0], old[0] + 1.0);
            assert_eq!(new[1..], old[1..]);
        } else {
            assert_eq!(g.tensor_bytes(t), h.tensor_bytes(u), "{}", t.name);
        }
    }
}

#[test]
fn writer_refuses_unsafe_outputs_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.gguf");
    tiny::write_gguf(&a, &TinySpec::default(), 5, GgmlType::F32).unwrap();
    let g = GgufFile::open(&a).unwrap();
    let none = &mut |_: &_, _: &[u8], _: &mut dyn Write| Ok(());
    let e = format!(
        "{:#}",
        GgufRewrite::new(&g).write(&a, true, none).unwrap_err()
    );
    assert!(e.contains("is the input itself"), "{e}");
    let b = dir.path().join("b.gguf");
    std::fs::write(&b, b"keep me").unwrap();
    let e = format!(
        "{:#}",
        GgufRewrite::new(&g).write(&b, false, none).unwrap_err()
    );
    assert!(e.contains("already exists"), "{e}");

    let mut rw = GgufRewrite::new(&g);
    rw.replace("blk.0.ffn_up.weight", GgmlType::F16).unwrap();
    let e = format!(
        "{:#}",
        rw.write(&b, true, &mut |_, _, w| Ok(w.write_all(&[0u8; 10])?))
            .unwrap_err()
    );
    assert!(
        e.contains("blk.0.ffn_up.weight") && e.contains("expected"),
        "{e}"
    );
    assert_eq!(std::fs::read(&b).unwrap(), b"keep me");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 2, "a temp file was left behind");
    assert!(rw.replace("no.such.tensor", GgmlType::F32).is_err());
    let e = rw
        .replace("blk.0.ffn_up.weight", GgmlType::Q4_K)
        .unwrap_err();
    assert!(e.to_string().contains("cannot be stored as Q4_K"), "{e}");
}

#[test]
fn error_paths_are_one_line_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    let good = one_tensor(&p);
    assert_eq!(GgufFile::open(&p).unwrap().tensors[0].ty, GgmlType::F32);
    let case = |patch: &dyn Fn(&mut Vec<u8>), want: &str| {
        let mut b = good.clone();
        patch(&mut b);
        std::fs::write(&p, &b).unwrap();
        let e = err(&p);
        assert!(e.contains(want), "want {want:?} in {e:?}");
        assert!(e.contains("x.gguf") && !e.contains('\n'), "{e}");
    };
    case(&|b| b[0] = b'X', "bad magic");
    case(&|b| b[4] = 1, "unsupported GGUF version 1");
    case(&|b| b[4] = 9, "unsupported GGUF version 9");
    case(
        &|b| b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()),
        "absurd tensor count",
    );
    case(
        &|b| b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes()),
        "absurd metadata count",
    );
    case(&|b| b[45] = 4, "tensor t: unknown ggml type 4");
    case(
        &|b| b[41..45].copy_from_slice(&[1, 0, 0, 0]),
        "file truncated",
    );
    case(&|b| b[33] = 5, "tensor t: 5 dimensions");
    case(&|b| b.truncate(40), "truncated or corrupt");
    case(&|b| b.truncate(56), "file truncated: t at byte 49");
    case(
        &|b| b.truncate(70),
        "tensor t (16 bytes at data offset 0) extends past",
    );
    case(&|b| b[49] = 8, "not a multiple of the alignment");
    assert!(err(&dir.path().join("missing.gguf")).contains("opening"));
}

#[test]
fn metadata_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    let md = vec![
        ("a.array".to_string(), MetaValue::strings(["x", "y"])),
        ("general.alignment".to_string(), MetaValue::U32(64)),
    ];
    write_gguf(&p, 2, &md, &[], &mut |_, _, _| Ok(())).unwrap();
    let g = GgufFile::open(&p).unwrap();
    assert_eq!((g.version, g.alignment, g.data_start % 64), (2, 64, 0));
    assert_eq!(g.get_strings("a.array").unwrap(), ["x", "y"]);
    assert!(g
        .get_u64("a.array")
        .unwrap_err()
        .to_string()
        .contains("a.array"));

    let mut b = std::fs::read(&p).unwrap();
    // key "a.array" (8 + 7 bytes) at 24, value type at 39, element type at 43, count at 47
    b[47..55].copy_from_slice(&(1u64 << 50).to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    assert!(err(&p).contains("metadata key a.array: absurd array length"));
    b[47..55].copy_from_slice(&2u64.to_le_bytes());
    b[39] = 99;
    std::fs::write(&p, &b).unwrap();
    assert!(err(&p).contains("metadata key a.array: unknown value type 99"));

    let md = vec![("general.alignment".to_string(), MetaValue::U32(48))];
    assert!(write_gguf(&p, 3, &md, &[], &mut |_, _, _| Ok(())).is_err());
}

/// A metadata value as a typed string, from our reader (floats as bits: exact comparison).
fn ours(v: &MetaValue) -> String {
    match v {
        MetaValue::U8(x) => format!("u8 {x}"),
        MetaValue::I8(x) => format!("i8 {x}"),
        MetaValue::U16(x) => format!("u16 {x}"),
        MetaValue::I16(x) => format!("i16 {x}"),
        MetaValue::U32(x) => format!("u32 {x}"),
        MetaValue::I32(x) => format!("i32 {x}"),
        MetaValue::U64(x) => format!("u64 {x}"),
        MetaValue::I64(x) => format!("i64 {x}"),
        MetaValue::F32(x) => format!("f32 {:#x}", x.to_bits()),
        MetaValue::F64(x) => format!("f64 {:#x}", x.to_bits()),
        MetaValue::Bool(x) => format!("bool {x}"),
        MetaValue::String(s) => format!("str {:?}", String::from_utf8_lossy(s)),
        MetaValue::Array(_, items) => {
            let v: Vec<String> = items.iter().map(ours).collect();
            format!("[{}]", v.join(", "))
        }
        MetaValue::Strings(a) => {
            let v: Vec<String> = a
                .iter()
                .map(|s| format!("str {:?}", String::from_utf8_lossy(s)))
                .collect();
            format!("[{}]", v.join(", "))
        }
    }
}

/// The same string from candle's reader (the runtime's).
fn candle(v: &gguf_file::Value) -> String {
    use gguf_file::Value as V;
    match v {
        V::U8(x) => format!("u8 {x}"),
        V::I8(x) => format!("i8 {x}"),
        V::U16(x) => format!("u16 {x}"),
        V::I16(x) => format!("i16 {x}"),
        V::U32(x) => format!("u32 {x}"),
        V::I32(x) => format!("i32 {x}"),
        V::U64(x) => format!("u64 {x}"),
        V::I64(x) => format!("i64 {x}"),
        V::F32(x) => format!("f32 {:#x}", x.to_bits()),
        V::F64(x) => format!("f64 {:#x}", x.to_bits()),
        V::Bool(x) => format!("bool {x}"),
        V::String(s) => format!("str {s:?}"),
        V::Array(items) => {
            let v: Vec<String> = items.iter().map(candle).collect();
            format!("[{}]", v.join(", "))
        }
    }
}

/// The runtime reads GGUF with candle's reader, `inspect` and surgery with ours: both must
/// see the same file — every metadata key and value, and every tensor's name, type, shape
/// and offset.
fn readers_agree(path: &Path) {
    let g = GgufFile::open(path).unwrap();
    let mut f = std::fs::File::open(path).unwrap();
    let c = gguf_file::Content::read(&mut f).unwrap();
    let what = path.display();
    assert_eq!(g.metadata.len(), c.metadata.len(), "{what}: metadata count");
    for (k, v) in &g.metadata {
        let cv = c
            .metadata
            .get(k)
            .unwrap_or_else(|| panic!("{what}: candle lacks {k}"));
        assert_eq!(ours(v), candle(cv), "{what}: metadata {k}");
    }
    assert_eq!(g.data_start, c.tensor_data_offset, "{what}: data section");
    assert_eq!(
        g.tensors.len(),
        c.tensor_infos.len(),
        "{what}: tensor count"
    );
    for t in &g.tensors {
        let ct = c
            .tensor_infos
            .get(&t.name)
            .unwrap_or_else(|| panic!("{what}: candle lacks {}", t.name));
        let norm = |s: &str| s.replace('_', "").to_ascii_uppercase();
        assert_eq!(
            norm(t.ty.name()),
            norm(&format!("{:?}", ct.ggml_dtype)),
            "{what}: {} type",
            t.name
        );
        let shape: Vec<u64> = ct.shape.dims().iter().map(|&d| d as u64).collect();
        assert_eq!(t.torch_shape(), shape, "{what}: {} shape", t.name);
        assert_eq!(t.offset, ct.offset, "{what}: {} offset", t.name);
    }
}

#[test]
fn both_gguf_readers_agree_on_the_tiny_files() {
    let dir = tempfile::tempdir().unwrap();
    for (i, ty) in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_1]
        .into_iter()
        .enumerate()
    {
        for family in [TinyFamily::Llama, TinyFamily::Qwen2, TinyFamily::Gemma3] {
            let spec = TinySpec {
                family,
                tie_embeddings: family == TinyFamily::Gemma3,
                ..TinySpec::default()
            };
            let p = dir.path().join(format!("t{i}-{family:?}.gguf"));
            tiny::write_gguf(&p, &spec, 3, ty).unwrap();
            readers_agree(&p);
        }
    }
    // Every metadata type, arrays of them, and a custom alignment.
    let p = dir.path().join("meta.gguf");
    let meta = vec![
        ("general.alignment".to_string(), MetaValue::U32(64)),
        ("k.u8".to_string(), MetaValue::U8(7)),
        ("k.i8".to_string(), MetaValue::I8(-7)),
        ("k.u16".to_string(), MetaValue::U16(700)),
        ("k.i16".to_string(), MetaValue::I16(-700)),
        ("k.i32".to_string(), MetaValue::I32(-70000)),
        ("k.u64".to_string(), MetaValue::U64(1 << 40)),
        ("k.i64".to_string(), MetaValue::I64(-(1 << 40))),
        ("k.f32".to_string(), MetaValue::F32(-0.1)),
        ("k.f64".to_string(), MetaValue::F64(1e-300)),
        ("k.bool".to_string(), MetaValue::Bool(true)),
        ("k.str".to_string(), MetaValue::string("héllo")),
        (
            "k.arr".to_string(),
            MetaValue::Array(
                scalpel::formats::gguf::MetaType::F32,
                vec![MetaValue::F32(1.5), MetaValue::F32(-2.0)],
            ),
        ),
    ];
    let specs = [
        TensorSpec {
            name: "a".into(),
            dims: vec![32, 3],
            ty: GgmlType::Q8_0,
        },
        TensorSpec {
            name: "b".into(),
            dims: vec![5],
            ty: GgmlType::F32,
        },
    ];
    write_gguf(&p, 3, &meta, &specs, &mut |i, s, w| {
        let n = s.ty.bytes_for(s.dims.iter().product()).unwrap() as usize;
        Ok(w.write_all(&vec![i as u8; n])?)
    })
    .unwrap();
    readers_agree(&p);
}

#[test]
#[ignore = "needs SCALPEL_MODEL"]
fn both_gguf_readers_agree_on_the_default_model() {
    readers_agree(&crate::common::default_model());
}

#[test]
#[ignore = "needs SCALPEL_GEMMA3_MODEL"]
fn both_gguf_readers_agree_on_gemma3() {
    readers_agree(&crate::common::model_from_env(
        "SCALPEL_GEMMA3_MODEL",
        "gemma3-270m-q4km",
    ));
}

#[test]
#[ignore = "needs SCALPEL_QWEN2_MODEL"]
fn both_gguf_readers_agree_on_qwen2() {
    readers_agree(&crate::common::model_from_env(
        "SCALPEL_QWEN2_MODEL",
        "qwen2.5-coder-0.5b-instruct-q4km",
    ));
}

/// The rewrite copies padding with the data only where the input's is zero: junk in an
/// input's padding, or a last tensor with its padding cut off, still gives zero padding.
#[test]
fn rewrite_pads_with_zeros_whatever_the_input_holds() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.gguf");
    let specs: Vec<TensorSpec> = ["a", "b"]
        .iter()
        .map(|n| TensorSpec {
            name: n.to_string(),
            dims: vec![4],
            ty: GgmlType::F32,
        })
        .collect();
    write_gguf(&clean, 3, &[], &specs, &mut |i, _, w| {
        Ok(w.write_all(&[i as u8 + 1; 16])?)
    })
    .unwrap();
    let bytes = std::fs::read(&clean).unwrap();
    let start = GgufFile::open(&clean).unwrap().data_start as usize;
    assert_eq!(
        bytes.len(),
        start + 64,
        "two 16-byte tensors, each padded to 32"
    );
    let mut junk = bytes.clone();
    junk[start + 16..start + 32].fill(0xff);
    let mut cut = bytes.clone();
    cut.truncate(start + 48);
    for (name, input) in [("junk", junk), ("cut", cut)] {
        let (src, out) = (
            dir.path().join(name),
            dir.path().join(format!("{name}.out")),
        );
        std::fs::write(&src, &input).unwrap();
        let g = GgufFile::open(&src).unwrap();
        GgufRewrite::new(&g)
            .write(&out, false, &mut |_, _, _| unreachable!())
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), bytes, "{name}");
    }
}
