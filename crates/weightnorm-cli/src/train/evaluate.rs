//! Evaluation on the test split: loss, accuracy and expected calibration error.

use burn::tensor::Device;
use burn::tensor::activation::softmax;

use crate::data::Dataset;
use crate::model::Model;

use super::batch::{batch, forward};

/// Test examples per forward pass.
const CHUNK: usize = 1000;

/// Equal-width confidence bins of the calibration error.
const BINS: usize = 15;

/// The scores of a model on the test split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of examples whose most probable class is the label.
    pub accuracy: f64,
    /// Expected calibration error over [`BINS`] equal-width confidence bins.
    pub ece: f64,
}

/// Running sums over the examples seen: loss, hits, and per confidence bin the hits and the
/// confidence.
struct Tally {
    loss: f64,
    correct: usize,
    bins: [(f64, f64); BINS],
}

impl Tally {
    fn new() -> Self {
        Self {
            loss: 0.0,
            correct: 0,
            bins: [(0.0, 0.0); BINS],
        }
    }

    /// Adds one example: its class probabilities `p` and its label `y`.
    fn add(&mut self, p: &[f64], y: usize) {
        let (pred, conf) = p
            .iter()
            .enumerate()
            .fold((0, f64::MIN), |b, (j, &q)| if q > b.1 { (j, q) } else { b });
        self.loss -= p[y].max(1e-12).ln();
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
            accuracy: self.correct as f64 / n as f64,
            ece,
        }
    }
}

/// Test loss, accuracy and expected calibration error of `model` (in inference mode) on the
/// test split of `ds`.
pub fn evaluate(model: &Model, ds: &Dataset, image: bool, device: &Device) -> Scores {
    let n = ds.test_y.len();
    let mut tally = Tally::new();
    for start in (0..n).step_by(CHUNK) {
        let idx: Vec<usize> = (start..(start + CHUNK).min(n)).collect();
        let logits = forward(model, batch(ds, &ds.test_x, &idx, image, device));
        let probs = softmax(logits, 1)
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("f64");
        for (p, &i) in probs.chunks(ds.classes).zip(&idx) {
            tally.add(p, ds.test_y[i] as usize);
        }
    }
    tally.scores(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confident_right_answers_score_perfectly_and_hedged_ones_do_not() {
        let mut t = Tally::new();
        t.add(&[1.0, 0.0], 0);
        t.add(&[0.0, 1.0], 1);
        assert_eq!(
            t.scores(2),
            Scores {
                loss: -(1.0f64).ln(),
                accuracy: 1.0,
                ece: 0.0
            }
        );
        // Right at 60% confidence, then wrong at 60%: accuracy 1/2, confidence 0.6 in one bin.
        let mut t = Tally::new();
        t.add(&[0.6, 0.4], 0);
        t.add(&[0.6, 0.4], 1);
        let s = t.scores(2);
        assert_eq!(s.accuracy, 0.5);
        assert!((s.ece - 0.1).abs() < 1e-12, "{s:?}");
        assert!((s.loss - (-(0.6f64.ln()) - 0.4f64.ln()) / 2.0).abs() < 1e-12);
    }
}
