//! A SentencePiece-style (score-merge) tokenizer built from GGUF metadata
//! (`tokenizer.ggml.model = "llama"`: tokens, scores, token types), giving the ids
//! llama.cpp's SPM tokenizer gives.
//!
//! Encoding, as llama.cpp does it:
//! 1. special tokens (control, user-defined, unknown) are cut out of the text whole,
//!    longest first;
//! 2. in each remaining piece, spaces become `▁` (and a `▁` is prepended when the
//!    vocabulary asks for a space prefix and the piece follows a special token or starts
//!    the text);
//! 3. the piece is split into UTF-8 characters, and adjacent symbols are merged greedily,
//!    always the pair whose merged text is the vocabulary token with the highest score
//!    (leftmost on ties);
//! 4. a final symbol that is not a token is written as its bytes (`<0xNN>` tokens).

use anyhow::{bail, Result};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// The vocabulary and the rules to encode and decode with it.
pub struct Spm {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    ids: HashMap<String, u32>,
    /// Tokens cut out before merging, longest text first.
    specials: Vec<u32>,
    bytes: [Option<u32>; 256],
    add_space_prefix: bool,
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// A run of the text: `start..start + len` bytes, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// Builds the tokenizer; `types` default to normal when the file has none.
    pub fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        add_space_prefix: bool,
    ) -> Result<Self> {
        let n = tokens.len();
        if scores.len() != n || types.len() != n {
            bail!(
                "tokenizer.ggml.scores ({}) / token_type ({}) do not match the {n} tokens",
                scores.len(),
                types.len()
            );
        }
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // Later duplicates win, as in llama.cpp's `token_to_id` map.
            ids.insert(t.clone(), i as u32);
        }
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                matches!(types[i as usize], CONTROL | USER_DEFINED | UNKNOWN)
                    && !tokens[i as usize].is_empty()
            })
            .collect();
        specials.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied();
        }
        Ok(Spm {
            tokens,
            scores,
            types,
            ids,
            specials,
            bytes,
            add_space_prefix,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True for an empty vocabulary.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The text of a token as stored (with `▁` for spaces).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a token text.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Encodes text (special-token text maps to its id); no BOS is added here.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut prev_special = true;
        for frag in self.partition(text) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    let mut s = String::with_capacity(t.len() + 3);
                    if self.add_space_prefix && prev_special {
                        s.push(' ');
                    }
                    s.push_str(t);
                    self.encode_piece(&s.replace(' ', "\u{2581}"), &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Cuts special tokens out of the text, longest first; what remains stays text.
    fn partition<'a>(&self, text: &'a str) -> Vec<Fragment<'a>> {
        let mut frags = vec![Fragment::Text(text)];
        for &id in &self.specials {
            let tok = self.tokens[id as usize].as_str();
            if !text.contains(tok) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = rest.find(tok) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + tok.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }

    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut syms: Vec<Symbol> = Vec::new();
        for (i, (start, c)) in text.char_indices().enumerate() {
            syms.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                syms[i - 1].next = Some(i);
            }
        }
        if syms.is_empty() {
            return Ok(());
        }
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<Bigram>, syms: &[Symbol], l: usize, r: usize| {
            let (a, b) = (syms[l], syms[r]);
            let merged = &text[a.start..b.start + b.len];
            if let Some(&id) = self.ids.get(merged) {
                heap.push(Bigram {
                    left: l,
                    right: r,
                    score: self.scores[id as usize],
                    size: merged.len(),
                });
            }
        };
        for i in 1..syms.len() {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(bg) = heap.pop() {
            let (l, r) = (syms[bg.left], syms[bg.right]);
            // Stale candidates: one side was merged away or grew since it was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            syms[bg.left].len += r.len;
            syms[bg.right].len = 0;
            syms[bg.left].next = r.next;
            if let Some(n) = r.next {
                syms[n].prev = Some(bg.left);
            }
            if let Some(p) = syms[bg.left].prev {
                push(&mut heap, &syms, p, bg.left);
            }
            if let Some(n) = syms[bg.left].next {
                push(&mut heap, &syms, bg.left, n);
            }
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let s = syms[i];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        match self.bytes[b as usize] {
                            Some(id) => out.push(id),
                            None => bail!(
                                "the vocabulary has no token for {piece:?} and no byte token <0x{b:02X}>"
                            ),
                        }
                    }
                }
            }
            at = s.next;
        }
        Ok(())
    }

    /// Decodes ids as llama.cpp renders them: `▁` → space, byte tokens → bytes, control
    /// tokens dropped when `skip_special` is set (kept as their text otherwise).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(text) = self.tokens.get(id as usize) else {
                bail!("token id {id} outside the vocabulary of {}", self.len());
            };
            match self.types[id as usize] {
                CONTROL if skip_special => {}
                CONTROL | USER_DEFINED | UNKNOWN => bytes.extend_from_slice(text.as_bytes()),
                BYTE => bytes.push(byte_value(text).unwrap_or(b'?')),
                NORMAL => bytes.extend_from_slice(text.replace('\u{2581}', " ").as_bytes()),
                // Unused and undefined types render as nothing, as in llama.cpp.
                _ => {}
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// True for control tokens.
    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&CONTROL)
    }
}

enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// The byte of a `<0xNN>` token.
fn byte_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Spm {
        let mut tokens: Vec<String> = [
            "<unk>", "<bos>", "<eos>", "▁", "a", "b", "c", "ab", "▁ab", "bc", "<ctl>",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut scores = vec![0.0, 0.0, 0.0, -1.0, -2.0, -2.0, -2.0, -1.5, -0.5, -1.0, 0.0];
        let mut types = vec![2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            types.push(6);
        }
        Spm::new(tokens, scores, types, false).unwrap()
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let t = toy();
        // "abc": "bc" (-1.0) beats "ab" (-1.5), leaving a + bc.
        assert_eq!(t.encode("abc").unwrap(), vec![4, 9]);
        // " ab": "▁a" is no token; "ab" merges, then "▁ab" (-0.5).
        assert_eq!(t.encode(" ab").unwrap(), vec![8]);
        // "é" is not in the vocabulary: its two UTF-8 bytes.
        let e = t.encode("é").unwrap();
        assert_eq!(e, vec![11 + 0xC3, 11 + 0xA9]);
        assert_eq!(t.decode(&e, false).unwrap(), "é");
        assert_eq!(
            t.decode(&t.encode(" ab c").unwrap(), false).unwrap(),
            " ab c"
        );
    }

    #[test]
    fn control_tokens_are_cut_out_and_skippable() {
        let t = toy();
        let ids = t.encode("a<ctl>b").unwrap();
        assert_eq!(ids, vec![4, 10, 5]);
        assert_eq!(t.decode(&ids, true).unwrap(), "ab");
        assert_eq!(t.decode(&ids, false).unwrap(), "a<ctl>b");
    }
}
