//! Tensor names: llama.cpp's GGUF names and Hugging Face's, from one table.

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
];

/// `(GGUF name, Hugging Face name)` of the tensors outside the blocks.
const GLOBAL: &[(&str, &str)] = &[
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// Maps a GGUF role name without suffix (`blk.3.ffn_gate`, `token_embd`) to the Hugging
/// Face name without suffix (`model.layers.3.mlp.gate_proj`). Unknown parts pass through.
pub fn hf_name(role: &str) -> String {
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == role) {
        return (*hf).to_string();
    }
    let rest = role.strip_prefix("blk.").unwrap_or(role);
    let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
    let hf_part = BLOCK_PARTS
        .iter()
        .find(|(g, _)| *g == part)
        .map_or(part, |(_, h)| *h);
    format!("model.layers.{layer}.{hf_part}")
}

/// Maps a full Hugging Face tensor name (`model.layers.3.mlp.gate_proj.weight`) to its GGUF
/// name (`blk.3.ffn_gate.weight`), or `None` for a tensor llama.cpp's layout does not have.
pub fn gguf_name(hf: &str) -> Option<String> {
    let (stem, suffix) = hf.rsplit_once('.')?;
    if let Some((g, _)) = GLOBAL.iter().find(|(_, h)| *h == stem) {
        return Some(format!("{g}.{suffix}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let (g, _) = BLOCK_PARTS.iter().find(|(_, h)| *h == tail)?;
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
}
