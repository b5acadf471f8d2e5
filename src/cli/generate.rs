//! `scalpel generate`: continue a prompt (or a file of prompts) with a model.

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use scalpel::runtime::generate::{generate, GenParams};
use scalpel::runtime::{LoadOptions, Model, Precision};
use std::path::PathBuf;

/// Arguments of `scalpel generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// GGUF file or Hugging Face folder.
    pub model: PathBuf,
    /// Prompt text (repeatable).
    #[arg(long, short)]
    pub prompt: Vec<String>,
    /// File with one prompt per line.
    #[arg(long)]
    pub prompts_file: Option<PathBuf>,
    /// Wrap each prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Prompts per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// How matrices are held in memory.
    #[arg(long, value_enum, default_value_t = Precision::Native)]
    pub precision: Precision,
    /// Refuse prompts longer than this many tokens (a prompt near the context costs minutes
    /// and gigabytes of attention on a CPU; raise it deliberately).
    #[arg(long, default_value_t = 2048)]
    pub max_prompt_tokens: usize,
    /// Print JSON lines (prompt, continuation, finish reason) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `scalpel generate`.
pub fn run(a: GenerateArgs) -> Result<()> {
    let mut prompts = a.prompt.clone();
    if let Some(f) = &a.prompts_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        prompts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    anyhow::ensure!(
        !prompts.is_empty(),
        "no prompt given (use --prompt or --prompts-file)"
    );
    // Settings are checked before the model loads, so a typo costs nothing.
    let params = GenParams {
        max_new_tokens: a.max_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        stop: a.stop.clone(),
        batch_size: a.batch_size,
    };
    params.validate()?;
    anyhow::ensure!(
        a.max_prompt_tokens >= 1,
        "--max-prompt-tokens must be at least 1"
    );
    // Before tokenizing (itself slow on huge texts): the vocabularies in use have no token
    // near 64 bytes, so a prompt of more than 64 bytes per allowed token cannot fit.
    if let Some((i, p)) = prompts
        .iter()
        .enumerate()
        .find(|(_, p)| p.len() > a.max_prompt_tokens.saturating_mul(64))
    {
        anyhow::bail!(
            "prompt {i} has {} bytes, far more than --max-prompt-tokens {} allows",
            p.len(),
            a.max_prompt_tokens
        );
    }
    let model = Model::load(
        &a.model,
        &LoadOptions {
            precision: a.precision,
        },
    )?;
    let texts: Vec<String> = if a.chat {
        prompts
            .iter()
            .map(|p| model.chat_prompt(p))
            .collect::<Result<_>>()?
    } else {
        prompts.clone()
    };
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| model.tokenizer.encode(t))
        .collect::<Result<_>>()?;
    if let Some((i, t)) = ids
        .iter()
        .enumerate()
        .find(|(_, t)| t.len() > a.max_prompt_tokens)
    {
        anyhow::bail!(
            "prompt {i} has {} tokens, more than --max-prompt-tokens {} (raise it to run this prompt; the model's context is {})",
            t.len(),
            a.max_prompt_tokens,
            model.config().max_position_embeddings
        );
    }
    let pb = ProgressBar::new(ids.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} prompts [{elapsed}<{eta}] {per_sec}")
            .expect("valid template"),
    );
    if ids.len() < 2 {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let t0 = std::time::Instant::now();
    let (gens, stats) = generate(&model, &ids, &params, Some(&pb))?;
    let secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    for (p, g) in prompts.iter().zip(&gens) {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"prompt": p, "continuation": g.text, "finish": g.finish, "tokens": g.tokens.len()})
            );
        } else if prompts.len() == 1 {
            println!("{}", g.text);
        } else {
            println!("### {p}\n{}\n", g.text);
        }
    }
    eprintln!(
        "{} prompts, {} prompt tokens, {} new tokens in {:.2} s ({:.1} new tok/s)",
        stats.prompts,
        stats.prompt_tokens,
        stats.generated_tokens,
        secs,
        stats.generated_tokens as f64 / secs.max(1e-9)
    );
    Ok(())
}
