//! Tensor names: llama.cpp's GGUF names and Hugging Face's, from one table.
//!
//! Gemma 3 reuses one Hugging Face name with another meaning: its
//! `post_attention_layernorm` normalises the attention *output*, while Llama's is the norm
//! before the MLP (`ffn_norm`). Names are therefore mapped within a [`Layout`].

/// `(GGUF part, Hugging Face part)` of every per-block tensor of a Llama-family model.
const BLOCK_PARTS: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
];

/// Gemma 3's block parts that differ from [`BLOCK_PARTS`] (looked up first).
const GEMMA_PARTS: &[(&str, &str)] = &[
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_attention_norm", "post_attention_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
];

/// Which naming convention a model's Hugging Face tensors follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Llama, Mistral, Qwen2.
    #[default]
    Llama,
    /// Gemma 3 (four norms per block).
    Gemma,
}

impl Layout {
    fn parts(self) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
        let extra: &[(&str, &str)] = match self {
            Layout::Llama => &[],
            Layout::Gemma => GEMMA_PARTS,
        };
        extra.iter().chain(
            BLOCK_PARTS
                .iter()
                .filter(move |(g, h)| !extra.iter().any(|(eg, eh)| eg == g || eh == h)),
        )
    }
}

/// `(GGUF name, Hugging Face name)` of the tensors outside the blocks.
const GLOBAL: &[(&str, &str)] = &[
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// Maps a GGUF role name without suffix (`blk.3.ffn_gate`, `token_embd`) to the Hugging
/// Face name without suffix (`model.layers.3.mlp.gate_proj`), Llama layout. Unknown parts
/// pass through.
pub fn hf_name(role: &str) -> String {
    hf_name_in(Layout::Llama, role)
}

/// [`hf_name`] within a given layout.
pub fn hf_name_in(layout: Layout, role: &str) -> String {
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == role) {
        return (*hf).to_string();
    }
    let rest = role.strip_prefix("blk.").unwrap_or(role);
    let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
    let hf_part = layout
        .parts()
        .find(|(g, _)| *g == part)
        .map_or(part, |(_, h)| *h);
    format!("model.layers.{layer}.{hf_part}")
}

/// Maps a full Hugging Face tensor name (`model.layers.3.mlp.gate_proj.weight`) to its GGUF
/// name (`blk.3.ffn_gate.weight`), Llama layout, or `None` for a tensor llama.cpp's layout
/// does not have.
pub fn gguf_name(hf: &str) -> Option<String> {
    gguf_name_in(Layout::Llama, hf)
}

/// [`gguf_name`] within a given layout.
pub fn gguf_name_in(layout: Layout, hf: &str) -> Option<String> {
    let (stem, suffix) = hf.rsplit_once('.')?;
    if let Some((g, _)) = GLOBAL.iter().find(|(_, h)| *h == stem) {
        return Some(format!("{g}.{suffix}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let (g, _) = layout.parts().find(|(_, h)| *h == tail)?;
    Some(format!("blk.{n}.{g}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        assert_eq!(hf_name("blk.3.ffn_gate"), "model.layers.3.mlp.gate_proj");
        assert_eq!(hf_name("blk.12.attn_k"), "model.layers.12.self_attn.k_proj");
        assert_eq!(
            hf_name("blk.0.ffn_norm"),
            "model.layers.0.post_attention_layernorm"
        );
        assert_eq!(hf_name("token_embd"), "model.embed_tokens");
        assert_eq!(hf_name("output"), "lm_head");
        assert_eq!(
            gguf_name("model.layers.3.mlp.gate_proj.weight").as_deref(),
            Some("blk.3.ffn_gate.weight")
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.q_proj.bias").as_deref(),
            Some("blk.0.attn_q.bias")
        );
        assert_eq!(
            gguf_name("lm_head.weight").as_deref(),
            Some("output.weight")
        );
        assert_eq!(gguf_name("model.layers.0.rotary_emb.inv_freq"), None);
        for (g, _) in BLOCK_PARTS {
            let role = format!("blk.7.{g}");
            assert_eq!(
                gguf_name(&format!("{}.weight", hf_name(&role))),
                Some(format!("{role}.weight"))
            );
        }
    }

    #[test]
    fn gemma_layout_renames_its_four_norms() {
        let g = Layout::Gemma;
        assert_eq!(
            hf_name_in(g, "blk.2.ffn_norm"),
            "model.layers.2.pre_feedforward_layernorm"
        );
        assert_eq!(
            hf_name_in(g, "blk.2.post_attention_norm"),
            "model.layers.2.post_attention_layernorm"
        );
        assert_eq!(
            gguf_name_in(g, "model.layers.2.post_attention_layernorm.weight").as_deref(),
            Some("blk.2.post_attention_norm.weight")
        );
        assert_eq!(
            gguf_name_in(g, "model.layers.2.self_attn.q_norm.weight").as_deref(),
            Some("blk.2.attn_q_norm.weight")
        );
        let roles = [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "attn_q_norm",
            "attn_k_norm",
            "post_attention_norm",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
            "post_ffw_norm",
        ];
        let mut seen = std::collections::HashSet::new();
        for r in roles {
            let role = format!("blk.0.{r}");
            let hf = hf_name_in(g, &role);
            assert!(seen.insert(hf.clone()), "{hf} used twice");
            assert_eq!(
                gguf_name_in(g, &format!("{hf}.weight")),
                Some(format!("{role}.weight"))
            );
        }
    }
}
