//! Loaders for labelled text in user files: TSV, JSON lines, CSV and one-text-per-line.

use super::{read_lines, stem, Dataset, DESIRABLE, UNDESIRABLE};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// `label<TAB>text` per line, label `0` (desirable) or `1` (undesirable); blank lines are
/// skipped and the text may itself contain tabs.
pub fn load_tsv(path: &Path) -> Result<Dataset> {
    let mut items = Vec::new();
    for (n, line) in read_lines(path)? {
        let at = || format!("{}:{n}", path.display());
        let (label, text) = line
            .split_once('\t')
            .ok_or_else(|| anyhow!("{}: expected label<TAB>text", at()))?;
        let label = match label.trim() {
            "0" => DESIRABLE,
            "1" => UNDESIRABLE,
            other => bail!("{}: label {other:?} is not 0 or 1", at()),
        };
        items.push((text.to_string(), label));
    }
    Dataset::new(stem(path), items).with_context(|| format!("loading {}", path.display()))
}

/// Field names for [`load_jsonl`].
#[derive(Debug, Clone)]
pub struct JsonlFormat {
    /// Field holding the text (a string).
    pub text_field: String,
    /// Field holding the label: 0 or 1, a bool, or a list of numbers (as in the Jigsaw
    /// toxic-comment format: one flag per sub-category) whose sum > 0 means undesirable.
    pub label_field: String,
}

impl Default for JsonlFormat {
    fn default() -> Self {
        JsonlFormat {
            text_field: "text".into(),
            label_field: "label".into(),
        }
    }
}

/// One JSON object per line; blank lines are skipped.
pub fn load_jsonl(path: &Path, format: &JsonlFormat) -> Result<Dataset> {
    let mut items = Vec::new();
    for (n, line) in read_lines(path)? {
        let at = || format!("{}:{n}", path.display());
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}: invalid JSON", at()))?;
        let text = match value.get(&format.text_field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => bail!("{}: field {:?} is not a string", at(), format.text_field),
            None => bail!("{}: no field {:?}", at(), format.text_field),
        };
        let label = value
            .get(&format.label_field)
            .ok_or_else(|| anyhow!("{}: no field {:?}", at(), format.label_field))?;
        let label = json_label(label)
            .with_context(|| format!("{}: field {:?}", at(), format.label_field))?;
        items.push((text, label));
    }
    Dataset::new(stem(path), items).with_context(|| format!("loading {}", path.display()))
}

fn json_label(v: &serde_json::Value) -> Result<u8> {
    use serde_json::Value;
    match v {
        Value::Bool(b) => Ok(u8::from(*b)),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(DESIRABLE),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(UNDESIRABLE),
        Value::Array(xs) => {
            let mut sum = 0.0;
            for x in xs {
                sum += x
                    .as_f64()
                    .ok_or_else(|| anyhow!("list label holds a non-number {x}"))?;
            }
            Ok(u8::from(sum > 0.0))
        }
        other => bail!("label {other} is not 0, 1, a bool or a list of numbers"),
    }
}

/// How a CSV label cell becomes a class.
#[derive(Debug, Clone)]
pub enum LabelRule {
    /// The cell is `0` or `1`; anything else is an error.
    Binary,
    /// Listed values map to a class; rows with any other value are dropped.
    Values {
        /// Cell values meaning undesirable (1).
        undesirable: Vec<String>,
        /// Cell values meaning desirable (0).
        desirable: Vec<String>,
    },
    /// Numeric cell: greater than `above` is undesirable (1), otherwise desirable (0).
    Threshold {
        /// The boundary, itself desirable.
        above: f64,
    },
}

impl LabelRule {
    fn apply(&self, cell: &str) -> Result<Option<u8>> {
        let cell = cell.trim();
        Ok(match self {
            LabelRule::Binary => match cell {
                "0" => Some(DESIRABLE),
                "1" => Some(UNDESIRABLE),
                _ => bail!("label {cell:?} is not 0 or 1"),
            },
            LabelRule::Values {
                undesirable,
                desirable,
            } => {
                if undesirable.iter().any(|v| v == cell) {
                    Some(UNDESIRABLE)
                } else if desirable.iter().any(|v| v == cell) {
                    Some(DESIRABLE)
                } else {
                    None
                }
            }
            LabelRule::Threshold { above } => {
                let x: f64 = cell
                    .parse()
                    .map_err(|_| anyhow!("label {cell:?} is not a number"))?;
                Some(u8::from(x > *above))
            }
        })
    }
}

/// Column mapping for [`load_csv`]. The file must have a header row.
#[derive(Debug, Clone)]
pub struct CsvFormat {
    /// Header of the text column.
    pub text_column: String,
    /// Header of the label column.
    pub label_column: String,
    /// How the label cell becomes a class.
    pub rule: LabelRule,
    /// Field delimiter (`b','` for CSV, `b'\t'` for TSV with a header).
    pub delimiter: u8,
}

/// A CSV file with a header row (RFC 4180 quoting, so texts may hold commas and newlines).
pub fn load_csv(path: &Path, format: &CsvFormat) -> Result<Dataset> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(format.delimiter)
        .has_headers(true)
        .from_reader(file);
    let headers = reader
        .byte_headers()
        .with_context(|| format!("{}: reading the header row", path.display()))?
        .clone();
    if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
        bail!("{} is empty", path.display());
    }
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name.as_bytes())
            .ok_or_else(|| {
                let names: Vec<_> = headers.iter().map(String::from_utf8_lossy).collect();
                anyhow!(
                    "{}: no column {name:?} (columns: {})",
                    path.display(),
                    names.join(", ")
                )
            })
    };
    let (text_col, label_col) = (column(&format.text_column)?, column(&format.label_column)?);
    let mut items = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut rows = 0usize;
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .with_context(|| format!("{}: malformed CSV", path.display()))?;
        if !more {
            break;
        }
        rows += 1;
        let line = record.position().map_or(0, |p| p.line());
        let at = || format!("{}:{line}", path.display());
        let cell = |i: usize| -> Result<&str> {
            let bytes = record
                .get(i)
                .ok_or_else(|| anyhow!("{}: row has only {} fields", at(), record.len()))?;
            std::str::from_utf8(bytes).map_err(|_| anyhow!("{}: not valid UTF-8", at()))
        };
        let (text, label) = (cell(text_col)?, cell(label_col)?);
        if let Some(label) = format.rule.apply(label).with_context(at)? {
            if !text.trim().is_empty() {
                items.push((text.to_string(), label));
            }
        }
    }
    if rows == 0 {
        bail!("{} has a header but no rows", path.display());
    }
    Dataset::new(stem(path), items).with_context(|| format!("loading {}", path.display()))
}

/// Two files of one text per line: one of desirable texts, one of undesirable texts.
pub fn load_lines(desirable: &Path, undesirable: &Path) -> Result<Dataset> {
    let mut items: Vec<(String, u8)> = read_lines(desirable)?
        .into_iter()
        .map(|(_, t)| (t, DESIRABLE))
        .collect();
    items.extend(
        read_lines(undesirable)?
            .into_iter()
            .map(|(_, t)| (t, UNDESIRABLE)),
    );
    Dataset::new(format!("{}+{}", stem(desirable), stem(undesirable)), items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_label_forms() {
        use serde_json::json;
        assert_eq!(json_label(&json!(true)).unwrap(), 1);
        assert_eq!(json_label(&json!(0)).unwrap(), 0);
        assert_eq!(json_label(&json!([0, 0, 1, 0])).unwrap(), 1);
        assert_eq!(json_label(&json!([0, 0])).unwrap(), 0);
        assert!(json_label(&json!(2)).is_err());
        assert!(json_label(&json!("1")).is_err());
        assert!(json_label(&json!([0, "x"])).is_err());
    }

    #[test]
    fn label_rules() {
        let v = LabelRule::Values {
            undesirable: vec!["0".into(), "1".into()],
            desirable: vec!["2".into()],
        };
        assert_eq!(v.apply("1").unwrap(), Some(1));
        assert_eq!(v.apply(" 2 ").unwrap(), Some(0));
        assert_eq!(v.apply("3").unwrap(), None);
        assert_eq!(
            LabelRule::Threshold { above: 0.5 }.apply("0.5").unwrap(),
            Some(0)
        );
        assert_eq!(
            LabelRule::Threshold { above: 0.5 }.apply("0.51").unwrap(),
            Some(1)
        );
        assert!(LabelRule::Binary.apply("yes").is_err());
    }
}
