//! The probe file's metadata as a struct: where the probe came from (model, dataset, point,
//! pooling) and how it was fitted. Safetensors stores metadata as a map of strings, so every
//! field is written as text; keys this version does not know are kept as they are, and a
//! file without metadata (the paper's probes) reads as all `None`.

use super::collect::Pool;
use super::options::Method;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the `direction` key says: the layout a reader of the file needs.
pub const DIRECTION_NOTE: &str = "row 1 of weight = class 1 = undesirable; the edit uses W[1]";

/// The probe file's metadata (every key optional on reading).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeMeta {
    /// The model's path as given to the trainer, and its sha256 (checked by
    /// [`super::Probe::other_model_warning`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// How the model held its matrices while collecting (`f32`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// The hidden-state point(s) read: `final`, `mlp:3`, `mlp:0,mlp:1,…` for a joint probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<Pool>,
    /// Texts were cut to this many tokens.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::settings::text::option"
    )]
    pub max_tokens: Option<usize>,
    /// The labelled dataset's name and content hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_sha256: Option<String>,
    /// Whether the larger class was downsampled, and the seed of that, the split and the fit.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::settings::text::option"
    )]
    pub balanced: Option<bool>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::settings::text::option"
    )]
    pub seed: Option<u64>,
    /// The training options (JSON), as the training report records them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_options: Option<String>,
    /// A joint probe's blocks (`0,1,2`; see [`super::Probe::blocks`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<String>,
    /// [`DIRECTION_NOTE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Results recorded in the file by `scalpel probe train` (a run writes them beside the
    /// probe instead): the method, the kept epoch (`none` for closed-form methods) and the
    /// train / held-out metrics (JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen_epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Keys this version does not know, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, String>,
}

impl ProbeMeta {
    /// The metadata of a probe file (`Probe::meta`); a malformed known key is an error that
    /// names it.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<ProbeMeta> {
        let value = serde_json::to_value(map)?;
        serde_json::from_value(value).context("probe metadata")
    }

    /// The map written into the file.
    pub fn to_map(&self) -> Result<BTreeMap<String, String>> {
        let serde_json::Value::Object(obj) = serde_json::to_value(self)? else {
            bail!("probe metadata is not a map");
        };
        obj.into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                other => bail!("probe metadata {k} = {other} is not text"),
            })
            .collect()
    }

    /// Records the training results in the file (what `scalpel probe train` does).
    pub fn record_results(&mut self, r: &super::TrainReport) {
        self.method = Some(r.options.fit.method);
        self.chosen_epoch = Some(r.chosen_epoch.map_or("none".into(), |e| e.to_string()));
        let metrics = serde_json::json!({"train": r.train, "test": r.test});
        self.metrics = Some(metrics.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_unknown_keys_and_reads_an_empty_map() {
        let meta = ProbeMeta {
            model: Some("m.gguf".into()),
            point: Some("mlp:3".into()),
            pool: Some(Pool::Last),
            max_tokens: Some(64),
            balanced: Some(true),
            seed: Some(7),
            method: Some(Method::MeanDiff),
            direction: Some(DIRECTION_NOTE.into()),
            other: BTreeMap::from([("note".to_string(), "kept".to_string())]),
            ..ProbeMeta::default()
        };
        let map = meta.to_map().unwrap();
        assert_eq!(map["max_tokens"], "64");
        assert_eq!(map["pool"], "last");
        assert_eq!(map["balanced"], "true");
        assert_eq!(map["method"], "mean-diff");
        assert_eq!(map["note"], "kept");
        assert!(!map.contains_key("dataset"));
        assert_eq!(ProbeMeta::from_map(&map).unwrap(), meta);
        assert_eq!(
            ProbeMeta::from_map(&BTreeMap::new()).unwrap(),
            ProbeMeta::default()
        );
        let bad = BTreeMap::from([("max_tokens".to_string(), "many".to_string())]);
        let err = format!("{:#}", ProbeMeta::from_map(&bad).unwrap_err());
        assert!(err.contains("probe metadata"), "{err}");
    }
}
