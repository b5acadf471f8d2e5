//! The evaluation cache: each suite's result per model (by content), base model and the
//! settings that suite reads ([`EvalConfig::cache_key`]), and the KL windows per pair of
//! models, under `SCALPEL_CACHE/eval/`. Every entry is a first line with the sha256 of
//! the JSON after it, checked on every read: an edited or damaged entry is recomputed with
//! a warning, never reported. Endpoint runs are not cached (the server's model is not known
//! from its URL).

use crate::assets::FetchOptions;
use crate::eval::config::{EvalConfig, Subject, Suite};
use crate::eval::kl::{self, BaseLogits};
use crate::eval::report::SuiteRun;
use crate::eval::suites::{run_generative, run_ppl, wikitext_windows, Scorers};
use crate::formats::io::write_atomic;
use crate::progress::{stage, Stage};
use anyhow::Result;
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Bump when a change alters cached suite results. A change within float rounding keeps it:
/// scoring from stored prompt states ([`crate::eval::prompt_states`]) moved continuation
/// NLLs by at most 1.8e-6 relative (328 continuations of the default model) and nothing
/// else, so entries written before it still stand for the same result. Cutting a prompt set
/// that fits one generation batch into two halves (`runtime::generate`) can move attention
/// by the last bit of padding, nothing more; the quick profile's 32 ToxiGen and 16 KL-prompt
/// continuations of the default model and its edit came out byte-identical. Prefilling a
/// batch in groups of similar length (`runtime::prefill`) is the same kind of change: 200
/// RTP and 64 ToxiGen continuations of the default model, with their scores, came out
/// byte-identical. Taking a long pass's attention in query blocks (`runtime::layers`) moved
/// the default model's perplexity on 6 WikiText windows by 4e-8 relative (23.670766698 →
/// 23.670765774), and touches no pass under 256 positions (every generation).
const CACHE_VERSION: u32 = 1;

/// Runs one suite on `subject`, from the cache when the same (model, base model, suite,
/// configuration) ran before. Endpoint runs are never cached: the server's model is not
/// known from the URL.
pub fn run_suite_cached(
    suite: Suite,
    subject: &Subject,
    nll_ref: &Subject,
    cfg: &EvalConfig,
    scorers: &Scorers,
    fetch: &FetchOptions,
) -> Result<SuiteRun> {
    let entry = |cfg_key: serde_json::Value| {
        entry_name(
            &suite.to_string(),
            serde_json::json!({
                "v": CACHE_VERSION, "suite": suite, "model": subject.fingerprint,
                "nll_model": nll_ref.fingerprint, "cfg": cfg_key,
            }),
        )
    };
    let dir = cfg
        .cache_dir
        .as_ref()
        .filter(|_| subject.endpoint.is_none());
    let path = match dir {
        Some(d) => Some(d.join(entry(cfg.cache_key(suite)?))),
        None => None,
    };
    if let Some(p) = path.as_ref().filter(|p| p.is_file()) {
        if let Some(run) = read_checked::<SuiteRun>(p) {
            eprintln!("{} {suite}: cached ({})", subject.label, p.display());
            return Ok(run);
        }
    }
    // An entry written under the earlier key (every setting in it) is the same result when
    // all settings match: read it and file it under the current key, so that evaluations
    // cached before per-suite keys are not recomputed.
    if let (Some(d), Some(p), Some(old)) = (dir, path.as_ref(), cfg.legacy_cache_key(suite)) {
        let legacy = d.join(entry(old));
        if let Some(run) = legacy.is_file().then(|| read_checked(&legacy)).flatten() {
            eprintln!("{} {suite}: cached ({})", subject.label, legacy.display());
            write_atomic(p, &checked_bytes(&run)?)?;
            return Ok(run);
        }
    }
    let run = if suite == Suite::Ppl {
        let _timed = stage(Stage::Perplexity, &subject.label);
        SuiteRun::Perplexity(run_ppl(subject.model, cfg, fetch)?)
    } else {
        SuiteRun::Generation(run_generative(
            suite, subject, nll_ref, cfg, scorers, fetch,
        )?)
    };
    if let Some(p) = path {
        write_atomic(&p, &checked_bytes(&run)?)?;
    }
    Ok(run)
}

/// KL(base ‖ `subject`) on each of `cfg`'s WikiText-2 KL windows, from the cache when the
/// same two models (by content), precision and windows were compared before. The windows
/// were recomputed on every `compare` otherwise: ~25 s per point on the default model, seven
/// minutes of a 17-point comparison whose every suite was cached. When they are computed,
/// the base's logits come from `base_logits` after the first model of the process.
pub fn kl_cached(
    base: &Subject,
    subject: &Subject,
    cfg: &EvalConfig,
    base_logits: &BaseLogits,
    fetch: &FetchOptions,
) -> Result<Vec<f64>> {
    let path = cfg.cache_dir.as_ref().map(|d| {
        d.join(entry_name(
            "klwindows",
            serde_json::json!({
                "v": CACHE_VERSION, "base": base.fingerprint, "model": subject.fingerprint,
                "precision": cfg.precision, "window": cfg.kl_window, "windows": cfg.kl_windows,
            }),
        ))
    });
    if let Some(kl) = path
        .as_ref()
        .filter(|p| p.is_file())
        .and_then(|p| read_checked::<Vec<f64>>(p))
        .filter(|kl| !kl.is_empty())
    {
        eprintln!("{} kl windows: cached", subject.label);
        return Ok(kl);
    }
    let (windows, _) = wikitext_windows(base.model, fetch, cfg.kl_window, Some(cfg.kl_windows))?;
    let timed = stage(Stage::Kl, &subject.label);
    let kl = kl::kl_per_window(
        base.model,
        &base.fingerprint,
        base_logits,
        subject.model,
        &windows,
    )?;
    drop(timed);
    if let Some(p) = path {
        write_atomic(&p, &checked_bytes(&kl)?)?;
    }
    Ok(kl)
}

/// `<prefix>-<sha256 of the key's JSON>.json`.
fn entry_name(prefix: &str, key: serde_json::Value) -> String {
    let h = Sha256::digest(key.to_string().as_bytes());
    format!("{prefix}-{h:x}.json")
}

/// A cached result: a first line `sha256:<hex of the JSON that follows>`, then the JSON.
fn checked_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(value)?;
    let mut out = format!("sha256:{:x}\n", Sha256::digest(&json)).into_bytes();
    out.extend_from_slice(&json);
    Ok(out)
}

/// Reads a cached result; `None` (recompute) when unreadable, and with a warning when the
/// JSON does not match the hash recorded when it was written: an edited cache must not turn
/// a report from 0 % to 100 % toxic.
fn read_checked<T: DeserializeOwned>(p: &Path) -> Option<T> {
    let bytes = std::fs::read(p).ok()?;
    let checked = bytes
        .strip_prefix(b"sha256:")
        .and_then(|rest| {
            let nl = rest.iter().position(|&b| b == b'\n')?;
            Some((&rest[..nl], &rest[nl + 1..]))
        })
        .filter(|(h, json)| *h == format!("{:x}", Sha256::digest(json)).as_bytes());
    let Some((_, json)) = checked else {
        eprintln!(
            "WARNING evaluation cache {}: content does not match its recorded sha256; recomputing",
            p.display()
        );
        return None;
    };
    serde_json::from_slice(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::report::PplRun;

    #[test]
    fn cached_result_is_checked_against_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ppl.json");
        let run = SuiteRun::Perplexity(PplRun {
            corpus: "wikitext".into(),
            licence: "cc".into(),
            window: 8,
            windows: vec![(12.5, 8), (9.0, 8)],
            secs: 1.0,
        });
        std::fs::write(&p, checked_bytes(&run).unwrap()).unwrap();
        assert_eq!(read_checked(&p), Some(run));
        // Edited values (same length, still valid JSON): refused, so the suite is recomputed.
        let text = std::fs::read_to_string(&p).unwrap().replace("12.5", "13.5");
        std::fs::write(&p, text).unwrap();
        assert_eq!(read_checked::<SuiteRun>(&p), None);
        // A file from before the hash: recomputed too.
        std::fs::write(&p, r#"{"kind":"perplexity"}"#).unwrap();
        assert_eq!(read_checked::<SuiteRun>(&p), None);
    }
}
