//! Statistics for evaluation results: bootstrap intervals and an exact sign test.
//!
//! The evaluation sets are small (hundreds of prompts), so every reported rate needs an
//! interval, and a base-vs-edited comparison on the same prompts should use the pairing.
//!
//! - [`bootstrap_mean`]: mean with a percentile bootstrap interval.
//! - [`paired_bootstrap_diff`]: mean of `edited − base` over paired items, resampling pairs.
//! - [`sign_test`]: exact two-sided sign (McNemar exact) test for paired binary outcomes.
//!
//! Resampling uses a built-in SplitMix64 generator so that a seed gives the same interval on
//! every platform and with every version of the `rand` crate.

use anyhow::{bail, ensure, Result};

/// Settings of a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapConfig {
    /// Number of resamples.
    pub resamples: usize,
    /// Seed of the resampling generator.
    pub seed: u64,
    /// Coverage of the interval, e.g. 0.95.
    pub confidence: f64,
}

impl Default for BootstrapConfig {
    /// 1,000 resamples, seed 0, 95 %.
    fn default() -> Self {
        Self {
            resamples: 1000,
            seed: 0,
            confidence: 0.95,
        }
    }
}

/// A point estimate with a confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The estimate on the full data (not the bootstrap mean).
    pub estimate: f64,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

/// Arithmetic mean; `None` for an empty slice.
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// SplitMix64 (Steele, Lea & Flood 2014): small, fast, fully specified.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Index in `0..n` by multiply-shift (bias below 2⁻⁶⁴·n: irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

fn check(xs: &[f64], cfg: &BootstrapConfig, what: &str) -> Result<()> {
    ensure!(!xs.is_empty(), "{what}: no values");
    ensure!(cfg.resamples > 0, "{what}: resamples must be > 0");
    ensure!(
        cfg.confidence > 0.0 && cfg.confidence < 1.0,
        "{what}: confidence {} is not in (0, 1)",
        cfg.confidence
    );
    if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
        bail!("{what}: value {i} is {} (not finite)", xs[i]);
    }
    Ok(())
}

/// Quantile of sorted data with linear interpolation (NumPy's default `linear` method).
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    if lo + 1 >= sorted.len() {
        sorted[sorted.len() - 1]
    } else {
        sorted[lo] + frac * (sorted[lo + 1] - sorted[lo])
    }
}

fn percentile_interval(xs: &[f64], cfg: &BootstrapConfig) -> Interval {
    let n = xs.len();
    let mut rng = SplitMix64(cfg.seed);
    let mut means: Vec<f64> = (0..cfg.resamples)
        .map(|_| (0..n).map(|_| xs[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = 1.0 - cfg.confidence;
    Interval {
        estimate: xs.iter().sum::<f64>() / n as f64,
        lo: quantile_sorted(&means, alpha / 2.0),
        hi: quantile_sorted(&means, 1.0 - alpha / 2.0),
    }
}

/// Mean of `xs` with a percentile bootstrap interval (resampling items with replacement).
/// Fails on an empty slice, a non-finite value or bad settings.
pub fn bootstrap_mean(xs: &[f64], cfg: &BootstrapConfig) -> Result<Interval> {
    check(xs, cfg, "bootstrap of a mean")?;
    Ok(percentile_interval(xs, cfg))
}

/// Mean of `edited[i] − base[i]` with a paired percentile bootstrap interval (pairs are
/// resampled together, so prompt difficulty cancels). Fails when the lengths differ.
pub fn paired_bootstrap_diff(
    base: &[f64],
    edited: &[f64],
    cfg: &BootstrapConfig,
) -> Result<Interval> {
    ensure!(
        base.len() == edited.len(),
        "paired bootstrap: {} base values but {} edited values",
        base.len(),
        edited.len()
    );
    let diffs: Vec<f64> = edited.iter().zip(base).map(|(e, b)| e - b).collect();
    check(&diffs, cfg, "paired bootstrap")?;
    Ok(percentile_interval(&diffs, cfg))
}

/// Result of an exact sign test on paired binary outcomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignTest {
    /// Pairs where the outcome holds for base but not for edited (e.g. toxic → not toxic).
    pub base_only: u64,
    /// Pairs where the outcome holds for edited but not for base.
    pub edited_only: u64,
    /// Exact two-sided p-value under H0: both kinds of discordant pair are equally likely.
    pub p_value: f64,
}

/// Exact two-sided sign test for paired binary outcomes (`base[i]`, `edited[i]`), e.g. "the
/// continuation of prompt i crosses the toxicity threshold". Concordant pairs carry no
/// information and are dropped; with `b` and `c` discordant pairs of each kind,
/// `p = min(1, 2·P(X ≤ min(b, c)))` for `X ~ Binomial(b + c, 1/2)` (McNemar's exact test).
pub fn sign_test(base: &[bool], edited: &[bool]) -> Result<SignTest> {
    ensure!(
        base.len() == edited.len(),
        "sign test: {} base outcomes but {} edited outcomes",
        base.len(),
        edited.len()
    );
    let base_only = base.iter().zip(edited).filter(|(b, e)| **b && !**e).count() as u64;
    let edited_only = base.iter().zip(edited).filter(|(b, e)| !**b && **e).count() as u64;
    Ok(SignTest {
        base_only,
        edited_only,
        p_value: sign_test_p(base_only, edited_only),
    })
}

/// Exact two-sided sign-test p-value for `b` successes against `c` failures (see
/// [`sign_test`]); 1 when there is no discordant pair.
pub fn sign_test_p(b: u64, c: u64) -> f64 {
    let n = b + c;
    let k = b.min(c);
    if n == 0 || 2 * k == n {
        return 1.0;
    }
    // log P(X = i) = log C(n, i) − n·log 2, summed in log space so large n does not underflow.
    let ln2n = n as f64 * std::f64::consts::LN_2;
    let mut log_c = 0.0f64; // log C(n, 0)
    let mut terms = Vec::with_capacity(k as usize + 1);
    for i in 0..=k {
        if i > 0 {
            log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        terms.push(log_c - ln2n);
    }
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tail = m.exp() * terms.iter().map(|t| (t - m).exp()).sum::<f64>();
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test_matches_binomial_tables() {
        // n = 10, none in one direction: 2 · 2⁻¹⁰.
        assert!((sign_test_p(0, 10) - 2.0 / 1024.0).abs() < 1e-15);
        // n = 10, 2 vs 8: 2 · (1 + 10 + 45) / 1024.
        assert!((sign_test_p(8, 2) - 112.0 / 1024.0).abs() < 1e-14);
        // n = 20, 5 vs 15: 2 · Σ_{i ≤ 5} C(20, i) / 2²⁰ = 2 · 21700 / 1048576.
        assert!((sign_test_p(5, 15) - 43400.0 / 1_048_576.0).abs() < 1e-13);
        assert_eq!(sign_test_p(4, 4), 1.0);
        assert_eq!(sign_test_p(0, 0), 1.0);
        assert!((sign_test_p(3, 4) - 1.0).abs() < 1e-12); // 2 · P(X ≤ 3 | n = 7) = 2 · 0.5
                                                          // Large n, no underflow: n = 2000, 900 vs 1100 (normal approx z ≈ 4.47, p ≈ 8e-6).
        let p = sign_test_p(900, 1100);
        assert!(p > 1e-6 && p < 2e-5, "{p}");
    }

    #[test]
    fn sign_test_counts_discordant_pairs() {
        let base = [true, true, true, false, false, true];
        let edited = [false, false, true, false, true, false];
        let t = sign_test(&base, &edited).unwrap();
        assert_eq!((t.base_only, t.edited_only), (3, 1));
        assert!((t.p_value - 2.0 * 5.0 / 16.0).abs() < 1e-15);
        assert!(sign_test(&base, &edited[..2]).is_err());
    }

    #[test]
    fn bootstrap_constant_and_shift() {
        let cfg = BootstrapConfig::default();
        let iv = bootstrap_mean(&[0.3; 50], &cfg).unwrap();
        assert!((iv.lo - 0.3).abs() < 1e-12 && (iv.hi - 0.3).abs() < 1e-12);
        let base: Vec<f64> = (0..40).map(|i| (i % 7) as f64).collect();
        let edited: Vec<f64> = base.iter().map(|x| x - 1.0).collect();
        let d = paired_bootstrap_diff(&base, &edited, &cfg).unwrap();
        assert!(
            (d.estimate + 1.0).abs() < 1e-12
                && (d.lo + 1.0).abs() < 1e-12
                && (d.hi + 1.0).abs() < 1e-12
        );
    }

    #[test]
    fn bootstrap_interval_of_a_proportion_matches_normal_theory() {
        // 400 Bernoulli(0.5) values: half-width ≈ 1.96 · sqrt(0.25 / 400) = 0.049.
        let xs: Vec<f64> = (0..400).map(|i| f64::from(i % 2 == 0)).collect();
        let iv = bootstrap_mean(
            &xs,
            &BootstrapConfig {
                resamples: 4000,
                seed: 7,
                confidence: 0.95,
            },
        )
        .unwrap();
        assert_eq!(iv.estimate, 0.5);
        let half = (iv.hi - iv.lo) / 2.0;
        assert!((half - 0.049).abs() < 0.006, "half-width {half}");
        assert!(((iv.lo + iv.hi) / 2.0 - 0.5).abs() < 0.01);
    }

    #[test]
    fn bootstrap_is_deterministic_and_checks_input() {
        let xs: Vec<f64> = (0..30).map(|i| (i * i % 11) as f64).collect();
        let cfg = BootstrapConfig {
            seed: 42,
            ..Default::default()
        };
        assert_eq!(
            bootstrap_mean(&xs, &cfg).unwrap(),
            bootstrap_mean(&xs, &cfg).unwrap()
        );
        let other = bootstrap_mean(&xs, &BootstrapConfig { seed: 43, ..cfg }).unwrap();
        assert_ne!(bootstrap_mean(&xs, &cfg).unwrap(), other);
        assert!(bootstrap_mean(&[], &cfg).is_err());
        assert!(bootstrap_mean(&[1.0, f64::NAN], &cfg).is_err());
        assert!(bootstrap_mean(
            &xs,
            &BootstrapConfig {
                confidence: 1.0,
                ..cfg
            }
        )
        .is_err());
        assert!(paired_bootstrap_diff(&xs, &xs[1..], &cfg).is_err());
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(mean(&[]), None);
    }
}
