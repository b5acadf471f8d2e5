//! Step 3's edit as a LoRA adapter that serving engines load on the unchanged base.
//!
//! The paper adds α·w to a set S of rows of every gate matrix: `ΔW = b·aᵀ` with `a = w` and
//! `b = α·1_S`, rank 1 per matrix. This module turns an [`EditPlan`] (or the rows of a
//! [`Patch`]) into per-matrix factors `ΔW = B·A` of the exact rank ([`rank`]), and writes
//! them as
//! - a GGUF LoRA for llama.cpp / ollama ([`export::write_gguf`]): `general.type = adapter`,
//!   `adapter.type = lora`, `adapter.lora.alpha`, tensors `blk.N.ffn_gate.weight.lora_a`
//!   (ne = [n_embd, r]) and `.lora_b` (ne = [r, n_ff]), F32;
//! - a PEFT folder for transformers and vLLM ([`export::write_peft`]): `adapter_config.json`
//!   and `adapter_model.safetensors` with `…layers.N.mlp.gate_proj.lora_A.weight` ([r, d])
//!   and `lora_B.weight` ([n_ff, r]).
//!
//! Gate rows are in the same order in both formats (llama.cpp's converter permutes only the
//! rows of q and k), so one factorisation serves both. Every matrix is padded with zero
//! directions to the adapter's largest rank r (engines take one rank per adapter) and alpha
//! is set to r, so the engines' scale `alpha / r` is 1: the adapter at scale 1 is the edit,
//! and llama.cpp's `--lora-scaled FILE s` is the edit at s·α.

pub mod export;
pub mod rank;

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use self::rank::{delta_tolerance, factorize, LowRank, REL_TOL};
use super::edit::EditPlan;
use super::model::{Matrix, ModelFile};
use crate::formats::ggml::GgmlType;
use crate::formats::patch::{sha256_hex, Patch};
use crate::formats::quant;

/// The largest rank exported unless asked otherwise: the paper's edit is rank 1; an edit
/// whose rows move in more directions than this is more a new matrix than an adapter.
pub const DEFAULT_MAX_RANK: usize = 64;

/// Which adapter file to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterFormat {
    /// One GGUF file (llama.cpp `--lora`, ollama `ADAPTER`).
    Gguf,
    /// A PEFT folder (transformers + peft, vLLM `--lora-modules`).
    Peft,
}

impl AdapterFormat {
    /// GGUF for a path ending in `.gguf`, else a PEFT folder.
    pub fn from_path(p: &Path) -> AdapterFormat {
        match p.extension() {
            Some(e) if e.eq_ignore_ascii_case("gguf") => AdapterFormat::Gguf,
            _ => AdapterFormat::Peft,
        }
    }
}

/// An edited matrix: which block, gate or up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Block index.
    pub block: usize,
    /// Gate, up or down projection.
    pub matrix: Matrix,
}

impl Target {
    /// Reads `blk.N.ffn_gate.weight` or `model.layers.N.mlp.gate_proj.weight` (and `up`,
    /// `down`).
    pub fn parse(name: &str) -> Result<Target> {
        let parsed = if let Some(rest) = name.strip_prefix("blk.") {
            rest.split_once('.').and_then(|(n, part)| {
                let m = match part {
                    "ffn_gate.weight" => Matrix::Gate,
                    "ffn_up.weight" => Matrix::Up,
                    "ffn_down.weight" => Matrix::Down,
                    _ => return None,
                };
                Some((n, m))
            })
        } else if let Some(rest) = name.strip_prefix("model.layers.") {
            rest.split_once('.').and_then(|(n, part)| {
                let m = match part {
                    "mlp.gate_proj.weight" => Matrix::Gate,
                    "mlp.up_proj.weight" => Matrix::Up,
                    "mlp.down_proj.weight" => Matrix::Down,
                    _ => return None,
                };
                Some((n, m))
            })
        } else {
            None
        };
        match parsed.and_then(|(n, m)| Some((n.parse().ok()?, m))) {
            Some((block, matrix)) => Ok(Target { block, matrix }),
            None => bail!(
                "tensor {name} is not a block's MLP gate, up or down projection: only those can be exported as an adapter"
            ),
        }
    }

    /// llama.cpp's name of the base tensor.
    pub fn gguf_name(&self) -> String {
        let part = match self.matrix {
            Matrix::Gate => "ffn_gate",
            Matrix::Up => "ffn_up",
            Matrix::Down => "ffn_down",
        };
        format!("blk.{}.{part}.weight", self.block)
    }

    /// The module's short name, as PEFT's `target_modules` lists it.
    pub fn hf_module(&self) -> &'static str {
        match self.matrix {
            Matrix::Gate => "gate_proj",
            Matrix::Up => "up_proj",
            Matrix::Down => "down_proj",
        }
    }

    /// The Hugging Face module path (`model.layers.N.mlp.gate_proj`).
    pub fn hf_path(&self) -> String {
        format!("model.layers.{}.mlp.{}", self.block, self.hf_module())
    }

    fn order(&self) -> (usize, u8) {
        (self.block, self.matrix as u8)
    }
}

/// An edit as factors per matrix.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// llama.cpp architecture name of the base (`llama`, `qwen2`, `gemma3`), when known.
    pub arch: Option<String>,
    /// Matrices that change, ordered by block, with their factors (unpadded ranks).
    pub matrices: Vec<(Target, LowRank)>,
    /// What produced the edit (the plan's or patch's description).
    pub info: serde_json::Value,
    /// Built from a patch whose rows were re-quantised: the factors reproduce the stored
    /// (re-quantised) edit, not the intended one.
    pub requantised: bool,
}

/// The llama.cpp architecture name of a model, when scalpel knows it.
fn arch_of(model: &ModelFile) -> Option<String> {
    match model {
        ModelFile::Gguf(g) => g.architecture().ok().map(str::to_string),
        ModelFile::Hf(h) => match h.architecture()? {
            "LlamaForCausalLM" | "MistralForCausalLM" => Some("llama".into()),
            "Qwen2ForCausalLM" => Some("qwen2".into()),
            "Gemma3ForCausalLM" => Some("gemma3".into()),
            _ => None,
        },
    }
}

impl Adapter {
    /// Factors an edit plan made for `model`. Deltas are exact f32 values; each row's
    /// factors must give them back within [`REL_TOL`] of the row's largest |δ|.
    pub fn from_plan(model: &ModelFile, plan: &EditPlan, max_rank: usize) -> Result<Adapter> {
        let mut matrices = Vec::new();
        for (name, rows) in plan.by_tensor()? {
            let t = model.matrix(name)?;
            let target = Target::parse(name)?;
            let rows: Vec<(usize, &[f32], f64)> = rows
                .iter()
                .map(|&(r, d)| (r, d, delta_tolerance(d)))
                .collect();
            let lr = factorize(t.n_rows, t.row_len, &rows, max_rank)
                .with_context(|| name.to_string())?;
            matrices.push((target, lr));
        }
        Self::finish(model, matrices, plan.info.clone(), false)
    }

    /// Factors the rows a patch changed, after checking that `model` is the model the
    /// patch was made from. Deltas are `after − before` decoded; the tolerance of a row is
    /// [`REL_TOL`] × its largest stored value (f32 rounding of `before + δ` in a
    /// `--keep-precision` patch is half a unit in the last place of that value).
    pub fn from_patch(model: &ModelFile, patch: &Patch, max_rank: usize) -> Result<Adapter> {
        if patch.format != model.format() {
            bail!(
                "the patch is for a {} model, {} is {}",
                patch.format,
                model.path().display(),
                model.format()
            );
        }
        let mut matrices = Vec::new();
        let mut requantised = false;
        for t in &patch.tensors {
            let target = Target::parse(&t.name)?;
            let m = model.matrix(&t.name)?;
            let bytes = model.tensor_bytes(&t.name)?;
            if m.n_rows != t.n_rows
                || m.row_len != t.row_len
                || sha256_hex(bytes) != t.sha256_before
            {
                bail!(
                    "tensor {} of {} is not the one the patch was made from (give the unedited model)",
                    t.name,
                    model.path().display()
                );
            }
            model.release(&t.name);
            let ty = |n: &str| {
                GgmlType::from_name(n).with_context(|| format!("patch names unknown type {n}"))
            };
            let (tb, ta) = (ty(&t.before_type)?, ty(&t.after_type)?);
            requantised |= !matches!(ta, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
            let (rb, ra) = (
                quant::row_bytes(tb, t.row_len)?,
                quant::row_bytes(ta, t.row_len)?,
            );
            let (mut b, mut a) = (vec![0f32; t.row_len], vec![0f32; t.row_len]);
            let mut deltas: Vec<(usize, Vec<f32>, f64)> = Vec::with_capacity(t.rows.len());
            for (i, &r) in t.rows.iter().enumerate() {
                quant::decode_row(tb, &t.before[i * rb..(i + 1) * rb], &mut b)?;
                quant::decode_row(ta, &t.after[i * ra..(i + 1) * ra], &mut a)?;
                let d: Vec<f32> = a
                    .iter()
                    .zip(&b)
                    .map(|(&x, &y)| (x as f64 - y as f64) as f32)
                    .collect();
                let top = a.iter().chain(&b).fold(0f64, |m, &x| m.max(x.abs() as f64));
                deltas.push((r as usize, d, REL_TOL * top));
            }
            let rows: Vec<(usize, &[f32], f64)> = deltas
                .iter()
                .map(|(r, d, tol)| (*r, d.as_slice(), *tol))
                .collect();
            let lr = factorize(t.n_rows, t.row_len, &rows, max_rank).map_err(|e| {
                let why = if requantised {
                    format!(
                        " — the patch stores rows re-quantised to {ta}, whose re-quantisation error is not low rank; export the edit itself with `scalpel edit … --adapter OUT` (or an edit made with --keep-precision), or raise --max-rank to export the re-quantised edit exactly"
                    )
                } else {
                    String::new()
                };
                anyhow::anyhow!("{}: {e}{why}", t.name)
            })?;
            matrices.push((target, lr));
        }
        Self::finish(model, matrices, patch.info.clone(), requantised)
    }

    fn finish(
        model: &ModelFile,
        mut matrices: Vec<(Target, LowRank)>,
        info: serde_json::Value,
        requantised: bool,
    ) -> Result<Adapter> {
        matrices.retain(|(_, lr)| lr.rank > 0);
        if matrices.is_empty() {
            bail!("the edit changes nothing: there is no adapter to write");
        }
        matrices.sort_by_key(|(t, _)| t.order());
        Ok(Adapter {
            arch: arch_of(model),
            matrices,
            info,
            requantised,
        })
    }

    /// The rank every matrix is stored with: the largest exact rank.
    pub fn rank(&self) -> usize {
        self.matrices.iter().map(|(_, m)| m.rank).max().unwrap_or(0)
    }

    /// Largest |(B·A)_ij − δ_ij| over all matrices.
    pub fn max_error(&self) -> f64 {
        self.matrices
            .iter()
            .fold(0.0, |m, (_, lr)| m.max(lr.max_error))
    }

    /// A per-matrix summary for the CLI and the adapter's own metadata.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "rank": self.rank(),
            "max_abs_error": self.max_error(),
            "requantised_patch": self.requantised,
            "matrices": self.matrices.iter().map(|(t, lr)| serde_json::json!({
                "block": t.block,
                "matrix": t.matrix,
                "rank": lr.rank,
                "rows_changed": (0..lr.n_rows)
                    .filter(|r| lr.b[r * lr.rank..(r + 1) * lr.rank].iter().any(|&x| x != 0.0))
                    .count(),
            })).collect::<Vec<_>>(),
            "edit": self.info,
        })
    }

    /// Writes the adapter in `format` to `out`; returns the bytes written.
    pub fn write(&self, out: &Path, format: AdapterFormat, force: bool) -> Result<u64> {
        match format {
            AdapterFormat::Gguf => export::write_gguf(self, out, force),
            AdapterFormat::Peft => export::write_peft(self, out, force),
        }
    }
}
