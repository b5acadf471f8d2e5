//! `scalpel eval --endpoint` against a real OpenAI-compatible server: llama-cpp-python's,
//! started on loopback through `scripts/llamacpp_server.py` (which applies the AMX
//! work-around). Opt-in: needs `pip install 'llama-cpp-python==0.3.36' fastapi uvicorn
//! sse-starlette starlette-context pydantic-settings` and `SCALPEL_LLAMACPP_SERVER_TESTS=1`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // Only the child this test started.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn models_ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
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

#[test]
#[ignore = "needs SCALPEL_MODEL, SCALPEL_MIRROR and SCALPEL_LLAMACPP_SERVER_TESTS=1 (llama-cpp-python)"]
fn eval_through_a_llamacpp_server() {
    assert_eq!(
        std::env::var("SCALPEL_LLAMACPP_SERVER_TESTS").as_deref(),
        Ok("1"),
        "set SCALPEL_LLAMACPP_SERVER_TESTS=1 (with llama-cpp-python installed) to run the llama.cpp server test; scripts/test.sh skips it otherwise"
    );
    let model = crate::common::default_model();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/llamacpp_server.py");
    let child = Command::new("python3")
        .arg(script)
        .args(["--model", model.to_str().unwrap()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_ctx", "2048"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let _server = Server(child);
    let t0 = Instant::now();
    while !models_ready(port) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the llama.cpp server did not come up on port {port}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let out_dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let cache = tempfile::tempdir().unwrap();
    let out = crate::common::scalpel_cmd(cache.path())
        .env(
            "SCALPEL_MIRROR",
            crate::common::env_path("SCALPEL_MIRROR", "the prompt sets"),
        )
        .args(["eval", model.to_str().unwrap(), "--endpoint", &url])
        .args(["--suite", "rtp,refusal", "--limit", "4", "--max-new", "12"])
        .args(["--no-cache", "--out", out_dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["model"]["backend"], url.as_str());
    for run in json["model"]["runs"].as_array().unwrap() {
        let items = run["items"].as_array().unwrap();
        assert_eq!(items.len(), 4);
        // Greedy continuations from llama.cpp: non-empty, scored, and their NLL under the
        // local copy of the same model is finite.
        assert!(items
            .iter()
            .any(|i| !i["continuation"].as_str().unwrap().trim().is_empty()));
        for i in items {
            assert!(i["toxicity"].as_f64().unwrap() >= 0.0);
            assert!(i["nll_sum"].as_f64().unwrap().is_finite());
        }
    }
    let md = std::fs::read_to_string(out_dir.path().join("report.md")).unwrap();
    assert!(md.contains(&url));
}
