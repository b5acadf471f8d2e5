//! Run configs in the flat layout of earlier versions (`alpha = 1.08` at the top instead of
//! under `[edit]`): each moved key is read where it now belongs, with a warning that names
//! its table, so an old file keeps working and says how to update it. The resolved config a
//! run writes (`OUT/config.toml`) is in the new layout.

use anyhow::{bail, Result};
use toml::{Table, Value};

/// The keys that moved from the top level into a table, and the table.
const MOVED: &[(&str, &str)] = &[
    ("layer", "probe"),
    ("max_tokens", "probe"),
    ("method", "probe"),
    ("epoch", "probe"),
    ("epochs", "probe"),
    ("lr", "probe"),
    ("l2", "probe"),
    ("standardize", "probe"),
    ("ensemble", "probe"),
    ("direction", "select"),
    ("ranking", "select"),
    ("norm_aware", "select"),
    ("alpha", "edit"),
    ("scale", "edit"),
    ("profile", "eval"),
    ("suites", "eval"),
    ("limit", "eval"),
    ("max_new", "eval"),
    ("toxigen_per_group", "eval"),
    ("batch_size", "eval"),
    ("threshold", "eval"),
    ("ppl_window", "eval"),
    ("ppl_windows", "eval"),
    ("kl_windows", "eval"),
    ("kl_window", "eval"),
    ("benign_prompts", "eval"),
    ("bootstrap", "eval"),
    ("prompts", "eval"),
];

/// Moves every top-level key of the flat layout into its table; returns the table in the
/// current layout and one warning per moved key. A key given both at the top and in its
/// table is an error (which one was meant is not knowable).
pub fn translate(mut t: Table) -> Result<(Table, Vec<String>)> {
    let mut warnings = Vec::new();
    for &(key, table) in MOVED {
        if let Some(v) = t.remove(key) {
            put(&mut t, table, key, v.clone())?;
            warnings.push(format!(
                "`{key} = {v}` at the top level is the old flat layout: read as {key} in the [{table}] table; move it there (OUT/config.toml shows the new layout)"
            ));
        }
    }
    // K was two keys (`top_k` won when set); it is one value now.
    let (top_k, fraction) = (t.remove("top_k"), t.remove("fraction"));
    let count = match (&top_k, &fraction) {
        (Some(k), _) => Some(("rows", k.clone())),
        (None, Some(f)) => Some(("fraction", f.clone())),
        (None, None) => None,
    };
    if let Some((kind, v)) = count {
        let mut c = Table::new();
        c.insert(kind.into(), v.clone());
        put(&mut t, "select", "count", Value::Table(c))?;
        warnings.push(format!(
            "`{} = {v}` at the top level is the old flat layout: read as count = {{ {kind} = {v} }} in the [select] table; write it there{}",
            if kind == "rows" { "top_k" } else { "fraction" },
            if top_k.is_some() && fraction.is_some() {
                " (the old `fraction` is ignored: top_k won, as it did)"
            } else {
                ""
            }
        ));
    }
    Ok((t, warnings))
}

/// Sets `table.key = v`, refusing a key the table already has.
fn put(t: &mut Table, table: &str, key: &str, v: Value) -> Result<()> {
    let entry = t
        .entry(table.to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    let Value::Table(inner) = entry else {
        bail!("`{table}` must be a table ([{table}])");
    };
    if inner.contains_key(key) {
        bail!("`{key}` is given twice: at the top level (the old flat layout) and in [{table}]; keep the one in [{table}]");
    }
    inner.insert(key.to_string(), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keys_move_with_a_warning_each() {
        let t: Table =
            toml::from_str("alpha = 4.0\ntop_k = 5\nfraction = 0.1\nseed = 3\n").unwrap();
        let (t, w) = translate(t).unwrap();
        assert_eq!(t["edit"]["alpha"].as_float(), Some(4.0));
        assert_eq!(t["select"]["count"]["rows"].as_integer(), Some(5));
        assert_eq!(t["seed"].as_integer(), Some(3));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("[edit]"), "{}", w[0]);
        assert!(w[1].contains("top_k won"), "{}", w[1]);
        let twice: Table = toml::from_str("alpha = 4.0\n[edit]\nalpha = 2.0\n").unwrap();
        let err = translate(twice).unwrap_err().to_string();
        assert!(err.contains("given twice"), "{err}");
        let new: Table = toml::from_str("seed = 1\n[edit]\nalpha = 2.0\n").unwrap();
        assert!(translate(new).unwrap().1.is_empty());
    }
}
