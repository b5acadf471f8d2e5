//! Step 1's features from a server: the final-norm states of an OpenAI-compatible
//! `/v1/embeddings` endpoint (llama.cpp / llama-cpp-python with embeddings on, vLLM's
//! embedding task), for a model scalpel cannot hold.
//!
//! A server that returns one vector per token (llama.cpp without a pooling type) is pooled
//! here exactly as [`super::collect`] pools: the first `max_tokens` tokens (BOS included),
//! mean or last — with causal attention a token's state does not depend on later tokens, so
//! cutting after the pass equals cutting before it. A server that pools itself (`--pooling
//! mean`) returns one vector per text; its truncation is the server's, so the texts are
//! checked to fit (a vector per text is accepted only for mean pooling).

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

    /// The raw `embedding` values of a batch of texts, in order: per text either one vector
    /// or one vector per token.
    fn request(&self, texts: &[String]) -> Result<Vec<serde_json::Value>> {
        let url = format!("{}/v1/embeddings", self.base_url);
        let body = serde_json::json!({"model": self.model, "input": texts});
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
        let mut data: Vec<(usize, serde_json::Value)> = v["data"]
            .as_array()
            .with_context(|| format!("{url}: no `data` array in the response"))?
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let idx = d["index"].as_u64().map_or(i, |x| x as usize);
                (idx, d["embedding"].clone())
            })
            .collect();
        data.sort_by_key(|d| d.0);
        if data.len() != texts.len() || data.iter().enumerate().any(|(i, d)| d.0 != i) {
            bail!("{url}: {} embeddings for {} texts", data.len(), texts.len());
        }
        Ok(data.into_iter().map(|d| d.1).collect())
    }

    /// One pooled final-norm vector per text, `batch` texts per request.
    pub fn collect(
        &self,
        texts: &[String],
        pool: Pool,
        max_tokens: usize,
        batch: usize,
        progress: Option<&ProgressBar>,
    ) -> Result<Activations> {
        let mut data: Vec<f32> = Vec::new();
        let mut d = 0usize;
        for (b, chunk) in texts.chunks(batch.max(1)).enumerate() {
            for (k, e) in self.request(chunk)?.iter().enumerate() {
                let i = b * batch.max(1) + k;
                let v = pooled(e, pool, max_tokens).with_context(|| format!("text {i}"))?;
                if d == 0 {
                    d = v.len();
                } else if v.len() != d {
                    bail!(
                        "text {i}: embedding of {} values, earlier ones had {d}",
                        v.len()
                    );
                }
                data.extend_from_slice(&v);
            }
            if let Some(pb) = progress {
                pb.inc(chunk.len() as u64);
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

/// Pools one text's `embedding`: a vector (the server pooled) or a list of per-token vectors.
fn pooled(e: &serde_json::Value, pool: Pool, max_tokens: usize) -> Result<Vec<f32>> {
    let arr = e.as_array().context("`embedding` is not an array")?;
    if arr.first().is_some_and(|x| x.is_number()) {
        if pool != Pool::Mean {
            bail!("the server pools the tokens itself; only --pool mean can use its vectors");
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
        assert_eq!(pooled(&e, Pool::Mean, 2).unwrap(), vec![2.0, 3.0]);
        assert_eq!(pooled(&e, Pool::Last, 2).unwrap(), vec![3.0, 4.0]);
        assert_eq!(
            pooled(&e, Pool::Mean, 128).unwrap(),
            vec![104.0 / 3.0, 106.0 / 3.0]
        );
        let flat = serde_json::json!([0.5, -1.0]);
        assert_eq!(pooled(&flat, Pool::Mean, 4).unwrap(), vec![0.5, -1.0]);
        assert!(pooled(&flat, Pool::Last, 4).is_err());
        assert!(pooled(&serde_json::json!([[1.0], [1.0, 2.0]]), Pool::Mean, 4).is_err());
        assert!(pooled(&serde_json::json!("x"), Pool::Mean, 4).is_err());
    }
}
