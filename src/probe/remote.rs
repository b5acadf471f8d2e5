//! Step 1's features from a server: the final-norm states of an OpenAI-compatible
//! `/v1/embeddings` endpoint (llama.cpp / llama-cpp-python with embeddings on, vLLM's
//! embedding task), for a model scalpel cannot hold.
//!
//! One text per request. A server that returns one vector per token (llama.cpp without a
//! pooling type) is pooled here exactly as [`super::collect`] pools: the first `max_tokens`
//! tokens (BOS included), mean or last — with causal attention a token's state does not
//! depend on later tokens, so cutting after the pass equals cutting before it. A server that
//! pools itself (`--pooling mean`) returns one vector per text over all its tokens, so it is
//! accepted only for mean pooling and only when the answer's `usage.prompt_tokens` shows the
//! text fits in `max_tokens`.
//!
//! Why one text per request: llama-cpp-python 0.3.x (`Llama.embed`) packs a request's texts
//! into one batch and, when it returns per-token vectors, reads every text after the first
//! from the wrong offset (it advances by the text's token count, not by tokens × width), so
//! those texts' vectors are slices of the first text's rows. Alone in its request a text is
//! read from offset 0, which is right.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use super::collect::{Activations, Pool};
use crate::runtime::Point;

/// An `/v1/embeddings` client.
#[derive(Debug, Clone)]
pub struct EmbeddingsEndpoint {
    base_url: String,
    model: String,
    agent: ureq::Agent,
}

impl EmbeddingsEndpoint {
    /// A client for `base_url` (plain `http://`, with or without `/v1`); `model` is the
    /// request's `model` field.
    pub fn new(base_url: &str, model: &str) -> Result<EmbeddingsEndpoint> {
        let url = base_url.trim_end_matches('/');
        if !url.starts_with("http://") {
            bail!("endpoint {base_url:?}: only plain http:// URLs are supported");
        }
        Ok(EmbeddingsEndpoint {
            base_url: url.strip_suffix("/v1").unwrap_or(url).to_string(),
            model: model.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .timeout_read(Duration::from_secs(600))
                .build(),
        })
    }

    /// The raw `embedding` value of one text (one vector, or one vector per token) and the
    /// server's `usage.prompt_tokens`, when it reports it.
    fn request(&self, text: &str) -> Result<(serde_json::Value, Option<usize>)> {
        let url = format!("{}/v1/embeddings", self.base_url);
        let body = serde_json::json!({"model": self.model, "input": [text]});
        let resp = self
            .agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .map_err(|e| match e {
                ureq::Error::Status(code, r) => {
                    let text: String = r
                        .into_string()
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect();
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
        let data = v["data"]
            .as_array()
            .with_context(|| format!("{url}: no `data` array in the response"))?;
        if data.len() != 1 {
            bail!("{url}: {} embeddings for one text", data.len());
        }
        let tokens = v["usage"]["prompt_tokens"].as_u64().map(|n| n as usize);
        Ok((data[0]["embedding"].clone(), tokens))
    }

    /// One pooled final-norm vector per text, in order.
    pub fn collect(
        &self,
        texts: &[String],
        pool: Pool,
        max_tokens: usize,
        progress: Option<&ProgressBar>,
    ) -> Result<Activations> {
        let mut data: Vec<f32> = Vec::new();
        let mut d = 0usize;
        for (i, text) in texts.iter().enumerate() {
            let (e, tokens) = self.request(text).with_context(|| format!("text {i}"))?;
            let v = pooled(&e, pool, max_tokens, tokens).with_context(|| format!("text {i}"))?;
            if d == 0 {
                d = v.len();
            } else if v.len() != d {
                bail!(
                    "text {i}: embedding of {} values, earlier ones had {d}",
                    v.len()
                );
            }
            data.extend_from_slice(&v);
            if let Some(pb) = progress {
                pb.inc(1);
            }
        }
        Ok(Activations {
            point: Point::FinalNorm,
            d,
            data,
        })
    }
}

fn floats(v: &serde_json::Value) -> Option<Vec<f32>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32))
        .collect()
}

/// Pools one text's `embedding`: a vector (the server pooled its `tokens` tokens) or a list
/// of per-token vectors.
fn pooled(
    e: &serde_json::Value,
    pool: Pool,
    max_tokens: usize,
    tokens: Option<usize>,
) -> Result<Vec<f32>> {
    let arr = e.as_array().context("`embedding` is not an array")?;
    if arr.first().is_some_and(|x| x.is_number()) {
        if pool != Pool::Mean {
            bail!("the server pools the tokens itself; only --pool mean can use its vectors");
        }
        match tokens {
            Some(n) if n <= max_tokens => {}
            Some(n) => bail!("the server pooled all {n} tokens of the text, more than --max-tokens {max_tokens} (scalpel pools the first {max_tokens}); serve per-token vectors (no pooling type) or raise --max-tokens"),
            None => bail!("the server pooled the text itself and did not report its token count (usage.prompt_tokens), so it cannot be checked against --max-tokens {max_tokens}"),
        }
        return floats(e).context("`embedding` holds a non-number");
    }
    let rows: Vec<Vec<f32>> = arr
        .iter()
        .take(max_tokens.max(1))
        .map(|r| floats(r).context("a token's embedding holds a non-number"))
        .collect::<Result<_>>()?;
    let Some(first) = rows.first() else {
        bail!("no token embeddings");
    };
    let d = first.len();
    if rows.iter().any(|r| r.len() != d) {
        bail!("token embeddings of different widths");
    }
    Ok(match pool {
        Pool::Last => rows[rows.len() - 1].clone(),
        Pool::Mean => {
            let mut acc = vec![0f64; d];
            for r in &rows {
                for (a, &x) in acc.iter_mut().zip(r) {
                    *a += x as f64;
                }
            }
            acc.iter()
                .map(|&a| (a / rows.len() as f64) as f32)
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_vectors_are_cut_and_pooled() {
        let e = serde_json::json!([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]);
        assert_eq!(pooled(&e, Pool::Mean, 2, None).unwrap(), vec![2.0, 3.0]);
        assert_eq!(pooled(&e, Pool::Last, 2, None).unwrap(), vec![3.0, 4.0]);
        assert_eq!(
            pooled(&e, Pool::Mean, 128, None).unwrap(),
            vec![104.0 / 3.0, 106.0 / 3.0]
        );
        let flat = serde_json::json!([0.5, -1.0]);
        assert_eq!(
            pooled(&flat, Pool::Mean, 4, Some(4)).unwrap(),
            vec![0.5, -1.0]
        );
        assert!(pooled(&flat, Pool::Last, 4, Some(4)).is_err());
        // A server-pooled vector over more tokens than scalpel pools, or of unknown length.
        let long = pooled(&flat, Pool::Mean, 4, Some(5))
            .unwrap_err()
            .to_string();
        assert!(long.contains("all 5 tokens"), "{long}");
        assert!(pooled(&flat, Pool::Mean, 4, None).is_err());
        let bad = serde_json::json!([[1.0], [1.0, 2.0]]);
        assert!(pooled(&bad, Pool::Mean, 4, None).is_err());
        assert!(pooled(&serde_json::json!("x"), Pool::Mean, 4, None).is_err());
    }
}
