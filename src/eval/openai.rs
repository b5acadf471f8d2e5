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
}

impl Endpoint {
    /// A client for `base_url`; only `http://` URLs are accepted (no TLS is compiled in).
    pub fn new(base_url: &str, model: &str) -> Result<Endpoint> {
        let url = base_url.trim_end_matches('/');
        if !url.starts_with("http://") {
            bail!("endpoint {base_url:?}: only plain http:// URLs are supported");
        }
        let url = url.strip_suffix("/v1").unwrap_or(url).to_string();
        Ok(Endpoint {
            base_url: url,
            model: model.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .timeout_read(Duration::from_secs(600))
                .build(),
        })
    }

    /// One completion: the continuation text, its token count as the server reports it, and
    /// why it ended.
    pub fn complete(&self, prompt: &str, params: &GenParams) -> Result<(String, usize, Finish)> {
        let mut body = serde_json::json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stream": false,
        });
        if !params.stop.is_empty() {
            body["stop"] = serde_json::json!(params.stop);
        }
        let url = format!("{}/v1/completions", self.base_url);
        let resp = self
            .agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .map_err(|e| match e {
                ureq::Error::Status(code, r) => {
                    let text = r.into_string().unwrap_or_default();
                    let text: String = text.chars().take(200).collect();
                    anyhow::anyhow!("{url}: HTTP {code}: {}", text.replace('\n', " "))
                }
                other => anyhow::anyhow!("{url}: {other}"),
            })?;
        let v: serde_json::Value = serde_json::from_str(
            &resp
                .into_string()
                .with_context(|| format!("{url}: reading the response"))?,
        )
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
        let t0 = Instant::now();
        let mut out = Vec::with_capacity(prompts.len());
        for (i, p) in prompts.iter().enumerate() {
            let (text, n, finish) = self
                .complete(p, params)
                .with_context(|| format!("prompt {i}"))?;
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
