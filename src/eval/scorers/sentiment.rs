//! Sentiment: a port of VADER (`vaderSentiment==3.3.2`, Hutto & Gilbert 2014).
//!
//! No maintained VADER crate exists on crates.io (`vader_sentiment` 0.1.1 is a 2019 port of an
//! older VADER), so this is a line-by-line port of `SentimentIntensityAnalyzer.polarity_scores`
//! of version 3.3.2, quirks included (the `but` rule re-scales the *first* sentiment equal to
//! each value, as Python's `list.index` does). The lexicons are read at run time from the
//! sdist's `vaderSentiment/vader_lexicon.txt` and `vaderSentiment/emoji_utf8_lexicon.txt`;
//! they are not part of this repository.
//!
//! Python string semantics are reproduced where they matter: `str.split()`/`strip()` whitespace
//! (Unicode whitespace plus U+001C..U+001F), `str.strip(string.punctuation)` (ASCII punctuation),
//! `str.lower()` (full Unicode lower-casing) and `str.isupper()`.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
const C_INCR: f64 = 0.733;
const N_SCALAR: f64 = -0.74;

#[rustfmt::skip]
const NEGATE: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt", "ain't", "aren't", "can't",
    "couldn't", "daren't", "didn't", "doesn't", "dont", "hadnt", "hasnt", "havent", "isnt", "mightnt",
    "mustnt", "neither", "don't", "hadn't", "hasn't", "haven't", "isn't", "mightn't", "mustn't", "neednt",
    "needn't", "never", "none", "nope", "nor", "not", "nothing", "nowhere", "oughtnt", "shant", "shouldnt",
    "uhuh", "wasnt", "werent", "oughtn't", "shan't", "shouldn't", "uh-uh", "wasn't", "weren't", "without",
    "wont", "wouldnt", "won't", "wouldn't", "rarely", "seldom", "despite",
];

#[rustfmt::skip]
const BOOSTERS_INCR: &[&str] = &[
    "absolutely", "amazingly", "awfully", "completely", "considerable", "considerably", "decidedly",
    "deeply", "effing", "enormous", "enormously", "entirely", "especially", "exceptional", "exceptionally",
    "extreme", "extremely", "fabulously", "flipping", "flippin", "frackin", "fracking", "fricking",
    "frickin", "frigging", "friggin", "fully", "fuckin", "fucking", "fuggin", "fugging", "greatly", "hella",
    "highly", "hugely", "incredible", "incredibly", "intensely", "major", "majorly", "more", "most",
    "particularly", "purely", "quite", "really", "remarkably", "so", "substantially", "thoroughly", "total",
    "totally", "tremendous", "tremendously", "uber", "unbelievably", "unusually", "utter", "utterly", "very",
];

#[rustfmt::skip]
const BOOSTERS_DECR: &[&str] = &[
    "almost", "barely", "hardly", "just enough", "kind of", "kinda", "kindof", "kind-of", "less", "little",
    "marginal", "marginally", "occasional", "occasionally", "partly", "scarce", "scarcely", "slight",
    "slightly", "somewhat", "sort of", "sorta", "sortof", "sort-of",
];

#[rustfmt::skip]
const SPECIAL_CASES: &[(&str, f64)] = &[
    ("the shit", 3.0), ("the bomb", 3.0), ("bad ass", 1.5), ("badass", 1.5), ("bus stop", 0.0),
    ("yeah right", -2.0), ("kiss of death", -1.5), ("to die for", 3.0), ("beating heart", 3.5),
];

/// VADER scores of one text, unrounded (Python rounds them in `polarity_scores`; see
/// [`Polarity::rounded`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polarity {
    /// Share of negative weight, in [0, 1].
    pub neg: f64,
    /// Share of neutral words, in [0, 1].
    pub neu: f64,
    /// Share of positive weight, in [0, 1].
    pub pos: f64,
    /// Normalised sum of valences, in [-1, 1]; VADER's usual thresholds: ≥ 0.05 positive,
    /// ≤ −0.05 negative.
    pub compound: f64,
}

impl Polarity {
    /// Rounded as the Python package returns them: neg/neu/pos to 3 decimals, compound to 4.
    pub fn rounded(&self) -> Polarity {
        Polarity {
            neg: round_to(self.neg, 3),
            neu: round_to(self.neu, 3),
            pos: round_to(self.pos, 3),
            compound: round_to(self.compound, 4),
        }
    }
}

/// Round to `digits` decimals from the exact binary value, as Python's `round(x, n)` does.
fn round_to(x: f64, digits: usize) -> f64 {
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// The VADER analyser with its lexicons.
#[derive(Debug, Clone)]
pub struct Vader {
    lexicon: HashMap<String, f64>,
    emojis: HashMap<char, String>,
    boosters: HashMap<&'static str, f64>,
    special: HashMap<&'static str, f64>,
}

impl Vader {
    /// Load from the two lexicon files of the `vadersentiment==3.3.2` sdist.
    pub fn load(lexicon: impl AsRef<Path>, emoji_lexicon: impl AsRef<Path>) -> Result<Self> {
        let (lexicon, emoji_lexicon) = (lexicon.as_ref(), emoji_lexicon.as_ref());
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .with_context(|| format!("reading VADER lexicon {}", p.display()))
        };
        let lex = parse_lexicon(&read(lexicon)?)
            .with_context(|| format!("VADER lexicon {}", lexicon.display()))?;
        let emojis = parse_emoji_lexicon(&read(emoji_lexicon)?)
            .with_context(|| format!("VADER emoji lexicon {}", emoji_lexicon.display()))?;
        Ok(Self::from_parts(lex, emojis))
    }

    /// Load from a directory holding `vader_lexicon.txt` and `emoji_utf8_lexicon.txt` (the
    /// `vaderSentiment/` folder of the sdist).
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Self::load(
            dir.join("vader_lexicon.txt"),
            dir.join("emoji_utf8_lexicon.txt"),
        )
    }

    fn from_parts(lexicon: HashMap<String, f64>, emojis: HashMap<char, String>) -> Self {
        let boosters = BOOSTERS_INCR
            .iter()
            .map(|w| (*w, B_INCR))
            .chain(BOOSTERS_DECR.iter().map(|w| (*w, B_DECR)))
            .collect();
        Self {
            lexicon,
            emojis,
            boosters,
            special: SPECIAL_CASES.iter().copied().collect(),
        }
    }

    /// Compound score of `text`, unrounded.
    pub fn compound(&self, text: &str) -> f64 {
        self.polarity_scores(text).compound
    }

    /// VADER scores of `text`, unrounded.
    pub fn polarity_scores(&self, text: &str) -> Polarity {
        // Emojis become their descriptions, separated from a preceding non-space.
        let mut no_emoji = String::with_capacity(text.len());
        let mut prev_space = true;
        for c in text.chars() {
            if let Some(desc) = self.emojis.get(&c) {
                if !prev_space {
                    no_emoji.push(' ');
                }
                no_emoji.push_str(desc);
                prev_space = false;
            } else {
                no_emoji.push(c);
                prev_space = c == ' ';
            }
        }
        let text = no_emoji.trim_matches(is_py_space);
        let words: Vec<&str> = text
            .split(is_py_space)
            .filter(|w| !w.is_empty())
            .map(strip_punc_if_word)
            .collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        let cap_diff = allcap_differential(&words);

        let mut sentiments: Vec<f64> = Vec::with_capacity(words.len());
        for i in 0..words.len() {
            let skip = self.boosters.contains_key(lower[i].as_str())
                || (i + 1 < words.len() && lower[i] == "kind" && lower[i + 1] == "of");
            sentiments.push(if skip {
                0.0
            } else {
                self.sentiment_valence(&words, &lower, i, cap_diff)
            });
        }
        but_check(&lower, &mut sentiments);
        score_valence(&sentiments, text)
    }

    fn in_lex(&self, w: &str) -> bool {
        self.lexicon.contains_key(w)
    }

    fn sentiment_valence(&self, words: &[&str], lower: &[String], i: usize, cap_diff: bool) -> f64 {
        let Some(&base) = self.lexicon.get(&lower[i]) else {
            return 0.0;
        };
        let mut valence = base;
        if lower[i] == "no" && i + 1 != words.len() && self.in_lex(&lower[i + 1]) {
            valence = 0.0;
        }
        if (i > 0 && lower[i - 1] == "no")
            || (i > 1 && lower[i - 2] == "no")
            || (i > 2 && lower[i - 3] == "no" && (lower[i - 1] == "or" || lower[i - 1] == "nor"))
        {
            valence = base * N_SCALAR;
        }
        if is_upper(words[i]) && cap_diff {
            valence += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        for start_i in 0..3 {
            if i > start_i && !self.in_lex(&lower[i - (start_i + 1)]) {
                let mut s = self.scalar_inc_dec(words[i - (start_i + 1)], valence, cap_diff);
                if start_i == 1 && s != 0.0 {
                    s *= 0.95;
                }
                if start_i == 2 && s != 0.0 {
                    s *= 0.9;
                }
                valence += s;
                valence = negation_check(valence, lower, start_i, i);
                if start_i == 2 {
                    valence = self.special_idioms_check(valence, lower, i);
                }
            }
        }
        self.least_check(valence, lower, i)
    }

    fn scalar_inc_dec(&self, word: &str, valence: f64, cap_diff: bool) -> f64 {
        let Some(&b) = self.boosters.get(word.to_lowercase().as_str()) else {
            return 0.0;
        };
        let mut scalar = if valence < 0.0 { -b } else { b };
        if is_upper(word) && cap_diff {
            scalar += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        scalar
    }

    fn least_check(&self, valence: f64, lower: &[String], i: usize) -> f64 {
        if i > 1 && !self.in_lex(&lower[i - 1]) && lower[i - 1] == "least" {
            if lower[i - 2] != "at" && lower[i - 2] != "very" {
                return valence * N_SCALAR;
            }
        } else if i > 0 && !self.in_lex(&lower[i - 1]) && lower[i - 1] == "least" {
            return valence * N_SCALAR;
        }
        valence
    }

    /// Only called with `i >= 3`.
    fn special_idioms_check(&self, mut valence: f64, w: &[String], i: usize) -> f64 {
        let onezero = format!("{} {}", w[i - 1], w[i]);
        let twoonezero = format!("{} {} {}", w[i - 2], w[i - 1], w[i]);
        let twoone = format!("{} {}", w[i - 2], w[i - 1]);
        let threetwoone = format!("{} {} {}", w[i - 3], w[i - 2], w[i - 1]);
        let threetwo = format!("{} {}", w[i - 3], w[i - 2]);
        for seq in [&onezero, &twoonezero, &twoone, &threetwoone, &threetwo] {
            if let Some(&v) = self.special.get(seq.as_str()) {
                valence = v;
                break;
            }
        }
        if w.len() - 1 > i {
            if let Some(&v) = self.special.get(format!("{} {}", w[i], w[i + 1]).as_str()) {
                valence = v;
            }
        }
        if w.len() - 1 > i + 1 {
            if let Some(&v) = self
                .special
                .get(format!("{} {} {}", w[i], w[i + 1], w[i + 2]).as_str())
            {
                valence = v;
            }
        }
        for ngram in [&threetwoone, &threetwo, &twoone] {
            if let Some(&b) = self.boosters.get(ngram.as_str()) {
                valence += b;
            }
        }
        valence
    }
}

fn negated(word: &str) -> bool {
    let w = word.to_lowercase();
    NEGATE.contains(&w.as_str()) || w.contains("n't")
}

fn negation_check(valence: f64, w: &[String], start_i: usize, i: usize) -> f64 {
    let so_this = |s: &str| s == "so" || s == "this";
    match start_i {
        0 if negated(&w[i - 1]) => valence * N_SCALAR,
        1 => {
            if w[i - 2] == "never" && so_this(&w[i - 1]) {
                valence * 1.25
            } else if w[i - 2] == "without" && w[i - 1] == "doubt" {
                valence
            } else if negated(&w[i - 2]) {
                valence * N_SCALAR
            } else {
                valence
            }
        }
        2 => {
            // Python precedence: `a and (b or c) or (d or e)` is `(a and (b or c)) or (d or e)`.
            if (w[i - 3] == "never" && so_this(&w[i - 2])) || so_this(&w[i - 1]) {
                valence * 1.25
            } else if w[i - 3] == "without" && (w[i - 2] == "doubt" || w[i - 1] == "doubt") {
                valence
            } else if negated(&w[i - 3]) {
                valence * N_SCALAR
            } else {
                valence
            }
        }
        _ => valence,
    }
}

/// Sentiments before the first "but" are halved, after it multiplied by 1.5. Python finds the
/// position with `sentiments.index(value)` (first equal value) while rewriting the list; that
/// is reproduced so scores match the package.
fn but_check(lower: &[String], sentiments: &mut [f64]) {
    let Some(bi) = lower.iter().position(|w| w == "but") else {
        return;
    };
    for k in 0..sentiments.len() {
        let v = sentiments[k];
        let si = sentiments.iter().position(|&x| x == v).unwrap_or(k);
        if si < bi {
            sentiments[si] = v * 0.5;
        } else if si > bi {
            sentiments[si] = v * 1.5;
        }
    }
}

fn score_valence(sentiments: &[f64], text: &str) -> Polarity {
    if sentiments.is_empty() {
        return Polarity {
            neg: 0.0,
            neu: 0.0,
            pos: 0.0,
            compound: 0.0,
        };
    }
    let mut sum_s: f64 = sentiments.iter().sum();
    let ep = text.matches('!').count().min(4) as f64 * 0.292;
    let qm_count = text.matches('?').count();
    let qm = match qm_count {
        0 | 1 => 0.0,
        2 | 3 => qm_count as f64 * 0.18,
        _ => 0.96,
    };
    let punct = ep + qm;
    if sum_s > 0.0 {
        sum_s += punct;
    } else if sum_s < 0.0 {
        sum_s -= punct;
    }
    let compound = (sum_s / (sum_s * sum_s + 15.0).sqrt()).clamp(-1.0, 1.0);
    let (mut pos_sum, mut neg_sum, mut neu_count) = (0.0f64, 0.0f64, 0usize);
    for &s in sentiments {
        if s > 0.0 {
            pos_sum += s + 1.0;
        }
        if s < 0.0 {
            neg_sum += s - 1.0;
        }
        if s == 0.0 {
            neu_count += 1;
        }
    }
    if pos_sum > neg_sum.abs() {
        pos_sum += punct;
    } else if pos_sum < neg_sum.abs() {
        neg_sum -= punct;
    }
    let total = pos_sum + neg_sum.abs() + neu_count as f64;
    Polarity {
        neg: (neg_sum / total).abs(),
        neu: (neu_count as f64 / total).abs(),
        pos: (pos_sum / total).abs(),
        compound,
    }
}

/// Python's `str.isspace()` for one character.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `token.strip(string.punctuation)`, unless that leaves ≤ 2 characters (likely an emoticon).
fn strip_punc_if_word(token: &str) -> &str {
    let stripped = token.trim_matches(|c: char| c.is_ascii_punctuation());
    if stripped.chars().count() <= 2 {
        token
    } else {
        stripped
    }
}

/// Python's `str.isupper()`: at least one cased character, and no lower- or title-case one.
fn is_upper(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        let title =
            !c.is_uppercase() && !c.is_lowercase() && c.to_lowercase().ne(std::iter::once(c));
        if c.is_lowercase() || title {
            return false;
        }
        if c.is_uppercase() {
            cased = true;
        }
    }
    cased
}

/// True when some but not all words are ALL CAPS.
fn allcap_differential(words: &[&str]) -> bool {
    let caps = words.iter().filter(|w| is_upper(w)).count();
    let diff = words.len() - caps;
    0 < diff && diff < words.len()
}

/// Python: `for line in text.rstrip('\n').split('\n')`, skip empty, `word, measure =
/// line.strip().split('\t')[0:2]`, later duplicates win.
fn parse_lexicon(text: &str) -> Result<HashMap<String, f64>> {
    let mut lex = HashMap::new();
    for (n, line) in text.trim_end_matches('\n').split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut fields = line.trim_matches(is_py_space).split('\t');
        let (Some(word), Some(measure)) = (fields.next(), fields.next()) else {
            bail!("line {}: expected word<TAB>rating", n + 1);
        };
        let v: f64 = measure
            .trim_matches(is_py_space)
            .parse()
            .with_context(|| format!("line {}: rating {measure:?} is not a number", n + 1))?;
        lex.insert(word.to_string(), v);
    }
    Ok(lex)
}

/// Emoji → description. Python looks emojis up one code point at a time, so entries of several
/// code points can never match and are dropped here.
fn parse_emoji_lexicon(text: &str) -> Result<HashMap<char, String>> {
    let mut map = HashMap::new();
    for (n, line) in text.trim_end_matches('\n').split('\n').enumerate() {
        let mut fields = line.trim_matches(is_py_space).split('\t');
        let (Some(emoji), Some(desc)) = (fields.next(), fields.next()) else {
            bail!("line {}: expected emoji<TAB>description", n + 1);
        };
        let mut chars = emoji.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            map.insert(c, desc.to_string());
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Vader {
        let lex =
            parse_lexicon("good\t1.9\t0.9\t[]\nbad\t-2.5\t0.6\t[]\nno\t-1.2\t0.7\t[]\n").unwrap();
        let emojis =
            parse_emoji_lexicon("😀\tgrinning face\n👍🏽\tthumbs up: medium skin tone\n").unwrap();
        Vader::from_parts(lex, emojis)
    }

    #[test]
    fn hand_computed_scores() {
        let v = tiny();
        // "good": sum 1.9, compound 1.9 / sqrt(1.9² + 15).
        let p = v.polarity_scores("good");
        assert!((p.compound - 1.9 / (1.9f64 * 1.9 + 15.0).sqrt()).abs() < 1e-12);
        assert_eq!((p.pos, p.neu, p.neg), (1.0, 0.0, 0.0));
        // "not good": negation multiplies by -0.74.
        let s = 1.9 * N_SCALAR;
        assert!((v.compound("not good") - s / (s * s + 15.0).sqrt()).abs() < 1e-12);
        // "very good!!": booster +0.293, two '!' add 2 × 0.292.
        let s = 1.9 + B_INCR + 2.0 * 0.292;
        assert!((v.compound("very good!!") - s / (s * s + 15.0).sqrt()).abs() < 1e-12);
        assert_eq!(v.polarity_scores("   ").compound, 0.0);
        assert_eq!(v.polarity_scores("").neu, 0.0);
    }

    #[test]
    fn but_rule_and_caps() {
        let v = tiny();
        // good × 0.5 before "but", bad × 1.5 after.
        let s: f64 = 1.9 * 0.5 - 2.5 * 1.5;
        assert!((v.compound("good but bad") - s / (s * s + 15.0).sqrt()).abs() < 1e-12);
        // Some but not all words in caps: "GOOD" gains 0.733.
        let s: f64 = 1.9 + C_INCR;
        assert!((v.compound("GOOD day") - s / (s * s + 15.0).sqrt()).abs() < 1e-12);
        assert!(is_upper("GOOD!") && !is_upper("Good") && !is_upper("123"));
    }

    #[test]
    fn but_rule_keeps_the_list_index_quirk() {
        let lex = parse_lexicon("good\t1.9\nmeh\t0.95\n").unwrap();
        let v = Vader::from_parts(lex, HashMap::new());
        // Python: [1.9, 0, 0.95] -> [0.95, 0, 0.95]; then `index(0.95)` finds position 0 (before
        // "but") and halves it again: [0.475, 0, 0.95], not [0.95, 0, 1.425].
        let s: f64 = 0.475 + 0.95;
        assert!((v.compound("good but meh") - s / (s * s + 15.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn emoji_and_python_string_rules() {
        let v = tiny();
        assert!(v.emojis.contains_key(&'😀') && v.emojis.len() == 1);
        assert_eq!(strip_punc_if_word("'good!'"), "good");
        assert_eq!(strip_punc_if_word(":)"), ":)");
        assert!(is_py_space('\u{1f}') && is_py_space('\u{a0}') && !is_py_space('x'));
        assert_eq!(round_to(0.12345, 3), 0.123);
        assert!(parse_lexicon("good 1.9\n").is_err());
    }
}
