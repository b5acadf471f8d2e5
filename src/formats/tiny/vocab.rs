//! The tiny models' tokenizer: a byte-level BPE (GPT-2 style) with 256 byte tokens, a few
//! dozen English merges and ChatML special tokens, as GGUF metadata and as `tokenizer.json`.

use serde_json::{json, Value};

/// Special tokens, ids 0.. (as in SmolLM2: `<|im_start|>` is BOS, `<|im_end|>` is EOS).
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// Id of the beginning-of-sequence token.
pub const BOS_ID: u32 = 1;
/// Id of the end-of-sequence token.
pub const EOS_ID: u32 = 2;

/// ChatML, the template SmolLM2-Instruct and Qwen2 use (without a default system prompt).
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] \
+ '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}\
{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Merges in priority order, in GPT-2's byte-to-unicode alphabet (`Ġ` is a space).
const MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("r", "e"),
    ("o", "n"),
    ("Ġt", "he"),
    ("e", "r"),
    ("Ġ", "a"),
    ("a", "t"),
    ("Ġ", "s"),
    ("e", "n"),
    ("o", "r"),
    ("Ġ", "w"),
    ("i", "s"),
    ("Ġ", "o"),
    ("i", "t"),
    ("o", "u"),
    ("Ġ", "c"),
    ("e", "s"),
    ("in", "g"),
    ("Ġ", "b"),
    ("Ġ", "f"),
    ("Ġ", "m"),
    ("a", "n"),
    ("Ġ", "p"),
    ("e", "d"),
    ("Ġ", "h"),
    ("l", "l"),
    ("a", "r"),
    ("Ġ", "d"),
    ("a", "l"),
    ("l", "e"),
    ("Ġ", "i"),
    ("Ġo", "f"),
    ("Ġa", "n"),
    ("Ġan", "d"),
    ("Ġt", "o"),
    ("Ġ", "y"),
    ("Ġy", "ou"),
    ("H", "e"),
    ("He", "ll"),
    ("Hell", "o"),
    ("Ġw", "or"),
    ("l", "d"),
    ("Ġwor", "ld"),
];

/// GPT-2's reversible byte → printable character map, in GPT-2's vocabulary order.
pub fn byte_chars() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).expect("valid char")))
        .collect()
}

/// The vocabulary: tokens by id, merges as `"a b"`, and llama.cpp token types
/// (1 normal, 3 control).
pub struct Vocab {
    /// Token strings by id.
    pub tokens: Vec<String>,
    /// Merges, highest priority first, as `"left right"`.
    pub merges: Vec<String>,
    /// llama.cpp token types by id.
    pub token_types: Vec<i32>,
}

/// Builds the tiny vocabulary (304 tokens).
pub fn vocab() -> Vocab {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend(byte_chars().into_iter().map(|(_, c)| c.to_string()));
    let mut merges = Vec::new();
    for (a, b) in MERGES {
        debug_assert!(tokens.iter().any(|t| t == a) && tokens.iter().any(|t| t == b));
        tokens.push(format!("{a}{b}"));
        merges.push(format!("{a} {b}"));
    }
    let token_types = (0..tokens.len())
        .map(|i| if i < SPECIALS.len() { 3 } else { 1 })
        .collect();
    Vocab {
        tokens,
        merges,
        token_types,
    }
}

/// A Hugging Face `tokenizer.json` for [`vocab`]: byte-level BPE with SmolLM2's
/// pre-tokenizer (single digits, then byte-level without a prefix space).
pub fn tokenizer_json(v: &Vocab) -> Value {
    let vocab: serde_json::Map<String, Value> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
             "use_regex": true}
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false,
                           "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": v.merges}
    })
}
