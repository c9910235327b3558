//! The training objective (`--loss`): softmax cross-entropy, or one-vs-rest sigmoid binary
//! cross-entropy on the class logits (each class an independent yes/no: no softmax ties the
//! logits' scale, the scale ambiguity PCR's seed names).

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Int, Tensor};

/// `--loss`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LossKind {
    /// Softmax cross-entropy.
    Ce,
    /// One-vs-rest sigmoid binary cross-entropy on the class logits: the mean over examples and
    /// classes of -[y log sigmoid(z) + (1 - y) log sigmoid(-z)], y the one-hot label
    /// (PyTorch's `BCEWithLogitsLoss` on one-hot targets).
    Bce,
}

impl LossKind {
    /// What it is, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Ce => "ce (softmax cross-entropy)",
            Self::Bce => {
                "bce (one-vs-rest sigmoid binary cross-entropy on the class logits, mean over examples and classes)"
            }
        }
    }

    /// The objective of one example from its logits (f64), for evaluation.
    pub fn of_logits(self, z: &[f64], label: usize) -> f64 {
        match self {
            Self::Ce => {
                let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                lse - z[label]
            }
            Self::Bce => {
                // softplus(z) - y z, written to neither overflow nor cancel.
                let softplus = |v: f64| v.max(0.0) + (-v.abs()).exp().ln_1p();
                z.iter()
                    .enumerate()
                    .map(|(c, &v)| softplus(v) - if c == label { v } else { 0.0 })
                    .sum::<f64>()
                    / z.len() as f64
            }
        }
    }
}

/// The objective a run trains on.
pub struct Objective {
    kind: LossKind,
    ce: CrossEntropyLoss,
    classes: usize,
}

impl Objective {
    /// The objective `kind` over `classes` classes.
    pub fn new(kind: LossKind, classes: usize, device: &Device) -> Self {
        Self {
            kind,
            ce: CrossEntropyLossConfig::new().init(device),
            classes,
        }
    }

    /// Which objective this is.
    pub fn kind(&self) -> LossKind {
        self.kind
    }

    /// The batch's mean objective.
    pub fn forward(&self, logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
        match self.kind {
            LossKind::Ce => self.ce.forward(logits, labels),
            LossKind::Bce => {
                let y = labels.one_hot::<2>(self.classes).float();
                let l = y.clone() * log_sigmoid(logits.clone())
                    + (y.neg() + 1.0) * log_sigmoid(logits.neg());
                l.mean().neg()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_example_objectives_are_the_textbook_ones() {
        let z = [2.0, -1.0, 0.5];
        let lse = (2f64.exp() + (-1f64).exp() + 0.5f64.exp()).ln();
        assert!((LossKind::Ce.of_logits(&z, 1) - (lse + 1.0)).abs() < 1e-12);
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        let expected = -((1.0 - s(2.0)).ln() + s(-1.0).ln() + (1.0 - s(0.5)).ln()) / 3.0;
        assert!((LossKind::Bce.of_logits(&z, 1) - expected).abs() < 1e-12);
        // No overflow for huge logits.
        assert!(LossKind::Bce.of_logits(&[800.0, -800.0], 0).abs() < 1e-12);
        assert!(LossKind::Ce.of_logits(&[800.0, -800.0], 0).abs() < 1e-12);
    }

    #[test]
    fn the_training_bce_equals_the_evaluated_one() {
        let device = Device::default();
        let z = [[2.0f32, -1.0, 0.5], [0.1, 0.2, -3.0]];
        let logits = Tensor::<2>::from_data(z, &device);
        let labels = Tensor::<1, Int>::from_data([1, 2], &device);
        let got = Objective::new(LossKind::Bce, 3, &device)
            .forward(logits, labels)
            .into_scalar::<f64>();
        let want = (LossKind::Bce.of_logits(&[2.0, -1.0, 0.5], 1)
            + LossKind::Bce.of_logits(&[0.1, 0.2, -3.0], 2))
            / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} {want}");
    }
}
