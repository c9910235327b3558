//! A weight-normalized model trained in burn-train's `Learner`, with burn-train's
//! checkpointing: a second invocation with more epochs resumes from the last checkpoint.
//!
//! ```text
//! cargo run --release -p weightnorm --example learner -- OUT_DIR EPOCHS [--pcr]
//! ```
//!
//! The data are the UCI digits the CLI vendors (8x8 images, 1797 of them: 1500 to train, 297 to
//! validate). The model is `Linear(64, 64) -> ReLU -> Linear(64, 10)`, weight-normalized with
//! [`weightnorm::apply_weight_norm`] (per output unit, function-preserving), trained by Adam.
//! burn-train writes `OUT_DIR/checkpoint/{model,optim,scheduler}-N.bpk` after every epoch;
//! the run starts from the latest one it finds there (nothing to do if it already reached
//! `EPOCHS`).
//!
//! With `--pcr` the model is the same network without weight norm, trained with Periodic
//! Canonical Regularization ([`weightnorm::pcr`]): a [`PcrSlot`] in the model, the soft penalty
//! in `TrainStep::step`, and [`weightnorm::pcr::optimize`] in `TrainStep::optimize`. The slot's
//! step count is a parameter of the module, so the checkpoint carries the PCR schedule.
//!
//! The order of the examples is fixed (shuffled once, the same every epoch): burn-train's data
//! loader shuffles with a generator that starts again with the process, so a shuffled resumed
//! run would not see the batches an uninterrupted one sees. With a fixed order, a resumed run
//! ends with exactly the weights of a run that never stopped (the test `tests/learner.rs`).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_train::checkpoint::KeepLastNCheckpoints;
use burn_train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn_train::metric::{AccuracyMetric, LossMetric, MetricDefinition, MetricId};
use burn_train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn_train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use weightnorm::live::{Canonicalizable, LiveLayer};
use weightnorm::pcr::{PcrConfig, PcrEvent, PcrModel, PcrSlot, Penalty, Transport};
use weightnorm::{WeightNormConfig, apply_weight_norm};

/// One example: 64 pixels in [0, 1] and its label.
#[derive(Clone, Debug)]
pub struct Digit {
    pixels: [f32; 64],
    label: u8,
}

/// The UCI digits (test part, as scikit-learn ships it), in a fixed shuffled order.
pub fn digits() -> Vec<Digit> {
    static GZ: &[u8] = include_bytes!("../../weightnorm-cli/data/uci-digits.csv.gz");
    let mut csv = String::new();
    flate2::read::GzDecoder::new(GZ)
        .read_to_string(&mut csv)
        .expect("the vendored digits are valid gzip");
    let mut rows: Vec<Digit> = csv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Vec<u8> = l.split(',').map(|x| x.trim().parse().unwrap()).collect();
            let mut pixels = [0f32; 64];
            for (p, &x) in pixels.iter_mut().zip(&v[..64]) {
                *p = f32::from(x) / 16.0;
            }
            Digit {
                pixels,
                label: v[64],
            }
        })
        .collect();
    // Fisher-Yates with SplitMix64 (a fixed seed): one order for every run and every epoch.
    weightnorm::weightnorm_core::rng::SplitMix64(0x5eed).shuffle(&mut rows);
    rows
}

/// A batch: images `[n, 64]`, labels `[n]`.
#[derive(Clone, Debug)]
pub struct Batch {
    images: Tensor<2>,
    targets: Tensor<1, Int>,
}

struct DigitsBatcher;

impl Batcher<Digit, Batch> for DigitsBatcher {
    fn batch(&self, items: Vec<Digit>, device: &Device) -> Batch {
        let n = items.len();
        let pixels: Vec<f32> = items.iter().flat_map(|d| d.pixels).collect();
        let labels: Vec<i64> = items.iter().map(|d| i64::from(d.label)).collect();
        Batch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 64]), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// The network: `Linear(64, 64) -> ReLU -> Linear(64, 10)`, and, under PCR, its slot.
#[derive(Module, Debug)]
pub struct Model {
    pub hidden: Linear,
    pub out: Linear,
    pub pcr: Option<PcrSlot>,
}

impl Model {
    /// Weight-normalized (plain, with a PCR slot, when `pcr` is given).
    pub fn new(device: &Device, pcr: Option<PcrConfig>) -> Self {
        let model = Self {
            hidden: LinearConfig::new(64, 64).init(device),
            out: LinearConfig::new(64, 10).init(device),
            pcr: pcr.map(|c| PcrSlot::new(c, device).expect("a valid PCR configuration")),
        };
        if model.pcr.is_some() {
            model
        } else {
            apply_weight_norm(model, &WeightNormConfig::new()).expect("weight norm applies")
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(relu(self.hidden.forward(x)))
    }

    fn output(&self, batch: Batch) -> ClassificationOutput {
        let logits = self.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl Canonicalizable for Model {
    fn input_shape(&self) -> Vec<usize> {
        vec![64]
    }

    fn layers(&self) -> Vec<LiveLayer<'_>> {
        vec![
            LiveLayer::Linear(&self.hidden),
            LiveLayer::Relu,
            LiveLayer::Linear(&self.out),
        ]
    }
}

impl PcrModel for Model {
    fn pcr_slot(&self) -> &PcrSlot {
        self.pcr.as_ref().expect("the PCR model has a slot")
    }
}

impl TrainStep for Model {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> TrainOutput<ClassificationOutput> {
        let item = self.output(batch);
        // The reported loss is the data's; the gradient includes the soft penalty, if any.
        let penalty = self
            .pcr
            .as_ref()
            .and_then(|slot| slot.penalty(self).expect("the model is described"));
        let objective = match penalty {
            Some(p) => item.loss.clone() + p,
            None => item.loss.clone(),
        };
        TrainOutput::new(self, objective.backward(), item)
    }

    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        if self.pcr.is_some() {
            weightnorm::pcr::optimize(self, optim, lr, grads)
        } else {
            optim.step(lr, self, grads)
        }
    }
}

impl InferenceStep for Model {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> ClassificationOutput {
        self.output(batch)
    }
}

/// One line per epoch (burn-train's plain renderer prints every batch): the last value of
/// every numeric metric of the epoch's two splits.
#[derive(Default)]
struct EpochLines {
    names: HashMap<MetricId, String>,
    values: BTreeMap<String, f64>,
    split: String,
    epoch: usize,
}

impl EpochLines {
    fn record(&mut self, split: &str, state: MetricState) {
        if let MetricState::Numeric(entry, Some(value)) = state
            && let Some(name) = self.names.get(&entry.metric_id)
        {
            self.values
                .insert(format!("{split} {name}"), value.current());
        }
    }
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, state: MetricState) {
        self.record("train", state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record("valid", state);
    }
}

impl TrainingProgressLogger for EpochLines {
    fn start(&mut self, total: usize, starting: usize, _: Option<usize>, _: Option<&str>) {
        self.epoch = starting;
        println!("epochs {starting} to {total}");
    }

    fn update_epoch(&mut self, _epoch: usize) {}

    fn start_split(&mut self, split: &str, _total_items: usize) {
        self.split = split.to_string();
    }

    fn update_split(&mut self, _items_processed: usize) {}

    fn end_split(&mut self) {
        if self.split == "valid" {
            let metrics: Vec<String> = self
                .values
                .iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect();
            println!("epoch {}: {}", self.epoch, metrics.join(", "));
            self.values.clear();
            self.epoch += 1;
        }
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for EpochLines {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, _name: &str, _total_items: usize) {}
    fn update_test_progress(&mut self, _items_processed: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}

/// The PCR configuration of `--pcr`: every 20 steps, a soft penalty, covariant transport.
pub fn pcr_config() -> PcrConfig {
    PcrConfig::new(20)
        .with_penalty(Penalty::Soft { lambda: 1e-3 })
        .with_transport(Transport::Covariant)
}

/// What a run did.
pub struct Outcome {
    /// The trained model.
    pub model: Model,
    /// The checkpoint it started from (`None`: from scratch).
    pub resumed_from: Option<usize>,
    /// The canonicalizations of this process (PCR only).
    pub events: Vec<PcrEvent>,
}

/// Reads every parameter, so that lazily initialized ones draw their values now.
struct Touch;

impl ModuleVisitor for Touch {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// The initial model, the same in every run: Burn's generator is global, so it is seeded and
/// drawn from under one lock (runs in parallel threads, as the tests start them, would
/// otherwise interleave their draws).
fn initial_model(device: &Device, pcr: bool) -> Model {
    static INIT: Mutex<()> = Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(42);
    let model = Model::new(device, pcr.then(pcr_config));
    model.visit(&mut Touch);
    model
}

/// The latest epoch burn-train checkpointed in `dir`.
pub fn latest_checkpoint(dir: &Path) -> Option<usize> {
    std::fs::read_dir(dir.join("checkpoint"))
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("model-")?
                .strip_suffix(".bpk")?
                .parse()
                .ok()
        })
        .max()
}

/// Trains to `epochs` epochs in `dir`, resuming from its latest checkpoint.
pub fn train(dir: &Path, epochs: usize, pcr: bool) -> Outcome {
    let device = Device::flex().autodiff();
    let data = digits();
    let (train, valid) = data.split_at(1500);
    let loader = |items: &[Digit]| -> Arc<dyn DataLoader<Batch>> {
        DataLoaderBuilder::new(DigitsBatcher)
            .batch_size(50)
            .build(InMemDataset::new(items.to_vec()))
    };
    let resumed_from = latest_checkpoint(dir);
    let model = initial_model(&device, pcr);
    let events = model.pcr.as_ref().map(|s| Arc::clone(&s.events));
    let learner = Learner::new(model, AdamConfig::new().init(), ConstantLr::new(3e-3));
    let mut training = SupervisedTraining::new(dir, loader(train), loader(valid))
        .num_epochs(epochs)
        .with_default_checkpointers()
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(2))
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_valid_numeric(AccuracyMetric::new())
        .renderer(Box::new(EpochLines::default()))
        .with_application_logger(None);
    if let Some(epoch) = resumed_from {
        training = training.checkpoint(epoch);
    }
    let result = training.launch(learner);
    if let Some(e) = result.error {
        panic!("training failed: {e}");
    }
    Outcome {
        model: result.model,
        resumed_from,
        events: events.map_or_else(Vec::new, |e| e.lock().unwrap().clone()),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: learner OUT_DIR EPOCHS [--pcr]";
    let dir = PathBuf::from(args.next().expect(usage));
    let epochs: usize = args
        .next()
        .and_then(|e| e.parse().ok())
        .expect("EPOCHS must be a positive integer");
    let pcr = match args.next().as_deref() {
        None => false,
        Some("--pcr") => true,
        Some(other) => panic!("unknown argument `{other}`; {usage}"),
    };
    let outcome = train(&dir, epochs, pcr);
    match outcome.resumed_from {
        Some(e) if e >= epochs => println!("already trained to epoch {e}: nothing to do"),
        Some(e) => println!("resumed from the checkpoint of epoch {e}, trained to epoch {epochs}"),
        None => println!("trained from scratch to epoch {epochs}"),
    }
    for e in &outcome.events {
        println!(
            "PCR at step {}: global gain {:.4} -> {:.4}",
            e.step, e.gain_before, e.gain_after
        );
    }
    println!("checkpoints in {}", dir.join("checkpoint").display());
}
