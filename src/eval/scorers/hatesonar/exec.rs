//! Execution of the hatesonar ops on one row, and the case mapping of the StringNormalizer.

use super::{Case, Norm, Op, PostTransform, TfIdfMode, Value};
use anyhow::{bail, ensure, Result};

/// Case change with one-to-one (simple) Unicode mappings, as onnxruntime's StringNormalizer does
/// through the C++ `ctype<wchar_t>` facet (glibc `towlower`/`towupper`). Rust's `to_lowercase`
/// is the full mapping; they differ only for characters whose full mapping has several chars
/// (e.g. 'İ' lower-cases to "i̇" in full, to 'i' in the simple mapping), which matters because
/// "BİTCH" must become "bitch" as a single token.
pub fn change_case(text: &str, lower: bool) -> String {
    text.chars()
        .map(|c| {
            if lower {
                if c == '\u{130}' {
                    return 'i';
                }
                let mut it = c.to_lowercase();
                match (it.next(), it.next()) {
                    (Some(l), None) => l,
                    _ => c,
                }
            } else {
                let mut it = c.to_uppercase();
                match (it.next(), it.next()) {
                    (Some(u), None) => u,
                    _ => c,
                }
            }
        })
        .collect()
}

pub(super) fn argmax(v: &[f64]) -> usize {
    // First maximum, as `std::max_element` in onnxruntime.
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Execute one op on one row.
pub(super) fn run_op(op: &Op, x: &Value) -> Result<Vec<Value>> {
    Ok(match (op, x) {
        (Op::PassThrough, v) => vec![v.clone()],
        (Op::StringNormalizer(case), Value::Text(texts)) => vec![Value::Text(match case {
            Case::Keep => texts.clone(),
            Case::Lower => texts.iter().map(|t| change_case(t, true)).collect(),
            Case::Upper => texts.iter().map(|t| change_case(t, false)).collect(),
        })],
        (Op::Tokenizer { regex, min_chars }, Value::Text(texts)) => {
            let tokens = texts
                .iter()
                .flat_map(|t| regex.find_iter(t))
                .map(|m| m.as_str())
                .filter(|tok| !tok.is_empty() && tok.chars().count() >= *min_chars)
                .map(str::to_string)
                .collect();
            vec![Value::Text(tokens)]
        }
        (
            Op::TfIdf {
                vocab,
                dim,
                mode,
                weights,
            },
            Value::Text(tokens),
        ) => {
            let mut counts = vec![0.0f64; *dim];
            for tok in tokens {
                if let Some(&i) = vocab.get(tok) {
                    counts[i] += 1.0;
                }
            }
            for (c, w) in counts.iter_mut().zip(weights) {
                *c = match mode {
                    TfIdfMode::Tf => *c,
                    TfIdfMode::Idf => {
                        if *c > 0.0 {
                            *w
                        } else {
                            0.0
                        }
                    }
                    TfIdfMode::TfIdf => *c * w,
                };
            }
            vec![Value::Floats(counts)]
        }
        (Op::Mul(k), Value::Floats(v)) => {
            let out = if k.len() == 1 {
                v.iter().map(|x| x * k[0]).collect()
            } else {
                ensure!(
                    k.len() == v.len(),
                    "Mul: {} values times {} constants",
                    v.len(),
                    k.len()
                );
                v.iter().zip(k).map(|(x, y)| x * y).collect()
            };
            vec![Value::Floats(out)]
        }
        (Op::Normalizer(norm), Value::Floats(v)) => {
            let d = match norm {
                Norm::L1 => v.iter().map(|x| x.abs()).sum::<f64>(),
                Norm::L2 => v.iter().map(|x| x * x).sum::<f64>().sqrt(),
                Norm::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            };
            // onnxruntime leaves a row unchanged when its norm is zero (e.g. no known word).
            let out = if d != 0.0 && d.is_finite() {
                v.iter().map(|x| x / d).collect()
            } else {
                v.clone()
            };
            vec![Value::Floats(out)]
        }
        (
            Op::LinearClassifier {
                coefficients,
                intercepts,
                n_features,
                post,
            },
            Value::Floats(v),
        ) => {
            ensure!(
                v.len() == *n_features,
                "LinearClassifier: {} features, expected {n_features}",
                v.len()
            );
            let mut scores: Vec<f64> = coefficients
                .chunks_exact(*n_features)
                .zip(intercepts)
                .map(|(row, b)| row.iter().zip(v).map(|(w, x)| w * x).sum::<f64>() + b)
                .collect();
            let label = argmax(&scores) as i64;
            match post {
                PostTransform::None => {}
                PostTransform::Logistic => scores
                    .iter_mut()
                    .for_each(|s| *s = 1.0 / (1.0 + (-*s).exp())),
                PostTransform::Softmax => {
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    scores.iter_mut().for_each(|s| *s = (*s - m).exp());
                    let z: f64 = scores.iter().sum();
                    scores.iter_mut().for_each(|s| *s /= z);
                }
            }
            vec![Value::Label(label), Value::Floats(scores)]
        }
        _ => bail!("internal: an op got a value of the wrong kind"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_lower_case_keeps_dotted_capital_i_one_char() {
        assert_eq!(
            change_case("BİTCH \u{212A}ILL Straße", true),
            "bitch kill straße"
        );
        assert_eq!(change_case("straße", false), "STRAßE");
    }

    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
