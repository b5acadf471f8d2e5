//! The linear-model pieces every probe fit shares: the feature matrix with its labels
//! ([`Data`]), the paper's two-class `softmax(W h + b)` ([`Linear2`]) and the logistic
//! function. The fits themselves live in [`super::train`] (the paper's Adam recipe, the
//! mean difference), [`super::logistic`] and [`super::standardize`].

/// Features `x` (`n × d`, row-major) and labels `y` (0 desirable, 1 undesirable).
pub(crate) struct Data<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) y: &'a [u8],
    pub(crate) d: usize,
}

impl Data<'_> {
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }
}

/// `softmax(W h + b)` in f64, `W` row-major `[2, d]`.
#[derive(Clone)]
pub(crate) struct Linear2 {
    pub(crate) w: Vec<f64>,
    pub(crate) b: [f64; 2],
}

impl Linear2 {
    /// The symmetric `[2, d]` layout of a binary score `w·h + c` (see [`super::train`]'s
    /// module docs): `W[1] = w/2`, `W[0] = −w/2`, `b = [−c/2, c/2]`.
    pub(crate) fn from_binary((w, c): (Vec<f64>, f64)) -> Linear2 {
        let mut full: Vec<f64> = w.iter().map(|v| -v / 2.0).collect();
        full.extend(w.iter().map(|v| v / 2.0));
        Linear2 {
            w: full,
            b: [-c / 2.0, c / 2.0],
        }
    }

    fn logits(&self, h: &[f32]) -> [f64; 2] {
        let d = h.len();
        let mut z = self.b;
        for (k, zk) in z.iter_mut().enumerate() {
            *zk += self.w[k * d..(k + 1) * d]
                .iter()
                .zip(h)
                .map(|(&w, &x)| w * x as f64)
                .sum::<f64>();
        }
        z
    }

    /// P(class 1 | h).
    pub(crate) fn p1(&self, h: &[f32]) -> f64 {
        let z = self.logits(h);
        sigmoid(z[1] - z[0])
    }
}

/// `1 / (1 + e^−t)`, without overflow for large |t|.
pub(crate) fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}
