//! Named labelled datasets built from pinned assets.

use super::{load_csv, read_lines, CsvFormat, Dataset, LabelRule, DESIRABLE, UNDESIRABLE};
use crate::assets::{self, FetchOptions};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// Names accepted by [`builtin`].
pub const BUILTIN_DATASETS: &[&str] = &["toxicity", "toxigen-demos", "sentiment"];

/// Which sentiment counts as undesirable (label 1) in the `sentiment` dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sentiment {
    /// Negative snippets are undesirable (the usual "make it more positive" edit).
    #[default]
    Negative,
    /// Positive snippets are undesirable.
    Positive,
}

/// Options of the built-in datasets.
#[derive(Debug, Clone, Default)]
pub struct BuiltinOptions {
    /// Downsample the larger class to the smaller one with this seed.
    pub balance_seed: Option<u64>,
    /// For `sentiment`: which class is undesirable.
    pub undesirable_sentiment: Sentiment,
}

/// A built-in dataset by name (see [`BUILTIN_DATASETS`]).
pub fn builtin(name: &str, fetch: &FetchOptions, opts: &BuiltinOptions) -> Result<Dataset> {
    let ds = match name {
        "toxicity" => toxicity(fetch, None)?,
        "toxigen-demos" => toxigen_demos(fetch)?,
        "sentiment" => sentiment(fetch, opts.undesirable_sentiment)?,
        _ => bail!(
            "no built-in dataset {name:?} (known: {})",
            BUILTIN_DATASETS.join(", ")
        ),
    };
    Ok(match opts.balance_seed {
        Some(seed) => ds.balanced(seed),
        None => ds,
    })
}

/// Davidson et al. 2017 tweets: class 0 (hate) or 1 (offensive) → undesirable, class 2
/// (neither) → desirable. Heavily skewed (~83% offensive), hence the balancing option.
pub fn toxicity(fetch: &FetchOptions, balance_seed: Option<u64>) -> Result<Dataset> {
    let path = assets::fetch_named("davidson-labeled-data", fetch)?;
    let format = CsvFormat {
        text_column: "tweet".into(),
        label_column: "class".into(),
        rule: LabelRule::Values {
            undesirable: vec!["0".into(), "1".into()],
            desirable: vec!["2".into()],
        },
        delimiter: b',',
    };
    let mut ds = load_csv(&path, &format)?;
    ds.name = "toxicity".into();
    Ok(match balance_seed {
        Some(seed) => ds.balanced(seed),
        None => ds,
    })
}

/// ToxiGen's hand-written demonstration sentences: `hate_*` files → undesirable,
/// `neutral_*` → desirable. Two files upstream are identical copies, so exact repeats are
/// dropped.
pub fn toxigen_demos(fetch: &FetchOptions) -> Result<Dataset> {
    let wanted = assets::matching("toxigen-demo-*");
    let paths = assets::fetch_all(&wanted, fetch)?;
    let mut items = Vec::new();
    for path in &paths {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = if file.starts_with("hate_") {
            UNDESIRABLE
        } else if file.starts_with("neutral_") {
            DESIRABLE
        } else {
            bail!("{}: neither a hate_ nor a neutral_ file", path.display());
        };
        items.extend(
            read_lines(path)?
                .into_iter()
                .map(|(_, t)| (t.trim().to_string(), label)),
        );
    }
    let mut ds = Dataset::new("toxigen-demos", items)?;
    ds.dedup();
    Ok(ds)
}

/// Hutto & Gilbert's human-rated snippets (tweets, movie and Amazon reviews, NYT
/// editorials; mean rating from −4 to 4): mean < −0.5 is negative, > 0.5 positive, the
/// near-neutral middle is dropped.
pub fn sentiment(fetch: &FetchOptions, undesirable: Sentiment) -> Result<Dataset> {
    let wanted: Vec<_> = assets::catalog()
        .iter()
        .filter(|a| a.name.starts_with("vader-") && a.name.ends_with("-ground-truth"))
        .collect();
    let paths: Vec<PathBuf> = assets::fetch_all(&wanted, fetch)?;
    sentiment_from_files(&paths, undesirable)
}

/// The `sentiment` dataset from VADER ground-truth files (`id<TAB>mean<TAB>text`).
pub fn sentiment_from_files(paths: &[PathBuf], undesirable: Sentiment) -> Result<Dataset> {
    let mut items = Vec::new();
    for path in paths {
        items.extend(
            read_ground_truth(path)?
                .into_iter()
                .filter_map(|(mean, text)| {
                    let negative = if mean < -0.5 {
                        true
                    } else if mean > 0.5 {
                        false
                    } else {
                        return None;
                    };
                    let bad = negative == (undesirable == Sentiment::Negative);
                    Some((text, if bad { UNDESIRABLE } else { DESIRABLE }))
                }),
        );
    }
    Dataset::new("sentiment", items)
}

fn read_ground_truth(path: &Path) -> Result<Vec<(f64, String)>> {
    let mut rows = Vec::new();
    for (n, line) in read_lines(path)? {
        let at = || format!("{}:{n}", path.display());
        let mut parts = line.splitn(3, '\t');
        let (_id, mean, text) = (parts.next(), parts.next(), parts.next());
        let (Some(mean), Some(text)) = (mean, text) else {
            bail!("{}: expected id<TAB>mean rating<TAB>text", at());
        };
        let mean: f64 = mean
            .trim()
            .parse()
            .map_err(|_| anyhow!("{}: rating {mean:?} is not a number", at()))?;
        rows.push((mean, text.trim().to_string()));
    }
    if rows.is_empty() {
        return Err(anyhow!("{} has no rows", path.display())).context("loading sentiment");
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentiment_thresholds_and_direction() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gt.txt");
        std::fs::write(
            &p,
            "1\t2.5\tgreat\r\n2\t-0.2\tmeh\r\n3\t-1.0\tawful\r\n4\t0.5\tborder\r\n",
        )
        .unwrap();
        let neg = sentiment_from_files(std::slice::from_ref(&p), Sentiment::Negative).unwrap();
        assert_eq!(
            neg.items,
            vec![("great".to_string(), 0), ("awful".to_string(), 1)]
        );
        let pos = sentiment_from_files(&[p], Sentiment::Positive).unwrap();
        assert_eq!(
            pos.items,
            vec![("great".to_string(), 1), ("awful".to_string(), 0)]
        );
    }

    #[test]
    fn ground_truth_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gt.txt");
        std::fs::write(&p, "1\t2.5\tgreat\n2\tx\tbad\n").unwrap();
        let e = format!(
            "{:#}",
            sentiment_from_files(&[p], Sentiment::Negative).unwrap_err()
        );
        assert!(e.contains("gt.txt:2") && e.contains("not a number"), "{e}");
    }
}
