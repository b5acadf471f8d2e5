//! Degeneration / fluency of continuations, without a model.
//!
//! An edit that removes a behaviour can also break the model: loops ("the the the"), junk
//! tokens, empty outputs. These statistics catch that from the text alone.
//!
//! Tokenisation rule (shared by every statistic here):
//! - a *token* is a maximal run of non-whitespace characters (`str::split_whitespace`);
//! - its *normal form* (used for n-grams) is the token lower-cased with leading and trailing
//!   punctuation (Unicode `P*` approximated by `char::is_ascii_punctuation` plus the common
//!   typographic quotes and dashes) removed; a token that is only punctuation keeps its raw form,
//!   so "!!!" repeated is still a repetition;
//! - a token is a *word* when its normal form matches `^\p{Alphabetic}+(['’-]\p{Alphabetic}+)*$`:
//!   "Hello," "don't" "well-known" are words; "123", "@@", "<|im_end|>", "http://x", "😀" are not.
//!
//! Perplexity needs the model; the runtime computes per-text negative log-likelihoods and passes
//! them to [`FluencyReport::compute`] as [`TextNll`] values.

use anyhow::{ensure, Result};
use regex::Regex;
use std::collections::HashSet;
use std::sync::OnceLock;

/// N-gram length of the repeated-n-gram rate.
pub const REPEAT_N: usize = 3;

fn word_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^\p{Alphabetic}+(?:['’-]\p{Alphabetic}+)*$").expect("static regex")
    })
}

fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '‘' | '’' | '“' | '”' | '–' | '—' | '…' | '«' | '»' | '¡' | '¿'
        )
}

/// Normal form of a token: lower-cased, surrounding punctuation removed (unless nothing is left).
pub fn normalize_token(token: &str) -> String {
    let core = token.trim_matches(is_punct);
    if core.is_empty() {
        token.to_lowercase()
    } else {
        core.to_lowercase()
    }
}

/// Whether a token counts as a word (see the module rule).
pub fn is_word(token: &str) -> bool {
    word_regex().is_match(&normalize_token(token))
}

/// Normalised tokens of a text.
pub fn tokens(text: &str) -> Vec<String> {
    text.split_whitespace().map(normalize_token).collect()
}

/// Share of the n-grams of `text` that repeat an earlier n-gram of the same text; `None` when
/// the text has fewer than `n` tokens (or `n` is 0).
pub fn repeated_ngram_rate(text: &str, n: usize) -> Option<f64> {
    let toks = tokens(text);
    if n == 0 || toks.len() < n {
        return None;
    }
    let mut seen = HashSet::new();
    let grams = toks.windows(n);
    let total = grams.len();
    let repeats = grams.filter(|g| !seen.insert(*g)).count();
    Some(repeats as f64 / total as f64)
}

/// Share of a text's tokens that are not words; `None` for a text without tokens.
pub fn non_word_share(text: &str) -> Option<f64> {
    let toks: Vec<&str> = text.split_whitespace().collect();
    if toks.is_empty() {
        return None;
    }
    Some(toks.iter().filter(|t| !is_word(t)).count() as f64 / toks.len() as f64)
}

/// Distinct-n over a set of texts (Li et al. 2016): unique n-grams / all n-grams, n-grams taken
/// within each text; `None` when there is no n-gram at all.
pub fn distinct_n<S: AsRef<str>>(texts: &[S], n: usize) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let mut unique: HashSet<Vec<String>> = HashSet::new();
    let mut total = 0usize;
    for t in texts {
        let toks = tokens(t.as_ref());
        for g in toks.windows(n) {
            total += 1;
            unique.insert(g.to_vec());
        }
    }
    (total > 0).then(|| unique.len() as f64 / total as f64)
}

/// Whether a continuation is empty (nothing but whitespace).
pub fn is_empty_output(text: &str) -> bool {
    text.trim().is_empty()
}

/// Negative log-likelihood of one continuation under the base model (natural log), from the
/// runtime: the sum over its scored tokens and how many tokens were scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextNll {
    /// Sum of per-token negative log-likelihoods, in nats.
    pub nll_sum: f64,
    /// Number of tokens scored.
    pub n_tokens: usize,
}

/// Fluency statistics of a list of continuations.
#[derive(Debug, Clone, PartialEq)]
pub struct FluencyReport {
    /// Number of continuations.
    pub n_texts: usize,
    /// Share of continuations that are empty or whitespace only.
    pub empty_rate: f64,
    /// Mean over texts (with ≥ [`REPEAT_N`] tokens) of the repeated-3-gram rate.
    pub repeated_ngram_rate: Option<f64>,
    /// Distinct-1, distinct-2, distinct-3 over all continuations.
    pub distinct: [Option<f64>; 3],
    /// Share of all tokens (pooled over texts) that are not words.
    pub non_word_share: Option<f64>,
    /// Token-weighted perplexity `exp(Σ nll / Σ tokens)` under the base model, when NLLs were
    /// given and at least one token was scored.
    pub perplexity: Option<f64>,
}

impl FluencyReport {
    /// Compute the report; `nll`, when given, must hold one entry per text, finite and ≥ 0.
    pub fn compute<S: AsRef<str>>(texts: &[S], nll: Option<&[TextNll]>) -> Result<Self> {
        let n_texts = texts.len();
        let empty = texts.iter().filter(|t| is_empty_output(t.as_ref())).count();
        let rates: Vec<f64> = texts
            .iter()
            .filter_map(|t| repeated_ngram_rate(t.as_ref(), REPEAT_N))
            .collect();
        let (mut non_words, mut n_tokens) = (0usize, 0usize);
        for t in texts {
            for tok in t.as_ref().split_whitespace() {
                n_tokens += 1;
                non_words += usize::from(!is_word(tok));
            }
        }
        let perplexity = match nll {
            None => None,
            Some(v) => {
                ensure!(
                    v.len() == n_texts,
                    "{} NLL values for {n_texts} continuations",
                    v.len()
                );
                if let Some(i) = v
                    .iter()
                    .position(|x| !x.nll_sum.is_finite() || x.nll_sum < 0.0)
                {
                    anyhow::bail!(
                        "NLL of continuation {i} is {} (must be finite and ≥ 0)",
                        v[i].nll_sum
                    );
                }
                let tokens: usize = v.iter().map(|x| x.n_tokens).sum();
                let sum: f64 = v.iter().map(|x| x.nll_sum).sum();
                (tokens > 0).then(|| (sum / tokens as f64).exp())
            }
        };
        Ok(Self {
            n_texts,
            empty_rate: if n_texts == 0 {
                0.0
            } else {
                empty as f64 / n_texts as f64
            },
            repeated_ngram_rate: (!rates.is_empty())
                .then(|| rates.iter().sum::<f64>() / rates.len() as f64),
            distinct: [
                distinct_n(texts, 1),
                distinct_n(texts, 2),
                distinct_n(texts, 3),
            ],
            non_word_share: (n_tokens > 0).then(|| non_words as f64 / n_tokens as f64),
            perplexity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_non_words() {
        for w in ["Hello,", "don't", "well-known", "\"Quote\"", "café", "I’m"] {
            assert!(is_word(w), "{w}");
        }
        for w in ["123", "@@", "<|im_end|>", "http://x.com", "😀", "a1", "!!!"] {
            assert!(!is_word(w), "{w}");
        }
        assert_eq!(non_word_share("Hello 123 world !!!"), Some(0.5));
        assert_eq!(non_word_share("  "), None);
    }

    #[test]
    fn repeated_trigrams() {
        // 6 tokens, 4 trigrams: (a b c) (b c a) (c a b) (a b c): one repeat.
        assert_eq!(repeated_ngram_rate("a b c a b c", 3), Some(0.25));
        // Case and punctuation do not hide a loop.
        assert_eq!(
            repeated_ngram_rate("The cat. the cat, THE CAT", 2),
            Some(0.6)
        );
        assert_eq!(repeated_ngram_rate("one two three", 3), Some(0.0));
        assert_eq!(repeated_ngram_rate("one two", 3), None);
        assert_eq!(repeated_ngram_rate("x x x x x", 3), Some(2.0 / 3.0));
    }

    #[test]
    fn distinct_counts_within_texts() {
        assert_eq!(distinct_n(&["a b", "a c"], 1), Some(0.75));
        // Bigrams do not span texts: (a b), (a c).
        assert_eq!(distinct_n(&["a b", "a c"], 2), Some(1.0));
        assert_eq!(distinct_n(&["a"], 2), None);
    }

    #[test]
    fn report_with_and_without_nll() {
        let texts = ["a b c a b c", "", "Nice day 42"];
        let r = FluencyReport::compute(&texts, None).unwrap();
        assert_eq!(r.n_texts, 3);
        assert!((r.empty_rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.repeated_ngram_rate, Some(0.125)); // mean of 0.25 and 0.0
        assert_eq!(r.non_word_share, Some(1.0 / 9.0));
        assert_eq!(r.perplexity, None);
        let nll = [
            TextNll {
                nll_sum: 2.0,
                n_tokens: 2,
            },
            TextNll {
                nll_sum: 0.0,
                n_tokens: 0,
            },
            TextNll {
                nll_sum: 4.0,
                n_tokens: 2,
            },
        ];
        let r = FluencyReport::compute(&texts, Some(&nll)).unwrap();
        assert!((r.perplexity.unwrap() - 1.5f64.exp()).abs() < 1e-12);
        assert!(FluencyReport::compute(&texts, Some(&nll[..2])).is_err());
        let bad = [TextNll {
            nll_sum: f64::NAN,
            n_tokens: 1,
        }; 3];
        assert!(FluencyReport::compute(&texts, Some(&bad)).is_err());
    }
}
