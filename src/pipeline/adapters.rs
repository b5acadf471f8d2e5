//! `scalpel run --adapters-only`: the run's edit and controls as LoRA adapters, and a
//! llama-cpp-python config serving them, for a later `scalpel run --endpoint`
//! ([`super::serving`]).

use super::labels::BASE;
use super::run::run_variants;
use super::serving::{adapter_path, write_adapter};
use super::session::{Inputs, Session};
use super::RunConfig;
use crate::formats::io::write_atomic;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// What [`prepare`] wrote.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// (label, adapter path, bytes) per edited model.
    pub adapters: Vec<(String, PathBuf, u64)>,
    /// The llama-cpp-python multi-model config (GGUF models only).
    pub server_config: Option<PathBuf>,
}

/// Trains the probe, plans the edit and its controls, and writes their adapters and a
/// llama-cpp-python server config serving the base and base + each adapter under the run's
/// labels (the default [`ServedNames`]).
pub fn prepare(cfg: RunConfig, inputs: Inputs) -> Result<Prepared> {
    let out = cfg.out.clone();
    let mut s = Session::start(cfg.clone(), inputs)?;
    let (probe_w, _) = s.probe(&out.join("probes"))?;
    let mut adapters = Vec::new();
    for v in run_variants(&s, &cfg, &probe_w)? {
        let (probe, _) = s.probe_with(&v.fit, &out.join("probes"))?;
        let (plan, ..) = s.plan(&probe, &v)?;
        let dir = out.join(&v.label);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = adapter_path(&s.file, &dir);
        let bytes = write_adapter(&s.file, &plan, &path).with_context(|| v.label.clone())?;
        adapters.push((v.label.clone(), path, bytes));
    }
    let server_config = (s.file.format() == crate::formats::ModelFormat::Gguf)
        .then(|| -> Result<PathBuf> {
            let model = std::path::absolute(&s.model_path)?;
            let mut models = vec![serde_json::json!({
                "model": model, "model_alias": BASE, "n_ctx": 2048})];
            for (label, path, _) in &adapters {
                models.push(serde_json::json!({"model": model, "model_alias": label,
                    "lora_path": std::path::absolute(path)?, "n_ctx": 2048}));
            }
            let cfg = serde_json::json!({"host": "127.0.0.1", "port": 8080, "models": models});
            let p = out.join("server.json");
            write_atomic(&p, serde_json::to_string_pretty(&cfg)?.as_bytes())?;
            Ok(p)
        })
        .transpose()?;
    Ok(Prepared {
        adapters,
        server_config,
    })
}
