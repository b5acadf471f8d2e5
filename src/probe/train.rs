//! Training the probe on pooled hidden states: the paper's softmax classifier with Adam, and
//! two closed-form baselines (difference of class means, L2-regularised logistic regression).
//!
//! Everything runs in plain Rust over f64 on one thread, in a fixed order, so a seed fixes the
//! result bit for bit. The problem is tiny (d = 576, a few thousand texts).
//!
//! **Layout of the closed-form probes.** Both baselines produce a binary score
//! `f(h) = w·h + c` with `P(class 1) = σ(f(h))`. They are written in the paper's `[2, d]`
//! layout symmetrically: `W[1] = w/2`, `W[0] = −w/2`, `b = [−c/2, c/2]`, so that
//! `softmax(W h + b)[1] = σ(f(h))` exactly and `W[1] − W[0] = w`; the surgery's direction
//! `W[1]` is parallel to `w`.

use super::linear::{sigmoid, Data, Linear2};
use super::logistic::fit_logistic;
use super::metrics::{metrics, Metrics};
use super::options::{EpochChoice, FitOptions, Method};
use super::standardize::Standardizer;
use crate::data::SplitMix64;
use anyhow::{bail, ensure, Result};
use serde::Serialize;

/// What [`train`] is given: the fit settings, the seed and the held-out fraction.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Method, epochs, learning rate, … (the `[probe]` settings).
    pub fit: FitOptions,
    /// Seed of the split, the initialisation and the mini-batch order.
    pub seed: u64,
    /// Fraction of each class held out (stratified).
    pub test_fraction: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            fit: FitOptions::default(),
            seed: 0,
            test_fraction: 0.1,
        }
    }
}

impl TrainOptions {
    /// The options for `fit` with `seed` and the usual 10 % held out.
    pub fn new(fit: FitOptions, seed: u64) -> TrainOptions {
        TrainOptions {
            fit,
            seed,
            ..TrainOptions::default()
        }
    }
}

impl Serialize for TrainOptions {
    /// The flat record probe files (`train_options`) and training reports have always held,
    /// in its order and with the epoch as `"best-held-out"` / `{"epoch": 9}`, so that files
    /// written before the fit settings had a struct of their own read the same.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let f = &self.fit;
        let mut r = s.serialize_struct("TrainOptions", 10)?;
        r.serialize_field("method", &f.method)?;
        r.serialize_field("seed", &self.seed)?;
        r.serialize_field("test_fraction", &self.test_fraction)?;
        r.serialize_field("lr", &f.lr)?;
        r.serialize_field("batch_size", &f.batch_size)?;
        r.serialize_field("epochs", &f.epochs)?;
        r.serialize_field("epoch", &f.epoch)?;
        r.serialize_field("l2", &f.l2)?;
        r.serialize_field("standardize", &f.standardize)?;
        r.serialize_field("ensemble", &f.ensemble)?;
        r.end()
    }
}

/// Losses and accuracies after one epoch of the paper method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochLog {
    /// 0-based epoch number.
    pub epoch: usize,
    /// Mean cross-entropy on the training split (weights at the end of the epoch).
    pub train_loss: f64,
    /// Accuracy on the training split.
    pub train_accuracy: f64,
    /// Mean cross-entropy on the held-out split.
    pub test_loss: f64,
    /// Accuracy on the held-out split.
    pub test_accuracy: f64,
}

/// What training reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// The options used.
    pub options: TrainOptions,
    /// The kept epoch (paper method), 0-based.
    pub chosen_epoch: Option<usize>,
    /// One entry per epoch (paper method); empty for the closed-form methods.
    pub epochs: Vec<EpochLog>,
    /// Metrics on the training split.
    pub train: Metrics,
    /// Metrics on the held-out split (NaN fields when it is empty).
    pub test: Metrics,
}

/// A fitted probe in the `[2, d]` layout, with its report.
#[derive(Debug, Clone)]
pub struct Trained {
    /// `W`, row-major `[2, d]`, row 1 = undesirable.
    pub weight: Vec<f32>,
    /// `b`.
    pub bias: [f32; 2],
    /// Metrics and the loss curve.
    pub report: TrainReport,
}

/// Checks a feature matrix `x` (`n × d`, row-major) and labels: shapes, finiteness, labels in
/// {0, 1}, both classes present.
pub fn check_features(x: &[f32], y: &[u8], d: usize) -> Result<()> {
    ensure!(d > 0, "features have width 0");
    ensure!(!y.is_empty(), "no training examples (empty dataset)");
    ensure!(
        x.len() == y.len() * d,
        "feature matrix has {} values, expected {} examples × {d}",
        x.len(),
        y.len()
    );
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!(
            "feature row {} has a non-finite value (NaN or ±inf) in column {}",
            i / d,
            i % d
        );
    }
    if let Some(l) = y.iter().find(|&&l| l > 1) {
        bail!("label {l} is not 0 or 1");
    }
    let n1 = y.iter().filter(|&&l| l == 1).count();
    ensure!(
        n1 > 0 && n1 < y.len(),
        "all {} examples have label {}; a probe needs both classes",
        y.len(),
        y[0]
    );
    Ok(())
}

/// Stratified seeded split of example indices: `round(n_c · fraction)` of each class c are
/// held out. Returns (train, test), each shuffled.
pub fn split_indices(y: &[u8], seed: u64, fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = SplitMix64::new(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for label in [0u8, 1] {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == label).collect();
        rng.shuffle(&mut idx);
        let n_test = (idx.len() as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
        test.extend(idx.drain(..n_test));
        train.extend(idx);
    }
    rng.shuffle(&mut train);
    rng.shuffle(&mut test);
    (train, test)
}

impl TrainOptions {
    /// Refuses settings that would train nothing or diverge: checked before any activation
    /// is collected.
    pub fn validate(&self) -> Result<()> {
        self.fit.validate()?;
        ensure!(
            self.test_fraction > 0.0 && self.test_fraction < 1.0,
            "held-out fraction {} must be in (0, 1)",
            self.test_fraction
        );
        Ok(())
    }
}

/// Refuses class counts (desirable, undesirable) too small for the stratified split to
/// leave each class in both the training and the held-out part: otherwise held-out n = 0
/// and accuracy NaN would be reported as a result.
pub fn check_split(counts: [usize; 2], fraction: f64) -> Result<()> {
    for (label, n) in counts.into_iter().enumerate() {
        let n_test = (n as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
        ensure!(
            n_test >= 1 && n > n_test,
            "class {label} has {n} example(s): too few for a held-out split of {:.0} % (each class needs at least one example in training and one held out; with this fraction at least {})",
            fraction * 100.0,
            (0.5 / fraction).ceil().max(2.0)
        );
    }
    Ok(())
}

/// Fits a probe to features `x` (`n × d`, row-major) and labels `y` (0 desirable, 1
/// undesirable) with a seeded held-out split.
pub fn train(x: &[f32], y: &[u8], d: usize, opts: &TrainOptions) -> Result<Trained> {
    opts.validate()?;
    check_features(x, y, d)?;
    let n1 = y.iter().filter(|&&l| l == 1).count();
    check_split([y.len() - n1, n1], opts.test_fraction)?;
    let (tr, te) = split_indices(y, opts.seed, opts.test_fraction);
    let n1 = tr.iter().filter(|&&i| y[i] == 1).count();
    ensure!(
        n1 > 0 && n1 < tr.len(),
        "the training split has only one class ({} examples); use more data or a smaller held-out fraction",
        tr.len()
    );
    let (fit_x, scale) = Standardizer::prepare(x, d, &tr, opts.fit.standardize);
    let data = Data { x: &fit_x, y, d };
    let (mut lin, chosen, epochs) = fit_member(&data, &tr, &te, opts)?;
    if opts.fit.ensemble > 1 {
        for k in 1..opts.fit.ensemble {
            let mut rng = SplitMix64::new(opts.seed ^ (0xb007_u64 << 32) ^ k as u64);
            let member_opts = TrainOptions {
                seed: opts.seed.wrapping_add(k as u64),
                ..opts.clone()
            };
            let member_tr: Vec<usize> = match opts.fit.method {
                Method::Paper => tr.clone(),
                _ => (0..tr.len()).map(|_| tr[rng.below(tr.len())]).collect(),
            };
            let (m, _, _) = fit_member(&data, &member_tr, &te, &member_opts)?;
            lin.w.iter_mut().zip(&m.w).for_each(|(a, b)| *a += b);
            lin.b.iter_mut().zip(&m.b).for_each(|(a, b)| *a += b);
        }
        let n = opts.fit.ensemble as f64;
        lin.w.iter_mut().for_each(|a| *a /= n);
        lin.b.iter_mut().for_each(|a| *a /= n);
    }
    let lin = match &scale {
        Some(sc) => sc.unscale(&lin),
        None => lin,
    };
    if let Some(i) = lin.w.iter().chain(&lin.b).position(|v| !v.is_finite()) {
        bail!("training diverged: parameter {i} is not finite (try a smaller learning rate)");
    }
    // Metrics are computed on the raw features with the mapped-back weights: what the saved
    // probe will score.
    let data = Data { x, y, d };
    let eval = |idx: &[usize]| {
        let p: Vec<f64> = idx.iter().map(|&i| lin.p1(data.row(i))).collect();
        let l: Vec<u8> = idx.iter().map(|&i| y[i]).collect();
        metrics(&p, &l)
    };
    Ok(Trained {
        weight: lin.w.iter().map(|&v| v as f32).collect(),
        bias: [lin.b[0] as f32, lin.b[1] as f32],
        report: TrainReport {
            options: opts.clone(),
            chosen_epoch: chosen,
            epochs,
            train: eval(&tr),
            test: eval(&te),
        },
    })
}

/// One probe of [`train`] on the training rows `tr` (the kept epoch and the loss curve for
/// the paper method).
fn fit_member(
    data: &Data,
    tr: &[usize],
    te: &[usize],
    opts: &TrainOptions,
) -> Result<(Linear2, Option<usize>, Vec<EpochLog>)> {
    Ok(match opts.fit.method {
        Method::Paper => {
            ensure!(opts.fit.epochs > 0, "--epochs must be at least 1");
            ensure!(opts.fit.batch_size > 0, "batch size must be at least 1");
            ensure!(
                opts.fit.lr > 0.0 && opts.fit.lr.is_finite(),
                "learning rate must be positive"
            );
            if let EpochChoice::Epoch(k) = opts.fit.epoch {
                ensure!(
                    k < opts.fit.epochs,
                    "epoch {k} does not exist: epochs are 0-based and there are {} (0..={})",
                    opts.fit.epochs,
                    opts.fit.epochs - 1
                );
            }
            let (lin, chosen, log) = fit_paper(data, tr, te, opts);
            (lin, Some(chosen), log)
        }
        Method::MeanDiff | Method::Logistic => (
            Linear2::from_binary(fit_closed(data, tr, opts)?),
            None,
            Vec::new(),
        ),
    })
}

/// A closed-form binary fit (`w·h + c`, raw features) on the rows `idx` of `x` (`n × d`):
/// the mean-difference or logistic method, standardised first when `opts.fit.standardize`.
/// The building block of the joint probe.
pub(crate) fn fit_binary(
    x: &[f32],
    y: &[u8],
    d: usize,
    idx: &[usize],
    opts: &TrainOptions,
) -> Result<(Vec<f64>, f64)> {
    let (fit_x, scale) = Standardizer::prepare(x, d, idx, opts.fit.standardize);
    let (w, c) = fit_closed(&Data { x: &fit_x, y, d }, idx, opts)?;
    Ok(match scale {
        Some(sc) => sc.unscale_binary(&w, c),
        None => (w, c),
    })
}

/// The closed-form methods' binary fit `(w, c)` on the rows `idx` of `data` as given.
fn fit_closed(data: &Data, idx: &[usize], opts: &TrainOptions) -> Result<(Vec<f64>, f64)> {
    Ok(match opts.fit.method {
        Method::MeanDiff => fit_mean_diff(data, idx),
        Method::Logistic => {
            ensure!(opts.fit.l2 >= 0.0, "the L2 penalty must not be negative");
            fit_logistic(data, idx, opts.fit.l2)?
        }
        Method::Paper => bail!("a closed-form fit needs --method logistic or mean-diff"),
    })
}

/// Mean cross-entropy and accuracy over `idx` (NaN when empty).
fn loss_acc(lin: &Linear2, data: &Data, idx: &[usize]) -> (f64, f64) {
    let (mut loss, mut right) = (0.0, 0usize);
    for &i in idx {
        let p1 = lin.p1(data.row(i));
        let y = data.y[i];
        let q = if y == 1 { p1 } else { 1.0 - p1 };
        loss -= q.max(1e-300).ln();
        right += usize::from((p1 >= 0.5) == (y == 1));
    }
    let n = idx.len() as f64;
    (loss / n, right as f64 / n)
}

/// The paper's recipe: PyTorch's `nn.Linear` initialisation (uniform ±1/√d for W and b),
/// mean cross-entropy per mini-batch, Adam (β = 0.9, 0.999, ε = 1e-8, bias-corrected, no
/// weight decay); the mini-batch order is reshuffled every epoch.
fn fit_paper(
    data: &Data,
    tr: &[usize],
    te: &[usize],
    opts: &TrainOptions,
) -> (Linear2, usize, Vec<EpochLog>) {
    let d = data.d;
    // A stream independent of the split's: the split seeds SplitMix64 with `seed` itself.
    let mut rng = SplitMix64::new(opts.seed ^ 0x5eed_0f7e_a14e_u64);
    let bound = 1.0 / (d as f64).sqrt();
    let mut uniform = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 * bound - bound;
    let mut lin = Linear2 {
        w: (0..2 * d).map(|_| uniform()).collect(),
        b: [uniform(), uniform()],
    };
    let np = 2 * d + 2;
    let (mut m, mut v) = (vec![0f64; np], vec![0f64; np]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut step = 0i32;
    let mut order = tr.to_vec();
    let mut grad = vec![0f64; np];
    let mut log = Vec::with_capacity(opts.fit.epochs);
    let mut snapshots = Vec::with_capacity(opts.fit.epochs);
    for epoch in 0..opts.fit.epochs {
        rng.shuffle(&mut order);
        for batch in order.chunks(opts.fit.batch_size) {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for &i in batch {
                let h = data.row(i);
                // d CE / d z_k = p_k − [y = k]; two classes, so p_0 − y0 = −(p_1 − y1).
                let g1 = lin.p1(h) - f64::from(data.y[i]);
                for (k, gk) in [-g1, g1].into_iter().enumerate() {
                    for (g, &x) in grad[k * d..(k + 1) * d].iter_mut().zip(h) {
                        *g += gk * x as f64;
                    }
                    grad[2 * d + k] += gk;
                }
            }
            step += 1;
            let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
            let scale = 1.0 / batch.len() as f64;
            for j in 0..np {
                let g = grad[j] * scale;
                m[j] = b1 * m[j] + (1.0 - b1) * g;
                v[j] = b2 * v[j] + (1.0 - b2) * g * g;
                let delta = opts.fit.lr * (m[j] / c1) / ((v[j] / c2).sqrt() + eps);
                if j < 2 * d {
                    lin.w[j] -= delta;
                } else {
                    lin.b[j - 2 * d] -= delta;
                }
            }
        }
        let (train_loss, train_accuracy) = loss_acc(&lin, data, tr);
        let (test_loss, test_accuracy) = loss_acc(&lin, data, te);
        log.push(EpochLog {
            epoch,
            train_loss,
            train_accuracy,
            test_loss,
            test_accuracy,
        });
        snapshots.push(lin.clone());
    }
    let chosen = match opts.fit.epoch {
        EpochChoice::Last => opts.fit.epochs - 1,
        EpochChoice::Epoch(k) => k,
        // Without a held-out split there is nothing to choose by: keep the last epoch.
        EpochChoice::BestHeldOut if te.is_empty() => opts.fit.epochs - 1,
        EpochChoice::BestHeldOut => (0..log.len())
            .min_by(|&a, &b| log[a].test_loss.total_cmp(&log[b].test_loss))
            .expect("at least one epoch"),
    };
    (snapshots.swap_remove(chosen), chosen, log)
}

/// Class means of the training split.
fn class_means(data: &Data, tr: &[usize]) -> [Vec<f64>; 2] {
    let mut mu = [vec![0f64; data.d], vec![0f64; data.d]];
    let mut count = [0usize; 2];
    for &i in tr {
        let k = usize::from(data.y[i]);
        count[k] += 1;
        for (s, &x) in mu[k].iter_mut().zip(data.row(i)) {
            *s += x as f64;
        }
    }
    for k in 0..2 {
        mu[k].iter_mut().for_each(|s| *s /= count[k] as f64);
    }
    mu
}

/// Difference of means: `u = (μ1 − μ0)/‖μ1 − μ0‖`, threshold at `(μ0 + μ1)/2`; the score is
/// `s · u·(h − mid)` with the scale `s` fitted by 1-D Newton on the training cross-entropy
/// (a tiny ridge, 1e-3 · s²/2 per example, keeps `s` finite when the classes are separable).
fn fit_mean_diff(data: &Data, tr: &[usize]) -> (Vec<f64>, f64) {
    let [mu0, mu1] = class_means(data, tr);
    let mut u: Vec<f64> = mu1.iter().zip(&mu0).map(|(a, b)| a - b).collect();
    let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
    u.iter_mut().for_each(|v| *v /= norm);
    let mid: f64 = u
        .iter()
        .zip(mu0.iter().zip(&mu1))
        .map(|(w, (a, b))| w * (a + b) / 2.0)
        .sum();
    let z: Vec<f64> = tr
        .iter()
        .map(|&i| {
            u.iter()
                .zip(data.row(i))
                .map(|(w, &x)| w * x as f64)
                .sum::<f64>()
                - mid
        })
        .collect();
    let ridge = 1e-3 * tr.len() as f64;
    let mut s = 1.0 / z.iter().map(|v| v.abs()).sum::<f64>().max(1e-300) * tr.len() as f64;
    for _ in 0..100 {
        let (mut g, mut h) = (ridge * s, ridge);
        for (&zi, &i) in z.iter().zip(tr) {
            let p = sigmoid(s * zi);
            g += (p - f64::from(data.y[i])) * zi;
            h += p * (1.0 - p) * zi * zi;
        }
        let step = g / h;
        s -= step;
        if step.abs() <= 1e-12 * s.abs().max(1.0) {
            break;
        }
    }
    let w: Vec<f64> = u.iter().map(|v| v * s).collect();
    (w, -s * mid)
}

#[cfg(test)]
#[path = "train_tests.rs"]
mod tests;
