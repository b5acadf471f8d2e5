//! The probe file: safetensors with `weight` `[2, d]` and `bias` `[2]` (f32), the layout of
//! the paper's released probes, so either kind loads; provenance in the metadata.
//!
//! Row 1 of `weight` belongs to the undesirable class (toxic, refusal, negative): the paper
//! edits with `w = W[1]`.

use crate::formats::io::write_atomic;
use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// A trained linear probe `p(y | h) = softmax(W h + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Hidden size d.
    pub d: usize,
    /// `W`, row-major `[2, d]`: row 0 desirable, row 1 undesirable.
    pub weight: Vec<f32>,
    /// `b`.
    pub bias: [f32; 2],
    /// Provenance (model, hidden-state point, pooling, dataset, seed, metrics …).
    pub meta: BTreeMap<String, String>,
}

/// Which vector of the probe the surgery uses.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// `W[1]`, the undesirable class's row (the paper and its released code).
    #[default]
    Undesirable,
    /// `W[1] − W[0]`, the direction that changes the logit difference.
    Diff,
}

/// Checks a joint probe's `blocks` metadata: block numbers, no repeats, and a weight that
/// splits into one slice per block (a bad list must not read as "another model").
fn check_blocks_meta(s: &str, d: usize) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for part in s.split(',').map(str::trim) {
        let b: usize = part.parse().map_err(|_| {
            anyhow::anyhow!("probe metadata blocks = {s:?}: {part:?} is not a block number")
        })?;
        if !seen.insert(b) {
            bail!("probe metadata blocks = {s:?}: block {b} is listed twice");
        }
    }
    if !d.is_multiple_of(seen.len()) {
        bail!(
            "probe metadata blocks = {s:?}: {} blocks do not divide the probe width {d}",
            seen.len()
        );
    }
    Ok(())
}

impl Probe {
    /// Builds a probe, checking shapes and finiteness.
    pub fn new(weight: Vec<f32>, bias: [f32; 2], meta: BTreeMap<String, String>) -> Result<Self> {
        if weight.is_empty() || !weight.len().is_multiple_of(2) {
            bail!("probe weight has {} values, expected 2 × d", weight.len());
        }
        if let Some(i) = weight.iter().chain(&bias).position(|x| !x.is_finite()) {
            bail!("probe has a non-finite value (NaN or ±inf) at index {i}");
        }
        if let Some(s) = meta.get("blocks") {
            check_blocks_meta(s, weight.len() / 2)?;
        }
        Ok(Probe {
            d: weight.len() / 2,
            weight,
            bias,
            meta,
        })
    }

    /// Row `k` of `W`.
    pub fn row(&self, k: usize) -> &[f32] {
        &self.weight[k * self.d..(k + 1) * self.d]
    }

    /// The edit direction.
    pub fn direction(&self, which: Direction) -> Vec<f32> {
        match which {
            Direction::Undesirable => self.row(1).to_vec(),
            Direction::Diff => self
                .row(1)
                .iter()
                .zip(self.row(0))
                .map(|(a, b)| a - b)
                .collect(),
        }
    }

    /// The blocks a joint probe reads (metadata `blocks`, e.g. `0,1,2`): its weight holds one
    /// slice of [`Probe::width`] values per block, in this order, over the concatenated MLP
    /// inputs of those blocks. `None` for a probe of one hidden-state point.
    pub fn blocks(&self) -> Option<Vec<usize>> {
        let s = self.meta.get("blocks")?;
        let b: Option<Vec<usize>> = s.split(',').map(|p| p.trim().parse().ok()).collect();
        b.filter(|b| !b.is_empty() && self.d.is_multiple_of(b.len()))
    }

    /// The metadata value [`Probe::blocks`] reads back.
    pub fn blocks_meta(blocks: &[usize]) -> String {
        let list: Vec<String> = blocks.iter().map(|b| b.to_string()).collect();
        list.join(",")
    }

    /// The hidden size the probe reads per point (`d` for a one-point probe, `d / L` for a
    /// joint probe over L blocks).
    pub fn width(&self) -> usize {
        self.blocks().map_or(self.d, |b| self.d / b.len())
    }

    /// The edit direction for the gate rows of `block`: the whole direction for a one-point
    /// probe, the block's slice for a joint probe (`None` when it does not read that block).
    pub fn block_direction(&self, which: Direction, block: usize) -> Option<Vec<f32>> {
        let w = self.direction(which);
        match self.blocks() {
            None => Some(w),
            Some(bs) => {
                let k = bs.iter().position(|&b| b == block)?;
                let width = self.width();
                Some(w[k * width..(k + 1) * width].to_vec())
            }
        }
    }

    /// P(undesirable | h) for one pooled hidden state.
    pub fn prob_undesirable(&self, h: &[f32]) -> f32 {
        let logit = |k: usize| -> f32 {
            self.row(k).iter().zip(h).map(|(w, x)| w * x).sum::<f32>() + self.bias[k]
        };
        let (l0, l1) = (logit(0), logit(1));
        1.0 / (1.0 + (l0 - l1).exp())
    }

    /// Refuses a joint probe whose blocks are not blocks of a model with `n_blocks` blocks,
    /// or disagree with the points it was trained on: its slices would be applied to the
    /// wrong blocks.
    pub fn check_blocks(&self, n_blocks: usize) -> Result<()> {
        let Some(bs) = self.blocks() else {
            return Ok(());
        };
        if let Some(b) = bs.iter().find(|&&b| b >= n_blocks) {
            bail!(
                "joint probe reads block {b} but the model has {n_blocks} blocks (0..={}): its blocks metadata does not match this model",
                n_blocks.saturating_sub(1)
            );
        }
        // The trainer records the points too (`mlp:0,mlp:1,…`): the two lists must agree.
        let from_points: Option<Vec<usize>> = self.meta.get("point").and_then(|p| {
            p.split(',')
                .map(|x| x.trim().strip_prefix("mlp:")?.parse().ok())
                .collect()
        });
        if let Some(ps) = from_points.filter(|ps| *ps != bs) {
            bail!(
                "joint probe lists blocks {} but was trained on blocks {}: its metadata is inconsistent",
                Probe::blocks_meta(&bs),
                Probe::blocks_meta(&ps)
            );
        }
        Ok(())
    }

    /// A warning when the probe records the sha256 of the model it was trained on and
    /// `model` is another file (a fine-tune or another quantisation of the same model is a
    /// legitimate use, so this warns rather than refuses; see docs/validation.md). Probes
    /// without the record (the paper's) are not checked.
    pub fn other_model_warning(
        &self,
        model: &Path,
        cache_dir: Option<&Path>,
    ) -> Result<Option<String>> {
        let Some(sha) = self.meta.get("model_sha256") else {
            return Ok(None);
        };
        let here = super::model_fingerprint(model, cache_dir)?;
        Ok((*sha != here).then(|| {
            format!(
                "the probe was trained on another model (sha256 {:.12}…), not {} (sha256 {:.12}…); its direction may not fit this model",
                sha,
                model.display(),
                here
            )
        }))
    }

    /// Refuses a probe of another width than the model's hidden size.
    pub fn check_width(&self, d: usize) -> Result<()> {
        if self.width() != d {
            bail!(
                "probe has width {} but the model's hidden size is {d}; it was trained on another model",
                self.width()
            );
        }
        Ok(())
    }

    /// Writes the probe atomically (replacing a regular file at `path`).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// The probe file's bytes (safetensors, deterministic).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serialize_f32(
            &[
                ("weight", &[2, self.d], &self.weight),
                ("bias", &[2], &self.bias),
            ],
            &self.meta,
        )
    }

    /// Reads a probe written by scalpel or by the paper's code (converted to safetensors).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let ctx = || format!("{} is not a probe file", path.display());
        let st = SafeTensors::deserialize(&bytes).with_context(ctx)?;
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = st
                .tensor(name)
                .with_context(|| format!("{}: no tensor `{name}`", path.display()))?;
            let vals: Vec<f32> = match t.dtype() {
                Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Dtype::F16 => t
                    .data()
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => t
                    .data()
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                other => bail!(
                    "{}: tensor `{name}` has dtype {other:?}, expected a float",
                    path.display()
                ),
            };
            Ok((t.shape().to_vec(), vals))
        };
        let (ws, w) = read("weight")?;
        let (bs, b) = read("bias")?;
        if ws.len() != 2 || ws[0] != 2 || bs != [2] {
            bail!(
                "{}: probe shapes weight {ws:?} and bias {bs:?}, expected [2, d] and [2]",
                path.display()
            );
        }
        let (_, meta) = SafeTensors::read_metadata(&bytes).with_context(ctx)?;
        let meta: BTreeMap<String, String> = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Probe::new(w, [b[0], b[1]], meta).with_context(|| format!("{}", path.display()))
    }
}

/// Serialises f32 tensors and metadata as safetensors with the header keys in sorted order,
/// so that the same content always gives the same bytes (`safetensors::serialize` takes the
/// metadata as a `HashMap`, whose order changes from run to run).
pub(crate) fn serialize_f32(
    tensors: &[(&str, &[usize], &[f32])],
    meta: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<_> = tensors.to_vec();
    sorted.sort_by_key(|t| t.0);
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, data) in &sorted {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("tensor {name}: shape {shape:?} but {} values", data.len());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * n]}),
        );
        offset += 4 * n;
    }
    // serde_json::Map may preserve insertion order (a crate feature); insert sorted either way.
    let mut ordered = serde_json::Map::new();
    if !meta.is_empty() {
        ordered.insert("__metadata__".into(), serde_json::to_value(meta)?);
    }
    let mut keys: Vec<String> = header.keys().cloned().collect();
    keys.sort();
    for k in keys {
        let v = header.remove(&k).expect("key just listed");
        ordered.insert(k, v);
    }
    let mut json = serde_json::to_string(&serde_json::Value::Object(ordered))?;
    // The format pads the header with spaces to a multiple of 8 bytes.
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    for (_, _, data) in &sorted {
        out.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        let mut meta = BTreeMap::new();
        meta.insert("point".to_string(), "final".to_string());
        let p = Probe::new(vec![1.0, 2.0, 3.0, -4.0], [0.5, -0.5], meta).unwrap();
        p.save(&path).unwrap();
        let q = Probe::load(&path).unwrap();
        assert_eq!(p, q);
        assert_eq!(q.direction(Direction::Diff), vec![2.0, -6.0]);
        assert!(q.check_width(3).is_err());
        let err = Probe::new(vec![1.0, f32::NAN], [0.0, 0.0], BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("non-finite"));
        std::fs::write(&path, b"garbage").unwrap();
        let err = Probe::load(&path).unwrap_err();
        assert!(format!("{err:#}").contains("is not a probe file"));
    }

    #[test]
    fn probability_follows_the_logit_difference() {
        let p = Probe::new(vec![0.0, 0.0, 1.0, 0.0], [0.0, 0.0], BTreeMap::new()).unwrap();
        assert!((p.prob_undesirable(&[0.0, 0.0]) - 0.5).abs() < 1e-6);
        assert!(p.prob_undesirable(&[3.0, 0.0]) > 0.95);
    }
}
