//! Evaluation on the test split: the objective, the softmax NLL, accuracy and expected
//! calibration error.

use burn::tensor::Device;

use crate::data::Dataset;
use crate::model::Model;

use super::batch::{batch, forward};
use super::objective::LossKind;

/// Test examples per forward pass.
const CHUNK: usize = 1000;

/// Equal-width confidence bins of the calibration error.
const BINS: usize = 15;

/// The scores of a model on the test split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// The training objective's mean (`--loss`).
    pub loss: f64,
    /// Mean negative log-likelihood of the softmax of the logits.
    pub nll: f64,
    /// Fraction of examples whose most probable class is the label.
    pub accuracy: f64,
    /// Expected calibration error over [`BINS`] equal-width confidence bins.
    pub ece: f64,
}

/// Running sums over the examples seen: objective, NLL, hits, and per confidence bin the hits
/// and the confidence.
struct Tally {
    kind: LossKind,
    loss: f64,
    nll: f64,
    correct: usize,
    bins: [(f64, f64); BINS],
}

impl Tally {
    fn new(kind: LossKind) -> Self {
        Self {
            kind,
            loss: 0.0,
            nll: 0.0,
            correct: 0,
            bins: [(0.0, 0.0); BINS],
        }
    }

    /// Adds one example: its logits `z` and its label `y`. Probabilities are the softmax of
    /// the logits (for both objectives: what a classifier's confidence is read from).
    fn add(&mut self, z: &[f64], y: usize) {
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let (pred, top) =
            z.iter().enumerate().fold(
                (0, f64::NEG_INFINITY),
                |b, (j, &q)| if q > b.1 { (j, q) } else { b },
            );
        let conf = (top - lse).exp();
        self.nll += lse - z[y];
        self.loss += self.kind.of_logits(z, y);
        let hit = pred == y;
        self.correct += hit as usize;
        let b = ((conf * BINS as f64) as usize).min(BINS - 1);
        self.bins[b].0 += hit as usize as f64;
        self.bins[b].1 += conf;
    }

    /// The scores over `n` examples.
    fn scores(&self, n: usize) -> Scores {
        // ECE = sum over bins of (n_b / N) |accuracy_b - confidence_b| = sum |hits_b - conf_b| / N.
        let ece = self
            .bins
            .iter()
            .map(|&(hits, conf)| (hits - conf).abs())
            .sum::<f64>()
            / n as f64;
        Scores {
            loss: self.loss / n as f64,
            nll: self.nll / n as f64,
            accuracy: self.correct as f64 / n as f64,
            ece,
        }
    }
}

/// Test objective, NLL, accuracy and expected calibration error of `model` (in inference
/// mode) on the test split of `ds`.
pub fn evaluate(
    model: &Model,
    ds: &Dataset,
    image: bool,
    device: &Device,
    kind: LossKind,
) -> Scores {
    let n = ds.test_y.len();
    let mut tally = Tally::new(kind);
    for start in (0..n).step_by(CHUNK) {
        let idx: Vec<usize> = (start..(start + CHUNK).min(n)).collect();
        let logits = forward(model, batch(ds, &ds.test_x, &idx, image, device))
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("f64");
        for (z, &i) in logits.chunks(ds.classes).zip(&idx) {
            tally.add(z, ds.test_y[i] as usize);
        }
    }
    tally.scores(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confident_right_answers_score_perfectly_and_hedged_ones_do_not() {
        let mut t = Tally::new(LossKind::Ce);
        t.add(&[60.0, -60.0], 0);
        t.add(&[-60.0, 60.0], 1);
        let s = t.scores(2);
        assert!(s.loss < 1e-40 && s.nll == s.loss, "{s:?}");
        assert_eq!((s.accuracy, s.ece), (1.0, 0.0));
        // Right at 60% confidence, then wrong at 60%: accuracy 1/2, confidence 0.6 in one bin.
        let mut t = Tally::new(LossKind::Ce);
        let z = [0.6f64.ln(), 0.4f64.ln()];
        t.add(&z, 0);
        t.add(&z, 1);
        let s = t.scores(2);
        assert_eq!(s.accuracy, 0.5);
        assert!((s.ece - 0.1).abs() < 1e-12, "{s:?}");
        assert!((s.loss - (-(0.6f64.ln()) - 0.4f64.ln()) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn under_bce_the_loss_is_the_objective_and_the_nll_the_softmaxs() {
        let mut t = Tally::new(LossKind::Bce);
        let z = [1.0, -2.0, 0.5];
        t.add(&z, 2);
        let s = t.scores(1);
        assert!((s.loss - LossKind::Bce.of_logits(&z, 2)).abs() < 1e-15);
        assert!((s.nll - LossKind::Ce.of_logits(&z, 2)).abs() < 1e-12);
        assert_ne!(s.loss, s.nll);
    }
}
