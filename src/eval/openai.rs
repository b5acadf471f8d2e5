//! Generation through an OpenAI-compatible `/v1/completions` endpoint (llama.cpp server,
//! llama-cpp-python, vLLM, TGI): the scale-out path. Prompts, scorers and report stay the
//! same; only the continuations come from the server.
//!
//! Plain HTTP with a small blocking client (`ureq`, no TLS): the intended use is a server on
//! loopback or a private network. Requests are sent one at a time, in prompt order, with
//! greedy decoding (`temperature: 0`) and the suite's stop strings; a server that batches
//! internally (vLLM) is still used correctly, only not at its full throughput.

use crate::runtime::generate::{Finish, GenParams, GenStats, Generation};
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use std::time::{Duration, Instant};

/// A `/v1/completions` client.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL, e.g. `http://127.0.0.1:8080` (with or without a trailing `/v1`).
    pub base_url: String,
    /// `model` field of each request (servers that host one model ignore it).
    pub model: String,
    agent: ureq::Agent,
    /// Longest wait for one complete answer (connect, send, every byte of the body): a
    /// server that accepts and never answers, or trickles bytes, is cut off here.
    pub request_timeout: Duration,
    /// Longest wait for the whole series of prompts (`None`: no limit beyond each request's).
    pub run_deadline: Option<Duration>,
}

/// Default of [`Endpoint::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl Endpoint {
    /// A client for `base_url`; only `http://` URLs are accepted (no TLS is compiled in).
    pub fn new(base_url: &str, model: &str) -> Result<Endpoint> {
        let Some(rest) = base_url.strip_prefix("http://") else {
            bail!("endpoint {base_url:?}: only plain http:// URLs are supported (no TLS)");
        };
        if rest.is_empty() || rest.starts_with(['/', ':', '?', '#']) {
            bail!("endpoint {base_url:?} has no host (e.g. http://127.0.0.1:8080)");
        }
        let url = base_url.trim_end_matches('/');
        let url = url.strip_suffix("/v1").unwrap_or(url).to_string();
        Ok(Endpoint {
            base_url: url,
            model: model.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .build(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            run_deadline: None,
        })
    }

    /// Sets the per-request timeout and the whole-run deadline (both must be positive).
    pub fn with_deadlines(
        mut self,
        request_timeout: Duration,
        run_deadline: Option<Duration>,
    ) -> Result<Endpoint> {
        if request_timeout.is_zero() || run_deadline.is_some_and(|d| d.is_zero()) {
            bail!("endpoint timeouts must be positive");
        }
        self.request_timeout = request_timeout;
        self.run_deadline = run_deadline;
        Ok(self)
    }

    /// One completion: the continuation text, its token count as the server reports it, and
    /// why it ended.
    pub fn complete(&self, prompt: &str, params: &GenParams) -> Result<(String, usize, Finish)> {
        self.complete_within(prompt, params, self.request_timeout)
    }

    /// [`Endpoint::complete`] with every byte of the answer due within `limit`.
    fn complete_within(
        &self,
        prompt: &str,
        params: &GenParams,
        limit: Duration,
    ) -> Result<(String, usize, Finish)> {
        let started = Instant::now();
        let late = |what: &str| {
            anyhow::anyhow!(
                "{}/v1/completions: {what} within {:.0} s (the server accepted the request but did not finish answering; raise --endpoint-timeout if it is just slow)",
                self.base_url,
                limit.as_secs_f64()
            )
        };
        let mut body = serde_json::json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stream": false,
            // The model's own distribution: llama-cpp-python's server applies a repeat penalty
            // of 1.1 unless told otherwise, even to greedy decoding, which changed its greedy
            // continuations from the runtime's (tests/eval/serving.rs).
            "repeat_penalty": 1.0,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
        });
        if !params.stop.is_empty() {
            body["stop"] = serde_json::json!(params.stop);
        }
        let url = format!("{}/v1/completions", self.base_url);
        let resp = self
            .agent
            .post(&url)
            .timeout(limit)
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .map_err(|e| match e {
                ureq::Error::Status(code, r) => {
                    let text = r.into_string().unwrap_or_default();
                    let text: String = text.chars().take(200).collect();
                    anyhow::anyhow!("{url}: HTTP {code}: {}", text.replace('\n', " "))
                }
                _ if started.elapsed() >= limit => late("no answer"),
                other => anyhow::anyhow!("{url}: {other}"),
            })?;
        let text = match resp.into_string() {
            Ok(t) => t,
            Err(_) if started.elapsed() >= limit => return Err(late("the answer did not arrive")),
            Err(e) => return Err(anyhow::anyhow!("{url}: reading the response: {e}")),
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{url}: the response is not JSON"))?;
        let choice = v["choices"]
            .get(0)
            .with_context(|| format!("{url}: no `choices` in the response"))?;
        let text = choice["text"]
            .as_str()
            .with_context(|| format!("{url}: the choice has no `text`"))?
            .to_string();
        let finish = match choice["finish_reason"].as_str() {
            Some("length") => Finish::Length,
            // OpenAI reports both EOS and stop strings as "stop" and cuts the stop string, so
            // the two cannot be told apart: report Stop whenever stop strings were requested.
            Some("stop") if !params.stop.is_empty() => Finish::Stop,
            _ => Finish::Eos,
        };
        let tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
        Ok((text, tokens, finish))
    }

    /// Generates every prompt (text) in order. `Generation::tokens` is left empty (the
    /// server's ids are not returned); callers re-tokenize the text where they need ids.
    pub fn generate(
        &self,
        prompts: &[String],
        params: &GenParams,
        progress: Option<&ProgressBar>,
    ) -> Result<(Vec<Generation>, GenStats)> {
        let mut stats = GenStats {
            prompts: prompts.len(),
            ..Default::default()
        };
        params.validate()?;
        let t0 = Instant::now();
        let mut out = Vec::with_capacity(prompts.len());
        for (i, p) in prompts.iter().enumerate() {
            let mut limit = self.request_timeout;
            if let Some(total) = self.run_deadline {
                let left = total.saturating_sub(t0.elapsed());
                if left.is_zero() {
                    bail!(
                        "{}: the whole-run deadline of {:.0} s (--endpoint-deadline) passed after {i} of {} prompts",
                        self.base_url,
                        total.as_secs_f64(),
                        prompts.len()
                    );
                }
                limit = limit.min(left);
            }
            let answer = self.complete_within(p, params, limit);
            if let (Err(_), Some(total)) = (&answer, self.run_deadline) {
                if t0.elapsed() >= total {
                    bail!(
                        "{}: the whole-run deadline of {:.0} s (--endpoint-deadline) passed during prompt {i} of {}",
                        self.base_url,
                        total.as_secs_f64(),
                        prompts.len()
                    );
                }
            }
            let (text, n, finish) = answer.with_context(|| format!("prompt {i}"))?;
            stats.generated_tokens += n;
            out.push(Generation {
                tokens: Vec::new(),
                text,
                finish,
            });
            if let Some(pb) = progress {
                pb.inc(1);
            }
        }
        stats.decode_secs = t0.elapsed().as_secs_f64();
        Ok((out, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn params() -> GenParams {
        GenParams {
            max_new_tokens: 4,
            ..Default::default()
        }
    }

    /// A loopback server that runs `serve` on every connection, in its own thread.
    fn server(serve: fn(std::net::TcpStream)) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || serve(s));
            }
        });
        format!("http://{addr}")
    }

    fn read_request(s: &mut std::net::TcpStream) {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
    }

    #[test]
    fn a_server_that_never_answers_is_cut_off() {
        let url = server(|mut s| {
            read_request(&mut s);
            std::thread::sleep(Duration::from_secs(30));
        });
        let e = Endpoint::new(&url, "m")
            .unwrap()
            .with_deadlines(Duration::from_millis(800), None)
            .unwrap();
        let t0 = Instant::now();
        let err = format!(
            "{:#}",
            e.generate(&["hi".into()], &params(), None).unwrap_err()
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(err.contains("no answer within"), "{err}");
    }

    #[test]
    fn a_server_that_trickles_bytes_is_cut_off() {
        let url = server(|mut s| {
            read_request(&mut s);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
            for _ in 0..300 {
                if s.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let e = Endpoint::new(&url, "m")
            .unwrap()
            .with_deadlines(Duration::from_millis(1000), None)
            .unwrap();
        let t0 = Instant::now();
        let err = format!(
            "{:#}",
            e.generate(&["hi".into()], &params(), None).unwrap_err()
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(err.contains("did not arrive within"), "{err}");
    }

    #[test]
    fn the_whole_run_has_a_deadline() {
        let url = server(|mut s| {
            read_request(&mut s);
            std::thread::sleep(Duration::from_millis(400));
            let body = r#"{"choices":[{"text":" ok","finish_reason":"length"}],"usage":{"completion_tokens":1}}"#;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        let e = Endpoint::new(&url, "m")
            .unwrap()
            .with_deadlines(Duration::from_secs(10), Some(Duration::from_millis(1000)))
            .unwrap();
        let prompts: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        let t0 = Instant::now();
        let err = format!("{:#}", e.generate(&prompts, &params(), None).unwrap_err());
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(err.contains("whole-run deadline"), "{err}");
        // One prompt fits the deadline and succeeds: the server itself works.
        let (g, _) = e.generate(&prompts[..1], &params(), None).unwrap();
        assert_eq!(g[0].text, " ok");
    }

    #[test]
    fn urls_without_a_host_or_with_tls_are_refused_with_the_right_reason() {
        let err = Endpoint::new("http://", "m").unwrap_err().to_string();
        assert!(err.contains("no host"), "{err}");
        let err = Endpoint::new("https://example.org", "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no TLS"), "{err}");
        assert!(Endpoint::new("http://127.0.0.1:1", "m")
            .unwrap()
            .with_deadlines(Duration::ZERO, None)
            .is_err());
    }
}
