//! `scalpel bench`: throughput of the runtime's three hot paths on one model — prompt
//! processing, batched forward with hidden states (what probe training does), and greedy
//! generation — each as the median of several runs after a warm-up.
//!
//! `--collect FILE` and `--generate FILE` time one workload over a text file instead (one
//! text per line), for `bench/run.sh`, which runs the same workload through the peers: the
//! activation collection of `probe train` (mean-pooled final-norm states, activation cache
//! off) and batched greedy generation. Both print one JSON object.

use anyhow::Context;
use anyhow::Result;
use clap::Args;
use scalpel::data::Dataset;
use scalpel::probe::{collect, CollectOptions, Pool};
use scalpel::runtime::generate::{generate, GenParams};
use scalpel::runtime::kernels::isa;
use scalpel::runtime::{LoadOptions, Logits, Model, Point, Precision};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `scalpel bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// GGUF file or Hugging Face folder.
    pub model: PathBuf,
    /// Weight precisions to measure (repeatable); default: native, q8-0, f32 (the
    /// not-bit-exact int8-activations only when asked for).
    #[arg(long, value_enum)]
    pub precision: Vec<Precision>,
    /// Timed repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// New tokens in the single-stream generation figure.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Print one JSON object per figure instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Time activation collection (`probe train`'s: mean-pooled final-norm states, no
    /// activation cache) over this file, one text per line; prints JSON.
    #[arg(long, value_name = "TEXTS", conflicts_with = "generate")]
    pub collect: Option<PathBuf>,
    /// With --collect: also write the pooled states as raw little-endian f32, n × d.
    #[arg(long, value_name = "PATH", requires = "collect")]
    pub save_activations: Option<PathBuf>,
    /// Time greedy generation of --gen-tokens new tokens for each prompt of this file, one
    /// per line; prints JSON.
    #[arg(long, value_name = "PROMPTS")]
    pub generate: Option<PathBuf>,
    /// Texts (--collect) or prompts (--generate) per forward batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// With --collect or --generate: texts whose tokens (BOS included) exceed this are cut.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Times `f` (returning a work count) `runs` times after one warm-up; returns work/s.
fn rate(runs: usize, mut f: impl FnMut() -> Result<usize>) -> Result<f64> {
    f()?;
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let n = f()?;
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    Ok(median(rates))
}

/// Non-empty lines of a text file.
fn read_lines(path: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        !lines.is_empty(),
        "{} has no non-empty line",
        path.display()
    );
    Ok(lines)
}

/// The one precision of a --collect / --generate run.
fn single_precision(a: &BenchArgs, default: Precision) -> Result<Precision> {
    match a.precision.as_slice() {
        [] => Ok(default),
        [p] => Ok(*p),
        _ => anyhow::bail!("--collect and --generate take at most one --precision"),
    }
}

/// `--collect`: one warm-up batch, then `runs` timed passes over every text.
fn run_collect(a: &BenchArgs, texts_path: &std::path::Path) -> Result<()> {
    let precision = single_precision(a, Precision::F32)?;
    let load = Instant::now();
    let model = Model::load(&a.model, &LoadOptions { precision })?;
    let load_secs = load.elapsed().as_secs_f64();
    let texts = read_lines(texts_path)?;
    let ds = |items: &[String]| Dataset {
        name: texts_path.display().to_string(),
        items: items.iter().map(|t| (t.clone(), 0)).collect(),
    };
    let opts = CollectOptions {
        points: vec![Point::FinalNorm],
        pool: Pool::Mean,
        max_tokens: a.max_tokens,
        batch_size: a.batch_size,
        cache_dir: None,
        progress: false,
    };
    let all = ds(&texts);
    collect(&model, &ds(&texts[..a.batch_size.min(texts.len())]), &opts)?;
    let mut secs = Vec::new();
    let mut last = None;
    for _ in 0..a.runs.max(1) {
        let t = Instant::now();
        let (acts, stats) = collect(&model, &all, &opts)?;
        secs.push(t.elapsed().as_secs_f64());
        last = Some((acts, stats));
    }
    let (acts, stats) = last.expect("at least one run");
    if let Some(path) = &a.save_activations {
        let bytes: Vec<u8> = acts[0].data.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let med = median(secs.clone());
    println!(
        "{}",
        serde_json::json!({"workload": "collect", "precision": precision, "isa": isa::label(),
            "threads": candle_core::utils::get_num_threads(), "texts": stats.texts,
            "tokens": stats.tokens, "truncated": stats.truncated, "d": acts[0].d,
            "batch_size": a.batch_size, "load_secs": load_secs, "secs": secs,
            "median_secs": med, "texts_per_s": stats.texts as f64 / med,
            "tokens_per_s": stats.tokens as f64 / med})
    );
    Ok(())
}

/// `--generate`: a warm-up on the first prompt, then `runs` timed passes over every prompt.
fn run_generate(a: &BenchArgs, prompts_path: &std::path::Path) -> Result<()> {
    let precision = single_precision(a, Precision::Native)?;
    let load = Instant::now();
    let model = Model::load(&a.model, &LoadOptions { precision })?;
    let load_secs = load.elapsed().as_secs_f64();
    let prompts = read_lines(prompts_path)?
        .iter()
        .map(|p| {
            let mut ids = model.tokenizer.encode(p)?;
            ids.truncate(a.max_tokens);
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    let params = GenParams {
        max_new_tokens: a.gen_tokens,
        batch_size: a.batch_size,
        ..Default::default()
    };
    let warm = GenParams {
        max_new_tokens: a.gen_tokens.min(8),
        ..params.clone()
    };
    generate(&model, &prompts[..1], &warm, None)?;
    let mut secs = Vec::new();
    let mut tokens = Vec::new();
    // Where each run's time went: prompt processing, then the token-by-token steps.
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..a.runs.max(1) {
        let t = Instant::now();
        let (_, stats) = generate(&model, &prompts, &params, None)?;
        secs.push(t.elapsed().as_secs_f64());
        tokens.push(stats.generated_tokens);
        prefill.push(stats.prefill_secs);
        decode.push(stats.decode_secs);
    }
    let rates: Vec<f64> = tokens
        .iter()
        .zip(&secs)
        .map(|(&n, s)| n as f64 / s)
        .collect();
    println!(
        "{}",
        serde_json::json!({"workload": "generate", "precision": precision, "isa": isa::label(),
            "threads": candle_core::utils::get_num_threads(), "prompts": prompts.len(),
            "prompt_tokens": prompts.iter().map(Vec::len).sum::<usize>(),
            "generated_tokens": tokens, "batch_size": a.batch_size, "load_secs": load_secs,
            "secs": secs, "prefill_secs": prefill, "decode_secs": decode,
            "tokens_per_s": median(rates)})
    );
    Ok(())
}

/// Runs `scalpel bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    if let Some(texts) = &a.collect {
        return run_collect(&a, texts);
    }
    if let Some(prompts) = &a.generate {
        return run_generate(&a, prompts);
    }
    let precisions = if a.precision.is_empty() {
        vec![Precision::Native, Precision::Q8_0, Precision::F32]
    } else {
        a.precision.clone()
    };
    let threads = candle_core::utils::get_num_threads();
    if !a.json {
        println!(
            "model: {}  threads: {threads}  kernels: {}  (median of {} runs)",
            a.model.display(),
            isa::label(),
            a.runs
        );
        println!(
            "{:<16} {:>16} {:>24} {:>20} {:>22}",
            "weights",
            "prompt tok/s",
            "fwd+hidden b32x64 tok/s",
            "greedy tok/s (b=1)",
            "greedy tok/s (b=32)"
        );
    }
    for p in precisions {
        let model = Model::load(&a.model, &LoadOptions { precision: p })?;
        let text = "The history of the city goes back to Roman times, when a small fort was built on the hill above the river. ";
        let mut ids = model.tokenizer.encode(&text.repeat(8))?;
        ids.truncate(256);
        let n_prompt = ids.len();
        let prompt = rate(a.runs, || {
            model.forward_batch(std::slice::from_ref(&ids), &[], Logits::Last)?;
            Ok(n_prompt)
        })?;
        let batch: Vec<Vec<u32>> = (0..32).map(|i| ids[i..i + 64].to_vec()).collect();
        let points = [
            Point::FinalNorm,
            Point::MlpInput(model.config().num_layers / 2),
        ];
        let fwd = rate(a.runs, || {
            model.forward_batch(&batch, &points, Logits::None)?;
            Ok(32 * 64)
        })?;
        let one = vec![model.tokenizer.encode("Once upon a time")?];
        let params = GenParams {
            max_new_tokens: a.gen_tokens,
            batch_size: 1,
            ..Default::default()
        };
        let gen1 = rate(a.runs, || {
            Ok(generate(&model, &one, &params, None)?.1.generated_tokens)
        })?;
        let many: Vec<Vec<u32>> = (0..32).map(|i| ids[i..i + 16].to_vec()).collect();
        let params32 = GenParams {
            max_new_tokens: 20,
            batch_size: 32,
            ..Default::default()
        };
        let gen32 = rate(a.runs, || {
            Ok(generate(&model, &many, &params32, None)?.1.generated_tokens)
        })?;
        if a.json {
            println!(
                "{}",
                serde_json::json!({"precision": p, "threads": threads, "isa": isa::label(), "prompt_tok_s": prompt,
                    "forward_hidden_b32x64_tok_s": fwd, "greedy_b1_tok_s": gen1, "greedy_b32_tok_s": gen32})
            );
        } else {
            println!(
                "{:<16} {:>16.0} {:>24.0} {:>20.1} {:>22.1}",
                format!("{p:?}"),
                prompt,
                fwd,
                gen1,
                gen32
            );
        }
    }
    Ok(())
}
