//! Where a probe reads the model, as written in `--layer` and in config files: parsed when
//! the settings are read (a typo fails before any model loads), resolved to [`Point`]s once
//! the model's block count is known.

use crate::runtime::Point;
use anyhow::{bail, ensure, Result};

/// One item of a [`Layer`] list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerPart {
    /// `final`: the final norm's output (the paper).
    Final,
    /// `N` or `residual:N`: the residual stream after block N (0-based).
    Residual(usize),
    /// `mlp:N`: the MLP input of block N.
    Mlp(usize),
    /// `mlp:all`: every block's MLP input.
    MlpAll,
}

/// A probe point or a comma-separated list of them: `final`, `N` / `residual:N`, `mlp:N`,
/// `mlp:all`. Several points come from one forward pass; a probe over several MLP inputs
/// is a joint probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer(Vec<LayerPart>);

impl Default for Layer {
    /// `final`, the paper's point.
    fn default() -> Self {
        Layer(vec![LayerPart::Final])
    }
}

impl Layer {
    /// One point.
    pub fn of(part: LayerPart) -> Layer {
        Layer(vec![part])
    }

    /// The items as written.
    pub fn parts(&self) -> &[LayerPart] {
        &self.0
    }

    /// The points in a model of `num_layers` blocks, in order, each once; a block number the
    /// model does not have is an error.
    pub fn points(&self, num_layers: usize) -> Result<Vec<Point>> {
        let mut points = Vec::new();
        for &part in &self.0 {
            let block = |i: usize| -> Result<usize> {
                ensure!(
                    i < num_layers,
                    "layer {:?}: block {i} does not exist (the model has blocks 0..={})",
                    part_name(part),
                    num_layers.saturating_sub(1)
                );
                Ok(i)
            };
            let new: Vec<Point> = match part {
                LayerPart::Final => vec![Point::FinalNorm],
                LayerPart::Residual(i) => vec![Point::Residual(block(i)?)],
                LayerPart::Mlp(i) => vec![Point::MlpInput(block(i)?)],
                LayerPart::MlpAll => (0..num_layers).map(Point::MlpInput).collect(),
            };
            for p in new {
                if !points.contains(&p) {
                    points.push(p);
                }
            }
        }
        Ok(points)
    }
}

fn part_name(p: LayerPart) -> String {
    match p {
        LayerPart::Final => "final".into(),
        LayerPart::Residual(i) => format!("residual:{i}"),
        LayerPart::Mlp(i) => format!("mlp:{i}"),
        LayerPart::MlpAll => "mlp:all".into(),
    }
}

fn parse_part(s: &str) -> Result<LayerPart> {
    let block = |n: &str| -> Result<usize> {
        n.parse()
            .map_err(|_| anyhow::anyhow!("layer {s:?}: {n:?} is not a block number"))
    };
    Ok(match s {
        "final" => LayerPart::Final,
        "mlp:all" => LayerPart::MlpAll,
        _ => match s.split_once(':') {
            Some(("mlp", n)) => LayerPart::Mlp(block(n)?),
            Some(("residual", n)) => LayerPart::Residual(block(n)?),
            Some(_) => bail!("layer {s:?}: expected final, N, residual:N, mlp:N or mlp:all"),
            None => LayerPart::Residual(block(s)?),
        },
    })
}

impl std::str::FromStr for Layer {
    type Err = anyhow::Error;

    /// Checks the spelling only; block numbers are checked by [`Layer::points`].
    fn from_str(s: &str) -> Result<Layer> {
        let parts = s
            .split(',')
            .map(|p| parse_part(p.trim()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Layer(parts))
    }
}

impl std::fmt::Display for Layer {
    /// The canonical spelling (`N` is written `residual:N`), which [`std::str::FromStr`]
    /// reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.0.iter().map(|&p| part_name(p)).collect();
        f.write_str(&names.join(","))
    }
}

impl serde::Serialize for Layer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::settings::text::serialize(self, s)
    }
}

impl<'de> serde::Deserialize<'de> for Layer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Layer, D::Error> {
        crate::settings::text::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_parse_and_print_back() {
        for (text, canonical) in [
            ("final", "final"),
            ("3", "residual:3"),
            ("residual:1", "residual:1"),
            ("mlp:2", "mlp:2"),
            ("mlp:all", "mlp:all"),
            ("final, mlp:1,mlp:all", "final,mlp:1,mlp:all"),
        ] {
            let l: Layer = text.parse().unwrap();
            assert_eq!(l.to_string(), canonical);
            assert_eq!(canonical.parse::<Layer>().unwrap(), l);
        }
        let l: Layer = "final, mlp:1,mlp:all".parse().unwrap();
        assert_eq!(
            l.points(2).unwrap(),
            [Point::FinalNorm, Point::MlpInput(1), Point::MlpInput(0)]
        );
    }

    #[test]
    fn typos_fail_when_read_and_missing_blocks_when_resolved() {
        for (text, want) in [
            ("abc", "\"abc\" is not a block number"),
            ("-1", "\"-1\" is not a block number"),
            ("mlp:x", "\"x\" is not a block number"),
            ("attn:1", "expected final, N, residual:N, mlp:N or mlp:all"),
            ("final,", "\"\" is not a block number"),
        ] {
            let err = text.parse::<Layer>().unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let err = "mlp:7".parse::<Layer>().unwrap().points(3).unwrap_err();
        assert!(
            err.to_string()
                .contains("block 7 does not exist (the model has blocks 0..=2)"),
            "{err}"
        );
    }
}
