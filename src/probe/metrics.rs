//! How well a probe separates the classes: accuracy, per-class accuracy, ROC AUC, the
//! confusion matrix and the mean cross-entropy, computed from P(class 1) per item.

use serde::Serialize;

/// Classification quality on one labelled set. The decision threshold is P(class 1) ≥ 0.5,
/// the argmax of the softmax.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Number of items.
    pub n: usize,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Accuracy on the items of class 0 (desirable) — the true-negative rate.
    pub accuracy_class0: f64,
    /// Accuracy on the items of class 1 (undesirable) — the true-positive rate.
    pub accuracy_class1: f64,
    /// Area under the ROC curve of P(class 1) (0.5 = chance; ties count one half).
    pub roc_auc: f64,
    /// Mean cross-entropy (natural log) of the true labels.
    pub loss: f64,
    /// `[[true 0 → predicted 0, true 0 → predicted 1], [true 1 → predicted 0, true 1 →
    /// predicted 1]]`, i.e. rows are the true class, columns the predicted class.
    pub confusion: [[usize; 2]; 2],
}

/// Metrics of the predicted probabilities `p1` (P(class 1) per item) against `labels`.
/// Classes without items give NaN per-class accuracy / AUC (serialised as `null`).
pub fn metrics(p1: &[f64], labels: &[u8]) -> Metrics {
    let mut confusion = [[0usize; 2]; 2];
    let mut loss = 0.0;
    for (&p, &y) in p1.iter().zip(labels) {
        let pred = usize::from(p >= 0.5);
        confusion[usize::from(y)][pred] += 1;
        // Clamped so a saturated probe reports a large finite loss, not infinity.
        let q = if y == 1 { p } else { 1.0 - p };
        loss -= q.clamp(1e-15, 1.0).ln();
    }
    let n = p1.len();
    let frac = |a: usize, b: usize| a as f64 / b as f64;
    let row = |k: usize| confusion[k][0] + confusion[k][1];
    Metrics {
        n,
        accuracy: frac(confusion[0][0] + confusion[1][1], n),
        accuracy_class0: frac(confusion[0][0], row(0)),
        accuracy_class1: frac(confusion[1][1], row(1)),
        roc_auc: roc_auc(p1, labels),
        loss: loss / n as f64,
        confusion,
    }
}

/// ROC AUC by the rank-sum (Mann–Whitney) formula with average ranks for ties.
pub fn roc_auc(scores: &[f64], labels: &[u8]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum1 = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum1 += avg * idx[i..=j].iter().filter(|&&k| labels[k] == 1).count() as f64;
        i = j + 1;
    }
    let n1 = labels.iter().filter(|&&l| l == 1).count() as f64;
    let n0 = labels.len() as f64 - n1;
    (rank_sum1 - n1 * (n1 + 1.0) / 2.0) / (n0 * n1)
}

impl Metrics {
    /// A few readable lines: accuracy, per-class accuracy, AUC, loss and the confusion matrix.
    pub fn table(&self, title: &str) -> String {
        let c = &self.confusion;
        format!(
            "{title}: n = {}, accuracy {:.2} % (class 0 {:.2} %, class 1 {:.2} %), ROC AUC {:.4}, loss {:.4}\n\
             {:>16} {:>10} {:>10}\n{:>16} {:>10} {:>10}\n{:>16} {:>10} {:>10}",
            self.n,
            100.0 * self.accuracy,
            100.0 * self.accuracy_class0,
            100.0 * self.accuracy_class1,
            self.roc_auc,
            self.loss,
            "true \\ pred",
            "0",
            "1",
            "0 (desirable)",
            c[0][0],
            c[0][1],
            "1 (undesirable)",
            c[1][0],
            c[1][1],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_confusion() {
        let p = [0.1, 0.4, 0.35, 0.8];
        let y = [0, 0, 1, 1];
        let m = metrics(&p, &y);
        assert_eq!(m.confusion, [[2, 0], [1, 1]]);
        assert!((m.accuracy - 0.75).abs() < 1e-12);
        assert!((m.accuracy_class1 - 0.5).abs() < 1e-12);
        // Pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) → 3 of 4.
        assert!((m.roc_auc - 0.75).abs() < 1e-12);
        assert!((roc_auc(&[0.5, 0.5], &[0, 1]) - 0.5).abs() < 1e-12);
        assert!(m.table("test").contains("75.00 %"));
    }
}
