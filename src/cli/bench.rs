//! `scalpel bench`: throughput of the runtime's three hot paths on one model — prompt
//! processing, batched forward with hidden states (what probe training does), and greedy
//! generation — each as the median of several runs after a warm-up.

use anyhow::Result;
use clap::Args;
use scalpel::runtime::generate::{generate, GenParams};
use scalpel::runtime::{LoadOptions, Logits, Model, Point, Precision};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `scalpel bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// GGUF file or Hugging Face folder.
    pub model: PathBuf,
    /// Weight precisions to measure (repeatable); default: all three.
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

/// Runs `scalpel bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    let precisions = if a.precision.is_empty() {
        vec![Precision::Native, Precision::Q8_0, Precision::F32]
    } else {
        a.precision.clone()
    };
    let threads = candle_core::utils::get_num_threads();
    if !a.json {
        println!(
            "model: {}  threads: {threads}  (median of {} runs)",
            a.model.display(),
            a.runs
        );
        println!(
            "{:<8} {:>16} {:>24} {:>20} {:>22}",
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
                serde_json::json!({"precision": p, "threads": threads, "prompt_tok_s": prompt,
                    "forward_hidden_b32x64_tok_s": fwd, "greedy_b1_tok_s": gen1, "greedy_b32_tok_s": gen32})
            );
        } else {
            println!(
                "{:<8} {:>16.0} {:>24.0} {:>20.1} {:>22.1}",
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
