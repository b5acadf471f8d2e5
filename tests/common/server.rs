//! llama-cpp-python's server for the endpoint tests (`SCALPEL_PEERS_PYTHON`), and the GGUF
//! copies that make llama.cpp's arithmetic exact enough to compare with.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::gguf::{GgufFile, GgufRewrite};
use scalpel::formats::quant;

/// The Python that has the peer engines; tests that call it are ignored unless asked for.
pub fn peers_python() -> PathBuf {
    super::env_path(
        "SCALPEL_PEERS_PYTHON",
        "a Python with llama-cpp-python, transformers and peft",
    )
}

/// A server this test started; killed (only it) when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /v1/models HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `scripts/llamacpp_server.py ARGS` (which must listen on `port`) and waits until it
/// answers `/v1/models`.
pub fn start(port: u16, args: &[&str]) -> Server {
    let py = peers_python();
    let ok = Command::new(&py)
        .args(["-c", "import llama_cpp.server, fastapi, uvicorn"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the peer Python lacks llama-cpp-python's server extras (fastapi, uvicorn; bench/requirements.txt)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/llamacpp_server.py");
    let child = Command::new(&py)
        .arg(script)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let t0 = Instant::now();
    while !up(port) {
        assert!(
            t0.elapsed().as_secs() < 120,
            "server did not come up on {port}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    server
}

fn decode(ty: GgmlType, row_len: usize, bytes: &[u8]) -> Vec<f32> {
    let rb = quant::row_bytes(ty, row_len).unwrap();
    let mut out = vec![0f32; bytes.len() / rb * row_len];
    for (r, chunk) in bytes.chunks_exact(rb).enumerate() {
        quant::decode_row(ty, chunk, &mut out[r * row_len..(r + 1) * row_len]).unwrap();
    }
    out
}

/// A copy of a GGUF with every quantised tensor stored as F32 (decoded exactly): llama.cpp
/// then multiplies in f32 throughout, without rounding activations to 8 bits.
pub fn all_f32(src: &Path, dst: &Path) {
    let g = GgufFile::open(src).unwrap();
    let mut rw = GgufRewrite::new(&g);
    for t in g.tensors.iter().filter(|t| t.ty != GgmlType::F32) {
        rw.replace(&t.name, GgmlType::F32).unwrap();
    }
    rw.write(dst, false, &mut |info, bytes, w| {
        let out = decode(info.ty, info.row_len() as usize, bytes);
        w.write_all(
            &out.iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>(),
        )?;
        Ok(())
    })
    .unwrap();
}
