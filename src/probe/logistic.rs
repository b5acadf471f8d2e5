//! L2-regularised logistic regression solved exactly (Newton / IRLS with a Cholesky solve):
//! the probe baseline users ask for, and the block probes of the joint probe.

use super::linear::{sigmoid, Data};
use anyhow::{ensure, Result};

/// L2-regularised logistic regression by Newton's method (IRLS) with backtracking: minimises
/// `Σ CE + λ/2 ‖w‖²` (intercept unpenalised); the Newton system `(Xᵀ S X + λI) Δ = g` is
/// solved by Cholesky. Features are centred on the training mean first (the intercept absorbs
/// it), which keeps the Hessian well conditioned.
pub(crate) fn fit_logistic(data: &Data, tr: &[usize], l2: f64) -> Result<(Vec<f64>, f64)> {
    let d = data.d;
    let p = d + 1; // the last coordinate is the intercept
    let mut mean = vec![0f64; d];
    for &i in tr {
        for (m, &x) in mean.iter_mut().zip(data.row(i)) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= tr.len() as f64);
    let rows: Vec<Vec<f64>> = tr
        .iter()
        .map(|&i| {
            let mut r: Vec<f64> = data
                .row(i)
                .iter()
                .zip(&mean)
                .map(|(&x, m)| x as f64 - m)
                .collect();
            r.push(1.0);
            r
        })
        .collect();
    let ys: Vec<f64> = tr.iter().map(|&i| f64::from(data.y[i])).collect();
    let objective = |beta: &[f64]| -> f64 {
        let mut f = 0.5 * l2 * beta[..d].iter().map(|b| b * b).sum::<f64>();
        for (r, &y) in rows.iter().zip(&ys) {
            let t: f64 = r.iter().zip(beta).map(|(a, b)| a * b).sum();
            // log(1 + e^t) − y t, computed stably.
            f += t.max(0.0) + (-t.abs()).exp().ln_1p() - y * t;
        }
        f
    };
    let mut beta = vec![0f64; p];
    let mut f = objective(&beta);
    let mut converged = false;
    for _ in 0..100 {
        let mut g = vec![0f64; p];
        let mut hess = vec![0f64; p * p];
        for (r, &y) in rows.iter().zip(&ys) {
            let t: f64 = r.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let pr = sigmoid(t);
            let s = (pr * (1.0 - pr)).max(1e-12);
            for a in 0..p {
                g[a] += (pr - y) * r[a];
                let sa = s * r[a];
                // Upper triangle only; mirrored below.
                for (hb, &rb) in hess[a * p + a..(a + 1) * p].iter_mut().zip(&r[a..]) {
                    *hb += sa * rb;
                }
            }
        }
        for a in 0..d {
            g[a] += l2 * beta[a];
            hess[a * p + a] += l2;
        }
        hess[p * p - 1] += 1e-9; // a whisker of damping for the intercept
        for a in 0..p {
            for b in 0..a {
                hess[a * p + b] = hess[b * p + a];
            }
        }
        let delta = cholesky_solve(&mut hess, &g, p)?;
        let decrement: f64 = delta.iter().zip(&g).map(|(a, b)| a * b).sum();
        if decrement / 2.0 <= 1e-10 * (1.0 + f.abs()) {
            converged = true;
            break;
        }
        let mut t = 1.0;
        loop {
            let cand: Vec<f64> = beta.iter().zip(&delta).map(|(b, s)| b - t * s).collect();
            let fc = objective(&cand);
            if fc <= f - 0.25 * t * decrement || t < 1e-10 {
                beta = cand;
                f = fc;
                break;
            }
            t /= 2.0;
        }
    }
    ensure!(
        converged,
        "logistic regression did not converge in 100 Newton steps (try a larger --l2)"
    );
    let w = beta[..d].to_vec();
    let c = beta[d] - w.iter().zip(&mean).map(|(a, m)| a * m).sum::<f64>();
    Ok((w, c))
}

/// Solves `A x = g` for a symmetric positive definite `A` (`n × n`, overwritten by its
/// Cholesky factor).
fn cholesky_solve(a: &mut [f64], g: &[f64], n: usize) -> Result<Vec<f64>> {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        ensure!(
            s > 0.0 && s.is_finite(),
            "logistic regression: the Hessian is singular (features constant or duplicated; use --l2 > 0)"
        );
        let ljj = s.sqrt();
        a[j * n + j] = ljj;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / ljj;
        }
    }
    let mut x = g.to_vec();
    for i in 0..n {
        for k in 0..i {
            x[i] -= a[i * n + k] * x[k];
        }
        x[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            x[i] -= a[k * n + i] * x[k];
        }
        x[i] /= a[i * n + i];
    }
    Ok(x)
}
