//! Per-dimension standardisation of probe features: fit on z-scores, map the weights back
//! to raw features, so a saved probe is an ordinary probe on pooled states.

use super::linear::Linear2;

/// Per-dimension mean and standard deviation of the training split.
pub(crate) struct Standardizer {
    pub(crate) mean: Vec<f64>,
    pub(crate) std: Vec<f64>,
}

impl Standardizer {
    /// `x` standardised on the rows `idx` when `on`, with the statistics to map back;
    /// otherwise `x` itself.
    pub(crate) fn prepare<'a>(
        x: &'a [f32],
        d: usize,
        idx: &[usize],
        on: bool,
    ) -> (std::borrow::Cow<'a, [f32]>, Option<Standardizer>) {
        if on {
            let sc = Standardizer::fit(x, d, idx);
            (sc.apply(x).into(), Some(sc))
        } else {
            (x.into(), None)
        }
    }

    pub(crate) fn fit(x: &[f32], d: usize, tr: &[usize]) -> Standardizer {
        let n = tr.len() as f64;
        let mut mean = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for &i in tr {
            for (k, &v) in x[i * d..(i + 1) * d].iter().enumerate() {
                mean[k] += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        for &i in tr {
            for (k, &v) in x[i * d..(i + 1) * d].iter().enumerate() {
                sq[k] += (v as f64 - mean[k]).powi(2);
            }
        }
        // A constant dimension keeps scale 1: it carries nothing either way.
        let std = sq
            .iter()
            .map(|s| (s / n).sqrt())
            .map(|s| if s > 1e-12 { s } else { 1.0 })
            .collect();
        Standardizer { mean, std }
    }

    pub(crate) fn apply(&self, x: &[f32]) -> Vec<f32> {
        let d = self.mean.len();
        x.iter()
            .enumerate()
            .map(|(j, &v)| ((v as f64 - self.mean[j % d]) / self.std[j % d]) as f32)
            .collect()
    }

    /// Both rows of `softmax(W (x − μ)/σ + b)` mapped back to raw features.
    pub(crate) fn unscale(&self, lin: &Linear2) -> Linear2 {
        let d = self.mean.len();
        let mut out = lin.clone();
        for k in 0..2 {
            let (w, b) = self.unscale_binary(&lin.w[k * d..(k + 1) * d], lin.b[k]);
            out.w[k * d..(k + 1) * d].copy_from_slice(&w);
            out.b[k] = b;
        }
        out
    }

    /// The binary score `w·(x − μ)/σ + c` as `(w/σ)·x + (c − Σ w μ/σ)`.
    pub(crate) fn unscale_binary(&self, w: &[f64], c: f64) -> (Vec<f64>, f64) {
        let w: Vec<f64> = w.iter().zip(&self.std).map(|(w, s)| w / s).collect();
        let shift: f64 = w.iter().zip(&self.mean).map(|(w, m)| w * m).sum();
        (w, c - shift)
    }
}
