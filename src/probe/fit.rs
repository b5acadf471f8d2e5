//! The one entry point that turns pooled activations into a probe ([`fit`]), shared by
//! `scalpel probe train` and the pipeline.

use super::collect::{mlp_blocks, point_name, Activations};
use super::file::Probe;
use super::joint::train_joint;
use super::meta::ProbeMeta;
use super::train::{train, TrainOptions, TrainReport};
use anyhow::{bail, Context, Result};

/// A fitted probe before it is written: weights, metadata and the training report.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// `W`, row-major `[2, d]` (row 1 = undesirable), and `b`.
    pub weight: Vec<f32>,
    pub bias: [f32; 2],
    /// The file's metadata: the caller's provenance plus the training options and blocks.
    pub meta: ProbeMeta,
    pub report: TrainReport,
}

impl Fitted {
    /// The probe file's content.
    pub fn probe(&self) -> Result<Probe> {
        Probe::new(self.weight.clone(), self.bias, self.meta.to_map()?)
    }
}

/// Fits one probe on pooled activations: of one point, or with `joint` a joint probe over
/// the MLP inputs in `acts` (one slice each). `meta` holds what the caller knows (model,
/// dataset, pooling, …); its `point` defaults to the points' names.
pub fn fit(
    acts: &[Activations],
    labels: &[u8],
    opts: &TrainOptions,
    mut meta: ProbeMeta,
    joint: bool,
) -> Result<Fitted> {
    let Some(first) = acts.first() else {
        bail!("no activations to fit a probe on");
    };
    let names: Vec<String> = acts.iter().map(|a| point_name(a.point)).collect();
    let name = meta.point.get_or_insert_with(|| names.join(",")).clone();
    if !joint && acts.len() > 1 {
        bail!("{name}: several points make a joint probe");
    }
    let t = if !joint {
        train(&first.data, labels, first.d, opts)
            .with_context(|| format!("training the probe at {name}"))?
    } else {
        let points: Vec<_> = acts.iter().map(|a| a.point).collect();
        let Some(blocks) = mlp_blocks(&points) else {
            bail!(
                "{}: a joint probe (several points) reads MLP inputs only: use mlp:all or mlp:N,mlp:M,…",
                names.join(",")
            );
        };
        meta.blocks = Some(Probe::blocks_meta(&blocks));
        let xs: Vec<&[f32]> = acts.iter().map(|a| &a.data[..]).collect();
        train_joint(&xs, labels, first.d, opts)
            .with_context(|| format!("training the joint probe at {name}"))?
    };
    meta.train_options = Some(serde_json::to_string(&t.report.options)?);
    Ok(Fitted {
        weight: t.weight,
        bias: t.bias,
        meta,
        report: t.report,
    })
}
