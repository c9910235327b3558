//! What a training run measured, how it was set up, and their JSON (`metrics.json`).

/// How a run was set up: what its metrics file and the comparison report print beside the
/// numbers. Plain data, so that metrics, reports and plots need no command-line types.
#[derive(Clone, Debug)]
pub struct RunSetup {
    /// The data set's name (`fashion-mnist` or `digits`).
    pub dataset: &'static str,
    /// The training pixels' mean and standard deviation the inputs were standardized with.
    pub input_norm: (f32, f32),
    /// The model kind (`mlp` or `cnn`).
    pub model: String,
    /// The initialisation (`fp` or `ddi`).
    pub init: String,
    /// Epochs trained.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seed of the initialisation and the data order.
    pub seed: u64,
    /// Where it computed (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// Worker threads of the CPU backend.
    pub threads: usize,
    /// The allocator settings the steps were timed under (as `weightnorm bench` prints them).
    pub allocator: String,
    /// The training images trained on.
    pub train_images: usize,
    /// `--train-subset`, when given.
    pub train_subset: Option<usize>,
    /// The fraction of training labels replaced (`--label-noise`).
    pub label_noise: f64,
    /// The objective (`--loss`), described.
    pub loss: String,
}

/// What one training run measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunMetrics {
    /// The parameterization's name (`plain`, `wn`, `wn-mobn`, `bn`).
    pub param: String,
    /// The seed of the run.
    #[serde(default)]
    pub seed: u64,
    /// The training loss of every step, in order.
    pub step_losses: Vec<f64>,
    /// The wall time of every step (forward, backward, optimizer), in milliseconds.
    #[serde(default)]
    pub step_ms: Vec<f64>,
    /// The wall-clock seconds since the run began (over all its sessions, evaluations
    /// included) at the end of every step.
    #[serde(default)]
    pub step_seconds: Vec<f64>,
    /// One entry per finished epoch.
    pub epochs: Vec<EpochMetrics>,
    /// PCR's setup (`every C, penalty, transport`), for PCR runs.
    #[serde(default)]
    pub pcr: Option<String>,
    /// Every canonicalization of a PCR run.
    #[serde(default)]
    pub pcr_events: Vec<PcrEvent>,
    /// The global gain over training, `(step, value)`: at every canonicalization of a PCR run
    /// (before it) and at the end of every epoch of every run whose network the canonical form
    /// describes.
    #[serde(default)]
    pub global_gain: Vec<(usize, f64)>,
    /// Mean wall time of a training step, in milliseconds.
    pub mean_step_ms: f64,
    /// Training throughput over the time spent in steps.
    pub examples_per_s: f64,
    /// Wall time of the whole run, evaluation included.
    pub seconds: f64,
}

/// One canonicalization of Periodic Canonical Regularization, as `metrics.json` records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PcrEvent {
    /// Optimizer steps taken when it ran (`C`, `2C`, ...).
    pub step: usize,
    /// The global gain just before.
    pub gain_before: f64,
    /// The global gain just after.
    pub gain_after: f64,
    /// The loss of the step's batch just before the rescaling (penalty excluded).
    pub loss_before: f64,
    /// The same batch's loss just after.
    pub loss_after: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// What one epoch measured: its mean training loss and the test split's scores after it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    /// Mean training loss over the epoch's examples.
    pub train_loss: f64,
    /// The training objective's mean on the test split (`--loss`: cross-entropy, or
    /// one-vs-rest binary cross-entropy).
    pub test_loss: f64,
    /// Mean negative log-likelihood of the softmax of the logits on the test split (the test
    /// loss itself under `--loss ce`); NaN in runs from before it was kept.
    #[serde(default = "nan")]
    pub test_nll: f64,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
    /// Expected calibration error on the test split.
    pub ece: f64,
}

impl RunMetrics {
    /// Empty metrics for a run of `param`, to be filled as it trains.
    pub fn new(param: &str, seed: u64) -> Self {
        Self {
            param: param.into(),
            seed,
            step_losses: Vec::new(),
            step_ms: Vec::new(),
            step_seconds: Vec::new(),
            epochs: Vec::new(),
            pcr: None,
            pcr_events: Vec::new(),
            global_gain: Vec::new(),
            mean_step_ms: 0.0,
            examples_per_s: 0.0,
            seconds: 0.0,
        }
    }

    /// The last epoch's scores, if an epoch finished.
    pub fn last(&self) -> Option<&EpochMetrics> {
        self.epochs.last()
    }

    /// The median step time in milliseconds (the mean step time for metrics from before step
    /// times were kept).
    pub fn median_step_ms(&self) -> f64 {
        let mut t: Vec<f64> = self
            .step_ms
            .iter()
            .copied()
            .filter(|t| t.is_finite())
            .collect();
        if t.is_empty() {
            return self.mean_step_ms;
        }
        t.sort_by(f64::total_cmp);
        crate::stats::quantile(&t, 0.5)
    }

    /// One per-epoch quantity, in epoch order.
    pub fn per_epoch(&self, f: impl Fn(&EpochMetrics) -> f64) -> Vec<f64> {
        self.epochs.iter().map(f).collect()
    }

    /// The run's `metrics.json`: its setup, the last epoch's scores, every curve, and the
    /// trained network's global gain where the caller knows it.
    pub fn file<'a>(
        &'a self,
        setup: &'a RunSetup,
        final_global_gain: Option<f64>,
    ) -> MetricsFile<'a> {
        let last = self.last();
        MetricsFile {
            dataset: setup.dataset,
            input_mean: setup.input_norm.0,
            input_std: setup.input_norm.1,
            model: &setup.model,
            param: &self.param,
            init: &setup.init,
            epochs: setup.epochs,
            batch_size: setup.batch_size,
            lr: setup.lr,
            seed: setup.seed,
            device: &setup.device,
            threads: setup.threads,
            allocator: &setup.allocator,
            train_images: setup.train_images,
            train_subset: setup.train_subset,
            label_noise: setup.label_noise,
            loss: &setup.loss,
            test_accuracy: last.map(|e| e.test_accuracy),
            test_loss: last.map(|e| e.test_loss),
            test_nll: last.map(|e| e.test_nll),
            ece: last.map(|e| e.ece),
            per_epoch: PerEpoch {
                train_loss: self.per_epoch(|e| e.train_loss),
                test_loss: self.per_epoch(|e| e.test_loss),
                test_nll: self.per_epoch(|e| e.test_nll),
                test_accuracy: self.per_epoch(|e| e.test_accuracy),
                ece: self.per_epoch(|e| e.ece),
            },
            pcr: self.pcr.as_deref(),
            pcr_events: &self.pcr_events,
            global_gain: &self.global_gain,
            final_global_gain,
            step_loss: &self.step_losses,
            step_ms: &self.step_ms,
            step_seconds: &self.step_seconds,
            mean_step_ms: self.mean_step_ms,
            median_step_ms: self.median_step_ms(),
            examples_per_s: self.examples_per_s,
            seconds: self.seconds,
        }
    }
}

/// `metrics.json`: one schema, written by `train` and `compare` for every run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MetricsFile<'a> {
    /// The data set's name.
    pub dataset: &'a str,
    /// The training pixels' mean the inputs were standardized with.
    pub input_mean: f32,
    /// Their standard deviation.
    pub input_std: f32,
    /// `mlp` or `cnn`.
    pub model: &'a str,
    /// The parameterization.
    pub param: &'a str,
    /// `fp` or `ddi`.
    pub init: &'a str,
    /// Epochs trained.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// The learning rate.
    pub lr: f64,
    /// The seed.
    pub seed: u64,
    /// Where it computed.
    pub device: &'a str,
    /// Worker threads of the CPU backend.
    pub threads: usize,
    /// The allocator settings the steps were timed under.
    pub allocator: &'a str,
    /// The training images trained on.
    pub train_images: usize,
    /// `--train-subset`, when given.
    pub train_subset: Option<usize>,
    /// The fraction of training labels replaced by a wrong class.
    pub label_noise: f64,
    /// The objective (`--loss`), described.
    pub loss: &'a str,
    /// The last epoch's test accuracy (none before an epoch finished).
    pub test_accuracy: Option<f64>,
    /// The last epoch's test loss.
    pub test_loss: Option<f64>,
    /// The last epoch's expected calibration error.
    pub ece: Option<f64>,
    /// The last epoch's test NLL of the softmax (the test loss under `--loss ce`).
    pub test_nll: Option<f64>,
    /// Every epoch's scores.
    pub per_epoch: PerEpoch,
    /// PCR's setup, for PCR runs.
    pub pcr: Option<&'a str>,
    /// Every canonicalization of a PCR run.
    pub pcr_events: &'a [PcrEvent],
    /// The global gain over training, `(step, value)`.
    pub global_gain: &'a [(usize, f64)],
    /// The trained network's global gain (the norm of its canonical output scale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_global_gain: Option<f64>,
    /// Every step's training loss.
    pub step_loss: &'a [f64],
    /// Every step's wall time, milliseconds.
    pub step_ms: &'a [f64],
    /// Seconds since the run began at the end of every step.
    pub step_seconds: &'a [f64],
    /// The mean step time, milliseconds.
    pub mean_step_ms: f64,
    /// The median step time, milliseconds.
    pub median_step_ms: f64,
    /// Training throughput.
    pub examples_per_s: f64,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// Every epoch's scores in `metrics.json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PerEpoch {
    /// Mean training loss.
    pub train_loss: Vec<f64>,
    /// Test loss (the objective).
    pub test_loss: Vec<f64>,
    /// Test NLL of the softmax.
    pub test_nll: Vec<f64>,
    /// Test accuracy.
    pub test_accuracy: Vec<f64>,
    /// Expected calibration error.
    pub ece: Vec<f64>,
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// A setup and a two-epoch run with distinct numbers everywhere, for tests.
    pub(crate) fn sample() -> (RunSetup, RunMetrics) {
        let setup = RunSetup {
            dataset: "digits",
            input_norm: (0.25, 0.5),
            model: "mlp".into(),
            init: "ddi".into(),
            epochs: 2,
            batch_size: 32,
            lr: 0.01,
            seed: 7,
            device: "cpu".into(),
            threads: 2,
            allocator: "glibc malloc defaults".into(),
            train_images: 100,
            train_subset: None,
            label_noise: 0.0,
            loss: "ce (softmax cross-entropy)".into(),
        };
        let mut m = RunMetrics::new("wn", 7);
        m.step_losses = vec![2.0, 1.5, 1.0];
        for (i, acc) in [0.5, 0.75].into_iter().enumerate() {
            m.epochs.push(EpochMetrics {
                train_loss: 2.0 - i as f64,
                test_loss: 1.5 - i as f64,
                test_nll: 1.5 - i as f64,
                test_accuracy: acc,
                ece: 0.125 / (i + 1) as f64,
            });
        }
        m.mean_step_ms = 4.0;
        (setup, m)
    }

    fn json(f: &MetricsFile<'_>) -> serde_json::Value {
        serde_json::to_value(f).unwrap()
    }

    #[test]
    fn the_json_holds_the_setup_the_last_epoch_and_the_curves() {
        let (setup, m) = sample();
        let j = json(&m.file(&setup, Some(2.5)));
        assert_eq!(j["final_global_gain"], 2.5);
        assert_eq!(j["dataset"], "digits");
        assert_eq!(j["input_std"], 0.5);
        assert_eq!(j["model"], "mlp");
        assert_eq!(j["init"], "ddi");
        assert_eq!(j["param"], "wn");
        assert_eq!(j["epochs"], 2);
        assert_eq!(j["seed"], 7);
        assert_eq!(j["test_accuracy"], 0.75);
        assert_eq!(j["test_loss"], 0.5);
        assert_eq!(j["ece"], 0.0625);
        assert_eq!(j["per_epoch"]["test_accuracy"], json!([0.5, 0.75]));
        assert_eq!(j["per_epoch"]["train_loss"], json!([2.0, 1.0]));
        assert_eq!(j["step_loss"], json!([2.0, 1.5, 1.0]));
    }

    #[test]
    fn a_run_without_epochs_has_null_scores() {
        let (setup, _) = sample();
        let j = json(&RunMetrics::new("plain", 0).file(&setup, None));
        assert!(j.get("final_global_gain").is_none());
        assert!(j["test_accuracy"].is_null() && j["ece"].is_null());
        assert_eq!(j["per_epoch"]["ece"], json!([]));
    }
}
