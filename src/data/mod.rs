//! Labelled datasets (to train the behaviour probe) and prompt sets (to evaluate a model).
//!
//! Label convention everywhere: `0` = desirable behaviour, `1` = undesirable behaviour (the
//! one surgery should remove, e.g. toxic text). Shuffles and splits use [`SplitMix64`], a
//! small generator whose output is fixed by its published definition, so a seed means the
//! same order on every platform and with every version of this crate and its dependencies.

mod builtin;
mod labelled;
mod prompts;

pub use builtin::{
    builtin, sentiment, sentiment_from_files, toxicity, toxigen_demos, BuiltinOptions, Sentiment,
    BUILTIN_DATASETS,
};
pub use labelled::{load_csv, load_jsonl, load_lines, load_tsv, CsvFormat, JsonlFormat, LabelRule};
pub use prompts::{
    advbench, builtin_prompts, harmbench, load_prompt_jsonl, load_prompt_lines, parse_advbench,
    parse_toxigen_line, rtp, toxigen, Prompt, PromptOptions, PromptSet, BUILTIN_PROMPT_SETS,
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;

/// Label of desirable items.
pub const DESIRABLE: u8 = 0;
/// Label of undesirable items.
pub const UNDESIRABLE: u8 = 1;

/// Texts labelled desirable (0) or undesirable (1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Where it came from (file stem or built-in name), for messages and reports.
    pub name: String,
    /// `(text, label)` pairs.
    pub items: Vec<(String, u8)>,
}

impl Dataset {
    /// A dataset with at least one item of each class and only labels 0 and 1.
    pub fn new(name: impl Into<String>, items: Vec<(String, u8)>) -> Result<Dataset> {
        let ds = Dataset {
            name: name.into(),
            items,
        };
        ds.validate()?;
        Ok(ds)
    }

    /// Checks the invariants of [`Dataset::new`]; a probe needs both classes.
    pub fn validate(&self) -> Result<()> {
        if self.items.is_empty() {
            bail!("dataset {} has no items", self.name);
        }
        if let Some((_, l)) = self.items.iter().find(|(_, l)| *l > 1) {
            bail!(
                "dataset {} has label {l}; labels must be 0 (desirable) or 1 (undesirable)",
                self.name
            );
        }
        let [n0, n1] = self.counts();
        if n0 == 0 || n1 == 0 {
            let only = if n0 == 0 {
                "1 (undesirable)"
            } else {
                "0 (desirable)"
            };
            bail!(
                "dataset {} has only class {only} items ({} of them); both classes are needed",
                self.name,
                n0 + n1
            );
        }
        Ok(())
    }

    /// Number of items with label 0 and with label 1.
    pub fn counts(&self) -> [usize; 2] {
        let n1 = self.items.iter().filter(|(_, l)| *l == UNDESIRABLE).count();
        [self.items.len() - n1, n1]
    }

    /// Hex sha256 over the texts and labels in order (not the name), for cache keys: each
    /// item contributes its text length as u64 little-endian, the text bytes, the label byte.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"scalpel-dataset-v1\0");
        for (text, label) in &self.items {
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
            h.update([*label]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Drops exact repeats of a `(text, label)` pair, keeping the first.
    pub fn dedup(&mut self) {
        let mut seen = HashSet::new();
        self.items.retain(|item| seen.insert(item.clone()));
    }

    /// The items in a seeded random order.
    pub fn shuffled(&self, seed: u64) -> Dataset {
        let mut items = self.items.clone();
        SplitMix64::new(seed).shuffle(&mut items);
        Dataset {
            name: self.name.clone(),
            items,
        }
    }

    /// Downsamples the larger class to the size of the smaller one (seeded); kept items stay
    /// in their original order.
    pub fn balanced(&self, seed: u64) -> Dataset {
        let [n0, n1] = self.counts();
        let keep = n0.min(n1);
        let mut rng = SplitMix64::new(seed);
        let mut chosen = Vec::with_capacity(2 * keep);
        for label in [DESIRABLE, UNDESIRABLE] {
            let mut idx: Vec<usize> = (0..self.items.len())
                .filter(|&i| self.items[i].1 == label)
                .collect();
            rng.shuffle(&mut idx);
            chosen.extend_from_slice(&idx[..keep]);
        }
        chosen.sort_unstable();
        Dataset {
            name: self.name.clone(),
            items: chosen.into_iter().map(|i| self.items[i].clone()).collect(),
        }
    }

    /// At most `n` items, a seeded sample stratified by class: each class keeps its share of
    /// `n` (rounded; the last class present takes what is left, so rounding never adds an
    /// item), and every class that has items keeps at least one when `n` allows; kept items
    /// stay in their original order. Everything when `n` covers the dataset.
    pub fn subsample(&self, n: usize, seed: u64) -> Dataset {
        let total = self.items.len();
        if n >= total {
            return self.clone();
        }
        let mut rng = SplitMix64::new(seed);
        let classes: Vec<Vec<usize>> = [DESIRABLE, UNDESIRABLE]
            .iter()
            .map(|&label| (0..total).filter(|&i| self.items[i].1 == label).collect())
            .filter(|idx: &Vec<usize>| !idx.is_empty())
            .collect();
        let mut chosen = Vec::with_capacity(n);
        let count = classes.len();
        for (c, mut idx) in classes.into_iter().enumerate() {
            // Classes after this one, each owed at least one item.
            let later = count - 1 - c;
            let left = n - chosen.len();
            let share = if later == 0 {
                left
            } else {
                ((idx.len() * n) as f64 / total as f64).round() as usize
            };
            let share = share.clamp(1, idx.len()).min(left.saturating_sub(later));
            rng.shuffle(&mut idx);
            chosen.extend_from_slice(&idx[..share]);
        }
        chosen.sort_unstable();
        Dataset {
            name: self.name.clone(),
            items: chosen.into_iter().map(|i| self.items[i].clone()).collect(),
        }
    }

    /// Seeded split stratified by class: `round(n * test_fraction)` items of each class go to
    /// the second set. Both sets come out shuffled. `split(seed, 0.1)` is the 90/10 split.
    pub fn split(&self, seed: u64, test_fraction: f64) -> (Dataset, Dataset) {
        let frac = test_fraction.clamp(0.0, 1.0);
        let mut rng = SplitMix64::new(seed);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for label in [DESIRABLE, UNDESIRABLE] {
            let mut items: Vec<(String, u8)> = self
                .items
                .iter()
                .filter(|(_, l)| *l == label)
                .cloned()
                .collect();
            rng.shuffle(&mut items);
            let n_test = (items.len() as f64 * frac).round() as usize;
            test.extend(items.drain(..n_test));
            train.extend(items);
        }
        rng.shuffle(&mut train);
        rng.shuffle(&mut test);
        (
            Dataset {
                name: format!("{}/train", self.name),
                items: train,
            },
            Dataset {
                name: format!("{}/test", self.name),
                items: test,
            },
        )
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014; the seeding generator of xoshiro): state += the
/// golden-ratio increment, output is the state mixed by two xor-shift-multiplies.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0) by multiply-shift; the bias, below n / 2^64, is negligible.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle, last position first.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Non-blank lines of a UTF-8 text file with their 1-based line numbers, line endings
/// (`\n` or `\r\n`) removed. Errors on a missing or empty file and on invalid UTF-8,
/// naming the file and line.
pub(crate) fn read_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not valid UTF-8 (byte {} of the line)",
                path.display(),
                i + 1,
                e.valid_up_to() + 1
            )
        })?;
        if !line.trim().is_empty() {
            lines.push((i + 1, line.to_string()));
        }
    }
    if lines.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(lines)
}

/// A file's stem, used to name what was loaded from it.
pub(crate) fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(n0: usize, n1: usize) -> Dataset {
        let mut items: Vec<(String, u8)> = (0..n0).map(|i| (format!("good {i}"), 0)).collect();
        items.extend((0..n1).map(|i| (format!("bad {i}"), 1)));
        Dataset::new("t", items).unwrap()
    }

    #[test]
    fn splitmix_matches_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn shuffle_is_deterministic_per_seed_and_a_permutation() {
        let d = ds(50, 50);
        let (a, b, c) = (d.shuffled(7), d.shuffled(7), d.shuffled(8));
        assert_eq!(a, b);
        assert_ne!(a.items, c.items);
        assert_ne!(a.items, d.items);
        let mut sorted = a.items.clone();
        sorted.sort();
        let mut orig = d.items.clone();
        orig.sort();
        assert_eq!(sorted, orig);
    }

    #[test]
    fn split_is_stratified_disjoint_and_deterministic() {
        let d = ds(100, 30);
        let (train, test) = d.split(3, 0.1);
        assert_eq!(test.counts(), [10, 3]);
        assert_eq!(train.counts(), [90, 27]);
        assert_eq!((train.clone(), test.clone()), d.split(3, 0.1));
        let tr: HashSet<_> = train.items.iter().collect();
        assert!(test.items.iter().all(|i| !tr.contains(i)));
    }

    #[test]
    fn balanced_downsamples_the_larger_class() {
        let d = ds(100, 30);
        let b = d.balanced(1);
        assert_eq!(b.counts(), [30, 30]);
        assert_eq!(b.items.iter().filter(|(_, l)| *l == 1).count(), 30);
        assert_ne!(b, d.balanced(2));
        assert_eq!(b, d.balanced(1));
    }

    #[test]
    fn subsample_keeps_class_shares_order_and_seed() {
        let d = ds(300, 100);
        let s = d.subsample(40, 3);
        assert_eq!(s.counts(), [30, 10]);
        assert_eq!(s, d.subsample(40, 3));
        assert_ne!(s, d.subsample(40, 4));
        // Kept items keep their original order (a subsequence of the dataset).
        let mut rest = d.items.iter();
        assert!(s.items.iter().all(|it| rest.any(|x| x == it)));
        assert_eq!(d.balanced(0).subsample(20, 1).counts(), [10, 10]);
        assert_eq!(d.subsample(400, 3), d);
        assert_eq!(d.subsample(1000, 3), d);
        // A rare class keeps at least one item, and rounding never exceeds n.
        assert_eq!(ds(1000, 1).subsample(10, 0).counts(), [9, 1]);
        assert_eq!(ds(2, 2).subsample(3, 0).items.len(), 3);
        for (n0, n1, n) in [(5, 5, 3), (7, 3, 5), (1, 9, 2)] {
            let got = ds(n0, n1).subsample(n, 1);
            assert_eq!(got.items.len(), n, "{n0}+{n1} -> {n}");
        }
    }

    #[test]
    fn content_hash_depends_on_texts_labels_and_order_only() {
        let d = ds(3, 2);
        let mut renamed = d.clone();
        renamed.name = "other".into();
        assert_eq!(d.content_hash(), renamed.content_hash());
        let mut flipped = d.clone();
        flipped.items[0].1 = 1;
        assert_ne!(d.content_hash(), flipped.content_hash());
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        let x = Dataset::new("x", vec![("ab".into(), 0), ("c".into(), 1)]).unwrap();
        let y = Dataset::new("x", vec![("a".into(), 0), ("bc".into(), 1)]).unwrap();
        assert_ne!(x.content_hash(), y.content_hash());
    }

    #[test]
    fn single_class_and_bad_labels_are_errors() {
        let e = Dataset::new("one", vec![("a".into(), 1), ("b".into(), 1)]).unwrap_err();
        assert!(e.to_string().contains("only class 1"), "{e}");
        assert!(Dataset::new("bad", vec![("a".into(), 0), ("b".into(), 2)]).is_err());
        assert!(Dataset::new("empty", vec![]).is_err());
    }
}
