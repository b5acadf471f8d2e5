//! The probe's settings: [`FitOptions`] (where it reads the model and how it is fitted, the
//! flags of `scalpel probe train` and the `[probe]` table of a run config) and the closed
//! sets they choose from ([`Method`], [`EpochChoice`]).

use super::layer::Layer;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// How to fit the probe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The paper: `softmax(W h + b)`, cross-entropy, Adam, mini-batches, a chosen epoch.
    #[default]
    Paper,
    /// `w = μ1 − μ0` (training means), threshold at the midpoint, scale fitted by 1-D
    /// logistic regression so probabilities are calibrated.
    MeanDiff,
    /// L2-regularised logistic regression solved exactly by Newton's method (IRLS).
    Logistic,
}

impl Method {
    /// The spelling of `--method` and config files.
    pub fn name(self) -> &'static str {
        match self {
            Method::Paper => "paper",
            Method::MeanDiff => "mean-diff",
            Method::Logistic => "logistic",
        }
    }
}

/// Which epoch's weights the paper method keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EpochChoice {
    /// The epoch with the lowest loss on the held-out split. That split is then used both to
    /// choose and to report, so its accuracy is slightly optimistic (as the paper's).
    #[default]
    BestHeldOut,
    /// The last epoch.
    Last,
    /// Epoch `k`, **0-based** as in a Python `for epoch in range(20)` loop: epoch `k` is the
    /// state after `k + 1` passes over the training split, so `Epoch(9)` (the paper's
    /// "epoch 9") is after 10 passes and `Epoch(19)` equals `Last` for 20 epochs.
    Epoch(usize),
}

impl std::str::FromStr for EpochChoice {
    type Err = anyhow::Error;

    /// `best`, `last` or a 0-based epoch number (the spelling of config files and flags).
    fn from_str(s: &str) -> Result<EpochChoice> {
        Ok(match s {
            "best" => EpochChoice::BestHeldOut,
            "last" => EpochChoice::Last,
            n => EpochChoice::Epoch(n.parse().map_err(|_| {
                anyhow::anyhow!("epoch {n:?}: expected best, last or a 0-based epoch number")
            })?),
        })
    }
}

impl std::fmt::Display for EpochChoice {
    /// The spelling [`std::str::FromStr`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EpochChoice::BestHeldOut => f.write_str("best"),
            EpochChoice::Last => f.write_str("last"),
            EpochChoice::Epoch(k) => write!(f, "{k}"),
        }
    }
}

/// Largest accepted learning rate (the paper's is 1e-4; at 1e30 the weights reach ~1e30).
pub const MAX_LR: f64 = 1.0;

/// How a probe is made: the point it reads, the token limit and the fit. The flags of
/// `scalpel probe train` and the `[probe]` table of a run config; the defaults are the
/// flags' (a run keeps the paper's epoch 9 instead of the best held-out one).
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitOptions {
    /// Hidden state: `final` (final-norm output, the paper), `N` (residual after block N,
    /// 0-based), `mlp:N` (MLP input of block N), `mlp:all` (every block), or a
    /// comma-separated list — several points come from one pass; `probe train` fits one
    /// probe each (written to OUT with the point, `.mlp7`, `.final`, `.residual3`, before the
    /// extension) unless `--joint`, a run fits one joint probe over MLP inputs.
    #[arg(long, default_value = "final")]
    pub layer: Layer,
    /// Texts longer than this many tokens (BOS included) are truncated.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Fitting method (a joint probe needs a closed-form one: logistic or mean-diff).
    #[arg(long, value_enum, default_value_t = Method::Paper)]
    pub method: Method,
    /// Epoch to keep (paper method): `best` (lowest held-out loss), `last`, or a 0-based
    /// number (`9` = after 10 passes, the paper's "epoch 9").
    #[arg(long, default_value = "best")]
    #[serde(with = "crate::settings::text")]
    pub epoch: EpochChoice,
    /// Adam learning rate (paper method).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Epochs (paper method).
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Mini-batch size (paper method).
    #[arg(
        id = "fit_batch_size",
        long = "batch-size",
        value_name = "N",
        default_value_t = 16
    )]
    pub batch_size: usize,
    /// L2 penalty on the summed cross-entropy (logistic method).
    #[arg(long, default_value_t = 1.0)]
    pub l2: f64,
    /// Fit on per-dimension standardised features (training-split mean and deviation) and
    /// map the weights back; makes the L2 penalty meaningful on RMSNorm outputs.
    #[arg(long)]
    pub standardize: bool,
    /// Average N probes: seeds of initialisation and batch order (paper method) or bootstrap
    /// resamples of the training split (closed-form methods).
    #[arg(long, default_value_t = 1)]
    pub ensemble: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl FitOptions {
    /// Refuses settings that would train nothing or diverge, before any activation is
    /// collected. Errors name the key (`lr = 1e30: …`).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.lr.is_finite() && self.lr > 0.0 && self.lr <= MAX_LR,
            "lr = {}: the learning rate must be in (0, {MAX_LR}]",
            self.lr
        );
        ensure!(
            self.l2.is_finite() && self.l2 >= 0.0,
            "l2 = {}: the L2 penalty must be a finite number >= 0",
            self.l2
        );
        for (key, v, what) in [
            ("epochs", self.epochs, "the number of epochs"),
            ("batch_size", self.batch_size, "the batch size"),
            ("ensemble", self.ensemble, "the number of probes averaged"),
            ("max_tokens", self.max_tokens, "the token limit"),
        ] {
            ensure!(v >= 1, "{key} = {v}: {what} must be at least 1");
        }
        if let EpochChoice::Epoch(k) = self.epoch {
            ensure!(
                k < self.epochs,
                "epoch {k} does not exist: epochs are 0-based and there are {} (0..={})",
                self.epochs,
                self.epochs.saturating_sub(1)
            );
        }
        Ok(())
    }

    /// A short tag for file names and cache keys (`paper`, `logistic-std-l2_100`).
    pub fn tag(&self) -> String {
        let mut t = self.method.name().to_string();
        if self.standardize {
            t.push_str("-std");
        }
        if self.method == Method::Logistic {
            t.push_str(&format!("-l2_{}", self.l2));
        }
        if self.ensemble > 1 {
            t.push_str(&format!("-x{}", self.ensemble));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_flags_and_the_toml_spelling_reads_back() {
        let d = FitOptions::default();
        assert_eq!(d.epoch, EpochChoice::BestHeldOut);
        assert_eq!(
            (d.lr, d.epochs, d.batch_size, d.max_tokens),
            (1e-4, 20, 16, 128)
        );
        assert_eq!(d.layer.to_string(), "final");
        let text = toml::to_string(&d).unwrap();
        assert!(text.contains("epoch = \"best\""), "{text}");
        let back: FitOptions = toml::from_str(&text).unwrap();
        assert_eq!(back, d);
        let some: FitOptions = toml::from_str("epoch = \"9\"\nlayer = \"mlp:3\"").unwrap();
        assert_eq!(some.epoch, EpochChoice::Epoch(9));
        assert_eq!(some.lr, 1e-4);
        let err = toml::from_str::<FitOptions>("layer = \"attn:1\"").unwrap_err();
        assert!(err.to_string().contains("expected final"), "{err}");
        assert!(toml::from_str::<FitOptions>("lr_typo = 1.0").is_err());
    }

    #[test]
    fn validate_names_the_key() {
        let cases: &[(FitOptions, &str)] = &[
            (
                FitOptions {
                    lr: f64::NAN,
                    ..Default::default()
                },
                "lr = NaN",
            ),
            (
                FitOptions {
                    lr: 1e30,
                    ..Default::default()
                },
                "learning rate",
            ),
            (
                FitOptions {
                    l2: -1.0,
                    ..Default::default()
                },
                "l2 = -1",
            ),
            (
                FitOptions {
                    epochs: 0,
                    ..Default::default()
                },
                "epochs = 0",
            ),
            (
                FitOptions {
                    batch_size: 0,
                    ..Default::default()
                },
                "batch size",
            ),
            (
                FitOptions {
                    ensemble: 0,
                    ..Default::default()
                },
                "ensemble = 0",
            ),
            (
                FitOptions {
                    max_tokens: 0,
                    ..Default::default()
                },
                "max_tokens = 0",
            ),
            (
                FitOptions {
                    epoch: EpochChoice::Epoch(20),
                    ..Default::default()
                },
                "epoch 20 does not exist: epochs are 0-based",
            ),
        ];
        for (o, want) in cases {
            let err = o.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(FitOptions::default().validate().is_ok());
    }
}
