//! The two adapter files: llama.cpp's GGUF LoRA and a PEFT folder.
//!
//! Layouts (checked against llama.cpp's `llama-adapter.cpp` and PEFT's loader by
//! `tests/surgery/adapter.rs` and `scripts/adapter_check.py`):
//! - GGUF: `lora_a` has ne = [row_len, r] (r rows of A), `lora_b` ne = [r, n_rows] (one row
//!   of B per matrix row); llama.cpp checks `base.ne[0] == a.ne[0]`, `base.ne[1] == b.ne[1]`,
//!   `a.ne[1] == b.ne[0]`, and adds `(alpha / r) · s · B(A x)`.
//! - PEFT: `lora_A.weight` [r, in], `lora_B.weight` [out, r] (PyTorch order), scaling
//!   `lora_alpha / r`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype};

use super::Adapter;
use crate::formats::ggml::GgmlType;
use crate::formats::gguf::{self, MetaValue, TensorSpec};
use crate::formats::io::write_atomic;

/// A and B of one matrix padded with zero directions to rank `r`: (A [r × d], B [n × r]).
fn padded(lr: &super::LowRank, r: usize) -> (Vec<f32>, Vec<f32>) {
    let mut a = lr.a.clone();
    a.resize(r * lr.row_len, 0.0);
    let mut b = vec![0f32; lr.n_rows * r];
    for i in 0..lr.n_rows {
        b[i * r..i * r + lr.rank].copy_from_slice(&lr.b[i * lr.rank..(i + 1) * lr.rank]);
    }
    (a, b)
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the GGUF LoRA (atomically); returns its size in bytes.
pub fn write_gguf(ad: &Adapter, out: &Path, force: bool) -> Result<u64> {
    let Some(arch) = &ad.arch else {
        bail!("the base model's llama.cpp architecture is unknown, so a GGUF adapter cannot name it (write a PEFT folder instead)");
    };
    if out.exists() && !force {
        bail!(
            "output {} already exists (use --force to overwrite)",
            out.display()
        );
    }
    let r = ad.rank();
    let s = |x: &str| MetaValue::String(x.as_bytes().to_vec());
    let metadata = vec![
        ("general.architecture".to_string(), s(arch)),
        ("general.type".to_string(), s("adapter")),
        ("general.name".to_string(), s("scalpel model-surgery edit")),
        ("adapter.type".to_string(), s("lora")),
        // alpha = r: llama.cpp's scale alpha / r · s is then the user's s alone.
        ("adapter.lora.alpha".to_string(), MetaValue::F32(r as f32)),
        (
            "scalpel.adapter".to_string(),
            s(&serde_json::to_string(&ad.summary())?),
        ),
    ];
    let mut specs = Vec::with_capacity(2 * ad.matrices.len());
    for (t, lr) in &ad.matrices {
        let base = t.gguf_name();
        specs.push(TensorSpec {
            name: format!("{base}.lora_a"),
            dims: vec![lr.row_len as u64, r as u64],
            ty: GgmlType::F32,
        });
        specs.push(TensorSpec {
            name: format!("{base}.lora_b"),
            dims: vec![r as u64, lr.n_rows as u64],
            ty: GgmlType::F32,
        });
    }
    gguf::write_gguf(out, 3, &metadata, &specs, &mut |i, _, w: &mut dyn Write| {
        let (a, b) = padded(&ad.matrices[i / 2].1, r);
        w.write_all(&f32_bytes(if i % 2 == 0 { &a } else { &b }))?;
        Ok(())
    })?;
    Ok(std::fs::metadata(out)?.len())
}

/// Writes the PEFT folder (`adapter_config.json`, `adapter_model.safetensors`, and
/// `scalpel_adapter.json` with the edit's description); each file is written to a temp file
/// and renamed. Returns the bytes of the three files.
pub fn write_peft(ad: &Adapter, out: &Path, force: bool) -> Result<u64> {
    if out.is_file() {
        bail!("{} is a file; a PEFT adapter is a folder", out.display());
    }
    let files = [
        "adapter_config.json",
        "adapter_model.safetensors",
        "scalpel_adapter.json",
    ];
    if !force {
        if let Some(f) = files.iter().map(|f| out.join(f)).find(|p| p.exists()) {
            bail!(
                "output {} already exists (use --force to overwrite)",
                f.display()
            );
        }
    }
    let r = ad.rank();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut modules: Vec<&str> = Vec::new();
    let mut blocks: Vec<usize> = Vec::new();
    for (t, lr) in &ad.matrices {
        let (a, b) = padded(lr, r);
        let stem = format!("base_model.model.{}", t.hf_path());
        data.push((
            format!("{stem}.lora_A.weight"),
            vec![r, lr.row_len],
            f32_bytes(&a),
        ));
        data.push((
            format!("{stem}.lora_B.weight"),
            vec![lr.n_rows, r],
            f32_bytes(&b),
        ));
        if !modules.contains(&t.hf_module()) {
            modules.push(t.hf_module());
        }
        if !blocks.contains(&t.block) {
            blocks.push(t.block);
        }
    }
    blocks.sort_unstable();
    let views = data
        .iter()
        .map(|(n, shape, bytes)| {
            Ok((
                n.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = safetensors::serialize(views, Some(meta))?;
    // lora_alpha = r: PEFT's scaling lora_alpha / r is 1, the adapter is the edit itself.
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": null,
        "r": r,
        "lora_alpha": r,
        "lora_dropout": 0.0,
        "target_modules": modules,
        "layers_to_transform": blocks,
        "layers_pattern": "layers",
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let config = serde_json::to_vec_pretty(&config)?;
    let summary = serde_json::to_vec_pretty(&ad.summary())?;
    write_atomic(&out.join(files[1]), &weights)?;
    write_atomic(&out.join(files[0]), &config)?;
    write_atomic(&out.join(files[2]), &summary)?;
    Ok((weights.len() + config.len() + summary.len()) as u64)
}
