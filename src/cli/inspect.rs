//! `scalpel inspect MODEL`: what a model file or folder holds.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use scalpel::formats::summary::{summarize, ModelSummary};

/// Arguments of `scalpel inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A GGUF file or a Hugging Face folder (config.json + safetensors).
    pub model: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Leave out the per-tensor list in text output.
    #[arg(long)]
    pub no_tensors: bool,
}

/// Runs `scalpel inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let s = summarize(&args.model)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_text(&s, !args.no_tensors);
    }
    Ok(())
}

fn opt<T: std::fmt::Display>(x: &Option<T>) -> String {
    x.as_ref().map_or("-".into(), |v| v.to_string())
}

fn print_text(s: &ModelSummary, tensors: bool) {
    let d = &s.dims;
    println!("{} ({})", s.path, s.format.long_name());
    println!("architecture  {}", opt(&s.architecture));
    println!(
        "dims          blocks {}  d {}  d_ff {}  heads {}  kv_heads {}  context {}  vocab {}",
        opt(&d.blocks),
        opt(&d.d),
        opt(&d.d_ff),
        opt(&d.heads),
        opt(&d.kv_heads),
        opt(&d.context),
        opt(&d.vocab)
    );
    println!(
        "tensors       {} ({:.1} MiB)",
        s.tensors.len(),
        s.weight_bytes as f64 / (1 << 20) as f64
    );
    let t = &s.tokenizer;
    if t.present {
        println!(
            "tokenizer     model {}  pre {}  vocab {}  bos {}  eos {}  chat template {}",
            opt(&t.model),
            opt(&t.pre),
            opt(&t.vocab_size),
            opt(&t.bos),
            opt(&t.eos),
            if t.chat_template { "yes" } else { "no" }
        );
    } else {
        println!("tokenizer     none");
    }
    println!("metadata ({} keys)", s.metadata.len());
    for (k, v) in &s.metadata {
        println!("  {k} = {v}");
    }
    if tensors {
        let w = s.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        println!("tensors");
        for t in &s.tensors {
            println!("  {:w$}  {:5}  {:?}", t.name, t.dtype, t.shape);
        }
    }
}
