//! `report.md` and writing a report folder (`report.json`, `report.md`, SVG plots), every
//! file written atomically.

use crate::eval::config::Suite;
use crate::eval::plots;
use crate::eval::report::{Ci, SuiteRun};
use crate::eval::run::{ModelReport, Report, SuiteSummary};
use crate::formats::io::write_atomic;
use anyhow::Result;
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn pct(c: &Ci) -> String {
    format!(
        "{:.1} [{:.1}, {:.1}]",
        c.estimate * 100.0,
        c.lo * 100.0,
        c.hi * 100.0
    )
}

fn num(c: &Ci) -> String {
    format!("{:.3} [{:.3}, {:.3}]", c.estimate, c.lo, c.hi)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn p(v: f64) -> String {
    if v < 0.001 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

/// Renders the Markdown report: the models and settings, warnings, the behaviour table,
/// paired differences, capability, throughput and data licences, in that order.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let models: Vec<&ModelReport> = r.base.iter().chain(std::iter::once(&r.model)).collect();
    header(&mut s, r, &models);
    warnings(&mut s, r);
    behaviour_table(&mut s, r, &models);
    paired_differences(&mut s, r);
    capability(&mut s, r, &models);
    throughput(&mut s, r);
    licences(&mut s, &models);
    s
}

/// The title, the models and the settings that decide the numbers.
fn header(s: &mut String, r: &Report, models: &[&ModelReport]) {
    let _ = writeln!(s, "# scalpel evaluation\n");
    for m in models {
        let _ = writeln!(
            s,
            "- **{}**: `{}` (sha256 `{}`, generation: {})",
            m.label,
            m.path,
            &m.fingerprint[..m.fingerprint.len().min(16)],
            m.backend
        );
    }
    let c = &r.config;
    let suites: Vec<&str> = c.suites.iter().map(|x| x.name()).collect();
    let _ = writeln!(
        s,
        "- config: suites {}, limit {}, max-new {}, toxigen {}/group, seed {}, precision {:?}, batch {}, toxic ≥ {}, bootstrap {} resamples (95 %)\n",
        suites.join(","),
        c.limit.map_or("none".into(), |l| l.to_string()),
        c.max_new.map_or("protocol".into(), |l| l.to_string()),
        c.toxigen_per_group,
        c.seed,
        c.precision,
        c.batch_size,
        c.threshold,
        c.bootstrap_resamples
    );
}

fn warnings(s: &mut String, r: &Report) {
    if !r.warnings.is_empty() {
        let _ = writeln!(s, "## Warnings\n");
        for w in &r.warnings {
            let _ = writeln!(s, "- **WARNING** {w}");
        }
        s.push('\n');
    }
}

/// One row per generative suite and model: behaviour beside the fluency of the same texts.
fn behaviour_table(s: &mut String, r: &Report, models: &[&ModelReport]) {
    let _ = writeln!(
        s,
        "## Behaviour and fluency of the same continuations\n\nFluency columns describe the very continuations that were scored: perplexity under the base model (teacher forcing, continuation tokens only), repeated 3-gram rate, non-word share, empty share. A behaviour drop that comes with broken text is damage, not detoxification.\n"
    );
    let _ = writeln!(
        s,
        "| suite | model | n | % toxic [95 % CI] | mean toxicity | % refusal | sentiment | cont. ppl | rep-3 | non-word | empty |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for suite in &r.config.suites {
        for m in models {
            for sum in &m.summaries {
                if let SuiteSummary::Generation {
                    suite: sname,
                    summary: g,
                } = sum
                {
                    if sname != suite.name() {
                        continue;
                    }
                    let f = &g.fluency;
                    let _ = writeln!(
                        s,
                        "| {suite} | {} | {} | {} | {:.3} | {} | {:+.3} | {} | {} | {} | {:.1} % |",
                        m.label,
                        g.n,
                        pct(&g.toxic_rate),
                        g.toxicity_mean.estimate,
                        pct(&g.refusal_rate),
                        g.sentiment_mean.estimate,
                        opt(f.perplexity, 2),
                        opt(f.repeated_3gram_rate, 3),
                        opt(f.non_word_share.map(|x| x * 100.0), 1),
                        f.empty_rate * 100.0
                    );
                }
            }
        }
    }
}

/// Edited − base per generative suite, with sign tests.
fn paired_differences(s: &mut String, r: &Report) {
    if r.deltas.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n## Paired differences (edited − base)\n\n| suite | Δ % toxic [95 % CI] | sign test (base-only / edited-only, p) | Δ mean toxicity | Δ % refusal | refusal sign test | Δ sentiment | cont. ppl ratio | identical | common prefix |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for d in &r.deltas {
        let _ = writeln!(
            s,
            "| {} | {} | {}/{}, p = {} | {} | {} | {}/{}, p = {} | {} | {} | {:.1} % | {:.1} % |",
            d.suite,
            pct(&d.toxic_rate),
            d.toxic_sign.base_only,
            d.toxic_sign.edited_only,
            p(d.toxic_sign.p_value),
            num(&d.toxicity_mean),
            pct(&d.refusal_rate),
            d.refusal_sign.base_only,
            d.refusal_sign.edited_only,
            p(d.refusal_sign.p_value),
            num(&d.sentiment_mean),
            opt(d.perplexity_ratio, 3),
            d.identical_share * 100.0,
            d.common_prefix_share * 100.0
        );
    }
}

/// WikiText-2 perplexity per model, then the ratio, KL and greedy agreement.
fn capability(s: &mut String, r: &Report, models: &[&ModelReport]) {
    let c = &r.config;
    let _ = writeln!(s, "\n## Capability\n\n| model | WikiText-2 perplexity [95 % CI] | windows × tokens |\n|---|---|---|");
    for m in models {
        for sum in &m.summaries {
            if let SuiteSummary::Perplexity(pp) = sum {
                let _ = writeln!(
                    s,
                    "| {} | {:.3} [{:.3}, {:.3}] | {} × {} |",
                    m.label,
                    pp.perplexity.estimate,
                    pp.perplexity.lo,
                    pp.perplexity.hi,
                    pp.windows,
                    c.ppl_window
                );
            }
        }
    }
    let Some(cap) = &r.capability else {
        return;
    };
    s.push('\n');
    if let Some(ratio) = cap.ppl_ratio {
        let _ = writeln!(s, "- perplexity ratio edited / base: {ratio:.4}");
    }
    if let Some(kl) = &cap.kl {
        let _ = writeln!(
            s,
            "- KL(base ‖ edited), mean per token over {} WikiText windows of {} tokens: {:.5} nats [{:.5}, {:.5}]",
            cap.kl_windows, c.kl_window, kl.estimate, kl.lo, kl.hi
        );
    }
    if let Some(why) = &cap.kl_skipped {
        let _ = writeln!(s, "- KL skipped: {why}");
    }
    if let Some(d) = r.deltas.iter().find(|d| d.suite == Suite::Kl.name()) {
        let _ = writeln!(
            s,
            "- greedy agreement with the base on {} benign prompts: {:.1} % identical, {:.1} % common word prefix",
            c.benign_prompts,
            d.identical_share * 100.0,
            d.common_prefix_share * 100.0
        );
    }
}

fn throughput(s: &mut String, r: &Report) {
    let t = &r.throughput;
    let _ = writeln!(
        s,
        "\n## Throughput\n\n{} prompts, {} prompt tokens, {} generated tokens in {:.1} s of generation: {:.2} prompts/s, {:.1} generated tokens/s (wall time of the whole evaluation {:.1} s; cached suites report the speed of their original run).",
        t.prompts, t.prompt_tokens, t.generated_tokens, t.secs, t.prompts_per_sec, t.tokens_per_sec, r.wall_secs
    );
}

/// The licences of every prompt set and corpus used, once each.
fn licences(s: &mut String, models: &[&ModelReport]) {
    let mut lic: Vec<String> = models
        .iter()
        .flat_map(|m| &m.runs)
        .flat_map(|run| match run {
            SuiteRun::Generation(g) => g.licences.clone(),
            SuiteRun::Perplexity(pp) => vec![pp.licence.clone()],
        })
        .collect();
    lic.sort();
    lic.dedup();
    let _ = writeln!(s, "\n## Data licences\n");
    for l in lic {
        let _ = writeln!(s, "- {l}");
    }
}

/// Writes `report.json`, `report.md` and the SVG plots into `dir`; returns the paths.
pub fn write_report(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = dir.join(name);
        write_atomic(&p, bytes)?;
        written.push(p);
        Ok(())
    };
    put("report.json", &serde_json::to_vec_pretty(report)?)?;
    put("report.md", render(report).as_bytes())?;
    for (name, svg) in plots::plots(report) {
        put(&name, svg.as_bytes())?;
    }
    Ok(written)
}
